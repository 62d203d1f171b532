"""`metallb-bgp speaker`: announce this node's share of the cluster's service IPs over BGP.

The speaker never allocates: it reads each Service's IPs from `status.loadBalancer.ingress` (the
controller's writes), compiles the metallb.io configuration, and computes this node's peers
(`routes.node_peers`) and desired routes (`routes.desired_routes`: endpoints, externalTrafficPolicy,
node selectors, exclusions). The ExaBGP engine makes the routers match, sending only differences, so
editing a BGPAdvertisement's community changes the attributes without touching the sessions.

One asyncio loop owns the state. Watch threads only wake it; it coalesces a burst (milliseconds) and
recomputes, so an EndpointSlice or Node change reaches the routers within milliseconds of its watch
event. Nothing is announced or withdrawn before the source's initial sync, and a lost watch keeps its
cache (see `sources.kubernetes`), so an API outage changes nothing at the routers.

What the speaker writes, off the route path (a background publisher; a slow API never delays a route):
- a `nodeAssigned` Event on a Service when this node starts announcing it (once per transition);
- its ConfigurationState `speaker-<node>`: configuration problems and each BGP session's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

import structlog
from kubernetes.client import ApiClient

from metallb_bgp.api.core import EndpointSlice, Node, Service
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.compiler import CompileResult, LastGood, compile_config
from metallb_bgp.core.config import Peer
from metallb_bgp.core.objects import ServiceKey
from metallb_bgp.core.reconciler import config_part, slice_group
from metallb_bgp.core.routes import (
    NodeContext,
    RouteKey,
    RouteTable,
    RouteTableState,
    desired_routes,
    is_ours,
    node_context,
    node_peers,
    service_routes,
)
from metallb_bgp.core.snapshot import DEFAULT_NAMESPACE, ClusterSnapshot, ObjectsSeen
from metallb_bgp.daemons.heap import Heap
from metallb_bgp.daemons.runtime import (
    ClusterSource,
    NextHops,
    ProblemLog,
    SourceFactory,
    engine_for,
    find_node,
    kubernetes_source,
    status_assignments,
    wait_for_sync,
)
from metallb_bgp.exabgp import (
    EngineTuning,
    ExaBGPConfigError,
    ExaBGPEngine,
    PeerState,
    SessionState,
)
from metallb_bgp.kube.events import EventLedger
from metallb_bgp.kube.writer import (
    COMPONENT_LABEL,
    EVENT_BURST,
    EVENT_QPS,
    NODE_LABEL,
    PACED_BATCH,
    Body,
    EventPacer,
    EventSpec,
    KubeWriter,
    ObjectRef,
    Wakeup,
    concurrently,
    configuration_state_status,
)
from metallb_bgp.observe import metrics

log = structlog.get_logger("metallb_bgp.daemons.speaker")

COMPONENT = "metallb-speaker"


# --- pure -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeakerPlan:
    compiled: CompileResult
    peers: tuple[Peer, ...]
    table: RouteTable


def speaker_plan(
    snapshot: ClusterSnapshot,
    *,
    node_name: str,
    load_balancer_class: str | None = None,
    last_good: LastGood | None = None,
) -> SpeakerPlan:
    """This node's peers and routes for the IPs the controller wrote in Service status."""
    compiled = compile_config(snapshot, last_good=last_good)
    nodes = {node.name: node for node in snapshot.nodes}
    table = desired_routes(
        compiled.config,
        assignments=status_assignments(snapshot),
        services=snapshot.services,
        endpoint_slices=snapshot.endpoint_slices,
        nodes=nodes,
        node_name=node_name,
        load_balancer_class=load_balancer_class,
    )
    return SpeakerPlan(compiled=compiled, peers=node_peers(compiled.config, nodes.get(node_name)), table=table)


