"""`desired_routes`' table kept across calls (`IncrementalRouteTable`): set one service's contribution, read the
table, take the (peer, prefix) keys touched; a property test holds it to `combine`."""

from __future__ import annotations

import bisect
import builtins  # the class has a method named `set`

from metallb_bgp.core.keys import ServiceKey, key_order
from metallb_bgp.core.net import IPNetwork
from metallb_bgp.core.persistent import SnapshotDict
from metallb_bgp.core.routes.table import (
    RouteAttributes,
    RouteKey,
    RouteTable,
    RouteTallies,
    ServiceRoutes,
    Skip,
    merge_attributes,
)


class IncrementalRouteTable:
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
        dirty: builtins.set[IPNetwork] = set()
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

    def _add(self, key: ServiceKey, contribution: ServiceRoutes, dirty: builtins.set[IPNetwork]) -> None:
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

    def _remove(self, key: ServiceKey, contribution: ServiceRoutes, dirty: builtins.set[IPNetwork]) -> None:
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
            bisect.insort(self.ordered, key, key=key_order)
        elif sign < 0 and left == 0:
            del self.ordered[bisect.bisect_left(self.ordered, key_order(key), key=key_order)]
        for peer, attrs in targets:
            counts = self.attributes.setdefault(peer, {})
            remaining = counts.get(attrs, 0) + sign
            if remaining:
                counts[attrs] = remaining
            else:
                del counts[attrs]
                if not counts:
                    del self.attributes[peer]
