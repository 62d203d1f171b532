"""The desired-routes table for one node, and the minimal change between two tables.

A speaker must answer one question again and again: given the compiled Config and the cluster as it is,
which prefixes does *this* node announce to which of its BGP peers, with which attributes, and why does
it announce nothing for the others? `desired_routes` answers it as a pure function (MetalLB's BGP-mode
rules, speaker/bgp_controller.go and internal/k8s/epslices), and `diff` turns two answers into the
smallest set of announce/withdraw batches for the ExaBGP engine.

The unit of work is one service: `service_routes(context, service, ips, slices)` gives that service's
contribution (its routes or the reason it has none), and `combine` merges contributions into a table.
`desired_routes` computes the per-node part once (`node_context`: peers, exclusions, advertisements by
pool, a pool index), pre-indexes EndpointSlices by service, and composes the two; a reconciler can keep
contributions and recompute only the services that changed.

Rules, and where we knowingly differ from MetalLB:
- A node's peers are the BGPPeers whose nodeSelectors match its labels (none = every node). An unknown
  node (no Node object, as in a manifests folder without one) is treated as a node with no labels and no
  conditions, as MetalLB's speaker does before it has seen its Node.
- A node labelled `node.kubernetes.io/exclude-from-external-load-balancers` (any value), or whose
  `NetworkUnavailable` condition is "True", announces nothing; its sessions stay up.
- A service is ours when it is type LoadBalancer and either has an assignment or its loadBalancerClass
  equals ours; other services are ignored (no route, no skip reason).
- Each assigned IP is looked up in its own pool (MetalLB requires one pool for all of a service's IPs;
  our allocator never splits them, so this only matters for hand-edited state). An IP in no pool makes
  the whole service `noPool`, as in MetalLB.
- An advertisement applies when it covers the IP's pool, its nodeSelectors match this node and its
  serviceSelectors (our extension) match the service's labels; it goes to its `peers` (none = all) that
  are peers of this node.
- Endpoints come from the EndpointSlices labelled `kubernetes.io/service-name` in the service's
  namespace, whether or not the service has a selector. Cluster policy needs one serving endpoint
  anywhere; Local needs one whose nodeName is this node. Serving = `serving`, else `ready` unset or true,
  so a terminating endpoint that still serves keeps the route.
- The prefix is the host route, or with aggregation the covering prefix, announced once however many
  services fall in it; aggregation lengths out of range are clamped (compile rejects them anyway).
- When several advertisements (or services sharing a covering prefix) give one (peer, prefix), their
  communities and large communities are unioned and the highest local-pref wins (compile rejects
  conflicting local-prefs, so this is a safety net; MetalLB's native mode keeps the last one).
- Skip reasons are checked in this order: noIPAllocated, noPool, excludedNode, networkUnavailable,
  notSelected, noPeers, noEndpoints (MetalLB checks endpoints before peers; a configuration reason is the
  more stable answer to "why not here").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from metallb_bgp.api.core import EndpointSlice, Node, Service
from metallb_bgp.core.config.model import Config
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.ownership import is_ours
from metallb_bgp.core.routes.node import SERVICE_NAME_LABEL, node_context
from metallb_bgp.core.routes.service import service_routes
from metallb_bgp.core.routes.table import RouteTable, combine


def index_endpoint_slices(slices: Iterable[EndpointSlice]) -> dict[tuple[str, str], list[EndpointSlice]]:
    """EndpointSlices by (namespace, service name): label kubernetes.io/service-name, same namespace."""
    index: dict[tuple[str, str], list[EndpointSlice]] = {}
    for endpoint_slice in slices:
        metadata = endpoint_slice.metadata
        name = metadata.labels.get(SERVICE_NAME_LABEL)
        if name:
            index.setdefault((metadata.namespace, name), []).append(endpoint_slice)
    return index


def desired_routes(
    config: Config,
    *,
    assignments: Mapping[ServiceKey, Sequence[IPAddress]],
    services: Iterable[Service],
    endpoint_slices: Iterable[EndpointSlice],
    nodes: Mapping[str, Node] | Iterable[Node],
    node_name: str,
    load_balancer_class: str | None = None,
) -> RouteTable:
    """Which prefixes this node announces to which peers, and why it announces nothing for the rest.

    The result's values do not depend on the order of `services` or `endpoint_slices` (merges are
    unions and maxima, `services` tuples are sorted); only the dicts' iteration order follows the input.
    """
    node_map = nodes if isinstance(nodes, Mapping) else {n.name: n for n in nodes}
    context = node_context(config, node_name, node_map.get(node_name))
    slices = index_endpoint_slices(endpoint_slices)
    by_key: dict[tuple[str, str], Service] = {}
    for service in services:
        metadata = service.metadata
        by_key[(metadata.namespace, metadata.name)] = service
    contributions = []
    for (namespace, name), service in by_key.items():
        key = ServiceKey(namespace, name)
        ips = assignments.get(key, ())
        if not is_ours(service, assigned=bool(ips), load_balancer_class=load_balancer_class):
            continue
        contributions.append((key, service_routes(context, service, tuple(ips), slices.get((namespace, name), ()))))
    return combine(contributions)
