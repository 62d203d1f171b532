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

from collections.abc import Callable, Mapping, Sequence

from metallb_bgp.api.core import Namespace, Service
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.allocator.book import AddressBook
from metallb_bgp.core.allocator.intent import (
    Families,
    Intent,
    auto_pools,
    confuses_buggy_firmware,
    joined,
    pool_refusal,
    quoted,
    read_service,
)
from metallb_bgp.core.allocator.results import Allocation, Assignment
from metallb_bgp.core.config.model import Config, Pool
from metallb_bgp.core.keys import ServiceKey, key_order
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.ownership import is_ours

_Pick = tuple[Pool, tuple[IPAddress, ...]]


def _in_family_order(ips: Sequence[IPAddress], families: Families) -> tuple[IPAddress, ...]:
    order = {version: i for i, version in enumerate(families.order)}
    return tuple(sorted(ips, key=lambda ip: order.get(ip.version, 2)))


def _describe(what: str, ips: Sequence[IPAddress]) -> str:
    return f"{what} IP{'s' if len(ips) > 1 else ''} {', '.join(map(str, ips))}"


def _check_fixed(
    config: Config, book: AddressBook, intent: Intent, ips: Sequence[IPAddress], what: str
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
        buggy = [ip for ip in ips if confuses_buggy_firmware(ip.version, int(ip))]
        if buggy:
            return f"{_describe(what, buggy[:1])} ends in .0 or .255, which pool {pool.name} avoids (avoidBuggyIPs)"
    refusal = pool_refusal(pool, intent)
    if refusal is not None:
        return f"{_describe(what, ips)}: {refusal}"
    if what == "current" and intent.requested_ips and set(intent.requested_ips) != set(ips):
        return f"the service now requests {', '.join(map(str, intent.requested_ips))}"
    for ip in ips:
        conflict = book.conflict(ip, intent.claim)
        if conflict is not None:
            return f"{what} IP {conflict}"
    return pool, _in_family_order(ips, intent.families)


def _best_in(pools: Sequence[Pool], book: AddressBook, intent: Intent) -> _Pick | None:
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


def _shortage(pools: Sequence[Pool], book: AddressBook, intent: Intent) -> str:
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
    return f"no available IP: need {wanted} ({joined(details)}){sharing}"


def allocate_new(config: Config, book: AddressBook, intent: Intent) -> _Pick | str:
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
        refusal = pool_refusal(pool, intent)
        if refusal is not None:
            return refusal
        return _best_in([pool], book, intent) or _shortage([pool], book, intent)
    phases, excluded = auto_pools(config, intent)
    if not phases:
        return f"no pool may assign an IP to this service automatically: {joined(excluded)}"
    for pools in phases:
        pick = _best_in(pools, book, intent)
        if pick is not None:
            return pick
    return _shortage([pool for pools in phases for pool in pools], book, intent)


def _add_missing_family(book: AddressBook, intent: Intent, current: Assignment) -> Assignment:
    """PreferDualStack with one address: add the other family from the same pool if one is available."""
    if not intent.families.want_both or len(current.ips) != 1 or intent.requested_ips:
        return current
    missing = next(v for v in intent.families.order if v != current.ips[0].version)
    extra = book.candidate(current.pool, missing, intent.claim)
    if extra is None:
        return current
    book.take(current.pool, [extra], intent.claim)
    return Assignment(_in_family_order([*current.ips, extra], intent.families), current.pool, current.sharing_key)

def _status_ips(service: Service) -> tuple[IPAddress, ...] | str:
    """The IPs in status.loadBalancer.ingress (`Service.status_ips`, the one reading), or, when entries
    are there and none of them reads, why the previous assignment is dropped."""
    ips = service.status_ips()
    unreadable = [ingress.ip for ingress in service.status.load_balancer.ingress if ingress.ip]
    if not ips and unreadable:
        return f"status.loadBalancer.ingress holds {quoted(unreadable[0])}, which is not an IP address"
    return ips



def keep_valid(
    config: Config,
    book: AddressBook,
    intents: Mapping[ServiceKey, Intent],
    previous: Callable[[ServiceKey], tuple[IPAddress, ...] | str],
    cleared: dict[ServiceKey, str],
) -> tuple[dict[ServiceKey, Assignment], list[Intent]]:
    """Steps 1 and 2 of an allocation: keep every previous assignment that is still valid (booking it),
    complete PreferDualStack services never at another's expense; the rest is pending, with the reason
    a previous assignment was dropped in `cleared`."""
    kept: dict[ServiceKey, Assignment] = {}
    pending: list[Intent] = []
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
    for key in sorted(kept, key=key_order):
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
    intents: dict[ServiceKey, Intent] = {}
    for key in sorted(by_key, key=key_order):
        service = by_key[key]
        if is_ours(service, load_balancer_class=load_balancer_class):
            intents[key] = read_service(service, namespace_labels.get(key.namespace, {}), config, warnings)
        elif service.spec.type != "LoadBalancer" and previous.get(key):
            cleared[key] = "the service is no longer of type LoadBalancer"

    book = AddressBook(config)
    assignments, pending = keep_valid(config, book, intents, lambda key: previous.get(key, ()), cleared)

    refusals: dict[ServiceKey, str] = {}
    pending.sort(key=lambda intent: (not intent.requested_ips, *key_order(intent.key)))
    for intent in pending:  # 3. everyone else: pinned requests first, then automatic picks
        outcome = allocate_new(config, book, intent)
        if isinstance(outcome, str):
            refusals[intent.key] = outcome
            continue
        pool, ips = outcome
        book.take(pool.name, ips, intent.claim)
        assignments[intent.key] = Assignment(ips, pool.name, intent.claim.sharing_key)

    return Allocation(
        assignments={key: assignments[key] for key in sorted(assignments, key=key_order)},
        refusals=dict(sorted(refusals.items())),
        warnings=tuple(sorted(set(warnings))),
        cleared=dict(sorted(cleared.items())),
    )
