"""`core_v1.CoreV1` sends what the generated `CoreV1Api` sends, and answers as it does.

The daemons' core/v1 requests go through `CoreV1` (see its docstring for why); each is checked here
against the generated client's method on the same fake API server: the same objects back, the same
errors raised.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fakekube import FakeKube
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from metallb_bgp.kube.client import CoreV1


def _service(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}


def _names(response: Any) -> list[str]:
    return [item["metadata"]["name"] for item in json.loads(response.data)["items"]]


def test_lists_page_and_match_the_generated_client(fake_kube: FakeKube) -> None:
    generated, ours = client.CoreV1Api(fake_kube.client), CoreV1(fake_kube.client)
    for i in range(5):
        generated.create_namespaced_service("default", _service(f"s{i}"))
    everything = _names(generated.list_service_for_all_namespaces(_preload_content=False))
    assert _names(ours.list_service_for_all_namespaces(_request_timeout=(5, 5))) == everything == [f"s{i}" for i in range(5)]
    first = json.loads(ours.list_service_for_all_namespaces(limit=2).data)
    rest = ours.list_service_for_all_namespaces(limit=10, _continue=first["metadata"]["continue"])
    assert [i["metadata"]["name"] for i in first["items"]] + _names(rest) == everything
    assert _names(ours.list_namespace()) == _names(generated.list_namespace(_preload_content=False))
    assert _names(ours.list_node()) == _names(generated.list_node(_preload_content=False))
    assert _names(ours.list_namespaced_secret("default")) == []


def test_a_watch_streams_events_from_a_resource_version(fake_kube: FakeKube) -> None:
    ours = CoreV1(fake_kube.client)
    version = json.loads(ours.list_service_for_all_namespaces().data)["metadata"]["resourceVersion"]
    client.CoreV1Api(fake_kube.client).create_namespaced_service("default", _service("web"))
    response = ours.list_service_for_all_namespaces(watch=True, resource_version=version, allow_watch_bookmarks=True,
                                                    timeout_seconds=1)  # fmt: skip
    events = [json.loads(line) for line in iter_resp_lines(response) if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"] == [("ADDED", "web")]


def test_writes_answer_the_stored_object_and_errors_raise_as_the_generated_client(fake_kube: FakeKube) -> None:
    generated, ours = client.CoreV1Api(fake_kube.client), CoreV1(fake_kube.client)
    created = generated.create_namespaced_service("default", _service("web"))
    status = {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}}
    answer = ours.patch_namespaced_service_status("web", "default", status, timeout=5)
    assert answer["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.1"}]
    assert int(answer["metadata"]["resourceVersion"]) > int(created.metadata.resource_version)
    labelled = ours.patch_namespaced_service("web", "default", {"metadata": {"annotations": {"a": "b"}}}, timeout=5)
    assert labelled["metadata"]["annotations"] == {"a": "b"} and labelled["status"] == answer["status"]
    event = ours.create_namespaced_event("default", {"metadata": {"generateName": "web."}, "involvedObject": {
        "kind": "Service", "namespace": "default", "name": "web"}, "reason": "r", "message": "m", "count": 1}, timeout=5)
    counted = ours.patch_namespaced_event(event["metadata"]["name"], "default", {"count": 2}, timeout=5)
    assert counted["count"] == 2 and generated.read_namespaced_event(event["metadata"]["name"], "default").count == 2
    for call in (lambda api: api.patch_namespaced_service_status("gone", "default", status),
                 lambda api: api.patch_namespaced_event("gone", "default", {"count": 2})):  # fmt: skip
        with pytest.raises(ApiException) as theirs:
            call(generated)
        with pytest.raises(ApiException) as mine:
            call(_Timed(ours))
        assert (type(mine.value), mine.value.status, json.loads(mine.value.body)["reason"]) == (
            type(theirs.value), theirs.value.status, json.loads(theirs.value.body)["reason"])


def test_an_option_the_generated_list_takes_but_we_never_send_is_refused() -> None:
    with pytest.raises(TypeError, match="label_selector"):
        CoreV1(client.ApiClient()).list_node(label_selector="a=b")


class _Timed:
    """`CoreV1`'s writes take a timeout keyword the generated methods spell differently."""

    def __init__(self, api: CoreV1) -> None:
        self.api = api

    def __getattr__(self, name: str) -> Any:
        return lambda *args: getattr(self.api, name)(*args, timeout=5)


def test_the_daemons_say_who_they_are_to_the_api_server(fake_kube: FakeKube, tmp_path: Any) -> None:
    """`metallb-bgp-<component>/<version>` on every request, so audit logs, request metrics and API
    Priority and Fairness can tell the speakers' load from the controller's."""
    from metallb_bgp import __version__
    from metallb_bgp.kube.client import api_client_from

    api = api_client_from(fake_kube.write_kubeconfig(tmp_path / "kubeconfig"), "speaker")
    try:
        client.CoreV1Api(api).list_namespaced_service("default")
    finally:
        api.close()
    assert api.user_agent == f"metallb-bgp-speaker/{__version__}"
    assert fake_kube.sent_bytes.get(f"metallb-bgp-speaker/{__version__}", 0) > 0
