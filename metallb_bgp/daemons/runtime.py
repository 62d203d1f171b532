"""What the three daemons share: the cluster source they wait for, wakeups from watch threads
(`Wakeup`, coalescing a burst), signal handling (`until_signalled`), next hops from the Node, the ExaBGP
engine they start, the router-ID choice, which peers to withdraw from on stop, and the problem log.

It exists so that no daemon imports another (`run`, `controller` and `speaker` each import this
instead), and so a reader finds the shared behaviour in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from metallb_bgp.api.core import Node
from metallb_bgp.api.problems import ObjectError, printable
from metallb_bgp.bfd.process import BfdProcess, BfdSession
from metallb_bgp.bmp.station import RouterReport, Station, router_verdict
from metallb_bgp.core.change import ClusterChange
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.model import BFDProfile, Peer
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.routes.node import node_peers
from metallb_bgp.core.routes.table import RouteKey, RouteTable
from metallb_bgp.core.snapshot import ClusterSnapshot
from metallb_bgp.core.writes import problem_entry, timestamp_of
from metallb_bgp.exabgp import EngineTuning, ExaBGPEngine
from metallb_bgp.exabgp.host import route_source
from metallb_bgp.observe import control, metrics

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = structlog.get_logger("metallb_bgp.run")
DEFAULT_TUNING = EngineTuning()


# --- the source the loop reads ------------------------------------------------------------------------


class ClusterSource(Protocol):
    """What the daemons need of `sources.kubernetes.KubernetesSource` (see its contract)."""

    def start(self) -> None: ...

    @property
    def synced(self) -> bool: ...

    def wait_synced(self, timeout: float | None = None, *, config_only: bool = False) -> bool: ...

    def snapshot(self) -> ClusterSnapshot: ...

    def changes(self) -> ClusterChange: ...

    def update_counts(self) -> tuple[int, int]: ...

    def stop(self) -> None: ...


SourceFactory = Callable[["ApiClient", str, Callable[[], None]], ClusterSource]  # the client is imported lazily: `run` never needs it


def kubernetes_source(api_client: ApiClient, namespace: str, on_change: Callable[[], None]) -> ClusterSource:
    from metallb_bgp.sources.kubernetes import KubernetesSource

    return KubernetesSource(api_client, namespace=namespace, on_change=on_change)


async def wait_for_sync(source: ClusterSource, stop: asyncio.Event, *, poll: float = 0.2, config_only: bool = False) -> bool:
    """Block (without blocking the loop) until the source's first lists are in (`config_only`: all but
    Services and EndpointSlices); False if stopped first."""
    while not stop.is_set():
        if await asyncio.to_thread(source.wait_synced, poll, config_only=config_only):
            return True
    return False


def first_peers(change: ClusterChange, node_name: str) -> tuple[Peer, ...]:
    """The node's peers in the first (whole) change, to start ExaBGP with before the first plan; the
    same as that plan's (same snapshot, no earlier last-good versions), else the first reconcile's
    `set_peers` puts it right."""
    assert change.config is not None, "the first change is whole"
    return node_peers(compile_config(change.config).config, find_node(change.config, node_name))


def find_node(snapshot: ClusterSnapshot, node_name: str) -> Node | None:
    return next((n for n in snapshot.nodes if n.name == node_name), None)


class NextHops:
    """This node's own addresses, as the next hops of the other family's routes on dual-stack sessions
    (`dualStackAddressFamily`): the Node's InternalIP of that family, else its ExternalIP, from its
    status. Followed as the Node changes (`ExaBGPEngine.set_next_hops`); a dual-stack peer without one
    is warned about when that starts (its session then carries only its own family)."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self._missing: frozenset[tuple[str, int]] = frozenset()

    def update(self, node: Node | None, peers: tuple[Peer, ...]) -> tuple[IPv4Address | None, IPv6Address | None]:
        hops = {version: node.address_of(version) if node is not None else None for version in (4, 6)}
        dual_stack = ((peer.name, 10 - peer.address.version) for peer in peers if peer.dual_stack and not peer.disable_mp)
        missing = frozenset((name, other) for name, other in dual_stack if hops[other] is None)  # other: 4 <-> 6
        for name, other in sorted(missing - self._missing):
            log.warning(
                "dual_stack_next_hop_missing", peer=name, node=self.node_name,
                message=f"BGPPeer {name}: dualStackAddressFamily, but Node {self.node_name} has no IPv{other} "
                        f"address in status.addresses: IPv{other} routes are not sent on this session",
            )  # fmt: skip
        self._missing = missing
        return hops[4], hops[6]  # type: ignore[return-value]


