"""Kubernetes mode end to end: `metallb-bgp controller` and `metallb-bgp speaker` as a user runs them.

The daemons are real child processes of the real CLI, pointed at the fake API server (tests/fakekube)
through a kubeconfig file; each speaker drives a real ExaBGP child; one real BIRD 2 router has one BGP
protocol per node (node-a speaks from 127.0.0.2, node-b from 127.0.0.3). The tests change the cluster
through the API, as kubectl would, and check what the router holds and what the API shows.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from bird import BirdRouter, Speaker
from fakekube import FakeKube, schemaless_crd
from kubernetes import client
from runs import free_peer_port, stop_child
from waiting import wait_until

from metallb_bgp.core.writes import bgp_session_state_name, service_bgp_status_name

pytestmark = [pytest.mark.router, pytest.mark.timeout(90)]

GROUP = "metallb.io"
ROOT = Path(__file__).resolve().parents[2]
NS = "metallb-system"
NODES = {"node-a": "127.0.0.2", "node-b": "127.0.0.3"}  # node -> the address its speaker uses
ROUTER_ASN, NODE_ASN = 64501, 64500
FIRST, SECOND, THIRD = (ipaddress.ip_network(f"198.51.100.{i}/32") for i in range(3))


# --- the cluster, through the API -------------------------------------------------------------------


class Api:
    def __init__(self, fake: FakeKube) -> None:
        self.fake = fake
        self.core = client.CoreV1Api(fake.client)
        self.custom = client.CustomObjectsApi(fake.client)
        self.discovery = client.DiscoveryV1Api(fake.client)

    def metallb(self, plural: str, name: str, spec: dict[str, Any], version: str = "v1beta1") -> None:
        kind = {"ipaddresspools": "IPAddressPool", "bgppeers": "BGPPeer", "bgpadvertisements": "BGPAdvertisement"}[plural]
        body = {"apiVersion": f"{GROUP}/{version}", "kind": kind, "metadata": {"name": name}, "spec": spec}
        self.custom.create_namespaced_custom_object(GROUP, version, NS, plural, body)

    def service(self, name: str, *, node: str = "node-a", local: bool = False) -> None:
        spec = {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]}
        if local:
            spec["externalTrafficPolicy"] = "Local"
        self.core.create_namespaced_service("default", {"metadata": {"name": name}, "spec": spec})
        self.discovery.create_namespaced_endpoint_slice("default", {
            "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": node, "conditions": {"ready": True}}],
        })

    def ips(self, name: str) -> tuple[str, ...]:
        status = self.core.read_namespaced_service(name, "default").status
        return tuple(i.ip for i in ((status.load_balancer.ingress if status and status.load_balancer else None) or []))

    def all_ips(self) -> list[str]:
        return [ip for s in self.core.list_namespaced_service("default").items
                for ip in (i.ip for i in ((s.status.load_balancer.ingress if s.status.load_balancer else None) or []))]

    def events(self, name: str) -> list[tuple[str, str]]:
        items = self.core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={name}").items
        return [(e.reason, e.message) for e in items]

    def state(self, name: str) -> dict[str, Any]:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, "v1beta1", NS, "configurationstates", name).get(
                "status") or {}
        except client.ApiException:
            return {}


def retrying(call: Callable[[], Any], attempts: int = 50) -> Any:
    """The test's own requests ride out the 500/429 bursts it injects for the daemons."""
    for _ in range(attempts - 1):
        try:
            return call()
        except client.ApiException as exc:
            if exc.status not in (429, 500):
                raise
            time.sleep(0.05)
    return call()


class Daemon:
    """One `metallb-bgp controller|speaker` child process with JSON logs in a file."""

    def __init__(self, directory: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "metallb_bgp.cli", *args, "--log-format", "json"],
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if event is None or record.get("event") == event:
                    found.append(record)
        return found

    def stop(self, sig: int = signal.SIGTERM) -> int:
        code = stop_child(self.process, sig=sig, timeout=20)
        self.log.close()
        return code


