"""One service's contribution to the table: its prefixes and, per peer, the attributes, or why none.

`prefix_of` and the hashed network classes are here because building host routes is the hot path of a
cold start (see docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Network, IPv6Network

from metallb_bgp.api.core import EndpointSlice, Service
from metallb_bgp.core.net import IPAddress, IPNetwork
from metallb_bgp.core.routes.node import IpRouteTemplate, NodeContext
from metallb_bgp.core.routes.table import ServiceRoutes, Skip, SkipReason


def has_serving_endpoint(slices: Iterable[EndpointSlice], *, on_node: str | None = None) -> bool:
    """MetalLB's epslices.ServiceHasHealthyEndpoints: any serving endpoint (on `on_node`, if given)."""
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.endpoints or ():
            if on_node is not None and endpoint.node_name != on_node:
                continue
            if endpoint.is_serving:
                return True
    return False


def service_routes(
    context: NodeContext,
    service: Service,
    ips: Sequence[IPAddress],
    slices: Sequence[EndpointSlice],
) -> ServiceRoutes:
    """What this node announces for one LoadBalancer service with these IPs and EndpointSlices."""
    if not ips:
        return ServiceRoutes(skip=Skip(SkipReason.NO_IP, "no IP assigned"))
    ordered = ips if len(ips) == 1 else sorted(set(ips), key=lambda ip: (ip.version, int(ip)))
    pools: list[tuple[IPAddress, str]] = []
    for ip in ordered:
        pool = context.pools.pool_of(ip)
        if pool is None:
            return ServiceRoutes(skip=Skip(SkipReason.NO_POOL, f"{ip} is in no IPAddressPool"))
        pools.append((ip, pool))
    if context.exclusion is not None:
        return ServiceRoutes(skip=context.exclusion)
    planned: list[tuple[IPAddress, IpRouteTemplate]] = []
    first_skip: Skip | None = None
    for ip, pool in pools:
        plan = context.ip_template(pool, ip.version, service.metadata.labels)
        if isinstance(plan, Skip):
            first_skip = first_skip or plan
        else:
            planned.append((ip, plan))
    if not planned:
        return ServiceRoutes(skip=first_skip)
    if service.spec.external_traffic_policy == "Local":
        if not has_serving_endpoint(slices, on_node=context.node_name):
            return context.no_local_endpoint
    elif not has_serving_endpoint(slices):
        return NO_SERVING_ENDPOINT
    return ServiceRoutes(
        announcements=tuple([(prefix_of(ip, length), targets) for ip, plan in planned for length, targets in plan])
    )


NO_SERVING_ENDPOINT = ServiceRoutes(skip=Skip(SkipReason.NO_ENDPOINTS, "no serving endpoint in the cluster"))


def prefix_of(ip: IPAddress, length: int) -> IPNetwork:
    """The prefix of `length` bits announcing `ip` (the host route at full length); same as
    `net.covering_prefix`. It runs once per service IP per call, and building an ipaddress network
    costs more than the rest of a service's decision, so networks are built from integers and reused
    across calls (a bounded cache: the same IPs come back on every reconcile; a dict, as an LRU's
    bookkeeping would double its memory)."""
    version = ip.version
    host_bits = (32 if version == 4 else 128) - length
    key = (version, int(ip) >> host_bits << host_bits, length)
    network = _NETWORKS.get(key)
    if network is None:
        if len(_NETWORKS) >= _NETWORKS_MAX:
            _NETWORKS.clear()  # a bound, not an LRU: the same few thousand come back on every reconcile
        network = _NETWORKS[key] = (_HashedIPv4Network if version == 4 else _HashedIPv6Network)(key[1:])
    return network


_NETWORKS: dict[tuple[int, int, int], IPNetwork] = {}
_NETWORKS_MAX = 1 << 18


class _HashedIPv4Network(IPv4Network):
    """An IPv4Network that computes its hash once.

    Every route is a dict key `(peer, prefix)`, hashed again by every diff and every sync pass, and
    `ipaddress` recomputes a network's hash in Python each time: with 10,000 routes that was most of a
    one-route change. Equal to, hashing like, and printing like a plain IPv4Network.
    """

    version = 4  # a class attribute: read per route by the engine, a property call otherwise

    def __init__(self, address: object) -> None:
        super().__init__(address)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class _HashedIPv6Network(IPv6Network):
    """`_HashedIPv4Network` for IPv6."""

    version = 6

    def __init__(self, address: object) -> None:
        super().__init__(address)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


_HashedIPv4Network.__name__ = "IPv4Network"  # repr() as the plain class: `IPv4Network('10.0.0.1/32')`
_HashedIPv6Network.__name__ = "IPv6Network"
