"""The speaker's pure half: this node's peers and routes for the IPs the controller wrote in Service status.

`speaker_plan` is the reference (~200 ms at 10,000 services); `SpeakerPlanner` keeps the same answer
up to date at the cost of what changed, and a property test holds it to `speaker_plan`.

No I/O: `daemons.speaker` runs it and hands the table to the ExaBGP engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from metallb_bgp.api.core import EndpointSlice, Node, Service
from metallb_bgp.core.change import ClusterChange
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.config.result import CompileResult, LastGood
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.ownership import is_ours
from metallb_bgp.core.plan.tracking import ConfigTracker, ServiceIndex
from metallb_bgp.core.routes.desired import desired_routes
from metallb_bgp.core.routes.incremental import IncrementalRouteTable
from metallb_bgp.core.routes.node import NodeContext, node_context, node_peers
from metallb_bgp.core.routes.service import service_routes
from metallb_bgp.core.routes.table import RouteKey, RouteTable
from metallb_bgp.core.snapshot import ClusterSnapshot, status_assignments
from metallb_bgp.core.writes import EventSpec, ObjectRef


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

    A full `speaker_plan` at 10,000 services costs ~200 ms, on every watch event. Fed `ClusterChange`s
    (from `SnapshotChanges` over the Kubernetes source's snapshots), only the services a change names
    are routed again (`IncrementalRouteTable`). A new Config or this node's Node recomputes the whole plan,
    as `speaker_plan` does; other configuration changes (the controller's pool status counters, a
    Secret) recompile and keep the routes. `routes_touched` names the (peer, prefix) keys the last
    update may have changed (None after a full recompute), for `ExaBGPEngine.apply(..., touched=...)`.
    """

    def __init__(self, *, node_name: str, load_balancer_class: str | None = None) -> None:
        self.node_name = node_name
        self.load_balancer_class = load_balancer_class
        self.plan: SpeakerPlan | None = None
        self.routes_touched: frozenset[RouteKey] | None = None
        self._config = ConfigTracker(node_name=node_name)
        self._index = ServiceIndex()
        self._context: NodeContext | None = None
        self._routes = IncrementalRouteTable()
        self._peers: tuple[Peer, ...] = ()
        self._announced: set[ServiceKey] = set()  # services with at least one route: announced_services(table)
        self.newly_announced: set[ServiceKey] = set()  # announced after the last update and not before it

    @property
    def services(self) -> Mapping[ServiceKey, Service]:
        """The services of the last update, by key."""
        return self._index.services

    @property
    def node(self) -> Node | None:
        """This node's Node object as of the last update."""
        return self._config.node

    @property
    def announced(self) -> AbstractSet[ServiceKey]:
        """`announced_services(plan.table)`, kept up to date instead of walking the table."""
        return self._announced

    def update(self, change: ClusterChange) -> SpeakerPlan:
        """The plan after `change` (the first one must be whole): equal to `speaker_plan` on the cluster."""
        taken = self._config.take(change.config)
        compiled = self._config.compiled
        assert compiled is not None
        changed_services, changed_groups = self._index.take(change)
        full = self.plan is None or taken.config_changed or taken.node_changed
        if full:
            self._context = node_context(compiled.config, self.node_name, self._config.node)
            self._routes = IncrementalRouteTable()
            self._peers = node_peers(compiled.config, self._config.node)
        todo = changed_services | {ServiceKey(*group) for group in changed_groups}
        services = self._index.services
        if full:
            todo |= services.keys()
            self._announced &= services.keys()
        self.newly_announced = set()
        for key in todo:
            self._route(key, services.get(key), self._index.slices_of(key))
        touched = self._routes.take_touched()
        self.routes_touched = None if full else frozenset(touched)
        self.plan = SpeakerPlan(compiled=compiled, peers=self._peers, table=self._routes.table())
        return self.plan

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


