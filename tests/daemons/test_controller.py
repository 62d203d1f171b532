"""The Kubernetes controller: what it writes (pure patch computations), and what a fake API server sees.

The first half checks the pure functions that decide every write. The second half runs `Controller`
in-process with the real `KubernetesSource` against the fake API server (tests/fakekube) and reads the
results back through the API, as `kubectl` would. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from builders import GROUP, NS, advertisement, pool, service, snapshot
from fakekube import FakeKube, schemaless_crd
from kubernetes import client
from waiting import eventually

from metallb_bgp.api.problems import ObjectError, Severity
from metallb_bgp.core.allocator.allocate import allocate
from metallb_bgp.core.allocator.results import PoolUsage
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.plan.controller import ServiceView, Written, allocated_message, merge_overlay, snapshot_views, writes_for
from metallb_bgp.core.snapshot import ClusterSnapshot
from metallb_bgp.core.writes import (
    POOL_ANNOTATION,
    EventSpec,
    ObjectRef,
    WriteOutcome,
    WriteResult,
    configuration_state_status,
    event_body,
    pool_annotation_patch,
    pool_status_patch,
    service_status_patch,
)
from metallb_bgp.daemons.controller import Controller, ControllerOptions
from metallb_bgp.kube.events import EventLedger
from metallb_bgp.kube.leader import LeaseElector, LeaseTimings
from metallb_bgp.kube.writer import EventPacer, KubeWriter, concurrently


def snap(*docs: dict[str, Any]) -> ClusterSnapshot:
    return snapshot(*docs, from_api=True)  # as the Kubernetes source reads them: uids and resourceVersions


FAST = LeaseTimings(lease_duration=3, renew_deadline=2, retry_period=1)


def plan(snapshot: ClusterSnapshot, views: dict[ServiceKey, ServiceView] | None = None):
    compiled = compile_config(snapshot)
    views = views if views is not None else snapshot_views(snapshot)
    existing = {k: tuple(ipaddress.ip_address(i) for i in v.ips) for k, v in views.items() if v.ips}
    allocation = allocate(compiled.config, snapshot.services, snapshot.namespaces, existing=existing)
    return writes_for(snapshot, compiled, allocation, views)


WEB = ServiceKey("default", "web")


# --- pure: the patches ------------------------------------------------------------------------------


def test_status_patch_is_none_when_the_ingress_already_shows_the_ips() -> None:
    assert service_status_patch(("198.51.100.1",), ("198.51.100.1",)) is None
    assert service_status_patch((), ()) is None


def test_status_patch_replaces_the_whole_ingress_list_and_carries_the_version_it_was_computed_from() -> None:
    patch = service_status_patch(("198.51.100.9",), ("198.51.100.1", "2001:db8::1"), resource_version="42")
    assert patch == {
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}, {"ip": "2001:db8::1"}]}},
        "metadata": {"resourceVersion": "42"},
    }
    assert service_status_patch(("198.51.100.1",), ()) == {"status": {"loadBalancer": {"ingress": []}}}


def test_pool_annotation_patch_sets_changes_and_removes_only_when_needed() -> None:
    assert pool_annotation_patch({}, "pool") == {"metadata": {"annotations": {POOL_ANNOTATION: "pool"}}}
    assert pool_annotation_patch({POOL_ANNOTATION: "old"}, "pool") == {"metadata": {"annotations": {POOL_ANNOTATION: "pool"}}}
    assert pool_annotation_patch({POOL_ANNOTATION: "pool"}, "pool") is None
    assert pool_annotation_patch({POOL_ANNOTATION: "pool"}, None) == {"metadata": {"annotations": {POOL_ANNOTATION: None}}}
    assert pool_annotation_patch({"other": "x"}, None) is None


def test_pool_status_patch_writes_the_four_counters_only_when_one_differs() -> None:
    usage = PoolUsage(assigned_ipv4=2, assigned_ipv6=0, available_ipv4=6, available_ipv6=0)
    wanted = {"assignedIPv4": 2, "assignedIPv6": 0, "availableIPv4": 6, "availableIPv6": 0}
    assert pool_status_patch(None, usage) == {"status": wanted}
    assert pool_status_patch({**wanted, "somethingElse": 1}, usage) is None
    assert pool_status_patch({**wanted, "assignedIPv4": 1}, usage) == {"status": wanted}


def test_configuration_state_is_invalid_with_an_error_and_lists_warnings_without_summarising_them() -> None:
    error = ObjectError("BGPAdvertisement", NS, "bad", "spec.communities[0]", "not a community")
    warning = ObjectError("L2Advertisement", NS, "l2", "", "ignored", Severity.WARNING)
    status = configuration_state_status([warning, error, error])
    assert status["result"] == "Invalid"
    assert status["errorSummary"] == str(error)
    assert [e["name"] for e in status["errors"]] == ["bad", "l2"]
    assert status["errors"][1]["severity"] == "warning"
    assert configuration_state_status([warning])["result"] == "Valid"
    assert configuration_state_status([]) == {"result": "Valid", "errorSummary": "", "errors": []}


def test_error_summary_stays_bounded_with_thousands_of_errors() -> None:
    errors = [ObjectError("IPAddressPool", NS, f"p{i}", "spec.addresses", "x" * 50) for i in range(2000)]
    summary = configuration_state_status(errors)["errorSummary"]
    assert len(summary) <= 4096 and summary.endswith("more")


def test_event_body_names_the_object_and_truncates_a_long_message() -> None:
    ref = ObjectRef("Service", "default", "web", "v1", "u1")
    body = event_body(EventSpec(ref, "Warning", "AllocationFailed", "x" * 2000), component="metallb-controller",
                      instance="c1")
    assert body["involvedObject"] == {"kind": "Service", "name": "web", "apiVersion": "v1", "namespace": "default",
                                      "uid": "u1"}
    assert body["metadata"] == {"generateName": "web.", "namespace": "default"}
    assert (body["type"], body["reason"], len(body["message"])) == ("Warning", "AllocationFailed", 1024)
    assert body["source"] == {"component": "metallb-controller"} and body["reportingInstance"] == "c1"


# --- pure: what a reconcile writes ------------------------------------------------------------------


def test_a_new_service_gets_its_ip_in_status_the_pool_annotation_and_one_ip_allocated_event() -> None:
    writes = plan(snap(pool("pool", "198.51.100.0/29"), service("web")))
    [change] = writes.status
    assert change.ips == ("198.51.100.0",)
    assert change.patch["metadata"] == {"resourceVersion": "1"}
    assert [(e.reason, e.message) for e in change.events] == [("IPAllocated", 'Assigned IP ["198.51.100.0"]')]
    assert [(a.service, a.pool) for a in writes.annotations] == [(WEB, "pool")]
    assert writes.problem_events == frozenset()
    assert writes.state["result"] == "Valid"


def test_a_service_already_showing_its_ip_and_pool_needs_no_write() -> None:
    writes = plan(snap(pool("pool", "198.51.100.0/29"), service("web", ips=("198.51.100.3",), annotations={POOL_ANNOTATION: "pool"})))
    assert (writes.status, writes.annotations) == ((), ())


def test_a_service_that_cannot_get_an_ip_gets_allocation_failed_and_no_status_write() -> None:
    writes = plan(snap(pool("pool", "198.51.100.0/32"), service("a"), service("b")))
    assert [c.service.name for c in writes.status] == ["a"]
    [failed] = writes.problem_events
    assert (failed.ref.name, failed.type, failed.reason) == ("b", "Warning", "AllocationFailed")
    assert failed.message.startswith('Failed to allocate IP for "default/b": no available IP')


def test_an_ip_outside_every_pool_is_cleared_and_replaced_with_clear_assignment_and_ip_allocated() -> None:
    writes = plan(snap(pool("pool", "198.51.100.0/29"), service("web", ips=("203.0.113.1",), annotations={POOL_ANNOTATION: "gone"})))
    [change] = writes.status
    assert change.ips == ("198.51.100.0",)
    assert [e.reason for e in change.events] == ["ClearAssignment", "IPAllocated"]
    assert "203.0.113.1" in change.events[0].message
    assert [a.pool for a in writes.annotations] == ["pool"]


def test_a_service_that_stops_being_a_load_balancer_has_its_ip_and_annotation_removed() -> None:
    writes = plan(snap(pool("pool", "198.51.100.0/29"), service("web", ips=("198.51.100.0",), annotations={POOL_ANNOTATION: "pool"}, type="ClusterIP")))
    [change] = writes.status
    assert change.ips == () and [e.reason for e in change.events] == ["ClearAssignment"]
    assert writes.annotations[0].patch == {"metadata": {"annotations": {POOL_ANNOTATION: None}}}


def test_services_of_another_load_balancer_class_are_never_touched() -> None:
    writes = plan(snap(pool("pool", "198.51.100.0/29"), service("web", ips=("192.0.2.1",), loadBalancerClass="other")))
    assert (writes.status, writes.annotations, writes.problem_events) == ((), (), frozenset())


def test_a_deprecated_annotation_gives_a_warning_event_on_the_service() -> None:
    writes = plan(snap(pool("pool", "198.51.100.0/29"), service("web", annotations={"metallb.universe.tf/address-pool": "pool"})))
    [warning] = writes.problem_events
    assert (warning.ref.name, warning.type, warning.reason) == ("web", "Warning", "DeprecatedAnnotation")
    assert "metallb.io/address-pool" in warning.message


def test_a_malformed_cr_gives_invalid_configuration_on_the_cr_and_an_invalid_state_while_services_keep_working() -> None:
    bad = advertisement("bad", communities=["not-a-community"])
    writes = plan(snap(pool("pool", "198.51.100.0/29"), bad, service("web")))
    [event] = writes.problem_events
    assert (event.ref.kind, event.ref.name, event.type, event.reason) == ("BGPAdvertisement", "bad", "Warning",
                                                                           "InvalidConfiguration")
    assert event.message.startswith(f"BGPAdvertisement {NS}/bad: spec.communities")
    assert writes.state["result"] == "Invalid" and "bad" in writes.state["errorSummary"]
    assert [c.ips for c in writes.status] == [("198.51.100.0",)]


def test_an_unparseable_cr_is_still_named_in_an_event() -> None:
    broken = advertisement("typo", comunities=["64500:1"])
    writes = plan(snap(pool("pool", "198.51.100.0/29"), broken))
    [event] = writes.problem_events
    assert (event.ref.kind, event.ref.name, event.ref.api_version) == ("BGPAdvertisement", "typo", "metallb.io/v1beta1")


def test_pool_counters_count_assigned_and_available_addresses() -> None:
    writes = plan(snap(pool("pool", "198.51.100.0/29"), service("a"), service("b", ips=("198.51.100.5",))))
    [change] = writes.pools
    assert change.patch == {"status": {"assignedIPv4": 2, "assignedIPv6": 0, "availableIPv4": 6, "availableIPv6": 0}}


def test_our_unseen_writes_stand_in_for_the_cache_until_it_shows_that_version() -> None:
    cached = ServiceView(ObjectRef("Service", "default", "web", "v1", "u1"), "10", (), None)
    written = Written(ServiceView(cached.ref, "11", ("198.51.100.0",), "pool"), at=100.0)
    views, kept = merge_overlay({WEB: cached}, {WEB: written}, now=101.0)
    assert views[WEB].ips == ("198.51.100.0",) and WEB in kept
    caught_up = ServiceView(cached.ref, "11", ("198.51.100.0",), "pool")
    assert merge_overlay({WEB: caught_up}, {WEB: written}, now=101.0)[1] == {}
    recreated = ServiceView(ObjectRef("Service", "default", "web", "v1", "u2"), "5", (), None)
    assert merge_overlay({WEB: recreated}, {WEB: written}, now=101.0)[0][WEB] == recreated
    assert merge_overlay({WEB: cached}, {WEB: written}, now=200.0)[1] == {}  # too old: the cache wins
    assert merge_overlay({}, {WEB: written}, now=101.0) == ({}, {})  # deleted


def test_a_lagging_cache_never_gives_one_ip_to_two_services() -> None:
    first = snap(pool("pool", "198.51.100.0/29"), service("b"))
    views = snapshot_views(first)
    [change] = plan(first, views).status
    assert change.ips == ("198.51.100.0",)
    # "a" appears before the cache shows b's write: with b's write overlaid, a takes the next address
    second = snap(pool("pool", "198.51.100.0/29"), service("a"), service("b"))
    overlaid, _ = merge_overlay(snapshot_views(second), {ServiceKey("default", "b"): Written(
        ServiceView(views[ServiceKey("default", "b")].ref, "2", change.ips, "pool"), time.monotonic())},
        now=time.monotonic())
    writes = plan(second, overlaid)
    assert [(c.service.name, c.ips) for c in writes.status] == [("a", ("198.51.100.1",))]


def test_problem_events_are_emitted_once_while_the_problem_lasts_and_again_if_it_comes_back() -> None:
    ledger = EventLedger(max_attempts=2)
    spec = EventSpec(ObjectRef("Service", "default", "web"), "Warning", "AllocationFailed", "no IP")
    ledger.set_problems(frozenset({spec}))
    assert ledger.due() == [spec]
    ledger.record(spec, WriteResult(WriteOutcome.FAILED))
    assert ledger.due() == [spec]  # retried
    ledger.record(spec, WriteResult(WriteOutcome.OK))
    ledger.set_problems(frozenset({spec}))
    assert ledger.due() == []  # not again while it lasts
    ledger.set_problems(frozenset())
    ledger.set_problems(frozenset({spec}))
    assert ledger.due() == [spec]  # it came back


def test_transition_events_are_emitted_once_and_given_up_after_a_few_failures() -> None:
    ledger = EventLedger(max_attempts=2)
    spec = EventSpec(ObjectRef("Service", "default", "web"), "Normal", "IPAllocated", allocated_message(["192.0.2.1"]))
    ledger.add_once([spec])
    ledger.record(spec, WriteResult(WriteOutcome.FAILED))
    assert ledger.due() == [spec]
    ledger.record(spec, WriteResult(WriteOutcome.FAILED))
    assert ledger.due() == []


def test_lease_timings_follow_the_client_rules_instead_of_exiting() -> None:
    assert LeaseTimings().problems() == [] and FAST.problems() == []
    assert LeaseTimings(15, 10, 0).problems()[0].startswith("retry period")
    assert LeaseTimings(10, 10, 2).problems() == ["lease duration must be greater than renew deadline"]
    with pytest.raises(ValueError):
        LeaseElector(client.ApiClient(), name="l", namespace=NS, identity="x", timings=LeaseTimings(3, 2, 2))


# --- against the fake API server ----------------------------------------------------------------------


class Cluster:
    """The fake API server seen through the official client, as a user's kubectl would."""

    def __init__(self, fake: FakeKube) -> None:
        self.fake = fake
        self.core = client.CoreV1Api(fake.client)
        self.custom = client.CustomObjectsApi(fake.client)
        fake.register_crd(schemaless_crd(GROUP, "ConfigurationState", "configurationstates", ("v1beta1",)))

    def create(self, doc: dict[str, Any]) -> None:
        if doc["kind"] == "Service":
            body = {k: v for k, v in doc.items() if k != "status"}
            body["metadata"] = {k: v for k, v in doc["metadata"].items() if k not in ("uid", "resourceVersion")}
            self.core.create_namespaced_service(doc["metadata"]["namespace"], body)
        else:
            version = doc["apiVersion"].split("/")[1]
            plural = doc["kind"].lower() + ("es" if doc["kind"].endswith("s") else "s")
            self.custom.create_namespaced_custom_object(GROUP, version, NS, plural, doc)

    def ips(self, name: str, namespace: str = "default") -> tuple[str, ...]:
        status = self.core.read_namespaced_service(name, namespace).status
        ingress = (status.load_balancer.ingress if status and status.load_balancer else None) or []
        return tuple(i.ip for i in ingress)

    def annotation(self, name: str) -> str | None:
        return (self.core.read_namespaced_service(name, "default").metadata.annotations or {}).get(POOL_ANNOTATION)

    def events(self, name: str | None = None) -> list[tuple[str, str, str]]:
        selector = f"involvedObject.name={name}" if name else None
        items = self.core.list_event_for_all_namespaces(field_selector=selector).items
        return [(e.involved_object.name, e.reason, e.message) for e in items]

    def pool_status(self, name: str = "pool") -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, "v1beta1", NS, "ipaddresspools", name).get("status") or {}

    def state(self, name: str = "controller") -> dict[str, Any] | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, "v1beta1", NS, "configurationstates", name)
        except client.ApiException:
            return None
        return obj.get("status")

    def writes(self) -> list[Any]:
        return [r for r in self.fake.requests if r.method in ("PATCH", "POST", "PUT") and "/leases" not in r.path]


