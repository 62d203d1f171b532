"""The controller's pure half: what the cluster shows, what we want it to show, and the writes between.

`compute_pass` is the reference: compile, overlay our own unseen writes, allocate every service, plan
every write (~1 s at 10,000 services). `ControllerPlanner` keeps the same answer up to date at the
cost of what changed (one Service: ~3 ms), and a property test holds each of its passes to
`compute_pass` on the same snapshot and overlay.

The overlay: our writes reach the watch cache a few milliseconds later, so the loop remembers what it
wrote (`Written`) until the cache shows that version (`seen`), or `OVERLAY_MAX_AGE` passes; without
that, a pass in between could hand the same address to a second service.

No I/O: `daemons.controller` sends what this plans, through `kube.writer`.

~600 lines because the reference (`compute_pass` and the pure views and writes it is made of) and its
incremental twin (`ControllerPlanner`) are read together, as the property test holds them together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from metallb_bgp.api.core import Service, status_addresses
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.allocator.allocate import allocate
from metallb_bgp.core.allocator.incremental import IncrementalAllocation
from metallb_bgp.core.allocator.results import Allocation, PoolUsage
from metallb_bgp.core.allocator.usage import PoolTally, pool_usage
from metallb_bgp.core.change import ClusterChange
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.model import Config
from metallb_bgp.core.config.result import CompileResult, LastGood
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.plan.tracking import ConfigTracker, ServiceIndex
from metallb_bgp.core.snapshot import ClusterSnapshot
from metallb_bgp.core.writes import (
    POOL_ANNOTATION,
    Body,
    EventSpec,
    ObjectRef,
    WriteResult,
    configuration_state_status,
    ingress_ips,
    ingress_of,
    pool_annotation_patch,
    pool_status_patch,
    service_status_patch,
)

METALLB_KINDS = {
    "IPAddressPool": "metallb.io/v1beta1",
    "BGPPeer": "metallb.io/v1beta2",
    "BGPAdvertisement": "metallb.io/v1beta1",
    "Community": "metallb.io/v1beta1",
    "BFDProfile": "metallb.io/v1beta1",
    "L2Advertisement": "metallb.io/v1beta1",
}
OVERLAY_MAX_AGE = 30.0  # seconds a write of ours may stay unseen in the watch cache before we stop assuming it


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


def service_ref(service: Service) -> ObjectRef:
    return ObjectRef("Service", service.namespace, service.name, "v1", service.metadata.uid)


def service_view(service: Service) -> ServiceView:
    return ServiceView(
        ref=service_ref(service),
        resource_version=service.metadata.resource_version,
        ips=ingress_ips(service.status.load_balancer.ingress),
        pool=service.metadata.annotations.get(POOL_ANNOTATION),
    )


def snapshot_views(snapshot: ClusterSnapshot) -> dict[ServiceKey, ServiceView]:
    return {ServiceKey(s.namespace, s.name): service_view(s) for s in snapshot.services}


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


def stands_in(cached: ServiceView | None, written: Written, *, now: float) -> bool:
    """Whether our write still stands in for the cached view: unseen, not too old, the service still there."""
    return cached is not None and not seen(cached, written.view) and now - written.at <= OVERLAY_MAX_AGE


def merge_overlay(
    views: Mapping[ServiceKey, ServiceView], overlay: Mapping[ServiceKey, Written], *, now: float
) -> tuple[dict[ServiceKey, ServiceView], dict[ServiceKey, Written]]:
    """(views with our unseen writes applied, the overlay entries still unseen)."""
    merged = dict(views)
    kept: dict[ServiceKey, Written] = {}
    for key, written in overlay.items():
        if stands_in(views.get(key), written, now=now):
            merged[key] = written.view
            kept[key] = written
    return merged, kept


def readable_ips(view: ServiceView) -> tuple[IPAddress, ...] | None:
    """A view's status IPs as `allocate(existing=...)` takes them (`status_addresses`, the one reading:
    unreadable entries skipped); None if none reads."""
    return status_addresses(view.ips) or None


def existing_assignments(views: Mapping[ServiceKey, ServiceView]) -> dict[ServiceKey, tuple[IPAddress, ...]]:
    """Status IPs as `allocate(existing=...)` takes them; an unreadable entry leaves the service without."""
    return {key: ips for key, view in views.items() if (ips := readable_ips(view)) is not None}


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


def written_view(
    overlaid: Written | None, change: StatusChange | AnnotationChange, result: WriteResult, *, now: float
) -> Written:
    """The overlay entry for a service after `change` was written: its view (ours, if we already had
    one overlaid) with the new IPs or pool and the resourceVersion the API server answered."""
    base = overlaid.view if overlaid is not None else change.view
    version = result.resource_version or base.resource_version
    if isinstance(change, StatusChange):
        return Written(replace(base, ips=change.ips, resource_version=version), now)
    return Written(replace(base, pool=change.pool, resource_version=version), now)


@dataclass(frozen=True)
class ServiceWrites:
    """What one service of ours needs: its status and annotation patches, its AllocationFailed event."""

    status: StatusChange | None = None
    annotation: AnnotationChange | None = None
    refused: EventSpec | None = None


def allocated_message(ips: Sequence[str]) -> str:
    return "Assigned IP [" + " ".join(f'"{ip}"' for ip in ips) + "]"


def service_writes(key: ServiceKey, view: ServiceView, allocation: Allocation) -> ServiceWrites | None:
    """The writes that make one service show its assignment (or refusal), None if it needs none (pure).

    A function of the view and of the allocation's entries for `key` only: the incremental planner
    calls it again exactly when one of those changed.
    """
    assignment = allocation.assignments.get(key)
    refusal = allocation.refusals.get(key)
    cleared = allocation.cleared.get(key)
    if assignment is None and refusal is None and cleared is None:
        return None  # not ours
    ips = ingress_of(assignment.ips) if assignment is not None else ()
    pool = assignment.pool if assignment is not None else None
    status = None
    patch = service_status_patch(view.ips, ips, resource_version=view.resource_version)
    if patch is not None:
        transitions = []
        if view.ips and cleared is not None:
            message = f"current IP {', '.join(view.ips)} cleared: {cleared}"
            transitions.append(EventSpec(view.ref, "Normal", "ClearAssignment", message))
        if ips:
            transitions.append(EventSpec(view.ref, "Normal", "IPAllocated", allocated_message(ips)))
        status = StatusChange(key, view, ips, patch, tuple(transitions))
    annotation = None
    annotation_patch = pool_annotation_patch({POOL_ANNOTATION: view.pool} if view.pool is not None else {}, pool)
    if annotation_patch is not None:
        annotation = AnnotationChange(key, view, pool, annotation_patch)
    refused = None
    if refusal is not None:
        refused = EventSpec(view.ref, "Warning", "AllocationFailed", f'Failed to allocate IP for "{key}": {refusal}')
    if status is None and annotation is None and refused is None:
        return None
    return ServiceWrites(status, annotation, refused)


def warning_events(views: Mapping[ServiceKey, ServiceView], warnings: Iterable[ObjectError]) -> set[EventSpec]:
    """A Warning Event on each service an allocation warning names (deprecated annotations and the like)."""
    events = set()
    for warning in warnings:
        view = views.get(ServiceKey(warning.namespace, warning.name))
        if warning.kind == "Service" and view is not None:
            reason = "DeprecatedAnnotation" if "deprecated" in warning.message else "AllocationWarning"
            events.add(EventSpec(view.ref, "Warning", reason, str(warning)))
    return events


def gathered(
    planned: Iterable[ServiceWrites],
) -> tuple[list[StatusChange], list[AnnotationChange], set[EventSpec]]:
    """Services' writes as one pass sends them: status patches, annotation patches, AllocationFailed events."""
    status: list[StatusChange] = []
    annotations: list[AnnotationChange] = []
    refused: set[EventSpec] = set()
    for found in planned:
        if found.status is not None:
            status.append(found.status)
        if found.annotation is not None:
            annotations.append(found.annotation)
        if found.refused is not None:
            refused.add(found.refused)
    return status, annotations, refused


