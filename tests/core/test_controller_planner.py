"""The controller's incremental planner gives `compute_pass`'s answer, pass after pass.

`compute_pass` (compile, overlay our unseen writes, allocate everyone, plan every write) is the
reference. `ControllerPlanner` must produce exactly the same writes (status and annotation patches,
pool counters, problem events, the ConfigurationState) and keep the same overlay entries after any
sequence of what happens to a controller: Services created, edited and deleted, their status changed by
someone else, pools and advertisements edited or broken, namespace labels changed, our own writes
succeeding or failing (a 409 when the Service moved on), the watch cache catching up late, overlay
entries expiring, a leadership change emptying the overlay.

The cluster here is a small model of the API server and of the watch cache in front of it: snapshots
are built as `KubernetesSource.snapshot()` builds them, with the very same objects (and the same tuple
for a kind nothing happened to) for whatever did not change, since that identity is all the planner
goes by.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from assertions import assert_same_allocation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from strategies import POOL_MENU, UNIVERSE

from metallb_bgp.api.loader import parse_object
from metallb_bgp.core.change import SnapshotChanges
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.plan.controller import (
    OVERLAY_MAX_AGE,
    AnnotationChange,
    ControllerPass,
    ControllerPlanner,
    StatusChange,
    Written,
    compute_pass,
    written_view,
)
from metallb_bgp.core.snapshot import ClusterSnapshot
from metallb_bgp.core.writes import POOL_ANNOTATION, WriteOutcome, WriteResult

EXAMPLES = int(os.environ.get("CONTROLLER_PLANNER_EXAMPLES", "500"))  # raise it for a long soak
NS = "metallb-system"
NAMES = [f"s{i}" for i in range(6)]
SERVICE_NAMESPACES = ["a", "b"]
Doc = dict[str, Any]


# --- what users (and others) write ---------------------------------------------------------------------


@st.composite
def service_specs(draw: st.DrawFn) -> Doc:
    """A Service's spec and annotations, as its owner writes them (no status: that is not the owner's)."""
    annotations: dict[str, str] = {}
    prefix = draw(st.sampled_from(["metallb.io/", "metallb.io/", "metallb.universe.tf/"]))  # the old one warns
    if draw(st.integers(0, 4)) == 0:
        annotations[prefix + "address-pool"] = draw(st.sampled_from([*POOL_MENU, "ghost"]))
    if draw(st.integers(0, 5)) == 0:
        annotations[prefix + "loadBalancerIPs"] = ",".join(draw(st.lists(st.sampled_from(UNIVERSE), max_size=2)))
    if (share := draw(st.sampled_from([None, None, "k1", "k1", "k2"]))) is not None:
        annotations[prefix + "allow-shared-ip"] = share
    spec: Doc = {
        "type": draw(st.sampled_from(["LoadBalancer"] * 5 + ["ClusterIP"])),
        "ports": [{"port": port, "protocol": protocol} for port, protocol in draw(
            st.lists(st.sampled_from([(80, "TCP"), (443, "TCP"), (53, "UDP")]), unique=True, min_size=1, max_size=2))],
        "ipFamilies": list(draw(st.sampled_from([(), ("IPv4",), ("IPv4",), ("IPv6",), ("IPv4", "IPv6")]))),
        "externalTrafficPolicy": draw(st.sampled_from(["Cluster", "Cluster", "Local"])),
    }  # fmt: skip
    if (policy := draw(st.sampled_from([None, None, "SingleStack", "PreferDualStack", "RequireDualStack"]))) is not None:
        spec["ipFamilyPolicy"] = policy
    if draw(st.integers(0, 7)) == 0:
        spec["loadBalancerClass"] = "other"
    return {"annotations": annotations, "spec": spec}


status_ips = st.one_of(
    st.just([]),
    st.lists(st.sampled_from([ip for ip in UNIVERSE if ip.startswith("10.0.")]), max_size=1),
    st.lists(st.sampled_from(UNIVERSE + ["junk"]), max_size=2),
)
service_keys = st.builds(ServiceKey, st.sampled_from(SERVICE_NAMESPACES), st.sampled_from(NAMES))


def pool_doc(name: str, variant: str) -> Doc:
    spec: Doc = {"addresses": list(POOL_MENU[name])}
    if variant == "manual":
        spec["autoAssign"] = False
    elif variant == "namespace-a":
        spec["serviceAllocation"] = {"namespaces": ["a"]}
    elif variant == "team-x":
        spec["serviceAllocation"] = {"priority": 1, "namespaceSelectors": [{"matchLabels": {"team": "x"}}]}
    elif variant == "broken":  # a compile error: the pool's last good version stays
        spec["addresses"] = ["10.0.0.0/33"]
    elif variant == "overlapping":  # overlaps p-a: refused, the last good version stays
        spec["addresses"] = [*spec["addresses"], "10.0.0.2/31"]
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


def advertisement_doc(variant: str) -> Doc:
    spec: Doc = {"communities": ["nope"]} if variant == "broken" else {}
    return {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "adv", "namespace": NS},
            "spec": spec}


def namespace_doc(name: str, labels: dict[str, str]) -> Doc:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


POOL_VARIANTS = ["absent", "plain", "plain", "manual", "namespace-a", "team-x", "broken", "overlapping"]
steps = st.one_of(
    st.tuples(st.just("service"), service_keys, service_specs()),
    st.tuples(st.just("service"), service_keys, service_specs()),
    st.tuples(st.just("delete"), service_keys),
    st.tuples(st.just("recreate"), service_keys, service_specs()),  # deleted and created again between two passes
    st.tuples(st.just("status"), service_keys, status_ips),  # someone else writes the status
    st.tuples(st.just("annotate"), service_keys, st.sampled_from([None, "p-a", "ghost"])),  # ... or our annotation
    st.tuples(st.just("pool"), st.sampled_from(sorted(POOL_MENU)), st.sampled_from(POOL_VARIANTS)),
    st.tuples(st.just("advertisement"), st.sampled_from(["absent", "plain", "broken"])),
    st.tuples(st.just("namespace"), st.sampled_from(SERVICE_NAMESPACES), st.sampled_from([{}, {"team": "x"}])),
    st.tuples(st.just("apply"), st.lists(st.booleans(), min_size=1, max_size=12)),  # which of our writes succeed
    st.tuples(st.just("apply"), st.just([True])),
    st.tuples(st.just("catch_up"), st.lists(service_keys, max_size=4)),  # the cache shows some services' latest
    st.tuples(st.just("catch_up"), st.just(None)),  # ... or everything
    st.tuples(st.just("time"), st.sampled_from([0.1, OVERLAY_MAX_AGE + 1])),
    st.tuples(st.just("leadership")),  # the controller lost and regained the lease: overlay emptied
)


# --- the API server and the watch cache in front of it ---------------------------------------------------


@dataclass
class Cached:
    doc: Doc
    obj: BaseModel


def parsed(doc: Doc) -> BaseModel:
    result = parse_object(copy.deepcopy(doc))
    assert result.obj is not None, result.errors
    return result.obj


@dataclass
class Cluster:
    """Services live on the server (resourceVersions, 409 on a stale precondition) and reach the cache
    late (`catch_up`) when we wrote them, at once when anyone else did. Everything else is seen at once."""

    rv: int = 100
    uids: int = 0
    server: dict[ServiceKey, Doc] = field(default_factory=dict)
    cache: dict[ServiceKey, Cached] = field(default_factory=dict)
    config: dict[tuple[str, str], Cached] = field(default_factory=dict)  # (kind, name) -> the object
    services_tuple: tuple[BaseModel, ...] | None = None
    config_tuples: dict[str, tuple[BaseModel, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("p-a", "p-c", "p-e"):
            self.put_config(pool_doc(name, "plain"))
        self.put_config(advertisement_doc("plain"))
        for name in SERVICE_NAMESPACES:
            self.put_config(namespace_doc(name, {}))

    def bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    # config -----------------------------------------------------------------------------------------

    def put_config(self, doc: Doc) -> None:
        self.config[(doc["kind"], doc["metadata"]["name"])] = Cached(doc, parsed(doc))
        self.config_tuples.pop(doc["kind"], None)

    def drop_config(self, kind: str, name: str) -> None:
        if self.config.pop((kind, name), None) is not None:
            self.config_tuples.pop(kind, None)

    def of_kind(self, kind: str) -> tuple[BaseModel, ...]:
        if kind not in self.config_tuples:
            self.config_tuples[kind] = tuple(c.obj for (k, _), c in sorted(self.config.items()) if k == kind)
        return self.config_tuples[kind]

    # services ---------------------------------------------------------------------------------------

    def write(self, key: ServiceKey, doc: Doc, *, seen: bool) -> str:
        doc["metadata"]["resourceVersion"] = version = self.bump()
        self.server[key] = doc
        if seen:
            self.show(key)
        return version

    def show(self, key: ServiceKey) -> None:
        doc = self.server.get(key)
        if doc is None:
            if self.cache.pop(key, None) is not None:
                self.services_tuple = None
        elif key not in self.cache or self.cache[key].doc is not doc:
            self.cache[key] = Cached(doc, parsed(doc))
            self.services_tuple = None

    def edit(self, key: ServiceKey, owned: Doc) -> None:
        old = self.server.get(key)
        if old is None:
            self.uids += 1
            metadata: Doc = {"name": key.name, "namespace": key.namespace, "uid": f"uid-{self.uids}"}
            status: Doc = {}
        else:
            metadata = {k: v for k, v in old["metadata"].items() if k != "annotations"}
            status = old["status"]
            if POOL_ANNOTATION in old["metadata"]["annotations"]:  # the owner's apply leaves ours alone
                owned = {**owned, "annotations": {**owned["annotations"],
                                                  POOL_ANNOTATION: old["metadata"]["annotations"][POOL_ANNOTATION]}}
        doc = {"apiVersion": "v1", "kind": "Service", "metadata": {**metadata, "annotations": dict(owned["annotations"])},
               "spec": owned["spec"], "status": status}  # fmt: skip
        self.write(key, doc, seen=True)

    def delete(self, key: ServiceKey) -> None:
        if self.server.pop(key, None) is not None:
            self.bump()
            self.show(key)

    def set_status(self, key: ServiceKey, ips: Sequence[str], *, seen: bool, precondition: str = "") -> WriteResult:
        old = self.server.get(key)
        if old is None:
            return WriteResult(WriteOutcome.NOT_FOUND)
        if precondition and precondition != old["metadata"]["resourceVersion"]:
            return WriteResult(WriteOutcome.CONFLICT)
        doc = {**old, "metadata": dict(old["metadata"]), "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}
        return WriteResult(WriteOutcome.OK, self.write(key, doc, seen=seen))

    def set_pool_annotation(self, key: ServiceKey, pool: str | None, *, seen: bool) -> WriteResult:
        old = self.server.get(key)
        if old is None:
            return WriteResult(WriteOutcome.NOT_FOUND)
        annotations = {k: v for k, v in old["metadata"]["annotations"].items() if k != POOL_ANNOTATION}
        if pool is not None:
            annotations[POOL_ANNOTATION] = pool
        doc = {**old, "metadata": {**old["metadata"], "annotations": annotations}}
        return WriteResult(WriteOutcome.OK, self.write(key, doc, seen=seen))

    def set_pool_status(self, name: str, status: Doc) -> None:
        cached = self.config.get(("IPAddressPool", name))
        if cached is not None:
            self.put_config({**cached.doc, "status": {**cached.doc.get("status", {}), **status}})

    def snapshot(self) -> ClusterSnapshot:
        if self.services_tuple is None:
            self.services_tuple = tuple(self.cache[key].obj for key in sorted(self.cache))
        return ClusterSnapshot(
            pools=self.of_kind("IPAddressPool"),  # type: ignore[arg-type]
            advertisements=self.of_kind("BGPAdvertisement"),  # type: ignore[arg-type]
            namespaces=self.of_kind("Namespace"),  # type: ignore[arg-type]
            services=self.services_tuple,  # type: ignore[arg-type]
            namespace=NS,
        )


# --- the property ------------------------------------------------------------------------------------------


def assert_same_pass(got: ControllerPass, want: ControllerPass) -> None:
    assert got.writes.status == want.writes.status
    assert got.writes.annotations == want.writes.annotations
    assert got.writes.pools == want.writes.pools
    assert got.writes.problem_events == want.writes.problem_events
    assert got.writes.state == want.writes.state
    assert got.overlay == want.overlay
    assert_same_allocation(got.allocation, want.allocation)
    assert got.usage == want.usage
    assert got.compiled == want.compiled


def apply(cluster: Cluster, computed: ControllerPass, overlay: dict[ServiceKey, Written], outcomes: list[bool],
          now: float) -> None:
    """What `Controller._apply` + `_absorb` do with a pass's writes: each succeeds as `outcomes` says
    (cycled), a status patch only if its resourceVersion precondition holds; our writes reach the cache
    only at a later `catch_up`."""
    draws = itertools.cycle(outcomes)
    failed = set()
    changes: list[StatusChange | AnnotationChange] = [*computed.writes.status, *computed.writes.annotations]
    for change in changes:
        if change.service in failed or not next(draws):
            failed.add(change.service)
            continue
        if isinstance(change, StatusChange):
            precondition = change.patch.get("metadata", {}).get("resourceVersion", "")
            result = cluster.set_status(change.service, change.ips, seen=False, precondition=precondition)
        else:
            result = cluster.set_pool_annotation(change.service, change.pool, seen=False)
        if result.ok:
            overlay[change.service] = written_view(overlay.get(change.service), change, result, now=now)
        else:
            failed.add(change.service)
    for pool in computed.writes.pools:
        if next(draws):
            cluster.set_pool_status(pool.name, pool.patch["status"])


def step(cluster: Cluster, action: tuple[Any, ...], computed: ControllerPass, overlay: dict[ServiceKey, Written],
         now: float) -> tuple[dict[ServiceKey, Written], float]:
    kind = action[0]
    if kind == "service":
        cluster.edit(action[1], action[2])
    elif kind == "delete":
        cluster.delete(action[1])
    elif kind == "recreate":
        cluster.delete(action[1])
        cluster.edit(action[1], action[2])
    elif kind == "status":
        cluster.set_status(action[1], action[2], seen=True)
    elif kind == "annotate":
        cluster.set_pool_annotation(action[1], action[2], seen=True)
    elif kind == "pool":
        if action[2] == "absent":
            cluster.drop_config("IPAddressPool", action[1])
        else:
            cluster.put_config(pool_doc(action[1], action[2]))
    elif kind == "advertisement":
        if action[1] == "absent":
            cluster.drop_config("BGPAdvertisement", "adv")
        else:
            cluster.put_config(advertisement_doc(action[1]))
    elif kind == "namespace":
        cluster.put_config(namespace_doc(action[1], action[2]))
    elif kind == "apply":
        apply(cluster, computed, overlay, action[1], now)
    elif kind == "catch_up":
        for key in action[1] if action[1] is not None else list(cluster.server.keys() | cluster.cache.keys()):
            cluster.show(key)
    elif kind == "time":
        now += action[1]
    elif kind == "leadership":
        overlay = {}
    return overlay, now


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(service_keys, service_specs()), max_size=8), st.lists(steps, min_size=1, max_size=30))
def test_the_incremental_controller_plans_the_writes_a_full_computation_plans_after_every_step(initial, actions) -> None:
    cluster = Cluster()
    for key, owned in initial:
        cluster.edit(key, owned)
    planner = ControllerPlanner()
    changes = SnapshotChanges()
    overlay: dict[ServiceKey, Written] = {}
    now = 1000.0
    want = compute_pass(cluster.snapshot(), overlay, now=now)
    got = planner.update(changes.take(cluster.snapshot()), overlay, now=now)
    assert_same_pass(got, want)
    assert planner.stats.full
    for action in actions:
        overlay, now = step(cluster, action, got, dict(got.overlay) if action[0] != "leadership" else {}, now)
        snapshot = cluster.snapshot()
        want = compute_pass(snapshot, overlay, now=now, last_good=want.compiled.last_good)
        got = planner.update(changes.take(snapshot), overlay, now=now)
        assert_same_pass(got, want)


def test_one_new_service_is_decided_and_planned_alone() -> None:
    cluster = Cluster()
    for i in range(6):  # fewer than the pools' addresses: nobody is refused (refused ones are decided again)
        cluster.edit(ServiceKey("a", f"s{i:02d}"), {"annotations": {}, "spec": {"type": "LoadBalancer",
                                                                               "ports": [{"port": 80}]}})
    planner = ControllerPlanner()
    changes = SnapshotChanges()
    first = planner.update(changes.take(cluster.snapshot()), {}, now=0.0)
    overlay = dict(first.overlay)
    apply(cluster, first, overlay, [True], 0.0)
    for key in list(cluster.server):
        cluster.show(key)
    settled = planner.update(changes.take(cluster.snapshot()), overlay, now=0.0)
    assert not settled.writes.status and not settled.writes.annotations
    cluster.edit(ServiceKey("a", "zz"), {"annotations": {}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    got = planner.update(changes.take(cluster.snapshot()), dict(settled.overlay), now=0.0)
    assert [change.service for change in got.writes.status] == [ServiceKey("a", "zz")]
    stats = planner.stats
    assert (stats.recompiled, stats.full, stats.allocated, stats.planned) == (False, False, 1, 1)
    assert_same_pass(got, compute_pass(cluster.snapshot(), settled.overlay, now=0.0))
