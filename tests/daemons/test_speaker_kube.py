"""The Kubernetes speaker: what it announces is read from Service status, what it reports about itself.

Pure parts first (plan, transitions, the ConfigurationState body); then one run of `Speaker` in-process
against the fake API server with a real ExaBGP child (no router needed: its one peer is unreachable),
checking the Event and the ConfigurationState a user would see with kubectl.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import pytest
from builders import GROUP, NS, advertisement, endpoint, endpoint_slice, node, peer, pool, service, snapshot
from fakekube import FakeKube, schemaless_crd
from kubernetes import client
from waiting import eventually

from metallb_bgp.core.change import SnapshotChanges
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.plan.speaker import SpeakerPlanner, announced_services, node_assigned_events, speaker_plan
from metallb_bgp.core.routes.table import SkipReason
from metallb_bgp.core.snapshot import ClusterSnapshot
from metallb_bgp.daemons.speaker import Speaker, SpeakerOptions, peer_entries, speaker_state
from metallb_bgp.exabgp import EngineTuning, PeerState, SessionState


def snap(*docs: dict[str, Any]) -> ClusterSnapshot:
    return snapshot(*docs, from_api=True)  # as the Kubernetes source reads them: uids and resourceVersions


PEER = peer("router", "127.0.0.1", peerPort=9, sourceAddress="127.0.0.2")


def slice_for(name: str, node: str, *, ready: bool = True) -> dict[str, Any]:
    return endpoint_slice(name, endpoint(node, ready=ready, address="10.0.0.1"), name=f"{name}-1")


WEB = ServiceKey("default", "web")
EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"
net = ipaddress.ip_network


# --- pure ---------------------------------------------------------------------------------------------


def test_the_speaker_announces_the_ip_in_status_and_never_allocates_one() -> None:
    cluster = snap(pool("pool", "198.51.100.0/29"), PEER, advertisement(), service("web", ips=("198.51.100.5",)), slice_for("web", "n1"),
                   service("new"), slice_for("new", "n1"))
    plan = speaker_plan(cluster, node_name="n1")
    assert set(plan.table.routes) == {("router", net("198.51.100.5/32"))}
    assert plan.table.skipped[ServiceKey("default", "new")].reason is SkipReason.NO_IP
    assert [p.name for p in plan.peers] == ["router"]


def test_etp_local_is_announced_only_from_the_node_with_a_local_endpoint() -> None:
    docs = (pool("pool", "198.51.100.0/29"), PEER, advertisement(), service("web", ips=("198.51.100.5",), externalTrafficPolicy="Local"),
            slice_for("web", "n2"))
    assert speaker_plan(snap(*docs), node_name="n1").table.routes == {}
    assert set(speaker_plan(snap(*docs), node_name="n2").table.routes) == {("router", net("198.51.100.5/32"))}


def test_an_excluded_node_announces_nothing_but_keeps_its_peers() -> None:
    excluded = node("n1", **{"node.kubernetes.io/exclude-from-external-load-balancers": ""})
    plan = speaker_plan(snap(pool("pool", "198.51.100.0/29"), PEER, advertisement(), excluded, service("web", ips=("198.51.100.5",)),
                             slice_for("web", "n1")), node_name="n1")
    assert plan.table.routes == {} and plan.table.skipped[WEB].reason is SkipReason.EXCLUDED_NODE
    assert [p.name for p in plan.peers] == ["router"]


def test_node_assigned_is_emitted_once_when_a_service_starts_being_announced() -> None:
    cluster = snap(pool("pool", "198.51.100.0/29"), PEER, advertisement(), service("web", ips=("198.51.100.5",)), slice_for("web", "n1"))
    announced = announced_services(speaker_plan(cluster, node_name="n1").table)
    services = {ServiceKey(s.namespace, s.name): s for s in cluster.services}
    [event] = node_assigned_events(announced, services, "n1")
    assert (event.ref.name, event.ref.uid, event.type, event.reason) == ("web", "uid-web", "Normal", "nodeAssigned")
    assert event.message == 'announcing from node "n1" with protocol "bgp"'
    assert node_assigned_events(frozenset(), services, "n1") == []
    planner = SpeakerPlanner(node_name="n1")  # the speaker passes what its planner newly announced
    changes = SnapshotChanges()
    planner.update(changes.take(cluster))
    assert planner.newly_announced == announced
    planner.update(changes.take(dataclasses.replace(cluster, pools=snap({**pool("pool", "198.51.100.0/29"), "status": {"assignedIPv4": 1}}).pools)))
    assert planner.newly_announced == set()  # a counters-only pool change: nothing new, no second event


def test_the_speaker_state_lists_each_peer_session_and_never_a_password() -> None:
    secret = "hunter2-secret"
    peers = (
        Peer(name="a", my_asn=1, peer_asn=2, address=ipaddress.ip_address("192.0.2.1"), password=secret),
        Peer(name="b", my_asn=1, peer_asn=2, address=ipaddress.ip_address("192.0.2.2")),
        Peer(name="c", my_asn=1, peer_asn=2, address=ipaddress.ip_address("192.0.2.3")),
    )
    states = {
        "a": PeerState(SessionState.ESTABLISHED, 0.0),
        "b": PeerState(SessionState.IDLE, 60.0, "notification received code 6 subcode 2"),
    }
    entries = peer_entries(peers, states, {"c": "ExaBGP cannot tell it apart from peer b"})
    assert entries == [
        {"name": "a", "address": "192.0.2.1", "state": "established", "since": "1970-01-01T00:00:00Z"},
        {"name": "b", "address": "192.0.2.2", "state": "idle", "since": "1970-01-01T00:01:00Z",
         "lastError": "notification received code 6 subcode 2"},
        {"name": "c", "address": "192.0.2.3", "state": "idle", "lastError": "ExaBGP cannot tell it apart from peer b"},
    ]
    state = speaker_state((), peers, states, {})
    assert state["result"] == "Valid" and secret not in json.dumps(state)


def test_the_speaker_state_carries_the_compile_errors() -> None:
    cluster = snap(pool("pool", "198.51.100.0/29"), PEER, advertisement("bad", communities=["nope"]))
    plan = speaker_plan(cluster, node_name="n1")
    state = speaker_state(plan.compiled.errors, plan.peers, {}, {})
    assert state["result"] == "Invalid" and state["errors"][0]["name"] == "bad"
    assert state["peers"] == [{"name": "router", "address": "127.0.0.1", "state": "idle"}]


# --- in-process against the fake API server, with a real ExaBGP ------------------------------------------


@pytest.mark.timeout(60)
def test_the_speaker_reports_node_assigned_and_its_configuration_state(fake_kube: FakeKube, short_tmp: Path) -> None:
    fake_kube.register_crd(schemaless_crd(GROUP, "ConfigurationState", "configurationstates", ("v1beta1",)))
    core, custom = client.CoreV1Api(fake_kube.client), client.CustomObjectsApi(fake_kube.client)
    for doc, plural in ((pool("pool", "198.51.100.0/29"), "ipaddresspools"), (advertisement(), "bgpadvertisements")):
        custom.create_namespaced_custom_object(GROUP, "v1beta1", NS, plural, doc)
    custom.create_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", PEER)
    core.create_node(node("n1"))
    core.create_namespaced_service("default", {"metadata": {"name": "web"},
                                               "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    client.DiscoveryV1Api(fake_kube.client).create_namespaced_endpoint_slice("default", slice_for("web", "n1"))
    options = SpeakerOptions(node_name="n1", workdir=short_tmp / "exabgp", status_interval=0.2,
                             tuning=EngineTuning(relay_connect_timeout=10.0))
    speaker = Speaker(fake_kube.client, options)

    def events() -> list[tuple[str, str]]:
        return [(e.reason, e.message) for e in core.list_namespaced_event("default").items]

    def state() -> dict[str, Any] | None:
        try:
            return custom.get_namespaced_custom_object(GROUP, "v1beta1", NS, "configurationstates", "speaker-n1")["status"]
        except (client.ApiException, KeyError):
            return None

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(speaker.run(stop))
        try:
            found = await eventually(state, what="the speaker's ConfigurationState")
            assert found["result"] == "Valid" and found["peers"][0]["name"] == "router"
            assert speaker.plan is not None and speaker.plan.table.routes == {}  # no IP in status yet
            assert events() == []
            core.patch_namespaced_service_status("web", "default", {"status": {"loadBalancer": {"ingress": [
                {"ip": "198.51.100.0"}]}}})
            started = time.monotonic()
            await eventually(lambda: speaker.plan is not None and speaker.plan.table.routes, timeout=5,
                             interval=0.005, what="the route from the status IP")
            assert time.monotonic() - started < 1.0
            await eventually(lambda: events() == [("nodeAssigned", 'announcing from node "n1" with protocol "bgp"')],
                             what="nodeAssigned")
            for labels, announced in (({EXCLUDE: "true"}, False), ({EXCLUDE: None}, True)):  # node label churn
                core.patch_node("n1", {"metadata": {"labels": labels}})
                started = time.monotonic()
                await eventually(lambda: bool(speaker.plan.table.routes) is announced, timeout=5, interval=0.005,
                                 what=f"announced={announced} after the node label change")
                assert time.monotonic() - started < 0.5
            client.DiscoveryV1Api(fake_kube.client).patch_namespaced_endpoint_slice("web-1", "default", {
                "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "n1", "conditions": {"ready": False}}]})
            await eventually(lambda: not speaker.plan.table.routes, timeout=5, interval=0.005,
                             what="withdrawn when the last endpoint stops being ready")
            custom.create_namespaced_custom_object(GROUP, "v1beta1", NS, "bgpadvertisements",
                                                   advertisement("bad", communities=["nope"]))
            found = await eventually(lambda: (s := state()) and s["result"] == "Invalid" and s, what="Invalid state")
            assert found["errorSummary"].startswith(f"BGPAdvertisement {NS}/bad")
            await asyncio.sleep(0.5)
            # once per transition (announced, withdrawn, announced), not per reconcile: the second counted on the first
            assert [(e.reason, e.count) for e in core.list_namespaced_event("default").items] == [("nodeAssigned", 2)]
            labels = custom.get_namespaced_custom_object(GROUP, "v1beta1", NS, "configurationstates",
                                                         "speaker-n1")["metadata"]["labels"]
            assert labels == {"metallb.io/component-type": "speaker", "metallb.io/node-name": "n1"}
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        assert speaker.engine is not None and speaker.engine.child_pid is None

    asyncio.run(scenario())


def test_exabgp_starts_with_the_nodes_peers_while_the_services_are_still_listed(fake_kube: FakeKube, short_tmp: Path) -> None:
    """The peers come from the small kinds: ExaBGP starts once those have listed, while a slow Services
    list is still under way, and nothing is announced before the whole cluster has been read."""
    fake_kube.register_crd(schemaless_crd(GROUP, "ConfigurationState", "configurationstates", ("v1beta1",)))
    core, custom = client.CoreV1Api(fake_kube.client), client.CustomObjectsApi(fake_kube.client)
    custom.create_namespaced_custom_object(GROUP, "v1beta1", NS, "ipaddresspools", pool("pool", "198.51.100.0/29"))
    custom.create_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", PEER)
    core.create_node(node("n1"))
    core.create_namespaced_service("default", {"metadata": {"name": "web"},
                                               "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    fake_kube.slow_next(1, seconds=2.0, method="GET", path=r"^/api/v1/services\b")  # the (first) Services list
    speaker = Speaker(fake_kube.client, SpeakerOptions(node_name="n1", workdir=short_tmp / "exabgp",
                                                      tuning=EngineTuning(relay_connect_timeout=10.0)))  # fmt: skip

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(speaker.run(stop))
        try:
            await eventually(lambda: speaker.engine is not None and speaker.engine.child_pid is not None,
                             timeout=5, interval=0.02, what="ExaBGP started")  # fmt: skip
            assert speaker.source is not None and not speaker.source.synced, "started only after the Services list"
            assert set(speaker.engine.peer_states()) == {"router"} and speaker.plan is None  # nothing applied yet
            await eventually(lambda: speaker.plan is not None, what="the first reconcile once every kind has listed")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())


def test_the_incremental_speaker_planner_equals_a_full_plan_after_every_change() -> None:
    import dataclasses

    from metallb_bgp.core.plan.speaker import SpeakerPlanner

    def same(got, want) -> None:
        assert dict(got.table.routes) == dict(want.table.routes)
        assert dict(got.table.skipped) == dict(want.table.skipped)
        assert dict(got.table.services) == dict(want.table.services)
        assert got.peers == want.peers and got.compiled.errors == want.compiled.errors

    base = snap(pool("pool", "198.51.100.0/29"), PEER, advertisement(), node("n1"),
                *[service(f"s{i}", ips=(f"198.51.100.{i}",)) for i in range(5)],
                *[slice_for(f"s{i}", "n1") for i in range(5)])
    planner = SpeakerPlanner(node_name="n1")
    changes = SnapshotChanges()
    same(planner.update(changes.take(base)), speaker_plan(base, node_name="n1"))
    assert planner.routes_touched is None  # the first plan is whole

    # as the Kubernetes source does: unchanged objects are the very same objects
    moved = snap(slice_for("s2", "n2")).endpoint_slices[0]
    step = dataclasses.replace(base, endpoint_slices=tuple(moved if s.name == "s2-1" else s for s in base.endpoint_slices))
    same(planner.update(changes.take(step)), speaker_plan(step, node_name="n1"))
    assert planner.routes_touched == set()  # ETP Cluster: an endpoint elsewhere still serves

    local = snap(service("s3", ips=("198.51.100.3",), externalTrafficPolicy="Local")).services[0]
    step = dataclasses.replace(step, services=tuple(local if s.name == "s3" else s for s in step.services),
                               endpoint_slices=tuple(moved if s.name == "s3-1" else s for s in step.endpoint_slices))
    step = dataclasses.replace(step, endpoint_slices=tuple(
        snap(slice_for("s3", "n2")).endpoint_slices[0] if s.name == "s3-1" else s for s in step.endpoint_slices))
    same(planner.update(changes.take(step)), speaker_plan(step, node_name="n1"))
    assert planner.routes_touched == {("router", net("198.51.100.3/32"))}  # withdrawn: no local endpoint

    step = dataclasses.replace(step, services=tuple(s for s in step.services if s.name != "s0"))
    same(planner.update(changes.take(step)), speaker_plan(step, node_name="n1"))
    assert planner.routes_touched == {("router", net("198.51.100.0/32"))}

    counted = snap({**pool("pool", "198.51.100.0/29"), "status": {"assignedIPv4": 4, "availableIPv4": 4}}).pools  # the controller's counters
    step = dataclasses.replace(step, pools=counted)
    same(planner.update(changes.take(step)), speaker_plan(step, node_name="n1"))
    assert planner.routes_touched == set()  # a new pool object, the same Config: nothing re-routed

    grown = dataclasses.replace(step, pools=snap(pool("pool", "198.51.100.0/28")).pools)  # a new Config: whole plan
    same(planner.update(changes.take(grown)), speaker_plan(grown, node_name="n1"))
    assert planner.routes_touched is None

    step = dataclasses.replace(step, nodes=snap(node("n1", **{EXCLUDE: ""})).nodes)  # not a service: whole plan
    same(planner.update(changes.take(step)), speaker_plan(step, node_name="n1"))
    assert planner.routes_touched is None and not planner.plan.table.routes


# --- change detection by identity (snapshot.replaced_objects) and the planner built on it ------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from metallb_bgp.core.snapshot import replaced_objects  # noqa: E402


class Obj:
    def __init__(self, key: int) -> None:
        self.key = key


@given(st.lists(st.integers(0, 30), unique=True), st.lists(st.integers(0, 30), unique=True), st.sets(st.integers(0, 30)))
def test_replaced_objects_are_exactly_what_changed_by_identity(old_keys, new_keys, replaced) -> None:
    old = [Obj(k) for k in old_keys]
    kept = {o.key: o for o in old}
    new = [Obj(k) if k in replaced or k not in kept else kept[k] for k in new_keys]
    went, came = replaced_objects(old, new)
    assert sorted(map(id, went)) == sorted(id(o) for o in old if all(o is not n for n in new))
    assert sorted(map(id, came)) == sorted(id(n) for n in new if all(n is not o for o in old))
    index = {o.key: o for o in old}  # as the planners use them: an index by key, brought up to date
    for o in went:
        if index.get(o.key) is o:
            del index[o.key]
    index.update((n.key, n) for n in came)
    assert {k: id(v) for k, v in index.items()} == {n.key: id(n) for n in new}


SERVICES = [f"s{i}" for i in range(6)]
step_kinds = st.tuples(
    st.sampled_from(["service", "drop-service", "slice", "drop-slice", "shuffle", "duplicate"]),
    st.sampled_from(SERVICES), st.sampled_from(["n1", "n2"]), st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step_kinds, max_size=12))
def test_the_speaker_planner_equals_a_full_plan_after_random_changes(steps) -> None:
    """As the Kubernetes source hands them over (the same object for what did not change, each key
    once), in any order; and with a key defined twice, as only a hand-built snapshot has it (the last
    definition counts)."""
    import dataclasses
    import random

    config = snap(pool("pool", "198.51.100.0/28"), PEER, advertisement(), node("n1"))
    services = {n: snap(service(n, ips=(f"198.51.100.{i}",))).services[0] for i, n in enumerate(SERVICES)}
    slices = {n: snap(slice_for(n, "n1")).endpoint_slices[0] for n in SERVICES}
    planner = SpeakerPlanner(node_name="n1")
    changes = SnapshotChanges()
    rng = random.Random(len(steps))
    extra: dict[str, Any] = {}  # second definitions of a key
    for kind, name, where, local in [("start", "", "", False), *steps]:
        if kind == "service":
            policy = "Local" if local else "Cluster"
            services[name] = snap(service(name, ips=(f"198.51.100.{SERVICES.index(name)}",), externalTrafficPolicy=policy)).services[0]
        elif kind == "drop-service":
            services.pop(name, None)
            extra.pop(name, None)
        elif kind == "duplicate":
            extra[name] = snap(service(name, ips=(f"198.51.100.{8 + SERVICES.index(name)}",))).services[0]
        elif kind == "slice":
            slices[name] = snap(slice_for(name, where, ready=not local)).endpoint_slices[0]
        elif kind == "drop-slice":
            slices.pop(name, None)
        ordered_services, ordered_slices = [*services.values(), *extra.values()], list(slices.values())
        if kind == "shuffle":
            rng.shuffle(ordered_services)
            rng.shuffle(ordered_slices)
        cluster = dataclasses.replace(config, services=tuple(ordered_services), endpoint_slices=tuple(ordered_slices))
        announced_before = set(planner.announced)
        got, want = planner.update(changes.take(cluster)), speaker_plan(cluster, node_name="n1")
        assert set(planner.announced) == announced_services(want.table)
        assert planner.newly_announced == announced_services(want.table) - announced_before
        assert dict(got.table.routes) == dict(want.table.routes)
        assert dict(got.table.skipped) == dict(want.table.skipped)
        assert got.peers == want.peers


def _publisher(fake_kube: FakeKube, directory: Path, events: int, **options: Any) -> tuple[Any, list[Any]]:
    """A speaker's status writer on the fake API server, and `events` nodeAssigned Events to write."""
    from metallb_bgp.core.writes import EventSpec, ObjectRef
    from metallb_bgp.daemons.speaker import _Publisher
    from metallb_bgp.kube.writer import KubeWriter

    fake_kube.register_crd(schemaless_crd(GROUP, "ConfigurationState", "configurationstates", ("v1beta1",)))
    writer = KubeWriter(fake_kube.client, component="metallb-speaker", instance="n1", may_write=lambda: True)
    publisher = _Publisher(writer, SpeakerOptions(node_name="n1", workdir=directory, **options))
    specs = [EventSpec(ObjectRef("Service", "default", f"s{i}", "v1", f"uid-{i}"), "Normal", "nodeAssigned", "m")
             for i in range(events)]
    return publisher, specs


