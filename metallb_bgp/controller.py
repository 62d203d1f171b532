"""`metallb-bgp controller`: service IP allocation for a Kubernetes cluster, one leader at a time.

The controller turns the cluster (a `KubernetesSource` snapshot) into writes: each LoadBalancer
Service's `status.loadBalancer.ingress` and `metallb.io/ip-allocated-from-pool` annotation, Events a
user can act on, IPAddressPool status counters, and a ConfigurationState object named `controller`
that carries every configuration problem so `kubectl get configurationstate` shows them.

How it stays correct:
- One asyncio loop owns all state. Watch threads only wake it (`Wakeup`); it coalesces a burst, takes
  a snapshot, recomputes everything (compile + allocate, pure) and writes only the difference between
  what it wants and what the cluster shows. Nothing is computed before the source's initial sync.
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
import ipaddress
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from metallb_bgp import metrics
from metallb_bgp.allocator import Allocation, PoolUsage, allocate, pool_usage
from metallb_bgp.compiler import CompileResult, LastGood, compile_config
from metallb_bgp.embedded import ProblemLog
from metallb_bgp.errors import ObjectError
from metallb_bgp.kube_writer import (
    COMPONENT_LABEL,
    POOL_ANNOTATION,
    Body,
    EventSpec,
    KubeWriter,
    ObjectRef,
    WriteOutcome,
    WriteResult,
    Wakeup,
    configuration_state_status,
    ingress_ips,
    ingress_of,
    pool_annotation_patch,
    pool_status_patch,
    service_status_patch,
)
from metallb_bgp.net import IPAddress
from metallb_bgp.objects import ServiceKey
from metallb_bgp.snapshot import DEFAULT_NAMESPACE, ClusterSnapshot

log = structlog.get_logger("metallb_bgp.controller")

COMPONENT = "metallb-controller"
CONFIGURATION_STATE_NAME = "controller"
DEFAULT_LEASE_NAME = "metallb-bgp-controller"
METALLB_KINDS = {
    "IPAddressPool": "metallb.io/v1beta1",
    "BGPPeer": "metallb.io/v1beta2",
    "BGPAdvertisement": "metallb.io/v1beta1",
    "Community": "metallb.io/v1beta1",
    "BFDProfile": "metallb.io/v1beta1",
    "L2Advertisement": "metallb.io/v1beta1",
}
OVERLAY_MAX_AGE = 30.0  # seconds a write of ours may stay unseen in the watch cache before we stop assuming it


# --- the source the loop reads ------------------------------------------------------------------------


class ClusterSource(Protocol):
    """What the daemons need of `sources.kubernetes.KubernetesSource` (see its contract)."""

    def start(self) -> None: ...

    @property
    def synced(self) -> bool: ...

    def wait_synced(self, timeout: float | None = None) -> bool: ...

    def snapshot(self) -> ClusterSnapshot: ...

    def stop(self) -> None: ...


SourceFactory = Callable[[ApiClient, str, Callable[[], None]], ClusterSource]


def kubernetes_source(api_client: ApiClient, namespace: str, on_change: Callable[[], None]) -> ClusterSource:
    from metallb_bgp.sources.kubernetes import KubernetesSource

    return KubernetesSource(api_client, namespace=namespace, on_change=on_change)


async def wait_for_sync(source: ClusterSource, stop: asyncio.Event, *, poll: float = 0.2) -> bool:
    """Block (without blocking the loop) until the source's first lists are in; False if stopped first."""
    while not stop.is_set():
        if await asyncio.to_thread(source.wait_synced, poll):
            return True
    return False


# --- leader election ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseTimings:
    """Seconds; whole numbers, as the client's LeaderElection needs (it sys.exit()s on bad values)."""

    lease_duration: int = 15
    renew_deadline: int = 10
    retry_period: int = 2

    def problems(self) -> list[str]:
        """The client's own rules, checked here so a bad flag is an error message, not sys.exit()."""
        found = []
        if self.retry_period < 1:
            found.append("retry period must be at least 1 second")
        if self.renew_deadline <= 1.2 * self.retry_period:
            found.append("renew deadline must be greater than 1.2 x retry period")
        if self.lease_duration <= self.renew_deadline:
            found.append("lease duration must be greater than renew deadline")
        return found


