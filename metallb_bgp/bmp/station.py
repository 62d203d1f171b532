"""A BMP station (RFC 7854): routers connect to it and stream what they received from each BGP
neighbour, before and after their import policy. It keeps, per router and per session of ours, the
prefixes seen pre-policy and post-policy, so a daemon can say of each route it sent: "router X
received it and accepted it", "received it and its import policy rejected it", or "does not have it".

What it does not do: it is no collector. Messages about neighbours that are not our speakers (a
router's transit sessions, a full Internet table) are counted and dropped from their per-peer header
alone, before their UPDATE is decoded; a router may keep at most `max_prefixes` of ours in at most
`MAX_SESSIONS` sessions, the rest is counted and dropped. Only the routers listed (by the address
they connect from) may connect; each connection's messages are bounded by `message.MAX_MESSAGE`.
A router that disconnects loses its report (it resends all of it when it reconnects: RFC 7854
section 5); a session it reports down (Peer Down) holds nothing of ours any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from metallb_bgp.bmp.message import (
    COMMON_HEADER,
    Address,
    BmpError,
    Message,
    MessageType,
    PeerHeader,
    Prefix,
    add_path_families,
    decode,
    frame_length,
    peer_header,
)

log = structlog.get_logger("metallb_bgp.bmp")

MAX_PREFIXES = 200_000  # per router, of ours: 20 sessions of 10,000 services
MAX_SESSIONS = 256  # per router, of ours (a session per VRF at most, in practice a handful)


@dataclass
class PeerReport:
    """What one router reports of one BGP session with it."""

    local_address: Address | None = None  # the router's end of the session (Peer Up)
    router_id: ipaddress.IPv4Address | None = None  # the router's BGP identifier, from its OPEN
    up_since: float | None = None  # time.time() of its Peer Up
    add_path: frozenset[tuple[int, int]] = frozenset()
    pre_policy: set[Prefix] = field(default_factory=set)
    post_policy: set[Prefix] = field(default_factory=set)
    pre_policy_reported: bool = False  # it sent pre-policy monitoring for this session at all
    post_policy_reported: bool = False


@dataclass
class RouterReport:
    """One router's connection: who it says it is (Initiation) and what it reported."""

    address: str
    connected_since: float | None = None  # time.time(); None: not connected
    disconnected_at: float | None = None
    sys_name: str | None = None
    sys_descr: str | None = None
    peers: dict[tuple[bytes, Address], PeerReport] = field(default_factory=dict)
    messages: int = 0
    dropped_not_ours: int = 0  # messages about sessions that are not ours
    dropped_over_limit: int = 0  # prefixes of ours past `max_prefixes`
    dropped_unknown: int = 0  # messages of a type this station does not know
    errors: int = 0
    last_error: str | None = None

    def prefixes(self) -> int:
        return sum(len(p.pre_policy) + len(p.post_policy) for p in self.peers.values())

    def session(self, router_address: Address, our_address: Address) -> PeerReport | None:
        """The report of our session from `our_address` to this router's `router_address`."""
        for (_distinguisher, address), peer in self.peers.items():
            if address == our_address and (peer.local_address is None or peer.local_address == router_address):
                return peer
        return None


