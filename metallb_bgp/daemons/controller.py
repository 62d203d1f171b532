"""`metallb-bgp controller`: service IP allocation for a Kubernetes cluster, one leader at a time.

The controller turns the cluster (a `KubernetesSource` snapshot) into writes: each LoadBalancer
Service's `status.loadBalancer.ingress` and `metallb.io/ip-allocated-from-pool` annotation, Events a
user can act on, IPAddressPool status counters, and a ConfigurationState object named `controller`
that carries every configuration problem so `kubectl get configurationstate` shows them.

How it stays correct:
- One asyncio loop owns all state. Watch threads only wake it (`Wakeup`); it coalesces a burst, takes
  a snapshot, computes (compile + allocate, pure) and writes only the difference between what it wants
  and what the cluster shows. Nothing is computed before the source's initial sync. The computation is
  `compute_pass`, kept up to date by `ControllerPlanner` at the cost of what changed (one Service:
  ~3 ms at 10,000 services instead of ~1 s), and held to it by a property test.
- A pass's independent requests (status patches, then annotations, then Events) go out several at a
  time (`kube.writer.concurrently`): a cold start writes 10,000 statuses, and one after the other
  that was 35 s of waiting on round trips.
- Assignments live in Service status, so they survive restarts and leader changes: `allocate` keeps
  every valid current assignment. Our own writes reach the watch cache a few milliseconds later, so
  the loop remembers what it wrote (`overlay`) until the cache shows it; without that, a reconcile in
  between could hand the same address to a second service.
- Only the leader writes. Leader election is the client's own `kubernetes.leaderelection` on a
  coordination.k8s.io Lease, in a thread. A leader counts as leading only while its last renewal is
  younger than the renew deadline, and `KubeWriter` asks before every request, so a controller that
  cannot renew stops writing before any other candidate may take over (after the lease duration).
- Writes that fail (409, 5xx, connection errors) are retried by a later reconcile with backoff; Events
  are emitted once per transition (IPAllocated, ClearAssignment) or once per problem while it lasts
  (AllocationFailed, deprecated annotations, InvalidConfiguration on the CR), never on every pass.

Not here: routes (the speaker), the watch machinery (`sources.kubernetes`).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from kubernetes.client import ApiClient

from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.change import ClusterChange
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.plan.controller import AnnotationChange, ControllerPlanner, ControllerWrites, StatusChange, Written, written_view
from metallb_bgp.core.snapshot import DEFAULT_NAMESPACE
from metallb_bgp.core.writes import Body, EventSpec, WriteResult
from metallb_bgp.daemons.gc import GcPolicy
from metallb_bgp.daemons.runtime import (
    BMP_LATE,
    ClusterSource,
    ProblemLog,
    RouterTruth,
    SourceFactory,
    Wakeup,
    kubernetes_source,
    until_signalled,
    wait_for_sync,
)
from metallb_bgp.kube.events import EventLedger
from metallb_bgp.kube.leader import AlwaysLeader, Elector, LeaseElector, LeaseTimings
from metallb_bgp.kube.writer import COMPONENT_LABEL, EVENT_BURST, EVENT_QPS, PACED_BATCH, EventPacer, KubeWriter, concurrently
from metallb_bgp.observe import metrics

log = structlog.get_logger("metallb_bgp.daemons.controller")

COMPONENT = "metallb-controller"
CONFIGURATION_STATE_NAME = "controller"
DEFAULT_LEASE_NAME = "metallb-bgp-controller"


# --- the daemon ------------------------------------------------------------------------------------------


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ControllerOptions:
    namespace: str = DEFAULT_NAMESPACE
    load_balancer_class: str | None = None
    lease_name: str = DEFAULT_LEASE_NAME
    identity: str = field(default_factory=default_identity)
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    leader_election: bool = True
    coalesce_seconds: float = 0.001  # after an idle wait; a burst waits as long as a pass takes (kube.writer.Wakeup)
    retry_initial: float = 0.5
    retry_max: float = 30.0
    event_qps: float = EVENT_QPS  # Events written (kube.writer.EventPacer)
    event_burst: int = EVENT_BURST
    bmp_listen: tuple[str, int] | None = None  # a BMP station for the whole fleet (off when None)
    bmp_routers: tuple[str, ...] = ()
    bmp_late: float = BMP_LATE


@dataclass
class _Applied:
    """What one batch of writes achieved (returned by the worker thread; the loop updates its state)."""

    results: list[tuple[Any, WriteResult]] = field(default_factory=list)
    held: list[EventSpec] = field(default_factory=list)  # Events the pacer kept for a later pass

    @property
    def needs_retry(self) -> bool:
        return any(result.needs_retry for _, result in self.results)

    @property
    def progressed(self) -> bool:
        return any(result.ok for item, result in self.results if not isinstance(item, dict))


class Controller:
    def __init__(
        self,
        api_client: ApiClient,
        options: ControllerOptions | None = None,
        *,
        source_factory: SourceFactory = kubernetes_source,
        elector: Elector | None = None,
    ) -> None:
        options = options if options is not None else ControllerOptions()
        self.api_client = api_client
        self.options = options
        self.source_factory = source_factory
        self.elector: Elector = elector if elector is not None else (
            LeaseElector(
                api_client,
                name=options.lease_name,
                namespace=options.namespace,
                identity=options.identity,
                timings=options.timings,
            )
            if options.leader_election
            else AlwaysLeader()
        )
        self.writer = KubeWriter(
            api_client, component=COMPONENT, instance=options.identity, may_write=lambda: self.elector.leading
        )
        self.source: ClusterSource | None = None
        self.overlay: dict[ServiceKey, Written] = {}
        self.planner = ControllerPlanner(load_balancer_class=options.load_balancer_class)
        self.ledger = EventLedger()
        self.pacer = EventPacer(options.event_qps, options.event_burst)  # taken from in the write thread
        self.problems = ProblemLog()
        self._problems_seen: tuple[tuple[ObjectError, ...], tuple[ObjectError, ...]] | None = None
        self._refusals_seen: Mapping[ServiceKey, str] = {}
        self.state_written: Body | None = None
        self.was_leading = False
        self.retry_delay: float | None = None
        self.reconciles = 0
        # what the routers received and accepted from every speaker, as metrics (one BMP target per
        # router); per service it is each speaker's own station that says (ServiceBGPStatus)
        self.truth = RouterTruth(options.bmp_listen, options.bmp_routers, late=options.bmp_late)

    # the loop -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        wake = Wakeup(asyncio.get_running_loop(), coalesce=self.options.coalesce_seconds)
        self.source = self.source_factory(self.api_client, self.options.namespace, wake.notify)
        metrics.watch_k8s(self.source.update_counts)
        heap = GcPolicy()
        heap.hold()  # the first lists' objects live on: see `heap`
        self.source.start()
        self.elector.start(wake.notify)
        log.info("controller_started", identity=self.options.identity, namespace=self.options.namespace)
        try:
            if not await wait_for_sync(self.source, stop):
                return
            log.info("cluster_synced")
            metrics.mark_ready()
            self.truth.track_cluster(self.source.snapshot)
            await self.truth.start()  # once the speakers' addresses are known: see RouterTruth.start
            await self.reconcile()
            heap.release(freeze=True)
            while not stop.is_set():
                await wake.wait(stop, timeout=self.retry_delay)
                if not stop.is_set():
                    await self.reconcile()
                    heap.settle()
        finally:
            await self.truth.close()
            heap.release(freeze=False)
            await asyncio.to_thread(self.elector.stop)
            self.source.stop()
            log.info("controller_stopped")

    async def reconcile(self) -> None:
        """One pass: if leading, compute from a fresh snapshot and write what differs."""
        assert self.source is not None
        self.truth.track_cluster(self.source.snapshot)  # new nodes' sessions are reported from the start
        leading = self.elector.leading
        if leading != self.was_leading:
            log.info("leadership_changed", leading=leading, identity=self.options.identity)
            self.was_leading = leading
            self.overlay.clear()  # another leader may have written meanwhile: trust the cache only
            self.state_written = None
        if not leading:
            self.retry_delay = None
            return
        started = time.monotonic()
        writes = self.compute(self.source.changes())
        due = self.ledger.due(limit=self.pacer.burst)  # more cannot go in one pass
        applied = await asyncio.to_thread(self._apply, writes, due)
        self._absorb(writes, applied)
        self.reconciles += 1
        metrics.record_reconcile(time.monotonic() - started)
        if not applied.needs_retry:
            self.retry_delay = None
        elif applied.progressed or self.retry_delay is None:
            self.retry_delay = self.options.retry_initial
        else:  # nothing got through: back off
            self.retry_delay = min(self.options.retry_max, self.retry_delay * 2)
        if self.retry_delay is not None:
            log.info("reconcile_retry_scheduled", delay_seconds=self.retry_delay)
        if left := self.ledger.pending():  # Events the pacer held: a pass comes back for them (no log line)
            paced = self.pacer.delay(min(left, PACED_BATCH))
            self.retry_delay = paced if self.retry_delay is None else min(self.retry_delay, paced)
        log.debug(
            "reconciled",
            status_writes=len(writes.status),
            annotation_writes=len(writes.annotations),
            pool_writes=len(writes.pools),
            seconds=round(time.monotonic() - started, 4),
        )

    def compute(self, change: ClusterChange) -> ControllerWrites:
        computed = self.planner.update(change, self.overlay, now=time.monotonic())
        self.overlay = computed.overlay
        errors, warnings = computed.compiled.errors, computed.allocation.warnings
        if (errors, warnings) != self._problems_seen:  # tuples kept as long as nothing changed: cheap
            self._problems_seen = (errors, warnings)
            self.problems.update(tuple(sorted(set(errors) | set(warnings))))
            metrics.record_config(errors)
        refusals = computed.allocation.refusals
        for key in refusals.keys() - self._refusals_seen.keys():
            log.debug("ip_not_allocated", service=str(key), reason=refusals[key])
        self._refusals_seen = refusals
        metrics.record_pools(computed.usage, Counter(a.pool for a in computed.allocation.assignments.values()))
        self.ledger.set_problems(computed.writes.problem_events)
        stats = self.planner.stats
        log.debug("controller_planned", recompiled=stats.recompiled, full=stats.full,
                  allocated=stats.allocated, planned=stats.planned)  # fmt: skip
        return computed.writes

    # the writes (in a worker thread: only reads its arguments, returns what happened) -------------

    def _apply(self, writes: ControllerWrites, due: list[EventSpec]) -> _Applied:
        """Status patches, then annotations (not for a service whose status failed: its view was
        stale), then pool counters, Events and the ConfigurationState. Within each step the requests
        are independent, so they go `WRITE_WORKERS` at a time (`KubeWriter` still asks `may_write`
        before each one); a step starts when the previous one is done, so a service's annotation is
        always written after its status."""
        applied = _Applied()
        statuses = concurrently(
            lambda status: self.writer.patch_service_status(status.service.namespace, status.service.name, status.patch),
            writes.status,
        )
        applied.results.extend(statuses)
        failed = {change.service for change, result in statuses if not result.ok}
        events = list(due) + [event for change, result in statuses if result.ok for event in change.events]
        allowed = self.pacer.take(len(events))
        events, applied.held = events[:allowed], events[allowed:]
        applied.results.extend(concurrently(
            lambda annotation: self.writer.patch_service(annotation.service.namespace, annotation.service.name,
                                                         annotation.patch),
            [annotation for annotation in writes.annotations if annotation.service not in failed],
        ))  # fmt: skip
        applied.results.extend(concurrently(
            lambda pool: self.writer.patch_custom_status(
                version="v1beta1", plural="ipaddresspools", namespace=pool.namespace, name=pool.name,
                patch=pool.patch, kind="IPAddressPool",
            ),
            writes.pools,
        ))  # fmt: skip
        applied.results.extend(concurrently(self.writer.emit_event, events))
        state = self.writer.write_configuration_state(
            namespace=self.options.namespace,
            name=CONFIGURATION_STATE_NAME,
            labels={COMPONENT_LABEL: "controller"},
            status=writes.state,
            known=self.state_written,
        )
        applied.results.append((writes.state, state))
        return applied

    def _absorb(self, writes: ControllerWrites, applied: _Applied) -> None:
        now = time.monotonic()
        for item, result in applied.results:
            if isinstance(item, (StatusChange, AnnotationChange)):
                if result.ok:
                    self.overlay[item.service] = written_view(self.overlay.get(item.service), item, result, now=now)
            elif isinstance(item, EventSpec):
                if item not in self.ledger.current:
                    self.ledger.add_once([item])
                self.ledger.record(item, result)
            elif item is writes.state:
                self.state_written = writes.state if result.ok else None
        self.ledger.add_once(event for event in applied.held if event not in self.ledger.current)


async def run_controller(api_client: ApiClient, options: ControllerOptions) -> None:
    await until_signalled(Controller(api_client, options).run)