@pytest.fixture
def cluster(fake_kube: FakeKube) -> Cluster:
    return Cluster(fake_kube)


def controller_for(fake: FakeKube, **options: Any) -> Controller:
    options.setdefault("leader_election", False)
    options.setdefault("retry_initial", 0.1)
    return Controller(fake.client, ControllerOptions(identity=options.pop("identity", "c1"), **options))


async def running(controllers: list[Controller], scenario: Callable[[], Awaitable[None]]) -> None:
    stops = [asyncio.Event() for _ in controllers]
    tasks = [asyncio.create_task(c.run(s)) for c, s in zip(controllers, stops)]
    try:
        await scenario()
    finally:
        for stop in stops:
            stop.set()
        done, pending = await asyncio.wait(tasks, timeout=10)
        assert not pending, "a controller did not stop"
        for task in done:
            task.result()


def test_the_controller_writes_ip_annotation_events_pool_counters_and_its_configuration_state(cluster: Cluster) -> None:
    cluster.create(pool("pool", "198.51.100.0/29"))
    cluster.create(service("web"))

    async def scenario() -> None:
        await eventually(lambda: cluster.ips("web"), what="web's IP in status")
        assert cluster.ips("web") == ("198.51.100.0",)
        await eventually(lambda: cluster.annotation("web") == "pool", what="the pool annotation")
        await eventually(lambda: ("web", "IPAllocated", 'Assigned IP ["198.51.100.0"]') in cluster.events("web"),
                         what="IPAllocated")
        await eventually(lambda: cluster.pool_status().get("assignedIPv4") == 1, what="pool counters")
        assert cluster.pool_status() == {"assignedIPv4": 1, "assignedIPv6": 0, "availableIPv4": 7, "availableIPv6": 0}
        await eventually(lambda: cluster.state() == {"result": "Valid", "errorSummary": "", "errors": []},
                         what="a Valid ConfigurationState")
        labels = cluster.custom.get_namespaced_custom_object(GROUP, "v1beta1", NS, "configurationstates",
                                                             "controller")["metadata"]["labels"]
        assert labels == {"metallb.io/component-type": "controller"}

    asyncio.run(running([controller_for(cluster.fake)], scenario))