class Station:
    def __init__(
        self, host: str, port: int, routers: tuple[str, ...], *, is_ours: Callable[[Address], bool],
        max_prefixes: int = MAX_PREFIXES,
    ) -> None:  # fmt: skip
        self.host, self.port = host, port
        self.reports = {str(ipaddress.ip_address(r)): RouterReport(str(ipaddress.ip_address(r))) for r in routers}
        self.is_ours = is_ours
        self.max_prefixes = max_prefixes
        self.refused = 0  # connections from addresses not listed
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._current: dict[str, asyncio.Task[None]] = {}  # router address -> its connection's task
        self.changed: Callable[[], None] = lambda: None  # called after each message that moved a report

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, self.host, self.port, limit=COMMON_HEADER.size)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]
        log.info("bmp_station_listening", address=self.host, port=self.port, routers=sorted(self.reports))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._connections.values():  # each reader ends on its closed stream
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def samples(self) -> dict[str, dict[tuple[str, ...], float]]:
        """The station's metrics (`observe.metrics.watch_bmp`)."""
        found: dict[str, dict[tuple[str, ...], float]] = {k: {} for k in ("received", "accepted", "connected", "messages", "dropped")}
        for r in self.reports.values():
            name = r.sys_name or r.address
            for (_distinguisher, address), peer in r.peers.items():
                if peer.pre_policy_reported:
                    found["received"][(name, str(address))] = len(peer.pre_policy)
                if peer.post_policy_reported:
                    found["accepted"][(name, str(address))] = len(peer.post_policy)
            found["connected"][(r.address,)] = float(r.connected_since is not None)
            found["messages"][(r.address,)] = r.messages
            for reason, count in (("not_ours", r.dropped_not_ours), ("over_limit", r.dropped_over_limit),
                                  ("unknown_type", r.dropped_unknown), ("invalid", r.errors)):
                found["dropped"][(r.address, reason)] = count
        return found

    def report_of(self, router_address: Address) -> tuple[RouterReport, ...]:
        """The routers whose sessions end at `router_address` (the BGPPeer's peerAddress): the one
        connecting from it, and any other whose Peer Up names it as its end of a session."""
        found = []
        for report in self.reports.values():
            if report.address == str(router_address) or any(p.local_address == router_address for p in report.peers.values()):
                found.append(report)
        return tuple(found)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = str(ipaddress.ip_address(writer.get_extra_info("peername")[0]))
        report = self.reports.get(address)
        if report is None:
            self.refused += 1
            log.warning("bmp_connection_refused", address=address, reason="not a listed router")
            writer.close()
            return
        earlier = self._current.get(address)
        if earlier is not None:  # its earlier connection died without a word (no FIN): the new one wins
            log.info("bmp_router_reconnected", router=address, action="earlier connection closed")
            self._connections[earlier].close()
            await asyncio.gather(earlier, return_exceptions=True)
        _keepalive(writer)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task], self._current[address] = writer, task
        report.connected_since, report.disconnected_at, report.peers = time.time(), None, {}
        log.info("bmp_router_connected", router=address)
        try:
            await self._read(reader, report)
        except (asyncio.IncompleteReadError, OSError):
            pass
        except BmpError as exc:
            report.errors += 1
            report.last_error = str(exc)
            log.warning("bmp_message_invalid", router=address, error=str(exc), action="connection closed")
        finally:
            self._connections.pop(task, None)
            if self._current.get(address) is task:
                del self._current[address]
            report.connected_since, report.disconnected_at, report.peers = None, time.time(), {}
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()
            log.info("bmp_router_disconnected", router=address)
            self.changed()

    async def _read(self, reader: asyncio.StreamReader, report: RouterReport) -> None:
        while True:
            head = await reader.readexactly(COMMON_HEADER.size)
            data = head + await reader.readexactly(frame_length(head) - COMMON_HEADER.size)
            report.messages += 1
            if self.take(report, data):
                self.changed()

    def take(self, report: RouterReport, data: bytes) -> bool:
        """One whole message into `report`; True if what it holds of ours moved."""
        kind = data[5]
        if kind > max(MessageType):  # a type from a later draft: skipped by its length (RFC 7854 4.1)
            report.dropped_unknown += 1
            return False
        peer: PeerHeader | None = None
        if kind not in (MessageType.INITIATION, MessageType.TERMINATION):
            peer = peer_header(data)
            if not self.is_ours(peer.address) or peer.adj_rib_out:
                report.dropped_not_ours += 1
                return False
        known = report.peers.get(peer.key) if peer is not None else None
        message = decode(data, add_path=known.add_path if known is not None else frozenset(), peer=peer)
        return self._apply(report, message)

    def _apply(self, report: RouterReport, message: Message) -> bool:
        if message.type is MessageType.INITIATION:
            report.sys_descr, report.sys_name = message.info.get(1), message.info.get(2)
            return False
        if message.type is MessageType.TERMINATION or message.peer is None:
            return False
        key = message.peer.key
        if key not in report.peers and len(report.peers) >= MAX_SESSIONS:  # ours, under ever new distinguishers
            report.dropped_over_limit += 1
            return False
        if message.type is MessageType.PEER_UP:
            report.peers[key] = PeerReport(
                local_address=message.local_address, router_id=message.sent_open.bgp_id if message.sent_open else None,
                up_since=time.time(), add_path=add_path_families(message.sent_open, message.received_open),
            )  # fmt: skip
            return True
        if message.type is MessageType.PEER_DOWN:
            return report.peers.pop(key, None) is not None
        if message.type is not MessageType.ROUTE_MONITORING or message.update is None:
            return False
        peer = report.peers.setdefault(key, PeerReport())  # a router may omit the Peer Up (RFC 7854 4.10)
        post = message.peer.post_policy
        rib = peer.post_policy if post else peer.pre_policy
        first = not (peer.post_policy_reported if post else peer.pre_policy_reported)
        if post:
            peer.post_policy_reported = True
        else:
            peer.pre_policy_reported = True
        before = len(rib)
        rib.difference_update(message.update.withdrawn)
        moved = len(rib) != before
        room = self.max_prefixes - report.prefixes()
        for prefix in message.update.announced:
            if prefix in rib:
                continue
            if room <= 0:
                report.dropped_over_limit += 1
                continue
            rib.add(prefix)
            room -= 1
            moved = True
        return moved or first


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """TCP keepalives on a router's connection: BMP has no heartbeat of its own, and a router that
    vanished without closing would otherwise look connected for ever (~90 s to notice, this way)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def router_verdict(
    reports: tuple[RouterReport, ...], router_address: Address, our_address: Address, prefix: Prefix, *,
    now: float, late: float, waiting_since: float,
) -> dict[str, object] | None:  # fmt: skip
    """What the routers at `router_address` report of `prefix` on our session from `our_address`:
    `received` (in its Adj-RIB-In pre-policy) and `accepted` (post-policy), each True, False or None
    (not reported), and a `reason` in words; None when no listed router ends that session.

    `waiting_since`: since when the route should be there (our acknowledgement, the session's start);
    a report absent for less than `late` seconds after it, or after the router's own (re)connection and
    Peer Up, is `pending`, not missing: a router sends its table at its own pace.
    """
    if not reports:
        return None
    for report in reports:
        peer = report.session(router_address, our_address) if report.connected_since is not None else None
        if peer is not None:
            young = now - max(waiting_since, report.connected_since or 0.0, peer.up_since or 0.0) < late
            return _session_verdict(report.sys_name or report.address, peer, prefix, young=young, late=late)
    name = reports[0].sys_name or reports[0].address
    connected = [r.connected_since for r in reports if r.connected_since is not None]
    if now - max([waiting_since, *connected]) < late:
        return _verdict(name, None, None, f"not reported by router {name} yet (a report may be {late:g} s late)", pending=True)
    if connected:
        return _verdict(name, None, None, f"router {name} is connected but reports nothing of this session "
                                          "(is its BMP route monitoring on?)")  # fmt: skip
    return _verdict(name, None, None, f"router {name} has not connected to the BMP station: its report is missing")


def _session_verdict(name: str, peer: PeerReport, prefix: Prefix, *, young: bool, late: float) -> dict[str, object]:
    received = (prefix in peer.pre_policy) if peer.pre_policy_reported else None
    accepted = (prefix in peer.post_policy) if peer.post_policy_reported else None
    if accepted:
        return _verdict(name, received, True, f"router {name} accepted it (post-policy)")
    if received and accepted is False:
        return _verdict(name, True, False, f"router {name} received it and its import policy rejected it")
    if received:
        return _verdict(name, True, None, f"router {name} received it (it reports no post-policy routes)")
    if young:
        return _verdict(name, received, accepted, f"not reported by router {name} yet (a report may be {late:g} s late)",
                        pending=True)  # fmt: skip
    if accepted is False:
        also = " and from its pre-policy ones" if received is False else ""
        return _verdict(name, received, False, f"router {name} does not have it: absent from its post-policy routes{also}")
    return _verdict(name, received, accepted, f"router {name} reports no routes of this session yet")


def _verdict(name: str, received: bool | None, accepted: bool | None, reason: str, *, pending: bool = False) -> dict[str, object]:
    return {"router": name, "received": received, "accepted": accepted, "pending": pending, "reason": reason}
