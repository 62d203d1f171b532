"""The incremental planner gives `make_plan`'s answer, change after change.

`make_plan` (compile, allocate everyone, route everyone) is the reference. The `IncrementalPlanner`,
the `IncrementalAllocation` and the `IncrementalRouteTable` behind it must agree with it exactly after any sequence
of changes: these properties drive random sequences (services added, edited and deleted, EndpointSlices
moved, pools, advertisements, nodes and namespaces edited, files broken and duplicated) through both and
compare every field of the result.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from assertions import assert_same_plan
from builders import service
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import NAMESPACES, POOL_MENU, V4, configs, services, sharing_services

from metallb_bgp.api.core import Service
from metallb_bgp.api.loader import parse_object
from metallb_bgp.api.meta import to_document
from metallb_bgp.core.allocator.allocate import allocate
from metallb_bgp.core.allocator.incremental import IncrementalAllocation
from metallb_bgp.core.change import ClusterChange, config_part
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.plan.incremental import IncrementalPlanner
from metallb_bgp.core.plan.pipeline import Plan, make_plan
from metallb_bgp.core.routes.incremental import IncrementalRouteTable
from metallb_bgp.core.routes.table import RouteAttributes, RouteTable, ServiceRoutes, Skip, SkipReason, combine, tally
from metallb_bgp.core.snapshot import ClusterSnapshot, status_assignments
from metallb_bgp.sources.manifests import ManifestFolder

EXAMPLES = int(os.environ.get("RECONCILER_EXAMPLES", "150"))  # raise it for a long soak
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NODE = "node-a"

# --- allocation alone --------------------------------------------------------------------------------


def keyed(svcs: Sequence[Service]) -> dict[ServiceKey, Service]:
    return {ServiceKey(s.namespace, s.name): s for s in svcs}


def embedded_existing(
    svcs: Mapping[ServiceKey, Service], remembered: Mapping[ServiceKey, tuple[IPAddress, ...]]
) -> dict[ServiceKey, tuple[IPAddress, ...]]:
    snapshot = ClusterSnapshot(services=tuple(svcs.values()))
    return status_assignments(snapshot) | dict(remembered)


edits = st.lists(st.tuples(st.booleans(), st.one_of(services(), sharing_services())), min_size=1, max_size=12)


@SETTINGS
@given(configs(), st.lists(st.one_of(services(), sharing_services()), max_size=10), edits)
def test_allocation_state_equals_allocate_after_every_edit(config, initial, steps) -> None:
    current = keyed(initial)
    remembered: dict[ServiceKey, tuple[IPAddress, ...]] = {}
    state = IncrementalAllocation(config, {n.name: n.metadata.labels for n in NAMESPACES})
    existing = embedded_existing(current, remembered)
    result = state.allocate_all(current, existing.get)
    for delete, edited in [(False, None), *steps]:
        if edited is not None:
            key = ServiceKey(edited.namespace, edited.name)
            if delete:
                current.pop(key, None)
            else:
                current[key] = edited
            existing = embedded_existing(current, remembered)
            result = state.update(current, {key}, existing.get)
        reference = allocate(config, list(current.values()), NAMESPACES, existing=existing)
        assert dict(result.assignments) == dict(reference.assignments)
        assert result.refusals == reference.refusals
        assert result.cleared == reference.cleared
        assert result.warnings == reference.warnings
        remembered = result.service_ips()


def test_a_freed_address_goes_to_the_next_new_service_as_a_full_allocation_would_give_it() -> None:
    current = keyed([service(f"s{i}").model for i in range(4)])
    state = IncrementalAllocation(V4, {})
    first = state.allocate_all(current, lambda key: None)
    remembered = first.service_ips()
    del current[ServiceKey("default", "s1")]
    state.update(current, {ServiceKey("default", "s1")}, remembered.get)
    current[ServiceKey("default", "s9")] = service("s9").model
    result = state.update(current, {ServiceKey("default", "s9")}, remembered.get)
    assert result.assignments[ServiceKey("default", "s9")].ips == (ipaddress.ip_address("10.0.0.1"),)
    assert state.decided == 1  # only the new service was decided


# --- route table alone -------------------------------------------------------------------------------

PREFIXES = [ipaddress.ip_network(p) for p in ("10.0.0.1/32", "10.0.0.2/32", "10.0.0.0/24", "2001:db8::/64")]
ATTRIBUTES = st.builds(
    lambda pref, comm: RouteAttributes(local_pref=pref, communities=tuple(sorted(set(comm)))),
    st.sampled_from([None, 100, 200]),
    st.lists(st.sampled_from(["65000:1", "65000:2"]), max_size=2),
)
contributions = st.one_of(
    st.none(),
    st.just(ServiceRoutes(skip=Skip(SkipReason.NO_ENDPOINTS, "none"))),
    st.builds(
        lambda anns: ServiceRoutes(announcements=tuple(anns)),
        st.lists(
            st.tuples(
                st.sampled_from(PREFIXES),
                st.lists(st.tuples(st.sampled_from(["r1", "r2"]), ATTRIBUTES), unique_by=lambda t: t[0], min_size=1).map(tuple),
            ),
            min_size=1,
            max_size=3,
        ),
    ),
)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), contributions), max_size=25))
def test_route_table_state_equals_combine_after_every_change(steps) -> None:
    state = IncrementalRouteTable()
    current: dict[ServiceKey, ServiceRoutes] = {}
    before: Mapping[tuple[str, Any], Any] = {}
    for name, contribution in steps:
        key = ServiceKey("default", name)
        state.set(key, contribution)
        if contribution is None:
            current.pop(key, None)
        else:
            current[key] = contribution
        table = state.table()
        assert table == combine(current.items())
        assert table.tallies == tally(RouteTable(routes=table.routes, skipped=table.skipped))  # kept = counted
        changed = {k for k in before.keys() | table.routes.keys() if before.get(k) != table.routes.get(k)}
        assert changed <= state.take_touched()  # what a consumer may diff instead of the whole table
        before = table.routes


# --- the whole planner against make_plan -------------------------------------------------------------


def obj(doc: dict[str, Any]) -> Any:
    parsed = parse_object(doc)
    assert parsed.obj is not None, parsed.errors
    return parsed.obj


def pool_doc(name: str, cidrs: Sequence[str], *, auto: bool = True, namespaces: Sequence[str] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"addresses": list(cidrs), "autoAssign": auto}
    if namespaces:
        spec["serviceAllocation"] = {"namespaces": list(namespaces)}
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": name}, "spec": spec}


def adv_doc(name: str, *, pools: Sequence[str] = (), aggregation: int = 32, communities: Sequence[str] = (),
            local_pref: int | None = None, node_selector: dict[str, str] | None = None,
            service_selector: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    spec: dict[str, Any] = {"aggregationLength": aggregation, "communities": list(communities)}
    if pools:
        spec["ipAddressPools"] = list(pools)
    if local_pref is not None:
        spec["localPref"] = local_pref
    if node_selector:
        spec["nodeSelectors"] = [{"matchLabels": node_selector}]
    if service_selector:
        spec["serviceSelectors"] = [{"matchLabels": service_selector}]
    return {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": name}, "spec": spec}


def peer_doc(name: str, address: str, *, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"myASN": 64500, "peerASN": 64501, "peerAddress": address}
    if node_selector:
        spec["nodeSelectors"] = [{"matchLabels": node_selector}]
    return {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}


def slice_doc(service_name: str, suffix: str, *, node: str, serving: bool | None, ns: str = "default") -> dict[str, Any]:
    conditions = {} if serving is None else {"serving": serving}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{service_name}-{suffix}", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service_name}},  # fmt: skip
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.9.0.1"], "conditions": conditions, "nodeName": node}],
    }


def node_doc(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def namespace_doc(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


POOLS = {name: list(cidrs) for name, cidrs in POOL_MENU.items()}  # what the generated services ask for
def manifest(obj: Any) -> dict[str, Any]:
    return dict(obj) if isinstance(obj, dict) else to_document(obj, exclude_none=True)


service_docs = st.one_of(services(), sharing_services()).map(manifest)
config_docs = st.one_of(
    st.builds(lambda n, auto, nss: pool_doc(n, POOLS[n], auto=auto, namespaces=nss),
              st.sampled_from(sorted(POOLS)), st.booleans(), st.sampled_from([(), (), ("a",)])),
    st.builds(lambda n, pools, agg, comm, pref, nsel, ssel: adv_doc(n, pools=pools, aggregation=agg, communities=comm,
                                                                    local_pref=pref, node_selector=nsel, service_selector=ssel),
              st.sampled_from(["adv1", "adv2"]), st.sampled_from([(), ("p-a",), ("p-b", "p-c")]),
              st.sampled_from([32, 32, 31, 30]), st.sampled_from([(), ("65000:1",), ("65000:2",)]),
              st.sampled_from([None, None, 100, 200]), st.sampled_from([None, None, {"zone": "x"}]),
              st.sampled_from([None, None, {"app": "web"}])),
    st.builds(lambda n, addr, sel: peer_doc(n, addr, node_selector=sel), st.sampled_from(["r1", "r2"]),
              st.sampled_from(["192.0.2.1", "192.0.2.2"]), st.sampled_from([None, {"zone": "x"}])),
    st.builds(lambda labels: node_doc(NODE, labels),
              st.sampled_from([{}, {"zone": "x"}, {"node.kubernetes.io/exclude-from-external-load-balancers": ""}])),
    st.builds(lambda n, labels: namespace_doc(n, labels), st.sampled_from(["a", "b"]), st.sampled_from([{}, {"team": "x"}])),
)  # fmt: skip


@st.composite
def service_with_slice(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A Service and its EndpointSlice in one file, as an application's manifest holds them."""
    doc = draw(service_docs)
    metadata = doc["metadata"]
    endpoint = slice_doc(metadata["name"], "1", ns=metadata["namespace"], node=draw(st.sampled_from([NODE, NODE, "node-b"])),
                         serving=draw(st.sampled_from([None, True, False])))  # fmt: skip
    return [doc, endpoint]