class SpeakerPlanner:
    """`speaker_plan`'s answer, recomputing only the services whose Service or EndpointSlices changed.

    A full `speaker_plan` at 10,000 services costs ~200 ms, on every watch event. The Kubernetes source
    hands back the very same objects for everything an event did not touch, so an identity check per
    service finds what changed, and only those services are routed again (`RouteTableState`). A change to
    anything else (the metallb.io objects, Nodes, Namespaces, Secrets) recomputes the whole plan, as
    `speaker_plan` does. `routes_touched` names the (peer, prefix) keys the last update may have changed
    (None after a full recompute), for `ExaBGPEngine.apply(..., touched=...)`.
    """

    def __init__(self, *, node_name: str, load_balancer_class: str | None = None) -> None:
        self.node_name = node_name
        self.load_balancer_class = load_balancer_class
        self.plan: SpeakerPlan | None = None
        self.routes_touched: frozenset[RouteKey] | None = None
        self._config_part: ClusterSnapshot | None = None
        self._context: NodeContext | None = None
        self._node: Node | None = None
        self._routes = RouteTableState()
        self._services: dict[ServiceKey, Service] = {}
        self._slices: dict[tuple[str, str], tuple[EndpointSlice, ...]] = {}  # by (namespace, service), as index_endpoint_slices
        self._services_seen: ObjectsSeen[Service] = ObjectsSeen("services")
        self._slices_seen: ObjectsSeen[EndpointSlice] = ObjectsSeen("endpoint_slices")
        self._announced: set[ServiceKey] = set()  # services with at least one route: announced_services(table)
        self.newly_announced: set[ServiceKey] = set()  # announced after the last update and not before it

    @property
    def services(self) -> Mapping[ServiceKey, Service]:
        """The services of the last update, by key."""
        return self._services

    @property
    def node(self) -> Node | None:
        """This node's Node object as of the last update."""
        return self._node

    @property
    def announced(self) -> AbstractSet[ServiceKey]:
        """`announced_services(plan.table)`, kept up to date instead of walking the table."""
        return self._announced

    def update(self, snapshot: ClusterSnapshot) -> SpeakerPlan:
        config = config_part(snapshot)  # everything but Services and EndpointSlices
        changed_services = self._take_services(snapshot)
        changed_groups = self._take_slices(snapshot)
        full = False
        if self.plan is None or config != self._config_part:  # field tuples compare by identity first
            compiled = compile_config(snapshot, last_good=self.plan.compiled.last_good if self.plan else None)
            node = {n.name: n for n in snapshot.nodes}.get(self.node_name)
            # The controller's pool status counters change an IPAddressPool on every allocation: a new
            # snapshot, but the same Config. Only a new Config or Node re-routes every service.
            if self.plan is None or compiled.config != self.plan.compiled.config or node != self._node:
                full = True
                self._context = node_context(compiled.config, self.node_name, node)
                self._routes = RouteTableState()
                peers = node_peers(compiled.config, node)
            else:
                compiled, peers = replace(compiled, config=self.plan.compiled.config), self.plan.peers
            self._node = node
        else:
            compiled, peers = self.plan.compiled, self.plan.peers
        todo = changed_services | {ServiceKey(*group) for group in changed_groups}
        if full:
            todo |= self._services.keys()
            self._announced &= self._services.keys()
        self.newly_announced = set()
        for key in todo:
            self._route(key, self._services.get(key), self._slices.get((key.namespace, key.name), ()))
        touched = self._routes.take_touched()
        self.routes_touched = None if full else frozenset(touched)
        self._config_part = config
        self.plan = SpeakerPlan(compiled=compiled, peers=peers, table=self._routes.table())
        return self.plan

    def _take_services(self, snapshot: ClusterSnapshot) -> set[ServiceKey]:
        if (replaced := self._services_seen.take(snapshot)) is None:  # the same tuple: an untouched kind
            return set()
        went, came = replaced
        services = snapshot.services
        for service in went:
            if self._services.get(key := _service_key(service)) is service:
                del self._services[key]
        self._services.update((_service_key(service), service) for service in came)
        touched = {_service_key(service) for service in (*went, *came)}
        if len(self._services) != len(services):  # a key defined twice (not from the Kubernetes source)
            before, self._services = self._services, {_service_key(service): service for service in services}
            return touched | {key for key in before.keys() | self._services.keys() if before.get(key) is not self._services.get(key)}
        return touched

    def _take_slices(self, snapshot: ClusterSnapshot) -> set[tuple[str, str]]:
        """The (namespace, service name) groups whose EndpointSlices changed."""
        if (replaced := self._slices_seen.take(snapshot)) is None:
            return set()
        went, came = replaced
        gone = {id(endpoint_slice) for endpoint_slice in went}
        groups: dict[tuple[str, str], list[EndpointSlice]] = {}  # each touched group's new members
        for endpoint_slice in went:
            if (group := slice_group(endpoint_slice)) is not None:
                groups.setdefault(group, [])
        for endpoint_slice in sorted(came, key=lambda s: (s.metadata.namespace, s.metadata.name)):
            if (group := slice_group(endpoint_slice)) is not None:
                groups.setdefault(group, []).append(endpoint_slice)
        for group, arrived in groups.items():  # the group's survivors, then its new slices (order is moot)
            members = [*(s for s in self._slices.get(group, ()) if id(s) not in gone), *arrived]
            if members:
                self._slices[group] = tuple(members)
            else:
                self._slices.pop(group, None)
        return set(groups)

    def _route(self, key: ServiceKey, service: Service | None, slices: Sequence[EndpointSlice]) -> None:
        assert self._context is not None
        ips = service.status_ips() if service is not None else ()
        contribution = None
        if service is not None and is_ours(service, assigned=bool(ips), load_balancer_class=self.load_balancer_class):
            contribution = service_routes(self._context, service, ips, slices)
        self._routes.set(key, contribution)
        if contribution is not None and any(targets for _prefix, targets in contribution.announcements):
            if key not in self._announced:
                self._announced.add(key)
                self.newly_announced.add(key)
        else:
            self._announced.discard(key)


