"""compile_config: the whole cluster snapshot in, one validated `Config` and every problem out.

MetalLB turns its resources into a Config in one function (internal/config/config.go) and its
webhooks run the same function, so admission and runtime never disagree. We do the same, with one
deliberate difference: MetalLB rejects the *whole* configuration when one object is wrong; we leave
that object out, report it, and keep every good object working. Objects that depend on a bad one are
reported too, so nobody wonders why their advertisement stopped:

- a BGPPeer whose bfdProfile or password Secret is bad is left out (we cannot honour what it asks);
- a BGPAdvertisement whose community alias comes from a bad Community is left out (announcing without
  the community could leak routes);
- a BGPAdvertisement naming a bad or unknown pool is reported and keeps advertising its other pools
  (the bad pool is not in the Config, so nothing is lost by narrowing);
- a BGPAdvertisement naming a bad or unknown peer is reported and keeps its other peers; when none is
  left it is left out, because an empty peer list means "every peer".

Rules follow MetalLB's config.go, its CRD validations and webhooks, with the messages reworded to name
the field. Where this speaker (ExaBGP) cannot do what MetalLB's FRR mode does, we say so: unnumbered
peering (`interface`) is an error, a `bfdProfile` is a warning (no BFD); `localASN` is presented on
the session as FRR's `local-as X no-prepend replace-as` presents it. A few checks are ours: a CIDR
with host bits set warns, a peer address and its source address must share a family, two peers that
one node could not run side by side (one session, or one address with the same ASNs) keep the one in
force, and a duplicate name leaves out every object of that name (a manifests folder reports
duplicates before compile and keeps the definition in force, see `sources.manifests`); metallb.io
objects outside MetalLB's namespace are ignored with a warning, as MetalLB does not watch them.

Last valid versions. Leaving a bad object out is right for a new object, but wrong for an edit: a typo
in a working pool would take its Services' IPs away, and an edit of pool `a` that overlaps pool `b`
would, by name order, take out `b`, which nobody touched. MetalLB's webhook rejects such an edit; at
runtime we do the same with memory. Each result carries `last_good` (for each object in its Config, the
version used, plus the Secrets its peers read); the daemons pass it to the next compile, and then:

- a changed object with an error falls back to its last valid version: its errors are reported on the
  current version, with a warning that the last valid version is kept; an object that fails to parse
  (in `load_errors`) is not taken as deleted and falls back too;
- objects unchanged since they were valid are checked first, so in a clash (overlap, duplicate alias,
  duplicate peer session, localPref conflict) the new or changed object is "the later one";
- if an unchanged object is still rejected because of a changed or new one (a wider pool breaking an
  advertisement's aggregation length, a new Community making an alias ambiguous, a changed Secret), the
  changed one falls back (a new one is left out) and is reported naming the object it would break;
  the culprit is found by recompiling, not by a rule per case (see `_History`);
- a deleted object is gone (nothing is remembered for it), and a fixed edit is simply used.
With no memory (the first compile) the result is exactly that of the rules above.

The function is pure, never raises (a last-resort guard turns a bug into an error on the object), and
its output is deterministic: objects are checked in name order ("the later one" is the later name;
established objects first when there is memory) and errors are sorted. What it does not do: anything
about Services (the allocator's job) or about which node announces what (the route table's job).
"""

from __future__ import annotations

import ipaddress
import math
import re
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from metallb_bgp.api.core import Node, Secret
from metallb_bgp.api.meta import LabelSelectorSpec, to_document
from metallb_bgp.api.metallb import (
    BFDProfile,
    BGPAdvertisement,
    BGPPeer,
    BGPPeerSpecV1beta2,
    Community,
    IPAddressPool,
    MetalLBObject,
    ServiceAllocationSpec,
)
from metallb_bgp.api.names import label_key_problem, label_value_problem
from metallb_bgp.api.problems import ObjectError, Severity, printable
from metallb_bgp.api.selectors import LabelSelector, Operator, any_matches
from metallb_bgp.core import config as cfg
from metallb_bgp.core.net import IPAddress, IPNetwork, parse_ip
from metallb_bgp.core.snapshot import ClusterSnapshot

BASIC_AUTH = "kubernetes.io/basic-auth"
DEFAULT_HOLD_TIME = 90
MIN_HOLD_TIME = 3
MAX_BGP_SECONDS = 65535  # hold time and connect time are 16-bit numbers of seconds
MAX_PEER_PORT = 16384
L2_IGNORED = "ignored: this speaker announces over BGP only (L2Advertisement is MetalLB's layer 2 mode)"


ObjectKey = tuple[str, str, str]  # (kind, namespace, name)
Remembered = MetalLBObject | Secret  # what LastGood holds: metallb.io objects and the peers' password Secrets


def object_key(obj: Remembered, namespace: str) -> ObjectKey:
    """An object's identity across versions; an object without a namespace counts as `namespace`'s."""
    return (obj.kind, obj.metadata.namespace or namespace, obj.metadata.name)


class LastGood(Mapping[ObjectKey, Remembered]):
    """Immutable: for each object in the last Config, the exact version of it that was used.

    Pass `CompileResult.last_good` to the next `compile_config`. Secrets are remembered when a peer in
    the Config reads its password from them. It holds Secrets: its repr shows keys only.
    """

    __slots__ = ("_objects",)

    def __init__(self, objects: Mapping[ObjectKey, Remembered] | None = None) -> None:
        self._objects: Mapping[ObjectKey, Remembered] = MappingProxyType(dict(sorted((objects or {}).items())))

    def __getitem__(self, key: ObjectKey) -> Remembered:
        return self._objects[key]

    def __iter__(self) -> Iterator[ObjectKey]:
        return iter(self._objects)

    def __len__(self) -> int:
        return len(self._objects)

    def __repr__(self) -> str:
        return f"LastGood({list(self._objects)!r})"


@dataclass(frozen=True)
class CompileResult:
    """The compiled Config, every problem found (errors and warnings, sorted), and what to remember."""

    config: cfg.Config
    errors: tuple[ObjectError, ...] = ()
    last_good: LastGood = field(default_factory=LastGood)

    @property
    def has_errors(self) -> bool:
        return any(e.is_error for e in self.errors)

    @property
    def warnings(self) -> tuple[ObjectError, ...]:
        return tuple(e for e in self.errors if not e.is_error)


def compile_config(snapshot: ClusterSnapshot, *, last_good: LastGood | None = None) -> CompileResult:
    """Validate every metallb.io object of `snapshot` and build the Config of the good ones.

    Without `last_good` (the first compile) a bad object is reported and left out. With the previous
    result's `last_good`, a bad or harmful edit is reported and not applied: see "Last valid versions".
    """
    try:
        return _History(snapshot, last_good or LastGood()).resolve()
    except Exception as exc:  # noqa: BLE001 - the promise is "never raises"; fall back to the plain rules
        plain = _compile_once(snapshot)
        message = f"internal error while keeping last valid versions ({type(exc).__name__}); please report it"
        bug = ObjectError("Config", "", "last-valid-versions", "", message)
        return replace(plain, errors=tuple(sorted({*plain.errors, bug})), last_good=_remember(snapshot, plain))