def test_a_converged_controller_sends_nothing_more_and_never_repeats_an_event(cluster: Cluster) -> None:
    cluster.create(pool("pool", "198.51.100.0/29"))
    cluster.create(service("web"))
    controller = controller_for(cluster.fake)

    async def scenario() -> None:
        await eventually(lambda: cluster.pool_status().get("assignedIPv4") == 1 and cluster.state(), what="convergence")
        await asyncio.sleep(0.3)
        before = len(cluster.writes())
        reconciles = controller.reconciles
        cluster.core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"touched": "1"}}})
        await eventually(lambda: controller.reconciles > reconciles, what="a reconcile after an unrelated edit")
        await asyncio.sleep(0.3)
        assert len(cluster.writes()) == before + 1  # only the test's own patch
        assert [e[1] for e in cluster.events("web")] == ["IPAllocated"]

    asyncio.run(running([controller], scenario))


def test_assignments_survive_a_controller_restart_even_when_a_lower_address_frees_up(cluster: Cluster) -> None:
    cluster.create(pool("pool", "198.51.100.0/29"))
    cluster.create(service("a"))
    cluster.create(service("b"))

    async def first() -> None:
        await eventually(lambda: cluster.ips("a") and cluster.ips("b"), what="two IPs")

    asyncio.run(running([controller_for(cluster.fake)], first))
    assert (cluster.ips("a"), cluster.ips("b")) == (("198.51.100.0",), ("198.51.100.1",))
    cluster.core.delete_namespaced_service("a", "default")
    cluster.create(service("c"))

    async def second() -> None:
        await eventually(lambda: cluster.ips("c"), what="c's IP")

    asyncio.run(running([controller_for(cluster.fake)], second))
    assert cluster.ips("b") == ("198.51.100.1",)  # kept, although .0 is free again
    assert cluster.ips("c") == ("198.51.100.0",)


