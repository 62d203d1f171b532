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

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Network, IPv6Network

from metallb_bgp.api.core import EndpointSlice, Node, Service
from metallb_bgp.api.selectors import LabelSelector, any_matches
from metallb_bgp.core.config.model import Advertisement, Community, Config, Peer
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress, IPNetwork
from metallb_bgp.core.persistent import SnapshotDict


@dataclass(frozen=True, order=True)
class RouteAttributes:
    """Path attributes of one announcement. next-hop is always `self` (the speaker's session address)."""

    local_pref: int | None = None
    communities: tuple[str, ...] = ()  # sorted, "65000:100"
    large_communities: tuple[str, ...] = ()  # sorted, "1:2:3"


class SkipReason(str, Enum):
    """Why this node does not announce a service (MetalLB's names where they exist)."""

    NO_IP = "noIPAllocated"
    NO_ENDPOINTS = "noEndpoints"
    NOT_SELECTED = "notSelected"  # no advertisement matches the service, its pool and this node
    NO_PEERS = "noPeers"  # advertisements match but no peer of this node is selected
    EXCLUDED_NODE = "excludedNode"  # node.kubernetes.io/exclude-from-external-load-balancers
    NETWORK_UNAVAILABLE = "networkUnavailable"
    NO_POOL = "noPool"  # the IP belongs to no configured pool


@dataclass(frozen=True)
class Skip:
    reason: SkipReason
    detail: str = ""


RouteKey = tuple[str, IPNetwork]  # (peer name, prefix)


@dataclass(frozen=True)
class RouteTable:
    routes: Mapping[RouteKey, RouteAttributes] = field(default_factory=dict)
    services: Mapping[IPNetwork, tuple[ServiceKey, ...]] = field(default_factory=dict)
    skipped: Mapping[ServiceKey, Skip] = field(default_factory=dict)
    tallies: RouteTallies | None = field(default=None, compare=False)  # `tally(self)`, when kept as it changed


@dataclass(frozen=True)
class RouteTallies:
    """Routes per peer and skipped services per reason (`SkipReason` value), for the metrics."""

    per_peer: Mapping[str, int]
    skipped: Mapping[str, int]


def tally(table: RouteTable) -> RouteTallies:
    """The table's tallies: kept by `RouteTableState` as the table changes, counted here otherwise."""
    if table.tallies is not None:
        return table.tallies
    per_peer: dict[str, int] = {}
    for peer, _prefix in table.routes:
        per_peer[peer] = per_peer.get(peer, 0) + 1
    skipped: dict[str, int] = {}
    for skip in table.skipped.values():
        skipped[skip.reason.value] = skipped.get(skip.reason.value, 0) + 1
    return RouteTallies(per_peer=per_peer, skipped=skipped)


@dataclass(frozen=True)
class RouteBatch:
    """Prefixes of one address family sharing the same peers and attributes: one bulk ExaBGP command."""

    peers: frozenset[str]
    attributes: RouteAttributes
    prefixes: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class RouteDiff:
    withdraw: tuple[RouteBatch, ...] = ()  # carry the attributes the routes were announced with
    announce: tuple[RouteBatch, ...] = ()  # new routes and attribute changes (implicit replace)

    @property
    def is_empty(self) -> bool:
        return not self.withdraw and not self.announce


def diff(old: RouteTable, new: RouteTable) -> RouteDiff:
    """The minimal change that turns `old` into `new`, grouped for bulk sending.

    An attribute change is an announcement only (BGP replaces the path); a (peer, prefix) never appears
    in both halves, so the engine never announces and withdraws one prefix to one peer in one burst.
    """
    old_routes, new_routes = old.routes, new.routes
    # a set built from a dict, and its difference with a dict, reuse the hashes the dicts stored
    withdraw = {key: old_routes[key] for key in set(old_routes).difference(new_routes)}
    known = old_routes.get
    # `is not` first: attributes objects are shared between tables, and their `!=` is a Python call
    announce = {key: attrs for key, attrs in new_routes.items() if (was := known(key)) is not attrs and was != attrs}
    return RouteDiff(withdraw=group_routes(withdraw), announce=group_routes(announce))