def writes_for(
    snapshot: ClusterSnapshot,
    compiled: CompileResult,
    allocation: Allocation,
    views: Mapping[ServiceKey, ServiceView],
    usage: Mapping[str, PoolUsage] | None = None,
) -> ControllerWrites:
    """Every write that makes the cluster show `allocation` and `compiled`'s problems (pure)."""
    planned = (service_writes(key, views[key], allocation) for key in sorted(views))
    status, annotations, events = gathered(found for found in planned if found is not None)
    events |= warning_events(views, allocation.warnings)
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


# --- pure: one reconcile pass, from scratch (the reference) and kept up to date (what the loop runs) ------


@dataclass(frozen=True)
class ControllerPass:
    """One pass's answer: what was compiled and allocated, and the writes that make the cluster show it."""

    compiled: CompileResult
    allocation: Allocation
    usage: Mapping[str, PoolUsage]
    overlay: dict[ServiceKey, Written]  # the overlay entries still unseen: the next pass's overlay
    writes: ControllerWrites


def compute_pass(
    snapshot: ClusterSnapshot,
    overlay: Mapping[ServiceKey, Written],
    *,
    now: float,
    last_good: LastGood | None = None,
    load_balancer_class: str | None = None,
) -> ControllerPass:
    """Everything from scratch: compile, overlay our unseen writes, allocate every service, plan every
    write. Pure; the reference `ControllerPlanner` is held to (it costs ~1 s at 10,000 services)."""
    compiled = compile_config(snapshot, last_good=last_good)
    views, kept = merge_overlay(snapshot_views(snapshot), overlay, now=now)
    allocation = allocate(
        compiled.config,
        snapshot.services,
        snapshot.namespaces,
        existing=existing_assignments(views),
        load_balancer_class=load_balancer_class,
    )
    usage = pool_usage(compiled.config, allocation)
    return ControllerPass(compiled, allocation, usage, kept, writes_for(snapshot, compiled, allocation, views, usage))


