"""BGPAdvertisement rules: pools and peers named or selected, communities, aggregation, localPref."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

from metallb_bgp.api.core import Node
from metallb_bgp.api.metallb import (
    BGPAdvertisement,
)
from metallb_bgp.api.selectors import LabelSelector
from metallb_bgp.core.config import model as cfg
from metallb_bgp.core.config.known import Known
from metallb_bgp.core.config.parse import NotACommunity, may_share_nodes, parse_community, parse_selectors
from metallb_bgp.core.config.pools import PoolInfo
from metallb_bgp.core.config.profiles import Aliases
from metallb_bgp.core.config.report import Issue, Report, err, guarded, has_error, named, warn


def check_advertisements(objects: Mapping[str, BGPAdvertisement], known: Known, report: Report) -> list[cfg.Advertisement]:
    accepted: list[cfg.Advertisement] = []
    for obj in objects.values():
        advertisement = guarded(report, obj, functools.partial(_advertisement, obj, known, accepted))
        if advertisement is not None:
            accepted.append(advertisement)
    return accepted


def _advertisement(
    obj: BGPAdvertisement, known: Known, accepted: Sequence[cfg.Advertisement], issues: list[Issue]
) -> cfg.Advertisement | None:
    """The advertisement, or None when it must be left out (its own error, or no usable peer)."""
    spec = obj.spec
    own: list[Issue] = []
    lists = {"spec.ipAddressPools": spec.ip_address_pools, "spec.peers": spec.peers, "spec.communities": spec.communities}
    for path, names in lists.items():
        own.extend(err(f"{path}[{i}]", f"duplicate {name!r}") for i, name in enumerate(names) if name in names[:i])
    pool_selectors = parse_selectors(spec.ip_address_pool_selectors, "spec.ipAddressPoolSelectors", own)
    node_selectors = parse_selectors(spec.node_selectors, "spec.nodeSelectors", own)
    service_selectors = parse_selectors(spec.service_selectors, "spec.serviceSelectors", own)
    own.extend(_aggregation_limits(obj))
    communities = _communities(spec.communities, known.aliases, own)
    pools = _advertised_pools(obj, pool_selectors, known, issues)
    own.extend(_aggregation_vs_pools(obj, pools, known))
    peers, peers_fatal = _advertised_peers(spec.peers, known, issues)
    issues.extend(own)
    advertisement = cfg.Advertisement(
        name=obj.metadata.name,
        pools=pools,
        aggregation_length=spec.aggregation_length,
        aggregation_length_v6=spec.aggregation_length_v6,
        local_pref=spec.local_pref,
        communities=communities,
        node_selectors=node_selectors,
        peers=peers,
        service_selectors=service_selectors,
    )
    if peers_fatal or has_error(own):
        return None
    conflicts = _local_pref_conflicts(advertisement, accepted, known)
    issues.extend(conflicts)
    return None if conflicts else advertisement


def _aggregation_limits(obj: BGPAdvertisement) -> list[Issue]:
    spec = obj.spec
    issues: list[Issue] = []
    if spec.aggregation_length > 32:
        issues.append(err("spec.aggregationLength", f"{spec.aggregation_length} is longer than 32 (IPv4)"))
    if spec.aggregation_length_v6 > 128:
        issues.append(err("spec.aggregationLengthV6", f"{spec.aggregation_length_v6} is longer than 128 (IPv6)"))
    if spec.service_selectors:
        if spec.aggregation_length != 32:
            issues.append(err("spec.aggregationLength", "must stay 32 when serviceSelectors are set (MetalLB)"))
        if spec.aggregation_length_v6 != 128:
            issues.append(err("spec.aggregationLengthV6", "must stay 128 when serviceSelectors are set (MetalLB)"))
    return issues


def _communities(entries: Sequence[str], aliases: Aliases, issues: list[Issue]) -> frozenset[cfg.Community]:
    """Values and aliases, resolved (an alias wins over a value of the same spelling, as in MetalLB)."""
    result: set[cfg.Community] = set()
    for i, text in enumerate(entries):
        here = f"spec.communities[{i}]"
        if text in aliases.good:
            result.add(aliases.good[text])
        elif text in aliases.bad:
            why = aliases.bad[text]
            issues.append(err(here, f"community alias {text!r} {why.message}", *why.refs))
        else:
            try:
                result.add(parse_community(text))
            except NotACommunity:
                message = f"{text!r} is neither a community value (AA:NN or large:A:B:C) nor an alias from a Community"
                issues.append(err(here, message))
            except ValueError as exc:
                issues.append(err(here, str(exc)))
    return frozenset(result)


def _advertised_pools(
    obj: BGPAdvertisement, selectors: Sequence[LabelSelector], known: Known, issues: list[Issue]
) -> frozenset[str]:
    """ipAddressPools and the pools ipAddressPoolSelectors match (neither = every pool); bad ones reported."""
    spec = obj.spec
    if not spec.ip_address_pools and not spec.ip_address_pool_selectors:
        return frozenset(known.pools)
    chosen: set[str] = set()
    for i, name in enumerate(spec.ip_address_pools):
        if name in known.pools:
            chosen.add(name)
        elif ("IPAddressPool", name) in known.bad:
            issues.append(err(f"spec.ipAddressPools[{i}]", _pool_problem(name, known), named("IPAddressPool", name)))
        else:  # MetalLB accepts it: nothing is announced for the missing name
            message = f"no IPAddressPool named {name}; nothing is advertised for it"
            issues.append(warn(f"spec.ipAddressPools[{i}]", message, named("IPAddressPool", name)))
    for j, selector in enumerate(selectors):
        here = f"spec.ipAddressPoolSelectors[{j}]"
        chosen.update(name for name, info in known.pools.items() if selector.matches(info.pool.labels))
        bad = {p.metadata.name for p in known.pool_objects if selector.matches(p.metadata.labels)} - known.pools.keys()
        for name in sorted(bad):
            issues.append(err(here, f"selects IPAddressPool {name}, which is invalid and not advertised", named("IPAddressPool", name)))
    return frozenset(chosen)


def _pool_problem(name: str, known: Known) -> str:
    if ("IPAddressPool", name) in known.bad:
        return f"IPAddressPool {name} {known.bad[('IPAddressPool', name)]}; its addresses are not advertised"
    return f"no IPAddressPool named {name}"


def _advertised_peers(names: Sequence[str], known: Known, issues: list[Issue]) -> tuple[frozenset[str], bool]:
    """The named peers that exist; fatal when names were given and none is usable (empty means every peer)."""
    chosen: set[str] = set()
    for i, name in enumerate(names):
        if name in known.peers:
            chosen.add(name)
        elif ("BGPPeer", name) in known.bad:
            issues.append(err(f"spec.peers[{i}]", f"BGPPeer {name} {known.bad[('BGPPeer', name)]}", named("BGPPeer", name)))
        else:  # MetalLB accepts it: nothing is announced to the missing name
            issues.append(warn(f"spec.peers[{i}]", f"no BGPPeer named {name}; nothing is advertised to it", named("BGPPeer", name)))
    fatal = bool(names) and not chosen
    if fatal:
        message = "no named peer is usable, so this advertisement is not used (an empty list would mean every peer)"
        missing_only = all(("BGPPeer", name) not in known.bad for name in names)
        issues.append((warn if missing_only else err)("spec.peers", message))
    return frozenset(chosen), fatal


def _aggregation_vs_pools(obj: BGPAdvertisement, pools: Iterable[str], known: Known) -> list[Issue]:
    """MetalLB: an aggregation length shorter than an entry's widest prefix would announce foreign addresses."""
    spec = obj.spec
    issues: list[Issue] = []
    for name in sorted(pools):
        for text, cidrs in known.pools[name].entries:
            if not cidrs:
                continue
            v6 = cidrs[0].version == 6
            length = spec.aggregation_length_v6 if v6 else spec.aggregation_length
            widest = min(c.prefixlen for c in cidrs)
            if length < widest:
                path = "spec.aggregationLengthV6" if v6 else "spec.aggregationLength"
                message = f"{length} is shorter than the /{widest} prefix of {text!r} in IPAddressPool {name}"
                issues.append(err(path, message, named("IPAddressPool", name)))
    return issues