def group_routes(routes: Mapping[RouteKey, RouteAttributes]) -> tuple[RouteBatch, ...]:
    """Group routes into batches of one family, one peer set and one attribute set, deterministically."""
    peers_of: dict[tuple[IPNetwork, RouteAttributes], set[str]] = {}
    for (peer, prefix), attrs in routes.items():
        peers_of.setdefault((prefix, attrs), set()).add(peer)
    prefixes_of: dict[tuple[frozenset[str], RouteAttributes, int], list[IPNetwork]] = {}
    for (prefix, attrs), peers in peers_of.items():
        prefixes_of.setdefault((frozenset(peers), attrs, prefix.version), []).append(prefix)
    batches = [
        RouteBatch(peers=peers, attributes=attrs, prefixes=tuple(sorted(prefixes, key=_prefix_order)))
        for (peers, attrs, _version), prefixes in prefixes_of.items()
    ]
    return tuple(
        sorted(
            batches, key=lambda b: (sorted(b.peers), attributes_order(b.attributes), b.prefixes[0].version, b.prefixes)
        )
    )


def _prefix_order(prefix: IPNetwork) -> tuple[int, int]:
    """Networks' own order within one family, as a key: sorting 10,000 of them by `<` ran 130,000
    Python-level comparisons in a cold start's first push."""
    return int(prefix.network_address), prefix.prefixlen


def attributes_order(attrs: RouteAttributes) -> tuple[bool, int, tuple[str, ...], tuple[str, ...]]:
    """A total order on attributes (RouteAttributes' own `<` fails on local_pref None against a number)."""
    return (attrs.local_pref is not None, attrs.local_pref or 0, attrs.communities, attrs.large_communities)


def apply_diff(routes: Mapping[RouteKey, RouteAttributes], change: RouteDiff) -> dict[RouteKey, RouteAttributes]:
    """What a router holds after receiving `change` on top of `routes` (used by tests and status)."""
    result = dict(routes)
    for batch in change.withdraw:
        for peer in batch.peers:
            for prefix in batch.prefixes:
                result.pop((peer, prefix), None)
    for batch in change.announce:
        for peer in batch.peers:
            for prefix in batch.prefixes:
                result[(peer, prefix)] = batch.attributes
    return result


# --- desired routes: the node's part, computed once per call ------------------------------------------

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_BITS = {4: 32, 6: 128}


def node_labels(node: Node | None) -> Mapping[str, str]:
    """A node's labels; an unknown node has none (see the module docstring)."""
    return node.metadata.labels if node is not None else {}


def node_peers(config: Config, node: Node | None) -> tuple[Peer, ...]:
    """The BGP sessions this node opens: peers whose nodeSelectors match it (none = every node), by name."""
    labels = node_labels(node)
    return tuple(
        sorted((p for p in config.peers.values() if any_matches(p.node_selectors, labels)), key=lambda p: p.name)
    )


def node_exclusion(node: Node | None) -> Skip | None:
    """Why this node announces nothing at all, if it does not."""
    if node is None:
        return None
    if EXCLUDE_LABEL in node.metadata.labels:
        return Skip(SkipReason.EXCLUDED_NODE, f"node {node.name} has label {EXCLUDE_LABEL}")
    if node.condition("NetworkUnavailable") == "True":
        return Skip(SkipReason.NETWORK_UNAVAILABLE, f"node {node.name} has condition NetworkUnavailable=True")
    return None


class PoolIndex:
    """Finds an IP's pool in a few dict look-ups instead of a scan of every pool's CIDRs.

    One table per (family, prefix length) keyed by the network's leading bits; the most specific CIDR
    wins, and for identical CIDRs the first pool in the Config (pools never overlap once compiled).
    """

    __slots__ = ("_tables",)

    def __init__(self, config: Config) -> None:
        tables: dict[tuple[int, int], dict[int, str]] = {}
        for pool in config.pools.values():
            for cidr in pool.cidrs:
                shift = _BITS[cidr.version] - cidr.prefixlen
                table = tables.setdefault((cidr.version, cidr.prefixlen), {})
                table.setdefault(int(cidr.network_address) >> shift, pool.name)
        ordered = sorted(tables.items(), key=lambda kv: -kv[0][1])
        self._tables: dict[int, tuple[tuple[int, dict[int, str]], ...]] = {
            version: tuple((_BITS[version] - length, table) for (v, length), table in ordered if v == version)
            for version in (4, 6)
        }

    def pool_of(self, ip: IPAddress) -> str | None:
        value = int(ip)
        for shift, table in self._tables[ip.version]:
            name = table.get(value >> shift)
            if name is not None:
                return name
        return None


