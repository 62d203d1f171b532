"""IPAddressPool status counters: `pool_usage` from an allocation (the reference) and `PoolTally`, kept as
assignments move."""

from __future__ import annotations

from metallb_bgp.core.allocator.intent import INT64_MAX, confuses_buggy_firmware
from metallb_bgp.core.allocator.results import Allocation, Assignment, PoolUsage
from metallb_bgp.core.config.model import Config, Pool
from metallb_bgp.core.net import IPAddress, IPNetwork


def _buggy_addresses(cidr: IPNetwork) -> int:
    """How many addresses of an IPv4 CIDR end in .0 or .255 (one pair per /24, or the ends of a smaller one)."""
    if cidr.version != 4:
        return 0
    if cidr.prefixlen <= 24:
        return 2 << (24 - cidr.prefixlen)  # two per /24
    ends = {int(cidr.network_address), int(cidr.broadcast_address)}
    return sum(1 for value in ends if confuses_buggy_firmware(4, value))


def _usable(pool: Pool, version: int) -> int:
    total = sum(
        cidr.num_addresses - (_buggy_addresses(cidr) if pool.avoid_buggy_ips else 0)
        for cidr in pool.cidrs
        if cidr.version == version
    )
    return min(total, INT64_MAX)


def _usage(pool: Pool, assigned_ipv4: int, assigned_ipv6: int) -> PoolUsage:
    return PoolUsage(
        assigned_ipv4=assigned_ipv4,
        assigned_ipv6=assigned_ipv6,
        available_ipv4=max(0, _usable(pool, 4) - assigned_ipv4),
        available_ipv6=max(0, _usable(pool, 6) - assigned_ipv6),
    )


def pool_usage(config: Config, allocation: Allocation) -> dict[str, PoolUsage]:
    """Per-pool counters for IPAddressPool status and metrics; a shared address counts once."""
    assigned: dict[str, set[IPAddress]] = {name: set() for name in config.pools}
    for assignment in allocation.assignments.values():
        if assignment.pool in assigned:
            assigned[assignment.pool].update(assignment.ips)
    usage = {}
    for name, pool in config.pools.items():
        v4 = sum(1 for ip in assigned[name] if ip.version == 4)
        usage[name] = _usage(pool, v4, len(assigned[name]) - v4)
    return usage


class PoolTally:
    """`pool_usage` kept across calls: moves the assignments that changed instead of walking them all.

    It counts, per pool, how many assignments hold each address (a shared address counts once), and
    how many distinct addresses of each family are held. After `add`ing every assignment of an
    Allocation (and later `remove`ing each one that went and `add`ing its replacement), `usage()` equals
    `pool_usage(config, allocation)`. Assignments to pools the Config does not have are ignored, as
    there.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._holders: dict[str, dict[IPAddress, int]] = {name: {} for name in config.pools}
        self._distinct: dict[str, dict[int, int]] = {name: {4: 0, 6: 0} for name in config.pools}

    def add(self, assignment: Assignment) -> None:
        holders = self._holders.get(assignment.pool)
        if holders is None:
            return
        for ip in assignment.ips:
            held = holders.get(ip, 0)
            holders[ip] = held + 1
            if not held:
                self._distinct[assignment.pool][ip.version] += 1

    def remove(self, assignment: Assignment) -> None:
        holders = self._holders.get(assignment.pool)
        if holders is None:
            return
        for ip in assignment.ips:
            held = holders.pop(ip)
            if held > 1:
                holders[ip] = held - 1
            else:
                self._distinct[assignment.pool][ip.version] -= 1

    def usage(self) -> dict[str, PoolUsage]:
        distinct = self._distinct
        return {name: _usage(pool, distinct[name][4], distinct[name][6]) for name, pool in self.config.pools.items()}
