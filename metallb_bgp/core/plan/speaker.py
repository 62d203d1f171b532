"""The speaker's pure half: this node's peers and routes for the IPs the controller wrote in Service status.

`speaker_plan` is the reference (~200 ms at 10,000 services); `SpeakerPlanner` keeps the same answer
up to date at the cost of what changed, and a property test holds it to `speaker_plan`.

No I/O: `daemons.speaker` runs it and hands the table to the ExaBGP engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace

from metallb_bgp.api.core import EndpointSlice, Node, Service
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.config.result import CompileResult, LastGood
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.plan.incremental import config_part, slice_group
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
from metallb_bgp.core.snapshot import ClusterSnapshot, ObjectsSeen, status_assignments
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