def _service_key(service: Service) -> ServiceKey:
    return ServiceKey(service.metadata.namespace, service.metadata.name)


def announced_services(table: RouteTable) -> frozenset[ServiceKey]:
    """The services a table announces (the definition `SpeakerPlanner.announced` is tested against)."""
    return frozenset(key for keys in table.services.values() for key in keys)


def node_assigned_events(
    newly: AbstractSet[ServiceKey], services: Mapping[ServiceKey, Service], node_name: str
) -> list[EventSpec]:
    """`nodeAssigned` for every service this node announces now and did not before (MetalLB's event)."""
    events = []
    for key in sorted(newly):
        service = services.get(key)
        if service is None:
            continue
        ref = ObjectRef("Service", key.namespace, key.name, "v1", service.metadata.uid)
        message = f'announcing from node "{node_name}" with protocol "bgp"'
        events.append(EventSpec(ref, "Normal", "nodeAssigned", message))
    return events


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def peer_entries(
    peers: Sequence[Peer], states: Mapping[str, PeerState], rejected: Mapping[str, str]
) -> list[Body]:
    """Each of this node's peers with its session state (names and addresses only: never a password)."""
    entries = []
    for peer in sorted(peers, key=lambda p: p.name):
        state = states.get(peer.name)
        entry: Body = {
            "name": peer.name,
            "address": str(peer.address),
            "state": state.state.value if state is not None else "idle",
        }
        if state is not None:
            entry["since"] = _iso(state.since)
        error = rejected.get(peer.name) or (state.last_error if state is not None else None)
        if error:
            entry["lastError"] = error
        entries.append(entry)
    return entries


def speaker_state(
    problems: Iterable[ObjectError], peers: Sequence[Peer], states: Mapping[str, PeerState], rejected: Mapping[str, str]
) -> Body:
    return configuration_state_status(tuple(problems), peers=peer_entries(peers, states, rejected))


# --- the daemon ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeakerOptions:
    node_name: str
    workdir: Path
    namespace: str = DEFAULT_NAMESPACE
    router_id: IPv4Address | None = None
    load_balancer_class: str | None = None
    coalesce_seconds: float = 0.001  # after an idle wait; a burst waits as long as a pass takes (kube.writer.Wakeup)
    status_interval: float = 2.0  # how often session states are checked for the ConfigurationState
    tuning: EngineTuning = field(default_factory=EngineTuning)
    event_qps: float = EVENT_QPS  # Events written (kube.writer.EventPacer)
    event_burst: int = EVENT_BURST

    @property
    def state_name(self) -> str:
        return f"speaker-{self.node_name}"