@dataclass(frozen=True)
class NodeAdvertisement:
    """One advertisement as this node applies it: its peers on this node and its attributes, resolved."""

    index: int  # position in Config.advertisements
    name: str
    peers: tuple[str, ...]  # peers of this node it goes to, sorted; may be empty
    attributes: RouteAttributes
    aggregation_length: int  # clamped to 0..32
    aggregation_length_v6: int  # clamped to 0..128
    service_selectors: tuple[LabelSelector, ...]

    def length_for(self, version: int) -> int:
        return self.aggregation_length if version == 4 else self.aggregation_length_v6

    def selects(self, service_labels: Mapping[str, str]) -> bool:
        return not self.service_selectors or any_matches(self.service_selectors, service_labels)


# What one IP of a family turns into under a set of advertisements: for each prefix length, the peers
# and their (already merged) attributes. Shared by every service that has the same advertisements.
RoutePlan = tuple[tuple[int, tuple[tuple[str, RouteAttributes], ...]], ...]


@dataclass(frozen=True)
class NodeContext:
    """Everything about this node that every service's decision needs; recompute on Config/Node change.

    `ip_plan` memoizes, per (pool, family, advertisements selected), the work that would otherwise be
    repeated for each of thousands of services; the memo never changes an answer, only its cost.
    """

    node_name: str
    peers: tuple[Peer, ...]
    exclusion: Skip | None
    pools: PoolIndex
    advertised_pools: frozenset[str]  # pools some advertisement covers, on any node
    advertisements: Mapping[str, tuple[NodeAdvertisement, ...]]  # pool -> advertisements selecting this node
    selective_pools: frozenset[str]  # pools with an advertisement here that has serviceSelectors
    no_local_endpoint: ServiceRoutes  # the answer for an externalTrafficPolicy Local service without one here
    _memo: dict[tuple[object, ...], RoutePlan | Skip] = field(default_factory=dict, compare=False, repr=False)

    def ip_plan(self, pool: str, version: int, service_labels: Mapping[str, str]) -> RoutePlan | Skip:
        """How an IP of `pool` and family `version` is announced for a service with these labels, or why not."""
        if pool in self.selective_pools:
            selected = tuple(adv for adv in self.advertisements[pool] if adv.selects(service_labels))
            key: tuple[object, ...] = (pool, version, tuple(adv.index for adv in selected))
        else:
            selected = self.advertisements.get(pool, ())
            key = (pool, version)
        result = self._memo.get(key)
        if result is None:
            result = self._memo[key] = self._ip_plan(pool, version, selected)
        return result

    def _ip_plan(self, pool: str, version: int, selected: tuple[NodeAdvertisement, ...]) -> RoutePlan | Skip:
        node = self.node_name
        if not self.advertisements.get(pool):
            if pool not in self.advertised_pools:
                return Skip(SkipReason.NOT_SELECTED, f"no BGPAdvertisement covers pool {pool}")
            return Skip(SkipReason.NOT_SELECTED, f"no BGPAdvertisement for pool {pool} selects node {node}")
        if not selected:
            return Skip(
                SkipReason.NOT_SELECTED, f"no BGPAdvertisement for pool {pool} on node {node} selects the service"
            )
        if not self.peers:
            return Skip(SkipReason.NO_PEERS, f"node {node} has no BGP peers")
        plan = _route_plan(version, selected)
        if not plan:
            names = ", ".join(sorted({adv.name for adv in selected}))
            return Skip(SkipReason.NO_PEERS, f"BGPAdvertisement {names} for pool {pool} names no peer of node {node}")
        return plan


def _route_plan(version: int, advertisements: Iterable[NodeAdvertisement]) -> RoutePlan:
    merged: dict[int, dict[str, RouteAttributes]] = {}
    for adv in advertisements:
        targets = merged.setdefault(adv.length_for(version), {})
        for peer in adv.peers:
            known = targets.get(peer)
            targets[peer] = adv.attributes if known is None else merge_attributes(known, adv.attributes)
    return tuple((length, tuple(sorted(targets.items()))) for length, targets in sorted(merged.items()) if targets)