@dataclass(frozen=True)
class PassStats:
    """How much work one `ControllerPlanner.update` did (logged by the loop, read by the bench)."""

    recompiled: bool = False
    full: bool = False  # allocation and write planning started over
    allocated: int = 0  # services re-decided by the allocator
    planned: int = 0  # services whose writes were planned again


class ControllerPlanner:
    """`compute_pass`'s answer, at the cost of what changed since the last pass.

    Why: recomputing everything costs ~1 s per pass at 10,000 services, so one new Service waited that
    long (twice, counting the pass our own write triggers) before its IP was written. What changes
    between two passes comes as a `ClusterChange` (`KubernetesSource.changes()`), as for the other two
    planners, and the overlay entries are the controller's own `Written` values.

    - Configuration (every kind but Services and EndpointSlices) is recompiled only when it changed,
      with the previous `last_good`; a new Config or new namespace labels start the allocation over.
    - The allocation is an `IncrementalAllocation`. Its contract: every service it does not re-decide must
      be one whose `previous` IPs are its current assignment and whose Service did not change. So it
      re-decides the services whose Service changed (or appeared, or went), whose `existing` IPs
      changed (the cache, or our overlay entry appearing, being seen or expiring), and the *unsynced*
      ones: assigned IPs the view does not show yet (a status write pending or failed), where
      `allocate` would start from the view's IPs, not from the assignment.
    - Writes are planned per service (`service_writes`, a function of its view and its allocation
      entries) again only where one of those changed; planned writes that were not done stay planned,
      so a failed write is retried next pass, and a refused service keeps its AllocationFailed event.

    Not thread-safe, no I/O: one reconcile loop owns it. A property test holds every pass's writes to
    `compute_pass` on the same snapshot and overlay.
    """

    def __init__(self, *, load_balancer_class: str | None = None) -> None:
        self.load_balancer_class = load_balancer_class
        self.stats = PassStats()
        self._config = ConfigTracker()
        self._config_events: frozenset[EventSpec] = frozenset()  # InvalidConfiguration and the like
        self._state_body: Body = {}
        self._allocation_state: IncrementalAllocation | None = None
        self._allocation = Allocation()
        self._tally = PoolTally(Config())  # pool_usage, kept: replaced with the allocation state
        self._index = ServiceIndex()
        self._services = self._index.services
        self._cached: dict[ServiceKey, ServiceView] = {}  # each service's view as the cache shows it
        self._views: dict[ServiceKey, ServiceView] = {}  # ... with our unseen writes overlaid
        self._overlaid: set[ServiceKey] = set()  # the services whose view is one of our writes
        self._existing: dict[ServiceKey, tuple[IPAddress, ...]] = {}  # readable view IPs: allocate's `existing`
        self._unsynced: set[ServiceKey] = set()  # assigned IPs the view does not show
        self._planned: dict[ServiceKey, ServiceWrites] = {}  # services that need a write or have a refusal
        self._warnings: tuple[ObjectError, ...] | None = None
        self._warned: frozenset[ServiceKey] = frozenset()
        self._warning_events: frozenset[EventSpec] = frozenset()

    def update(self, change: ClusterChange, overlay: Mapping[ServiceKey, Written], *, now: float) -> ControllerPass:
        """`compute_pass(<the cluster>, overlay, now=now, last_good=<the previous pass's>)`, incrementally;
        the first change must be whole."""
        recompiled, restart = self._take_config(change.config)
        compiled = self._config.compiled
        assert compiled is not None
        changed = self._take_services(change)
        kept, view_changed, ips_changed = self._merge(changed, overlay, now=now)

        state, before = self._allocation_state, self._allocation
        restart = restart or state is None
        if state is None or restart:
            state = self._allocation_state = IncrementalAllocation(
                compiled.config, self._config.namespace_labels, load_balancer_class=self.load_balancer_class
            )
            allocation = state.allocate_all(self._services, self._existing.get)
        else:
            allocation = state.update(self._services, changed | ips_changed | self._unsynced, self._existing.get)
        self._allocation = allocation
        moved = state.changed  # services whose assignment changed (all of them after allocate_all)
        if restart:
            self._tally = PoolTally(compiled.config)
            self._unsynced.clear()
            self._resync(allocation.assignments.keys(), allocation)
        else:
            self._resync(moved | ips_changed, allocation)
        self._count(moved, None if restart else before, allocation)

        if restart:
            todo: Iterable[ServiceKey] = self._views.keys() | self._planned.keys()
        else:
            refusals = {
                key for key in before.refusals.keys() | allocation.refusals.keys()
                if before.refusals.get(key) != allocation.refusals.get(key)
            }
            todo = view_changed | moved | refusals | before.cleared.keys() | allocation.cleared.keys()
        planned = self._plan(todo, allocation)
        self._warn(allocation.warnings, view_changed)
        usage = self._tally.usage()
        self.stats = PassStats(recompiled=recompiled, full=restart, allocated=state.decided, planned=planned)
        return ControllerPass(compiled, allocation, usage, kept, self._writes(usage))

    # ---------------------------------------------------------------- inputs

    def _take_config(self, config: ClusterSnapshot | None) -> tuple[bool, bool]:
        """(recompiled, the allocation must start over)."""
        taken = self._config.take(config)
        if taken.recompiled:
            assert self._config.snapshot is not None and self._config.compiled is not None
            self._config_events = frozenset(problem_events(self._config.snapshot, self._config.compiled.errors))
            self._state_body = configuration_state_status(self._config.compiled.errors)
        return taken.recompiled, taken.config_changed or taken.labels_changed

    def _take_services(self, change: ClusterChange) -> set[ServiceKey]:
        """The keys whose Service changed (or appeared, or went), with their cached views brought along."""
        changed, _slices = self._index.take(change)
        for key in changed:
            service = self._services.get(key)
            if service is None:
                del self._cached[key]
            else:
                self._cached[key] = service_view(service)
        return changed

    def _merge(
        self, changed: set[ServiceKey], overlay: Mapping[ServiceKey, Written], *, now: float
    ) -> tuple[dict[ServiceKey, Written], set[ServiceKey], set[ServiceKey]]:
        """`merge_overlay` for the services that may differ: (entries kept, views changed, IPs changed)."""
        kept: dict[ServiceKey, Written] = {}
        view_changed: set[ServiceKey] = set()
        ips_changed: set[ServiceKey] = set()
        for key in changed | overlay.keys() | self._overlaid:
            view = self._cached.get(key)
            written = overlay.get(key)
            if written is not None and stands_in(view, written, now=now):
                view = written.view
                kept[key] = written
            if view == self._views.get(key):
                continue
            view_changed.add(key)
            if view is None:
                del self._views[key]
            else:
                self._views[key] = view
            ips = readable_ips(view) if view is not None else None
            if ips != self._existing.get(key):
                ips_changed.add(key)
                if ips is None:
                    del self._existing[key]
                else:
                    self._existing[key] = ips
        self._overlaid = set(kept)
        return kept, view_changed, ips_changed

    # ---------------------------------------------------------------- outputs

    def _resync(self, keys: Iterable[ServiceKey], allocation: Allocation) -> None:
        """Keep `_unsynced` (assigned IPs the view does not show) for the services that may have moved."""
        for key in keys:
            assignment = allocation.assignments.get(key)
            if assignment is not None and self._existing.get(key) != assignment.ips:
                self._unsynced.add(key)
            else:
                self._unsynced.discard(key)

    def _count(self, moved: Iterable[ServiceKey], before: Allocation | None, allocation: Allocation) -> None:
        """Move the changed assignments in the pool tally (`before`: None when the tally is new)."""
        for key in moved:
            if before is not None and (old := before.assignments.get(key)) is not None:
                self._tally.remove(old)
            if (new := allocation.assignments.get(key)) is not None:
                self._tally.add(new)

    def _plan(self, keys: Iterable[ServiceKey], allocation: Allocation) -> int:
        count = 0
        for key in keys:
            count += 1
            view = self._views.get(key)
            found = service_writes(key, view, allocation) if view is not None else None
            if found is None:
                self._planned.pop(key, None)
            else:
                self._planned[key] = found
        return count

    def _warn(self, warnings: tuple[ObjectError, ...], view_changed: set[ServiceKey]) -> None:
        """The warning events, again when the warnings (a new tuple) or a warned service's view changed."""
        if warnings is self._warnings and self._warned.isdisjoint(view_changed):
            return
        self._warnings = warnings
        self._warned = frozenset(ServiceKey(w.namespace, w.name) for w in warnings if w.kind == "Service")
        self._warning_events = frozenset(warning_events(self._views, warnings))

    def _writes(self, usage: Mapping[str, PoolUsage]) -> ControllerWrites:
        snapshot = self._config.snapshot
        assert snapshot is not None
        status, annotations, refused = gathered(self._planned[key] for key in sorted(self._planned))
        return ControllerWrites(
            status=tuple(status),
            annotations=tuple(annotations),
            pools=tuple(pool_writes(snapshot, usage)),
            problem_events=self._config_events | self._warning_events | refused,
            state=self._state_body,
        )


