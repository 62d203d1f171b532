"""One plain pass of the rules over every metallb.io object, in check order: the Config of the good
ones and every problem. `last_good` runs it several times to decide what to hold back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from metallb_bgp.api.metallb import (
    Community,
    IPAddressPool,
)
from metallb_bgp.core.config import model as cfg
from metallb_bgp.core.config.advertisements import check_advertisements
from metallb_bgp.core.config.known import Known
from metallb_bgp.core.config.peers import check_peers, secret_index
from metallb_bgp.core.config.pools import check_pools
from metallb_bgp.core.config.profiles import bfd_profile, community_aliases
from metallb_bgp.core.config.report import Report, Scope, warn
from metallb_bgp.core.config.result import CompileResult
from metallb_bgp.core.snapshot import ClusterSnapshot

L2_IGNORED = "ignored: this speaker announces over BGP only (L2Advertisement is MetalLB's layer 2 mode)"


def compile_once(
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
    report = Report(snapshot.namespace)
    report.extend(snapshot.load_errors)
    scope = Scope(snapshot.namespace, report, established)
    scope.bad.update(withheld or {})

    bfd_profiles = {name: bfd_profile(obj) for name, obj in scope.unique(snapshot.bfd_profiles).items()}
    aliases = community_aliases(scope.unique(snapshot.communities), scope.duplicates_of(Community), report, scope.check_order)
    pool_objects = scope.unique(snapshot.pools)
    pools = check_pools(pool_objects, report)
    scope.mark_invalid("IPAddressPool", pool_objects, pools)
    known = Known(
        namespace=snapshot.namespace,
        pools=pools,
        pool_objects=(*pool_objects.values(), *scope.duplicates_of(IPAddressPool)),
        bad=scope.bad,
        bfd_profiles=bfd_profiles,
        aliases=aliases,
        secrets=secret_index(snapshot.secrets, snapshot.namespace),
        nodes=tuple(snapshot.nodes),
    )
    peer_objects = scope.unique(snapshot.peers)
    peers = check_peers(peer_objects, known, report)
    scope.mark_invalid("BGPPeer", peer_objects, peers)
    advertisements = check_advertisements(scope.unique(snapshot.advertisements), replace(known, peers=peers), report)
    for l2 in snapshot.l2_advertisements:
        report.add(l2, warn("", L2_IGNORED))

    config = cfg.Config(
        pools={name: info.pool for name, info in sorted(pools.items())},
        peers=dict(sorted(peers.items())),
        advertisements=tuple(sorted(advertisements, key=lambda a: a.name)),
        bfd_profiles=dict(sorted(bfd_profiles.items())),
    )
    return CompileResult(config=config, errors=report.sorted())
