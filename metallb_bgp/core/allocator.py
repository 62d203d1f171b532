"""Service IP address management: which LoadBalancer service gets which IP, from which pool, and why not.

MetalLB's controller keeps its allocations in mutable maps that live across reconciles and are patched
one service at a time. Here allocation is one pure function of the compiled `Config`, the services,
their namespaces and the previous assignments, recomputed on every reconcile: same inputs, same answer,
on every replica. Stability comes from the order of the work, not from remembered state:

1. every previous assignment that is still valid is kept (services in key order), so a config change
   never moves a working service and a newcomer never steals an address;
2. PreferDualStack services that hold one family try to add the other from the same pool (MetalLB's
   `AllocateFromPoolForAdditionalFamily`), after step 1 so they never take an address someone holds;
3. services without a valid assignment get one: pinned requests (`loadBalancerIPs`) first, then the
   rest, each group in key order, taking the lowest free address of the first eligible pool.

Every LoadBalancer service of ours ends with an `Assignment` or a refusal reason, every dropped
previous assignment with the reason it was dropped (`Allocation.cleared`), and every doubtful
annotation with a field-named warning, so the controller can write Events a user can act on.

Free-address search is a cursor per CIDR over a set of used integers: addresses are never freed within
one call, so the cursor only moves forward and a cold allocation of N services costs O(N + used).

Not here: writing status, annotations or Events (the controller), deciding who announces (routes).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import heapq
import ipaddress
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from metallb_bgp.api.core import Namespace, Service, ServiceSpec
from metallb_bgp.api.problems import ObjectError, Severity
from metallb_bgp.api.selectors import any_matches
from metallb_bgp.core.config.model import Config, Pool
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress, IPNetwork, parse_ip
from metallb_bgp.core.persistent import SnapshotDict

ANNOTATION_PREFIX = "metallb.io/"
DEPRECATED_ANNOTATION_PREFIX = "metallb.universe.tf/"
ADDRESS_POOL = "address-pool"
LOAD_BALANCER_IPS = "loadBalancerIPs"
ALLOW_SHARED_IP = "allow-shared-ip"

INT64_MAX = 2**63 - 1  # pool status counters are int64 in the CRD (MetalLB caps huge IPv6 pools likewise)
_MAX_LISTED_REASONS = 5

# --- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assignment:
    ips: tuple[IPAddress, ...]  # one per family, the service's primary family first
    pool: str
    sharing_key: str | None = None


@dataclass(frozen=True)
class Allocation:
    assignments: Mapping[ServiceKey, Assignment] = field(default_factory=dict)
    refusals: Mapping[ServiceKey, str] = field(default_factory=dict)  # LoadBalancer services of ours left without IP
    warnings: tuple[ObjectError, ...] = ()
    cleared: Mapping[ServiceKey, str] = field(default_factory=dict)  # previous IPs dropped, and why

    def service_ips(self) -> dict[ServiceKey, tuple[IPAddress, ...]]:
        """The assignments as `allocate(existing=...)` takes them on the next run."""
        return {key: assignment.ips for key, assignment in self.assignments.items()}


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """IPAddressPool status counters (MetalLB's assignedIPv4/assignedIPv6/availableIPv4/availableIPv6)."""

    assigned_ipv4: int = 0
    assigned_ipv6: int = 0
    available_ipv4: int = 0
    available_ipv6: int = 0


# --- what a service asks for -----------------------------------------------------------------------

_VERSION_OF_FAMILY = {"IPv4": 4, "IPv6": 6}


@dataclass(frozen=True, slots=True)
class _Families:
    """The address families a service accepts, from spec.ipFamilies / spec.ipFamilyPolicy."""

    policy: str  # SingleStack | PreferDualStack | RequireDualStack
    order: tuple[int, ...]  # acceptable versions, preferred first

    @property
    def want_both(self) -> bool:
        return self.policy != "SingleStack" and len(self.order) == 2

    @property
    def need_both(self) -> bool:
        return self.policy == "RequireDualStack"

    def accepts(self, versions: Sequence[int]) -> bool:
        if not versions or len(set(versions)) != len(versions):
            return False
        if len(versions) == 2:
            return self.want_both
        return not self.need_both and len(versions) == 1 and versions[0] in self.order

    def __str__(self) -> str:
        joiner = "+" if self.want_both else " or "
        return f"{self.policy} {joiner.join(f'IPv{v}' for v in self.order)}"


@dataclass(frozen=True, slots=True)
class _Claim:
    """What sharing an address depends on (MetalLB's sharing key, backend key and ports)."""

    service: ServiceKey
    sharing_key: str | None
    backend: tuple[str, ...]  # ("Cluster",) or ("Local", "k=v", ...): Local services share only with identical ones
    ports: frozenset[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class _Intent:
    claim: _Claim
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str]
    families: _Families
    requested_ips: tuple[IPAddress, ...] = ()
    requested_pool: str | None = None
    pool_field: str = ""  # the annotation the pool came from, for messages
    malformed: str | None = None  # the request cannot be read: refuse new allocations, keep a valid current one

    @property
    def key(self) -> ServiceKey:
        return self.claim.service


def _warning(key: ServiceKey, field_path: str, message: str) -> ObjectError:
    return ObjectError("Service", key.namespace, key.name, field_path, message, Severity.WARNING)


def _error(key: ServiceKey, field_path: str, message: str) -> ObjectError:
    """A request the allocator refuses (the service gets no IP for it): an error, as `validate` shows it."""
    return ObjectError("Service", key.namespace, key.name, field_path, message, Severity.ERROR)


def _shown(text: str) -> str:
    """A user's value in a message: quoted, and cut short (an annotation may hold thousands of addresses)."""
    return repr(text) if len(text) <= 100 else f"{text[:100]!r}... ({len(text)} characters)"


def _annotation_field(name: str) -> str:
    return f"metadata.annotations[{name}]"


def _read_annotation(
    annotations: Mapping[str, str], suffix: str, key: ServiceKey, warnings: list[ObjectError]
) -> tuple[str | None, str]:
    """(value, annotation name) with MetalLB's precedence: metallb.io/ if present, else the deprecated prefix."""
    current_name, legacy_name = ANNOTATION_PREFIX + suffix, DEPRECATED_ANNOTATION_PREFIX + suffix
    if legacy_name in annotations:
        if current_name not in annotations:
            message = f"deprecated annotation, use {current_name}"
        elif annotations[current_name].strip() != annotations[legacy_name].strip():
            message = f"ignored: {current_name} is also set and takes precedence"
        else:
            message = f"deprecated duplicate of {current_name}, remove it"
        warnings.append(_warning(key, _annotation_field(legacy_name), message))
    name = current_name if current_name in annotations else legacy_name
    value = annotations.get(name, "").strip()
    return (value or None), name


def _parse_ips(text: str) -> tuple[IPAddress, ...]:
    """Comma-separated addresses, at most one per family. Raises ValueError with a readable message."""
    ips: list[IPAddress] = []
    items = text.split(",")
    if len(items) > 2:
        raise ValueError(f"{len(items)} addresses; at most one IPv4 and one IPv6 address")
    for item in items:
        try:
            ips.append(parse_ip(item.strip()))
        except ValueError:
            raise ValueError(f"{item.strip()!r} is not an IP address") from None
    if len(ips) > 2 or len({ip.version for ip in ips}) != len(ips):
        raise ValueError("at most one IPv4 and one IPv6 address")
    return tuple(ips)


def _requested_ips(
    spec: ServiceSpec, annotation: str | None, annotation_name: str, key: ServiceKey, warnings: list[ObjectError]
) -> tuple[tuple[IPAddress, ...], str | None]:
    """(requested IPs, reason the request is unreadable)."""
    spec_ip = spec.load_balancer_ip.strip()
    if spec_ip and annotation:
        message = f"spec.loadBalancerIP and {annotation_name} are both set; keep only the annotation"
        warnings.append(_warning(key, "spec.loadBalancerIP", message))
        return (), message
    if annotation:
        try:
            return _parse_ips(annotation), None
        except ValueError as exc:
            shown = _shown(annotation)
            warnings.append(_error(key, _annotation_field(annotation_name), f"invalid value {shown}: {exc}"))
            return (), f"invalid {annotation_name} {shown}: {exc}"
    if spec_ip:
        try:
            ip = parse_ip(spec_ip)
        except ValueError:
            warnings.append(_error(key, "spec.loadBalancerIP", f"{_shown(spec_ip)} is not an IP address"))
            return (), f"invalid spec.loadBalancerIP {_shown(spec_ip)}"
        message = f"deprecated by Kubernetes, use the {ANNOTATION_PREFIX}{LOAD_BALANCER_IPS} annotation"
        warnings.append(_warning(key, "spec.loadBalancerIP", message))
        return (ip,), None
    return (), None


def _families_of(spec: ServiceSpec) -> _Families:
    """Kubernetes' reading of ipFamilies/ipFamilyPolicy; without either (a manifest that never met an API
    server), the clusterIP's family, else any family, IPv4 first."""
    listed = tuple(dict.fromkeys(_VERSION_OF_FAMILY[family] for family in spec.ip_families))
    if not listed and spec.cluster_ip:
        with contextlib.suppress(ValueError):
            listed = (ipaddress.ip_address(spec.cluster_ip).version,)
    return _families(spec.ip_family_policy, listed)


@functools.cache
def _families(policy: str | None, listed: tuple[int, ...]) -> _Families:
    policy = policy or ("RequireDualStack" if len(listed) == 2 else "SingleStack")
    if policy == "SingleStack":
        return _Families(policy, listed[:1] or (4, 6))
    if policy == "PreferDualStack":
        return _Families(policy, listed or (4, 6))
    return _Families(policy, listed + tuple(v for v in (4, 6) if v not in listed))


@functools.lru_cache(maxsize=4096)
def _ports(ports: tuple[tuple[str, int], ...]) -> frozenset[tuple[str, int]]:
    """One frozenset per distinct port list: thousands of services expose the same few."""
    return frozenset(ports)


def _backend(spec: ServiceSpec) -> tuple[str, ...]:
    if spec.external_traffic_policy == "Local":
        return ("Local", *sorted(f"{k}={v}" for k, v in (spec.selector or {}).items()))
    return ("Cluster",)


def _read_service(
    service: Service,
    namespace_labels: Mapping[str, str],
    config: Config,
    warnings: list[ObjectError],
    key: ServiceKey | None = None,
) -> _Intent:
    key = key if key is not None else ServiceKey(service.namespace, service.name)
    annotations = service.metadata.annotations
    pool, pool_field = _read_annotation(annotations, ADDRESS_POOL, key, warnings)
    ips_text, ips_field = _read_annotation(annotations, LOAD_BALANCER_IPS, key, warnings)
    sharing_key, _ = _read_annotation(annotations, ALLOW_SHARED_IP, key, warnings)
    requested, malformed = _requested_ips(service.spec, ips_text, ips_field, key, warnings)
    if pool is not None and pool not in config.pools:
        warnings.append(_error(key, _annotation_field(pool_field), f"no IPAddressPool named {_shown(pool)}"))
    claim = _Claim(
        service=key,
        sharing_key=sharing_key,
        backend=_backend(service.spec),
        ports=_ports(tuple((port.protocol, port.port) for port in service.spec.ports)),
    )
    return _Intent(
        claim=claim,
        labels=service.metadata.labels,
        namespace_labels=namespace_labels,
        families=_families_of(service.spec),
        requested_ips=requested,
        requested_pool=pool,
        pool_field=pool_field,
        malformed=malformed,
    )


# --- which pools a service may use -----------------------------------------------------------------


def _pool_refusal(pool: Pool, intent: _Intent) -> str | None:
    """Why serviceAllocation keeps this service out of `pool`, or None.

    namespaces and namespaceSelectors together list the allowed namespaces (MetalLB resolves the
    selectors into the same set); serviceSelectors must also match if given.
    """
    rules = pool.allocation
    if rules is None:
        return None
    namespace = intent.key.namespace
    if (rules.namespaces or rules.namespace_selectors) and not (
        namespace in rules.namespaces or any(s.matches(intent.namespace_labels) for s in rules.namespace_selectors)
    ):
        return f"pool {pool.name} does not allow namespace {namespace}"
    if not any_matches(rules.service_selectors, intent.labels):
        return f"pool {pool.name} does not select this service (serviceSelectors)"
    return None


def _priority(pool: Pool) -> int | None:
    """A pool's serviceAllocation priority; 0 or less means none, as in MetalLB (where 0 is "unset")."""
    priority = pool.allocation.priority if pool.allocation is not None else None
    return priority if priority is not None and priority > 0 else None


def _is_dedicated(pool: Pool) -> bool:
    """Pools with a serviceAllocation are tried before general pools (MetalLB's "pinned" pools)."""
    rules = pool.allocation
    return rules is not None and bool(
        _priority(pool) is not None or rules.namespaces or rules.namespace_selectors or rules.service_selectors
    )


def _pool_order(pool: Pool) -> tuple[int, int, str]:
    """Pools with a priority first, lowest number first; then the others; ties by name."""
    priority = _priority(pool)
    return (0, priority, pool.name) if priority is not None else (1, 0, pool.name)


def _auto_pools(config: Config, intent: _Intent) -> tuple[list[list[Pool]], list[str]]:
    """(phases of pools to try in order, why every other pool was left out)."""
    dedicated: list[Pool] = []
    general: list[Pool] = []
    excluded: list[str] = []
    for pool in config.pools.values():
        reason = f"pool {pool.name} has autoAssign false" if not pool.auto_assign else _pool_refusal(pool, intent)
        if reason is not None:
            excluded.append(reason)
        elif _is_dedicated(pool):
            dedicated.append(pool)
        else:
            general.append(pool)
    dedicated.sort(key=_pool_order)
    general.sort(key=lambda pool: pool.name)
    return [phase for phase in (dedicated, general) if phase], excluded


def _confuses_buggy_firmware(version: int, value: int) -> bool:
    """MetalLB's ipConfusesBuggyFirmwares: any IPv4 address ending in .0 or .255, whatever the prefix."""
    return version == 4 and (value & 0xFF) in (0, 255)


def _joined(items: Sequence[str]) -> str:
    shown = list(items[:_MAX_LISTED_REASONS])
    if len(items) > _MAX_LISTED_REASONS:
        shown.append(f"and {len(items) - _MAX_LISTED_REASONS} more")
    return "; ".join(shown)


# --- the address book of one allocate() call --------------------------------------------------------


class _Range:
    """One CIDR of one pool. Every address below `cursor` is known to be taken (or avoided), except the
    `holes`: addresses freed since (only a book kept across calls, `AllocationState`, frees any)."""

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


class _Use:
    """Who holds one address. The first holder fixes the sharing key and backend for the others."""

    __slots__ = ("backend", "holders", "ports", "sharing_key")

    def __init__(self, claim: _Claim) -> None:
        self.sharing_key = claim.sharing_key
        self.backend = claim.backend
        self.holders: list[ServiceKey] = []
        self.ports: frozenset[tuple[str, int]] = frozenset()  # every holder's; the first holder's own set, shared


_ShareGroup = tuple[str, int, str, tuple[str, ...]]  # pool, version, sharing key, backend


class _AddressBook:
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
        self._uses: dict[int, dict[int, _Use]] = {4: {}, 6: {}}
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

    def conflict(self, ip: IPAddress, claim: _Claim) -> str | None:
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

    def candidate(self, pool: str, version: int, claim: _Claim) -> IPAddress | None:
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

    def take(self, pool: str, ips: Sequence[IPAddress], claim: _Claim) -> None:
        for ip in ips:
            value, table = int(ip), self._uses[ip.version]
            use = table.get(value)
            if use is None:
                use = table[value] = _Use(claim)
                if claim.sharing_key is not None:
                    group = (pool, ip.version, claim.sharing_key, claim.backend)
                    bisect.insort(self._shareable.setdefault(group, []), (self._range_index(pool, ip), value))
            use.holders.append(claim.service)
            use.ports = claim.ports if not use.ports else use.ports | claim.ports

    def release(self, pool: str, ips: Sequence[IPAddress], holder: ServiceKey) -> list[_Use]:
        """Undo `take` for one holder; returns the uses other holders keep (whose ports the caller
        recomputes). Only `AllocationState` calls this: one allocate() call never frees anything."""
        shared: list[_Use] = []
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

    def uses_of(self, ips: Sequence[IPAddress]) -> list[_Use]:
        return [use for ip in ips if (use := self._uses[ip.version].get(int(ip))) is not None]

    def _range_index(self, pool: str, ip: IPAddress) -> int:
        ranges = self._ranges.get(pool, {}).get(ip.version, [])
        value = int(ip)
        return next((i for i, cidr_range in enumerate(ranges) if value in cidr_range), len(ranges))


# --- deciding one service ----------------------------------------------------------------------------

_Pick = tuple[Pool, tuple[IPAddress, ...]]


def _in_family_order(ips: Sequence[IPAddress], families: _Families) -> tuple[IPAddress, ...]:
    order = {version: i for i, version in enumerate(families.order)}
    return tuple(sorted(ips, key=lambda ip: order.get(ip.version, 2)))


def _describe(what: str, ips: Sequence[IPAddress]) -> str:
    return f"{what} IP{'s' if len(ips) > 1 else ''} {', '.join(map(str, ips))}"


def _check_fixed(
    config: Config, book: _AddressBook, intent: _Intent, ips: Sequence[IPAddress], what: str
) -> _Pick | str:
    """Validate fixed addresses (`what` = "requested" or "current"): a pick, or why not."""
    if not intent.families.accepts([ip.version for ip in ips]):
        return f"{_describe(what, ips)} do not fit the service's IP families ({intent.families})"
    pools = book.pools_containing(ips)
    if not pools:
        outside = [ip for ip in ips if not book.pools_containing([ip])]
        if outside:
            return f"{_describe(what, outside[:1])} is not in any pool"
        return f"{_describe(what, ips)} are not in one pool"
    if intent.requested_pool is not None:
        if intent.requested_pool not in config.pools:
            return f"unknown pool {intent.requested_pool!r} in {intent.pool_field}"
        wanted = [pool for pool in pools if pool.name == intent.requested_pool]
        if not wanted:
            return (
                f"{_describe(what, ips)} belong to pool {pools[0].name}, "
                f"but {intent.pool_field} asks for pool {intent.requested_pool}"
            )
        pools = wanted
    pool = pools[0]
    if pool.avoid_buggy_ips:
        buggy = [ip for ip in ips if _confuses_buggy_firmware(ip.version, int(ip))]
        if buggy:
            return f"{_describe(what, buggy[:1])} ends in .0 or .255, which pool {pool.name} avoids (avoidBuggyIPs)"
    refusal = _pool_refusal(pool, intent)
    if refusal is not None:
        return f"{_describe(what, ips)}: {refusal}"
    if what == "current" and intent.requested_ips and set(intent.requested_ips) != set(ips):
        return f"the service now requests {', '.join(map(str, intent.requested_ips))}"
    for ip in ips:
        conflict = book.conflict(ip, intent.claim)
        if conflict is not None:
            return f"{what} IP {conflict}"
    return pool, _in_family_order(ips, intent.families)


def _best_in(pools: Sequence[Pool], book: _AddressBook, intent: _Intent) -> _Pick | None:
    """MetalLB's findBestPoolForService: the first pool that satisfies every wanted family; failing that,
    unless dual stack is required, the first pool with the primary family, then with the secondary."""
    families, claim = intent.families, intent.claim
    fallbacks: dict[int, _Pick] = {}
    for pool in pools:
        found = {v: ip for v in families.order if (ip := book.candidate(pool.name, v, claim)) is not None}
        if families.want_both and len(found) == 2:
            return pool, tuple(found[v] for v in families.order)
        if not families.want_both and families.order[0] in found:
            return pool, (found[families.order[0]],)
        if families.need_both:
            continue
        for version, ip in found.items():
            fallbacks.setdefault(version, (pool, (ip,)))
    return next((fallbacks[v] for v in families.order if v in fallbacks), None)


def _shortage(pools: Sequence[Pool], book: _AddressBook, intent: _Intent) -> str:
    families = intent.families
    details = []
    for pool in pools:
        parts = [
            f"IPv{v} exhausted" if book.has_family(pool.name, v) else f"no IPv{v} range"
            for v in families.order
            if book.candidate(pool.name, v, intent.claim) is None
        ]
        details.append(f"pool {pool.name}: {', '.join(parts)}")
    if families.need_both:
        wanted = "an IPv4 and an IPv6 address from one pool (RequireDualStack)"
    else:
        wanted = "an " + " or ".join(f"IPv{v}" for v in families.order) + " address"
    sharing = (
        f"; none of the used addresses can be shared under key {intent.claim.sharing_key!r}"
        if intent.claim.sharing_key is not None
        else ""
    )
    return f"no available IP: need {wanted} ({_joined(details)}){sharing}"


def _allocate_new(config: Config, book: _AddressBook, intent: _Intent) -> _Pick | str:
    """controller allocateIPs: requested IPs, else the requested pool, else every eligible pool."""
    if intent.malformed is not None:
        return intent.malformed
    if intent.requested_ips:
        return _check_fixed(config, book, intent, intent.requested_ips, "requested")
    if not config.pools:
        return "no IPAddressPool is configured"
    if intent.requested_pool is not None:
        pool = config.pools.get(intent.requested_pool)
        if pool is None:
            return f"unknown pool {intent.requested_pool!r} in {intent.pool_field}"
        refusal = _pool_refusal(pool, intent)
        if refusal is not None:
            return refusal
        return _best_in([pool], book, intent) or _shortage([pool], book, intent)
    phases, excluded = _auto_pools(config, intent)
    if not phases:
        return f"no pool may assign an IP to this service automatically: {_joined(excluded)}"
    for pools in phases:
        pick = _best_in(pools, book, intent)
        if pick is not None:
            return pick
    return _shortage([pool for pools in phases for pool in pools], book, intent)


def _add_missing_family(book: _AddressBook, intent: _Intent, current: Assignment) -> Assignment:
    """PreferDualStack with one address: add the other family from the same pool if one is available."""
    if not intent.families.want_both or len(current.ips) != 1 or intent.requested_ips:
        return current
    missing = next(v for v in intent.families.order if v != current.ips[0].version)
    extra = book.candidate(current.pool, missing, intent.claim)
    if extra is None:
        return current
    book.take(current.pool, [extra], intent.claim)
    return Assignment(_in_family_order([*current.ips, extra], intent.families), current.pool, current.sharing_key)


# --- the whole cluster ------------------------------------------------------------------------------


def _key_order(key: ServiceKey) -> tuple[str, str]:
    """ServiceKey's own order, compared as a plain tuple (a dataclass `<` costs a Python call)."""
    return (key.namespace, key.name)


def _is_ours(service: Service, load_balancer_class: str | None) -> bool:
    return service.spec.type == "LoadBalancer" and service.spec.load_balancer_class == load_balancer_class


def _status_ips(service: Service) -> tuple[IPAddress, ...] | str:
    """The IPs in status.loadBalancer.ingress (`Service.status_ips`, the one reading), or, when entries
    are there and none of them reads, why the previous assignment is dropped."""
    ips = service.status_ips()
    unreadable = [ingress.ip for ingress in service.status.load_balancer.ingress if ingress.ip]
    if not ips and unreadable:
        return f"status.loadBalancer.ingress holds {_shown(unreadable[0])}, which is not an IP address"
    return ips



def _keep_valid(
    config: Config,
    book: _AddressBook,
    intents: Mapping[ServiceKey, _Intent],
    previous: Callable[[ServiceKey], tuple[IPAddress, ...] | str],
    cleared: dict[ServiceKey, str],
) -> tuple[dict[ServiceKey, Assignment], list[_Intent]]:
    """Steps 1 and 2 of an allocation: keep every previous assignment that is still valid (booking it),
    complete PreferDualStack services never at another's expense; the rest is pending, with the reason
    a previous assignment was dropped in `cleared`."""
    kept: dict[ServiceKey, Assignment] = {}
    pending: list[_Intent] = []
    for key, intent in intents.items():
        current = previous(key)
        if not current:
            pending.append(intent)
            continue
        verdict = current if isinstance(current, str) else _check_fixed(config, book, intent, current, "current")
        if isinstance(verdict, str):
            cleared[key] = verdict
            pending.append(intent)
            continue
        pool, ips = verdict
        book.take(pool.name, ips, intent.claim)
        kept[key] = Assignment(ips, pool.name, intent.claim.sharing_key)
    for key in sorted(kept, key=_key_order):
        kept[key] = _add_missing_family(book, intents[key], kept[key])
    return kept, pending

def allocate(
    config: Config,
    services: Sequence[Service],
    namespaces: Sequence[Namespace],
    *,
    existing: Mapping[ServiceKey, tuple[IPAddress, ...]] | None = None,
    load_balancer_class: str | None = None,
) -> Allocation:
    """Assign IPs to every LoadBalancer service of ours; see the module docstring for the order of work.

    `existing` holds the previous assignments; when None they are read from each service's
    status.loadBalancer.ingress. Only services of type LoadBalancer whose spec.loadBalancerClass equals
    `load_balancer_class` (None: no class) are ours.
    """
    by_key = {ServiceKey(service.namespace, service.name): service for service in services}
    namespace_labels = {namespace.name: namespace.metadata.labels for namespace in namespaces}
    previous: dict[ServiceKey, tuple[IPAddress, ...] | str] = (
        {key: tuple(ips) for key, ips in existing.items()}
        if existing is not None
        else {key: _status_ips(service) for key, service in by_key.items()}
    )
    warnings: list[ObjectError] = []
    cleared: dict[ServiceKey, str] = {}
    intents: dict[ServiceKey, _Intent] = {}
    for key in sorted(by_key, key=_key_order):
        service = by_key[key]
        if _is_ours(service, load_balancer_class):
            intents[key] = _read_service(service, namespace_labels.get(key.namespace, {}), config, warnings)
        elif service.spec.type != "LoadBalancer" and previous.get(key):
            cleared[key] = "the service is no longer of type LoadBalancer"

    book = _AddressBook(config)
    assignments, pending = _keep_valid(config, book, intents, lambda key: previous.get(key, ()), cleared)

    refusals: dict[ServiceKey, str] = {}
    pending.sort(key=lambda intent: (not intent.requested_ips, *_key_order(intent.key)))
    for intent in pending:  # 3. everyone else: pinned requests first, then automatic picks
        outcome = _allocate_new(config, book, intent)
        if isinstance(outcome, str):
            refusals[intent.key] = outcome
            continue
        pool, ips = outcome
        book.take(pool.name, ips, intent.claim)
        assignments[intent.key] = Assignment(ips, pool.name, intent.claim.sharing_key)

    return Allocation(
        assignments={key: assignments[key] for key in sorted(assignments, key=_key_order)},
        refusals=dict(sorted(refusals.items())),
        warnings=tuple(sorted(set(warnings))),
        cleared=dict(sorted(cleared.items())),
    )


# --- the same, kept across calls ---------------------------------------------------------------------

# A service's previous IPs as allocate() reads them from `existing` (or an unreadable status: a reason).
Previous = Callable[[ServiceKey], "tuple[IPAddress, ...] | str | None"]


class AllocationState:
    """`allocate()` kept across calls, so one changed service costs one service's work.

    The result of every call equals `allocate(config, services, namespaces, existing=..., ...)` on the
    same inputs (a property test holds it to that; only the iteration order of `assignments` differs).
    It holds what allocate() rebuilds on every call: each service's intent and warnings, and the address
    book of every assignment. A call re-decides only a *subset*: the services that changed plus the
    unsettled ones (refused, PreferDualStack missing a family its pool has, or cleared on every call
    because their status holds IPs while they are no longer LoadBalancers). Every other service keeps
    its assignment, which is what allocate() would do too: its previous IPs are its current ones, still
    valid, and nobody ahead of it in key order can take them, because no re-decided service's previous
    IPs are held by a kept one (checked; if it happens, the call falls back to deciding every service).
    The subset is then decided exactly as allocate() decides everyone (keep, complete, allocate new), in
    the same order, against a book that holds everybody else.

    A new Config or new namespace labels mean a new `AllocationState` (the caller's job).
    """

    def __init__(
        self,
        config: Config,
        namespace_labels: Mapping[str, Mapping[str, str]],
        *,
        load_balancer_class: str | None = None,
    ) -> None:
        self.config = config
        self.namespace_labels = namespace_labels
        self.load_balancer_class = load_balancer_class
        self._book = _AddressBook(config)
        self._intents: dict[ServiceKey, _Intent] = {}
        self._warnings: dict[ServiceKey, tuple[ObjectError, ...]] = {}  # only services that have some
        self._all_warnings: tuple[ObjectError, ...] = ()
        # each Allocation gets an O(1) read-only snapshot of it (see snapshot_dict.SnapshotDict), not a copy
        self._assignments: SnapshotDict[ServiceKey, Assignment] = SnapshotDict()
        self._refusals: dict[ServiceKey, str] = {}
        self._unsettled: set[ServiceKey] = set()
        self.changed: set[ServiceKey] = set()  # services whose assignment the last call changed
        self.decided = 0  # services re-decided by the last call (for logs and the bench)

    def allocate_all(self, services: Mapping[ServiceKey, Service], previous: Previous) -> Allocation:
        """Decide every service: the first call, or a fallback."""
        before = self._assignments
        self._book = _AddressBook(self.config)
        self._intents, self._warnings, self._refusals = {}, {}, {}
        self._assignments = SnapshotDict()  # a new one: snapshots of the old one stay as they were
        self._unsettled = set()
        cleared = self._decide(sorted(services, key=_key_order), services, previous)
        self.decided = len(services)
        self.changed = {key for key in before.keys() | self._assignments.keys() if before.get(key) != self._assignments.get(key)}
        return self._result(cleared, warnings_changed=True)

    def update(
        self, services: Mapping[ServiceKey, Service], changed: Collection[ServiceKey], previous: Previous
    ) -> Allocation:
        """Re-decide the services in `changed` (added, modified or gone from `services`) and the unsettled."""
        wanted = set(changed) | self._unsettled
        subset = sorted(wanted, key=_key_order)
        for key in subset:
            service = services.get(key)
            if service is None or not _is_ours(service, self.load_balancer_class):
                continue
            ips = previous(key)
            if isinstance(ips, tuple) and any(h not in wanted for use in self._book.uses_of(ips) for h in use.holders):
                # a kept service holds what this one had: who keeps it depends on key order, which only
                # deciding everyone settles
                return self.allocate_all(services, previous)
        before = {key: self._assignments.get(key) for key in subset}
        shared: list[_Use] = []
        for key in subset:
            self._unsettled.discard(key)
            self._refusals.pop(key, None)
            assignment = self._assignments.pop(key, None)
            if assignment is not None:
                shared.extend(self._book.release(assignment.pool, assignment.ips, key))
        for use in shared:
            self._reset_ports(use)
        warnings_before = [self._warnings.get(key) for key in subset]
        cleared = self._decide(subset, services, previous)
        self.decided = len(subset)
        self.changed = {key for key in subset if before[key] != self._assignments.get(key)}
        warnings_changed = warnings_before != [self._warnings.get(key) for key in subset]
        return self._result(cleared, warnings_changed=warnings_changed)

    # ---------------------------------------------------------------- the work, as in allocate()

    def _decide(self, keys: Sequence[ServiceKey], services: Mapping[ServiceKey, Service], previous: Previous) -> dict[ServiceKey, str]:
        """allocate()'s three steps for `keys` (sorted), against a book holding every other assignment."""
        config, book = self.config, self._book
        cleared: dict[ServiceKey, str] = {}
        intents: dict[ServiceKey, _Intent] = {}
        for key in keys:
            service = services.get(key)
            self._intents.pop(key, None)
            self._warnings.pop(key, None)
            if service is None:
                continue
            if _is_ours(service, self.load_balancer_class):
                warnings: list[ObjectError] = []
                intent = _read_service(service, self.namespace_labels.get(key.namespace, {}), config, warnings, key)
                intents[key] = self._intents[key] = intent
                if warnings:
                    self._warnings[key] = tuple(warnings)
            elif service.spec.type != "LoadBalancer" and previous(key):
                cleared[key] = "the service is no longer of type LoadBalancer"
                self._unsettled.add(key)  # cleared again on every call while its status holds IPs

        kept, pending = _keep_valid(config, book, intents, lambda key: previous(key) or (), cleared)
        self._assignments.update(kept)
        pending.sort(key=lambda intent: (not intent.requested_ips, *_key_order(intent.key)))
        for intent in pending:  # 3. everyone else
            outcome = _allocate_new(config, book, intent)
            if isinstance(outcome, str):
                self._refusals[intent.key] = outcome
                continue
            pool, ips = outcome
            book.take(pool.name, ips, intent.claim)
            self._assignments[intent.key] = Assignment(ips, pool.name, intent.claim.sharing_key)

        for key, intent in intents.items():
            assignment = self._assignments.get(key)
            if assignment is None or self._may_complete(intent, assignment):
                self._unsettled.add(key)
            else:
                for use in book.uses_of(assignment.ips):  # next time they are all kept in key order
                    if len(use.holders) > 1:
                        use.holders.sort()
        return cleared

    def _may_complete(self, intent: _Intent, assignment: Assignment) -> bool:
        """A PreferDualStack service with one IP whose pool has the other family: it takes one when one
        frees up (allocate()'s step 2), so it is decided again on every call."""
        if not intent.families.want_both or len(assignment.ips) != 1 or intent.requested_ips:
            return False
        missing = next(v for v in intent.families.order if v != assignment.ips[0].version)
        return self._book.has_family(assignment.pool, missing)

    def _reset_ports(self, use: _Use) -> None:
        use.ports = frozenset(port for holder in use.holders for port in self._intents[holder].claim.ports)

    def _result(self, cleared: Mapping[ServiceKey, str], *, warnings_changed: bool) -> Allocation:
        if warnings_changed:
            self._all_warnings = tuple(sorted({w for ws in self._warnings.values() for w in ws}))
        return Allocation(
            assignments=self._assignments.snapshot(),
            refusals=dict(sorted(self._refusals.items())),
            warnings=self._all_warnings,
            cleared=dict(sorted(cleared.items())),
        )


# --- pool status --------------------------------------------------------------------------------------


def _buggy_addresses(cidr: IPNetwork) -> int:
    """How many addresses of an IPv4 CIDR end in .0 or .255 (one pair per /24, or the ends of a smaller one)."""
    if cidr.version != 4:
        return 0
    if cidr.prefixlen <= 24:
        return 2 << (24 - cidr.prefixlen)  # two per /24
    ends = {int(cidr.network_address), int(cidr.broadcast_address)}
    return sum(1 for value in ends if _confuses_buggy_firmware(4, value))


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
