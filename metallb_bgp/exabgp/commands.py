"""Turn route changes into ExaBGP API command lines, and decide what one sync pass must send.

ExaBGP's throughput is its own CPU, and one `announce attributes ... nlri P1 P2 ...` line carrying
hundreds of prefixes costs far less than as many `announce route` lines. So routes are sent as bulk
lines: one line per (peer set, attributes, family) batch, chunked to a bounded number of prefixes.

Two ExaBGP facts shape the lines:
- `next-hop self` only works when the route has the family of the TCP session; a dual-stack session
  needs an explicit next hop for the other family (ExaBGP refuses the whole command otherwise).
- Routers ignore LOCAL_PREF from eBGP peers, and MetalLB only sends it to iBGP peers: it is written
  only for iBGP neighbours, so one batch may become two lines.

Withdrawals carry the attributes the routes were announced with (ExaBGP can lose a bare withdrawal).

Everything here is pure: the engine calls `plan_sync` and sends what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.routes.table import RouteAttributes, RouteBatch, RouteDiff, RouteKey, RouteTable, diff, group_routes
from metallb_bgp.exabgp.render import Neighbor

Action = Literal["announce", "withdraw"]
T = TypeVar("T")
Routes = Mapping[RouteKey, RouteAttributes]


@dataclass(frozen=True)
class SyncStep:
    sent: dict[RouteKey, RouteAttributes]  # what the routers will have been told once the plan is sent
    change: RouteDiff
    end_of_rib: tuple[str, ...]  # peers that get End-of-RIB markers after the routes
    # announced routes the routers held with other attributes before: what they keep if ExaBGP refuses
    replaced: dict[RouteKey, RouteAttributes] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    """One API command line and the routes it carries, so a refused one can be put back as unsent."""

    line: str
    action: Action
    keys: tuple[RouteKey, ...]
    attributes: RouteAttributes


def plan_sync(
    *,
    desired: Routes,
    sent: Routes,
    established: frozenset[str],
    fresh: frozenset[str],
    can_carry: Callable[[str, int], bool],
    graceful_restart: Callable[[str], bool],
) -> SyncStep:
    """The change that brings every established peer from `sent` to `desired`.

    `sent` is what we last told each peer, including peers whose session is down (a command queued
    just before a session dropped can still reach the router once it is back). A `fresh` peer's
    session has just come up: the router holds none of our routes, or only stale ones, so every desired
    route is announced again and anything else we ever told it is withdrawn. Peers that are down get
    nothing; they keep their `sent` entries until they come back.
    """
    target = {
        key: attrs for key, attrs in desired.items() if key[0] in established and can_carry(key[0], key[1].version)
    }
    believed = {
        key: attrs for key, attrs in sent.items() if key[0] in established and not (key[0] in fresh and key in target)
    }
    change = diff(RouteTable(routes=believed), RouteTable(routes=target))
    kept = {key: attrs for key, attrs in sent.items() if key[0] not in established}
    eor = tuple(sorted(peer for peer in fresh & established if graceful_restart(peer)))
    replaced = {
        key: believed[key]
        for batch in change.announce
        for key in batch_keys(batch)
        if key in believed
    }  # fmt: skip
    return SyncStep(sent={**kept, **target}, change=change, end_of_rib=eor, replaced=replaced)


def batch_keys(batch: RouteBatch) -> Iterator[RouteKey]:
    return ((peer, prefix) for peer in batch.peers for prefix in batch.prefixes)


def plan_touched_sync(
    *,
    desired: Routes,
    sent: dict[RouteKey, RouteAttributes],
    established: frozenset[str],
    touched: Iterable[RouteKey],
    can_carry: Callable[[str, int], bool],
) -> SyncStep:
    """`plan_sync` restricted to the routes named in `touched`, for a pass where nothing else moved.

    Valid only when every established peer already holds exactly `sent` (no fresh session, the same
    sessions and configuration as the previous pass) and `touched` covers every key whose desired
    attributes may have changed since; then it gives the same change as `plan_sync`, at the cost of
    the keys touched rather than of the whole table. `sent` is updated in place and returned as the
    plan's `sent`: a copy per pass would cost the whole table again.
    """
    withdraw: dict[RouteKey, RouteAttributes] = {}
    announce: dict[RouteKey, RouteAttributes] = {}
    replaced: dict[RouteKey, RouteAttributes] = {}
    for key in touched:
        peer, prefix = key
        if peer not in established:
            continue  # its routes are pushed whole when its session comes back
        want = desired.get(key) if can_carry(peer, prefix.version) else None
        have = sent.get(key)
        if want is None and have is not None:
            withdraw[key] = have
            del sent[key]
        elif want is not None and want != have:
            announce[key] = want
            sent[key] = want
            if have is not None:
                replaced[key] = have
    change = RouteDiff(withdraw=group_routes(withdraw), announce=group_routes(announce))
    return SyncStep(sent=sent, change=change, end_of_rib=(), replaced=replaced)


def route_commands(
    change: RouteDiff,
    neighbors: Mapping[str, Neighbor],
    *,
    next_hops: Mapping[int, IPAddress],
    prefixes_per_command: int,
) -> list[str]:
    """Command lines for `change`: every withdrawal first, then every announcement."""
    return [c.line for c in keyed_commands(change, neighbors, next_hops=next_hops, prefixes_per_command=prefixes_per_command)]


def keyed_commands(
    change: RouteDiff,
    neighbors: Mapping[str, Neighbor],
    *,
    next_hops: Mapping[int, IPAddress],
    prefixes_per_command: int,
) -> list[Command]:
    """`route_commands`, each line with the routes it carries."""
    commands: list[Command] = []
    halves: tuple[tuple[Action, tuple[RouteBatch, ...]], ...] = (
        ("withdraw", change.withdraw),
        ("announce", change.announce),
    )
    for action, batches in halves:
        for batch in batches:
            commands.extend(batch_commands(batch, action, neighbors, next_hops, prefixes_per_command))
    return commands


def batch_commands(
    batch: RouteBatch,
    action: Action,
    neighbors: Mapping[str, Neighbor],
    next_hops: Mapping[int, IPAddress],
    prefixes_per_command: int,
) -> Iterator[Command]:
    family = batch.prefixes[0].version
    for (next_hop, with_local_pref), group in _peer_groups(batch.peers, family, neighbors, next_hops):
        selectors = " , ".join(neighbors[name].selector for name in group)
        attributes = attribute_text(batch.attributes, next_hop=next_hop, with_local_pref=with_local_pref)
        for chunk in _chunks(batch.prefixes, prefixes_per_command):
            nlri = " ".join(str(prefix) for prefix in chunk)
            keys = tuple((peer, prefix) for peer in group for prefix in chunk)
            yield Command(f"{selectors} {action} attributes {attributes} nlri {nlri}", action, keys, batch.attributes)


def attribute_text(attrs: RouteAttributes, *, next_hop: str, with_local_pref: bool) -> str:
    parts = [f"next-hop {next_hop}"]
    if with_local_pref and attrs.local_pref is not None:
        parts.append(f"local-preference {attrs.local_pref}")
    if attrs.communities:
        parts.append(f"community [ {' '.join(attrs.communities)} ]")
    if attrs.large_communities:
        parts.append(f"large-community [ {' '.join(attrs.large_communities)} ]")
    return " ".join(parts)


def end_of_rib_commands(neighbor: Neighbor) -> list[str]:
    return [f"{neighbor.selector} announce eor ipv{family} unicast" for family in sorted(neighbor.families)]


def next_hop_for(neighbor: Neighbor, family: int, next_hops: Mapping[int, IPAddress]) -> str | None:
    """`self` on the session's own family; the configured next hop for the other one, if any."""
    if family == neighbor.session_family:
        return "self"
    explicit = next_hops.get(family)
    return None if explicit is None else str(explicit)


def can_carry(neighbor: Neighbor | None, family: int, next_hops: Mapping[int, IPAddress]) -> bool:
    return (
        neighbor is not None and family in neighbor.families and next_hop_for(neighbor, family, next_hops) is not None
    )


def _peer_groups(
    peers: frozenset[str],
    family: int,
    neighbors: Mapping[str, Neighbor],
    next_hops: Mapping[int, IPAddress],
) -> list[tuple[tuple[str, bool], list[str]]]:
    groups: dict[tuple[str, bool], list[str]] = {}
    for name in sorted(peers):
        neighbor = neighbors.get(name)
        next_hop = None if neighbor is None else next_hop_for(neighbor, family, next_hops)
        if neighbor is None or next_hop is None:
            continue  # plan_sync never targets these; a direct caller gets nothing rather than an error
        groups.setdefault((next_hop, neighbor.ibgp), []).append(name)
    return sorted(groups.items())


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    step = max(1, size)
    for start in range(0, len(items), step):
        yield items[start : start + step]