slice_docs = st.builds(
    lambda name, suffix, ns, node, serving: slice_doc(name, suffix, ns=ns, node=node, serving=serving),
    st.sampled_from([f"s{i}" for i in range(8)]),
    st.sampled_from(["1", "2"]),
    st.sampled_from(["a", "b"]),
    st.sampled_from([NODE, "node-b"]),
    st.sampled_from([None, True, False]),
)
FILES = [f"f{i}.yaml" for i in range(8)]
# A step rewrites one file (an app's Service and EndpointSlice, or a few loose documents), breaks it
# (invalid YAML: it keeps its last good objects), or deletes it.
file_contents = st.one_of(
    service_with_slice(),
    service_with_slice(),
    service_with_slice(),
    st.lists(st.one_of(service_docs, slice_docs, config_docs), max_size=3),
    st.just("broken"),
    st.just("deleted"),
)
BASE = [
    pool_doc("p-a", POOLS["p-a"]),
    pool_doc("p-c", POOLS["p-c"]),
    pool_doc("p-e", POOLS["p-e"]),
    adv_doc("adv0", communities=["65000:9"]),
    peer_doc("r0", "192.0.2.9"),
]


def write(path: Path, content: Any) -> None:
    if content == "deleted":
        path.unlink(missing_ok=True)
    elif content == "broken":
        path.write_text("kind: [broken\n")
    else:
        path.write_text(yaml.safe_dump_all(content))


