"""`KubernetesSource` against the fake API server with the real client: what reaches `snapshot()`.

Every wait is bounded (`wait_until`); no test asserts a duration beyond "stop() is prompt".
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from builders import GROUP, NS, peer, pool, service
from fakekube import FakeKube
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client
from structlog.testing import capture_logs
from waiting import wait_until

from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.snapshot import ClusterSnapshot, ObjectsSeen, Replacements, replaced_objects
from metallb_bgp.sources.kubernetes import KubernetesSource, Resource, ResourceCache, backoff_delay, parse_item

SERVICES_WATCH = r"^/api/v1/services\?.*watch=true"


# --- helpers ---------------------------------------------------------------------------------------


def names(objects: Any) -> list[str]:
    return [o.metadata.name for o in objects]


def query(request: Any) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.query).items()}


def services_requests(fake: FakeKube, *, watch: bool) -> list[Any]:
    return [r for r in fake.requests if r.path == "/api/v1/services" and (query(r).get("watch") == "true") == watch]


class Changes:
    """An on_change callback that counts calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()


@pytest.fixture
def start_source(fake_kube: FakeKube) -> Iterator[Callable[..., KubernetesSource]]:
    """Start a KubernetesSource on the fake (short watches, fast backoff) and stop it at the end."""
    started: list[KubernetesSource] = []

    def start(**options: Any) -> KubernetesSource:
        options = {"watch_timeout_seconds": 1, "backoff_base": 0.02, "backoff_cap": 0.2, **options}
        source = KubernetesSource(fake_kube.client, namespace=NS, **options)
        started.append(source)
        source.start()
        assert source.wait_synced(10)
        return source

    yield start
    for source in started:
        source.stop()


def create_peer(custom: client.CustomObjectsApi, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", body)


def create_pool(custom: client.CustomObjectsApi, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, "v1beta1", NS, "ipaddresspools", body)


def basic_auth(name: str, password: str, namespace: str = NS) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "type": "kubernetes.io/basic-auth",
            "data": {"password": base64.b64encode(password.encode()).decode()}}


# --- initial sync ----------------------------------------------------------------------------------