class _Publisher:
    """Writes Events and the ConfigurationState in the background, latest state wins.

    The loop hands it immutable values (`publish`); a write that fails stays due and is retried at the
    next publish or after a short delay. It runs on the loop; only the requests go to a worker thread.
    """

    def __init__(self, writer: KubeWriter, options: SpeakerOptions) -> None:
        self.writer = writer
        self.options = options
        self.ledger = EventLedger()
        self.state: Body | None = None
        self.written: Body | None = None
        self.wake = asyncio.Event()
        self.retry_delay: float | None = None
        self.pacer = EventPacer(options.event_qps, options.event_burst)

    def publish(self, state: Body, events: Sequence[EventSpec]) -> None:
        self.state = state
        self.ledger.add_once(events)
        if events or state != self.written:
            self.wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.retry_delay)
            self.wake.clear()
            pending, state, known = self.ledger.pending(), self.state, self.written
            if not pending and (state is None or state == known):
                self.retry_delay = None
                continue
            due = self.ledger.due(limit=self.pacer.take(pending))
            held = pending - len(due)  # they stay due in the ledger
            results, state_result = await asyncio.to_thread(self._write, due, state, known)
            failed = False
            for spec, result in results:
                self.ledger.record(spec, result)
                failed |= result.needs_retry
            if state_result is not None:
                self.written = state if state_result.ok else None
                failed |= state_result.needs_retry
            self.retry_delay = min(30.0, (self.retry_delay or 0.5) * 2) if failed else None
            if held:
                paced = self.pacer.delay(min(held, PACED_BATCH))
                self.retry_delay = paced if self.retry_delay is None else min(self.retry_delay, paced)

    def _write(self, due: list[EventSpec], state: Body | None, known: Body | None):  # worker thread
        results = concurrently(self.writer.emit_event, due)  # a cold start announces thousands at once
        state_result = None
        if state is not None and state != known:
            state_result = self.writer.write_configuration_state(
                namespace=self.options.namespace,
                name=self.options.state_name,
                labels={COMPONENT_LABEL: "speaker", NODE_LABEL: self.options.node_name},
                status=state,
                known=known,
            )
        return results, state_result


