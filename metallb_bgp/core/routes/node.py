"""The node's part of desired routes, computed once per Config and Node: its peers, whether it is
excluded, the advertisements that apply to it by pool, and a pool index for looking IPs up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from metallb_bgp.api.core import Node
from metallb_bgp.api.selectors import LabelSelector, any_matches
from metallb_bgp.core.config.model import Advertisement, Config, Peer
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.routes.table import RouteAttributes, ServiceRoutes, Skip, SkipReason, attributes_of, merge_attributes

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
IpRouteTemplate = tuple[tuple[int, tuple[tuple[str, RouteAttributes], ...]], ...]


@dataclass(frozen=True)
class NodeContext:
    """Everything about this node that every service's decision needs; recompute on Config/Node change.

    `ip_template` memoizes, per (pool, family, advertisements selected), the work that would otherwise be
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
    _memo: dict[tuple[object, ...], IpRouteTemplate | Skip] = field(default_factory=dict, compare=False, repr=False)

    def ip_template(self, pool: str, version: int, service_labels: Mapping[str, str]) -> IpRouteTemplate | Skip:
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

    def _ip_plan(self, pool: str, version: int, selected: tuple[NodeAdvertisement, ...]) -> IpRouteTemplate | Skip:
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
        plan = _route_template(version, selected)
        if not plan:
            names = ", ".join(sorted({adv.name for adv in selected}))
            return Skip(SkipReason.NO_PEERS, f"BGPAdvertisement {names} for pool {pool} names no peer of node {node}")
        return plan


def _route_template(version: int, advertisements: Iterable[NodeAdvertisement]) -> IpRouteTemplate:
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