def _compile_once(
    snapshot: ClusterSnapshot,
    *,
    established: frozenset[tuple[str, str]] = frozenset(),
    withheld: Mapping[tuple[str, str], str] | None = None,
) -> CompileResult:
    """Validate every metallb.io object of `snapshot` and build the Config of the good ones.

    `established` objects ((kind, name), known good before) are checked before the others, so that in a
    clash between two objects the new or changed one is "the later one"; `withheld` objects were taken
    out of `snapshot` by the caller, and references to them say why. Both empty: plain name order.
    """
    report = _Report(snapshot.namespace)
    report.extend(snapshot.load_errors)
    scope = _Scope(snapshot.namespace, report, established)
    scope.bad.update(withheld or {})

    bfd_profiles = {name: _bfd_profile(obj) for name, obj in scope.unique(snapshot.bfd_profiles).items()}
    aliases = _aliases(scope.unique(snapshot.communities), scope.duplicates_of(Community), report, scope.check_order)
    pool_objects = scope.unique(snapshot.pools)
    pools = _pools(pool_objects, report)
    scope.mark_invalid("IPAddressPool", pool_objects, pools)
    known = _Known(
        namespace=snapshot.namespace,
        pools=pools,
        pool_objects=(*pool_objects.values(), *scope.duplicates_of(IPAddressPool)),
        bad=scope.bad,
        bfd_profiles=bfd_profiles,
        aliases=aliases,
        secrets=_secret_index(snapshot.secrets, snapshot.namespace),
        nodes=tuple(snapshot.nodes),
    )
    peer_objects = scope.unique(snapshot.peers)
    peers = _peers(peer_objects, known, report)
    scope.mark_invalid("BGPPeer", peer_objects, peers)
    advertisements = _advertisements(scope.unique(snapshot.advertisements), replace(known, peers=peers), report)
    for l2 in snapshot.l2_advertisements:
        report.add(l2, _warn("", L2_IGNORED))

    config = cfg.Config(
        pools={name: info.pool for name, info in sorted(pools.items())},
        peers=dict(sorted(peers.items())),
        advertisements=tuple(sorted(advertisements, key=lambda a: a.name)),
        bfd_profiles=dict(sorted(bfd_profiles.items())),
    )
    return CompileResult(config=config, errors=report.sorted())


# --- reporting -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issue:
    """A problem in one object, before we know which object: the checks do not need to."""

    field: str
    message: str
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


def _err(field_: str, message: str) -> _Issue:
    return _Issue(field_, message)


def _warn(field_: str, message: str) -> _Issue:
    return _Issue(field_, message, Severity.WARNING)


class _Report:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.items: set[ObjectError] = set()

    def extend(self, errors: Iterable[ObjectError]) -> None:
        self.items.update(errors)

    def add(self, obj: MetalLBObject | Secret, issue: _Issue) -> None:
        namespace = obj.metadata.namespace or self.namespace
        self.items.add(ObjectError(obj.kind, namespace, obj.metadata.name, issue.field, issue.message, issue.severity))

    def add_all(self, obj: MetalLBObject | Secret, issues: Iterable[_Issue]) -> None:
        for issue in issues:
            self.add(obj, issue)

    def sorted(self) -> tuple[ObjectError, ...]:
        return tuple(sorted(self.items))


T = TypeVar("T")
M = TypeVar("M", bound=MetalLBObject)


def _guarded(report: _Report, obj: MetalLBObject, build: Callable[[list[_Issue]], T | None]) -> T | None:
    """Run one object's checks and record its issues; `build` returns None to leave the object out.

    A bug becomes an error on that object instead of taking every other object down with it.
    """
    issues: list[_Issue] = []
    try:
        value = build(issues)
    except Exception as exc:  # noqa: BLE001 - the promise is "never raises"; the message names the failure
        issues.append(_err("", f"internal error while compiling this object ({type(exc).__name__}); please report it"))
        value = None
    report.add_all(obj, issues)
    return value


def _has_error(issues: Iterable[_Issue]) -> bool:
    return any(issue.is_error for issue in issues)