def test_initial_list_fills_the_snapshot_in_order_and_marks_synced(
    fake_kube: FakeKube, core: client.CoreV1Api, custom: client.CustomObjectsApi,
    start_source: Callable[..., KubernetesSource],
) -> None:
    core.create_namespaced_service("default", service("web-b"))
    core.create_namespaced_service("default", service("web-a"))
    core.create_node({"metadata": {"name": "node-1", "labels": {"zone": "a"}}})
    client.DiscoveryV1Api(fake_kube.client).create_namespaced_endpoint_slice("default", {
        "metadata": {"name": "web-a-1", "labels": {"kubernetes.io/service-name": "web-a"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.1"], "nodeName": "node-1", "conditions": {"ready": True}}]})
    create_pool(custom, pool("pool", "198.51.100.0/28"))
    create_peer(custom, peer("router", "192.0.2.1"))
    custom.create_namespaced_custom_object(GROUP, "v1beta1", NS, "bgpadvertisements", {
        "apiVersion": f"{GROUP}/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": "adv"}, "spec": {}})
    custom.create_namespaced_custom_object(GROUP, "v1beta1", "default", "ipaddresspools", pool("elsewhere", "198.51.100.0/28", namespace=None))

    source = start_source()

    assert source.synced
    snap = source.snapshot()
    assert names(snap.services) == ["web-a", "web-b"]
    assert names(snap.endpoint_slices) == ["web-a-1"] and snap.endpoint_slices[0].endpoints[0].node_name == "node-1"
    assert names(snap.nodes) == ["node-1"] and snap.nodes[0].metadata.labels == {"zone": "a"}
    assert "metallb-system" in names(snap.namespaces)
    assert names(snap.pools) == ["pool"]  # metallb.io objects of other namespaces are not ours
    assert names(snap.peers) == ["router"] and snap.peers[0].spec.peer_asn == 64501
    assert names(snap.advertisements) == ["adv"]
    assert snap.namespace == NS and snap.load_errors == ()
    assert source.snapshot() == snap  # deterministic


def test_synced_waits_until_every_resource_has_listed(
    fake_kube: FakeKube, custom: client.CustomObjectsApi
) -> None:
    create_pool(custom, pool("pool", "198.51.100.0/28"))
    fake_kube.fail_next(10_000, method="GET", path=r"/ipaddresspools\?(?!.*watch=true)")
    source = KubernetesSource(fake_kube.client, namespace=NS, watch_timeout_seconds=1, backoff_base=0.02,
                              backoff_cap=0.1)
    source.start()
    try:
        assert not source.wait_synced(0.5)
        assert not source.synced
        assert names(source.snapshot().pools) == []
        fake_kube.clear_faults()
        assert source.wait_synced(5)
        assert names(source.snapshot().pools) == ["pool"]
    finally:
        source.stop()


def test_the_first_list_of_services_shows_page_by_page_and_a_config_kind_only_when_whole(
    fake_kube: FakeKube, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    """Services and EndpointSlices enter the cache as each page of their first list arrives (a
    restarting speaker announces what they justify meanwhile; `synced` stays False); the other kinds
    appear only once whole, and a relist still swaps in a whole new cache."""
    for i in range(5):
        core.create_namespaced_service("default", service(f"s{i}"))
        create_pool(custom, pool(f"p{i}", f"198.51.{100 + i}.0/28"))
    fake_kube.slow_next(2, seconds=1.5, method="GET", path=r"/(services|ipaddresspools)\?.*continue=")
    woken = threading.Event()
    source = KubernetesSource(fake_kube.client, namespace=NS, watch_timeout_seconds=1, backoff_base=0.02, backoff_cap=0.1,
                              page_size=2, on_change=woken.set)  # fmt: skip
    source.start()
    try:
        wait_until(lambda: names(source.snapshot().services) == ["s0", "s1"], timeout=5, what="the first page of Services")
        assert woken.is_set() and not source.synced
        assert names(source.snapshot().pools) == []  # not whole yet: not there at all
        assert source.wait_synced(10)
        snapshot = source.snapshot()
        assert names(snapshot.services) == [f"s{i}" for i in range(5)] and names(snapshot.pools) == [f"p{i}" for i in range(5)]
    finally:
        source.stop()


# --- watch events ----------------------------------------------------------------------------------


def test_added_modified_and_deleted_reach_the_snapshot_and_call_on_change(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, start_source: Callable[..., KubernetesSource],
) -> None:
    changes = Changes()
    source = start_source(on_change=changes)

    before = changes.count
    core.create_namespaced_service("default", service("web"))
    wait_until(lambda: names(source.snapshot().services) == ["web"], what="ADDED")
    wait_until(lambda: changes.count > before, what="on_change")

    before = changes.count
    core.patch_namespaced_service("web", "default", {"spec": {"ports": [{"port": 443}]}})
    wait_until(lambda: source.snapshot().services[0].spec.ports[0].port == 443, what="MODIFIED")
    wait_until(lambda: changes.count > before, what="on_change")

    before = changes.count
    create_pool(custom, pool("pool", "198.51.100.0/28"))
    custom.patch_namespaced_custom_object(GROUP, "v1beta1", NS, "ipaddresspools", "pool",
                                          {"spec": {"addresses": ["203.0.113.0/28"]}})
    wait_until(lambda: [p.spec.addresses for p in source.snapshot().pools] == [["203.0.113.0/28"]],
               what="custom resource MODIFIED")
    wait_until(lambda: changes.count > before, what="on_change")

    before = changes.count
    core.delete_namespaced_service("web", "default")
    custom.delete_namespaced_custom_object(GROUP, "v1beta1", NS, "ipaddresspools", "pool")
    wait_until(lambda: not source.snapshot().services and not source.snapshot().pools, what="DELETED")
    wait_until(lambda: changes.count > before, what="on_change")


def test_a_failing_on_change_callback_does_not_stop_the_watch(
    core: client.CoreV1Api, start_source: Callable[..., KubernetesSource],
) -> None:
    def broken() -> None:
        raise RuntimeError("callback bug")

    source = start_source(on_change=broken)
    core.create_namespaced_service("default", service("a"))
    core.create_namespaced_service("default", service("b"))
    wait_until(lambda: names(source.snapshot().services) == ["a", "b"], what="events after a failing callback")


def test_watches_resume_from_the_last_resource_version_seen(
    fake_kube: FakeKube, core: client.CoreV1Api, start_source: Callable[..., KubernetesSource],
) -> None:
    fake_kube.bookmark_interval = 3600  # no bookmarks: the last event decides
    core.create_namespaced_service("default", service("before"))
    source = start_source()
    listed = services_requests(fake_kube, watch=False)[0]
    first_watch = services_requests(fake_kube, watch=True)[0]
    assert query(first_watch)["resourceVersion"] == str(fake_kube.resource_version)  # the list's version
    assert query(first_watch)["allowWatchBookmarks"] == "true" and query(first_watch)["timeoutSeconds"] == "1"

    event_rv = core.create_namespaced_service("default", service("web")).metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "unrelated"}})  # moves the global version on
    wait_until(lambda: any(query(r).get("resourceVersion") == event_rv for r in services_requests(fake_kube, watch=True)),
               what="a watch resumed from the last event's resourceVersion")
    assert services_requests(fake_kube, watch=False) == [listed]  # resumed, never relisted
    assert names(source.snapshot().services) == ["before", "web"]


def test_bookmarks_move_the_resume_point(
    fake_kube: FakeKube, core: client.CoreV1Api, start_source: Callable[..., KubernetesSource],
) -> None:
    fake_kube.bookmark_interval = 0.1
    start_source(watch_timeout_seconds=2)
    core.create_namespaced_config_map("default", {"metadata": {"name": "unrelated"}})
    latest = str(fake_kube.resource_version)
    wait_until(lambda: any(query(r).get("resourceVersion") == latest for r in services_requests(fake_kube, watch=True)),
               timeout=8, what="a services watch resumed from a bookmark's resourceVersion")
    assert len(services_requests(fake_kube, watch=False)) == 1


# --- compaction: relist and swap -------------------------------------------------------------------


def _services(fake: FakeKube) -> Any:
    return fake.store.registry.types[("", "v1", "services")]


def test_compaction_relists_and_swaps_the_cache_without_an_empty_moment(
    fake_kube: FakeKube, core: client.CoreV1Api, start_source: Callable[..., KubernetesSource],
) -> None:
    fake_kube.bookmark_interval = 3600  # keep the services watch behind the global version
    rt = _services(fake_kube)
    for i in range(200):
        fake_kube.store.create(rt, "default", service(f"keep-{i:03d}"))
    for i in range(20):
        fake_kube.store.create(rt, "default", service(f"gone-{i:02d}"))
    changes = Changes()
    source = start_source(page_size=10, on_change=changes)  # a relist takes 20+ requests
    old = {o.metadata.name for o in source.snapshot().services}
    lists_before = len(services_requests(fake_kube, watch=False))

    # While the API server is away, the cluster changes and its history is compacted: resuming is impossible.
    fake_kube.stop()
    for i in range(20):
        fake_kube.store.delete(rt, "default", f"gone-{i:02d}")
        fake_kube.store.create(rt, "default", service(f"new-{i:02d}"))
    fake_kube.store.create(fake_kube.store.registry.types[("", "v1", "configmaps")], "default",
                           {"metadata": {"name": "bump"}})
    fake_kube.compact()
    new = {f"keep-{i:03d}" for i in range(200)} | {f"new-{i:02d}" for i in range(20)}
    changes_before = changes.count
    fake_kube.start()

    seen: list[frozenset[str]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        current = frozenset(o.metadata.name for o in source.snapshot().services)
        seen.append(current)
        if current == new:
            break
        time.sleep(0.002)  # look often, but leave the GIL to the relist
    assert seen[-1] == new, "the relist never arrived"
    assert all(s in (old, new) for s in seen), "a snapshot showed a half-built or emptied cache"
    assert len(services_requests(fake_kube, watch=False)) > lists_before
    wait_until(lambda: changes.count > changes_before, what="on_change after the relist")
    core.create_namespaced_service("default", service("after"))  # and the new watch works
    wait_until(lambda: "after" in names(source.snapshot().services), what="an event after the relist")


def test_relist_keeps_the_last_good_version_of_an_object_that_turned_bad() -> None:
    resource = Resource("ipaddresspools", "IPAddressPool", f"{GROUP}/v1beta1", "pools", lambda **kw: None)

    def raw(name: str, rv: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": NS, "resourceVersion": rv}, "spec": spec}

    cache = ResourceCache().rebuilt([raw("a", "1", {"addresses": ["192.0.2.0/28"]}),
                                     raw("b", "2", {"addresses": ["198.51.100.0/28"]})], resource, lambda r: True)
    relisted = cache.rebuilt([raw("a", "3", {"adresses": ["x"]}), raw("c", "4", {"addresses": ["203.0.113.0/28"]})],
                             resource, lambda r: True)
    assert names(relisted.sorted_objects()) == ["a", "c"]  # b is gone, a keeps its good version
    assert relisted.objects[(NS, "a")] is cache.objects[(NS, "a")]
    assert {(e.name, e.field) for e in relisted.all_errors()} == {("a", "spec.adresses"), ("a", "spec.addresses")}
    assert not relisted.same_as(cache)
    assert relisted.rebuilt([raw("a", "3", {"adresses": ["x"]}), raw("c", "4", {"addresses": ["203.0.113.0/28"]})],
                            resource, lambda r: True).same_as(relisted)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abcdefgh"), st.integers(1, 3)), max_size=40))
def test_the_cache_keeps_its_objects_in_key_order_through_events(events) -> None:
    """sorted_objects() after puts and removals, as a sort of the objects would give it."""
    resource = Resource("ipaddresspools", "IPAddressPool", f"{GROUP}/v1beta1", "pools", lambda **kw: None)
    cache = ResourceCache()
    for index, (put, name, rv) in enumerate(events):
        if index == 3:
            cache.sorted_objects()  # the key order becomes known part-way, as after the first snapshot
        if put:
            doc = {"metadata": {"name": name, "namespace": NS, "resourceVersion": str(rv)},
                   "spec": {"addresses": [f"192.0.2.{rv * 16}/28"]}}
            cache.put((NS, name), parse_item(doc, resource))
        else:
            cache.remove((NS, name))
        assert cache.sorted_objects() == tuple(cache.objects[key] for key in sorted(cache.objects))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "remove", "bad", "take"]), st.sampled_from("abcdef"),
                          st.integers(1, 3)), max_size=50))  # fmt: skip