def node_context(config: Config, node_name: str, node: Node | None) -> NodeContext:
    labels = node_labels(node)
    peers = node_peers(config, node)
    peer_names = frozenset(p.name for p in peers)
    by_pool: dict[str, list[NodeAdvertisement]] = {}
    for index, adv in enumerate(config.advertisements):
        if not any_matches(adv.node_selectors, labels):
            continue
        resolved = _resolve_advertisement(index, adv, peer_names)
        for pool in sorted(adv.pools):
            by_pool.setdefault(pool, []).append(resolved)
    return NodeContext(
        node_name=node_name,
        peers=peers,
        exclusion=node_exclusion(node),
        pools=PoolIndex(config),
        advertised_pools=frozenset(pool for adv in config.advertisements for pool in adv.pools),
        advertisements={pool: tuple(advs) for pool, advs in by_pool.items()},
        selective_pools=frozenset(pool for pool, advs in by_pool.items() if any(a.service_selectors for a in advs)),
        no_local_endpoint=ServiceRoutes(
            skip=Skip(
                SkipReason.NO_ENDPOINTS, f"externalTrafficPolicy Local and no serving endpoint on node {node_name}"
            )
        ),
    )


def _resolve_advertisement(index: int, adv: Advertisement, node_peer_names: frozenset[str]) -> NodeAdvertisement:
    peers = node_peer_names if not adv.peers else node_peer_names & adv.peers
    return NodeAdvertisement(
        index=index,
        name=adv.name,
        peers=tuple(sorted(peers)),
        attributes=attributes_of(adv.local_pref, adv.communities),
        aggregation_length=min(max(adv.aggregation_length, 0), 32),
        aggregation_length_v6=min(max(adv.aggregation_length_v6, 0), 128),
        service_selectors=adv.service_selectors,
    )


def attributes_of(local_pref: int | None, communities: Iterable[Community]) -> RouteAttributes:
    communities = tuple(communities)
    return RouteAttributes(
        local_pref=local_pref,
        communities=_sorted_communities(c.value for c in communities if not c.large),
        large_communities=_sorted_communities(c.value for c in communities if c.large),
    )


def merge_attributes(a: RouteAttributes, b: RouteAttributes) -> RouteAttributes:
    """Two advertisements of one (peer, prefix): communities unioned, the highest local-pref kept."""
    if a == b:
        return a
    prefs = [p for p in (a.local_pref, b.local_pref) if p is not None]
    return RouteAttributes(
        local_pref=max(prefs) if prefs else None,
        communities=_sorted_communities({*a.communities, *b.communities}),
        large_communities=_sorted_communities({*a.large_communities, *b.large_communities}),
    )


def _sorted_communities(values: Iterable[str]) -> tuple[str, ...]:
    """Unique, in numeric order ("65000:20" before "65000:100"); text that is not numeric sorts last."""

    def key(value: str) -> tuple[int, tuple[int, ...], str]:
        parts = value.split(":")
        if all(p.isdigit() for p in parts):
            return (0, tuple(int(p) for p in parts), value)
        return (1, (), value)

    return tuple(sorted(set(values), key=key))


# --- desired routes: one service ------------------------------------------------------------------------


# One prefix and the peers (with attributes) it goes to.
Announcement = tuple[IPNetwork, tuple[tuple[str, RouteAttributes], ...]]


@dataclass(frozen=True)
class ServiceRoutes:
    """One service's contribution to a node's table: what it announces, or why it announces nothing.

    Kept as (prefix, peers) pairs rather than a (peer, prefix) dict: building and merging it then costs
    no hashing of prefixes per service, which is most of the work for thousands of services.
    """

    announcements: tuple[Announcement, ...] = ()
    skip: Skip | None = None

    @property
    def prefixes(self) -> tuple[IPNetwork, ...]:
        return tuple(dict.fromkeys(prefix for prefix, _targets in self.announcements))

    @property
    def routes(self) -> Mapping[RouteKey, RouteAttributes]:
        return combine([(ServiceKey("", ""), self)]).routes


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
    planned: list[tuple[IPAddress, RoutePlan]] = []
    first_skip: Skip | None = None
    for ip, pool in pools:
        plan = context.ip_plan(pool, ip.version, service.metadata.labels)
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
        super().__init__(address)  # type: ignore[arg-type]
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


class _HashedIPv6Network(IPv6Network):
    """`_HashedIPv4Network` for IPv6."""

    version = 6

    def __init__(self, address: object) -> None:
        super().__init__(address)  # type: ignore[arg-type]
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


_HashedIPv4Network.__name__ = "IPv4Network"  # repr() as the plain class: `IPv4Network('10.0.0.1/32')`
_HashedIPv6Network.__name__ = "IPv6Network"


# --- desired routes: the whole node ---------------------------------------------------------------------