class _Stopped(Exception):
    """Raised inside the election thread to end `LeaderElection.run()`, which has no stop of its own."""


class _FencedLeaseLock(LeaseLock):
    """The client's LeaseLock with our ApiClient, request timeouts, a stop switch and a renewal clock.

    The stock LeaseLock builds its API from the default configuration, has no timeouts, and lets
    connection errors escape `update()` (which ends `LeaderElection.run()` without calling
    onstopped_leading). Here every failure is an ordinary "could not get/update the lock".
    """

    def __init__(
        self, api_client: ApiClient, name: str, namespace: str, identity: str, *, timeout: float, fresh_for: float
    ) -> None:
        self.api_instance = client.CoordinationV1Api(api_client)
        self.name = name
        self.namespace = namespace
        self.identity = str(identity)
        self.lease_reference: Any = None
        self.timeout = timeout
        self.stopping = threading.Event()
        self.io = threading.Lock()  # one lease request at a time: after stop(), none is in flight or to come
        self.renewed_at: float | None = None  # monotonic time of our last successful write holding the lease
        self.fresh_for = fresh_for  # a renewal older than this no longer lets us write
        self.on_fresh: Callable[[], None] = lambda: None  # a renewal after a stale spell: writing may resume

    def _check(self) -> None:
        if self.stopping.is_set():
            raise _Stopped

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        with self.io:
            return self._get(name, namespace)

    def _get(self, name: str, namespace: str) -> tuple[bool, Any]:
        self._check()
        try:
            lease = self.api_instance.read_namespaced_lease(name, namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            return False, exc
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts
            return False, ApiException(status=0, reason=f"{type(exc).__name__}")
        self.lease_reference = lease
        return True, self.get_lock_object(lease)

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        with self.io:
            return self._create(name, namespace, election_record)

    def _create(self, name: str, namespace: str, election_record: Any) -> bool:
        self._check()
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=name), spec=self.get_lease_spec(election_record))
        try:
            self.lease_reference = self.api_instance.create_namespaced_lease(namespace, body, _request_timeout=self.timeout)
        except Exception:  # noqa: BLE001 - 409 (someone else created it) or the API is away: not ours now
            return False
        self._renewed(election_record)
        return True

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        with self.io:
            return self._update(name, namespace, updated_record)

    def _update(self, name: str, namespace: str, updated_record: Any) -> bool:
        self._check()
        if self.lease_reference is None:
            return False
        try:
            self.lease_reference.spec = self.get_lease_spec(updated_record, self.lease_reference.spec)
            self.lease_reference = self.api_instance.replace_namespaced_lease(
                name, namespace, self.lease_reference, _request_timeout=self.timeout
            )
        except Exception:  # noqa: BLE001 - 409 means another candidate wrote first: not ours
            return False
        self._renewed(updated_record)
        return True

    def _renewed(self, record: Any) -> None:
        if record.holder_identity != self.identity:
            return
        now = time.monotonic()
        stale = self.renewed_at is not None and now - self.renewed_at >= self.fresh_for
        self.renewed_at = now
        if stale:
            self.on_fresh()

    def release(self) -> None:
        """Give the lease up (empty holder) so another candidate takes over at once, not at expiry."""
        try:
            lease = self.api_instance.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.timeout)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            self.api_instance.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.timeout)
            log.info("leader_lease_released", lease=self.name)
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            log.warning("leader_lease_not_released", lease=self.name, error=type(exc).__name__)


