"""The BFD process (`python -m metallb_bgp.bfd`): the sessions its parent asks for, on real sockets.

Control is line-delimited JSON on stdin, replacing the whole set each time:
`{"sessions": [{"name": "router1", "peer": "10.1.0.1", "local": "10.1.0.11", "transmit_ms": 300,
"receive_ms": 300, "detect_multiplier": 3, "passive": false, "multihop": false, "minimum_ttl": 254}]}`;
each state change is one JSON line on stdout (`{"name": ..., "peer": ..., "state": "up", "diag": "none"}`). EOF on stdin ends the process,
after telling each peer AdminDown (so a stopped speaker is not mistaken for a dead one).

Packets leave from port 49152-65535 with TTL 255. Single hop (RFC 5881): to and on port 3784,
accepted only with TTL 255, so nothing from off-link can keep a session up. Multihop (RFC 5883, a
BGPPeer with `ebgpMultiHop`): to and on port 4784, accepted with a TTL of at least the profile's
`minimumTtl` (MetalLB's default 254: one router between), so a packet from further away cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass

from metallb_bgp.bfd.packet import Diag, State, decode, encode
from metallb_bgp.bfd.session import Profile, Session

PORT = 3784  # single hop (RFC 5881)
MULTIHOP_PORT = 4784  # RFC 5883
TTL = 255
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # Linux's value; Python's socket module does not name it
TICK = 0.01  # seconds: the resolution of every timer here


@dataclass(frozen=True)
class Wanted:
    name: str
    peer: str
    local: str
    profile: Profile
    multihop: bool = False
    minimum_ttl: int = TTL

    @property
    def port(self) -> int:
        return MULTIHOP_PORT if self.multihop else PORT

    def accepts(self, hops: int | None) -> bool:
        """RFC 5881 section 5 (exactly 255) or RFC 5883 section 5 (at least the configured minimum)."""
        return hops is not None and (hops >= self.minimum_ttl if self.multihop else hops == TTL)


def _socket_pair(local: str, port: int) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ":" in local else socket.AF_INET
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET:
        receiver.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    else:
        receiver.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    receiver.bind((local, port))
    receiver.setblocking(False)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET:
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
    else:
        sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
    for port in random.sample(range(49152, 65536), 64):
        try:
            sender.bind((local, port))
            break
        except OSError:
            continue
    sender.setblocking(False)
    return receiver, sender


def _hops(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL), (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT)):
            return int.from_bytes(data[:4], sys.byteorder)
    return None


class Daemon:
    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], tuple[Wanted, Session]] = {}  # (local, peer) ->
        self.by_discr: dict[int, tuple[str, str]] = {}
        self.sockets: dict[tuple[str, int], tuple[socket.socket, socket.socket]] = {}  # (local, port) ->
        self.loop = asyncio.get_running_loop()

    def configure(self, wanted: list[Wanted]) -> None:
        keys = {(w.local, w.peer): w for w in wanted}
        for key in list(self.sessions):
            if key not in keys or keys[key] != self.sessions[key][0]:
                self._drop(key)
        for key, want in keys.items():
            if key in self.sessions:
                continue
            where = (want.local, want.port)
            if where not in self.sockets:
                receiver, sender = _socket_pair(*where)
                self.sockets[where] = (receiver, sender)
                self.loop.add_reader(receiver.fileno(), self._readable, where)
            discr = self._new_discr()
            session = Session(local_discr=discr, profile=want.profile)
            session.next_tx = time.monotonic()
            self.sessions[key] = (want, session)
            self.by_discr[discr] = key
            self._report(want, session)

    def _new_discr(self) -> int:
        while True:
            discr = random.randint(1, 2**32 - 1)
            if discr not in self.by_discr:
                return discr

    def _drop(self, key: tuple[str, str]) -> None:
        want, session = self.sessions.pop(key)
        self.by_discr.pop(session.local_discr, None)
        session.state, session.diag = State.ADMIN_DOWN, Diag.ADMIN_DOWN
        self._send(want, session)

    def _readable(self, where: tuple[str, int]) -> None:
        local, port = where
        receiver = self.sockets[where][0]
        while True:
            try:
                data, ancillary, _flags, source = receiver.recvmsg(512, socket.CMSG_SPACE(4))
            except BlockingIOError:
                return
            except OSError:
                return
            packet = decode(data)
            if packet is None:
                continue
            peer = str(ipaddress.ip_address(source[0].split("%")[0]))
            key = self.by_discr.get(packet.your_discr) if packet.your_discr else (local, peer)
            if key is None or key not in self.sessions or key[1] != peer:
                continue
            want, session = self.sessions[key]
            if want.port != port or not want.accepts(_hops(ancillary)):
                continue  # from too far away, or on the other kind's port
            changed = session.receive(packet, time.monotonic())
            if session.reply_final:
                self._send(want, session)
            if changed is not None:
                self._report(want, session)

    def tick(self) -> None:
        now = time.monotonic()
        for want, session in list(self.sessions.values()):
            if session.expire(now):
                self._report(want, session)
            if now >= session.next_tx:
                if session.may_send():
                    self._send(want, session)
                session.schedule(now)

    def _send(self, want: Wanted, session: Session) -> None:
        sender = self.sockets[want.local, want.port][1]
        with contextlib.suppress(OSError):  # a link that is down: the detection timer says the rest
            sender.sendto(encode(session.packet()), (want.peer, want.port))

    def _report(self, want: Wanted, session: Session) -> None:
        line = {"name": want.name, "peer": want.peer, "state": session.state.name.lower(), "diag": session.diag.name.lower()}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    def stop(self) -> None:
        for key in list(self.sessions):
            self._drop(key)


def _wanted(line: str) -> list[Wanted]:
    found = []
    for entry in json.loads(line).get("sessions", []):
        profile = Profile(int(entry.get("transmit_ms", 300)), int(entry.get("receive_ms", 300)),
                          int(entry.get("detect_multiplier", 3)), bool(entry.get("passive", False)))  # fmt: skip
        found.append(Wanted(str(entry["name"]), str(entry["peer"]), str(entry["local"]), profile,
                            bool(entry.get("multihop", False)), int(entry.get("minimum_ttl", TTL))))  # fmt: skip
    return found


async def _serve() -> None:
    daemon = Daemon()
    reader = asyncio.StreamReader()
    await daemon.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def control() -> None:
        while line := await reader.readline():
            try:
                daemon.configure(_wanted(line.decode()))
            except (ValueError, KeyError, OSError) as exc:
                sys.stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
                sys.stdout.flush()

    commands = asyncio.create_task(control())
    while not commands.done():
        daemon.tick()
        await asyncio.sleep(TICK)
    daemon.stop()


def main() -> None:
    # The parent ends us by closing stdin (or by dying, which closes it too): a SIGTERM sent to the
    # whole process group must not kill us before each peer heard AdminDown.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve())
