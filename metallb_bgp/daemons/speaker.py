"""`metallb-bgp speaker`: announce this node's share of the cluster's service IPs over BGP.

The speaker never allocates: it reads each Service's IPs from `status.loadBalancer.ingress` (the
controller's writes), compiles the metallb.io configuration, and computes this node's peers
(`routes.node_peers`) and desired routes (`routes.desired_routes`: endpoints, externalTrafficPolicy,
node selectors, exclusions). The ExaBGP engine makes the routers match, sending only differences, so
editing a BGPAdvertisement's community changes the attributes without touching the sessions.

One asyncio loop owns the state. Watch threads only wake it; it coalesces a burst (milliseconds) and
recomputes, so an EndpointSlice or Node change reaches the routers within milliseconds of its watch
event. Nothing is withdrawn before the source's initial sync, and a lost watch keeps its cache (see
`sources.kubernetes`), so an API outage changes nothing at the routers. Before the sync, once the
configuration kinds have listed and ExaBGP runs, what the Services and EndpointSlices listed so far
justify is offered to the engine as a provisional table (announced, nothing withdrawn, End-of-RIB
held; `ExaBGPEngine.offer`): a restarting speaker's push overlaps its lists. That is sound because a
service's routes need only its own object, the slices that name it (any serving endpoint: more slices
only add) and the configuration, which has listed; so every provisional route is in the final table.

What the speaker writes, off the route path (a background publisher; a slow API never delays a route):
- a `nodeAssigned` Event on a Service when this node starts announcing it (once per transition);
- its ConfigurationState `speaker-<node>`: configuration problems and each BGP session's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import structlog
from kubernetes.client import ApiClient

from metallb_bgp.api.core import Node
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.allocator.results import Allocation, Assignment
from metallb_bgp.core.change import config_part
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.explain import explain_service
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.plan.speaker import SpeakerPlan, SpeakerPlanner, node_assigned_events
from metallb_bgp.core.routes.node import node_peers
from metallb_bgp.core.snapshot import DEFAULT_NAMESPACE
from metallb_bgp.core.writes import (
    BGP_SESSION_STATE,
    SERVICE_BGP_STATUS,
    Body,
    EventSpec,
    SessionView,
    StatusKind,
    WriteOutcome,
    WriteResult,
    bgp_session_states,
    configuration_state_status,
    service_bgp_statuses,
    timestamp_of,
)
from metallb_bgp.daemons.gc import GcPolicy
from metallb_bgp.daemons.runtime import (
    BMP_LATE,
    ClusterSource,
    NextHops,
    ProblemLog,
    RouterTruth,
    SourceFactory,
    Wakeup,
    bfd_process,
    bfd_sessions,
    control_answer,
    engine_for,
    find_node,
    kubernetes_source,
    peers_to_withdraw,
    router_of,
    serve_control,
    status_answer,
    until_signalled,
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
    STATE_UNAVAILABLE_BACKOFF,
    EventPacer,
    KubeWriter,
    concurrently,
)
from metallb_bgp.observe import metrics

log = structlog.get_logger("metallb_bgp.daemons.speaker")

COMPONENT = "metallb-speaker"
PROVISIONAL_INTERVAL = 0.05  # seconds between provisional passes while the first lists come in
# ServiceBGPStatus writes (two requests for a new object: create, then its status): a flapping session
# changes every service's status at once, and must not become thousands of requests at once
STATUS_QPS = 20.0
STATUS_BURST = 50


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
            entry["since"] = timestamp_of(state.since)
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
    service_bgp_status: bool = True  # write MetalLB's ServiceBGPStatus objects
    pod_name: str = ""  # the speaker's own Pod, owner of those objects (garbage-collected with it)
    pod_uid: str = ""
    control_socket: Path | None = None  # where `metallb-bgp status` / `explain` ask (`kubectl exec` into the pod)
    bmp_listen: tuple[str, int] | None = None  # this node's BMP station (off when None), as `run`'s
    bmp_routers: tuple[str, ...] = ()
    bmp_late: float = BMP_LATE

    @property
    def state_name(self) -> str:
        return f"speaker-{self.node_name}"


class _StatusObjects:
    """This node's objects of one `StatusKind` (ServiceBGPStatus, BGPSessionState): the wanted set
    (latest wins) against what is known to be written, sent paced (`STATUS_QPS`, burst `STATUS_BURST`),
    deletions included. The node's objects are listed once first, so a restarted speaker removes what
    its predecessor left for what it no longer reports on; until that list succeeds nothing is written
    or deleted."""

    def __init__(self, writer: KubeWriter, options: SpeakerOptions, kind: StatusKind) -> None:
        self.writer, self.options, self.kind = writer, options, kind
        self.wanted: dict[str, Body] | None = None
        self.written: dict[str, Body] | None = None  # None: not listed yet
        self._due: list[tuple[str, Body | None]] | None = None  # wanted against written, once per wanted set
        self.unavailable_until = 0.0  # monotonic: the kind is not served (no CRD) until then, as far as we know
        self.pacer = EventPacer(STATUS_QPS, STATUS_BURST)
        self.owner: Body | None = (
            {"apiVersion": "v1", "kind": "Pod", "name": options.pod_name, "uid": options.pod_uid}
            if options.pod_name and options.pod_uid else None
        )  # fmt: skip

    def want(self, wanted: dict[str, Body]) -> None:
        if wanted is not self.wanted:  # the speaker hands over the very same dict while nothing moved
            self.wanted, self._due = wanted, None

    def due(self) -> list[tuple[str, Body | None]]:
        """The writes still to make (computed once per wanted set: 10,000 comparisons are milliseconds)."""
        if self.wanted is None or self.written is None:
            return []
        if self._due is None:
            self._due = [(n, b) for n, b in self.wanted.items() if self.written.get(n) != b]
            self._due += [(name, None) for name in self.written if name not in self.wanted]
        return self._due

    def pending(self) -> bool:
        if self.written is None:
            return self.wanted is not None and time.monotonic() >= self.unavailable_until
        return self.wanted is not None and bool(self.due())

    async def step(self) -> tuple[bool, int]:
        """One paced batch: (whether a write failed, how many are held back by the pacer)."""
        if self.wanted is None:
            return False, 0
        if self.written is None:
            if time.monotonic() < self.unavailable_until:
                return False, 0
            listed = await asyncio.to_thread(self.writer.list_status_objects, self.kind, self.options.namespace,
                                             self.options.node_name)  # fmt: skip
            if listed is WriteOutcome.NOT_FOUND:
                self.unavailable_until = time.monotonic() + STATE_UNAVAILABLE_BACKOFF
                crd = f"{self.kind.plural}.{self.kind.group}"
                log.warning("status_kind_unavailable", kind=self.kind.kind, retry_in=STATE_UNAVAILABLE_BACKOFF,
                            hint=f"is the {crd} CRD installed? `helm upgrade` does not add CRDs")  # fmt: skip
                return False, 0
            if not isinstance(listed, dict):
                return True, 0
            self.written = listed
        due = self.due()
        batch = due[: self.pacer.take(len(due))]
        wanted = self.wanted
        results = await asyncio.to_thread(concurrently, self._send, batch)
        failed = False
        retry = []
        for (name, body), result in results:
            if result.ok:
                if body is None:
                    self.written.pop(name, None)
                else:
                    self.written[name] = body
            else:
                retry.append((name, body))
            failed |= result.needs_retry
        if self.wanted is wanted and self._due is due:  # nothing new meanwhile: the rest, then the retries
            self._due = due[len(batch) :] + retry
        return failed, len(self.due())

    def _send(self, item: tuple[str, Body | None]) -> WriteResult:  # worker thread
        name, body = item
        if body is None:
            return self.writer.delete_status_object(self.kind, self.options.namespace, name)
        assert self.written is not None
        return self.writer.write_status_object(self.kind, self.options.namespace, name, body, exists=name in self.written,
                                               owner=self.owner)  # fmt: skip


class _Publisher:
    """Writes Events, the ConfigurationState and the ServiceBGPStatus objects in the background,
    latest state wins.

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
        self.objects = tuple(_StatusObjects(writer, options, kind) for kind in (SERVICE_BGP_STATUS, BGP_SESSION_STATE))

    def publish(self, state: Body, events: Sequence[EventSpec], objects: tuple[dict[str, Body] | None, ...] = ()) -> None:
        """`objects`: the ServiceBGPStatus and BGPSessionState objects wanted now (None: that kind is not written)."""
        self.state = state
        self.ledger.add_once(events)
        for kept, wanted in zip(self.objects, objects, strict=False):
            if wanted is not None:
                kept.want(wanted)
        if events or state != self.written or any(kept.pending() for kept in self.objects):
            self.wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry_delay):
                    await self.wake.wait()
            self.wake.clear()
            pending, state, known = self.ledger.pending(), self.state, self.written
            if not pending and (state is None or state == known) and not any(kept.pending() for kept in self.objects):
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
            waiting_objects = []
            for kept in self.objects:
                kept_failed, kept_held = await kept.step()
                failed |= kept_failed
                waiting_objects.append((kept.pacer, kept_held))
            self.retry_delay = min(30.0, (self.retry_delay or 0.5) * 2) if failed else None
            for pacer, waiting in ((self.pacer, held), *waiting_objects):
                if waiting:
                    paced = pacer.delay(min(waiting, PACED_BATCH))
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
        self.bfd = bfd_process()
        self.truth = RouterTruth(options.bmp_listen, options.bmp_routers, late=options.bmp_late)
        self.plan: SpeakerPlan | None = None
        self.planner = SpeakerPlanner(node_name=options.node_name, load_balancer_class=options.load_balancer_class)
        self.problems = ProblemLog()
        self.next_hops = NextHops(options.node_name)
        self.refused_peers: tuple[Peer, ...] | None = None  # peers ExaBGP refused: not retried until they change
        writer = KubeWriter(api_client, component=COMPONENT, instance=options.node_name, host=options.node_name)
        self.publisher = _Publisher(writer, options)
        self.reconciles = 0
        self.provisional_passes = 0
        self._statuses_seen: object = None
        self._statuses_at = 0.0  # monotonic time they were last computed
        self._statuses: tuple[dict[str, Body] | None, dict[str, Body]] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        wake = Wakeup(asyncio.get_running_loop(), coalesce=self.options.coalesce_seconds)
        self.source = self.source_factory(self.api_client, self.options.namespace, wake.notify)
        metrics.watch_k8s(self.source.update_counts)
        metrics.watch_announced(self.options.node_name, lambda: self.plan.table if self.plan is not None else None)
        heap = GcPolicy()
        heap.hold()  # the first lists' objects live on: see `heap`
        self.source.start()
        publisher = asyncio.create_task(self.publisher.run(), name="speaker-status")
        early = asyncio.create_task(self._start_engine_early(stop), name="exabgp-early-start")
        control = await serve_control(self.options.control_socket, self._answer)
        log.info("speaker_started", node=self.options.node_name, namespace=self.options.namespace)
        try:
            if not await self._announce_while_listing(stop, wake):
                return
            log.info("cluster_synced", provisional_passes=self.provisional_passes)
            await early  # ExaBGP started while the Services and EndpointSlices were listed
            await self.reconcile()
            heap.release(freeze=True)
            while not stop.is_set():
                if await wake.wait(stop, timeout=self.options.status_interval):
                    await self.reconcile(woken_at=wake.woken_at)
                    heap.settle()
                else:
                    self._publish()  # session states move without any watch event
        finally:
            if control is not None:
                control.close()
            await self.truth.close()
            heap.release(freeze=False)
            publisher.cancel()
            early.cancel()
            await asyncio.gather(publisher, early, return_exceptions=True)
            if self.engine is not None:
                await self.engine.stop(withdraw=self._withdraw_on_stop())
            await self.bfd.stop()  # AdminDown to each BFD peer: a stop, not a failure (RFC 5882 3.2)
            self.source.stop()
            log.info("speaker_stopped")

    async def reconcile(self, *, woken_at: float | None = None) -> None:
        """One pass over what changed; `woken_at`: when the first event of it arrived (the latency metric)."""
        assert self.source is not None
        started = time.monotonic()
        plan = self.planner.update(self.source.changes())
        self.problems.update(plan.compiled.errors)
        self.truth.track(plan.peers)  # before a new session can come up and be reported
        if self.engine is None:
            await self._start_engine(plan.peers, self.planner.node)
        else:
            await self._set_peers(plan.peers)
            if self.planner.routes_touched is None:  # a whole plan: the Node (its addresses) may have changed
                self.engine.set_next_hops(*self.next_hops.update(self.planner.node, plan.peers))
        assert self.engine is not None
        await self.engine.apply(plan.table, touched=self.planner.routes_touched)
        profiles = plan.compiled.config.bfd_profiles  # a new Config gives new peers: `want` recomputes
        await self.bfd.want(plan.peers, lambda: bfd_sessions(plan.peers, profiles))
        events = node_assigned_events(self.planner.newly_announced, self.planner.services, self.options.node_name)
        self.plan = plan
        self.reconciles += 1
        self._publish(events)
        if metrics.enabled():  # nobody can scrape them otherwise
            metrics.record_routes(plan.table, plan.peers)
            metrics.record_config(plan.compiled.errors)
        metrics.record_reconcile(time.monotonic() - started)
        if woken_at is not None:
            metrics.record_change_latency(time.monotonic() - woken_at)
        log.info(
            "reconciled",
            routes=len(plan.table.routes),
            services=len(self.planner.announced),
            skipped=len(plan.table.skipped),
            peers=len(plan.peers),
            seconds=round(time.monotonic() - started, 4),
        )

    async def _announce_while_listing(self, stop: asyncio.Event, wake: Wakeup) -> bool:
        """Until every kind has listed, offer the engine what is known (see the module docstring), at
        most every `PROVISIONAL_INTERVAL`; True once synced, False if stopped first."""
        assert self.source is not None
        if not await wait_for_sync(self.source, stop, config_only=True):
            return False
        while not self.source.synced:
            if stop.is_set():
                return False
            if self.engine is not None:  # created, maybe still starting: it sends once sessions are up
                plan = self.planner.update(self.source.changes())
                self.engine.offer(plan.table)
                self.provisional_passes += 1
                log.debug("routes_offered", routes=len(plan.table.routes), services=len(self.planner.services))
            await wake.wait(stop, timeout=PROVISIONAL_INTERVAL)
            for _ in range(5):  # let pages gather (each pass costs the loop a plan), unless the lists are done
                if self.source.synced or stop.is_set():
                    break
                await asyncio.sleep(PROVISIONAL_INTERVAL / 5)
        return not stop.is_set()

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.plan is None or self.engine is None:
            return {"error": "starting: the cluster has not been listed yet"}
        return control_answer(request, self._status, self._explain)

    def _status(self) -> dict[str, Any]:
        assert self.plan is not None and self.engine is not None
        return status_answer("speaker", self.options.node_name, self.plan.table, self.plan.peers, self.engine,
                             self.bfd.states, self.plan.compiled.errors, self.truth.status())  # fmt: skip

    def _explain(self, key: ServiceKey) -> dict[str, Any]:
        """As `run`'s, with the IPs the controller wrote in the Service's status (the speaker allocates nothing)."""
        assert self.plan is not None and self.engine is not None
        config, service, node = self.plan.compiled.config, self.planner.services.get(key), self.planner.node
        ips = service.status_ips() if service is not None else ()
        pool = config.pool_of(ips[0]) if ips else None
        allocation = (Allocation(assignments={key: Assignment(tuple(ips), pool.name)}) if pool is not None
                      else Allocation(refusals={key: "no IP of a pool in its status (the controller writes it)"}))  # fmt: skip
        states = {name: state.state.value for name, state in self.engine.peer_states().items()}
        return explain_service(
            key, service=service, allocation=allocation, config=config, node_name=self.options.node_name,
            node_labels=node.metadata.labels if node is not None else {}, table=self.plan.table,
            advertised=self.engine.advertised, sessions=states, router=router_of(self.plan.peers, self.engine, self.truth),
        )  # fmt: skip

    def _withdraw_on_stop(self) -> set[str]:
        return set() if self.plan is None else peers_to_withdraw(self.plan.peers)

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
        peers = node_peers(compile_config(config).config, node)
        self.truth.track(peers)
        await self.truth.start()  # the BMP station, now that this node's sessions are known
        await self._start_engine(peers, node)

    async def _start_engine(self, peers: tuple[Peer, ...], node: Node | None) -> None:
        self.engine = engine_for(
            self.options.workdir, peers, self.next_hops.update(node, peers), router_id=self.options.router_id, node=node,
            tuning=self.options.tuning,
        )
        metrics.watch_engine(self.engine)
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
        self.publisher.publish(state, events, self._status_objects(sessions))

    def _status_objects(self, sessions: Mapping[str, PeerState]) -> tuple[dict[str, Body] | None, dict[str, Body]]:
        """The ServiceBGPStatus (None when turned off) and BGPSessionState objects wanted now. They walk
        every route, so they are computed again only when the table, the sessions, BFD or ExaBGP's
        acknowledgements moved, and at most once a `status_interval`: not on every change's path (the
        periodic publish catches the last change of a burst)."""
        assert self.plan is not None and self.engine is not None
        seen = (id(self.plan.table), tuple(sorted((n, s.state, s.since, s.last_error) for n, s in sessions.items())),
                sum(self.engine.updates().values()), tuple(sorted(self.bfd.states.items())), self.truth.moment())  # fmt: skip
        now = time.monotonic()
        due = self._statuses is None or now - self._statuses_at >= self.options.status_interval
        if seen != self._statuses_seen and due:
            self._statuses_seen, self._statuses_at = seen, now
            table, advertised = self.plan.table, self.engine.advertised
            sent: dict[str, int] = {}
            for key in table.routes:
                if advertised(key):
                    sent[key[0]] = sent.get(key[0], 0) + 1
            views = []
            for peer in self.plan.peers:
                state = sessions.get(peer.name)
                views.append(SessionView(
                    peer.name, str(peer.address), state.state.value if state is not None else "idle",
                    timestamp_of(state.since) if state is not None else None,
                    self.engine.rejected_peers.get(peer.name) or (state.last_error if state is not None else None),
                    self.bfd.states.get(peer.name), sent.get(peer.name, 0), peer.vrf or "",
                ))  # fmt: skip
            router = router_of(self.plan.peers, self.engine, self.truth) if self.truth.station is not None else None
            services = (service_bgp_statuses(self.options.node_name, table, advertised, router)
                        if self.options.service_bgp_status else None)  # fmt: skip
            self._statuses = (services, bgp_session_states(self.options.node_name, views))
        assert self._statuses is not None
        return self._statuses


async def run_speaker(api_client: ApiClient, options: SpeakerOptions) -> None:
    await until_signalled(Speaker(api_client, options).run)