def engine_for(
    workdir: Path, peers: tuple[Peer, ...], hops: tuple[IPv4Address | None, IPv6Address | None], *,
    router_id: IPv4Address | None, node: Node | None, tuning: EngineTuning = DEFAULT_TUNING,
) -> ExaBGPEngine:
    """The ExaBGP engine for this node's first peers, with the next hops `NextHops` found."""
    return ExaBGPEngine(
        workdir=workdir,
        router_id=choose_router_id(peers, router_id, node),
        local_addresses=tuple(p.source_address for p in peers if p.source_address is not None),
        ipv4_next_hop=hops[0],
        ipv6_next_hop=hops[1],
        tuning=tuning,
        on_refused=metrics.record_refused,
        on_notification=metrics.record_notification,
    )


def choose_router_id(peers: tuple[Peer, ...], explicit: IPv4Address | None, node: Node | None) -> IPv4Address:
    """This node's BGP identifier, for every peer without a `routerID` of its own (which still wins).

    `--router-id`; else the node's own IPv4 address (its Node's InternalIP, else ExternalIP: what
    MetalLB uses, and different on every node); else an IPv4 `sourceAddress` of its peers; else the
    address the kernel sends from toward its first IPv4 peer (the node's address facing that router);
    else 127.0.0.1, warned about: every speaker would then present the same identifier.
    """
    if explicit is not None:
        return explicit
    own = node.address_of(4) if node is not None else None
    if isinstance(own, IPv4Address):
        return own
    for peer in peers:
        if isinstance(peer.source_address, IPv4Address):
            return peer.source_address
    for peer in peers:
        if isinstance(peer.address, IPv4Address) and isinstance(source := route_source(peer.address), IPv4Address):
            return source
    log.warning(
        "router_id_fallback", router_id="127.0.0.1",
        message="no IPv4 address for this node (no Node InternalIP, no IPv4 sourceAddress or route to a peer): "
                "using 127.0.0.1; set --router-id",
    )  # fmt: skip
    return IPv4Address("127.0.0.1")


class ProblemLog:
    """Logs each problem when it appears and when it is resolved, not on every reconcile.

    `locate` (a manifests folder's `file_of`) names the file that defines the object, when there is one.
    """

    def __init__(self, locate: Callable[[ObjectError], Path | None] | None = None) -> None:
        self.current: frozenset[ObjectError] = frozenset()
        self.locate = locate

    def update(self, problems: tuple[ObjectError, ...]) -> None:
        new = frozenset(problems)
        for problem in sorted(new - self.current):
            where = self.locate(problem) if self.locate is not None else None
            (log.error if problem.is_error else log.warning)(
                "config_problem", object=problem.object_ref, field=printable(problem.field),
                message=printable(problem.message), **({"file": str(where)} if where is not None else {}),
            )  # fmt: skip
        for problem in sorted(self.current - new):
            log.info("config_problem_resolved", object=problem.object_ref, field=problem.field)
        self.current = new


MAX_COALESCING = 0.5  # seconds: however slow a pass, a burst is not held back longer


