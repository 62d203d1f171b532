"""The whole pure pipeline in one call: snapshot -> compile -> allocate -> desired routes.

`metallb-bgp plan` prints it, `metallb-bgp run` applies it, tests assert on it. Keeping the chain in
one function means the dry run and the daemon can never disagree about what would be announced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from metallb_bgp.api.problems import ObjectError, Severity
from metallb_bgp.core.allocator.allocate import allocate
from metallb_bgp.core.allocator.results import Allocation
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.config.result import CompileResult, LastGood
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.routes.desired import desired_routes
from metallb_bgp.core.routes.node import node_peers
from metallb_bgp.core.routes.table import RouteTable
from metallb_bgp.core.snapshot import ClusterSnapshot


@dataclass(frozen=True)
class Plan:
    compiled: CompileResult
    allocation: Allocation
    peers: tuple[Peer, ...]  # this node's BGP sessions
    table: RouteTable

    @property
    def problems(self) -> tuple[ObjectError, ...]:
        return tuple(sorted(set(self.compiled.errors) | set(self.allocation.warnings)))


def make_plan(
    snapshot: ClusterSnapshot,
    *,
    node_name: str,
    existing: Mapping[ServiceKey, tuple[IPAddress, ...]] | None = None,
    load_balancer_class: str | None = None,
    last_good: LastGood | None = None,
) -> Plan:
    """`last_good`: the previous plan's `compiled.last_good`, so a breaking edit keeps the object's last
    valid version (see `compiler`); None for a one-shot plan such as `metallb-bgp plan`."""
    compiled = compile_config(snapshot, last_good=last_good)
    allocation = allocate(
        compiled.config,
        snapshot.services,
        snapshot.namespaces,
        existing=existing,
        load_balancer_class=load_balancer_class,
    )
    nodes = {node.name: node for node in snapshot.nodes}
    table = desired_routes(
        compiled.config,
        assignments={key: a.ips for key, a in allocation.assignments.items()},
        services=snapshot.services,
        endpoint_slices=snapshot.endpoint_slices,
        nodes=nodes,
        node_name=node_name,
        load_balancer_class=load_balancer_class,
    )
    peers = node_peers(compiled.config, nodes.get(node_name))
    return Plan(compiled=compiled, allocation=allocation, peers=peers, table=table)


def check(snapshot: ClusterSnapshot, *, load_balancer_class: str | None = None) -> tuple[ObjectError, ...]:
    """Every problem `metallb-bgp run` would report for `snapshot`, whatever the node: `validate`'s answer.

    The same compile and allocation as `make_plan` (so the same rules and the same words): a request
    the allocator refuses is an error here as there, and a service left without an IP for another
    reason (a full pool, a pool that does not take it) is a warning with the allocator's reason.
    """
    compiled = compile_config(snapshot)
    allocation = allocate(compiled.config, snapshot.services, snapshot.namespaces, load_balancer_class=load_balancer_class)
    problems = set(compiled.errors) | set(allocation.warnings)
    refused = {(p.namespace, p.name) for p in allocation.warnings if p.kind == "Service" and p.is_error}
    for key, reason in allocation.refusals.items():
        if (key.namespace, key.name) not in refused:
            problems.add(ObjectError("Service", key.namespace, key.name, "", f"no IP allocated: {reason}", Severity.WARNING))
    return tuple(sorted(problems))