def test_conflicts_and_server_errors_are_retried_and_never_stop_the_loop(cluster: Cluster) -> None:
    cluster.create(pool("pool", "198.51.100.0/29"))
    cluster.fake.fail_next(1, status=409, method="PATCH", path=r"/services/web/status")
    cluster.fake.fail_next(2, status=500, method="PATCH", path=r"/services/web/status")
    cluster.fake.fail_next(3, status=500, method="POST", path=r"/events")
    cluster.create(service("web"))

    async def scenario() -> None:
        await eventually(lambda: cluster.ips("web") == ("198.51.100.0",), timeout=15, what="web's IP after retries")
        await eventually(lambda: [e[1] for e in cluster.events("web")] == ["IPAllocated"], timeout=15,
                         what="the IPAllocated event after retries")
        failed = [r.status for r in cluster.fake.requests if r.path.endswith("/services/web/status")]
        assert failed[:3] == [409, 500, 500] and failed[-1] == 200

    asyncio.run(running([controller_for(cluster.fake)], scenario))


def test_a_malformed_cr_is_reported_in_the_configuration_state_and_as_an_event_on_it(cluster: Cluster) -> None:
    cluster.create(pool("pool", "198.51.100.0/29"))
    cluster.create(service("web"))
    cluster.create(advertisement("bad", communities=["not-a-community"]))

    async def scenario() -> None:
        state = await eventually(lambda: (s := cluster.state()) and s["result"] == "Invalid" and s,
                                 what="an Invalid ConfigurationState")
        assert state["errorSummary"].startswith(f"BGPAdvertisement {NS}/bad: spec.communities[0]")
        assert state["errors"][0]["name"] == "bad"
        await eventually(lambda: any(e[:2] == ("bad", "InvalidConfiguration") for e in cluster.events("bad")),
                         what="InvalidConfiguration on the CR")
        assert cluster.ips("web") == ("198.51.100.0",)
        cluster.custom.delete_namespaced_custom_object(GROUP, "v1beta1", NS, "bgpadvertisements", "bad")
        await eventually(lambda: (cluster.state() or {}).get("result") == "Valid", what="Valid again")
        assert len(cluster.events("bad")) == 1

    asyncio.run(running([controller_for(cluster.fake)], scenario))