def combine(contributions: Iterable[tuple[ServiceKey, ServiceRoutes]]) -> RouteTable:
    """Merge per-service contributions (in the order given) into one node's table."""
    routes: dict[RouteKey, RouteAttributes] = {}
    services: dict[IPNetwork, list[ServiceKey]] = {}
    skipped: dict[ServiceKey, Skip] = {}
    for key, contribution in contributions:
        if contribution.skip is not None:
            skipped[key] = contribution.skip
            continue
        for prefix, targets in contribution.announcements:
            keys = services.setdefault(prefix, [])
            if not keys:  # a new prefix: none of its routes exist yet
                keys.append(key)
                for peer, attrs in targets:
                    routes[(peer, prefix)] = attrs
                continue
            if keys[-1] is not key:
                keys.append(key)
            for peer, attrs in targets:
                known = routes.setdefault((peer, prefix), attrs)
                if known is not attrs:
                    routes[(peer, prefix)] = merge_attributes(known, attrs)
    return RouteTable(
        routes=routes,
        services={
            prefix: (keys[0],) if len(keys) == 1 else tuple(sorted(set(keys), key=_key_order))
            for prefix, keys in services.items()
        },
        skipped=skipped,
    )


def _key_order(key: ServiceKey) -> tuple[str, str]:
    return (key.namespace, key.name)


def index_endpoint_slices(slices: Iterable[EndpointSlice]) -> dict[tuple[str, str], list[EndpointSlice]]:
    """EndpointSlices by (namespace, service name): label kubernetes.io/service-name, same namespace."""
    index: dict[tuple[str, str], list[EndpointSlice]] = {}
    for endpoint_slice in slices:
        metadata = endpoint_slice.metadata
        name = metadata.labels.get(SERVICE_NAME_LABEL)
        if name:
            index.setdefault((metadata.namespace, name), []).append(endpoint_slice)
    return index


def is_ours(service: Service, *, assigned: bool, load_balancer_class: str | None) -> bool:
    """A LoadBalancer service with an assignment, or of our loadBalancerClass (None = no class)."""
    return service.spec.type == "LoadBalancer" and (assigned or service.spec.load_balancer_class == load_balancer_class)


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


