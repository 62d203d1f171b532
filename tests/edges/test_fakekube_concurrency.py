"""The fake API server under concurrent clients: it serves them at once, and its semantics hold.

The controller sends its writes several at a time; a fake server that answered one request after the
other would hide whether that helps, and one that lost a resourceVersion or a 409 under concurrency
would hide bugs. A store-wide lock makes each request atomic, as etcd's transactions do for the real
API server; the HTTP side runs one thread per connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fakekube import FakeKube
from kubernetes import client
from kubernetes.client.rest import ApiException

T = TypeVar("T")


def at_once(count: int, call: Callable[[int], T]) -> list[T | ApiException]:
    """`call(i)` for i in range(count), all in flight together (a barrier releases them at once)."""
    barrier = threading.Barrier(count)

    def one(index: int) -> T | ApiException:
        barrier.wait(timeout=10)
        try:
            return call(index)
        except ApiException as error:
            return error

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def service(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}


def status_patch(ip: str, resource_version: str = "") -> dict[str, Any]:
    patch: dict[str, Any] = {"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def test_slow_requests_from_concurrent_clients_are_answered_concurrently(fake_kube: FakeKube) -> None:
    core = client.CoreV1Api(fake_kube.client)
    core.read_namespace("default")  # discovery and a first connection out of the way
    fake_kube.slow_next(8, seconds=0.4, method="GET", path=r"/namespaces/default$")
    started = time.monotonic()
    answers = at_once(8, lambda _: core.read_namespace("default"))
    elapsed = time.monotonic() - started
    assert all(isinstance(answer, client.V1Namespace) for answer in answers)
    assert elapsed < 1.6, f"8 requests of 0.4 s took {elapsed:.2f} s: answered one after the other"  # 3.2 s if serial


def test_concurrent_patches_with_one_precondition_let_exactly_one_through(fake_kube: FakeKube) -> None:
    core = client.CoreV1Api(fake_kube.client)
    version = core.create_namespaced_service("default", service("web")).metadata.resource_version
    merge = "application/merge-patch+json"
    answers = at_once(12, lambda i: core.patch_namespaced_service_status(
        "web", "default", status_patch(f"192.0.2.{i}", version), _content_type=merge))  # fmt: skip
    written = [answer for answer in answers if isinstance(answer, client.V1Service)]
    conflicts = [answer for answer in answers if isinstance(answer, ApiException) and answer.status == 409]
    assert len(written) == 1 and len(conflicts) == 11
    now = core.read_namespaced_service("web", "default")
    assert now.status.load_balancer.ingress[0].ip == written[0].status.load_balancer.ingress[0].ip
    assert int(now.metadata.resource_version) == int(version) + 1


def test_concurrent_patches_of_many_services_all_land_each_with_its_own_version(fake_kube: FakeKube) -> None:
    core = client.CoreV1Api(fake_kube.client)
    versions = {f"s{i}": core.create_namespaced_service("default", service(f"s{i}")).metadata.resource_version
                for i in range(32)}  # fmt: skip
    before = fake_kube.resource_version
    answers = at_once(32, lambda i: core.patch_namespaced_service_status(
        f"s{i}", "default", status_patch(f"192.0.2.{i}", versions[f"s{i}"]),
        _content_type="application/merge-patch+json"))  # fmt: skip
    assert all(isinstance(answer, client.V1Service) for answer in answers), answers
    new_versions = sorted(int(answer.metadata.resource_version) for answer in answers)  # type: ignore[union-attr]
    assert new_versions == list(range(before + 1, before + 33))  # one each, none lost, none shared
    listed = {s.metadata.name: s.status.load_balancer.ingress[0].ip for s in core.list_namespaced_service("default").items}
    assert listed == {f"s{i}": f"192.0.2.{i}" for i in range(32)}