def test_no_password_ever_reaches_an_event_or_a_configuration_state(cluster: Cluster) -> None:
    secret_text = "s3cr3t-Pa55"
    cluster.core.create_namespaced_secret(NS, {"metadata": {"name": "pw"}, "type": "Opaque",
                                               "stringData": {"password": secret_text}})
    peer = {"apiVersion": f"{GROUP}/v1beta2", "kind": "BGPPeer", "metadata": {"name": "p", "namespace": NS},
            "spec": {"myASN": 64500, "peerASN": 64501, "peerAddress": "192.0.2.1", "passwordSecret": {"name": "pw"}}}
    inline = {"apiVersion": f"{GROUP}/v1beta2", "kind": "BGPPeer", "metadata": {"name": "q", "namespace": NS},
              "spec": {"myASN": 64500, "peerASN": 64501, "peerAddress": "192.0.2.2", "password": secret_text,
                       "passwordSecret": {"name": "pw"}}}
    cluster.create(pool("pool", "198.51.100.0/29"))
    cluster.custom.create_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", peer)
    cluster.custom.create_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", inline)
    cluster.create(service("web"))

    async def scenario() -> None:
        await eventually(lambda: (s := cluster.state()) and s["result"] == "Invalid", what="the peers' errors")
        await eventually(lambda: len(cluster.events()) >= 3, what="events")
        written = json.dumps([cluster.state(), cluster.events()])
        assert secret_text not in written

    asyncio.run(running([controller_for(cluster.fake)], scenario))