class RouteTableState:
    """A node's table kept across calls: `set` one service's contribution, read the `table()`.

    `table()` always equals `combine()` of the current contributions (in any order: merges are unions
    and maxima), but a change costs the prefixes that service touches, not the whole table. Most
    prefixes come from one service: they are kept as that service's targets, nothing more. A prefix
    that several contributions give (aggregation, shared IPs) keeps who gives it and, per peer, how many
    contributions carry each attribute set, so one can be taken back out of the merge (a merge of
    communities cannot be undone otherwise).
    """

    def __init__(self) -> None:
        self._contributions: dict[ServiceKey, ServiceRoutes] = {}
        self._single: dict[IPNetwork, tuple[ServiceKey, tuple[tuple[str, RouteAttributes], ...]]] = {}
        self._shared: dict[IPNetwork, _SharedPrefix] = {}
        # tables hand out O(1) snapshots (see SnapshotDict): a change costs what it touches
        self._routes: SnapshotDict[RouteKey, RouteAttributes] = SnapshotDict()
        self._services: SnapshotDict[IPNetwork, tuple[ServiceKey, ...]] = SnapshotDict()
        self._skipped: SnapshotDict[ServiceKey, Skip] = SnapshotDict()
        self._touched: set[RouteKey] = set()
        # `tally(table())`, kept as routes and skips come and go: the metrics walked 10,000 routes a pass
        self._per_peer: dict[str, int] = {}
        self._skip_reasons: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._contributions)

    def take_touched(self) -> set[RouteKey]:
        """The routes (peer, prefix) set or removed since the last call: a superset of those whose value
        changed, for a consumer that wants to diff only those instead of the whole table."""
        touched, self._touched = self._touched, set()
        return touched

    def set(self, key: ServiceKey, contribution: ServiceRoutes | None) -> bool:
        """Make `contribution` the service's (None: it has none); returns whether anything changed."""
        old = self._contributions.get(key)
        if old == contribution:
            return False
        dirty: set[IPNetwork] = set()
        if old is not None:
            del self._contributions[key]
            self._remove(key, old, dirty)
        if contribution is not None:
            self._contributions[key] = contribution
            self._add(key, contribution, dirty)
        for prefix in dirty:
            self._refresh(prefix)
        return True

    def table(self) -> RouteTable:
        """A snapshot: later `set`s do not change it (read-only Mappings, O(1) to take)."""
        tallies = RouteTallies(per_peer={peer: n for peer, n in self._per_peer.items() if n},
                               skipped={reason: n for reason, n in self._skip_reasons.items() if n})  # fmt: skip
        return RouteTable(
            routes=self._routes.snapshot(), services=self._services.snapshot(), skipped=self._skipped.snapshot(),
            tallies=tallies,
        )

    def _put_route(self, key: RouteKey, attrs: RouteAttributes) -> None:
        if key not in self._routes:
            self._per_peer[key[0]] = self._per_peer.get(key[0], 0) + 1
        self._routes[key] = attrs
        self._touched.add(key)

    def _drop_route(self, key: RouteKey) -> None:
        del self._routes[key]
        self._per_peer[key[0]] -= 1
        self._touched.add(key)

    def _count_skip(self, skip: Skip, delta: int) -> None:
        self._skip_reasons[skip.reason.value] = self._skip_reasons.get(skip.reason.value, 0) + delta

    def _add(self, key: ServiceKey, contribution: ServiceRoutes, dirty: set[IPNetwork]) -> None:
        if contribution.skip is not None:
            self._skipped[key] = contribution.skip
            self._count_skip(contribution.skip, 1)
            return
        for prefix, targets in contribution.announcements:
            shared = self._shared.get(prefix)
            if shared is None:
                single = self._single.pop(prefix, None)
                if single is None:  # a new prefix: this service's routes, as they are
                    self._single[prefix] = (key, targets)
                    self._services[prefix] = (key,)
                    for peer, attrs in targets:
                        self._put_route((peer, prefix), attrs)
                    continue
                shared = self._shared[prefix] = _SharedPrefix(tuple(peer for peer, _attrs in single[1]))
                shared.count(*single, 1)
            shared.count(key, targets, 1)
            dirty.add(prefix)

    def _remove(self, key: ServiceKey, contribution: ServiceRoutes, dirty: set[IPNetwork]) -> None:
        if contribution.skip is not None:
            del self._skipped[key]
            self._count_skip(contribution.skip, -1)
            return
        for prefix, targets in contribution.announcements:
            if prefix in self._single:
                del self._single[prefix]
                del self._services[prefix]
                for peer, _attrs in targets:
                    self._drop_route((peer, prefix))
                continue
            self._shared[prefix].count(key, targets, -1)
            dirty.add(prefix)

    def _refresh(self, prefix: IPNetwork) -> None:
        """Recompute a shared prefix's routes and services from its counts."""
        shared = self._shared[prefix]
        merged: dict[str, RouteAttributes] = {}
        for peer, counts in shared.attributes.items():
            for attrs in counts:
                known = merged.get(peer)
                merged[peer] = attrs if known is None else merge_attributes(known, attrs)
        for peer in shared.peers:
            if peer not in merged:
                self._drop_route((peer, prefix))
        for peer, attrs in merged.items():
            self._put_route((peer, prefix), attrs)
        shared.peers = tuple(merged)
        if not shared.ordered:
            del self._shared[prefix]
            del self._services[prefix]
            return
        self._services[prefix] = tuple(shared.ordered)


class _SharedPrefix:
    """Who gives one prefix (in key order) and, per peer, how many contributions carry which attributes."""

    __slots__ = ("attributes", "contributions", "ordered", "peers")

    def __init__(self, peers: tuple[str, ...]) -> None:
        self.contributions: dict[ServiceKey, int] = {}
        self.ordered: list[ServiceKey] = []
        self.attributes: dict[str, dict[RouteAttributes, int]] = {}
        self.peers = peers  # peers the prefix has a route to in the table now

    def count(self, key: ServiceKey, targets: tuple[tuple[str, RouteAttributes], ...], sign: int) -> None:
        left = self.contributions.get(key, 0) + sign
        if left:
            self.contributions[key] = left
        else:
            del self.contributions[key]
        if sign > 0 and left == 1:
            bisect.insort(self.ordered, key, key=_key_order)
        elif sign < 0 and left == 0:
            del self.ordered[bisect.bisect_left(self.ordered, _key_order(key), key=_key_order)]
        for peer, attrs in targets:
            counts = self.attributes.setdefault(peer, {})
            remaining = counts.get(attrs, 0) + sign
            if remaining:
                counts[attrs] = remaining
            else:
                del counts[attrs]
                if not counts:
                    del self.attributes[peer]