def test_a_cold_start_announcing_many_services_writes_each_one_node_assigned_event(fake_kube: FakeKube, short_tmp: Path) -> None:
    publisher, specs = _publisher(fake_kube, short_tmp, 40)
    core = client.CoreV1Api(fake_kube.client)

    async def scenario() -> None:
        task = asyncio.create_task(publisher.run())
        try:
            publisher.publish({"result": "Valid"}, specs)
            await eventually(lambda: len(core.list_namespaced_event("default").items) >= 40, what="40 events")
            await asyncio.sleep(0.2)
        finally:
            task.cancel()
    asyncio.run(scenario())
    names = sorted(e.involved_object.name for e in core.list_namespaced_event("default").items)
    assert names == sorted(f"s{i}" for i in range(40))  # each once


def test_node_assigned_events_are_paced_and_none_is_lost(fake_kube: FakeKube, short_tmp: Path) -> None:
    """kubelet's rule for Events (a burst, then a rate): a burst of 8 at 20 a second lets 40 through in
    about 1.6 s, never faster, while the ConfigurationState is written at once."""
    publisher, specs = _publisher(fake_kube, short_tmp, 40, event_qps=20.0, event_burst=8)
    core = client.CoreV1Api(fake_kube.client)
    custom = client.CustomObjectsApi(fake_kube.client)
    seen: list[tuple[float, int]] = []

    async def scenario() -> None:
        task = asyncio.create_task(publisher.run())
        try:
            started = time.monotonic()
            publisher.publish({"result": "Valid"}, specs)

            def count() -> int:
                seen.append((time.monotonic() - started, len(core.list_namespaced_event("default").items)))
                return seen[-1][1]

            await eventually(lambda: custom.list_namespaced_custom_object(GROUP, "v1beta1", NS, "configurationstates")[
                "items"], what="the ConfigurationState")  # fmt: skip
            assert count() < 40, "the state waited for every Event"
            await eventually(lambda: count() == 40, timeout=15, interval=0.02, what="40 events")
        finally:
            task.cancel()
    asyncio.run(scenario())
    assert all(n <= 8 + 20 * elapsed + 1 for elapsed, n in seen), seen