def test_only_the_leader_writes_and_a_follower_takes_over_with_the_assignments_unchanged(cluster: Cluster) -> None:
    cluster.create(pool("pool", "198.51.100.0/29"))
    cluster.create(service("a"))
    first = controller_for(cluster.fake, identity="first", leader_election=True, timings=FAST)
    second = controller_for(cluster.fake, identity="second", leader_election=True, timings=FAST)
    coordination = client.CoordinationV1Api(cluster.fake.client)

    def holder() -> str | None:
        try:
            return coordination.read_namespaced_lease("metallb-bgp-controller", NS).spec.holder_identity
        except client.ApiException:
            return None

    async def scenario() -> None:
        await eventually(lambda: cluster.ips("a"), what="a's IP from the leader")
        leader, follower = (first, second) if holder() == "first" else (second, first)
        assert leader.elector.leading and not follower.elector.leading
        assert follower.reconciles == 0  # a follower never computes, let alone writes
        # the leader is cut off from its Lease (a partition): it must stop writing before the follower,
        # which still reaches the API, takes over at expiry
        cut_off = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
        leader.elector.lock.api_instance = client.CoordinationV1Api(cut_off)
        await eventually(lambda: not leader.elector.leading, timeout=5, what="the leader stops leading")
        reconciles = leader.reconciles
        await eventually(lambda: follower.elector.leading, timeout=10, what="the follower takes over")
        assert holder() == follower.options.identity
        cluster.create(service("b"))
        await eventually(lambda: cluster.ips("b"), what="b's IP from the new leader")
        assert (cluster.ips("a"), cluster.ips("b")) == (("198.51.100.0",), ("198.51.100.1",))
        assert leader.reconciles == reconciles and not leader.elector.leading
        cut_off.close()

    asyncio.run(running([first, second], scenario))


def test_a_leader_that_stops_releases_its_lease_so_the_other_takes_over_at_once(cluster: Cluster) -> None:
    cluster.create(pool("pool", "198.51.100.0/29"))
    cluster.create(service("a"))
    first = controller_for(cluster.fake, identity="first", leader_election=True, timings=FAST)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(first.run(stop))
        await eventually(lambda: cluster.ips("a"), what="a's IP")
        second = controller_for(cluster.fake, identity="second", leader_election=True, timings=FAST)
        stop_second = asyncio.Event()
        second_task = asyncio.create_task(second.run(stop_second))
        try:
            await asyncio.sleep(0.5)
            assert not second.elector.leading
            stop.set()
            await asyncio.wait_for(task, 10)
            await eventually(lambda: second.elector.leading, timeout=2.5, what="a prompt takeover")
            cluster.create(service("b"))
            await eventually(lambda: cluster.ips("b") == ("198.51.100.1",), what="b's IP")
        finally:
            stop_second.set()
            await asyncio.wait_for(second_task, 10)

    asyncio.run(scenario())