class Elector(Protocol):
    @property
    def leading(self) -> bool: ...

    def start(self, on_change: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...


class AlwaysLeader:
    """No election (a single controller, or tests): always allowed to write."""

    leading = True

    def start(self, on_change: Callable[[], None]) -> None:
        on_change()

    def stop(self) -> None:
        pass


class LeaseElector:
    """Leader election with the client's LeaderElection + a Lease, run in a daemon thread.

    `leading` is True between onstarted_leading and onstopped_leading *and* while the last renewal
    is younger than the renew deadline: if the API goes away, we stop writing at the deadline even
    though the client only notices later. After losing the lease the thread campaigns again.
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),
    ) -> None:
        problems = timings.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.identity = identity
        self.timings = timings
        self.lock = _FencedLeaseLock(
            api_client, name, namespace, identity, timeout=float(timings.retry_period), fresh_for=timings.renew_deadline
        )
        self._elected = False
        self._on_change: Callable[[], None] = lambda: None
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        renewed = self.lock.renewed_at
        return (
            self._elected
            and not self.lock.stopping.is_set()
            and renewed is not None
            and time.monotonic() - renewed < self.lock.fresh_for
        )

    def start(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self.lock.on_fresh = on_change
        self._thread = threading.Thread(target=self._campaign, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop campaigning; a leader releases the lease so another candidate need not wait for expiry.

        The election thread may be asleep inside the client (up to a retry period); it is not waited
        for: every lease request it could still make raises at once, so it can never renew again.
        """
        was_leading = self._elected
        with self.lock.io:  # waits for a request in flight (bounded by its timeout)
            self.lock.stopping.set()
        self._elected = False
        if was_leading:
            self.lock.release()
        if self._thread is not None:
            self._thread.join(timeout=0.2)

    def _campaign(self) -> None:
        while not self.lock.stopping.is_set():
            config = electionconfig.Config(
                self.lock,
                lease_duration=self.timings.lease_duration,
                renew_deadline=self.timings.renew_deadline,
                retry_period=self.timings.retry_period,
                onstarted_leading=self._started,
                onstopped_leading=self._stopped,
            )
            try:
                leaderelection.LeaderElection(config).run()  # returns when a lease we held is lost
            except _Stopped:
                break
            except Exception as exc:  # noqa: BLE001 - a client bug must not end the campaign
                log.error("leader_election_failed", error=f"{type(exc).__name__}: {exc}")
                self._stopped()
                self.lock.stopping.wait(self.timings.retry_period)
        self._elected = False

    def _started(self) -> None:
        self._elected = True
        log.info("leader_elected", identity=self.identity, lease=self.lock.name)
        self._on_change()

    def _stopped(self) -> None:
        if self._elected:
            log.warning("leader_lost", identity=self.identity, lease=self.lock.name)
        self._elected = False
        self._on_change()


# --- pure: what the cluster shows and what we want --------------------------------------------------------


@dataclass(frozen=True)
class ServiceView:
    """What the controller cares about in one Service: its status IPs and pool annotation."""

    ref: ObjectRef
    resource_version: str
    ips: tuple[str, ...]
    pool: str | None


@dataclass(frozen=True)
class Written:
    """A view as our own writes left it, kept until the watch cache shows that version."""

    view: ServiceView
    at: float  # monotonic


def service_ref(service: Any) -> ObjectRef:
    return ObjectRef("Service", service.namespace, service.name, "v1", service.metadata.uid)


def snapshot_views(snapshot: ClusterSnapshot) -> dict[ServiceKey, ServiceView]:
    return {
        ServiceKey(s.namespace, s.name): ServiceView(
            ref=service_ref(s),
            resource_version=s.metadata.resource_version,
            ips=ingress_ips(s.status.load_balancer.ingress),
            pool=s.metadata.annotations.get(POOL_ANNOTATION),
        )
        for s in snapshot.services
    }


def _version(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def seen(cached: ServiceView, written: ServiceView) -> bool:
    """Whether the cache already holds the version our write produced (or a later one)."""
    if cached.ref.uid != written.ref.uid:
        return True  # another object of the same name: our write is moot
    have, wrote = _version(cached.resource_version), _version(written.resource_version)
    if have is not None and wrote is not None:
        return have >= wrote
    return cached.resource_version == written.resource_version


def merge_overlay(
    views: Mapping[ServiceKey, ServiceView], overlay: Mapping[ServiceKey, Written], *, now: float
) -> tuple[dict[ServiceKey, ServiceView], dict[ServiceKey, Written]]:
    """(views with our unseen writes applied, the overlay entries still unseen)."""
    merged = dict(views)
    kept: dict[ServiceKey, Written] = {}
    for key, written in overlay.items():
        cached = views.get(key)
        if cached is None or seen(cached, written.view) or now - written.at > OVERLAY_MAX_AGE:
            continue
        merged[key] = written.view
        kept[key] = written
    return merged, kept


def existing_assignments(views: Mapping[ServiceKey, ServiceView]) -> dict[ServiceKey, tuple[IPAddress, ...]]:
    """Status IPs as `allocate(existing=...)` takes them; an unreadable entry leaves the service without."""
    found: dict[ServiceKey, tuple[IPAddress, ...]] = {}
    for key, view in views.items():
        try:
            ips = tuple(ipaddress.ip_address(ip) for ip in view.ips)
        except ValueError:
            continue
        if ips:
            found[key] = ips
    return found


@dataclass(frozen=True)
class StatusChange:
    service: ServiceKey
    view: ServiceView
    ips: tuple[str, ...]
    patch: Body
    events: tuple[EventSpec, ...] = ()  # emitted once the write succeeded (transitions)


@dataclass(frozen=True)
class AnnotationChange:
    service: ServiceKey
    view: ServiceView
    pool: str | None
    patch: Body


@dataclass(frozen=True)
class PoolStatusChange:
    name: str
    namespace: str
    patch: Body


@dataclass(frozen=True)
class ControllerWrites:
    status: tuple[StatusChange, ...] = ()
    annotations: tuple[AnnotationChange, ...] = ()
    pools: tuple[PoolStatusChange, ...] = ()
    problem_events: frozenset[EventSpec] = frozenset()  # one per current problem; emitted once each
    state: Body = field(default_factory=dict)  # the ConfigurationState status


def allocated_message(ips: Sequence[str]) -> str:
    return "Assigned IP [" + " ".join(f'"{ip}"' for ip in ips) + "]"


def plan_writes(
    snapshot: ClusterSnapshot,
    compiled: CompileResult,
    allocation: Allocation,
    views: Mapping[ServiceKey, ServiceView],
    usage: Mapping[str, PoolUsage] | None = None,
) -> ControllerWrites:
    """Every write that makes the cluster show `allocation` and `compiled`'s problems (pure)."""
    status: list[StatusChange] = []
    annotations: list[AnnotationChange] = []
    events: set[EventSpec] = set()
    for key, view in sorted(views.items()):
        assignment = allocation.assignments.get(key)
        if assignment is None and key not in allocation.refusals and key not in allocation.cleared:
            continue  # not ours
        ips = ingress_of(assignment.ips) if assignment is not None else ()
        pool = assignment.pool if assignment is not None else None
        patch = service_status_patch(view.ips, ips, resource_version=view.resource_version)
        if patch is not None:
            transitions = []
            if view.ips and key in allocation.cleared:
                message = f"current IP {', '.join(view.ips)} cleared: {allocation.cleared[key]}"
                transitions.append(EventSpec(view.ref, "Normal", "ClearAssignment", message))
            if ips:
                transitions.append(EventSpec(view.ref, "Normal", "IPAllocated", allocated_message(ips)))
            status.append(StatusChange(key, view, ips, patch, tuple(transitions)))
        annotation = pool_annotation_patch({POOL_ANNOTATION: view.pool} if view.pool is not None else {}, pool)
        if annotation is not None:
            annotations.append(AnnotationChange(key, view, pool, annotation))
        if key in allocation.refusals:
            message = f'Failed to allocate IP for "{key}": {allocation.refusals[key]}'
            events.add(EventSpec(view.ref, "Warning", "AllocationFailed", message))
    for warning in allocation.warnings:
        view = views.get(ServiceKey(warning.namespace, warning.name))
        if warning.kind == "Service" and view is not None:
            reason = "DeprecatedAnnotation" if "deprecated" in warning.message else "AllocationWarning"
            events.add(EventSpec(view.ref, "Warning", reason, str(warning)))
    events |= problem_events(snapshot, compiled.errors)
    return ControllerWrites(
        status=tuple(status),
        annotations=tuple(annotations),
        pools=tuple(pool_writes(snapshot, usage if usage is not None else pool_usage(compiled.config, allocation))),
        problem_events=frozenset(events),
        state=configuration_state_status(compiled.errors),
    )


def pool_writes(snapshot: ClusterSnapshot, usage_by_pool: Mapping[str, PoolUsage]) -> list[PoolStatusChange]:
    objects = {pool.name: pool for pool in snapshot.pools if pool.namespace == snapshot.namespace}
    changes = []
    for name, usage in usage_by_pool.items():
        obj = objects.get(name)
        if obj is None:
            continue
        patch = pool_status_patch(obj.status, usage)
        if patch is not None:
            changes.append(PoolStatusChange(name, obj.namespace, patch))
    return changes


def object_refs(snapshot: ClusterSnapshot) -> dict[tuple[str, str, str], ObjectRef]:
    refs: dict[tuple[str, str, str], ObjectRef] = {}
    for group in (
        snapshot.pools, snapshot.peers, snapshot.advertisements, snapshot.communities,
        snapshot.bfd_profiles, snapshot.l2_advertisements,
    ):
        for obj in group:
            refs[(obj.kind, obj.namespace, obj.name)] = ObjectRef(
                obj.kind, obj.namespace, obj.name, obj.api_version, obj.metadata.uid
            )
    for secret in snapshot.secrets:
        refs[("Secret", secret.namespace, secret.name)] = ObjectRef("Secret", secret.namespace, secret.name, "v1", secret.metadata.uid)
    return refs


def problem_events(snapshot: ClusterSnapshot, problems: Iterable[ObjectError]) -> set[EventSpec]:
    """A Warning Event on each object a configuration problem names (InvalidConfiguration for errors).

    Objects that did not parse are not in the snapshot; they are still named (kind, namespace, name),
    which is all an Event needs. Problems about things that are not cluster objects (files) get none.
    """
    refs = object_refs(snapshot)
    events = set()
    for problem in problems:
        ref = refs.get((problem.kind, problem.namespace, problem.name))
        if ref is None:
            if problem.kind not in METALLB_KINDS or not problem.name:
                continue
            ref = ObjectRef(problem.kind, problem.namespace, problem.name, METALLB_KINDS[problem.kind])
        reason = "InvalidConfiguration" if problem.is_error else "ConfigurationWarning"
        events.add(EventSpec(ref, "Warning", reason, str(problem)))
    return events


class EventLedger:
    """Which Events are due: problem events once while the problem lasts, transition events once.

    A failed emission stays due and is tried again on a later reconcile, up to `max_attempts`.
    """

    def __init__(self, *, max_attempts: int = 5) -> None:
        self.max_attempts = max_attempts
        self.emitted: set[EventSpec] = set()  # problem events already emitted, still current
        self.current: frozenset[EventSpec] = frozenset()
        self.once: dict[EventSpec, int] = {}  # transition events not yet emitted -> attempts
        self.attempts: dict[EventSpec, int] = {}

    def set_problems(self, current: frozenset[EventSpec]) -> None:
        self.current = current
        self.emitted &= current  # a resolved problem is emitted again if it comes back
        self.attempts = {spec: n for spec, n in self.attempts.items() if spec in current}

    def add_once(self, specs: Iterable[EventSpec]) -> None:
        for spec in specs:
            self.once.setdefault(spec, 0)

    def due(self) -> list[EventSpec]:
        return sorted(self.once) + sorted(self.current - self.emitted)

    def record(self, spec: EventSpec, result: WriteResult) -> None:
        if spec in self.once:
            self.once[spec] += 1
            if result.ok or result.outcome is WriteOutcome.NOT_FOUND or self.once[spec] >= self.max_attempts:
                del self.once[spec]
            return
        self.attempts[spec] = self.attempts.get(spec, 0) + 1
        if result.ok or result.outcome is WriteOutcome.NOT_FOUND or self.attempts[spec] >= self.max_attempts:
            self.emitted.add(spec)


# --- the daemon ------------------------------------------------------------------------------------------


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ControllerOptions:
    namespace: str = DEFAULT_NAMESPACE
    load_balancer_class: str | None = None
    lease_name: str = DEFAULT_LEASE_NAME
    identity: str = field(default_factory=default_identity)
    timings: LeaseTimings = LeaseTimings()
    leader_election: bool = True
    coalesce_seconds: float = 0.005
    retry_initial: float = 0.5
    retry_max: float = 30.0


@dataclass
class _Applied:
    """What one batch of writes achieved (returned by the worker thread; the loop updates its state)."""

    results: list[tuple[object, WriteResult]] = field(default_factory=list)

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
        self.last_good: LastGood | None = None  # each metallb.io object's last valid version (see compiler)
        self.ledger = EventLedger()
        self.problems = ProblemLog()
        self.state_written: Body | None = None
        self.was_leading = False
        self.retry_delay: float | None = None
        self.reconciles = 0

    # the loop -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        wake = Wakeup(asyncio.get_running_loop(), coalesce=self.options.coalesce_seconds)
        self.source = self.source_factory(self.api_client, self.options.namespace, wake.notify)
        self.source.start()
        self.elector.start(wake.notify)
        log.info("controller_started", identity=self.options.identity, namespace=self.options.namespace)
        try:
            if not await wait_for_sync(self.source, stop):
                return
            log.info("cluster_synced")
            metrics.mark_ready()
            while not stop.is_set():
                await self.reconcile()
                await wake.wait(stop, timeout=self.retry_delay)
        finally:
            await asyncio.to_thread(self.elector.stop)
            self.source.stop()
            log.info("controller_stopped")

    async def reconcile(self) -> None:
        """One pass: if leading, compute from a fresh snapshot and write what differs."""
        assert self.source is not None
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
        writes = self.compute(self.source.snapshot())
        due = self.ledger.due()
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
        log.debug(
            "reconciled",
            status_writes=len(writes.status),
            annotation_writes=len(writes.annotations),
            pool_writes=len(writes.pools),
            seconds=round(time.monotonic() - started, 4),
        )

    def compute(self, snapshot: ClusterSnapshot) -> ControllerWrites:
        compiled = compile_config(snapshot, last_good=self.last_good)
        self.last_good = compiled.last_good
        views, self.overlay = merge_overlay(snapshot_views(snapshot), self.overlay, now=time.monotonic())
        allocation = allocate(
            compiled.config,
            snapshot.services,
            snapshot.namespaces,
            existing=existing_assignments(views),
            load_balancer_class=self.options.load_balancer_class,
        )
        self.problems.update(tuple(sorted(set(compiled.errors) | set(allocation.warnings))))
        for key, reason in allocation.refusals.items():
            log.debug("ip_not_allocated", service=str(key), reason=reason)
        usage = pool_usage(compiled.config, allocation)
        metrics.record_config(compiled.errors)
        metrics.record_pools(usage)
        writes = plan_writes(snapshot, compiled, allocation, views, usage)
        self.ledger.set_problems(writes.problem_events)
        return writes

    # the writes (in a worker thread: only reads its arguments, returns what happened) -------------

    def _apply(self, writes: ControllerWrites, due: list[EventSpec]) -> _Applied:
        applied = _Applied()
        failed: set[ServiceKey] = set()
        events = list(due)
        for change in writes.status:
            result = self.writer.patch_service_status(change.service.namespace, change.service.name, change.patch)
            applied.results.append((change, result))
            if result.ok:
                events.extend(change.events)
            else:
                failed.add(change.service)
        for annotation in writes.annotations:
            if annotation.service in failed:
                continue  # the view was stale: the next reconcile decides again
            result = self.writer.patch_service(annotation.service.namespace, annotation.service.name, annotation.patch)
            applied.results.append((annotation, result))
        for pool in writes.pools:
            result = self.writer.patch_custom_status(
                version="v1beta1", plural="ipaddresspools", namespace=pool.namespace, name=pool.name,
                patch=pool.patch, kind="IPAddressPool",
            )
            applied.results.append((pool, result))
        for spec in events:
            applied.results.append((spec, self.writer.emit_event(spec)))
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
            if isinstance(item, StatusChange) and result.ok:
                base = self.overlay[item.service].view if item.service in self.overlay else item.view
                version = result.resource_version or base.resource_version
                self.overlay[item.service] = Written(replace(base, ips=item.ips, resource_version=version), now)
            elif isinstance(item, AnnotationChange) and result.ok:
                base = self.overlay[item.service].view if item.service in self.overlay else item.view
                version = result.resource_version or base.resource_version
                self.overlay[item.service] = Written(replace(base, pool=item.pool, resource_version=version), now)
            elif isinstance(item, EventSpec):
                if item not in self.ledger.current:
                    self.ledger.add_once([item])
                self.ledger.record(item, result)
            elif item is writes.state:
                self.state_written = writes.state if result.ok else None


async def run_controller(api_client: ApiClient, options: ControllerOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await Controller(api_client, options).run(stop)
