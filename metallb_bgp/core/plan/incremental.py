"""The plan kept up to date one change at a time: `make_plan`'s answer at the cost of what changed.

`make_plan` recomputes everything from a whole `ClusterSnapshot`: compile, allocate every service, and
decide every service's routes. That is the reference, and right for `metallb-bgp plan`; but for a
daemon holding 10,000 services it makes a one-service change cost hundreds of milliseconds. The
`IncrementalPlanner` takes `ClusterChange`s instead (what a source saw change: services by key,
EndpointSlices by the service they belong to, and the rest of the cluster whenever any of it changed)
and keeps what each stage computed:

- the compiled Config: recompiled when configuration objects (or load errors) change, and only if the
  new Config differs does anything downstream start over;
- the allocation (`allocator.IncrementalAllocation`): re-decides the changed services and the unsettled ones;
- the route table (`routes.IncrementalRouteTable`): recomputes the contributions of services whose Service,
  EndpointSlices or assignment changed, with the node's context kept until the Config or Node changes.

Every `update` returns exactly the Plan `make_plan` would return for the same cluster, with `existing`
being what `metallb-bgp run` passes: the IPs in the services' status, overridden by the previous
plan's assignments (initially the state file). A property test holds the two to that after random
sequences of changes. The planner is not thread-safe and does no I/O: one reconcile loop owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from metallb_bgp.api.core import Node, Service
from metallb_bgp.core.allocator.incremental import IncrementalAllocation
from metallb_bgp.core.allocator.results import Allocation
from metallb_bgp.core.change import ClusterChange
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.ownership import is_ours
from metallb_bgp.core.plan.pipeline import Plan
from metallb_bgp.core.plan.tracking import ConfigTracker, ServiceIndex
from metallb_bgp.core.routes.incremental import IncrementalRouteTable
from metallb_bgp.core.routes.node import NodeContext, node_context, node_peers
from metallb_bgp.core.routes.service import service_routes
from metallb_bgp.core.routes.table import RouteKey


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
        self._index = ServiceIndex()
        self._services = self._index.services  # the definition that counts (the last), by key
        self._config = ConfigTracker(node_name=node_name)
        self._peers: tuple[Peer, ...] = ()
        self._allocation_state: IncrementalAllocation | None = None
        self._context: NodeContext | None = None
        self._routes = IncrementalRouteTable()
        self.plan: Plan | None = None
        self.stats = UpdateStats()
        self.assignments_changed: frozenset[ServiceKey] = frozenset()  # by the last update
        # routes (peer, prefix) the last update may have changed; None: any (the table was rebuilt)
        self.routes_touched: frozenset[RouteKey] | None = None

    @property
    def services(self) -> Mapping[ServiceKey, Service]:
        """The LoadBalancer services as the last update saw them (the definition that counts), by key."""
        return self._services

    @property
    def node(self) -> Node | None:
        """This node's Node object, if the cluster has one."""
        return self._config.node

    @property
    def remembered(self) -> Mapping[ServiceKey, tuple[IPAddress, ...]]:
        """The assignments of the last plan: `existing` for the next one (and what a state file keeps)."""
        return self._remembered

    def update(self, change: ClusterChange) -> Plan:
        """The plan after `change` (the first one must be whole): equal to `make_plan` on the cluster
        as it now is, with `existing` = status IPs overridden by the previous plan's assignments."""
        taken = self._config.take(change.config)
        compiled = self._config.compiled
        assert compiled is not None
        restart_allocation = taken.config_changed or taken.labels_changed
        restart_routes = taken.config_changed or taken.node_changed
        if taken.config_changed or taken.node_changed:
            self._peers = node_peers(compiled.config, self._config.node)
        config = compiled.config
        changed_services, changed_slices = self._index.take(change)

        state = self._allocation_state
        if state is None or restart_allocation:
            state = self._allocation_state = IncrementalAllocation(
                config, self._config.namespace_labels, load_balancer_class=self.load_balancer_class
            )
            allocation = state.allocate_all(self._services, self._previous)
            moved = self._remember(allocation, None)
        else:
            allocation = state.update(self._services, changed_services, self._previous)
            moved = self._remember(allocation, state.changed)
        self.assignments_changed = moved

        if self._context is None or restart_routes:
            self._context = node_context(config, self.node_name, self._config.node)
            self._routes = IncrementalRouteTable()
            todo: Iterable[ServiceKey] = self._services.keys()
        else:
            todo = changed_services | {ServiceKey(*group) for group in changed_slices} | moved
        routed = self._route(todo, allocation)
        touched = self._routes.take_touched()
        self.routes_touched = None if restart_routes or self.plan is None else frozenset(touched)

        self.plan = Plan(compiled=compiled, allocation=allocation, peers=self._peers, table=self._routes.table())
        self.stats = UpdateStats(
            recompiled=taken.recompiled,
            allocated=state.decided,
            routed=routed,
            full=restart_allocation or restart_routes,
        )
        return self.plan

    def _previous(self, key: ServiceKey) -> tuple[IPAddress, ...] | None:
        """`existing` as `metallb-bgp run` builds it: status IPs, overridden by the last assignments."""
        if key in self._remembered:
            return self._remembered[key]
        return status_ips(self._index.definitions.get(key, ()))

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
            routes.set(key, service_routes(context, service, ips, self._index.slices_of(key)))
        return count


__all__ = ["IncrementalPlanner", "UpdateStats", "status_ips"]