class _Scope:
    """Which objects take part: those in MetalLB's namespace, with a name unique within their kind.

    It also fixes the order in which objects are checked: established objects first, then by name.
    """

    def __init__(self, namespace: str, report: _Report, established: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.namespace = namespace
        self.report = report
        self.established = established
        self.bad: dict[tuple[str, str], str] = {}  # (kind, name) -> why it is unusable
        self.duplicates: list[MetalLBObject] = []  # objects left out because their name is not unique

    def unique(self, objects: Iterable[M]) -> dict[str, M]:
        in_scope = [o for o in objects if self._in_namespace(o)]
        counts = Counter(o.metadata.name for o in in_scope)
        result: dict[str, M] = {}
        for obj in in_scope:
            name = obj.metadata.name
            if counts[name] > 1:
                message = f"defined {counts[name]} times; names must be unique, so none of the definitions is used"
                self.report.add(obj, _err("metadata.name", message))
                self.bad[(obj.kind, name)] = "is defined more than once"
                self.duplicates.append(obj)
            else:
                result[name] = obj
        return {obj.metadata.name: obj for obj in sorted(result.values(), key=self.check_order)}

    def check_order(self, obj: MetalLBObject) -> tuple[bool, str]:
        """Established objects first, then by name: in a clash the later one is reported and left out."""
        return ((obj.kind, obj.metadata.name) not in self.established, obj.metadata.name)

    def mark_invalid(self, kind: str, objects: Mapping[str, MetalLBObject], good: Mapping[str, object]) -> None:
        for name in objects.keys() - good.keys():
            self.bad.setdefault((kind, name), "is invalid")

    def duplicates_of(self, kind: type[M]) -> list[M]:
        return [obj for obj in self.duplicates if isinstance(obj, kind)]

    def _in_namespace(self, obj: MetalLBObject) -> bool:
        if obj.metadata.namespace and obj.metadata.namespace != self.namespace:
            message = f"ignored: metallb.io objects are read only from namespace {self.namespace}"
            self.report.add(obj, _warn("metadata.namespace", message))
            return False
        return True


# --- small parsers ----------------------------------------------------------------------------------------

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
    if start > end:
        raise ValueError(f"invalid IP range {text!r}: start {start} is after end {end}")
    return tuple(ipaddress.summarize_address_range(start, end)), ""  # type: ignore[arg-type]


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


# --- label selectors ------------------------------------------------------------------------------------


def _selectors(specs: Sequence[LabelSelectorSpec], path: str, issues: list[_Issue]) -> tuple[LabelSelector, ...]:
    """Selectors as values, after MetalLB's checks (valid requirements, no duplicates)."""
    result: list[LabelSelector] = []
    for i, spec in enumerate(specs):
        here = f"{path}[{i}]"
        issues.extend(_selector_issues(spec, here))
        selector = spec.to_selector()
        if selector in result:
            issues.append(_err(here, f"duplicate of {path}[{result.index(selector)}]"))
        result.append(selector)
    return tuple(result)


def _selector_issues(spec: LabelSelectorSpec, path: str) -> list[_Issue]:
    issues: list[_Issue] = []
    for key, value in sorted(spec.match_labels.items()):
        problem = label_key_problem(key) or label_value_problem(value)
        if problem:
            issues.append(_err(f"{path}.matchLabels", f"{key}: {problem}"))
    seen: list[tuple[str, Operator, tuple[str, ...]]] = []
    for j, expr in enumerate(spec.match_expressions):
        here = f"{path}.matchExpressions[{j}]"
        problem = label_key_problem(expr.key)
        if problem:
            issues.append(_err(f"{here}.key", problem))
        if expr.operator in (Operator.IN, Operator.NOT_IN) and not expr.values:
            issues.append(_err(f"{here}.values", f"operator {expr.operator.value} needs at least one value"))
        if expr.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and expr.values:
            issues.append(_err(f"{here}.values", f"operator {expr.operator.value} takes no values"))
        for k, value in enumerate(expr.values):
            problem = label_value_problem(value)
            if problem:
                issues.append(_err(f"{here}.values[{k}]", problem))
            elif value in expr.values[:k]:
                issues.append(_err(f"{here}.values[{k}]", f"duplicate value {value!r}"))
        identity = (expr.key, expr.operator, tuple(sorted(set(expr.values))))
        if identity in seen:
            issues.append(_err(here, f"duplicate of {path}.matchExpressions[{seen.index(identity)}]"))
        seen.append(identity)
    return issues


def _selected_nodes(selectors: Sequence[LabelSelector], nodes: Sequence[Node]) -> frozenset[str]:
    return frozenset(n.metadata.name for n in nodes if any_matches(selectors, n.metadata.labels))


def _may_share_nodes(a: Sequence[LabelSelector], b: Sequence[LabelSelector], nodes: Sequence[Node]) -> bool:
    """Whether two node selections meet: exactly, when nodes are known; else only if provably so."""
    if nodes:
        return bool(_selected_nodes(a, nodes) & _selected_nodes(b, nodes))
    return not a or not b or set(a) == set(b)


# --- BFD profiles and communities --------------------------------------------------------------------


def _bfd_profile(obj: BFDProfile) -> cfg.BFDProfile:
    spec, default = obj.spec, cfg.BFDProfile(name=obj.metadata.name)

    def pick(value: T | None, fallback: T) -> T:
        return fallback if value is None else value

    return cfg.BFDProfile(
        name=obj.metadata.name,
        receive_interval=pick(spec.receive_interval, default.receive_interval),
        transmit_interval=pick(spec.transmit_interval, default.transmit_interval),
        detect_multiplier=pick(spec.detect_multiplier, default.detect_multiplier),
        echo_interval=pick(spec.echo_interval, default.echo_interval),
        echo_mode=pick(spec.echo_mode, default.echo_mode),
        passive_mode=pick(spec.passive_mode, default.passive_mode),
        minimum_ttl=pick(spec.minimum_ttl, default.minimum_ttl),
    )


@dataclass(frozen=True)
class _Aliases:
    good: Mapping[str, cfg.Community]
    bad: Mapping[str, str]  # alias -> why it cannot be used


def _aliases(
    objects: Mapping[str, Community],
    unnamed: Sequence[Community],
    report: _Report,
    check_order: Callable[[Community], tuple[bool, str]],
) -> _Aliases:
    """Every alias of every good Community object; duplicated aliases are unusable everywhere.

    `unnamed` are the Community objects left out because their name is not unique: their aliases are
    unusable, and still count as definitions when looking for duplicates.
    """
    owners: dict[str, list[str]] = defaultdict(list)
    for obj in sorted([*objects.values(), *unnamed], key=check_order):
        for alias in obj.spec.communities:
            owners[alias.name].append(obj.metadata.name)
    good: dict[str, cfg.Community] = {}
    bad: dict[str, str] = {}
    for obj in unnamed:
        for alias in obj.spec.communities:
            bad[alias.name] = f"comes from Community {obj.metadata.name}, which is defined more than once"
    for name, obj in objects.items():
        values = _guarded(report, obj, lambda issues, obj=obj: _community_values(obj, owners, issues))
        for alias in obj.spec.communities:
            if len(owners[alias.name]) > 1:
                bad[alias.name] = f"is defined more than once (Community {', '.join(sorted(set(owners[alias.name])))})"
            elif values is None:
                bad[alias.name] = f"comes from Community {name}, which is invalid"
            else:
                good[alias.name] = values[alias.name]
    return _Aliases(good, bad)


def _community_values(
    obj: Community, owners: Mapping[str, list[str]], issues: list[_Issue]
) -> dict[str, cfg.Community] | None:
    values: dict[str, cfg.Community] = {}
    for i, alias in enumerate(obj.spec.communities):
        here = f"spec.communities[{i}]"
        try:
            community = parse_community(alias.value)
        except ValueError as exc:
            issues.append(_err(f"{here}.value", str(exc)))
            continue
        first_owner = owners[alias.name][0]  # owners are listed in check order
        if alias.name in values:
            issues.append(_err(f"{here}.name", f"alias {alias.name!r} is already defined earlier in this object"))
        elif first_owner != obj.metadata.name:
            issues.append(_err(f"{here}.name", f"alias {alias.name!r} is already defined in Community {first_owner}"))
        else:
            values[alias.name] = community
    return None if _has_error(issues) else values


# --- pools ------------------------------------------------------------------------------------------------


_Entry = tuple[str, tuple[IPNetwork, ...]]  # one spec.addresses entry as written, and its CIDRs


@dataclass(frozen=True)
class _PoolInfo:
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


def _pools(objects: Mapping[str, IPAddressPool], report: _Report) -> dict[str, _PoolInfo]:
    space = _AddressSpace()
    pools: dict[str, _PoolInfo] = {}
    for name, obj in objects.items():
        info = _guarded(report, obj, lambda issues, obj=obj: _pool(obj, space, issues))
        if info is not None:
            pools[name] = info
            for cidr in info.pool.cidrs:
                space.add(_span(cidr, name))
    return pools


def _pool(obj: IPAddressPool, space: _AddressSpace, issues: list[_Issue]) -> _PoolInfo | None:
    spec = obj.spec
    if not spec.addresses:
        issues.append(_err("spec.addresses", "at least one CIDR or IP range is required"))
    entries: list[_Entry] = []
    for i, text in enumerate(spec.addresses):
        try:
            cidrs, warning = parse_pool_addresses(text)
        except ValueError as exc:
            issues.append(_err(f"spec.addresses[{i}]", str(exc)))
            cidrs, warning = (), ""
        if warning:
            issues.append(_warn(f"spec.addresses[{i}]", warning))
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
    return None if _has_error(issues) else _PoolInfo(pool, tuple(entries))


def _overlaps_within(entries: Sequence[_Entry]) -> list[_Issue]:
    spans = sorted((_span(cidr, str(i)), i) for i, (_, cidrs) in enumerate(entries) for cidr in cidrs)
    issues: list[_Issue] = []
    widest: tuple[_Span, int] | None = None
    for span, index in spans:
        if widest is not None and widest[0].version == span.version and span.first <= widest[0].last:
            earlier, later = sorted((widest[1], index))
            message = f"{entries[later][0]!r} overlaps spec.addresses[{earlier}] ({entries[earlier][0]!r})"
            issues.append(_err(f"spec.addresses[{later}]", message))
        if widest is None or widest[0].version != span.version or span.last > widest[0].last:
            widest = (span, index)
    return list(dict.fromkeys(issues))


def _overlaps_with_other_pools(entries: Sequence[_Entry], space: _AddressSpace) -> list[_Issue]:
    issues: list[_Issue] = []
    for i, (text, cidrs) in enumerate(entries):
        for cidr in cidrs:
            other = space.clash(_span(cidr, ""))
            if other is not None:
                message = f"{text!r} overlaps {other.cidr} of IPAddressPool {other.owner}"
                issues.append(_err(f"spec.addresses[{i}]", message))
                break
    return issues


def _allocation(spec: ServiceAllocationSpec | None, issues: list[_Issue]) -> cfg.ServiceAllocation | None:
    if spec is None:
        return None
    path = "spec.serviceAllocation"
    for i, namespace in enumerate(spec.namespaces):
        if namespace in spec.namespaces[:i]:
            issues.append(_err(f"{path}.namespaces[{i}]", f"duplicate namespace {namespace!r}"))
    return cfg.ServiceAllocation(
        priority=spec.priority,
        namespaces=frozenset(spec.namespaces),
        namespace_selectors=_selectors(spec.namespace_selectors, f"{path}.namespaceSelectors", issues),
        service_selectors=_selectors(spec.service_selectors, f"{path}.serviceSelectors", issues),
    )


# --- peers ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Known:
    """What the later objects may refer to, and why an unusable name is unusable."""

    namespace: str
    pools: Mapping[str, _PoolInfo]
    pool_objects: tuple[IPAddressPool, ...]
    bad: Mapping[tuple[str, str], str]
    bfd_profiles: Mapping[str, cfg.BFDProfile]
    aliases: _Aliases
    secrets: Mapping[tuple[str, str], tuple[Secret, ...]]
    nodes: tuple[Node, ...]
    peers: Mapping[str, cfg.Peer] = field(default_factory=dict)
    secret_issues: list[tuple[Secret, _Issue]] = field(default_factory=list)  # found while reading passwords


def _secret_index(secrets: Iterable[Secret], namespace: str) -> dict[tuple[str, str], tuple[Secret, ...]]:
    index: dict[tuple[str, str], list[Secret]] = defaultdict(list)
    for secret in secrets:
        index[(secret.metadata.namespace or namespace, secret.metadata.name)].append(secret)
    return {key: tuple(found) for key, found in index.items()}


def _peers(objects: Mapping[str, BGPPeer], known: _Known, report: _Report) -> dict[str, cfg.Peer]:
    peers: dict[str, cfg.Peer] = {}
    for name, obj in objects.items():
        peer = _guarded(report, obj, lambda issues, obj=obj: _peer(obj, known, issues))
        if peer is None:
            continue
        twin = next((p for p in peers.values() if _same_session(p, peer, known.nodes)), None)
        if twin is not None:
            report.add(obj, _err("spec.peerAddress", _clash_message(twin, peer)))
            continue
        peers[name] = peer
    for secret, issue in known.secret_issues:
        report.add(secret, issue)
    return peers


def _same_session(a: cfg.Peer, b: cfg.Peer, nodes: Sequence[Node]) -> bool:
    """Two peers that one node cannot run side by side: the same session (address, port, VRF), or the
    same address and ASNs, which is how ExaBGP tells its neighbours apart (the port is not part of it).
    Whether they meet on a node is decided on the Node objects when there are any (selectors OR-ed
    across one peer's list may match one node only through its labels), else only where provable.
    The caller checks peers in force first, so the newcomer is the one reported and left out: a working
    session is never dropped for it."""
    clash = (a.address, a.port, a.vrf) == (b.address, b.port, b.vrf) or _exabgp_identity(a) == _exabgp_identity(b)
    return clash and _may_share_nodes(a.node_selectors, b.node_selectors, nodes)


def _exabgp_identity(peer: cfg.Peer) -> tuple[object, ...]:
    return (peer.address, peer.my_asn, peer.peer_asn, peer.dynamic_asn)


def _clash_message(twin: cfg.Peer, peer: cfg.Peer) -> str:
    if (twin.address, twin.port, twin.vrf) == (peer.address, peer.port, peer.vrf):
        return f"BGPPeer {twin.name} already peers with {peer.address} port {peer.port} from the same nodes"
    return (
        f"BGPPeer {twin.name} already peers with {peer.address} with the same ASNs from the same nodes"
        f" (port {twin.port}); ExaBGP cannot run two sessions that differ only in port or VRF"
    )


def _peer(obj: BGPPeer, known: _Known, issues: list[_Issue]) -> cfg.Peer | None:
    spec = obj.spec
    _check_asns(obj, issues)
    address = _peer_address(obj, issues)
    source = _optional_ip(spec.source_address, "spec.sourceAddress", issues)
    if address is not None and source is not None and source.version != address.version:
        issues.append(_err("spec.sourceAddress", f"{source} and peerAddress {address} are of different IP families"))
    router_id = _optional_ip(spec.router_id, "spec.routerID", issues)
    if router_id is not None and router_id.version != 4:
        issues.append(_err("spec.routerID", f"{router_id} is not an IPv4 address (a BGP router ID is 32 bits)"))
    if spec.peer_port == 0:
        issues.append(_err("spec.peerPort", f"must be from 1 to {MAX_PEER_PORT}"))
    hold, keepalive = _timers(spec.hold_time, spec.keepalive_time, issues)
    connect = _connect_time(spec.connect_time, issues)
    node_selectors = _selectors(spec.node_selectors, "spec.nodeSelectors", issues)
    password = _password(obj, known, issues)
    _check_bfd(spec.bfd_profile, known, issues)
    _check_flags(obj, issues)
    if address is None or _has_error(issues):
        return None
    return cfg.Peer(
        name=obj.metadata.name,
        my_asn=_session_asn(spec),
        address=address,
        peer_asn=spec.peer_asn or None,
        dynamic_asn=cfg.DynamicASN(spec.dynamic_asn) if spec.dynamic_asn else None,
        port=spec.peer_port,
        source_address=source,
        router_id=router_id,
        hold_time=hold,
        keepalive_time=keepalive,
        connect_time=connect,
        node_selectors=node_selectors,
        password=password,
        bfd_profile=spec.bfd_profile or None,
        graceful_restart=spec.enable_graceful_restart,
        ebgp_multihop=spec.ebgp_multi_hop,
        vrf=spec.vrf,
        disable_mp=spec.disable_mp,
        dual_stack=spec.dual_stack_address_family,
    )


def _check_asns(obj: BGPPeer, issues: list[_Issue]) -> None:
    spec = obj.spec
    if not spec.my_asn:
        issues.append(_err("spec.myASN", "must not be 0"))
    if spec.peer_asn and spec.dynamic_asn:
        issues.append(_err("spec.dynamicASN", "peerASN and dynamicASN are mutually exclusive; set only one"))
    elif not spec.peer_asn and not spec.dynamic_asn:
        issues.append(_err("spec.peerASN", "required (or set dynamicASN to internal or external)"))
    ibgp = spec.dynamic_asn == "internal" or (bool(spec.peer_asn) and spec.peer_asn == _session_asn(spec))
    if ibgp and spec.ebgp_multi_hop:
        issues.append(_err("spec.ebgpMultiHop", "must not be set for an iBGP peer (peer ASN equals myASN)"))


def _session_asn(spec: BGPPeerSpecV1beta2) -> int:
    """The AS this speaker presents on the session: `localASN` when set (MetalLB's FRR modes render it
    `local-as X no-prepend replace-as`, so the router sees X alone in the AS path; ExaBGP's per-neighbour
    `local-as` does the same), else `myASN`."""
    return spec.local_asn or spec.my_asn


def _peer_address(obj: BGPPeer, issues: list[_Issue]) -> IPAddress | None:
    spec = obj.spec
    if spec.peer_address and spec.interface:
        issues.append(_err("spec.interface", "peerAddress and interface are mutually exclusive; set only one"))
    elif spec.interface:
        message = "BGP unnumbered peering over an interface is not supported by this speaker; set peerAddress"
        issues.append(_err("spec.interface", message))
        return None
    elif not spec.peer_address:
        issues.append(_err("spec.peerAddress", "required"))
        return None
    return _optional_ip(spec.peer_address, "spec.peerAddress", issues)


def _optional_ip(text: str, path: str, issues: list[_Issue]) -> IPAddress | None:
    if not text:
        return None
    try:
        return parse_ip(text)
    except ValueError as exc:
        issues.append(_err(path, str(exc)))
        return None


def _timers(hold_given: float | None, keepalive_given: float | None, issues: list[_Issue]) -> tuple[int, int]:
    """MetalLB's parseTimers: derive the missing one (keepalive = hold/3, hold = 3 x keepalive), then check.

    BGP carries whole seconds (the hold time in 16 bits), so values are truncated as MetalLB does.
    """
    if hold_given is None and keepalive_given is None:
        return DEFAULT_HOLD_TIME, DEFAULT_HOLD_TIME // 3
    hold = hold_given if hold_given is not None else 3 * keepalive_given  # type: ignore[operator]
    keepalive = keepalive_given if keepalive_given is not None else hold / 3
    if hold > MAX_BGP_SECONDS:
        path = "spec.holdTime" if hold_given is not None else "spec.keepaliveTime"
        issues.append(_err(path, f"gives a hold time of {hold:g}s; BGP allows at most {MAX_BGP_SECONDS}s"))
        return 0, 0
    if int(hold) != 0 and int(hold) < MIN_HOLD_TIME:
        if hold_given is not None:
            issues.append(_err("spec.holdTime", f"{hold:g}s: must be 0 or at least {MIN_HOLD_TIME}s"))
        else:
            message = f"{keepalive:g}s gives a hold time of {hold:g}s (3 x keepaliveTime); it must be 0 or >= {MIN_HOLD_TIME}s"
            issues.append(_err("spec.keepaliveTime", message))
    elif keepalive > hold:
        issues.append(_err("spec.keepaliveTime", f"{keepalive:g}s must not exceed holdTime {hold:g}s"))
    for path, value in (("spec.holdTime", hold_given), ("spec.keepaliveTime", keepalive_given)):
        if value is not None and math.isfinite(value) and value != int(value):
            issues.append(_warn(path, f"BGP counts whole seconds: {value:g}s is used as {int(value)}s"))
    return int(hold), int(keepalive) if math.isfinite(keepalive) else 0  # an infinite keepalive was reported


def _connect_time(value: float | None, issues: list[_Issue]) -> int | None:
    if value is None:
        return None
    if not 1 <= value <= MAX_BGP_SECONDS:
        issues.append(_err("spec.connectTime", f"must be from 1s to {MAX_BGP_SECONDS}s"))
        return None
    if value != int(value):
        issues.append(_err("spec.connectTime", "must be a whole number of seconds"))
    return int(value)


def _password(obj: BGPPeer, known: _Known, issues: list[_Issue]) -> str | None:
    """The TCP MD5 password, from the spec or its Secret. Never put it (or any part of it) in a message."""
    spec = obj.spec
    if spec.password and spec.password_secret is not None:
        issues.append(_err("spec.passwordSecret", "password and passwordSecret are mutually exclusive; set only one"))
        return None
    if spec.password_secret is None:
        if any(c in spec.password for c in "\r\n"):
            issues.append(_err("spec.password", "must not contain line breaks"))
        elif len(spec.password.encode()) > cfg.MAX_MD5_PASSWORD_BYTES:
            issues.append(_err("spec.password", f"longer than {cfg.MAX_MD5_PASSWORD_BYTES} bytes (TCP MD5's limit)"))
            return None
        return spec.password or None
    ref = spec.password_secret
    namespace = ref.namespace or known.namespace
    if namespace != known.namespace:
        message = f"must be {known.namespace} or empty: only Secrets in MetalLB's namespace are read"
        issues.append(_err("spec.passwordSecret.namespace", message))
        return None
    found = known.secrets.get((namespace, ref.name), ())
    if len(found) != 1:
        problem = "not found" if not found else "defined more than once"
        issues.append(_err("spec.passwordSecret", f"Secret {namespace}/{ref.name} {problem}"))
        return None
    secret = found[0]
    if secret.type != BASIC_AUTH:
        message = f"Secret {namespace}/{ref.name} has type {secret.type!r}; a password Secret must be {BASIC_AUTH}"
        issues.append(_err("spec.passwordSecret", message))
        return None
    try:
        password = secret.value("password")
    except ValueError as exc:
        known.secret_issues.append((secret, _err("data.password", str(exc))))
        issues.append(_err("spec.passwordSecret", f"Secret {namespace}/{ref.name} is invalid: {exc}"))
        return None
    if password is None:
        issues.append(_err("spec.passwordSecret", f"Secret {namespace}/{ref.name} has no 'password' key"))
        return None
    if any(c in password for c in "\r\n"):
        issues.append(_err("spec.passwordSecret", f"the password in Secret {namespace}/{ref.name} has a line break"))
        return None
    if len(password.encode()) > cfg.MAX_MD5_PASSWORD_BYTES:
        message = f"the password in Secret {namespace}/{ref.name} is longer than {cfg.MAX_MD5_PASSWORD_BYTES} bytes (TCP MD5's limit)"
        issues.append(_err("spec.passwordSecret", message))
        return None
    return password or None


def _check_bfd(profile: str, known: _Known, issues: list[_Issue]) -> None:
    if not profile:
        return
    if profile in known.bfd_profiles:
        message = "BFD is not implemented by this speaker (ExaBGP); the session runs without it"
        issues.append(_warn("spec.bfdProfile", message))
    elif ("BFDProfile", profile) in known.bad:
        issues.append(_err("spec.bfdProfile", f"BFDProfile {profile} {known.bad[('BFDProfile', profile)]}"))
    else:
        issues.append(_err("spec.bfdProfile", f"no BFDProfile named {profile}"))


_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
INTERFACE_SHAPE = "1 to 15 letters, digits, '-', '_' or '.'"


def _check_flags(obj: BGPPeer, issues: list[_Issue]) -> None:
    spec = obj.spec
    if spec.disable_mp:
        if spec.dual_stack_address_family:
            issues.append(_err("spec.disableMP", "contradicts dualStackAddressFamily: true; remove disableMP"))
        else:
            message = "deprecated: use dualStackAddressFamily (its default, false, keeps each family on its own session)"
            issues.append(_warn("spec.disableMP", message))
    if spec.vrf and not _INTERFACE_NAME.fullmatch(spec.vrf):
        issues.append(_err("spec.vrf", f"{printable(spec.vrf)!r} is not a VRF (a Linux interface name: {INTERFACE_SHAPE})"))


# --- advertisements ------------------------------------------------------------------------------------


def _advertisements(objects: Mapping[str, BGPAdvertisement], known: _Known, report: _Report) -> list[cfg.Advertisement]:
    accepted: list[cfg.Advertisement] = []
    for obj in objects.values():
        advertisement = _guarded(report, obj, lambda issues, obj=obj: _advertisement(obj, known, accepted, issues))
        if advertisement is not None:
            accepted.append(advertisement)
    return accepted


def _advertisement(
    obj: BGPAdvertisement, known: _Known, accepted: Sequence[cfg.Advertisement], issues: list[_Issue]
) -> cfg.Advertisement | None:
    """The advertisement, or None when it must be left out (its own error, or no usable peer)."""
    spec = obj.spec
    own: list[_Issue] = []
    lists = {"spec.ipAddressPools": spec.ip_address_pools, "spec.peers": spec.peers, "spec.communities": spec.communities}
    for path, names in lists.items():
        own.extend(_err(f"{path}[{i}]", f"duplicate {name!r}") for i, name in enumerate(names) if name in names[:i])
    pool_selectors = _selectors(spec.ip_address_pool_selectors, "spec.ipAddressPoolSelectors", own)
    node_selectors = _selectors(spec.node_selectors, "spec.nodeSelectors", own)
    service_selectors = _selectors(spec.service_selectors, "spec.serviceSelectors", own)
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
    if peers_fatal or _has_error(own):
        return None
    conflicts = _local_pref_conflicts(advertisement, accepted, known)
    issues.extend(conflicts)
    return None if conflicts else advertisement


def _aggregation_limits(obj: BGPAdvertisement) -> list[_Issue]:
    spec = obj.spec
    issues: list[_Issue] = []
    if spec.aggregation_length > 32:
        issues.append(_err("spec.aggregationLength", f"{spec.aggregation_length} is longer than 32 (IPv4)"))
    if spec.aggregation_length_v6 > 128:
        issues.append(_err("spec.aggregationLengthV6", f"{spec.aggregation_length_v6} is longer than 128 (IPv6)"))
    if spec.service_selectors:
        if spec.aggregation_length != 32:
            issues.append(_err("spec.aggregationLength", "must stay 32 when serviceSelectors are set (MetalLB)"))
        if spec.aggregation_length_v6 != 128:
            issues.append(_err("spec.aggregationLengthV6", "must stay 128 when serviceSelectors are set (MetalLB)"))
    return issues


def _communities(entries: Sequence[str], aliases: _Aliases, issues: list[_Issue]) -> frozenset[cfg.Community]:
    """Values and aliases, resolved (an alias wins over a value of the same spelling, as in MetalLB)."""
    result: set[cfg.Community] = set()
    for i, text in enumerate(entries):
        here = f"spec.communities[{i}]"
        if text in aliases.good:
            result.add(aliases.good[text])
        elif text in aliases.bad:
            issues.append(_err(here, f"community alias {text!r} {aliases.bad[text]}"))
        else:
            try:
                result.add(parse_community(text))
            except NotACommunity:
                message = f"{text!r} is neither a community value (AA:NN or large:A:B:C) nor an alias from a Community"
                issues.append(_err(here, message))
            except ValueError as exc:
                issues.append(_err(here, str(exc)))
    return frozenset(result)


def _advertised_pools(
    obj: BGPAdvertisement, selectors: Sequence[LabelSelector], known: _Known, issues: list[_Issue]
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
            issues.append(_err(f"spec.ipAddressPools[{i}]", _pool_problem(name, known)))
        else:  # MetalLB accepts it: nothing is announced for the missing name
            issues.append(_warn(f"spec.ipAddressPools[{i}]", f"no IPAddressPool named {name}; nothing is advertised for it"))
    for j, selector in enumerate(selectors):
        here = f"spec.ipAddressPoolSelectors[{j}]"
        chosen.update(name for name, info in known.pools.items() if selector.matches(info.pool.labels))
        bad = {p.metadata.name for p in known.pool_objects if selector.matches(p.metadata.labels)} - known.pools.keys()
        issues.extend(_err(here, f"selects IPAddressPool {name}, which is invalid and not advertised") for name in sorted(bad))
    return frozenset(chosen)


def _pool_problem(name: str, known: _Known) -> str:
    if ("IPAddressPool", name) in known.bad:
        return f"IPAddressPool {name} {known.bad[('IPAddressPool', name)]}; its addresses are not advertised"
    return f"no IPAddressPool named {name}"


def _advertised_peers(names: Sequence[str], known: _Known, issues: list[_Issue]) -> tuple[frozenset[str], bool]:
    """The named peers that exist; fatal when names were given and none is usable (empty means every peer)."""
    chosen: set[str] = set()
    for i, name in enumerate(names):
        if name in known.peers:
            chosen.add(name)
        elif ("BGPPeer", name) in known.bad:
            issues.append(_err(f"spec.peers[{i}]", f"BGPPeer {name} {known.bad[('BGPPeer', name)]}"))
        else:  # MetalLB accepts it: nothing is announced to the missing name
            issues.append(_warn(f"spec.peers[{i}]", f"no BGPPeer named {name}; nothing is advertised to it"))
    fatal = bool(names) and not chosen
    if fatal:
        message = "no named peer is usable, so this advertisement is not used (an empty list would mean every peer)"
        missing_only = all(("BGPPeer", name) not in known.bad for name in names)
        issues.append((_warn if missing_only else _err)("spec.peers", message))
    return frozenset(chosen), fatal


def _aggregation_vs_pools(obj: BGPAdvertisement, pools: Iterable[str], known: _Known) -> list[_Issue]:
    """MetalLB: an aggregation length shorter than an entry's widest prefix would announce foreign addresses."""
    spec = obj.spec
    issues: list[_Issue] = []
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
                issues.append(_err(path, message))
    return issues


def _local_pref_conflicts(new: cfg.Advertisement, accepted: Sequence[cfg.Advertisement], known: _Known) -> list[_Issue]:
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
                return [_err("spec.localPref", message)]
    return []


def _same_update(new: cfg.Advertisement, old: cfg.Advertisement, pool: _PoolInfo, nodes: Sequence[Node]) -> bool:
    families = pool.families
    v4_differs = new.aggregation_length != old.aggregation_length
    v6_differs = new.aggregation_length_v6 != old.aggregation_length_v6
    if not families or (v4_differs and v6_differs):
        return False
    if (v4_differs and 6 not in families) or (v6_differs and 4 not in families):
        return False
    if new.peers and old.peers and not new.peers & old.peers:
        return False
    return _may_share_nodes(new.node_selectors, old.node_selectors, nodes)


# --- last valid versions ---------------------------------------------------------------------------------

KEEPING_LAST_VALID = "keeping the last valid version until this is fixed"
WITHHELD = "is left out until its errors are fixed"
_FIELD_OF_KIND: Mapping[str, str] = {  # ClusterSnapshot field holding each remembered kind
    "IPAddressPool": "pools",
    "BGPPeer": "peers",
    "BGPAdvertisement": "advertisements",
    "Community": "communities",
    "BFDProfile": "bfd_profiles",
    "Secret": "secrets",
}
_LAYER: Mapping[str, int] = {  # an object's acceptance depends only on objects of its own or a lower layer
    "IPAddressPool": 0, "Community": 0, "BFDProfile": 0, "Secret": 0, "BGPPeer": 1, "BGPAdvertisement": 2,
}  # fmt: skip
_DEPENDS_ON: Mapping[str, frozenset[str]] = {  # kinds whose objects can get an object of this kind rejected
    "IPAddressPool": frozenset({"IPAddressPool"}),
    "Community": frozenset({"Community"}),
    "BFDProfile": frozenset({"BFDProfile"}),
    "BGPPeer": frozenset({"BGPPeer", "BFDProfile", "Secret"}),
    "BGPAdvertisement": frozenset(_LAYER),
}
_SINGLE_TRIALS = 16  # culprits tried one by one before holding back every candidate at once
_VOLATILE_METADATA = {"resource_version", "generation", "annotations", "uid", "deletion_timestamp"}


def same_version(a: Remembered, b: Remembered) -> bool:
    """Whether two versions of one object compile the same: equal, one resourceVersion, or equal content.

    Content leaves out what changes without the user editing anything (resourceVersion after a status
    write, annotations, status).
    """
    if a == b:
        return True
    if type(a) is not type(b):
        return False
    version = a.metadata.resource_version
    return bool(version and version == b.metadata.resource_version) or _content(a) == _content(b)


def _content(obj: Remembered) -> dict[str, object]:
    return to_document(obj, exclude={"status": True, "metadata": _VOLATILE_METADATA})


def _changed_field(current: Remembered, previous: Remembered | None) -> str:
    """The field an edit changed (`spec.addresses`), or its common prefix when it changed several."""
    now = _content(current)
    if previous is None:
        return "spec" if "spec" in now else ""
    before = _content(previous)
    paths: list[str] = []
    for top in sorted(now.keys() | before.keys()):
        new, old = now.get(top), before.get(top)
        if new == old:
            continue
        if isinstance(new, dict) and isinstance(old, dict) and top in ("spec", "metadata"):
            paths.extend(f"{top}.{key}" for key in sorted(new.keys() | old.keys()) if new.get(key) != old.get(key))
        else:
            paths.append(top)
    if len(paths) == 1:
        return paths[0]
    tops = {path.split(".")[0] for path in paths}
    return tops.pop() if len(tops) == 1 else ""


def _names(message: str, key: ObjectKey) -> bool:
    """Whether a message names the object, as the rules write it: `IPAddressPool a`, `Community a, b`,
    `Secret ns/s`."""
    kind, namespace, name = key
    pattern = rf"\b{kind} (?:([\w.-]+)/)?([\w.-]+(?:, [\w.-]+)*)"
    return any(
        name in match.group(2).split(", ") and match.group(1) in (None, namespace)
        for match in re.finditer(pattern, message)
    )


@dataclass(frozen=True)
class _Held:
    """An object whose current version is not used: its last valid version instead, or nothing if new."""

    version: Remembered | None
    errors: tuple[ObjectError, ...]  # reported instead of the errors of whatever is used in its place


@dataclass(frozen=True)
class _Outcome:
    """One compile of one choice of versions, and which objects made it into its Config."""

    snapshot: ClusterSnapshot  # the versions compiled
    result: CompileResult
    accepted: frozenset[ObjectKey]  # in the Config (Communities: without error; Secrets: read by such a peer)
    erroneous: frozenset[ObjectKey]  # with at least one error
    by_object: Mapping[ObjectKey, tuple[ObjectError, ...]]  # the result's errors, by the object they name

    def errors_of(self, key: ObjectKey) -> tuple[ObjectError, ...]:
        return self.by_object.get(key, ())


def _outcome(snapshot: ClusterSnapshot, result: CompileResult) -> _Outcome:
    namespace, config = snapshot.namespace, result.config
    by_object: dict[ObjectKey, list[ObjectError]] = defaultdict(list)
    for error in result.errors:
        by_object[(error.kind, error.namespace or namespace, error.name)].append(error)
    erroneous = frozenset(key for key, errors in by_object.items() if any(e.is_error for e in errors))
    accepted = {
        *(("IPAddressPool", namespace, name) for name in config.pools),
        *(("BGPPeer", namespace, name) for name in config.peers),
        *(("BGPAdvertisement", namespace, adv.name) for adv in config.advertisements),
        *(("BFDProfile", namespace, name) for name in config.bfd_profiles),
    }
    communities = (object_key(obj, namespace) for obj in snapshot.communities)
    accepted.update(key for key in communities if key[1] == namespace and key not in erroneous)
    secrets = Counter(object_key(obj, namespace) for obj in snapshot.secrets)
    for peer in snapshot.peers:
        ref = peer.spec.password_secret
        if ref is not None and object_key(peer, namespace) in accepted:
            key = ("Secret", ref.namespace or namespace, ref.name)
            if secrets[key] == 1:
                accepted.add(key)
    return _Outcome(snapshot, result, frozenset(accepted), erroneous, {k: tuple(v) for k, v in by_object.items()})


def _memory_of(outcome: _Outcome) -> LastGood:
    namespace = outcome.snapshot.namespace
    kept: dict[ObjectKey, Remembered] = {}
    for field_name in _FIELD_OF_KIND.values():
        for obj in getattr(outcome.snapshot, field_name):
            if object_key(obj, namespace) in outcome.accepted:  # accepted objects have a unique key
                kept[object_key(obj, namespace)] = obj
    return LastGood(kept)


def _remember(snapshot: ClusterSnapshot, result: CompileResult) -> LastGood:
    return _memory_of(_outcome(snapshot, result))


def _error_texts(errors: Iterable[ObjectError]) -> set[tuple[str, str]]:
    return {(e.field, e.message) for e in errors if e.is_error}


class _History:
    """One compile against the last valid versions: which current versions to hold back, found by recompiling.

    Starting from every current version, each round compiles and then, in the lowest layer that has work:
    1. a changed object that is rejected, or has an error its last valid version does not have, falls
       back to that version;
    2. else, when established objects (unchanged since they were valid, or fallen back) are rejected,
       the changed or new objects that cause this step back: those the victims' errors name (all victims
       in one trial compile), else, for the first victim, the first candidate whose stepping back clears
       it, else the fewest of all candidates that do. If none of this clears it, it stays rejected (a deleted
       dependency, a Node's labels: nothing to hold back).
    Every round holds back at least one more object or gives up on one victim, so it ends; choices are
    made in sorted order, so the outcome is deterministic. The result is the last compile, with the errors
    of each held-back object taken from the compile where its current version was used.
    """

    def __init__(self, snapshot: ClusterSnapshot, memory: LastGood) -> None:
        self.snapshot = snapshot
        self.namespace = snapshot.namespace
        self.memory = {
            key: obj for key, obj in memory.items() if key[0] in _LAYER and (key[0] == "Secret" or key[1] == self.namespace)
        }
        current: dict[ObjectKey, list[Remembered]] = defaultdict(list)
        for field_name in _FIELD_OF_KIND.values():
            for obj in getattr(snapshot, field_name):
                current[object_key(obj, self.namespace)].append(obj)
        self.current = {key: tuple(objs) for key, objs in sorted(current.items())}
        self.unchanged = frozenset(
            key
            for key, objs in self.current.items()
            if key in self.memory and len(objs) == 1 and same_version(objs[0], self.memory[key])
        )
        self.movable = [  # changed or new, so they may be held back
            key for key in self.current if key not in self.unchanged and (key[0] == "Secret" or key[1] == self.namespace)
        ]
        self.outcomes: dict[frozenset[tuple[ObjectKey, bool]], _Outcome] = {}

    def resolve(self) -> CompileResult:
        held = self._unreadable()
        gave_up: set[ObjectKey] = set()
        for _ in range(2 * (len(self.current) + len(held)) + 2):
            if not self._step(held, gave_up):
                break
        return self._result(self.compile(held), held)

    def _step(self, held: dict[ObjectKey, _Held], gave_up: set[ObjectKey]) -> bool:
        """One round: hold back more objects (or give up on a victim) in the lowest layer with work."""
        outcome = self.compile(held)
        for layer in sorted(set(_LAYER.values())):
            broken = self._broken(layer, held, outcome)
            if broken:
                held.update({key: _Held(self.memory[key], outcome.errors_of(key)) for key in broken})
                return True
            victims = [
                key
                for key in sorted(self._established(held))
                if _LAYER[key[0]] == layer and key[0] != "Secret" and key not in outcome.accepted and key not in gave_up
            ]
            if not victims:
                continue
            blamed = self._blame_named(victims, held, outcome) or {key: victims[0] for key in self._culprits(victims[0], held)}
            if not blamed:
                gave_up.add(victims[0])
            for key, victim in sorted(blamed.items()):
                held[key] = _Held(self.memory.get(key), outcome.errors_of(key) + self._note(key, victim, outcome))
            return True
        return False

    def compile(self, held: Mapping[ObjectKey, _Held]) -> _Outcome:
        signature = frozenset((key, choice.version is not None) for key, choice in held.items())
        if signature not in self.outcomes:
            effective = self._effective(held)
            established = frozenset((kind, name) for kind, namespace, name in self._established(held))
            withheld = {
                (kind, name): WITHHELD
                for (kind, namespace, name), choice in held.items()
                if choice.version is None and namespace == self.namespace
            }
            result = _compile_once(effective, established=established, withheld=withheld)
            self.outcomes[signature] = _outcome(effective, result)
        return self.outcomes[signature]

    def _unreadable(self) -> dict[ObjectKey, _Held]:
        """Objects whose new version failed to parse are not deleted: they keep their last valid version."""
        load_errors: dict[ObjectKey, list[ObjectError]] = defaultdict(list)
        for error in self.snapshot.load_errors:
            load_errors[(error.kind, error.namespace or self.namespace, error.name)].append(error)
        return {
            key: _Held(last, tuple(load_errors[key]))
            for key, last in self.memory.items()
            if key not in self.current and key in load_errors
        }

    def _established(self, held: Mapping[ObjectKey, _Held]) -> set[ObjectKey]:
        """Objects used in a version that was valid last time: checked first, and never the ones to lose."""
        kept = {key for key, choice in held.items() if choice.version is not None}
        return kept | {key for key in self.unchanged if key not in held}

    def _broken(self, layer: int, held: Mapping[ObjectKey, _Held], outcome: _Outcome) -> list[ObjectKey]:
        """Rule 1: changed objects of `layer` that are rejected, or have an error their last valid version
        does not have (an advertisement narrowed to fewer pools), fall back to their last valid version."""
        changed = [
            key
            for key in self.current
            if _LAYER[key[0]] == layer
            and key[0] != "Secret"
            and key in self.memory
            and key not in held
            and key not in self.unchanged
            and (key not in outcome.accepted or key in outcome.erroneous)
        ]
        flawed = [key for key in changed if key in outcome.accepted]
        if not flawed:
            return changed
        before = self.compile({**held, **{key: _Held(self.memory[key], ()) for key in flawed}})
        worse = {key for key in flawed if not _error_texts(outcome.errors_of(key)) <= _error_texts(before.errors_of(key))}
        return [key for key in changed if key not in outcome.accepted or key in worse]

    def _candidates(self, victim: ObjectKey, held: Mapping[ObjectKey, _Held]) -> list[ObjectKey]:
        """The changed or new objects that could get `victim` rejected."""
        return [key for key in self.movable if key not in held and key[0] in _DEPENDS_ON[victim[0]]]

    def _named(self, victim: ObjectKey, candidates: Iterable[ObjectKey], outcome: _Outcome) -> list[ObjectKey]:
        reasons = [e.message for e in outcome.errors_of(victim) if e.is_error]
        return [key for key in candidates if any(_names(reason, key) for reason in reasons)]

    def _blame_named(
        self, victims: Sequence[ObjectKey], held: Mapping[ObjectKey, _Held], outcome: _Outcome
    ) -> dict[ObjectKey, ObjectKey]:
        """Rule 2 for many victims at once (one compile): culprit -> victim, for the objects the victims'
        errors name, when holding all of them back clears the victim."""
        named = {victim: self._named(victim, self._candidates(victim, held), outcome) for victim in victims}
        suspects = sorted({key for keys in named.values() for key in keys})
        if not suspects:
            return {}
        trial = self.compile({**held, **{key: _Held(self.memory.get(key), ()) for key in suspects}})
        blamed: dict[ObjectKey, ObjectKey] = {}
        for victim, keys in named.items():
            if victim in trial.accepted:
                for key in keys:
                    blamed.setdefault(key, victim)
        return blamed

    def _culprits(self, victim: ObjectKey, held: Mapping[ObjectKey, _Held]) -> tuple[ObjectKey, ...]:
        """Rule 2 for one victim: the changed or new objects whose stepping back lets it into the Config."""
        candidates = self._candidates(victim, held)
        if not candidates:
            return ()
        named = self._named(victim, candidates, self.compile(held))
        others = [key for key in candidates if key not in named]

        def clears(trial: Iterable[ObjectKey]) -> bool:
            stepped_back = {key: _Held(self.memory.get(key), ()) for key in trial}
            return victim in self.compile({**held, **stepped_back}).accepted

        for trial in [(key,) for key in (*named, *others)[:_SINGLE_TRIALS]]:
            if clears(trial):
                return trial
        if not clears(candidates):
            return ()
        culprits = list(candidates)  # several together: keep only those needed, the unnamed ones tried first
        for key in (*reversed(others), *reversed(named)):
            if len(culprits) > 1 and clears(k for k in culprits if k != key):
                culprits.remove(key)
        return tuple(culprits)

    def _note(self, culprit: ObjectKey, victim: ObjectKey, outcome: _Outcome) -> tuple[ObjectError, ...]:
        """The error on an object held back for breaking another, unless its own errors already say why."""
        own = outcome.errors_of(culprit)
        if culprit not in outcome.accepted and any(e.is_error for e in own):
            return ()
        reasons = [e for e in outcome.errors_of(victim) if e.is_error]
        reason = next((e for e in reasons if _names(e.message, culprit)), reasons[0] if reasons else None)
        detail = "" if reason is None else f" ({reason.field}: {reason.message})" if reason.field else f" ({reason.message})"
        verb = "not applied" if culprit in self.memory else "left out"
        victim_ref = ObjectError(*victim, "", "").object_ref
        field_ = _changed_field(self.current[culprit][0], self.memory.get(culprit))
        return (ObjectError(*culprit, field_, f"{verb}: it would make {victim_ref} invalid{detail}"),)

    def _effective(self, held: Mapping[ObjectKey, _Held]) -> ClusterSnapshot:
        """The snapshot with each held object replaced by its last valid version, or taken out."""
        chosen: dict[str, list[Remembered]] = {}
        for field_name in _FIELD_OF_KIND.values():
            objects: list[Remembered] = []
            seen: set[ObjectKey] = set()
            for obj in getattr(self.snapshot, field_name):
                key = object_key(obj, self.namespace)
                if key not in held:
                    objects.append(obj)
                elif key not in seen:
                    seen.add(key)
                    version = held[key].version
                    if version is not None:
                        objects.append(version)
            chosen[field_name] = objects
        for key, choice in held.items():
            if key not in self.current and choice.version is not None:
                chosen[_FIELD_OF_KIND[key[0]]].append(choice.version)
        return replace(self.snapshot, **{name: tuple(objects) for name, objects in chosen.items()})

    def _result(self, outcome: _Outcome, held: Mapping[ObjectKey, _Held]) -> CompileResult:
        """The last compile, reporting each held object's current errors (and any its last version has)."""
        errors = {e for e in outcome.result.errors if (e.kind, e.namespace or self.namespace, e.name) not in held}
        for key, choice in held.items():
            errors.update(choice.errors)
            if choice.version is None:
                continue
            if key in outcome.accepted:
                errors.add(ObjectError(*key, "", KEEPING_LAST_VALID, Severity.WARNING))
            else:  # even the last valid version is rejected now (a deleted dependency): say why
                errors.update(outcome.errors_of(key))
        return CompileResult(config=outcome.result.config, errors=tuple(sorted(errors)), last_good=_memory_of(outcome))
