"""IPAddressPool rules: addresses, overlaps within a pool and between pools, serviceAllocation."""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from metallb_bgp.api.metallb import (
    IPAddressPool,
    ServiceAllocationSpec,
)
from metallb_bgp.core.config import model as cfg
from metallb_bgp.core.config.parse import parse_pool_addresses, parse_selectors
from metallb_bgp.core.config.report import Issue, Report, err, guarded, has_error, named, warn
from metallb_bgp.core.net import IPNetwork

_Entry = tuple[str, tuple[IPNetwork, ...]]  # one spec.addresses entry as written, and its CIDRs


@dataclass(frozen=True)
class PoolInfo:
    pool: cfg.Pool
    entries: tuple[_Entry, ...]  # kept for the aggregation-length check, which works per entry

    @property
    def families(self) -> frozenset[int]:
        return frozenset(cidr.version for cidr in self.pool.cidrs)


@dataclass(frozen=True, order=True)
class _Span:
    version: int
    first: int
    last: int
    owner: str = field(compare=False)
    cidr: IPNetwork = field(compare=False)


class _AddressSpace:
    """The addresses of the pools accepted so far; they never overlap, so a sorted list finds a clash."""

    def __init__(self) -> None:
        self.spans: list[_Span] = []

    def clash(self, span: _Span) -> _Span | None:
        at = bisect_left(self.spans, span)
        for neighbour in self.spans[max(at - 1, 0) : at + 1]:
            if neighbour.version == span.version and neighbour.first <= span.last and span.first <= neighbour.last:
                return neighbour
        return None

    def add(self, span: _Span) -> None:
        self.spans.insert(bisect_left(self.spans, span), span)


def _span(cidr: IPNetwork, owner: str) -> _Span:
    return _Span(cidr.version, int(cidr.network_address), int(cidr.broadcast_address), owner, cidr)


def check_pools(objects: Mapping[str, IPAddressPool], report: Report) -> dict[str, PoolInfo]:
    space = _AddressSpace()
    pools: dict[str, PoolInfo] = {}
    for name, obj in objects.items():
        info = guarded(report, obj, functools.partial(_pool, obj, space))
        if info is not None:
            pools[name] = info
            for cidr in info.pool.cidrs:
                space.add(_span(cidr, name))
    return pools


def _pool(obj: IPAddressPool, space: _AddressSpace, issues: list[Issue]) -> PoolInfo | None:
    spec = obj.spec
    if not spec.addresses:
        issues.append(err("spec.addresses", "at least one CIDR or IP range is required"))
    entries: list[_Entry] = []
    for i, text in enumerate(spec.addresses):
        try:
            cidrs, warning = parse_pool_addresses(text)
        except ValueError as exc:
            issues.append(err(f"spec.addresses[{i}]", str(exc)))
            cidrs, warning = (), ""
        if warning:
            issues.append(warn(f"spec.addresses[{i}]", warning))
        entries.append((text, cidrs))
    issues.extend(_overlaps_within(entries))
    issues.extend(_overlaps_with_other_pools(entries, space))
    allocation = _allocation(spec.service_allocation, issues)
    pool = cfg.Pool(
        name=obj.metadata.name,
        cidrs=tuple(cidr for _, cidrs in entries for cidr in cidrs),
        auto_assign=spec.auto_assign,
        avoid_buggy_ips=spec.avoid_buggy_ips,
        allocation=allocation,
        labels=dict(obj.metadata.labels),
    )
    return None if has_error(issues) else PoolInfo(pool, tuple(entries))


def _overlaps_within(entries: Sequence[_Entry]) -> list[Issue]:
    spans = sorted((_span(cidr, str(i)), i) for i, (_, cidrs) in enumerate(entries) for cidr in cidrs)
    issues: list[Issue] = []
    widest: tuple[_Span, int] | None = None
    for span, index in spans:
        if widest is not None and widest[0].version == span.version and span.first <= widest[0].last:
            earlier, later = sorted((widest[1], index))
            message = f"{entries[later][0]!r} overlaps spec.addresses[{earlier}] ({entries[earlier][0]!r})"
            issues.append(err(f"spec.addresses[{later}]", message))
        if widest is None or widest[0].version != span.version or span.last > widest[0].last:
            widest = (span, index)
    return list(dict.fromkeys(issues))


def _overlaps_with_other_pools(entries: Sequence[_Entry], space: _AddressSpace) -> list[Issue]:
    issues: list[Issue] = []
    for i, (text, cidrs) in enumerate(entries):
        for cidr in cidrs:
            other = space.clash(_span(cidr, ""))
            if other is not None:
                message = f"{text!r} overlaps {other.cidr} of IPAddressPool {other.owner}"
                issues.append(err(f"spec.addresses[{i}]", message, named("IPAddressPool", other.owner)))
                break
    return issues


def _allocation(spec: ServiceAllocationSpec | None, issues: list[Issue]) -> cfg.ServiceAllocation | None:
    if spec is None:
        return None
    path = "spec.serviceAllocation"
    for i, namespace in enumerate(spec.namespaces):
        if namespace in spec.namespaces[:i]:
            issues.append(err(f"{path}.namespaces[{i}]", f"duplicate namespace {namespace!r}"))
    return cfg.ServiceAllocation(
        priority=spec.priority,
        namespaces=frozenset(spec.namespaces),
        namespace_selectors=parse_selectors(spec.namespace_selectors, f"{path}.namespaceSelectors", issues),
        service_selectors=parse_selectors(spec.service_selectors, f"{path}.serviceSelectors", issues),
    )