def test_the_cache_records_what_it_replaced_between_two_takes(events) -> None:
    """take_replaced() gives what `replaced_objects` finds between the tuples of two takes (None at
    the first), through new versions, unchanged ones, bad ones, removals and objects that come and go
    between two takes."""
    resource = Resource("ipaddresspools", "IPAddressPool", f"{GROUP}/v1beta1", "pools", lambda **kw: None)
    cache = ResourceCache()
    assert cache.take_replaced() is None
    taken = cache.sorted_objects()
    for action, name, rv in [*events, ("take", "a", 1)]:
        if action == "take":
            went, came = cache.take_replaced()  # type: ignore[misc]
            now = cache.sorted_objects()
            expected = replaced_objects(taken, now)
            assert ({id(o) for o in went}, {id(o) for o in came}) == tuple({id(o) for o in part} for part in expected)
            taken = now
        elif action == "remove":
            cache.remove((NS, name))
        else:
            spec = {"addresses": [f"192.0.2.{rv * 16}/28"]} if action == "put" else {"adresses": 1}
            cache.put((NS, name), parse_item({"metadata": {"name": name, "namespace": NS, "resourceVersion": str(rv)},
                                              "spec": spec}, resource))  # fmt: skip


def test_snapshots_say_what_each_kind_replaced_since_the_previous_one(
    fake_kube: FakeKube, core: client.CoreV1Api, start_source: Callable[..., KubernetesSource],
) -> None:
    """The planners' fast path: `replacements` of a snapshot refer to the previous snapshot and agree
    with the identity diff; a relisted kind drops out of them (the planners then diff by identity)."""
    for i in range(5):
        core.create_namespaced_service("default", service(f"s{i}"))
    source = start_source()
    taken: list[ClusterSnapshot] = []

    def take() -> ClusterSnapshot:
        taken.append(source.snapshot())
        return taken[-1]

    wait_until(lambda: len(take().services) == 5, what="the services")
    settled = len(taken)
    core.patch_namespaced_service("s1", "default", {"spec": {"ports": [{"port": 443}]}})
    core.delete_namespaced_service("s3", "default")
    core.create_namespaced_service("default", service("s9"))
    wait_until(lambda: names(take().services) == ["s0", "s1", "s2", "s4", "s9"], what="the events")
    wait_until(lambda: take().services[1].spec.ports[0].port == 443, what="the patch")
    take()
    went_in_all, came_in_all = set(), set()
    for previous, snapshot in zip(taken, taken[1:]):
        assert snapshot.replacements is not None and snapshot.replacements.since is previous.token
        now, went, came = snapshot.replacements.kinds["services"]
        assert now is snapshot.services
        expected = replaced_objects(previous.services, snapshot.services)
        assert {id(o) for o in went} == {id(o) for o in expected[0]}
        assert {id(o) for o in came} == {id(o) for o in expected[1]}
        if taken.index(previous) >= settled - 1:
            went_in_all |= {o.metadata.name for o in went}
            came_in_all |= {o.metadata.name for o in came}
    assert (went_in_all, came_in_all) == ({"s1", "s3"}, {"s1", "s9"})
    with source._lock:  # a relist's new cache has no record until its first snapshot
        watcher = source._watchers["services"]
        watcher.cache = watcher.cache.rebuilt([], watcher.resource, lambda raw: True)
    assert "services" not in source.snapshot().replacements.kinds  # type: ignore[union-attr]
    assert source.snapshot().replacements.kinds["services"][1:] == ((), ())  # type: ignore[union-attr]