def reference(
    folder: ManifestFolder, remembered: Mapping[ServiceKey, tuple[IPAddress, ...]], previous: Plan | None = None
) -> Plan:
    """make_plan on the whole folder, with the previous reference's memory of last valid versions."""
    snapshot = folder.snapshot()
    last_good = previous.compiled.last_good if previous is not None else None
    return make_plan(snapshot, node_name=NODE, existing=status_assignments(snapshot) | dict(remembered), last_good=last_good)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.sampled_from(FILES), file_contents), min_size=1, max_size=8),
    st.lists(st.lists(st.tuples(st.sampled_from(FILES), file_contents), min_size=1, max_size=3), min_size=1, max_size=10),
)
def test_planner_fed_by_the_folder_equals_make_plan_after_every_change(tmp_path_factory, initial, batches) -> None:
    directory = tmp_path_factory.mktemp("manifests")
    (directory / "00-base.yaml").write_text(yaml.safe_dump_all(BASE))
    for name, content in initial:
        write(directory / name, content)
    folder = ManifestFolder([directory])
    planner = IncrementalPlanner(node_name=NODE, remembered={})
    remembered: dict[ServiceKey, tuple[IPAddress, ...]] = {}
    got = planner.update(folder.load())
    want = reference(folder, remembered)
    assert_same_plan(got, want)
    for batch in batches:
        remembered = got.allocation.service_ips()
        for name, content in batch:
            write(directory / name, content)
        before = got.table.routes
        got = planner.update(folder.reload({directory / name for name, _ in batch}))
        want = reference(folder, remembered, want)
        assert_same_plan(got, want)
        now = planner.remembered  # the state file is kept up to date from assignments_changed alone
        assert {k for k in remembered.keys() | now.keys() if remembered.get(k) != now.get(k)} <= planner.assignments_changed
        assert planner.remembered == got.allocation.service_ips()
        if planner.routes_touched is not None:
            changed = {k for k in before.keys() | got.table.routes.keys() if before.get(k) != got.table.routes.get(k)}
            assert changed <= planner.routes_touched


