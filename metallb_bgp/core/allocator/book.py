"""The address book of one allocate() call: the used addresses per CIDR, with a cursor per CIDR.

Addresses are never freed within one call, so the cursor only moves forward and a cold allocation of
N services costs O(N + used). Sharing groups let services with one sharing key share an address.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
from collections.abc import Mapping, Sequence

from metallb_bgp.core.allocator.intent import Claim
from metallb_bgp.core.config.model import Config, Pool
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress, IPNetwork


class _Range:
    """One CIDR of one pool. Every address below `cursor` is known to be taken (or avoided), except the
    `holes`: addresses freed since (only a book kept across calls, `IncrementalAllocation`, frees any)."""

    __slots__ = ("avoid_buggy", "cursor", "first", "holes", "last", "version")

    def __init__(self, cidr: IPNetwork, avoid_buggy: bool) -> None:
        self.version = cidr.version
        self.first = int(cidr.network_address)
        self.last = int(cidr.broadcast_address)
        self.cursor = self.first
        self.avoid_buggy = avoid_buggy and cidr.version == 4
        self.holes: list[int] = []  # a heap; may hold addresses taken again since (dropped lazily)

    def lowest_free(self, used: Mapping[int, object]) -> int | None:
        holes = self.holes
        while holes:
            if holes[0] not in used:
                return holes[0]
            heapq.heappop(holes)
        cursor, last, avoid = self.cursor, self.last, self.avoid_buggy
        while cursor <= last and (cursor in used or (avoid and (cursor & 0xFF) in (0, 255))):
            cursor += 1
        self.cursor = cursor  # within one call addresses are never freed: never look below again
        return cursor if cursor <= last else None

    def free(self, value: int) -> None:
        """`value` (in this range, no longer used) may be handed out again."""
        if value < self.cursor and not (self.avoid_buggy and (value & 0xFF) in (0, 255)):
            heapq.heappush(self.holes, value)

    def __contains__(self, value: int) -> bool:
        return self.first <= value <= self.last


class Use:
    """Who holds one address. The first holder fixes the sharing key and backend for the others."""

    __slots__ = ("backend", "holders", "ports", "sharing_key")

    def __init__(self, claim: Claim) -> None:
        self.sharing_key = claim.sharing_key
        self.backend = claim.backend
        self.holders: list[ServiceKey] = []
        self.ports: frozenset[tuple[str, int]] = frozenset()  # every holder's; the first holder's own set, shared


_ShareGroup = tuple[str, int, str, tuple[str, ...]]  # pool, version, sharing key, backend


class AddressBook:
    """Mutable bookkeeping private to one allocate() call (the call as a whole stays pure)."""

    def __init__(self, config: Config) -> None:
        self._pools = config.pools
        self._ranges: dict[str, dict[int, list[_Range]]] = {}
        self._owners: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}  # (first, last, pool), config order
        for pool in config.pools.values():
            by_version: dict[int, list[_Range]] = {4: [], 6: []}
            for cidr in pool.cidrs:
                cidr_range = _Range(cidr, pool.avoid_buggy_ips)
                by_version[cidr.version].append(cidr_range)
                self._owners[cidr.version].append((cidr_range.first, cidr_range.last, pool.name))
            self._ranges[pool.name] = by_version
        self._uses: dict[int, dict[int, Use]] = {4: {}, 6: {}}
        self._shareable: dict[_ShareGroup, list[tuple[int, int]]] = {}  # sorted (range index, address)

    def pools_containing(self, ips: Sequence[IPAddress]) -> list[Pool]:
        """Pools holding every one of `ips`, in config order (a compiled Config has at most one)."""
        names: dict[str, None] | None = None
        for ip in ips:
            value = int(ip)
            found = dict.fromkeys(name for first, last, name in self._owners[ip.version] if first <= value <= last)
            names = found if names is None else {name: None for name in names if name in found}
        return [self._pools[name] for name in names or ()]

    def has_family(self, pool: str, version: int) -> bool:
        return bool(self._ranges.get(pool, {}).get(version))

    def conflict(self, ip: IPAddress, claim: Claim) -> str | None:
        """Why `claim` may not use `ip` now, or None (MetalLB's checkSharing)."""
        use = self._uses[ip.version].get(int(ip))
        if use is None:
            return None
        holders = ", ".join(str(holder) for holder in use.holders[:3]) + (" and others" if len(use.holders) > 3 else "")
        if use.sharing_key is None or claim.sharing_key is None:
            return f"{ip} is in use by {holders}"
        if use.sharing_key != claim.sharing_key:
            return f"{ip} is in use by {holders} with sharing key {use.sharing_key!r}, not {claim.sharing_key!r}"
        if use.backend != claim.backend:
            return (
                f"{ip} is shared by {holders}: services sharing an IP with externalTrafficPolicy Local "
                "must all be Local and have the same selector"
            )
        overlap = sorted(use.ports & claim.ports)
        if overlap:
            return f"{ip} is in use by {holders} on {', '.join(f'{proto}/{port}' for proto, port in overlap)}"
        return None

    def candidate(self, pool: str, version: int, claim: Claim) -> IPAddress | None:
        """The lowest address of `pool` (CIDRs in the user's order) that `claim` may take: free, or shareable."""
        ranges = self._ranges.get(pool, {}).get(version, [])
        used = self._uses[version]
        best: tuple[int, int] | None = None
        for index, cidr_range in enumerate(ranges):
            free = cidr_range.lowest_free(used)
            if free is not None:
                best = (index, free)
                break
        if claim.sharing_key is not None:
            for rank in self._shareable.get((pool, version, claim.sharing_key, claim.backend), ()):
                if best is not None and rank > best:
                    break
                if not (used[rank[1]].ports & claim.ports):
                    best = rank
                    break
        if best is None:
            return None
        return ipaddress.IPv4Address(best[1]) if version == 4 else ipaddress.IPv6Address(best[1])

    def take(self, pool: str, ips: Sequence[IPAddress], claim: Claim) -> None:
        for ip in ips:
            value, table = int(ip), self._uses[ip.version]
            use = table.get(value)
            if use is None:
                use = table[value] = Use(claim)
                if claim.sharing_key is not None:
                    group = (pool, ip.version, claim.sharing_key, claim.backend)
                    bisect.insort(self._shareable.setdefault(group, []), (self._range_index(pool, ip), value))
            use.holders.append(claim.service)
            use.ports = claim.ports if not use.ports else use.ports | claim.ports

    def release(self, pool: str, ips: Sequence[IPAddress], holder: ServiceKey) -> list[Use]:
        """Undo `take` for one holder; returns the uses other holders keep (whose ports the caller
        recomputes). Only `IncrementalAllocation` calls this: one allocate() call never frees anything."""
        shared: list[Use] = []
        for ip in ips:
            value, table = int(ip), self._uses[ip.version]
            use = table.get(value)
            if use is None or holder not in use.holders:
                continue
            use.holders.remove(holder)
            if use.holders:
                shared.append(use)
                continue
            del table[value]
            if use.sharing_key is not None:
                group = self._shareable[(pool, ip.version, use.sharing_key, use.backend)]
                group.remove((self._range_index(pool, ip), value))
            for cidr_range in self._ranges.get(pool, {}).get(ip.version, []):
                if value in cidr_range:
                    cidr_range.free(value)
        return shared

    def uses_of(self, ips: Sequence[IPAddress]) -> list[Use]:
        return [use for ip in ips if (use := self._uses[ip.version].get(int(ip))) is not None]

    def _range_index(self, pool: str, ip: IPAddress) -> int:
        ranges = self._ranges.get(pool, {}).get(ip.version, [])
        value = int(ip)
        return next((i for i, cidr_range in enumerate(ranges) if value in cidr_range), len(ranges))