class Harness:
    def __init__(self, fake: FakeKube, router: BirdRouter, directory: Path) -> None:
        self.api = Api(fake)
        self.fake = fake
        self.router = router
        self.directory = directory
        self.config = fake.write_kubeconfig(directory / "kubeconfig")
        self.daemons: list[Daemon] = []

    def controller(self, identity: str = "c1", *extra: str) -> Daemon:
        return self._start(f"controller-{identity}", ["controller", "--kubeconfig", str(self.config),
                                                      "--identity", identity, *extra])

    def speaker(self, node: str = "node-a", *extra: str) -> Daemon:
        return self._start(f"speaker-{node}", ["speaker", "--node-name", node, "--kubeconfig", str(self.config),
                                               "--workdir", str(self.directory / node),
                                               "--control-socket", str(self.control_socket(node)),
                                               "--exabgp-commands-in-flight", "4", *extra])

    def control_socket(self, node: str) -> Path:
        return self.directory / f"{node}-control" / "control.sock"

    def _start(self, name: str, args: list[str]) -> Daemon:
        daemon = Daemon(self.directory, name, args)
        self.daemons.append(daemon)
        return daemon

    def routes(self, protocol: str | None = None) -> set[ipaddress.IPv4Network]:
        return set(self.router.routes(protocol))

    def wait_routes(self, protocol: str, expected: set[Any], what: str, timeout: float = 15) -> None:
        wait_until(lambda: self.routes(protocol) == expected, timeout=timeout, what=what)

    def route_times(self) -> dict[tuple[str, str], str]:
        """(prefix, protocol) -> the time BIRD imported the route: a withdraw + re-announce changes it."""
        times = {}
        for line in self.router.birdc("show", "route", "all").splitlines():
            match = re.match(r"^(\S+/\d+)?\s+\S+\s+\[(\S+) (\S+ \S+)", line)
            if match and match[1]:
                times[(match[1], match[2])] = match[3]
        return times


@pytest.fixture
def harness(fake_kube: FakeKube, bird_factory: Callable[..., BirdRouter], short_tmp: Path) -> Iterator[Harness]:
    router = bird_factory(asn=ROUTER_ASN, port=free_peer_port())
    for node, address in NODES.items():
        router.add_speaker(Speaker(name=node[-1], address=address, asn=NODE_ASN))
    router.start()
    fake_kube.register_crd(schemaless_crd(GROUP, "ConfigurationState", "configurationstates", ("v1beta1",)))
    api = Api(fake_kube)
    for node in NODES:
        api.core.create_node({"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}})
    api.metallb("ipaddresspools", "pool", {"addresses": ["198.51.100.0/28"]})
    for node, address in NODES.items():
        api.metallb("bgppeers", f"router-{node[-1]}", {
            "myASN": NODE_ASN, "peerASN": ROUTER_ASN, "peerAddress": "127.0.0.1", "peerPort": router.port,
            "sourceAddress": address, "holdTime": "9s",
            "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": node}}],
        }, version="v1beta2")
    api.metallb("bgpadvertisements", "adv", {"communities": ["64500:1"]})
    harness = Harness(fake_kube, router, short_tmp)
    try:
        yield harness
    finally:
        for daemon in harness.daemons:
            daemon.stop()
        for daemon in harness.daemons:
            print(f"--- {daemon.name}\n{daemon.log_path.read_text()[-3000:]}")  # shown when a test fails


# --- the tests ------------------------------------------------------------------------------------------


def test_a_new_service_gets_an_ip_in_status_and_its_route_and_deleting_it_withdraws(harness: Harness) -> None:
    controller = harness.controller()
    speaker = harness.speaker("node-a")
    harness.router.wait_established("a")
    harness.api.service("web")
    wait_until(lambda: harness.api.ips("web"), what="web's IP in status")
    assert harness.api.ips("web") == ("198.51.100.0",)
    harness.wait_routes("a", {FIRST}, what="web's /32 at the router")
    assert harness.router.routes("a")[FIRST].communities == ("64500:1",)
    wait_until(lambda: {r for r, _ in harness.api.events("web")} == {"IPAllocated", "nodeAssigned"},
               what="IPAllocated and nodeAssigned events")
    harness.api.core.delete_namespaced_service("web", "default")
    harness.wait_routes("a", set(), what="web's withdrawal")
    exabgp = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == speaker.process.pid]
    assert exabgp, "the speaker's ExaBGP child"
    assert (speaker.stop(), controller.stop()) == (0, 0)  # SIGTERM: a clean exit
    assert not [p for p in exabgp if p.exists() and _state(p) != "Z"], "ExaBGP left running"


def _stat(proc: Path) -> list[str]:
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ["X", "0"]


def _parent(proc: Path) -> int:
    return int(_stat(proc)[1])


def _state(proc: Path) -> str:
    return _stat(proc)[0]