class Speaker:
    def __init__(
        self, api_client: ApiClient, options: SpeakerOptions, *, source_factory: SourceFactory = kubernetes_source
    ) -> None:
        self.api_client = api_client
        self.options = options
        self.source_factory = source_factory
        self.source: ClusterSource | None = None
        self.engine: ExaBGPEngine | None = None
        self.plan: SpeakerPlan | None = None
        self.planner = SpeakerPlanner(node_name=options.node_name, load_balancer_class=options.load_balancer_class)
        self.problems = ProblemLog()
        self.next_hops = NextHops(options.node_name)
        self.refused_peers: tuple[Peer, ...] | None = None  # peers ExaBGP refused: not retried until they change
        writer = KubeWriter(api_client, component=COMPONENT, instance=options.node_name, host=options.node_name)
        self.publisher = _Publisher(writer, options)
        self.reconciles = 0

    async def run(self, stop: asyncio.Event) -> None:
        wake = Wakeup(asyncio.get_running_loop(), coalesce=self.options.coalesce_seconds)
        self.source = self.source_factory(self.api_client, self.options.namespace, wake.notify)
        heap = Heap()
        heap.hold()  # the first lists' objects live on: see `heap`
        self.source.start()
        publisher = asyncio.create_task(self.publisher.run(), name="speaker-status")
        early = asyncio.create_task(self._start_engine_early(stop), name="exabgp-early-start")
        log.info("speaker_started", node=self.options.node_name, namespace=self.options.namespace)
        try:
            if not await wait_for_sync(self.source, stop):
                return
            log.info("cluster_synced")
            await early  # ExaBGP started while the Services and EndpointSlices were listed
            await self.reconcile()
            heap.release(freeze=True)
            while not stop.is_set():
                if await wake.wait(stop, timeout=self.options.status_interval):
                    await self.reconcile()
                    heap.settle()
                else:
                    self._publish()  # session states move without any watch event
        finally:
            heap.release(freeze=False)
            publisher.cancel()
            early.cancel()
            await asyncio.gather(publisher, early, return_exceptions=True)
            if self.engine is not None:
                await self.engine.stop(withdraw=self._withdraw_on_stop())
            self.source.stop()
            log.info("speaker_stopped")

    async def reconcile(self) -> None:
        assert self.source is not None
        started = time.monotonic()
        snapshot = self.source.snapshot()
        plan = self.planner.update(snapshot)
        self.problems.update(plan.compiled.errors)
        if self.engine is None:
            await self._start_engine(plan.peers, find_node(snapshot, self.options.node_name))
        else:
            await self._set_peers(plan.peers)
            if self.planner.routes_touched is None:  # a whole plan: the Node (its addresses) may have changed
                self.engine.set_next_hops(*self.next_hops.update(self.planner.node, plan.peers))
        assert self.engine is not None
        await self.engine.apply(plan.table, touched=self.planner.routes_touched)
        events = node_assigned_events(self.planner.newly_announced, self.planner.services, self.options.node_name)
        self.plan = plan
        self.reconciles += 1
        self._publish(events)
        if metrics.enabled():  # nobody can scrape them otherwise
            metrics.record_routes(plan.table, plan.peers)
            metrics.record_config(plan.compiled.errors)
        metrics.record_reconcile(time.monotonic() - started)
        log.info(
            "reconciled",
            routes=len(plan.table.routes),
            services=len(self.planner.announced),
            skipped=len(plan.table.skipped),
            peers=len(plan.peers),
            seconds=round(time.monotonic() - started, 4),
        )

    def _withdraw_on_stop(self) -> set[str]:
        """Peers to withdraw from before exiting (as `metallb-bgp run`): those without graceful restart,
        which would otherwise keep our routes until their hold time (ExaBGP sends no Cease); graceful-restart
        peers keep them as stale across a speaker restart."""
        return set() if self.plan is None else {p.name for p in self.plan.peers if not p.graceful_restart}

    async def _start_engine_early(self, stop: asyncio.Event) -> None:
        """Start ExaBGP with this node's peers as soon as the kinds they come from have listed, while the
        (many) Services and EndpointSlices still are: its start then overlaps the lists instead of
        following them. The engine sends nothing before the first reconcile's `apply`; that reconcile's
        `set_peers` puts the peers right if they changed meanwhile."""
        assert self.source is not None
        if not await wait_for_sync(self.source, stop, config_only=True):
            return
        config = config_part(self.source.snapshot())
        node = find_node(config, self.options.node_name)
        await self._start_engine(node_peers(compile_config(config).config, node), node)

    async def _start_engine(self, peers: tuple[Peer, ...], node: Node | None) -> None:
        self.engine = engine_for(
            self.options.workdir, peers, self.next_hops.update(node, peers), router_id=self.options.router_id,
            tuning=self.options.tuning,
        )
        try:
            await self.engine.start(peers)
        except ExaBGPConfigError as exc:
            log.error("peers_not_applied", error=str(exc)[:500], action="started without peers")
            self.refused_peers = peers
            await self.engine.start(())

    async def _set_peers(self, peers: tuple[Peer, ...]) -> None:
        assert self.engine is not None
        if peers == self.refused_peers:
            return
        try:
            await self.engine.set_peers(peers)
            self.refused_peers = None
        except ExaBGPConfigError as exc:
            log.error("peers_not_applied", error=str(exc)[:500], action="previous sessions kept")
            self.refused_peers = peers

    def _publish(self, events: Sequence[EventSpec] = ()) -> None:
        if self.plan is None or self.engine is None:
            return
        sessions = self.engine.peer_states()
        metrics.record_sessions({name: s.state is SessionState.ESTABLISHED for name, s in sessions.items()})
        state = speaker_state(self.plan.compiled.errors, self.plan.peers, sessions, self.engine.rejected_peers)
        self.publisher.publish(state, events)


async def run_speaker(api_client: ApiClient, options: SpeakerOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await Speaker(api_client, options).run(stop)
