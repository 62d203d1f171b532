"""The plan kept up to date one change at a time: `make_plan`'s answer at the cost of what changed.

`make_plan` recomputes everything from a whole `ClusterSnapshot`: compile, allocate every service, and
decide every service's routes. That is the reference, and right for `metallb-bgp plan`; but for a
daemon holding 10,000 services it makes a one-service change cost hundreds of milliseconds. The
`IncrementalPlanner` takes `ClusterChange`s instead (what a source saw change: services by key,
EndpointSlices by the service they belong to, and the rest of the cluster whenever any of it changed)
and keeps what each stage computed:

- the compiled Config: recompiled when configuration objects (or load errors) change, and only if the
  new Config differs does anything downstream start over;
- the allocation (`allocator.AllocationState`): re-decides the changed services and the unsettled ones;
- the route table (`routes.RouteTableState`): recomputes the contributions of services whose Service,
  EndpointSlices or assignment changed, with the node's context kept until the Config or Node changes.

Every `update` returns exactly the Plan `make_plan` would return for the same cluster, with `existing`
being what `metallb-bgp run` passes: the IPs in the services' status, overridden by the previous
plan's assignments (initially the state file). A property test holds the two to that after random
sequences of changes. The planner is not thread-safe and does no I/O: one reconcile loop owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from metallb_bgp.api.core import EndpointSlice, Node, Service
from metallb_bgp.core.allocator import Allocation, AllocationState
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.config.result import CompileResult
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.plan.pipeline import Plan
from metallb_bgp.core.routes import (
    SERVICE_NAME_LABEL,
    NodeContext,
    RouteKey,
    RouteTableState,
    index_endpoint_slices,
    is_ours,
    node_context,
    node_peers,
    service_routes,
)
from metallb_bgp.core.snapshot import ClusterSnapshot

SliceGroup = tuple[str, str]  # (namespace, service name): the EndpointSlices of one service


@dataclass(frozen=True)
class ClusterChange:
    """What changed in the cluster, as a source saw it.

    `services` maps each changed service key to every definition of it, in snapshot order (a manifests
    folder may define one twice; the last one counts, as in the snapshot), `()` when it is gone.
    `endpoint_slices` maps each changed (namespace, service name) to all of its EndpointSlices now.
    `config` is the rest of the cluster (every kind but Services and EndpointSlices, and the load
    errors), whole, whenever any of it changed; None when none of it did.
    """

    services: Mapping[ServiceKey, tuple[Service, ...]] = field(default_factory=dict)
    endpoint_slices: Mapping[SliceGroup, tuple[EndpointSlice, ...]] = field(default_factory=dict)
    config: ClusterSnapshot | None = None

    @property
    def is_empty(self) -> bool:
        return not self.services and not self.endpoint_slices and self.config is None

    @classmethod
    def whole(cls, snapshot: ClusterSnapshot) -> ClusterChange:
        """Everything in `snapshot`, as the first change (or to start over)."""
        services: dict[ServiceKey, list[Service]] = {}
        for service in snapshot.services:
            services.setdefault(ServiceKey(service.namespace, service.name), []).append(service)
        slices = index_endpoint_slices(snapshot.endpoint_slices)
        return cls(
            services={key: tuple(defs) for key, defs in services.items()},
            endpoint_slices={group: tuple(found) for group, found in slices.items()},
            config=config_part(snapshot),
        )


def config_part(snapshot: ClusterSnapshot) -> ClusterSnapshot:
    """The snapshot without Services and EndpointSlices: what compile, namespaces and nodes come from."""
    return ClusterSnapshot(
        pools=snapshot.pools,
        peers=snapshot.peers,
        advertisements=snapshot.advertisements,
        communities=snapshot.communities,
        bfd_profiles=snapshot.bfd_profiles,
        l2_advertisements=snapshot.l2_advertisements,
        nodes=snapshot.nodes,
        namespaces=snapshot.namespaces,
        secrets=snapshot.secrets,
        namespace=snapshot.namespace,
        load_errors=snapshot.load_errors,
    )


def slice_group(endpoint_slice: EndpointSlice) -> SliceGroup | None:
    """The (namespace, service name) an EndpointSlice belongs to, as `routes` reads it."""
    name = endpoint_slice.metadata.labels.get(SERVICE_NAME_LABEL)
    return (endpoint_slice.metadata.namespace, name) if name else None


def status_ips(definitions: Iterable[Service]) -> tuple[IPAddress, ...] | None:
    """`daemons.runtime.status_assignments` for one key: the last definition with readable status IPs."""
    found: tuple[IPAddress, ...] | None = None
    for service in definitions:
        if ips := service.status_ips():
            found = ips
    return found


@dataclass(frozen=True)
class UpdateStats:
    """How much work one update did (logged by the daemon, read by the bench)."""

    recompiled: bool = False
    allocated: int = 0  # services re-decided by the allocator
    routed: int = 0  # services whose routes were recomputed
    full: bool = False  # allocation and routes started over


class IncrementalPlanner:
    """`make_plan` for one node, brought up to date by `update(change)` instead of recomputed."""

    def __init__(
        self,
        *,
        node_name: str,
        load_balancer_class: str | None = None,
        remembered: Mapping[ServiceKey, tuple[IPAddress, ...]] | None = None,
    ) -> None:
        """`remembered`: assignments from before (the state file), as `existing` would hold them."""
        self.node_name = node_name
        self.load_balancer_class = load_balancer_class
        self._remembered: dict[ServiceKey, tuple[IPAddress, ...]] = dict(remembered or {})
        self._definitions: dict[ServiceKey, tuple[Service, ...]] = {}
        self._services: dict[ServiceKey, Service] = {}  # the definition that counts (the last)
        self._slices: dict[SliceGroup, tuple[EndpointSlice, ...]] = {}
        self._config_snapshot: ClusterSnapshot | None = None
        self._compiled: CompileResult | None = None
        self._namespace_labels: dict[str, Mapping[str, str]] = {}
        self._node: Node | None = None
        self._peers: tuple[Peer, ...] = ()
        self._allocation_state: AllocationState | None = None
        self._context: NodeContext | None = None
        self._routes = RouteTableState()
        self.plan: Plan | None = None
        self.stats = UpdateStats()
        self.assignments_changed: frozenset[ServiceKey] = frozenset()  # by the last update
        # routes (peer, prefix) the last update may have changed; None: any (the table was rebuilt)
        self.routes_touched: frozenset[RouteKey] | None = None

    @property
    def remembered(self) -> Mapping[ServiceKey, tuple[IPAddress, ...]]:
        """The assignments of the last plan: `existing` for the next one (and what a state file keeps)."""
        return self._remembered

    def update(self, change: ClusterChange) -> Plan:
        """The plan after `change` (the first one must be whole): equal to `make_plan` on the cluster
        as it now is, with `existing` = status IPs overridden by the previous plan's assignments."""
        recompiled = restart_allocation = restart_routes = False
        if change.config is not None:
            recompiled, restart_allocation, restart_routes = self._take_config(change.config)
        if self._compiled is None:
            raise ValueError("the first change must carry the configuration (ClusterChange.whole)")
        config = self._compiled.config
        changed_services = self._take_services(change.services)
        changed_slices = self._take_slices(change.endpoint_slices)

        state = self._allocation_state
        if state is None or restart_allocation:
            state = self._allocation_state = AllocationState(
                config, self._namespace_labels, load_balancer_class=self.load_balancer_class
            )
            allocation = state.allocate_all(self._services, self._previous)
            moved = self._remember(allocation, None)
        else:
            allocation = state.update(self._services, changed_services, self._previous)
            moved = self._remember(allocation, state.changed)
        self.assignments_changed = moved

        if self._context is None or restart_routes:
            self._context = node_context(config, self.node_name, self._node)
            self._routes = RouteTableState()
            todo: Iterable[ServiceKey] = self._services.keys()
        else:
            todo = changed_services | {ServiceKey(*group) for group in changed_slices} | moved
        routed = self._route(todo, allocation)
        touched = self._routes.take_touched()
        self.routes_touched = None if restart_routes or self.plan is None else frozenset(touched)

        self.plan = Plan(compiled=self._compiled, allocation=allocation, peers=self._peers, table=self._routes.table())
        self.stats = UpdateStats(
            recompiled=recompiled,
            allocated=state.decided,
            routed=routed,
            full=restart_allocation or restart_routes,
        )
        return self.plan

    # ---------------------------------------------------------------- inputs

    def _take_config(self, snapshot: ClusterSnapshot) -> tuple[bool, bool, bool]:
        """(recompiled, allocation must start over, routes must start over)."""
        if snapshot == self._config_snapshot:
            return False, False, False
        self._config_snapshot = snapshot
        previous = self._compiled
        compiled = compile_config(snapshot, last_good=previous.last_good if previous is not None else None)
        config_changed = previous is None or compiled.config != previous.config
        if not config_changed:  # keep the very same Config: the node context's memo stays valid
            assert previous is not None
            compiled = replace(compiled, config=previous.config)
        self._compiled = compiled
        labels = {namespace.name: namespace.metadata.labels for namespace in snapshot.namespaces}
        labels_changed = labels != self._namespace_labels
        self._namespace_labels = labels
        node = {node.name: node for node in snapshot.nodes}.get(self.node_name)
        node_changed = node != self._node
        self._node = node
        if config_changed or node_changed or previous is None:
            self._peers = node_peers(compiled.config, node)
        return True, config_changed or labels_changed, config_changed or node_changed

    def _take_services(self, services: Mapping[ServiceKey, tuple[Service, ...]]) -> set[ServiceKey]:
        changed: set[ServiceKey] = set()
        for key, definitions in services.items():
            if definitions:
                if self._definitions.get(key) == definitions:
                    continue
                self._definitions[key] = definitions
                self._services[key] = definitions[-1]
            elif key in self._definitions:
                del self._definitions[key]
                del self._services[key]
            else:
                continue
            changed.add(key)
        return changed

    def _take_slices(self, groups: Mapping[SliceGroup, tuple[EndpointSlice, ...]]) -> set[SliceGroup]:
        changed: set[SliceGroup] = set()
        for group, found in groups.items():
            if self._slices.get(group, ()) == found:
                continue
            if found:
                self._slices[group] = found
            else:
                del self._slices[group]
            changed.add(group)
        return changed

    def _previous(self, key: ServiceKey) -> tuple[IPAddress, ...] | None:
        """`existing` as `metallb-bgp run` builds it: status IPs, overridden by the last assignments."""
        if key in self._remembered:
            return self._remembered[key]
        return status_ips(self._definitions.get(key, ()))

    def _remember(self, allocation: Allocation, changed: Iterable[ServiceKey] | None) -> frozenset[ServiceKey]:
        """Make the allocation the next `existing`; returns the keys whose IPs changed. `changed` is
        where to look (None: everywhere, after the first or a fresh allocation)."""
        before = self._remembered
        if changed is None:
            self._remembered = allocation.service_ips()
            keys: Iterable[ServiceKey] = before.keys() | self._remembered.keys()
            return frozenset(key for key in keys if before.get(key) != self._remembered.get(key))
        moved = set()
        for key in changed:
            assignment = allocation.assignments.get(key)
            ips = assignment.ips if assignment is not None else None
            if before.get(key) == ips:
                continue
            moved.add(key)
            if ips is None:
                del before[key]
            else:
                before[key] = ips
        return frozenset(moved)

    # ---------------------------------------------------------------- routes

    def _route(self, keys: Iterable[ServiceKey], allocation: Allocation) -> int:
        context, routes = self._context, self._routes
        assert context is not None
        assignments = allocation.assignments
        count = 0
        for key in keys:
            count += 1
            service = self._services.get(key)
            assignment = assignments.get(key)
            ips = assignment.ips if assignment is not None else ()
            if service is None or not is_ours(service, assigned=bool(ips), load_balancer_class=self.load_balancer_class):
                routes.set(key, None)
                continue
            slices = self._slices.get((key.namespace, key.name), ())
            routes.set(key, service_routes(context, service, ips, slices))
        return count


__all__ = ["ClusterChange", "IncrementalPlanner", "UpdateStats", "config_part", "slice_group", "status_ips"]