def test_the_status_writer_stops_when_cancelled_even_as_it_is_woken(fake_kube: FakeKube, short_tmp: Path) -> None:
    """A stop that arrives in the same loop pass as new work (a speaker announcing 1,200 services is
    still writing paced Events when SIGTERM comes) ends the writer: with Python 3.11's `wait_for` the
    cancel was lost there, the speaker wrote on and had to be killed."""
    publisher, specs = _publisher(fake_kube, short_tmp, 50, event_qps=5.0, event_burst=2)
    core = client.CoreV1Api(fake_kube.client)

    async def scenario() -> list[bool]:
        task = asyncio.create_task(publisher.run())
        publisher.publish({"result": "Valid"}, specs[:10])
        await eventually(lambda: core.list_namespaced_event("default").items, what="the first paced Events")
        stopped = []
        for i in range(10, 50, 10):  # the writer now waits on its pacer's delay
            await asyncio.sleep(0.05)
            publisher.publish({"result": "Valid"}, specs[i : i + 10])  # wakes it ...
            task.cancel()  # ... in the same pass as the stop
            done, _ = await asyncio.wait({task}, timeout=2)
            stopped.append(bool(done) and task.cancelled())
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=2)
            task = asyncio.create_task(publisher.run())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return stopped

    assert asyncio.run(scenario()) == [True] * 4
