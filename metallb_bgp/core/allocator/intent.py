"""What a service asks for (annotations, loadBalancerIPs, families, ports, sharing) and which pools it may
use, read once per service into an `Intent`; doubtful annotations become field-named warnings."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from metallb_bgp.api.core import Service, ServiceSpec
from metallb_bgp.api.problems import ObjectError, Severity
from metallb_bgp.api.selectors import any_matches
from metallb_bgp.core.config.model import Config, Pool
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress, parse_ip

ANNOTATION_PREFIX = "metallb.io/"
DEPRECATED_ANNOTATION_PREFIX = "metallb.universe.tf/"
ADDRESS_POOL = "address-pool"
LOAD_BALANCER_IPS = "loadBalancerIPs"
ALLOW_SHARED_IP = "allow-shared-ip"

INT64_MAX = 2**63 - 1  # pool status counters are int64 in the CRD (MetalLB caps huge IPv6 pools likewise)
_MAX_LISTED_REASONS = 5

_VERSION_OF_FAMILY = {"IPv4": 4, "IPv6": 6}


@dataclass(frozen=True, slots=True)
class Families:
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
class Claim:
    """What sharing an address depends on (MetalLB's sharing key, backend key and ports)."""

    service: ServiceKey
    sharing_key: str | None
    backend: tuple[str, ...]  # ("Cluster",) or ("Local", "k=v", ...): Local services share only with identical ones
    ports: frozenset[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Intent:
    claim: Claim
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str]
    families: Families
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


def quoted(text: str) -> str:
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
            shown = quoted(annotation)
            warnings.append(_error(key, _annotation_field(annotation_name), f"invalid value {shown}: {exc}"))
            return (), f"invalid {annotation_name} {shown}: {exc}"
    if spec_ip:
        try:
            ip = parse_ip(spec_ip)
        except ValueError:
            warnings.append(_error(key, "spec.loadBalancerIP", f"{quoted(spec_ip)} is not an IP address"))
            return (), f"invalid spec.loadBalancerIP {quoted(spec_ip)}"
        message = f"deprecated by Kubernetes, use the {ANNOTATION_PREFIX}{LOAD_BALANCER_IPS} annotation"
        warnings.append(_warning(key, "spec.loadBalancerIP", message))
        return (ip,), None
    return (), None


def _families_of(spec: ServiceSpec) -> Families:
    """Kubernetes' reading of ipFamilies/ipFamilyPolicy; without either (a manifest that never met an API
    server), the clusterIP's family, else any family, IPv4 first."""
    listed = tuple(dict.fromkeys(_VERSION_OF_FAMILY[family] for family in spec.ip_families))
    if not listed and spec.cluster_ip:
        with contextlib.suppress(ValueError):
            listed = (ipaddress.ip_address(spec.cluster_ip).version,)
    return _families(spec.ip_family_policy, listed)


@functools.cache
def _families(policy: str | None, listed: tuple[int, ...]) -> Families:
    policy = policy or ("RequireDualStack" if len(listed) == 2 else "SingleStack")
    if policy == "SingleStack":
        return Families(policy, listed[:1] or (4, 6))
    if policy == "PreferDualStack":
        return Families(policy, listed or (4, 6))
    return Families(policy, listed + tuple(v for v in (4, 6) if v not in listed))


@functools.lru_cache(maxsize=4096)
def _ports(ports: tuple[tuple[str, int], ...]) -> frozenset[tuple[str, int]]:
    """One frozenset per distinct port list: thousands of services expose the same few."""
    return frozenset(ports)


def _backend(spec: ServiceSpec) -> tuple[str, ...]:
    if spec.external_traffic_policy == "Local":
        return ("Local", *sorted(f"{k}={v}" for k, v in (spec.selector or {}).items()))
    return ("Cluster",)


def read_service(
    service: Service,
    namespace_labels: Mapping[str, str],
    config: Config,
    warnings: list[ObjectError],
    key: ServiceKey | None = None,
) -> Intent:
    key = key if key is not None else ServiceKey(service.namespace, service.name)
    annotations = service.metadata.annotations
    pool, pool_field = _read_annotation(annotations, ADDRESS_POOL, key, warnings)
    ips_text, ips_field = _read_annotation(annotations, LOAD_BALANCER_IPS, key, warnings)
    sharing_key, _ = _read_annotation(annotations, ALLOW_SHARED_IP, key, warnings)
    requested, malformed = _requested_ips(service.spec, ips_text, ips_field, key, warnings)
    if pool is not None and pool not in config.pools:
        warnings.append(_error(key, _annotation_field(pool_field), f"no IPAddressPool named {quoted(pool)}"))
    claim = Claim(
        service=key,
        sharing_key=sharing_key,
        backend=_backend(service.spec),
        ports=_ports(tuple((port.protocol, port.port) for port in service.spec.ports)),
    )
    return Intent(
        claim=claim,
        labels=service.metadata.labels,
        namespace_labels=namespace_labels,
        families=_families_of(service.spec),
        requested_ips=requested,
        requested_pool=pool,
        pool_field=pool_field,
        malformed=malformed,
    )

def pool_refusal(pool: Pool, intent: Intent) -> str | None:
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


def auto_pools(config: Config, intent: Intent) -> tuple[list[list[Pool]], list[str]]:
    """(phases of pools to try in order, why every other pool was left out)."""
    dedicated: list[Pool] = []
    general: list[Pool] = []
    excluded: list[str] = []
    for pool in config.pools.values():
        reason = f"pool {pool.name} has autoAssign false" if not pool.auto_assign else pool_refusal(pool, intent)
        if reason is not None:
            excluded.append(reason)
        elif _is_dedicated(pool):
            dedicated.append(pool)
        else:
            general.append(pool)
    dedicated.sort(key=_pool_order)
    general.sort(key=lambda pool: pool.name)
    return [phase for phase in (dedicated, general) if phase], excluded


def confuses_buggy_firmware(version: int, value: int) -> bool:
    """MetalLB's ipConfusesBuggyFirmwares: any IPv4 address ending in .0 or .255, whatever the prefix."""
    return version == 4 and (value & 0xFF) in (0, 255)


def joined(items: Sequence[str]) -> str:
    shown = list(items[:_MAX_LISTED_REASONS])
    if len(items) > _MAX_LISTED_REASONS:
        shown.append(f"and {len(items) - _MAX_LISTED_REASONS} more")
    return "; ".join(shown)