def test_etp_local_endpoints_moving_to_another_node_move_the_announcement(harness: Harness) -> None:
    harness.controller()
    harness.speaker("node-a")
    harness.speaker("node-b")
    harness.router.wait_established("a")
    harness.router.wait_established("b")
    harness.api.service("web", node="node-a", local=True)
    harness.wait_routes("a", {FIRST}, what="the route from node-a")
    assert harness.routes("b") == set()
    harness.api.discovery.patch_namespaced_endpoint_slice("web-1", "default", {"endpoints": [
        {"addresses": ["10.0.0.2"], "nodeName": "node-b", "conditions": {"ready": True}}]})
    harness.wait_routes("b", {FIRST}, what="the route from node-b")
    harness.wait_routes("a", set(), what="node-a's withdrawal")


def test_a_dual_stack_session_follows_the_nodes_ipv6_address_as_the_node_status_changes(harness: Harness) -> None:
    """The speaker's IPv6 routes on a dualStackAddressFamily session take the Node's own IPv6 address as
    next hop, and move when the Node's status does, without a restart or a session reset."""
    api = harness.api
    api.custom.patch_namespaced_custom_object(GROUP, "v1beta1", NS, "ipaddresspools", "pool",
                                              {"spec": {"addresses": ["198.51.100.0/28", "2001:db8:5::/124"]}},
                                              _content_type="application/merge-patch+json")  # fmt: skip
    api.custom.patch_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", "router-a",
                                              {"spec": {"dualStackAddressFamily": True}},
                                              _content_type="application/merge-patch+json")  # fmt: skip

    def node_addresses(*addresses: str) -> None:
        api.core.patch_node_status("node-a", {"status": {"addresses": [
            {"type": "InternalIP", "address": address} for address in addresses]}})

    node_addresses("127.0.0.2", "2001:db8:ff::2")
    harness.controller()
    harness.speaker("node-a")
    api.core.create_namespaced_service("default", {"metadata": {"name": "web"}, "spec": {
        "type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}],
        "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}})
    api.discovery.create_namespaced_endpoint_slice("default", {
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "node-a", "conditions": {"ready": True}}]})
    v6 = ipaddress.ip_network("2001:db8:5::/128")
    harness.wait_routes("a", {FIRST, v6}, what="both families over node-a's IPv4 session")
    assert harness.router.routes("a")[v6].next_hop == "2001:db8:ff::2"
    since = harness.router.wait_established("a").since

    node_addresses("127.0.0.2", "2001:db8:ff::9")
    wait_until(lambda: (r := harness.router.routes("a")).get(v6) is not None and r[v6].next_hop == "2001:db8:ff::9",
               what="the IPv6 route on the Node's new address")  # fmt: skip
    node_addresses("127.0.0.2")
    harness.wait_routes("a", {FIRST}, what="the IPv6 route withdrawn with the Node's IPv6 address")
    assert harness.router.protocol("a").since == since


def test_editing_a_bgp_advertisement_community_changes_it_at_the_router_without_resetting_the_session(
    harness: Harness,
) -> None:
    harness.controller()
    harness.speaker("node-a")
    harness.api.service("web")
    harness.wait_routes("a", {FIRST}, what="web's /32")
    since = harness.router.wait_established("a").since
    harness.api.custom.patch_namespaced_custom_object(GROUP, "v1beta1", NS, "bgpadvertisements", "adv",
                                                      {"spec": {"communities": ["64500:2"]}},
                                                      _content_type="application/merge-patch+json")
    wait_until(lambda: harness.router.routes("a")[FIRST].communities == ("64500:2",), what="the new community")
    assert harness.router.protocol("a").since == since


def test_compaction_an_api_outage_and_error_bursts_cause_no_withdrawal_and_no_duplicate_ip(harness: Harness) -> None:
    controller = harness.controller()
    speaker = harness.speaker("node-a")
    harness.api.service("web")
    harness.api.service("api")
    harness.wait_routes("a", {FIRST, SECOND}, what="two routes")
    before = harness.route_times()
    assigned = (harness.api.ips("web"), harness.api.ips("api"))
    lowest = [2]
    watching = threading.Event()

    def watch_router() -> None:  # every 50 ms: the router must never hold fewer routes
        while not watching.is_set():
            lowest[0] = min(lowest[0], len(harness.routes("a")))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_router, daemon=True)
    watcher.start()
    try:
        harness.api.core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"x": "1"}}})
        harness.fake.compact()
        harness.fake.restart()  # every watch resumes from a compacted resourceVersion: 410, relist
        time.sleep(0.5)
        harness.fake.stop()  # an outage of several seconds
        time.sleep(3.0)
        harness.fake.start()
        harness.fake.fail_next(15, status=500)
        harness.fake.throttle_next(10, retry_after=0)
        retrying(lambda: harness.api.service("db"))
        wait_until(lambda: retrying(lambda: harness.api.ips("db")), timeout=20, what="db's IP after the bursts")
        harness.wait_routes("a", {FIRST, SECOND, THIRD}, what="db's route", timeout=20)
    finally:
        watching.set()
        watcher.join(timeout=2)
    assert lowest[0] == 2, "a route was withdrawn during the disruptions"
    assert (harness.api.ips("web"), harness.api.ips("api")) == assigned
    ips = harness.api.all_ips()
    assert len(ips) == len(set(ips)) == 3
    after = harness.route_times()
    assert {k: after[k] for k in before} == before  # never withdrawn and re-announced
    assert [r for r, _ in harness.api.events("web")].count("IPAllocated") == 1
    for daemon in (controller, speaker):  # the disruptions did reach them: relists after 410, errors
        assert daemon.events("kube_watch_expired") and daemon.events("kube_watch_error")


