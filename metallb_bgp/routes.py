"""The desired-routes table for one node, and the minimal change between two tables.

(Interface fixed first so the ExaBGP engine can be built against it; the functions are filled in by
the core work.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from metallb_bgp.net import IPNetwork
from metallb_bgp.objects import ServiceKey


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
    withdraw = {key: attrs for key, attrs in old.routes.items() if key not in new.routes}
    announce = {key: attrs for key, attrs in new.routes.items() if old.routes.get(key) != attrs}
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
        RouteBatch(peers=peers, attributes=attrs, prefixes=tuple(sorted(prefixes)))
        for (peers, attrs, _version), prefixes in prefixes_of.items()
    ]
    return tuple(sorted(batches, key=lambda b: (sorted(b.peers), b.attributes, b.prefixes[0].version, b.prefixes)))


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
