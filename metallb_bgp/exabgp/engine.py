"""The ExaBGP engine: keeps this node's routers in line with the desired `RouteTable`.

The speaker hands the engine two things: the peers of this node (`set_peers`) and the routes it wants
announced (`apply`). The engine owns an `exabgp` child and its API relay, and keeps one promise: every
established session carries exactly the desired routes for its peer. It does so with a small model of
what it has told each router (`sent`) and one sync pass at a time:

- `apply` replaces the desired table and wakes the sync pass, which sends `diff(sent, desired)` as bulk
  commands (`commands.py`), flow-controlled by ExaBGP's acks;
- a session coming up marks its peer *fresh*: the next pass re-announces its whole table (then
  End-of-RIB when graceful restart is on), because the router holds none of our routes, or stale ones;
- nothing is sent before the first `apply`: a session may come up before the caller has read its
  cluster, and End-of-RIB over an empty table would make a graceful-restart router flush the stale
  routes it kept for us across the restart; before it, `offer` may hand over a *provisional* table
  (what the part of the cluster listed so far already justifies): it is announced, nothing is
  withdrawn, and End-of-RIB waits for the first `apply`, so a restarting speaker's push overlaps its
  lists;
- a session going down only stops traffic to that peer: its routes are held and re-pushed at the next
  session up;
- only what ExaBGP acknowledged counts as sent: a command answered `error` leaves its routes as the
  router had them, and they are sent again after a backoff (`_after_replies`); a neighbour without a
  `sourceAddress` is rendered with the local address the kernel routes it from, because with
  `local-address auto` ExaBGP refuses every `next-hop self` to an unchanged neighbour after a reload;
- a withdrawal carries the attributes its route was announced with, next hop included (DESIGN.md: a
  bare one can be lost); when the node's own addresses change (`set_next_hops`), the other family's
  routes on dual-stack sessions are moved to the new next hop before anything else is sent;
- a child that dies is restarted with exponential backoff; the new ExaBGP starts empty and every
  session comes back through the fresh-peer path. A relay connection that breaks while ExaBGP lives is
  treated the same way (ExaBGP is restarted): session events may have been lost with it, and a
  restart is the one state we know how to rebuild from.

Peers change through a configuration `reload` (ExaBGP has no runtime neighbour add/remove). The new
file is validated first (a broken one is still answered `done`), and the reload is confirmed by reading
back the neighbours' descriptions, because ExaBGP drops a reload request that arrives while routes are
queued for a peer. Unchanged neighbours keep their sessions.

What this engine does not do: decide routes (that is `routes.desired_routes`), or check that the router
accepted them (`done` means ExaBGP took the command, not that the router has the route).

Why one module of ~870 lines: everything above is one state machine owned by one asyncio task set: the
child, its channel, each session's state and hold-back, and what was acknowledged. Split across
modules, every piece would take the engine's fields as arguments. The pure parts already live beside
it (`render`, `commands`, `events`, `backoff`), and so do the host lookups (`host`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from types import MappingProxyType
from typing import Any

import structlog

from metallb_bgp.api.problems import printable
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.routes.table import RouteAttributes, RouteDiff, RouteKey, RouteTable, group_routes
from metallb_bgp.exabgp import commands, relay
from metallb_bgp.exabgp.backoff import Backoff
from metallb_bgp.exabgp.channel import Channel, ChannelClosed
from metallb_bgp.exabgp.events import (
    Line,
    NeighborId,
    NotificationEvent,
    Output,
    RelayHello,
    SessionEvent,
    ShutdownEvent,
    parse_line,
)
from metallb_bgp.exabgp.host import process_exists, route_source, write_private
from metallb_bgp.exabgp.process import (
    ExaBGPChild,
    exabgp_environment,
    find_exabgp,
    validate_config,
)
from metallb_bgp.exabgp.render import Neighbor, RenderedConfig, ignored_settings, render

CONFIG_FILE = "exabgp.conf"
CANDIDATE_FILE = "exabgp.conf.new"
ENV_FILE = "exabgp.env"
SOCKET_FILE = "api.sock"
MAX_UNIX_PATH = 107
WITHDRAW_GRACE = 0.5  # seconds between the last withdrawal ack and stopping ExaBGP
_DESCRIPTION = re.compile(r'^\s*description "(.*)";\s*$')


class ExaBGPError(Exception):
    """The engine could not get ExaBGP to do what was asked."""


class ExaBGPConfigError(ExaBGPError):
    """`exabgp validate` refused a rendered configuration (the previous one stays in force)."""


class SessionState(str, Enum):
    IDLE = "idle"  # not connected (never was, down, or ExaBGP restarting)
    CONNECTED = "connected"  # TCP up, OPEN exchange in progress
    ESTABLISHED = "established"


@dataclass(frozen=True)
class PeerState:
    state: SessionState
    since: float  # wall-clock time (time.time()) of the last state change
    last_error: str | None = None


@dataclass(frozen=True)
class EngineTuning:
    prefixes_per_command: int = 500
    commands_in_flight: int = 4  # bulk commands outstanding before waiting for an ack
    reactor_speed: float = 0.1  # exabgp.reactor.speed
    ack_timeout: float = 60.0  # no ack for this long: ExaBGP is wedged, restart it
    relay_connect_timeout: float = 20.0
    restart_backoff_initial: float = 0.5
    restart_backoff_max: float = 30.0
    stable_after: float = 64.0  # a child that lived this long restarts with the initial backoff
    stop_timeout: float = 5.0  # SIGTERM, then SIGKILL
    reload_attempts: int = 30
    reload_check_delay: float = 0.2
    retry_backoff_initial: float = 0.5  # a refused command is sent again after this, doubling per pass
    retry_backoff_max: float = 30.0
    reset_backoff_initial: float = 1.0  # a session the router reset is held back this long, doubling per reset
    reset_backoff_max: float = 60.0
    reset_stable_after: float = 60.0  # established this long before a reset: the count starts again


class ExaBGPEngine:
    def __init__(
        self,
        *,
        workdir: Path,
        router_id: IPv4Address,
        local_addresses: Sequence[IPAddress] = (),
        ipv4_next_hop: IPv4Address | None = None,
        ipv6_next_hop: IPv6Address | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        tuning: EngineTuning = EngineTuning(),
        exabgp_path: Path | None = None,
        on_refused: Callable[[str, int], None] | None = None,
        on_notification: Callable[[str, str, int, int], None] | None = None,
    ) -> None:
        """`ipv4_next_hop` / `ipv6_next_hop` are used only for routes of the other family than the
        session's (dual-stack peers); same-family routes always use the session's own address.
        `on_refused(peer, routes)` is told each time ExaBGP refuses updates for a peer, and
        `on_notification(peer, direction, code, subcode)` of each NOTIFICATION (metrics)."""
        self._workdir = Path(workdir).resolve()  # ExaBGP and the relay run with other working directories
        self._router_id = router_id
        self._local_addresses = tuple(local_addresses)
        self._next_hops: dict[int, IPAddress] = _hops(ipv4_next_hop, ipv6_next_hop)
        self._retired_hops: dict[int, IPAddress | None] = {}  # family -> the hop its sent routes carry
        self._log = logger if logger is not None else structlog.get_logger("metallb_bgp.exabgp")
        self._tuning = tuning
        self._exabgp = exabgp_path
        self._env: dict[str, str] = {}
        self._peers: tuple[Peer, ...] = ()
        self._rendered = RenderedConfig(text="", neighbors={}, rejected={})
        self._states: dict[str, PeerState] = {}
        self._established: set[str] = set()
        self._fresh: set[str] = set()
        self._desired = RouteTable()
        self._table_given = False  # no sync pass before the first apply or offer (see the module docstring)
        self._provisional = False  # `_desired` came from `offer`: announce only, End-of-RIB held
        self._eor_due: set[str] = set()  # graceful-restart peers pushed provisionally: End-of-RIB at the first apply
        self._sent: dict[RouteKey, RouteAttributes] = {}
        self._touched: set[RouteKey] | None = None  # keys changed since the last pass; None: compare all
        self._last_pass: tuple[frozenset[str], str] | None = None  # sessions and config the last pass saw
        self._channel: Channel | None = None
        self._child: ExaBGPChild | None = None
        self._relay_waiter: asyncio.Future[Channel] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()  # one user of the channel at a time: a sync pass or a reload
        self._config_lock = asyncio.Lock()
        self._relay_pid: int | None = None
        self._synced = asyncio.Condition()
        self._generation = 0
        self._synced_generation = 0
        self._sources: dict[IPAddress, IPAddress | None] = {}  # peer address -> the kernel's source for it
        self._retries = Backoff(tuning.retry_backoff_initial, tuning.retry_backoff_max)  # passes with refusals
        self._resets: dict[str, Backoff] = {}  # per peer: sessions the router reset in a row
        self._held: dict[str, tuple[float, str]] = {}  # peer -> (monotonic time it may connect again, why)
        self._refreshes: set[asyncio.Task[None]] = set()
        self._on_notified = on_notification
        self._retry: asyncio.TimerHandle | None = None
        self._unacknowledged: dict[str, int] = {}
        self._acknowledged: dict[str, int] = {}  # per peer, prefix updates ExaBGP took (metrics)
        self._in_flight: set[RouteKey] = set()  # keys of the pass's commands ExaBGP has not answered yet
        self.restarts = 0  # children that ended and were started again (metrics)
        self._on_refused = on_refused

    # ------------------------------------------------------------------ public API

    async def start(self, peers: Sequence[Peer] | None = None) -> None:
        """Start ExaBGP with `peers` (default: those given to `set_peers` before, if any).

        Returns once its API relay is connected; raises `ExaBGPError` if ExaBGP does not come up and
        `ExaBGPConfigError` if it refuses the configuration.
        """
        self._prepare_workdir()
        peers = self._peers if peers is None else peers
        rendered = self._render(peers)
        await self._validate(rendered)
        self._adopt(rendered, peers)
        self._server = await asyncio.start_unix_server(
            self._on_relay_connection, path=str(self._socket_path), limit=2**20
        )
        first_channel = asyncio.get_running_loop().create_future()
        self._relay_waiter = first_channel
        self._tasks = [
            asyncio.create_task(self._supervise(first_channel), name="exabgp-supervisor"),
            asyncio.create_task(self._sync_loop(), name="exabgp-sync"),
        ]
        try:
            async with asyncio.timeout(self._tuning.relay_connect_timeout):
                await asyncio.shield(first_channel)
        except (TimeoutError, ExaBGPError) as exc:
            await self.stop()
            raise ExaBGPError(f"ExaBGP did not start: {str(exc) or 'no relay connection'}") from None

    async def set_peers(self, peers: Sequence[Peer]) -> None:
        """Make ExaBGP's neighbours match `peers`; sessions of unchanged peers are not disturbed."""
        async with self._config_lock:  # one configuration change at a time: the file is shared
            if self._server is None:  # not started: remembered for start()
                self._peers = tuple(peers)
                return
            rendered = self._render(peers)
            if rendered.text == self._rendered.text:
                self._adopt(rendered, peers)
                return
            await self._validate(rendered)
            self._adopt(rendered, peers)
            self._write_config(rendered)
            channel = self._channel
            if channel is not None:
                try:
                    async with self._lock:
                        await self._reload(channel, rendered)
                except ChannelClosed:
                    pass  # the next child reads the new file when it starts
        self._wake.set()

    def set_next_hops(self, ipv4: IPv4Address | None, ipv6: IPv6Address | None) -> None:
        """New next hops for the other family's routes on dual-stack sessions (the node's addresses
        changed); the next sync pass moves every such route to them. Returns at once: the caller's next
        `apply` waits for that pass.

        Routes already sent keep being withdrawn with the hop they were announced with (see the module
        docstring): a route still wanted is announced again with the new hop (BGP replaces the path), one
        that can no longer be sent (no address of its family any more) is withdrawn with the old one.
        """
        hops = _hops(ipv4, ipv6)
        if hops == self._next_hops:
            return
        for family in (4, 6):
            if hops.get(family) != self._next_hops.get(family):
                self._retired_hops.setdefault(family, self._next_hops.get(family))
        self._next_hops = hops
        self._touched = None  # what each peer can carry moved: the next pass compares everything
        self._wake.set()

    async def apply(self, table: RouteTable, *, touched: Collection[RouteKey] | None = None) -> None:
        """Make `table` the desired state; returns when ExaBGP has acked the change (or is away).

        `touched`, when the caller knows it, names every (peer, prefix) that may differ from the previous
        table; the sync pass then compares only those instead of the whole table (a one-service change at
        10,000 services costs microseconds instead of a full diff). Without it, or whenever sessions or
        the configuration moved since the last pass, the pass compares everything.
        """
        self._desired = table
        self._table_given = True
        self._provisional = False
        if touched is None or self._touched is None:
            self._touched = None
        else:
            self._touched |= set(touched)
        self._generation += 1
        generation = self._generation
        self._wake.set()
        async with self._synced:
            await self._synced.wait_for(
                lambda: self._synced_generation >= generation or self._channel is None or self._stopping.is_set()
            )

    def offer(self, table: RouteTable) -> None:
        """A provisional desired state, before the first `apply`: its routes are announced as soon as
        sessions allow, without waiting for the acks; nothing is withdrawn (what was sent stays), and a
        graceful-restart peer gets End-of-RIB only after the first `apply`'s pass, so the stale routes
        its router kept for us stay until the whole table is there. The caller offers only routes the
        final table will hold too (the cluster listed so far justifies them); `apply` takes over."""
        if self._table_given and not self._provisional:
            raise RuntimeError("offer() after apply(): provisional tables are for the first push only")
        self._desired = table
        self._table_given = True
        self._provisional = True
        self._touched = None
        self._generation += 1
        self._wake.set()

    async def stop(self, *, withdraw: bool | Collection[str] = False) -> None:
        """Stop ExaBGP (SIGTERM, then SIGKILL) and every task of the engine.

        ExaBGP closes its sessions without a Cease, and a router that negotiated graceful restart keeps
        our routes as stale for the restart time. `withdraw=True` withdraws every route first (bounded
        by the ack timeout), for a node that is going away rather than restarting; a collection of peer
        names withdraws from those peers only (those without graceful restart, say).
        """
        if withdraw and self._channel is not None and not self._stopping.is_set():
            known = {**self._sent, **self._desired.routes} if self._provisional else self._desired.routes
            kept = {} if withdraw is True else {k: v for k, v in known.items() if k[0] not in withdraw}
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tuning.ack_timeout):
                    await self.apply(RouteTable(routes=kept))
            await asyncio.sleep(WITHDRAW_GRACE)  # `done` means queued in ExaBGP, not yet on the wire
        self._stopping.set()
        self._wake.set()
        if self._channel is not None:
            self._channel.close()
        if self._child is not None:
            await self._child.stop(self._tuning.stop_timeout)
        if self._tasks:  # the supervisor notices the stop and cleans up after its child
            await asyncio.wait([self._tasks[0]], timeout=self._tuning.stop_timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._retry is not None:
            self._retry.cancel()
        for task in list(self._refreshes):
            task.cancel()
        await asyncio.gather(*self._refreshes, return_exceptions=True)
        await self._reap_relay()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()
        await self._notify_synced()

    def peer_states(self) -> Mapping[str, PeerState]:
        return MappingProxyType(dict(self._states))

    @property
    def rejected_peers(self) -> Mapping[str, str]:
        """Peers that have no ExaBGP neighbour, and why."""
        return MappingProxyType(dict(self._rendered.rejected))

    @property
    def child_pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    @property
    def relay_pid(self) -> int | None:
        return self._relay_pid

    async def __aenter__(self) -> ExaBGPEngine:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ configuration

    @property
    def _socket_path(self) -> Path:
        return self._workdir / SOCKET_FILE

    def _prepare_workdir(self) -> None:
        self._workdir.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new one is private: it holds the API socket
        if len(str(self._socket_path).encode()) > MAX_UNIX_PATH:
            raise ExaBGPError(f"workdir path too long for a unix socket: {self._workdir}")
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()
        env_file = self._workdir / ENV_FILE
        env_file.write_text("# intentionally empty: the engine passes ExaBGP's settings in its environment\n")
        self._env = exabgp_environment(env_file=env_file, reactor_speed=self._tuning.reactor_speed)
        if self._exabgp is None:
            self._exabgp = find_exabgp()

    def _render(self, peers: Sequence[Peer]) -> RenderedConfig:
        relay_command = [sys.executable, "-I", relay.__file__, str(self._socket_path)]
        sources = {
            peer.name: source
            for peer in peers
            if peer.source_address is None and not peer.vrf and (source := self._route_source(peer.address)) is not None
        }  # fmt: skip
        now = time.monotonic()
        held = {name: reason for name, (until, reason) in self._held.items() if until > now}
        rendered = render(
            [peer for peer in peers if peer.name not in held], router_id=self._router_id,
            process_command=relay_command, local_addresses=self._local_addresses, sources=sources,
        )  # fmt: skip
        if not held:
            return rendered
        names = {peer.name for peer in peers}
        return replace(rendered, rejected={**rendered.rejected, **{n: r for n, r in held.items() if n in names}})

    def _route_source(self, address: IPAddress) -> IPAddress | None:
        """`route_source`, looked up once per peer address: `set_peers` runs on every reconcile, and a
        working session is not moved to another local address because a route changed under it."""
        if address not in self._sources:
            self._sources[address] = route_source(address)
        return self._sources[address]

    async def _validate(self, rendered: RenderedConfig) -> None:
        if _only_removes(self._rendered, rendered):
            return  # the running configuration less whole neighbour blocks: valid, and ~0.5 s sooner
        candidate = self._workdir / CANDIDATE_FILE
        write_private(candidate, rendered.text)
        assert self._exabgp is not None
        valid, output = await validate_config(self._exabgp, candidate, self._env)
        if not valid:
            self._log.error("exabgp_config_invalid", output=output)
            raise ExaBGPConfigError(output)

    def _write_config(self, rendered: RenderedConfig) -> None:
        write_private(self._workdir / CONFIG_FILE, rendered.text)
        self._log.info("exabgp_config_written", peers=sorted(rendered.neighbors), rejected=dict(rendered.rejected))

    def _adopt(self, rendered: RenderedConfig, peers: Sequence[Peer]) -> None:
        """Take `rendered` as the configuration: forget removed peers, start new ones idle."""
        old = self._rendered.neighbors
        new = rendered.neighbors
        for name, neighbor in old.items():
            if name not in new or new[name].selector != neighbor.selector:
                self._forget_session(name)
        now = time.time()
        states: dict[str, PeerState] = {}
        for peer in peers:
            kept = self._states.get(peer.name)
            if peer.name in rendered.rejected:
                states[peer.name] = PeerState(SessionState.IDLE, now, rendered.rejected[peer.name])
            elif kept is not None and peer.name in old and old[peer.name].selector == new[peer.name].selector:
                states[peer.name] = kept
            else:
                states[peer.name] = PeerState(SessionState.IDLE, now)
        self._states = states
        self._peers = tuple(peers)
        self._rendered = rendered
        for peer in peers:
            ignored = ignored_settings(peer)
            if ignored and peer.name in rendered.neighbors:
                self._log.info("exabgp_peer_settings_ignored", peer=peer.name, settings=ignored)

    def _forget_session(self, name: str) -> None:
        self._established.discard(name)
        self._fresh.discard(name)
        self._eor_due.discard(name)
        self._sent = {key: attrs for key, attrs in self._sent.items() if key[0] != name}
        self._last_pass = None

    async def _reload(self, channel: Channel, rendered: RenderedConfig) -> None:
        expected = sorted(neighbor.description for neighbor in rendered.neighbors.values())
        for attempt in range(1, self._tuning.reload_attempts + 1):
            await channel.barrier("reload")
            for _check in range(3):  # ExaBGP applies the reload at the top of its next loop turn
                await asyncio.sleep(self._tuning.reload_check_delay)
                if await self._loaded_descriptions(channel) == expected:
                    self._log.info("exabgp_reload_applied", attempts=attempt, peers=len(expected))
                    return
        self._log.error("exabgp_reload_not_applied", attempts=self._tuning.reload_attempts)
        channel.close()  # the restarted child starts from the new file
        raise ChannelClosed("reload not applied")

    async def _loaded_descriptions(self, channel: Channel) -> list[str]:
        reply = await channel.request("show neighbor configuration")
        # the output also holds md5 lines: only descriptions are read, nothing of it is logged
        return sorted(m.group(1) for m in map(_DESCRIPTION.match, reply.output) if m is not None)

    # ------------------------------------------------------------------ child supervision

    async def _supervise(self, first_channel: asyncio.Future[Channel]) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self._tuning.restart_backoff_initial, self._tuning.restart_backoff_max, jitter=0.0)
        waiter = first_channel
        while not self._stopping.is_set():  # one turn per child; ends with stop()
            started = loop.time()
            try:
                await self._run_child(waiter)
            except Exception as exc:  # noqa: BLE001 - the supervisor must outlive any one child, whatever went wrong
                self._log.error("exabgp_child_failed", error=str(exc), exc_info=not isinstance(exc, ExaBGPError))
                if not waiter.done():
                    waiter.set_exception(ExaBGPError(str(exc)))
                    waiter.exception()
            if self._stopping.is_set():
                return
            if loop.time() - started >= self._tuning.stable_after:
                backoff.reset()
            delay = backoff.next()
            self.restarts += 1
            self._log.warning("exabgp_child_restart_scheduled", delay_seconds=delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            waiter = loop.create_future()

    async def _run_child(self, waiter: asyncio.Future[Channel]) -> None:
        assert self._exabgp is not None
        self._write_config(self._rendered)
        self._relay_waiter = waiter
        child = await ExaBGPChild.spawn(
            self._exabgp, self._workdir / CONFIG_FILE, env=self._env, cwd=self._workdir, logger=self._log
        )
        self._child = child
        self._log.info("exabgp_child_started", pid=child.pid)
        exited = asyncio.create_task(child.wait())
        try:
            channel = await self._await_relay(waiter, exited)
            closed = asyncio.create_task(channel.wait_closed())
            await asyncio.wait({exited, closed}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
        finally:
            await self._on_disconnected()
            code = await child.stop(self._tuning.stop_timeout)
            exited.cancel()
            self._child = None
            self._log.warning("exabgp_child_exited", pid=child.pid, returncode=code)
            await self._reap_relay()

    async def _await_relay(self, waiter: asyncio.Future[Channel], exited: asyncio.Task[int]) -> Channel:
        either: set[asyncio.Future[Any]] = {waiter, exited}
        done, _ = await asyncio.wait(
            either, timeout=self._tuning.relay_connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter in done:
            return waiter.result()
        if exited in done:
            raise ExaBGPError(f"exabgp exited with code {exited.result()} before its relay connected")
        raise ExaBGPError("the API relay did not connect")

    async def _on_relay_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5.0):
                raw = await reader.readline()
        except (TimeoutError, OSError, ValueError):
            writer.close()
            return
        hello = parse_line(raw.decode(errors="replace"))
        child, waiter = self._child, self._relay_waiter
        if (
            not isinstance(hello, RelayHello)
            or child is None
            or hello.exabgp_pid != child.pid
            or waiter is None
            or waiter.done()
        ):
            self._log.warning("relay_rejected", hello=raw[:80].decode(errors="replace").strip())
            writer.close()
            return
        channel = Channel(
            reader,
            writer,
            on_line=self._on_line,
            window=self._tuning.commands_in_flight,
            ack_timeout=self._tuning.ack_timeout,
            logger=self._log,
        )
        self._relay_pid = hello.pid
        self._on_connected(channel)  # before the first event is read: events then apply to a clean state
        channel.start()
        self._log.info("relay_connected", relay_pid=hello.pid, exabgp_pid=hello.exabgp_pid)
        waiter.set_result(channel)

    async def _reap_relay(self) -> None:
        """The relay exits when ExaBGP's pipe closes; make sure of it (it is ExaBGP's child, not ours)."""
        pid, self._relay_pid = self._relay_pid, None
        if pid is None:
            return
        for _ in range(20):  # up to 1 s
            if not process_exists(pid):
                return
            await asyncio.sleep(0.05)
        self._log.warning("relay_kill", pid=pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _on_connected(self, channel: Channel) -> None:
        # a new ExaBGP holds no routes and no sessions: everything comes back through session up
        self._channel = channel
        self._sent = {}
        self._last_pass = None
        self._established.clear()
        self._fresh.clear()
        self._wake.set()

    async def _on_disconnected(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        now = time.time()
        reason = "ExaBGP stopped" if self._stopping.is_set() else "ExaBGP restarting"
        for name, state in self._states.items():
            if state.state is not SessionState.IDLE:
                self._states[name] = PeerState(SessionState.IDLE, now, reason)
        self._established.clear()
        self._fresh.clear()
        await self._notify_synced()

    # ------------------------------------------------------------------ events

    def _on_line(self, line: Line) -> None:
        if isinstance(line, SessionEvent):
            self._on_session_event(line)
        elif isinstance(line, NotificationEvent):
            self._on_notification(line)
        elif isinstance(line, ShutdownEvent):
            self._log.info("exabgp_shutting_down")
        elif isinstance(line, Output):
            self._log.debug("exabgp_unexpected_output", line=line.text[:200])

    def _peer_of(self, neighbor: NeighborId) -> str | None:
        for name, candidate in self._rendered.neighbors.items():
            if candidate.address != neighbor.address:
                continue
            if neighbor.local_asn is not None and neighbor.local_asn != candidate.local_asn:
                continue
            if None not in (neighbor.peer_asn, candidate.peer_asn) and neighbor.peer_asn != candidate.peer_asn:
                continue
            return name
        return None

    def _on_session_event(self, event: SessionEvent) -> None:
        name = self._peer_of(event.neighbor)
        if name is None:
            self._log.debug("bgp_session_event_unknown_peer", address=str(event.neighbor.address), state=event.state)
            return
        previous = self._states.get(name)
        last_error = previous.last_error if previous is not None else None
        if event.state == "up":
            self._established.add(name)
            self._fresh.add(name)
            self._set_state(name, SessionState.ESTABLISHED, last_error)
            self._wake.set()
        elif event.state == "connected":
            self._set_state(name, SessionState.CONNECTED, last_error)
        elif event.state == "down":
            self._established.discard(name)
            self._fresh.discard(name)
            self._set_state(name, SessionState.IDLE, event.reason or last_error)
        self._log.info("bgp_session_state", peer=name, state=event.state, reason=event.reason or None)

    def _on_notification(self, event: NotificationEvent) -> None:
        name = self._peer_of(event.neighbor)
        if name is None:
            return
        message = printable(event.message)[:200]  # the router's data: often binary, never trusted
        text = f"notification {event.direction} code {event.code} subcode {event.subcode}"
        if message.strip():
            text += f": {message}"
        state = self._states.get(name)
        if state is not None:
            self._states[name] = PeerState(state.state, state.since, text)
        delay = self._hold_back(name, text, state) if event.direction == "receive" else None
        if self._on_notified is not None:
            self._on_notified(name, event.direction, event.code, event.subcode)
        self._log.warning(
            "bgp_notification", peer=name, direction=event.direction, code=event.code, subcode=event.subcode,
            message=message.strip() or None, retry_in_seconds=None if delay is None else round(delay, 3),
        )

    def _hold_back(self, name: str, text: str, state: PeerState | None) -> float:
        """The router reset the session: keep its neighbour out of ExaBGP's configuration for a while.

        ExaBGP reconnects at once to a router that closed the session with a NOTIFICATION (FRR does so
        for every UPDATE whose next hop it considers martian: ~18 sessions a second, for ever). The
        delay doubles with each reset (with jitter, up to `reset_backoff_max`); a session that stayed
        established for `reset_stable_after` before the reset starts the count again.
        """
        backoff = self._resets.setdefault(
            name, Backoff(self._tuning.reset_backoff_initial, self._tuning.reset_backoff_max)
        )  # fmt: skip
        stable = state is not None and state.state is SessionState.ESTABLISHED
        if stable and time.time() - state.since >= self._tuning.reset_stable_after:  # type: ignore[union-attr]
            backoff.reset()
        delay = backoff.next()
        reason = f"held back {delay:.1f} s after the router reset the session ({text}; reset {backoff.failures} in a row)"
        self._held[name] = (time.monotonic() + delay, reason)
        loop = asyncio.get_running_loop()
        loop.call_soon(self._refresh_peers)
        loop.call_later(delay, self._refresh_peers)
        return delay

    def _refresh_peers(self) -> None:
        """Render the peers again (a hold started or ended), in a task of its own."""
        if self._stopping.is_set():
            return
        task = asyncio.create_task(self._set_peers_logged(), name="exabgp-peer-hold")
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _set_peers_logged(self) -> None:
        try:
            await self.set_peers(self._peers)
        except ExaBGPError as exc:
            self._log.error("peers_not_applied", error=str(exc), action="previous sessions kept")

    def _set_state(self, name: str, state: SessionState, last_error: str | None) -> None:
        previous = self._states.get(name)
        since = previous.since if previous is not None and previous.state is state else time.time()
        self._states[name] = PeerState(state, since, last_error)

    # ------------------------------------------------------------------ route sync

    async def _sync_loop(self) -> None:
        while True:  # one pass per wake-up; cancelled by stop()
            await self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            channel = self._channel
            generation = self._generation
            if channel is None or channel.closed or not self._table_given:
                await self._notify_synced()
                continue
            try:
                async with self._lock:
                    await self._sync_pass(channel)
            except ChannelClosed:
                self._touched = self._last_pass = None  # the next pass compares the whole table
                continue
            except Exception:  # noqa: BLE001 - a bug here must not end route sync: restart from a clean state
                self._log.exception("route_sync_failed")
                channel.close()
                continue
            self._synced_generation = max(self._synced_generation, generation)
            await self._notify_synced()

    async def _sync_pass(self, channel: Channel) -> None:
        started = time.monotonic()
        neighbors = self._rendered.neighbors
        established = frozenset(self._established)
        fresh = frozenset(self._fresh & self._established)
        seen = (established, self._rendered.text)
        touched, self._touched = self._touched, set()

        def can_carry(peer: str, family: int) -> bool:
            return commands.can_carry(neighbors.get(peer), family, self._next_hops)

        hop_lines = self._move_to_new_hops(neighbors, established, can_carry) if self._retired_hops else []
        provisional = self._provisional
        desired = self._desired.routes
        if provisional:  # announce only: whatever was sent stays
            desired = {**{key: attrs for key, attrs in self._sent.items() if key[0] in established}, **desired}
        if touched is not None and not fresh and not self._eor_due and self._last_pass == seen:
            plan = commands.plan_touched_sync(
                desired=desired, sent=self._sent, established=established, touched=touched, can_carry=can_carry,
            )
        else:
            plan = commands.plan_sync(
                desired=desired, sent=self._sent, established=established, fresh=fresh,
                can_carry=can_carry,
                graceful_restart=lambda peer: (n := neighbors.get(peer)) is not None and n.graceful_restart,
            )
        self._last_pass = seen
        self._sent = plan.sent
        self._fresh -= fresh
        end_of_rib = self._end_of_rib(plan.end_of_rib, established, provisional)
        route_commands = commands.keyed_commands(
            plan.change, neighbors, next_hops=self._next_hops, prefixes_per_command=self._tuning.prefixes_per_command
        )
        lines = hop_lines + [command.line for command in route_commands]
        # `_sent` already says what this pass tells the routers; until ExaBGP answers, these keys are
        # not acknowledged (`advertised`, `pending` must not say so)
        self._in_flight = {key for command in route_commands for key in command.keys}
        try:
            futures = [await channel.submit(line) for line in lines]
            replies = [await channel.wait(f) for f in futures]
        finally:
            self._in_flight = set()
        failed = sum(1 for reply in replies if not reply.ok)
        refused = [command for command, reply in zip(route_commands, replies[len(hop_lines) :], strict=True) if not reply.ok]
        self._count_acknowledged(route_commands, replies[len(hop_lines) :])
        for peer in end_of_rib:
            for line in commands.end_of_rib_commands(neighbors[peer]):
                reply = await channel.barrier(line)
                failed += 0 if reply.ok else 1
        self._after_replies(refused, plan.replaced, failed)
        if lines or end_of_rib:
            self._log.info(
                "routes_synced",
                announced=sum(len(b.prefixes) * len(b.peers) for b in plan.change.announce),
                withdrawn=sum(len(b.prefixes) * len(b.peers) for b in plan.change.withdraw),
                full_push=sorted(fresh),
                provisional=provisional,
                commands=len(lines),
                failed=failed,
                seconds=round(time.monotonic() - started, 3),
            )

    def _end_of_rib(self, due: tuple[str, ...], established: frozenset[str], provisional: bool) -> tuple[str, ...]:
        """The peers this pass ends with End-of-RIB: none while provisional (they are remembered), else
        the ones due now and those a provisional pass pushed to."""
        if provisional:
            self._eor_due |= set(due)
            return ()
        found = tuple(sorted(set(due) | (self._eor_due & established)))
        self._eor_due -= set(found)
        return found

    def _after_replies(
        self, refused: Sequence[commands.Command], replaced: Mapping[RouteKey, RouteAttributes], failed: int
    ) -> None:
        """Keep `_sent` to what ExaBGP acknowledged, and retry what it refused, with backoff.

        A refused announcement leaves the router with what it had (`replaced`, or nothing); a refused
        withdrawal leaves the route there. Those keys are marked touched, so the next pass sends them
        again; it comes after a delay that doubles with each pass that had refusals (with jitter, up to
        `retry_backoff_max`), and falls back to the initial one after a pass without any.
        """
        for command in refused:
            for key in command.keys:
                if command.action == "withdraw":
                    self._sent[key] = command.attributes
                elif key in replaced:
                    self._sent[key] = replaced[key]
                else:
                    self._sent.pop(key, None)
                if self._touched is not None:
                    self._touched.add(key)
        if not failed:
            self._retries.reset()
            return
        delay = self._retries.next()
        per_peer: dict[str, int] = {}
        for command in refused:
            for peer, _prefix in command.keys:
                per_peer[peer] = per_peer.get(peer, 0) + 1
        for peer, count in sorted(per_peer.items()):
            self._unacknowledged[peer] = self._unacknowledged.get(peer, 0) + count
            if self._on_refused is not None:
                self._on_refused(peer, count)
        self._log.warning(
            "routes_not_acknowledged", commands=failed, routes=per_peer, retry_in_seconds=round(delay, 3),
            attempt=self._retries.failures, action="kept as not sent; sent again after the delay",
        )  # fmt: skip
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(delay, self._wake.set)

    def pending(self) -> dict[str, int]:
        """Per peer of the table, the desired prefixes not acknowledged with these attributes yet."""
        found = {peer.name: 0 for peer in self._peers}
        sent, in_flight = dict(self._sent), self._in_flight  # copies in C: a scrape reads these while the loop sends
        for key, attrs in self._desired.routes.items():
            if sent.get(key) != attrs or key in in_flight:
                found[key[0]] = found.get(key[0], 0) + 1
        return found

    def advertised(self, key: RouteKey) -> bool:
        """Whether the route is out: its session established, and ExaBGP acknowledged it with the
        attributes desired now."""
        if key[0] not in self._established or key in self._in_flight:
            return False
        return (want := self._desired.routes.get(key)) is not None and self._sent.get(key) == want

    def updates(self) -> Mapping[str, int]:
        """Per peer, how many prefix updates (announcements and withdrawals) ExaBGP acknowledged so far."""
        return MappingProxyType(self._acknowledged)

    def _count_acknowledged(self, sent: Sequence[commands.Command], replies: Sequence[Any]) -> None:
        for command, reply in zip(sent, replies, strict=True):
            if reply.ok:
                for peer, _prefix in command.keys:
                    self._acknowledged[peer] = self._acknowledged.get(peer, 0) + 1

    def unacknowledged(self) -> Mapping[str, int]:
        """Per peer, how many route updates ExaBGP has refused so far (each was kept as not sent)."""
        return MappingProxyType(self._unacknowledged)

    def _move_to_new_hops(
        self, neighbors: Mapping[str, Neighbor], established: frozenset[str], can_carry: Callable[[str, int], bool]
    ) -> list[str]:
        """Commands that move the sent routes of each family whose next hop changed onto the new hop,
        leaving `_sent` as the routers will hold it; the pass's own diff then finds nothing more to do
        for them, so no prefix is both announced and withdrawn in one burst.

        Per route sent with the old hop (the other family on a dual-stack session): still wanted with
        the same attributes and carried -> announced again with the new hop; no longer carried or
        wanted -> withdrawn with the old hop; its attributes changed -> left to the diff (an
        announcement, with the new hop). Peers that are down get nothing: their entries are dropped if
        the family can no longer be carried, and a fresh session gets everything again anyway.
        """
        announce: dict[RouteKey, RouteAttributes] = {}
        withdraw: dict[int, dict[RouteKey, RouteAttributes]] = {}
        desired = self._desired.routes
        for key, attrs in list(self._sent.items()):
            peer, prefix = key
            family: int = prefix.version
            neighbor = neighbors.get(peer)
            if family not in self._retired_hops or neighbor is None or neighbor.session_family == family:
                continue
            carried = can_carry(peer, family)
            if peer not in established:
                if not carried:
                    del self._sent[key]
                continue
            wanted = desired.get(key)
            if carried and wanted == attrs:
                announce[key] = attrs
            elif not carried or wanted is None:
                withdraw.setdefault(family, {})[key] = attrs
                del self._sent[key]
        per_command = self._tuning.prefixes_per_command
        lines = []
        for family, routes in withdraw.items():
            old_hop = self._retired_hops[family]
            hops: dict[int, IPAddress] = dict(self._next_hops)
            if old_hop is not None:
                hops[family] = old_hop
            lines += commands.route_commands(RouteDiff(withdraw=group_routes(routes)), neighbors, next_hops=hops,
                                             prefixes_per_command=per_command)  # fmt: skip
        lines += commands.route_commands(RouteDiff(announce=group_routes(announce)), neighbors,
                                         next_hops=self._next_hops, prefixes_per_command=per_command)  # fmt: skip
        self._log.info("next_hops_changed", next_hops={f: str(h) for f, h in sorted(self._next_hops.items())},
                       announced_again=len(announce), withdrawn=sum(len(r) for r in withdraw.values()))  # fmt: skip
        self._retired_hops = {}
        return lines

    async def _notify_synced(self) -> None:
        async with self._synced:
            self._synced.notify_all()


def _only_removes(old: RenderedConfig, new: RenderedConfig) -> bool:
    """Whether `new` is exactly `old` with some neighbour blocks taken out (each block follows a newline)."""
    removed = old.neighbors.keys() - new.neighbors.keys()
    if not old.text or not removed or not new.neighbors.keys() <= old.neighbors.keys():
        return False
    expected = old.text
    for name in removed:
        expected = expected.replace("\n" + old.neighbors[name].block, "", 1)
    return new.text == expected




def _hops(ipv4: IPv4Address | None, ipv6: IPv6Address | None) -> dict[int, IPAddress]:
    return {family: hop for family, hop in ((4, ipv4), (6, ipv6)) if hop is not None}