def test_two_controllers_never_both_allocate_and_the_survivor_keeps_every_assignment(harness: Harness) -> None:
    timings = ["--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "1"]
    first = harness.controller("c1", *timings)
    second = harness.controller("c2", *timings)
    harness.speaker("node-a")
    harness.api.service("web")
    harness.wait_routes("a", {FIRST}, what="web's route")
    leases = client.CoordinationV1Api(harness.fake.client)
    holder = leases.read_namespaced_lease("metallb-bgp-controller", NS).spec.holder_identity
    leader, follower = (first, second) if holder == "c1" else (second, first)
    assert leader.events("service_status_written") and not follower.events("service_status_written")
    before = harness.route_times()
    leader.stop(signal.SIGKILL)  # a crash: no release, the lease must expire
    harness.api.service("api")
    wait_until(lambda: harness.api.ips("api"), timeout=15, what="api's IP from the new leader")
    assert (harness.api.ips("web"), harness.api.ips("api")) == (("198.51.100.0",), ("198.51.100.1",))
    assert leases.read_namespaced_lease("metallb-bgp-controller", NS).spec.holder_identity == follower.name[-2:]
    assert [r for r, _ in harness.api.events("web")].count("IPAllocated") == 1
    harness.wait_routes("a", {FIRST, SECOND}, what="both routes")
    assert {k: v for k, v in harness.route_times().items() if k in before} == before


def test_a_malformed_cr_is_reported_in_configuration_state_and_as_an_event_while_every_route_stays(
    harness: Harness,
) -> None:
    harness.controller()
    harness.speaker("node-a")
    harness.api.service("web")
    harness.wait_routes("a", {FIRST}, what="web's route")
    wait_until(lambda: harness.api.state("speaker-node-a").get("peers", [{}])[0].get("state") == "established",
               what="the speaker's session state in its ConfigurationState")
    before = harness.route_times()
    harness.api.metallb("bgpadvertisements", "bad", {"communities": ["not-a-community"]})
    controller_state = wait_until(lambda: (s := harness.api.state("controller")).get("result") == "Invalid" and s,
                                  what="the controller's Invalid ConfigurationState")
    assert controller_state["errorSummary"].startswith(f"BGPAdvertisement {NS}/bad: spec.communities[0]")
    wait_until(lambda: harness.api.state("speaker-node-a").get("result") == "Invalid", what="the speaker's state")
    wait_until(lambda: [r for r, _ in harness.api.events("bad")] == ["InvalidConfiguration"],
               what="InvalidConfiguration on the BGPAdvertisement")
    harness.api.service("api")
    harness.wait_routes("a", {FIRST, SECOND}, what="a new service still announced")
    assert {k: v for k, v in harness.route_times().items() if k in before} == before


def test_each_speaker_presents_its_own_nodes_address_as_bgp_identifier(harness: Harness) -> None:
    """No --router-id and no routerID: each node's identifier is its Node's IPv4 InternalIP (as in
    MetalLB), not a shared or configured-elsewhere one; the router sees two identifiers for two nodes."""
    identifiers = {"node-a": "192.0.2.11", "node-b": "192.0.2.12"}
    for node, address in identifiers.items():
        harness.api.core.patch_node_status(node, {"status": {"addresses": [{"type": "InternalIP", "address": address}]}})
    for node in identifiers:
        harness.speaker(node)
    for node, address in identifiers.items():
        harness.router.wait_established(node[-1], timeout=20)
        assert harness.router.neighbor_id(node[-1]) == address


def test_a_restarting_speaker_announces_what_it_has_listed_while_the_rest_is_still_listing(harness: Harness) -> None:
    """1,200 services (three list pages); the speaker is restarted on a graceful-restart peer while the
    advertisement's community changed, and the second page of its Services list is held back 3 s. The
    first page's routes reach the router with the new community before the lists are done, the rest
    stay there as stale copies meanwhile (nothing withdrawn, no End-of-RIB), and once synced every route
    carries the new community: no route was missing at any sample."""
    count = 1200
    harness.api.custom.patch_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", "router-a",
                                                      {"spec": {"enableGracefulRestart": True}})  # fmt: skip
    harness.api.custom.patch_namespaced_custom_object(GROUP, "v1beta1", NS, "ipaddresspools", "pool",
                                                      {"spec": {"addresses": ["10.96.0.0/20"]}})  # fmt: skip
    store = harness.fake.store
    services, slices = store.registry.lookup("", "v1", "services"), store.registry.lookup("discovery.k8s.io", "v1", "endpointslices")
    assert services is not None and slices is not None
    for i in range(count):
        name = f"s{i:04d}"
        store.create(services, "default", {"metadata": {"name": name}, "spec": {
            "type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}})
        store.create(slices, "default", {"metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
                                         "addressType": "IPv4", "endpoints": [
                                             {"addresses": ["10.0.0.1"], "nodeName": "node-a", "conditions": {"ready": True}}]})
    harness.controller()
    speaker = harness.speaker("node-a")
    wait_until(lambda: len(harness.routes("a")) == count, timeout=60, what=f"{count} routes at the router")
    assert speaker.stop() == 0  # graceful restart: the router keeps them as stale
    harness.api.custom.patch_namespaced_custom_object(GROUP, "v1beta1", NS, "bgpadvertisements", "adv",
                                                      {"spec": {"communities": ["64500:2"]}})  # fmt: skip
    harness.fake.slow_next(1, seconds=3, method="GET", path=r"/services\?.*continue=")
    restarted = harness.speaker("node-a")
    samples: list[tuple[float, int, int]] = []  # (time, routes at the router, of which with the new community)

    def sample() -> bool:
        routes = harness.router.routes("a")
        samples.append((time.time(), len(routes), sum(1 for r in routes.values() if r.communities == ("64500:2",))))
        return samples[-1][1:] == (count, count)

    wait_until(sample, timeout=60, interval=0.05, what="every route with the new community")
    assert all(total == count for _at, total, _new in samples), "a route left the router during the restart"
    synced = restarted.events("cluster_synced")[0]
    synced_at = datetime.fromisoformat(synced["timestamp"].replace("Z", "+00:00")).timestamp()
    early = [new for at, _total, new in samples if at < synced_at]
    assert early and 0 < max(early) < count, f"nothing announced before the lists were done: {early[-5:]}"
    assert synced["provisional_passes"] >= 1


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}  # fmt: skip


def test_the_speakers_metrics_follow_the_router_and_the_cluster(harness: Harness) -> None:
    """Scraped from a real speaker: its session to the router (down when the router disables it, up
    again after), what it announces (MetalLB's metallb_speaker_announced), ExaBGP's acknowledged updates,
    the Kubernetes objects it processed, and the change latency."""
    port = free_peer_port()
    harness.controller()
    harness.speaker("node-a", "--metrics-address", f"127.0.0.1:{port}")
    harness.router.wait_established("a")
    harness.api.service("web")
    harness.wait_routes("a", {FIRST}, what="web's /32 at the router")
    session = ("metallb_bgp_session_up", frozenset({("peer", "router-a")}))
    announced = ("metallb_speaker_announced", frozenset({("ip", "198.51.100.0"), ("node", "node-a"), ("protocol", "bgp"),
                                                          ("service", "default/web")}))  # fmt: skip
    wait_until(lambda: _scrape(port).get(session) == 1 and _scrape(port).get(announced) == 1, timeout=10,
               what="the session up and web announced in the metrics")  # fmt: skip
    found = _scrape(port)
    assert found[("metallb_bgp_updates_total", frozenset({("peer", "router-a")}))] >= 1
    assert found[("metallb_k8s_client_updates_total", frozenset())] >= 1
    assert found[("metallb_bgp_change_latency_seconds_count", frozenset())] >= 1
    harness.router.birdc("disable", "a")
    wait_until(lambda: _scrape(port).get(session) == 0, timeout=15, what="metallb_bgp_session_up 0 once the router dropped it")
    harness.router.birdc("enable", "a")
    wait_until(lambda: _scrape(port).get(session) == 1, timeout=30, what="metallb_bgp_session_up 1 again")


def test_service_bgp_status_objects_say_where_a_service_is_configured_to_go_and_whether_it_is_advertised(
    harness: Harness,
) -> None:
    """MetalLB's ServiceBGPStatus (its CRD schema, generated here, and its labels), one per service and
    node, owned by the speaker's Pod; ours beside MetalLB's fields: per peer, `advertised`, which follows
    the session when the router drops it. A predecessor's object for a service no longer announced is
    deleted at start; a deleted service's object goes. Beside them, a BGPSessionState per node and peer
    (frr-k8s' shape, our group) follows the session down and up, with the prefixes sent."""
    for crd in ("metallb.io_servicebgpstatuses.yaml", "metallb-bgp.io_bgpsessionstates.yaml"):
        harness.fake.register_crd(yaml.safe_load((ROOT / "charts/metallb-bgp/crds" / crd).read_text()))
    custom = harness.api.custom
    ghost = {"apiVersion": f"{GROUP}/v1beta1", "kind": "ServiceBGPStatus",
             "metadata": {"name": "bgp-left-behind", "labels": {"metallb.io/node": "node-a"}}}  # fmt: skip
    custom.create_namespaced_custom_object(GROUP, "v1beta1", NS, "servicebgpstatuses", ghost)
    harness.controller()
    harness.speaker("node-a", "--pod-name", "speaker-abc12", "--pod-uid", "0b2c-uid")
    harness.api.service("web")
    harness.wait_routes("a", {FIRST}, what="web's /32 at the router")
    name = service_bgp_status_name("node-a", "default", "web")

    def status() -> dict[str, Any] | None:
        try:
            return dict(custom.get_namespaced_custom_object(GROUP, "v1beta1", NS, "servicebgpstatuses", name))
        except client.ApiException:
            return None

    def advertised(value: bool) -> bool:
        found = status()
        return found is not None and (found.get("status") or {}).get("peerStatus") == [{"peer": "router-a", "advertised": value}]

    wait_until(lambda: advertised(True), timeout=15, what="web's ServiceBGPStatus, advertised to router-a")
    found = status()
    assert found is not None
    assert {k: v for k, v in found["status"].items() if k != "peerStatus"} == {
        "node": "node-a", "serviceName": "web", "serviceNamespace": "default", "peers": ["router-a"]}
    assert found["metadata"]["labels"] == {"metallb.io/node": "node-a", "metallb.io/service-name": "web",
                                           "metallb.io/service-namespace": "default"}  # fmt: skip
    assert found["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "speaker-abc12", "uid": "0b2c-uid"}]
    listed = custom.list_namespaced_custom_object(GROUP, "v1beta1", NS, "servicebgpstatuses", label_selector="metallb.io/node=node-a")
    assert [item["metadata"]["name"] for item in listed["items"]] == [name]  # the predecessor's leftover is gone
    session_name = bgp_session_state_name("node-a", "router-a")

    def session() -> dict[str, Any]:
        try:
            found = custom.get_namespaced_custom_object("metallb-bgp.io", "v1beta1", NS, "bgpsessionstates", session_name)
        except client.ApiException:
            return {}
        return dict(found.get("status") or {})

    wait_until(lambda: session().get("prefixesSent") == 1, timeout=15, what="the BGPSessionState with web's prefix sent")
    state = session()
    assert {k: state[k] for k in ("bgpStatus", "node", "peer", "peerName", "bfdStatus")} == {
        "bgpStatus": "Established", "node": "node-a", "peer": "127.0.0.1", "peerName": "router-a", "bfdStatus": ""}
    harness.router.birdc("disable", "a")
    wait_until(lambda: advertised(False), timeout=15, what="advertised false once the router dropped the session")
    wait_until(lambda: session().get("bgpStatus") != "Established" and session().get("prefixesSent") == 0, timeout=15,
               what="the BGPSessionState follows the session down")  # fmt: skip
    harness.router.birdc("enable", "a")
    wait_until(lambda: advertised(True), timeout=30, what="advertised again")
    wait_until(lambda: session().get("bgpStatus") == "Established", timeout=15, what="the BGPSessionState up again")
    harness.api.core.delete_namespaced_service("web", "default")
    wait_until(lambda: status() is None, timeout=15, what="the deleted service's ServiceBGPStatus gone")


def test_status_and_explain_read_the_clusters_status_objects(harness: Harness) -> None:
    """Kubernetes mode of `metallb-bgp status` / `explain` (--kubeconfig, as kubectl): from the
    speakers' ConfigurationState and ServiceBGPStatus objects, no daemon asked."""
    harness.fake.register_crd(yaml.safe_load((ROOT / "charts/metallb-bgp/crds/metallb.io_servicebgpstatuses.yaml").read_text()))
    harness.controller()
    harness.speaker("node-a")
    harness.api.service("web")
    harness.wait_routes("a", {FIRST}, what="web's /32 at the router")

    def cli(*args: str) -> tuple[int, Any]:
        result = subprocess.run([sys.executable, "-m", "metallb_bgp.cli", *args, "--kubeconfig", str(harness.config),
                                 "-o", "json"], capture_output=True, text=True, timeout=30)  # fmt: skip
        return result.returncode, json.loads(result.stdout) if result.stdout.strip() else result.stderr

    def explained() -> Any:
        code, answer = cli("explain", "default/web")
        return answer if code == 0 and answer.get("nodes") and answer["nodes"][0]["routes"][0]["advertised"] else None

    wait_until(explained, timeout=20, what="explain: web advertised from node-a")
    answer = explained()
    assert answer["ips"] == ["198.51.100.0"] and answer["pool"] == "pool"
    assert answer["nodes"] == [{"node": "node-a", "announced": True, "routes": [
        {"peer": "router-a", "prefix": "198.51.100.0", "session": "established", "advertised": True}]}]
    code, status = cli("status")
    assert code == 0
    speaker = next(d for d in status["daemons"] if d["name"] == "speaker-node-a")
    assert speaker["servicesAnnounced"] == 1 and speaker["peers"][0]["state"] == "established"
    assert {d["name"] for d in status["daemons"]} >= {"controller", "speaker-node-a"}
    code, missing = cli("explain", "default/nope")
    assert code == 1 and missing["found"] is False

    # the speaker itself (as `kubectl exec` into its pod would ask): intent and the engine's own books
    asked = subprocess.run([sys.executable, "-m", "metallb_bgp.cli", "explain", "default/web", "-o", "json",
                            "--control-socket", str(harness.control_socket("node-a"))], capture_output=True, text=True,
                           timeout=30)  # fmt: skip
    live = json.loads(asked.stdout)
    assert (live["announced"], live["ips"], live["pool"]) == (True, ["198.51.100.0"], "pool")
    assert [(r["peer"], r["prefix"], r["advertised"], r["communities"]) for r in live["routes"]] == [
        ("router-a", "198.51.100.0/32", True, ["64500:1"])]
    assert harness.router.routes("a")[FIRST].communities == ("64500:1",)


def test_a_speakers_bmp_station_puts_what_frr_accepted_in_the_service_bgp_status(harness: Harness, short_tmp: Path) -> None:
    """Kubernetes mode: node-a's speaker runs a BMP station (the chart's speaker.bmp) and FRR reports
    to it; each ServiceBGPStatus then says, per peer, whether the router received and accepted the
    service: `routerAccepted` false for exactly the service FRR's import policy drops, as FRR's own
    RIB shows; `explain` (kubectl exec into the speaker) says the same."""
    from frr import FrrRouter

    harness.fake.register_crd(yaml.safe_load((ROOT / "charts/metallb-bgp/crds/metallb.io_servicebgpstatuses.yaml").read_text()))
    station = free_peer_port()
    router = FrrRouter(short_tmp / "frr", asn=ROUTER_ASN, allow_martian=True, port=free_peer_port(),
                       bmp_station=(NODES["node-a"], station), import_deny=(str(SECOND),))  # fmt: skip
    router.add_neighbor(NODES["node-a"], NODE_ASN).start()
    try:
        harness.api.custom.patch_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", "router-a",
                                                          {"spec": {"peerPort": router.port}})  # fmt: skip
        harness.controller()
        harness.speaker("node-a", "--bmp-listen", f"{NODES['node-a']}:{station}", "--bmp-router", "127.0.0.1",
                        "--bmp-late", "3s")  # fmt: skip
        for name in ("web", "db"):
            harness.api.service(name)
        wait_until(lambda: str(FIRST) in router.routes(), timeout=30, what="web's /32 at FRR")
        custom = harness.api.custom

        def peer_status(service: str) -> list[dict[str, Any]]:
            try:
                found = custom.get_namespaced_custom_object(GROUP, "v1beta1", NS, "servicebgpstatuses",
                                                            service_bgp_status_name("node-a", "default", service))  # fmt: skip
            except client.ApiException:
                return []
            return list((found.get("status") or {}).get("peerStatus") or [])

        by_ip = {harness.api.ips(name)[0]: name for name in ("web", "db")}
        accepted, dropped = by_ip[str(FIRST.network_address)], by_ip[str(SECOND.network_address)]
        wait_until(lambda: peer_status(accepted) == [{"peer": "router-a", "advertised": True, "routerReceived": True,
                                                      "routerAccepted": True}],
                   timeout=30, what=f"{accepted}'s ServiceBGPStatus: FRR accepted it")  # fmt: skip
        wait_until(lambda: [s.get("routerAccepted") for s in peer_status(dropped)] == [False], timeout=30,
                   what=f"{dropped}'s ServiceBGPStatus: FRR's import policy dropped it")  # fmt: skip
        assert str(SECOND) not in router.routes() and str(FIRST) in router.routes()
        result = subprocess.run([sys.executable, "-m", "metallb_bgp.cli", "explain", f"default/{dropped}", "-o", "json",
                                 "--control-socket", str(harness.control_socket("node-a"))],
                                capture_output=True, text=True, timeout=30)  # fmt: skip
        (route,) = json.loads(result.stdout)["routes"]
        assert route["router"]["accepted"] is False and route["router"]["router"] == "test-frr"
        result = subprocess.run([sys.executable, "-m", "metallb_bgp.cli", "explain", f"default/{dropped}", "-o", "json",
                                 "--kubeconfig", str(harness.config)], capture_output=True, text=True, timeout=30)  # fmt: skip
        (node,) = json.loads(result.stdout)["nodes"]  # from the cluster's objects, as kubectl reads them
        assert [r["router"]["accepted"] for r in node["routes"]] == [False]
    finally:
        router.stop()


def test_the_controllers_bmp_station_counts_what_each_router_accepted_from_each_speaker(harness: Harness, short_tmp: Path) -> None:
    """One BMP target per router for the whole fleet (the chart's controller.bmp): FRR reports to the
    controller, whose metrics say per router and speaker what it received and accepted (the speakers'
    addresses are the BGPPeers' sourceAddresses and the Nodes' addresses); FRR gone, connected is 0
    and no count is left standing."""
    from frr import FrrRouter

    station, metrics_port = free_peer_port(), free_peer_port()
    router = FrrRouter(short_tmp / "frr", asn=ROUTER_ASN, allow_martian=True, port=free_peer_port(),
                       bmp_station=("127.0.0.4", station), import_deny=(str(SECOND),))  # fmt: skip
    router.add_neighbor(NODES["node-a"], NODE_ASN).start()
    try:
        harness.api.custom.patch_namespaced_custom_object(GROUP, "v1beta2", NS, "bgppeers", "router-a",
                                                          {"spec": {"peerPort": router.port}})  # fmt: skip
        harness.controller("c1", "--bmp-listen", f"127.0.0.4:{station}", "--bmp-router", "127.0.0.1",
                           "--metrics-address", f"127.0.0.1:{metrics_port}")  # fmt: skip
        harness.speaker("node-a")
        for name in ("web", "db"):
            harness.api.service(name)
        wait_until(lambda: str(FIRST) in router.routes(), timeout=30, what="the first /32 at FRR")
        labels = frozenset({("router", "test-frr"), ("speaker", NODES["node-a"])})
        accepted, received = ("metallb_bgp_router_accepted_prefixes", labels), ("metallb_bgp_router_received_prefixes", labels)
        connected = ("metallb_bgp_bmp_router_connected", frozenset({("router", "127.0.0.1")}))
        wait_until(lambda: _scrape(metrics_port).get(accepted) == 1, timeout=30, what="FRR's one accepted /32 in the metrics")
        found = _scrape(metrics_port)
        assert found[connected] == 1 and found[received] in (1, 2)  # FRR's pre-policy stream: see test_bmp_station
        assert len(router.routes()) == 1  # what FRR's own RIB holds
        router.stop()
        wait_until(lambda: _scrape(metrics_port).get(connected) == 0, timeout=20, what="connected 0 with FRR gone")
        assert accepted not in _scrape(metrics_port)
    finally:
        router.stop()
