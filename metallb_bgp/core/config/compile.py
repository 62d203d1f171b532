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

The function is pure, never raises (a last-resort guard turns a bug into an error on the object), and
its output is deterministic: objects are checked in name order ("the later one" is the later name;
established objects first when there is memory) and errors are sorted. What it does not do: anything
about Services (the allocator's job) or about which node announces what (the route table's job).
Edits of objects that were valid: `last_good`, which runs `rules.compile_once` as often as it needs.
"""

from __future__ import annotations

from dataclasses import replace

from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.config.last_good import History, remember
from metallb_bgp.core.config.result import CompileResult, LastGood
from metallb_bgp.core.config.rules import compile_once
from metallb_bgp.core.snapshot import ClusterSnapshot


def compile_config(snapshot: ClusterSnapshot, *, last_good: LastGood | None = None) -> CompileResult:
    """Validate every metallb.io object of `snapshot` and build the Config of the good ones.

    Without `last_good` (the first compile) a bad object is reported and left out. With the previous
    result's `last_good`, a bad or harmful edit is reported and not applied: see `last_good`.
    """
    try:
        return History(snapshot, last_good or LastGood()).resolve()
    except Exception as exc:  # noqa: BLE001 - the promise is "never raises"; fall back to the plain rules
        plain = compile_once(snapshot)
        message = f"internal error while keeping last valid versions ({type(exc).__name__}); please report it"
        bug = ObjectError("Config", "", "last-valid-versions", "", message)
        return replace(plain, errors=tuple(sorted({*plain.errors, bug})), last_good=remember(snapshot, plain))