def test_a_state_file_assignment_is_kept_and_reported_as_existing(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump_all(BASE))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(manifest(service("web"))))
    remembered = {ServiceKey("default", "web"): (ipaddress.ip_address("10.0.0.2"),), ServiceKey("x", "gone"): ()}
    folder = ManifestFolder([tmp_path])
    planner = IncrementalPlanner(node_name=NODE, remembered=remembered)
    got = planner.update(folder.load())
    assert_same_plan(got, reference(folder, remembered))
    assert got.allocation.assignments[ServiceKey("default", "web")].ips == (ipaddress.ip_address("10.0.0.2"),)
    assert planner.assignments_changed == {ServiceKey("x", "gone")}


def test_one_service_edit_recomputes_one_service(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump_all(BASE))
    for i in range(6):  # fewer than the pools' addresses: nobody is refused (refused ones are redecided)
        docs = [manifest(service(f"s{i}")), slice_doc(f"s{i}", "1", node=NODE, serving=True)]
        (tmp_path / f"s{i}.yaml").write_text(yaml.safe_dump_all(docs))
    folder = ManifestFolder([tmp_path])
    planner = IncrementalPlanner(node_name=NODE)
    planner.update(folder.load())
    moved = slice_doc("s3", "1", node="node-b", serving=True)
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump_all([manifest(service("s3")), moved]))
    change = folder.reload({tmp_path / "s3.yaml"})
    assert set(change.endpoint_slices) == {("default", "s3")} and not change.services and change.config is None
    plan = planner.update(change)
    assert planner.stats.routed == 1 and planner.stats.allocated == 0 and not planner.stats.recompiled
    assert_same_plan(plan, reference(folder, planner.remembered))


def test_whole_snapshot_change_equals_make_plan() -> None:
    snapshot = ClusterSnapshot.from_objects(
        [obj(d) for d in BASE] + [service("web").model, obj(slice_doc("web", "1", node=NODE, serving=True))]
    )
    planner = IncrementalPlanner(node_name=NODE)
    assert_same_plan(planner.update(ClusterChange.whole(snapshot)), make_plan(snapshot, node_name=NODE, existing={}))
    assert config_part(snapshot).services == ()


def test_the_first_change_must_carry_the_configuration() -> None:
    with pytest.raises(ValueError):
        IncrementalPlanner(node_name=NODE).update(ClusterChange())




