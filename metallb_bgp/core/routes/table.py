"""The route table (`RouteTable`: (peer, prefix) -> attributes, plus skip reasons) and the minimal change
between two tables (`diff`, grouped into announce/withdraw batches): what the ExaBGP engine reads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from metallb_bgp.core.config.model import Community
from metallb_bgp.core.keys import ServiceKey, key_order
from metallb_bgp.core.net import IPNetwork


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
    """The table's tallies: kept by `IncrementalRouteTable` as the table changes, counted here otherwise."""
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
            prefix: (keys[0],) if len(keys) == 1 else tuple(sorted(set(keys), key=key_order))
            for prefix, keys in services.items()
        },
        skipped=skipped,
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