def test_objects_seen_trusts_a_record_only_for_the_snapshot_it_took_last() -> None:
    """ObjectsSeen takes a source's record when it refers to exactly the last snapshot taken and tuple
    handed out; anything else (no record, another snapshot's, another tuple) is diffed by identity."""
    a, b, c = (ServiceKeyed(name) for name in "abc")
    first = ClusterSnapshot(services=(a, b))  # type: ignore[arg-type]
    seen: ObjectsSeen[Any] = ObjectsSeen("services")
    assert seen.take(first) == ([], [a, b])
    lying = ([c], [a])  # a record that is not what changed, to see which answer is used
    now = (a, c)
    trusted = ClusterSnapshot(services=now, replacements=Replacements(since=first.token, kinds={"services": (now, *lying)}))  # type: ignore[arg-type]
    assert seen.take(trusted) == lying
    for hint in (Replacements(since=first.token, kinds={"services": (now, *lying)}),  # refers to an older snapshot
                 Replacements(since=trusted.token, kinds={"services": ((a, c), *lying)}),  # another tuple
                 None):
        seen = ObjectsSeen("services")
        seen.take(first)
        seen.take(trusted)
        later = ClusterSnapshot(services=(c,), replacements=hint)  # type: ignore[arg-type]
        assert seen.take(later) == ([a], [])
    assert seen.take(later) is None  # the very same tuple again