def coalescing_pause(coalesce: float, busy: float, *, backlog: bool) -> float:
    """How long a woken loop lets more events gather before its pass.

    Woken from idle: `coalesce` (a millisecond), so one change is not held back. Woken by events that
    arrived while the last pass ran (a burst: a cold start's thousands of status echoes, a rollout): as
    long as that pass took, so the loop spends at most about half its time in passes and each pass
    takes in a larger batch, instead of one pass per event.
    """
    return min(max(coalesce, busy), MAX_COALESCING) if backlog else coalesce


class Wakeup:
    """How watch threads reach the reconcile loop: they only set an event; the loop does the work.

    `notify` is safe from any thread (it is the `on_change` callback given to the source). `wait`
    returns True when woken, False on `timeout` or `stop`; after a wake-up it lets `coalescing_pause`
    pass, so a burst of watch events becomes few reconciles, and clears the event before returning:
    whatever arrives after that wakes the next one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, coalesce: float = 0.001) -> None:
        self.loop = loop
        self.coalesce = coalesce
        self.event = asyncio.Event()
        self._returned: float | None = None  # loop time the last wake-up was handed to the caller
        self._first: float | None = None  # monotonic time of the first notify not handed over yet
        self.woken_at: float | None = None  # ... of the wake-up `wait` last returned (for the latency metric)

    def notify(self) -> None:
        if self._first is None:  # a race between two threads loses nothing but a few microseconds
            self._first = time.monotonic()
        with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon is gone, nothing to wake
            self.loop.call_soon_threadsafe(self.event.set)

    async def wait(self, stop: asyncio.Event, timeout: float | None = None) -> bool:
        backlog = self.event.is_set()  # set while the caller's last pass ran
        busy = 0.0 if self._returned is None else self.loop.time() - self._returned
        waiters = {asyncio.ensure_future(self.event.wait()), asyncio.ensure_future(stop.wait())}
        _done, pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        woken = not stop.is_set() and self.event.is_set()
        if woken:
            pause = coalescing_pause(self.coalesce, busy, backlog=backlog)
            if pause > 0:
                await asyncio.sleep(pause)
            self.woken_at, self._first = self._first, None
            self.event.clear()
        self._returned = self.loop.time()  # what the caller does until its next wait is its pass
        return woken


def peers_to_withdraw(peers: Iterable[Peer]) -> set[str]:
    """Peers to withdraw from before exiting: those without graceful restart. ExaBGP closes its sessions
    without a Cease, so they would otherwise keep our routes until their hold time runs out;
    graceful-restart peers keep them as stale across our restart, which is the point (hitless)."""
    return {peer.name for peer in peers if not peer.graceful_restart}


async def until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a daemon's `main(stop)`, with SIGINT and SIGTERM setting `stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await main(stop)


def bfd_sessions(peers: tuple[Peer, ...], profiles: Mapping[str, BFDProfile]) -> tuple[BfdSession, ...]:
    """The BFD sessions this node's peers ask for (a `bfdProfile`; multihop with `ebgpMultiHop`), each
    from the address the BGP session leaves from: its `sourceAddress`, else the kernel's route source."""
    found = []
    for peer in peers:
        profile = profiles.get(peer.bfd_profile or "")
        if profile is None:
            continue
        local = peer.source_address or route_source(peer.address)
        if local is None:
            log.warning("bfd_no_local_address", peer=peer.name, address=str(peer.address))
            continue
        found.append(BfdSession(
            name=peer.name, peer=str(peer.address), local=str(local), transmit_ms=profile.transmit_interval,
            receive_ms=profile.receive_interval, detect_multiplier=profile.detect_multiplier, passive=profile.passive_mode,
            multihop=peer.ebgp_multihop, minimum_ttl=profile.minimum_ttl if peer.ebgp_multihop else 255,
        ))  # fmt: skip
    return tuple(sorted(found))


def bfd_process() -> BfdProcess:
    """The BFD child (started with the first session), its states logged and in the metrics."""
    return BfdProcess(on_state=lambda peer, state, _diag: metrics.record_bfd(peer, state == "up"))


# --- what `metallb-bgp status` and `explain` ask a daemon (observe.control) --------------------------------------