def _local_pref_conflicts(new: cfg.Advertisement, accepted: Sequence[cfg.Advertisement], known: Known) -> list[Issue]:
    """MetalLB rejects two advertisements that would send one prefix to one peer with two LOCAL_PREFs."""
    if new.service_selectors:
        return []
    for old in accepted:
        if old.service_selectors or (new.local_pref or 0) == (old.local_pref or 0):
            continue
        for pool in sorted(new.pools & old.pools):
            if _same_update(new, old, known.pools[pool], known.nodes):
                message = (
                    f"{new.local_pref or 0} conflicts with localPref {old.local_pref or 0} of BGPAdvertisement "
                    f"{old.name} for IPAddressPool {pool} (same prefixes, peers and nodes)"
                )
                return [err("spec.localPref", message, named("BGPAdvertisement", old.name), named("IPAddressPool", pool))]
    return []


def _same_update(new: cfg.Advertisement, old: cfg.Advertisement, pool: PoolInfo, nodes: Sequence[Node]) -> bool:
    families = pool.families
    v4_differs = new.aggregation_length != old.aggregation_length
    v6_differs = new.aggregation_length_v6 != old.aggregation_length_v6
    if not families or (v4_differs and v6_differs):
        return False
    if (v4_differs and 6 not in families) or (v6_differs and 4 not in families):
        return False
    if new.peers and old.peers and not new.peers & old.peers:
        return False
    return may_share_nodes(new.node_selectors, old.node_selectors, nodes)