class ServiceKeyed:
    def __init__(self, name: str) -> None:
        self.name = name


# --- outages ---------------------------------------------------------------------------------------


def test_a_restarting_api_server_keeps_the_cache_and_the_watch_resumes(
    fake_kube: FakeKube, core: client.CoreV1Api, custom: client.CustomObjectsApi,
    start_source: Callable[..., KubernetesSource],
) -> None:
    for i in range(5):
        core.create_namespaced_service("default", service(f"web-{i}"))
    create_pool(custom, pool("pool", "198.51.100.0/28"))
    source = start_source()
    before = source.snapshot()
    lists_before = len(services_requests(fake_kube, watch=False))

    fake_kube.stop()
    during: list[ClusterSnapshot] = []
    deadline = time.monotonic() + 0.6  # several failed reconnects at this backoff
    while time.monotonic() < deadline:
        during.append(source.snapshot())
        time.sleep(0.02)
    fake_kube.store.create(_services(fake_kube), "default", service("while-down"))
    fake_kube.start()

    assert all(s.services == before.services and s.pools == before.pools for s in during)
    wait_until(lambda: "while-down" in names(source.snapshot().services), what="the change made during the outage")
    core.create_namespaced_service("default", service("after"))
    wait_until(lambda: "after" in names(source.snapshot().services), what="a change after the outage")
    assert len(services_requests(fake_kube, watch=False)) == lists_before  # resumed, not relisted
    assert source.synced


