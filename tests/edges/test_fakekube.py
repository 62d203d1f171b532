"""The fake API server answers the official client the way a real kube-apiserver would."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import urllib3
from fakekube import FakeKube
from kubernetes import client, dynamic, watch
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

GROUP = "metallb.io"


def _service(name: str, labels: dict[str, str] | None = None, port: int = 80) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"ports": [{"port": port}]}}


def _ingress(ip: str) -> client.V1ServiceStatus:
    return client.V1ServiceStatus(load_balancer=client.V1LoadBalancerStatus(ingress=[client.V1LoadBalancerIngress(ip=ip)]))


def _error(excinfo: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    return json.loads(excinfo.value.body)


def _events(stream_func: Any, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
    return [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(stream_func, *args, **kwargs)]


# --- CRUD ------------------------------------------------------------------------------------------


def test_observers_see_each_committed_event_once_in_order(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    seen: list[tuple[str, str, bool]] = []  # (type, resourceVersion, already in the history a watch replays)
    store = fake_kube.store
    store.observers.append(lambda e: seen.append((e.type, e.obj["metadata"]["resourceVersion"], store.history[-1] is e)))
    core.create_namespaced_service("default", _service("web"))
    core.patch_namespaced_service_status("web", "default", {"status": _ingress("10.0.0.1").to_dict()})
    core.patch_namespaced_service("web", "default", {"metadata": {"labels": {}}})  # changes nothing: no event
    core.delete_namespaced_service("web", "default")
    services = [e for e in store.history if e.resource == ("", "services")]
    assert [(t, rv) for t, rv, _ in seen] == [(e.type, e.obj["metadata"]["resourceVersion"]) for e in services]
    assert [t for t, _, _ in seen] == ["ADDED", "MODIFIED", "DELETED"] and all(last for _, _, last in seen)


def test_create_fills_system_metadata_and_get_list_delete_see_it(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_service("default", _service("web"))
    assert created.metadata.uid and created.metadata.creation_timestamp and created.metadata.resource_version
    assert core.read_namespaced_service("web", "default").metadata.uid == created.metadata.uid
    listed = core.list_namespaced_service("default")
    assert [s.metadata.name for s in listed.items] == ["web"]
    assert listed.metadata.resource_version == created.metadata.resource_version
    core.delete_namespaced_service("web", "default")
    with pytest.raises(ApiException) as excinfo:
        core.read_namespaced_service("web", "default")
    assert excinfo.value.status == 404
    assert _error(excinfo)["reason"] == "NotFound" and _error(excinfo)["kind"] == "Status"


def test_list_is_a_typed_list_with_kind_and_api_version(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", _service("web"))
    raw = json.loads(core.list_namespaced_service("default", _preload_content=False).data)
    assert (raw["kind"], raw["apiVersion"]) == ("ServiceList", "v1")
    assert int(raw["metadata"]["resourceVersion"]) == fake_kube.resource_version


def test_resource_versions_increase_globally_across_kinds(core: client.CoreV1Api) -> None:
    first = core.create_namespaced_service("default", _service("a"))
    second = core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)


def test_create_twice_is_409_already_exists(core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", _service("web"))
    with pytest.raises(ApiException) as excinfo:
        core.create_namespaced_service("default", _service("web"))
    assert (excinfo.value.status, _error(excinfo)["reason"]) == (409, "AlreadyExists")


def test_create_in_a_missing_namespace_is_404(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as excinfo:
        core.create_namespaced_service("nowhere", _service("web"))
    assert excinfo.value.status == 404


def test_generate_name_gets_a_random_suffix(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map("default", {"metadata": {"generateName": "cm-"}})
    assert created.metadata.name.startswith("cm-") and len(created.metadata.name) == 8


def test_update_with_a_stale_resource_version_is_409_conflict(core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", _service("web"))
    first = core.read_namespaced_service("web", "default")
    second = core.read_namespaced_service("web", "default")
    first.metadata.labels = {"x": "1"}
    core.replace_namespaced_service("web", "default", first)
    second.metadata.labels = {"x": "2"}
    with pytest.raises(ApiException) as excinfo:
        core.replace_namespaced_service("web", "default", second)
    assert (excinfo.value.status, _error(excinfo)["reason"]) == (409, "Conflict")


def test_an_update_that_changes_nothing_keeps_the_resource_version(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_service("default", _service("web"))
    again = core.replace_namespaced_service("web", "default", created)
    assert again.metadata.resource_version == created.metadata.resource_version


def test_cluster_scoped_nodes_keep_status_given_at_create(core: client.CoreV1Api) -> None:
    node = {"metadata": {"name": "n1", "labels": {"zone": "a"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}
    core.create_node(node)
    assert core.read_node("n1").status.addresses[0].address == "192.0.2.1"
    assert [n.metadata.name for n in core.list_node(label_selector="zone=a").items] == ["n1"]


# --- status subresource ----------------------------------------------------------------------------


def test_status_writes_change_only_status_and_main_writes_keep_it(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_service("default", {**_service("web"), "status": _ingress("192.0.2.9").to_dict()})
    assert not (created.status and created.status.load_balancer and created.status.load_balancer.ingress)
    svc = core.read_namespaced_service("web", "default")
    svc.status = _ingress("192.0.2.10")
    svc.spec.ports[0].port = 8080  # ignored: this is a status write
    written = core.replace_namespaced_service_status("web", "default", svc)
    assert written.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert written.spec.ports[0].port == 80
    written.status = _ingress("198.51.100.1")  # ignored: this is a main-resource write
    written.spec.ports[0].port = 81
    replaced = core.replace_namespaced_service("web", "default", written)
    assert replaced.spec.ports[0].port == 81
    assert replaced.status.load_balancer.ingress[0].ip == "192.0.2.10"


def test_custom_resource_generation_follows_spec_not_status(custom: client.CustomObjectsApi) -> None:
    pool = {"apiVersion": f"{GROUP}/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "p"},
            "spec": {"addresses": ["192.0.2.0/24"]}}
    created = custom.create_namespaced_custom_object(GROUP, "v1beta1", "metallb-system", "ipaddresspools", pool)
    assert created["metadata"]["generation"] == 1
    status = custom.patch_namespaced_custom_object_status(
        GROUP, "v1beta1", "metallb-system", "ipaddresspools", "p", {"status": {"assignedIPv4": 3}})
    assert (status["metadata"]["generation"], status["status"]) == (1, {"assignedIPv4": 3})
    patched = custom.patch_namespaced_custom_object(
        GROUP, "v1beta1", "metallb-system", "ipaddresspools", "p", {"spec": {"autoAssign": False}})
    assert patched["metadata"]["generation"] == 2 and patched["status"] == {"assignedIPv4": 3}


# --- patch -----------------------------------------------------------------------------------------


def test_patch_accepts_merge_json_and_strategic_merge_patches(core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", _service("web", {"a": "1"}))
    strategic = core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"b": "2"}}})
    assert strategic.metadata.labels == {"a": "1", "b": "2"}
    merged = core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"a": None}}},
                                           _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"b": "2"}
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}},
           {"op": "replace", "path": "/spec/ports/0/port", "value": 443}]
    patched = core.patch_namespaced_service("web", "default", ops)
    assert patched.metadata.annotations == {"k": "v"} and patched.spec.ports[0].port == 443


def test_a_failing_json_patch_is_422_and_changes_nothing(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_service("default", _service("web", {"a": "1"}))
    ops = [{"op": "remove", "path": "/metadata/labels/a"}, {"op": "test", "path": "/spec/ports/0/port", "value": 1}]
    with pytest.raises(ApiException) as excinfo:
        core.patch_namespaced_service("web", "default", ops)
    assert excinfo.value.status == 422
    assert core.read_namespaced_service("web", "default").metadata == created.metadata


def test_strategic_merge_patch_on_a_custom_resource_is_415(fake_kube: FakeKube, custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(GROUP, "v1beta1", "metallb-system", "communities",
                                           {"apiVersion": f"{GROUP}/v1beta1", "kind": "Community", "metadata": {"name": "c"}})
    with pytest.raises(ApiException) as excinfo:
        custom.patch_namespaced_custom_object(GROUP, "v1beta1", "metallb-system", "communities", "c", {"spec": {}},
                                              _content_type="application/strategic-merge-patch+json")
    assert excinfo.value.status == 415


# --- selectors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", ["a", "b"]),
    ("app==web,tier=fe", ["a"]),
    ("app!=web", ["c", "d"]),
    ("tier in (fe,be)", ["a", "b"]),
    ("tier notin (fe)", ["b", "c", "d"]),
    ("tier", ["a", "b"]),
    ("!tier", ["c", "d"]),
])
def test_label_selectors_filter_lists(core: client.CoreV1Api, selector: str, expected: list[str]) -> None:
    for name, labels in (("a", {"app": "web", "tier": "fe"}), ("b", {"app": "web", "tier": "be"}),
                         ("c", {"app": "db"}), ("d", {})):
        core.create_namespaced_service("default", _service(name, labels))
    assert [s.metadata.name for s in core.list_namespaced_service("default", label_selector=selector).items] == expected


def test_field_selectors_and_all_namespaces_lists(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_service("default", _service("web"))
    core.create_namespaced_service("other", _service("web"))
    core.create_namespaced_service("other", _service("api"))
    everywhere = core.list_service_for_all_namespaces(field_selector="metadata.name=web")
    assert sorted(s.metadata.namespace for s in everywhere.items) == ["default", "other"]
    others = core.list_service_for_all_namespaces(field_selector="metadata.namespace!=default")
    assert sorted(s.metadata.name for s in others.items) == ["api", "web"]
    with pytest.raises(ApiException) as excinfo:
        core.list_service_for_all_namespaces(field_selector="spec.nope=1")
    assert excinfo.value.status == 400


# --- watch -----------------------------------------------------------------------------------------


def test_watch_from_a_resource_version_replays_exactly_the_later_events(core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", _service("before"))
    mark = core.list_namespaced_service("default").metadata.resource_version
    core.create_namespaced_service("default", _service("web"))
    core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_service("before", "default")
    events = _events(core.list_namespaced_service, "default", resource_version=mark, timeout_seconds=1)
    assert events == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "before")]


def test_watch_without_resource_version_starts_with_the_current_objects(core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", _service("a"))
    core.create_namespaced_service("default", _service("b"))
    assert _events(core.list_namespaced_service, "default", timeout_seconds=1) == [("ADDED", "a"), ("ADDED", "b")]


def test_watch_streams_live_events_and_selector_exits_look_like_deletes(core: client.CoreV1Api) -> None:
    core.create_namespaced_service("default", _service("web", {"app": "web"}))
    seen: list[tuple[str, str]] = []
    stream = watch.Watch().stream(core.list_namespaced_service, "default", label_selector="app=web", timeout_seconds=5)
    for event in stream:
        seen.append((event["type"], event["object"].metadata.labels.get("app", "")))
        if len(seen) == 1:
            core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"app": "db"}}})
        elif len(seen) == 2:
            core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"app": "web"}}})
        else:
            break
    assert seen == [("ADDED", "web"), ("DELETED", "web"), ("ADDED", "web")]


def test_custom_resources_are_listed_and_watched_across_namespaces(custom: client.CustomObjectsApi) -> None:
    def pool(name: str) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/v1beta1", "kind": "IPAddressPool", "metadata": {"name": name}, "spec": {}}

    custom.create_namespaced_custom_object(GROUP, "v1beta1", "metallb-system", "ipaddresspools", pool("a"))
    listed = custom.list_cluster_custom_object(GROUP, "v1beta1", "ipaddresspools")
    assert (listed["kind"], [p["metadata"]["name"] for p in listed["items"]]) == ("IPAddressPoolList", ["a"])
    custom.create_namespaced_custom_object(GROUP, "v1beta1", "default", "ipaddresspools", pool("b"))
    events = watch.Watch().stream(custom.list_cluster_custom_object, GROUP, "v1beta1", "ipaddresspools",
                                  resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=1)
    assert [(e["type"], e["object"]["metadata"]["namespace"]) for e in events] == [("ADDED", "default")]


def test_watch_bookmarks_carry_the_latest_resource_version(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.bookmark_interval = 0.2
    core.create_namespaced_service("default", _service("web"))
    marks = [e["raw_object"] for e in watch.Watch().stream(core.list_namespaced_service, "default",
                                                           allow_watch_bookmarks=True, timeout_seconds=1)
             if e["type"] == "BOOKMARK"]
    assert len(marks) >= 2
    assert marks[-1]["metadata"] == {"resourceVersion": str(fake_kube.resource_version)}


def test_after_compaction_a_watch_from_an_old_version_raises_410(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    old = core.create_namespaced_service("default", _service("web")).metadata.resource_version
    core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"x": "1"}}})
    fake_kube.compact()
    for kwargs in ({"timeout_seconds": 2}, {}):  # with and without the client's one retry after 410
        with pytest.raises(ApiException) as excinfo:
            _events(core.list_namespaced_service, "default", resource_version=old, **kwargs)
        assert excinfo.value.status == 410
    assert _events(core.list_namespaced_service, "default", resource_version=str(fake_kube.resource_version),
                   timeout_seconds=1) == []


def test_after_compaction_lists_behave_like_the_real_server(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    old = core.create_namespaced_service("default", _service("a")).metadata.resource_version
    core.create_namespaced_service("default", _service("b"))
    exact = core.list_namespaced_service("default", resource_version=old, resource_version_match="Exact")
    assert [s.metadata.name for s in exact.items] == ["a"]
    fake_kube.compact()
    newer = core.list_namespaced_service("default", resource_version=old)  # "not older than": served
    assert [s.metadata.name for s in newer.items] == ["a", "b"]
    with pytest.raises(ApiException) as excinfo:
        core.list_namespaced_service("default", resource_version=old, resource_version_match="Exact")
    assert excinfo.value.status == 410


def test_paginated_lists_are_a_consistent_snapshot_until_compacted(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    for name in "abc":
        core.create_namespaced_service("default", _service(name))
    first = core.list_namespaced_service("default", limit=2)
    core.delete_namespaced_service("c", "default")
    second = core.list_namespaced_service("default", limit=2, _continue=first.metadata._continue)
    assert [s.metadata.name for s in first.items + second.items] == ["a", "b", "c"]
    fake_kube.compact()
    with pytest.raises(ApiException) as excinfo:
        core.list_namespaced_service("default", limit=2, _continue=first.metadata._continue)
    assert excinfo.value.status == 410


# --- faults ----------------------------------------------------------------------------------------


def test_injected_500_reaches_the_caller(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.fail_next(1, method="GET", path=r"/services")
    with pytest.raises(ApiException) as excinfo:
        core.list_namespaced_service("default")
    assert excinfo.value.status == 500
    assert core.list_namespaced_service("default").items == []


def test_injected_429_is_retried_by_urllib3_for_reads_but_not_creates(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.throttle_next(1, retry_after=0, method="GET")
    assert core.list_namespaced_service("default").items == []
    assert [r.status for r in fake_kube.requests if r.method == "GET"][-2:] == [429, 200]
    fake_kube.throttle_next(1, retry_after=0, method="POST")
    with pytest.raises(ApiException) as excinfo:
        core.create_namespaced_service("default", _service("web"))
    assert excinfo.value.status == 429 and excinfo.value.headers["Retry-After"] == "0"


def test_a_dropped_connection_is_retried_for_reads_and_raised_for_creates(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    fake_kube.drop_next(1, method="GET")
    assert core.list_namespaced_service("default").items == []
    assert [r.status for r in fake_kube.requests if r.method == "GET"][-2:] == [None, 200]
    fake_kube.drop_next(1, method="POST")
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.create_namespaced_service("default", _service("web"))
    fake_kube.drop_next(4, method="GET")  # more than urllib3's three retries
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.list_namespaced_service("default")


def test_restart_keeps_state_on_the_same_port(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    port = fake_kube.port
    created = core.create_namespaced_service("default", _service("web"))
    fake_kube.restart(keep_state=True)
    assert fake_kube.port == port
    assert core.read_namespaced_service("web", "default").metadata.uid == created.metadata.uid
    events = _events(core.list_namespaced_service, "default", resource_version=created.metadata.resource_version,
                     timeout_seconds=1)
    assert events == []


def test_restart_losing_state_forgets_objects_and_expires_old_versions(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    created = core.create_namespaced_service("default", _service("web"))
    fake_kube.restart(keep_state=False)
    with pytest.raises(ApiException) as excinfo:
        core.read_namespaced_service("web", "default")
    assert excinfo.value.status == 404
    with pytest.raises(ApiException) as excinfo:
        _events(core.list_namespaced_service, "default", resource_version=created.metadata.resource_version,
                timeout_seconds=1)
    assert excinfo.value.status == 410
    assert int(core.list_namespaced_service("default").metadata.resource_version) > int(created.metadata.resource_version)


def test_stopping_the_server_ends_open_watches(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            _events(core.list_namespaced_service, "default", timeout_seconds=10)
        except Exception as error:  # noqa: BLE001 - any end is fine, hanging is not
            errors.append(error)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    fake_kube.restart()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 5


# --- CRDs and schemas ------------------------------------------------------------------------------

_PEER_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["myASN", "peerASN", "peerAddress"],
            "properties": {
                "myASN": {"type": "integer", "minimum": 0, "maximum": 4294967295},
                "peerASN": {"type": "integer", "minimum": 0, "maximum": 4294967295},
                "peerAddress": {"type": "string"},
                "peerPort": {"type": "integer", "minimum": 0, "maximum": 16384, "default": 179},
                "dynamicASN": {"type": "string", "enum": ["internal", "external"]},
                "nodeSelectors": {"type": "array", "items": {"type": "object", "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}}},
            },
        },
        "status": {"type": "object"},
    },
}
_PEER_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"bgppeers.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced",
             "names": {"kind": "BGPPeer", "plural": "bgppeers", "singular": "bgppeer", "listKind": "BGPPeerList"},
             "versions": [{"name": "v1beta2", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": _PEER_SCHEMA}}]},
}


def _peer(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1beta2", "kind": "BGPPeer", "metadata": {"name": "p"}, "spec": spec}


@pytest.fixture
def bare_kube() -> Any:
    with FakeKube(crds=()) as fake:
        yield fake


def test_posting_a_crd_makes_its_kind_served_and_discoverable(bare_kube: FakeKube) -> None:
    custom = client.CustomObjectsApi(bare_kube.client)
    with pytest.raises(ApiException):
        custom.list_namespaced_custom_object(GROUP, "v1beta2", "default", "bgppeers")
    crd = client.ApiextensionsV1Api(bare_kube.client).create_custom_resource_definition(_PEER_CRD)
    assert {c.type for c in crd.status.conditions} == {"Established", "NamesAccepted"}
    assert custom.list_namespaced_custom_object(GROUP, "v1beta2", "default", "bgppeers")["items"] == []
    peers = dynamic.DynamicClient(bare_kube.client).resources.get(api_version=f"{GROUP}/v1beta2", kind="BGPPeer")
    assert peers.namespaced and peers.name == "bgppeers"


@pytest.mark.parametrize(("spec", "field", "reason"), [
    ({"myASN": 1, "peerASN": 2}, "spec.peerAddress", "FieldValueRequired"),
    ({"myASN": "one", "peerASN": 2, "peerAddress": "192.0.2.1"}, "spec.myASN", "FieldValueTypeInvalid"),
    ({"myASN": 1, "peerASN": -2, "peerAddress": "192.0.2.1"}, "spec.peerASN", "FieldValueInvalid"),
    ({"myASN": 1, "peerASN": 2, "peerAddress": "a", "peerPort": 99999}, "spec.peerPort", "FieldValueInvalid"),
    ({"myASN": 1, "peerASN": 2, "peerAddress": "a", "dynamicASN": "x"}, "spec.dynamicASN", "FieldValueNotSupported"),
    ({"myASN": 1, "peerASN": 2, "peerAddress": "a", "nodeSelectors": [{"matchLabels": {"k": 1}}]},
     "spec.nodeSelectors[0].matchLabels.k", "FieldValueTypeInvalid"),
])
def test_invalid_custom_resources_are_422_naming_the_field(bare_kube: FakeKube, spec: dict[str, Any], field: str,
                                                           reason: str) -> None:
    bare_kube.register_crd(_PEER_CRD)
    with pytest.raises(ApiException) as excinfo:
        client.CustomObjectsApi(bare_kube.client).create_namespaced_custom_object(
            GROUP, "v1beta2", "default", "bgppeers", _peer(spec))
    body = _error(excinfo)
    assert (excinfo.value.status, body["reason"], body["details"]["kind"]) == (422, "Invalid", "BGPPeer")
    assert [(c["field"], c["reason"]) for c in body["details"]["causes"]] == [(field, reason)]
    assert body["message"].startswith(f'BGPPeer.{GROUP} "p" is invalid: {field}: ')


def test_unknown_fields_are_pruned_with_a_warning_or_rejected_when_strict(bare_kube: FakeKube) -> None:
    bare_kube.register_crd(_PEER_CRD)
    custom = client.CustomObjectsApi(bare_kube.client)
    spec = {"myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.1", "bogus": True}
    with pytest.raises(ApiException) as excinfo:
        custom.create_namespaced_custom_object(GROUP, "v1beta2", "default", "bgppeers", _peer(spec),
                                               field_validation="Strict")
    assert excinfo.value.status == 400 and 'unknown field "spec.bogus"' in _error(excinfo)["message"]
    data, _, headers = custom.create_namespaced_custom_object_with_http_info(
        GROUP, "v1beta2", "default", "bgppeers", _peer(spec))
    assert "bogus" not in data["spec"] and data["spec"]["peerPort"] == 179  # pruned and defaulted
    assert headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'


def test_metallb_kinds_are_served_in_both_bgppeer_versions(custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(GROUP, "v1beta2", "metallb-system", "bgppeers", _peer({"anything": 1}))
    old = custom.get_namespaced_custom_object(GROUP, "v1beta1", "metallb-system", "bgppeers", "p")
    assert (old["apiVersion"], old["spec"]) == (f"{GROUP}/v1beta1", {"anything": 1})


# --- discovery, events, endpoint slices ------------------------------------------------------------


def test_discovery_lists_resources_and_status_subresources(fake_kube: FakeKube, core: client.CoreV1Api) -> None:
    core_names = {r.name: r for r in core.get_api_resources().resources}
    assert core_names["services"].namespaced and "watch" in core_names["services"].verbs
    assert core_names["services/status"].verbs == ["get", "patch", "update"]
    assert not core_names["nodes"].namespaced
    groups = {g.name: g for g in client.ApisApi(fake_kube.client).get_api_versions().groups}
    assert {"discovery.k8s.io", "coordination.k8s.io", GROUP} <= set(groups)
    assert groups[GROUP].preferred_version.version == "v1beta2"
    pools = dynamic.DynamicClient(fake_kube.client).resources.get(api_version=f"{GROUP}/v1beta1", kind="IPAddressPool")
    assert pools.subresources["status"]


def test_events_can_be_emitted_and_listed_by_involved_object(core: client.CoreV1Api) -> None:
    for name in ("web", "db"):
        core.create_namespaced_event("default", {
            "metadata": {"generateName": f"{name}."}, "reason": "IPAllocated", "type": "Normal", "message": "ok",
            "involvedObject": {"kind": "Service", "namespace": "default", "name": name}})
    listed = core.list_namespaced_event("default", field_selector="involvedObject.name=web")
    assert [(e.reason, e.involved_object.name) for e in listed.items] == [("IPAllocated", "web")]


def test_endpoint_slices_are_served(fake_kube: FakeKube) -> None:
    slices = client.DiscoveryV1Api(fake_kube.client)
    slices.create_namespaced_endpoint_slice("default", {
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.1"], "nodeName": "n1", "conditions": {"ready": True}}]})
    listed = slices.list_namespaced_endpoint_slice("default", label_selector="kubernetes.io/service-name=web")
    assert listed.items[0].endpoints[0].node_name == "n1"


# --- leader election -------------------------------------------------------------------------------


def test_leader_election_has_one_leader_and_fails_over_when_it_stops_renewing(fake_kube: FakeKube) -> None:
    started = {name: threading.Event() for name in ("a", "b")}
    stopped = {name: threading.Event() for name in ("a", "b")}

    def candidate(name: str) -> None:
        config = electionconfig.Config(LeaseLock("controller", "metallb-system", name), lease_duration=2,
                                       renew_deadline=1.5, retry_period=1, onstarted_leading=started[name].set,
                                       onstopped_leading=stopped[name].set)
        leaderelection.LeaderElection(config).run()

    for name in started:
        threading.Thread(target=candidate, args=(name,), daemon=True).start()
    deadline = time.monotonic() + 5
    while not any(e.is_set() for e in started.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    leader = next(name for name, event in started.items() if event.is_set())
    follower = "b" if leader == "a" else "a"
    time.sleep(1.5)  # the follower keeps polling but the lease is held
    assert not started[follower].is_set()

    fake_kube.fail_next(10_000, method="PUT", path=r"/leases/controller$")  # the leader can no longer renew
    assert stopped[leader].wait(timeout=5)
    fake_kube.clear_faults()
    assert started[follower].wait(timeout=5)
    lease = client.CoordinationV1Api(fake_kube.client).read_namespaced_lease("controller", "metallb-system")
    assert lease.spec.holder_identity == follower

    fake_kube.fail_next(10_000, method="PUT", path=r"/leases/controller$")  # let the new leader stop cleanly
    assert stopped[follower].wait(timeout=5)
