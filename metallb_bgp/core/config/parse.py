"""Small parsers and label selector checks the rules share: pool addresses, CIDRs, communities."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from metallb_bgp.api.core import Node
from metallb_bgp.api.meta import LabelSelectorSpec
from metallb_bgp.api.names import label_key_problem, label_value_problem
from metallb_bgp.api.selectors import LabelSelector, Operator, any_matches
from metallb_bgp.core.config import model as cfg
from metallb_bgp.core.config.report import Issue, err
from metallb_bgp.core.net import IPNetwork, parse_ip

_DIGITS = re.compile(r"[0-9]+")


def parse_pool_addresses(text: str) -> tuple[tuple[IPNetwork, ...], str]:
    """One `spec.addresses` entry as CIDRs, plus a warning ("" if none); raises ValueError.

    A CIDR (`192.168.10.0/24`) or a range (`192.168.9.1-192.168.9.5`, both ends of one family), as
    MetalLB's ParseCIDR accepts them. A range becomes the smallest set of CIDRs that covers it exactly.
    """
    if "-" not in text:
        return _parse_cidr(text)
    first, _, last = text.partition("-")
    try:
        start, end = parse_ip(first.strip()), parse_ip(last.strip())
    except ValueError as exc:
        raise ValueError(f"invalid IP range {text!r}: {exc}") from None
    if start.version != end.version:
        raise ValueError(f"invalid IP range {text!r}: start and end must both be IPv4 or both be IPv6")
    if start > end:  # type: ignore[operator]  # the same family: checked just above
        raise ValueError(f"invalid IP range {text!r}: start {start} is after end {end}")
    return tuple(ipaddress.summarize_address_range(start, end)), ""


def _parse_cidr(text: str) -> tuple[tuple[IPNetwork, ...], str]:
    address, slash, length = text.partition("/")
    usage = "expected a CIDR such as 192.168.10.0/24 or a range such as 192.168.9.1-192.168.9.5"
    if not slash or not _DIGITS.fullmatch(length):
        raise ValueError(f"invalid CIDR {text!r}: {usage}")
    try:
        ip = parse_ip(address)
    except ValueError:
        raise ValueError(f"invalid CIDR {text!r}: {usage}") from None
    if int(length) > ip.max_prefixlen:
        raise ValueError(f"invalid CIDR {text!r}: prefix length must be at most {ip.max_prefixlen}")
    network = ipaddress.ip_network(f"{ip}/{int(length)}", strict=False)
    warning = "" if network.network_address == ip else f"{text!r} has host bits set; {network} is used"
    return (network,), warning


class NotACommunity(ValueError):
    """The text has neither community shape, so it may be an alias (MetalLB's ErrInvalidCommunityFormat)."""


def parse_community(text: str) -> cfg.Community:
    """`AA:NN` (two 16-bit numbers) or `large:A:B:C` (three 32-bit numbers); raises ValueError."""
    parts = text.split(":")
    if len(parts) == 2:
        numbers = [_uint(part, 16, text) for part in parts]
        return cfg.Community(f"{numbers[0]}:{numbers[1]}")
    if len(parts) == 4:
        if parts[0] != "large":
            raise ValueError(f"invalid community {text!r}: a large community is written large:<uint32>:<uint32>:<uint32>")
        numbers = [_uint(part, 32, text) for part in parts[1:]]
        return cfg.Community(":".join(str(n) for n in numbers), large=True)
    raise NotACommunity(f"{text!r} is not a community (AA:NN or large:A:B:C)")


def _uint(text: str, bits: int, whole: str) -> int:
    if not _DIGITS.fullmatch(text) or int(text) >= 1 << bits:
        raise ValueError(f"invalid community {whole!r}: {text!r} is not a number from 0 to {(1 << bits) - 1}")
    return int(text)




def parse_selectors(specs: Sequence[LabelSelectorSpec], path: str, issues: list[Issue]) -> tuple[LabelSelector, ...]:
    """Selectors as values, after MetalLB's checks (valid requirements, no duplicates)."""
    result: list[LabelSelector] = []
    for i, spec in enumerate(specs):
        here = f"{path}[{i}]"
        issues.extend(_selector_issues(spec, here))
        selector = spec.to_selector()
        if selector in result:
            issues.append(err(here, f"duplicate of {path}[{result.index(selector)}]"))
        result.append(selector)
    return tuple(result)


def _selector_issues(spec: LabelSelectorSpec, path: str) -> list[Issue]:
    issues: list[Issue] = []
    for key, value in sorted(spec.match_labels.items()):
        problem = label_key_problem(key) or label_value_problem(value)
        if problem:
            issues.append(err(f"{path}.matchLabels", f"{key}: {problem}"))
    seen: list[tuple[str, Operator, tuple[str, ...]]] = []
    for j, expr in enumerate(spec.match_expressions):
        here = f"{path}.matchExpressions[{j}]"
        problem = label_key_problem(expr.key)
        if problem:
            issues.append(err(f"{here}.key", problem))
        if expr.operator in (Operator.IN, Operator.NOT_IN) and not expr.values:
            issues.append(err(f"{here}.values", f"operator {expr.operator.value} needs at least one value"))
        if expr.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and expr.values:
            issues.append(err(f"{here}.values", f"operator {expr.operator.value} takes no values"))
        for k, value in enumerate(expr.values):
            problem = label_value_problem(value)
            if problem:
                issues.append(err(f"{here}.values[{k}]", problem))
            elif value in expr.values[:k]:
                issues.append(err(f"{here}.values[{k}]", f"duplicate value {value!r}"))
        identity = (expr.key, expr.operator, tuple(sorted(set(expr.values))))
        if identity in seen:
            issues.append(err(here, f"duplicate of {path}.matchExpressions[{seen.index(identity)}]"))
        seen.append(identity)
    return issues


def selected_nodes(selectors: Sequence[LabelSelector], nodes: Sequence[Node]) -> frozenset[str]:
    return frozenset(n.metadata.name for n in nodes if any_matches(selectors, n.metadata.labels))


def may_share_nodes(a: Sequence[LabelSelector], b: Sequence[LabelSelector], nodes: Sequence[Node]) -> bool:
    """Whether two node selections meet: exactly, when nodes are known; else only if provably so."""
    if nodes:
        return bool(selected_nodes(a, nodes) & selected_nodes(b, nodes))
    return not a or not b or set(a) == set(b)