async def serve_control(path: Path | None, answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> asyncio.AbstractServer | None:
    """The control socket at `path` (None: none); a failure is logged: questions are not worth refusing routes over."""
    if path is None:
        return None
    try:
        return await control.serve(path, answer)
    except OSError as exc:
        log.error("control_socket_failed", path=str(path), error=str(exc))
        return None


def control_answer(
    request: Mapping[str, Any], status: Callable[[], dict[str, Any]], explain: Callable[[ServiceKey], dict[str, Any]]
) -> dict[str, Any]:
    command = request.get("command")
    if command == "status":
        return status()
    if command == "explain":
        namespace, _, name = str(request.get("service", "")).rpartition("/")
        return explain(ServiceKey(namespace or "default", name))
    return {"error": f"unknown command {command!r} (status, explain)"}


def status_answer(
    mode: str, node: str, table: RouteTable, peers: Iterable[Peer], engine: ExaBGPEngine,
    bfd_states: Mapping[str, str], problems: Iterable[ObjectError], routers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Sessions, route counts, configuration problems and ExaBGP's health, from the books in force."""
    announced: dict[str, int] = {}
    for peer_name, _prefix in table.routes:
        announced[peer_name] = announced.get(peer_name, 0) + 1
    pending, updates, states = engine.pending(), engine.updates(), engine.peer_states()
    skipped: dict[str, int] = {}
    for skip in table.skipped.values():
        skipped[skip.reason.value] = skipped.get(skip.reason.value, 0) + 1
    entries = []
    for peer in peers:
        state = states.get(peer.name)
        entries.append({
            "name": peer.name, "address": str(peer.address), "state": state.state.value if state is not None else "idle",
            "since": timestamp_of(state.since) if state is not None else None,
            "lastError": engine.rejected_peers.get(peer.name) or (state.last_error if state is not None else None),
            "announced": announced.get(peer.name, 0), "pending": pending.get(peer.name, 0),
            "updates": updates.get(peer.name, 0), "bfd": bfd_states.get(peer.name),
        })  # fmt: skip
    return {
        "mode": mode, "node": node, "peers": entries,
        "routes": len(table.routes), "servicesAnnounced": len({k for keys in table.services.values() for k in keys}),
        "servicesNotAnnounced": skipped, "problems": [problem_entry(p) for p in problems],
        "exabgp": {"pid": engine.child_pid, "relayPid": engine.relay_pid, "restarts": engine.restarts},
        **({"bmp": routers} if routers is not None else {}),
    }  # fmt: skip


BMP_PORT = 11019  # the station's port when none is given: what pmacct, OpenBMP and Junos examples use
BMP_LATE = 30.0  # seconds a router's report may lag our announcement before it counts as missing


class RouterTruth:
    """The BMP station (`bmp.station`) of a daemon that announces routes, read for its own routes:
    what each router says it received and accepted of them. Off (None everywhere) unless the user
    gave it an address to listen on: nothing listens beyond what the user configured."""

    def __init__(self, listen: tuple[str, int] | None, routers: tuple[str, ...], *, late: float = BMP_LATE) -> None:
        self.late = late
        self._ours: frozenset[IPv4Address | IPv6Address] = frozenset()
        self._address_of: dict[str, IPv4Address | IPv6Address | None] = {}  # peer name -> our end of its session
        self.station = (Station(listen[0], listen[1], routers, is_ours=lambda address: address in self._ours)
                        if listen is not None else None)  # fmt: skip
        self.version = 0  # moves with each report that changed what a router holds of ours
        if self.station is not None:
            self.station.changed = self._moved

    def _moved(self) -> None:
        self.version += 1

    def moment(self) -> tuple[int, int]:
        """Changes when a verdict may have: a report moved, or `late` passed (pending turns missing)."""
        return (self.version, int(time.time() / self.late)) if self.station is not None and self.late > 0 else (0, 0)

    async def start(self) -> None:
        """Listen, once `track` has said which sessions are ours: a router sends its table once, when it
        connects, and what arrives before we know our sessions would be dropped as someone else's
        (routers retry their connection, so listening late loses nothing). An address that cannot be
        bound is logged and the station stays off: the routes matter more than the reports."""
        if self.station is None:
            return
        metrics.watch_bmp(self.station.samples)
        try:
            await self.station.start()
        except OSError as exc:
            log.error("bmp_station_not_listening", address=self.station.host, port=self.station.port, error=str(exc))
            self.station = None

    async def close(self) -> None:
        if self.station is not None:
            await self.station.close()

    def track(self, peers: Iterable[Peer]) -> None:
        """The sessions in force: a router's reports of other sessions are not ours (dropped unread).
        Each session's local address is looked up here, once per plan, not once per route."""
        if self.station is None:
            return
        self._address_of = {p.name: p.source_address or route_source(p.address) for p in peers}
        self._ours = frozenset(a for a in self._address_of.values() if a is not None)

    def track_cluster(self, snapshot_of: Callable[[], ClusterSnapshot]) -> None:
        """The controller's station: every node's addresses (InternalIP, ExternalIP) and every
        BGPPeer's sourceAddress are the speakers' ends of their sessions. `snapshot_of` is called only
        when a station runs: the controller's pass pays nothing for it otherwise."""
        if self.station is None:
            return
        snapshot = snapshot_of()
        found: set[IPv4Address | IPv6Address] = set()
        texts = [a.address for node in snapshot.nodes for a in node.status.addresses if a.type in ("InternalIP", "ExternalIP")]
        texts += [peer.spec.source_address for peer in snapshot.peers if peer.spec.source_address]
        for text in texts:
            with contextlib.suppress(ValueError):
                found.add(ip_address(text))
        self._ours = frozenset(found)

    def verdict(self, peer: Peer, prefix: Any, session_since: float | None) -> dict[str, Any] | None:
        """What the router of `peer` reports of `prefix` (`bmp.station.router_verdict`), or None."""
        if self.station is None:
            return None
        ours = self._address_of.get(peer.name)
        if ours is None:
            return None
        reports = self.station.report_of(peer.address)
        return router_verdict(reports, peer.address, ours, prefix, now=time.time(), late=self.late,
                              waiting_since=session_since or time.time())  # fmt: skip

    def status(self) -> list[dict[str, Any]] | None:
        """Each listed router's connection and counts, for `metallb-bgp status`."""
        if self.station is None:
            return None
        found = []
        for r in self.station.reports.values():
            moment = r.connected_since or r.disconnected_at
            found.append(_router_entry(r, timestamp_of(moment) if moment is not None else None))
        return found


def _router_entry(r: RouterReport, since: str | None) -> dict[str, Any]:
    sessions = [{"speaker": str(a), "routerAddress": str(p.local_address) if p.local_address else None,
                 "received": len(p.pre_policy) if p.pre_policy_reported else None,
                 "accepted": len(p.post_policy) if p.post_policy_reported else None}
                for (_d, a), p in sorted(r.peers.items(), key=lambda i: str(i[0][1]))]  # fmt: skip
    return {"address": r.address, "sysName": r.sys_name, "connected": r.connected_since is not None, "since": since,
            "sessions": sessions, "messages": r.messages, "droppedNotOurs": r.dropped_not_ours,
            "droppedOverLimit": r.dropped_over_limit, "invalid": r.errors, "lastError": r.last_error}  # fmt: skip


def router_of(peers: Iterable[Peer], engine: ExaBGPEngine, truth: RouterTruth) -> Callable[[RouteKey], dict[str, Any] | None]:
    """For `explain`: what the router of a route's peer reports of it (None without a BMP station)."""
    by_name = {peer.name: peer for peer in peers}
    states = engine.peer_states()

    def router(key: RouteKey) -> dict[str, Any] | None:
        peer = by_name.get(key[0])
        if peer is None:
            return None
        state = states.get(peer.name)
        return truth.verdict(peer, key[1], state.since if state is not None else None)

    return router