def test_without_the_configuration_state_kind_the_writer_backs_off_instead_of_retrying_every_pass(
    fake_kube: FakeKube,
) -> None:
    writer = KubeWriter(fake_kube.client, component="metallb-controller", instance="c1")
    status = configuration_state_status([])
    first = writer.write_configuration_state(namespace=NS, name="controller", labels={}, status=status, known=None)
    assert first.outcome is WriteOutcome.SKIPPED
    fake_kube.clear_requests()
    again = writer.write_configuration_state(namespace=NS, name="controller", labels={}, status=status, known=None)
    assert again.outcome is WriteOutcome.SKIPPED and fake_kube.requests == []


def test_a_writer_that_may_not_write_sends_nothing(fake_kube: FakeKube) -> None:
    writer = KubeWriter(fake_kube.client, component="metallb-controller", instance="c1", may_write=lambda: False)
    fake_kube.clear_requests()
    result = writer.patch_service_status("default", "web", {"status": {"loadBalancer": {"ingress": []}}})
    assert result.outcome is WriteOutcome.SKIPPED and fake_kube.requests == []


def test_the_same_event_again_is_counted_on_the_first_one_as_client_go_does(fake_kube: FakeKube) -> None:
    writer = KubeWriter(fake_kube.client, component="metallb-speaker", instance="n1")
    core = client.CoreV1Api(fake_kube.client)
    assigned = EventSpec(ObjectRef("Service", "default", "web", "v1", "uid-web"), "Normal", "nodeAssigned", "from n1")
    other = EventSpec(ObjectRef("Service", "default", "web", "v1", "uid-web"), "Normal", "nodeAssigned", "from n2")

    def events() -> list[tuple[str, int]]:
        return sorted((e.message, e.count) for e in core.list_namespaced_event("default").items)

    for spec in (assigned, assigned, other, assigned):
        assert writer.emit_event(spec).ok
    assert events() == [("from n1", 3), ("from n2", 1)]
    first = core.list_namespaced_event("default").items
    assert all(e.last_timestamp >= e.first_timestamp for e in first)
    for event in first:  # expired (or deleted by someone): the next one is a new Event
        core.delete_namespaced_event(event.metadata.name, "default")
    assert writer.emit_event(assigned).ok
    assert events() == [("from n1", 1)]


def test_an_edit_that_makes_a_pool_overlap_another_is_not_applied_and_no_service_loses_its_ip(cluster: Cluster) -> None:
    cluster.create(pool("a", "198.51.100.0/29"))
    cluster.create(pool("b", "203.0.113.0/29"))
    cluster.create(service("web", annotations={"metallb.io/address-pool": "b"}))
    controller = controller_for(cluster.fake)

    async def scenario() -> None:
        await eventually(lambda: cluster.ips("web") == ("203.0.113.0",), what="web's IP from pool b")
        reconciles = controller.reconciles
        cluster.custom.patch_namespaced_custom_object(  # pool a now overlaps b (b comes later by name)
            GROUP, "v1beta1", NS, "ipaddresspools", "a", {"spec": {"addresses": ["203.0.113.0/28"]}}
        )
        await eventually(lambda: controller.reconciles > reconciles and (cluster.state() or {}).get("result") == "Invalid",
                         what="the overlap reported")
        errors = [e for e in cluster.state()["errors"] if e["severity"] == "error"]
        assert [(e["kind"], e["name"], e["field"]) for e in errors] == [("IPAddressPool", "a", "spec.addresses[0]")]
        assert "overlaps" in errors[0]["message"]
        await asyncio.sleep(0.3)
        assert cluster.ips("web") == ("203.0.113.0",)
        assert not [e for e in cluster.events("web") if e[1] == "ClearAssignment"]

    asyncio.run(running([controller], scenario))


def test_a_cold_start_writes_the_statuses_several_at_a_time(cluster: Cluster) -> None:
    cluster.create(pool("pool", "198.51.100.0/27"))
    names = [f"s{i:02d}" for i in range(16)]
    for name in names:
        cluster.create(service(name))
    cluster.fake.slow_next(16, seconds=0.25, method="PATCH", path=r"/services/[^/]+/status")  # a busy API server

    async def scenario() -> None:
        started = time.monotonic()
        await eventually(lambda: all(cluster.ips(name) for name in names), timeout=15, interval=0.05,
                         what="every status written")  # fmt: skip
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"16 status writes of 0.25 s took {elapsed:.2f} s: one at a time"  # 4 s if serial
        assert sorted(cluster.ips(name)[0] for name in names) == sorted(f"198.51.100.{i}" for i in range(16))
        await eventually(lambda: all(cluster.annotation(name) == "pool" for name in names), what="every annotation")

    asyncio.run(running([controller_for(cluster.fake)], scenario))