# --- what the folder reports --------------------------------------------------------------------------


def service_file(name: str, *, port: int = 80) -> str:
    return yaml.safe_dump(manifest(service(name, ports=((port, "TCP"),))))


def test_rewriting_a_file_unchanged_reports_no_change(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(service_file("web"))
    folder = ManifestFolder([tmp_path])
    folder.load()
    (tmp_path / "web.yaml").write_text(service_file("web"))
    assert folder.reload({tmp_path / "web.yaml"}).is_empty


def test_a_change_names_only_the_services_whose_definition_changed(tmp_path: Path) -> None:
    (tmp_path / "both.yaml").write_text(service_file("a") + "---\n" + service_file("b"))
    folder = ManifestFolder([tmp_path])
    folder.load()
    (tmp_path / "both.yaml").write_text(service_file("a") + "---\n" + service_file("b", port=81))
    change = folder.reload({tmp_path / "both.yaml"})
    assert set(change.services) == {ServiceKey("default", "b")} and change.config is None


def test_a_folder_moved_in_or_removed_is_rescanned(tmp_path: Path) -> None:
    folder = ManifestFolder([tmp_path])
    folder.load()
    staging = tmp_path.parent / f"{tmp_path.name}-staging"
    staging.mkdir()
    (staging / "web.yaml").write_text(service_file("web"))
    staging.rename(tmp_path / "apps")
    change = folder.reload({tmp_path / "apps"})
    assert set(change.services) == {ServiceKey("default", "web")}
    (tmp_path / "apps").rename(staging)
    change = folder.reload({tmp_path / "apps"})
    assert change.services == {ServiceKey("default", "web"): ()}
    assert folder.snapshot().services == ()


def test_a_relative_folder_sees_the_watchers_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("manifests").mkdir()
    Path("manifests/web.yaml").write_text(service_file("web"))
    folder = ManifestFolder([Path("manifests")])
    folder.load()
    Path("manifests/web.yaml").write_text(service_file("web", port=81))
    change = folder.reload({tmp_path / "manifests" / "web.yaml"})  # as watchfiles reports it
    assert set(change.services) == {ServiceKey("default", "web")}
    assert folder.snapshot().services[0].spec.ports[0].port == 81
    Path("manifests/web.yaml").unlink()
    folder.reload({tmp_path / "manifests" / "web.yaml"})
    assert folder.snapshot().services == ()


@pytest.mark.parametrize("status", [["not-an-ip", "198.51.100.7"], ["198.51.100.7", "fe80::1%eth0"], ["198.51.100.7"]])
def test_plan_run_and_the_controller_read_a_status_with_an_unreadable_entry_alike(status: list[str]) -> None:
    """One reading of status IPs (`api.core.status_addresses`): the good entry is kept by all three."""
    from metallb_bgp.api.loader import parse_object
    from metallb_bgp.core.plan.controller import ServiceView, readable_ips
    from metallb_bgp.core.plan.pipeline import make_plan
    from metallb_bgp.core.snapshot import ClusterSnapshot
    from metallb_bgp.core.writes import ingress_ips

    docs = [
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p", "namespace": "metallb-system"},
         "spec": {"addresses": ["198.51.100.0/28"]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
         "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in status]}}},
    ]  # fmt: skip
    snapshot = ClusterSnapshot.from_objects([parse_object(doc).obj for doc in docs])
    web = ServiceKey("default", "web")

    planned = make_plan(snapshot, node_name="n").allocation.assignments[web].ips
    run = IncrementalPlanner(node_name="n").update(ClusterChange.whole(snapshot)).allocation.assignments[web].ips
    view = ServiceView(ref=None, resource_version="1", ips=ingress_ips(docs[1]["status"]["loadBalancer"]["ingress"]), pool=None)  # type: ignore[arg-type]

    assert [str(ip) for ip in planned] == [str(ip) for ip in run] == ["198.51.100.7"]
    assert readable_ips(view) == planned