@pytest.mark.parametrize("fault", ["500", "429", "drop"])
def test_failing_watch_requests_keep_the_cache_and_later_changes_still_arrive(
    fault: str, fake_kube: FakeKube, core: client.CoreV1Api, start_source: Callable[..., KubernetesSource],
) -> None:
    core.create_namespaced_service("default", service("web"))
    source = start_source()
    count = 8  # more than urllib3's own three retries for 429 and dropped connections
    if fault == "500":
        fake_kube.fail_next(count, method="GET", path=SERVICES_WATCH)
    elif fault == "429":
        fake_kube.throttle_next(count, retry_after=0, method="GET", path=SERVICES_WATCH)
    else:
        fake_kube.drop_next(count, method="GET", path=SERVICES_WATCH)
    expected = {"500": 500, "429": 429, "drop": None}[fault]

    def faults_seen() -> int:
        return sum(1 for r in services_requests(fake_kube, watch=True) if r.status == expected)

    deadline = time.monotonic() + 15
    while faults_seen() < count:  # the current watch times out, the next ones fail
        assert names(source.snapshot().services) == ["web"]
        assert time.monotonic() < deadline, "the injected faults were never all hit"
        time.sleep(0.02)
    assert names(source.snapshot().services) == ["web"]
    core.create_namespaced_service("default", service("later"))
    wait_until(lambda: names(source.snapshot().services) == ["later", "web"], what="a change after the faults")
    assert len(services_requests(fake_kube, watch=False)) == 1


# --- secrets ---------------------------------------------------------------------------------------