def test_events_are_paced_while_statuses_are_not_and_none_is_lost(cluster: Cluster) -> None:
    """A cold start allocating 16 services with a pacer of burst 4 at 10 Events a second: every status
    at once, the IPAllocated Events never faster than the pacer allows, and all 16 in the end."""
    cluster.create(pool("pool", "198.51.100.0/27"))
    names = [f"s{i:02d}" for i in range(16)]
    for name in names:
        cluster.create(service(name))

    async def scenario() -> None:
        started = time.monotonic()
        await eventually(lambda: all(cluster.ips(name) for name in names), what="every status written")
        seen: list[tuple[float, int]] = []

        def allocated() -> int:
            count = sum(1 for _name, reason, _message in cluster.events() if reason == "IPAllocated")
            seen.append((time.monotonic() - started, count))
            return count

        await eventually(lambda: allocated() == 16, timeout=15, interval=0.05, what="all 16 IPAllocated Events")
        assert all(count <= 4 + 10 * elapsed + 1 for elapsed, count in seen), seen  # burst + rate (+1: rounding)
        assert any(count < 16 for _elapsed, count in seen), "the pacer held nothing back"

    asyncio.run(running([controller_for(cluster.fake, event_qps=10.0, event_burst=4)], scenario))


def test_the_event_pacer_lets_a_burst_through_then_its_rate() -> None:
    now = [0.0]
    pacer = EventPacer(qps=10.0, burst=4, clock=lambda: now[0])
    assert pacer.take(10) == 4 and pacer.take(1) == 0
    assert pacer.delay(3) == pytest.approx(0.3)
    now[0] = 0.25
    assert pacer.take(10) == 2  # 2.5 tokens: whole Events only
    now[0] = 100.0
    assert pacer.take(10) == 4 and pacer.delay(100) == pytest.approx(0.4)  # never more than a burst saved up


def test_concurrent_writes_stop_as_soon_as_the_writer_may_no_longer_write(fake_kube: FakeKube) -> None:
    core = client.CoreV1Api(fake_kube.client)
    for i in range(24):
        core.create_namespaced_service("default", {"metadata": {"name": f"s{i}"}, "spec": {"ports": [{"port": 80}]}})
    lock, asked = threading.Lock(), [0]

    def leading_for_five_requests() -> bool:  # the lease is lost in the middle of the batch
        with lock:
            asked[0] += 1
            return asked[0] <= 5

    writer = KubeWriter(fake_kube.client, component="metallb-controller", instance="c1",
                        may_write=leading_for_five_requests)  # fmt: skip
    fake_kube.clear_requests()
    patch = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}
    names = [f"s{i}" for i in range(24)]
    results = concurrently(lambda name: writer.patch_service_status("default", name, patch), names)
    assert [name for name, _ in results] == names  # in the order given
    assert sum(1 for _, result in results if result.ok) == 5
    assert sum(1 for _, result in results if result.outcome is WriteOutcome.SKIPPED) == 19
    assert len([r for r in fake_kube.requests if r.method == "PATCH"]) == 5


def test_a_woken_loop_waits_a_millisecond_from_idle_and_as_long_as_its_last_pass_in_a_burst() -> None:
    from metallb_bgp.daemons.runtime import MAX_COALESCING, coalescing_pause

    assert coalescing_pause(0.001, 0.2, backlog=False) == 0.001  # one change after a quiet spell
    assert coalescing_pause(0.001, 0.2, backlog=True) == 0.2  # events came during a 200 ms pass
    assert coalescing_pause(0.001, 0.0001, backlog=True) == 0.001
    assert coalescing_pause(0.001, 30.0, backlog=True) == MAX_COALESCING


def test_wakeup_knows_a_burst_from_a_wake_from_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    from metallb_bgp.daemons import runtime

    seen: list[tuple[float, bool]] = []
    real = runtime.coalescing_pause
    monkeypatch.setattr(runtime, "coalescing_pause", lambda c, busy, *, backlog: seen.append((busy, backlog)) or real(c, busy, backlog=backlog))

    async def scenario() -> None:
        wake, stop = runtime.Wakeup(asyncio.get_running_loop()), asyncio.Event()
        waiting = asyncio.create_task(wake.wait(stop))
        await asyncio.sleep(0.01)
        wake.notify()  # from idle
        assert await waiting
        await asyncio.sleep(0.02)  # a pass, during which another event arrives
        wake.notify()
        await asyncio.sleep(0)
        assert await wake.wait(stop)
        assert not await wake.wait(stop, timeout=0.01)  # nothing more: a timeout, not a wake-up

    asyncio.run(scenario())
    assert [backlog for _busy, backlog in seen] == [False, True]
    assert seen[1][0] >= 0.02