def test_only_secrets_named_by_a_bgppeer_are_kept_and_never_logged(
    fake_kube: FakeKube, core: client.CoreV1Api, custom: client.CustomObjectsApi,
    start_source: Callable[..., KubernetesSource],
) -> None:
    core.create_namespaced_secret(NS, basic_auth("router-password", "s3cret-one"))
    core.create_namespaced_secret(NS, basic_auth("unrelated", "s3cret-two"))
    core.create_namespaced_secret("default", basic_auth("router-password", "s3cret-three", "default"))
    create_peer(custom, peer("router", "192.0.2.1", secret="router-password"))

    with capture_logs() as logs:
        source = start_source()
        snap = source.snapshot()
        assert [(s.metadata.namespace, s.metadata.name) for s in snap.secrets] == [(NS, "router-password")]
        assert snap.secrets[0].value("password") == "s3cret-one"

        core.create_namespaced_secret(NS, basic_auth("late", "s3cret-four"))
        create_peer(custom, peer("second", "192.0.2.1", secret="late"))  # a peer naming a Secret we had dropped
        wait_until(lambda: names(source.snapshot().secrets) == ["late", "router-password"], what="the named Secret")
        custom.delete_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", "second")
        wait_until(lambda: names(source.snapshot().secrets) == ["router-password"], what="the Secret to be dropped")
        core.patch_namespaced_secret("unrelated", NS, {"metadata": {"labels": {"x": "1"}}})
        fake_kube.restart(keep_state=True)
        time.sleep(0.3)
        assert names(source.snapshot().secrets) == ["router-password"]

    secret_reads = {r.path for r in fake_kube.requests if "secrets" in r.path and r.method == "GET"}
    assert secret_reads == {f"/api/v1/namespaces/{NS}/secrets"}  # never cluster-wide
    text = repr(logs)
    assert not any(word in text for word in ("s3cret", base64.b64encode(b"s3cret-one").decode()))


# --- malformed objects -----------------------------------------------------------------------------


def test_a_malformed_custom_resource_is_reported_by_name_and_field_and_hides_nothing_else(
    custom: client.CustomObjectsApi, start_source: Callable[..., KubernetesSource],
) -> None:
    create_peer(custom, peer("good", "192.0.2.1"))
    bad = peer("typo", "192.0.2.1")
    bad["spec"]["peerAdress"] = bad["spec"].pop("peerAddress")
    create_peer(custom, bad)
    source = start_source()

    snap = source.snapshot()
    assert names(snap.peers) == ["good"]
    assert ObjectError("BGPPeer", NS, "typo", "spec.peerAdress", "unknown field") in snap.load_errors
    assert all(e.name == "typo" for e in snap.load_errors)

    # A good object that turns bad keeps its last good version while the error is reported.
    custom.patch_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", "good", {"spec": {"peerASN": "many"}})
    wait_until(lambda: any(e.name == "good" for e in source.snapshot().load_errors), what="the error")
    snap = source.snapshot()
    assert names(snap.peers) == ["good"] and snap.peers[0].spec.peer_asn == 64501
    assert [e.field for e in snap.load_errors if e.name == "good"] == ["spec.peerASN"]

    custom.patch_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", "good", {"spec": {"peerASN": 64999}})
    custom.delete_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", "typo")
    wait_until(lambda: source.snapshot().load_errors == () and source.snapshot().peers[0].spec.peer_asn == 64999,
               what="the fixed object")


# --- stop and pacing -------------------------------------------------------------------------------


def test_stop_ends_every_watch_promptly_even_with_long_server_timeouts(fake_kube: FakeKube) -> None:
    source = KubernetesSource(fake_kube.client, namespace=NS, watch_timeout_seconds=300)
    source.start()
    assert source.wait_synced(5)
    wait_until(lambda: len([r for r in fake_kube.requests if "watch=true" in r.query]) >= 11, what="all watches")
    threads = [t for t in threading.enumerate() if t.name.startswith("kube-watch-")]
    assert len(threads) == 11
    source.stop()
    for thread in threads:
        thread.join(2)
    assert not any(t.is_alive() for t in threads)


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    assert backoff_delay(1, base=0.2, cap=5, rng=lambda: 0.0) == pytest.approx(0.1)
    assert backoff_delay(1, base=0.2, cap=5, rng=lambda: 1.0) == pytest.approx(0.2)
    assert backoff_delay(4, base=0.2, cap=5, rng=lambda: 1.0) == pytest.approx(1.6)
    assert backoff_delay(50, base=0.2, cap=5, rng=lambda: 1.0) == pytest.approx(5)
    assert 2.5 <= backoff_delay(50, base=0.2, cap=5) <= 5

