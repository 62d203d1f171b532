"""Three nodes, two routers, in network namespaces (`netns.Fleet`): what each router holds, read from
its own RIB and kernel table (BIRD with `merge paths on`: the ECMP set traffic follows), as the nodes'
peers, labels, conditions and endpoints change, and when a node dies.

The case that broke: BGPPeers without `sourceAddress` (one BGPPeer serves every node, so it cannot
name a per-node address). When one node's peers change, its ExaBGP reloads, and an unchanged neighbour
rendered with `local-address auto` refused every later `next-hop self`: an endpoint move then never
reached the other router, which kept the old next hop. Now the unchanged neighbour has an explicit
local address, and a refused update would be retried, never recorded as sent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import builders
import pytest
from builders import service_manifest
from fakekube import FakeKube, schemaless_crd
from kubernetes import client
from netns import NODE_ASN, ROUTER_ASN_BASE, Fleet, FrrRouter, Router, entered
from runs import stop_child
from waiting import wait_until

pytestmark = [pytest.mark.router, pytest.mark.timeout(240)]

LOCAL, WEB = "198.51.100.0/32", "198.51.100.1/32"  # allocated in key order: default/local first


def peer(r: int, selectors: str = "", graceful_restart: bool = False, bfd: str = "", multihop: bool = False) -> str:
    return f"""apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: router{r}, namespace: metallb-system}}
spec:
  myASN: {NODE_ASN}
  peerASN: {ROUTER_ASN_BASE + r}
  peerAddress: 10.{r}.0.1
  holdTime: 9s
  enableGracefulRestart: {str(graceful_restart).lower()}
  ebgpMultiHop: {str(multihop).lower()}
  bfdProfile: "{bfd}"
{selectors}"""


def node(n: int, labels: str = "", conditions: str = "") -> str:
    return f"""apiVersion: v1
kind: Node
metadata:
  name: node-{n}
  labels: {{kubernetes.io/hostname: node-{n}{labels}}}
status:
  addresses: [{{type: InternalIP, address: 10.1.0.{10 + n}}}]
  conditions: [{conditions}]
"""


def service(name: str, policy: str, endpoint_nodes: list[str]) -> str:
    return service_manifest(name, local=policy == "Local", endpoint_nodes=tuple(endpoint_nodes))


POOL = """apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool, namespace: metallb-system}
spec:
  addresses: [198.51.100.0/28]
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: adv, namespace: metallb-system}
"""


@contextlib.contextmanager
def built_fleet(
    directory: Path, *, bfd: bool = False, bfd_graceful: bool = False, multihop: bool = False, router_kind: str = "bird"
) -> Iterator[tuple[Fleet, Path]]:
    """The topology with its manifests (a pool, a peer per router, three Nodes, web and local); with
    `bfd`, the routers run BFD and the peers name a 300 ms x 3 profile; with `multihop`, BGP and BFD
    are multihop on both sides. Logs are printed when it is removed."""
    manifests = directory / "manifests"
    manifests.mkdir()
    (manifests / "pool.yaml").write_text(POOL)
    if bfd:  # BIRD sends multihop BFD with TTL 64: MetalLB's default minimumTtl (254) would refuse it
        (manifests / "bfd.yaml").write_text(BFD_PROFILE.replace("}", ", minimumTtl: 60}") if multihop else BFD_PROFILE)
    for r in (1, 2):
        (manifests / f"peer{r}.yaml").write_text(peer(r, bfd="fast" if bfd else "", multihop=multihop))
    for n in (1, 2, 3):
        (manifests / f"node{n}.yaml").write_text(node(n))
    (manifests / "web.yaml").write_text(service("web", "Cluster", ["node-1"]))
    (manifests / "local.yaml").write_text(service("local", "Local", ["node-1"]))
    built = Fleet(directory / "fleet", bfd=bfd, bfd_graceful=bfd_graceful, multihop=multihop, router_kind=router_kind).create()
    try:
        yield built, manifests
    finally:
        built.destroy()
        for n in built.nodes:
            print(f"--- {n.name}\n{built.log_of(n)[-3000:]}")
        for router in built.routers:
            print(f"--- router{router.index}\n{router.log()[-3000:]}")


@pytest.fixture
def fleet(short_tmp: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Fleet, Path]]:
    """BIRD routers; parametrized indirectly with "frr" for FRR's."""
    with built_fleet(short_tmp, router_kind=str(getattr(request, "param", "bird"))) as found:
        yield found


def hops(r: int, *nodes: int) -> set[str]:
    return {f"10.{r}.0.{10 + n}" for n in nodes}


def test_an_endpoint_move_reaches_both_routers_after_a_nodes_peer_changed(fleet: tuple[Fleet, Path]) -> None:
    cluster, manifests = fleet
    for n in cluster.nodes:
        cluster.start_speaker(n, manifests)
    r1, r2 = cluster.routers
    expected = {WEB: hops(1, 1, 2, 3), LOCAL: hops(1, 1)}
    wait_until(lambda: r1.routes() == expected, timeout=60, what="router1: web from three nodes, local from node-1")
    wait_until(lambda: r2.routes() == {WEB: hops(2, 1, 2, 3), LOCAL: hops(2, 1)}, timeout=30, what="router2 likewise")
    wait_until(lambda: r1.kernel() == expected, timeout=10, what="router1's kernel table: the ECMP set")

    # node-3 stops peering with router1: its ExaBGP reloads; its router2 neighbour is unchanged
    (manifests / "peer1.yaml").write_text(peer(1, "  nodeSelectors:\n  - matchExpressions:\n"
                                               "    - {key: kubernetes.io/hostname, operator: NotIn, values: [node-3]}\n"))
    wait_until(lambda: r1.routes().get(WEB) == hops(1, 1, 2), timeout=30, what="router1 without node-3")
    # then the ETP Local endpoint moves to node-3: router2 must follow it; router1 has nobody left for it
    (manifests / "local.yaml").write_text(service("local", "Local", ["node-3"]))
    wait_until(lambda: r2.routes().get(LOCAL) == hops(2, 3), timeout=30, what="router2: local now via node-3")
    wait_until(lambda: r2.kernel().get(LOCAL) == hops(2, 3), timeout=10, what="router2's kernel table follows")
    wait_until(lambda: LOCAL not in r1.routes(), timeout=10, what="router1: local withdrawn")
    assert r2.routes()[WEB] == hops(2, 1, 2, 3)  # router2's sessions were never disturbed
    assert all(process.poll() is None for process in cluster.speakers.values())
    assert not any("routes_not_acknowledged" in cluster.log_of(n) for n in cluster.nodes)


def advertisement(spec: str) -> str:
    return f"apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: adv, namespace: metallb-system}}\nspec:\n{spec}"


def started(cluster: Fleet, manifests: Path) -> tuple[Router, Router]:
    for n in cluster.nodes:
        cluster.start_speaker(n, manifests)
    r1, r2 = cluster.routers
    wait_until(lambda: r1.routes().get(WEB) == hops(1, 1, 2, 3), timeout=60, what="router1: web from three nodes")
    wait_until(lambda: r2.routes().get(WEB) == hops(2, 1, 2, 3), timeout=30, what="router2: web from three nodes")
    return r1, r2


def test_selectors_the_exclusion_label_and_network_unavailable_remove_exactly_one_node_from_the_right_routers(
    fleet: tuple[Fleet, Path],
) -> None:
    cluster, manifests = fleet
    r1, r2 = started(cluster, manifests)
    wait_until(lambda: r1.kernel().get(WEB) == hops(1, 1, 2, 3), timeout=10, what="router1's kernel: three next hops")

    # a BGPPeer's nodeSelectors: node-3 stops peering with router2 only
    (manifests / "peer2.yaml").write_text(peer(2, "  nodeSelectors:\n  - matchExpressions:\n"
                                               "    - {key: kubernetes.io/hostname, operator: NotIn, values: [node-3]}\n"))
    wait_until(lambda: r2.routes().get(WEB) == hops(2, 1, 2), timeout=30, what="router2 without node-3")
    assert r1.routes()[WEB] == hops(1, 1, 2, 3)
    (manifests / "peer2.yaml").write_text(peer(2))
    wait_until(lambda: r2.routes().get(WEB) == hops(2, 1, 2, 3), timeout=30, what="router2 with node-3 again")

    # a BGPAdvertisement's nodeSelectors: only node-1 and node-2 announce, to both routers
    (manifests / "pool.yaml").write_text(POOL.split("---")[0] + "---\n" + advertisement(
        "  nodeSelectors:\n  - matchExpressions:\n    - {key: kubernetes.io/hostname, operator: In, values: [node-1, node-2]}\n"))
    wait_until(lambda: r1.routes().get(WEB) == hops(1, 1, 2) and r2.routes().get(WEB) == hops(2, 1, 2),
               timeout=30, what="both routers: web from node-1 and node-2 only")  # fmt: skip
    (manifests / "pool.yaml").write_text(POOL)
    wait_until(lambda: r1.routes().get(WEB) == hops(1, 1, 2, 3), timeout=30, what="router1: node-3 back")

    # the exclude-from-external-load-balancers label: node-2 announces nothing, its sessions stay up
    (manifests / "node2.yaml").write_text(node(2, labels=", node.kubernetes.io/exclude-from-external-load-balancers: ''"))
    wait_until(lambda: r1.routes().get(WEB) == hops(1, 1, 3) and r2.routes().get(WEB) == hops(2, 1, 3),
               timeout=30, what="both routers without node-2")  # fmt: skip
    assert r1.protocols_established() == {"node_1", "node_2", "node_3"}
    # NetworkUnavailable on node-1 as well: only node-3 is left
    (manifests / "node1.yaml").write_text(node(1, conditions="{type: NetworkUnavailable, status: 'True'}"))
    wait_until(lambda: r1.routes().get(WEB) == hops(1, 3) and r2.routes().get(WEB) == hops(2, 3),
               timeout=30, what="both routers: web from node-3 only")  # fmt: skip
    wait_until(lambda: r2.kernel().get(WEB) == hops(2, 3), timeout=10, what="router2's kernel: one next hop")
    assert LOCAL not in r1.routes() and LOCAL not in r2.routes()  # its one endpoint is on node-1


def test_an_advertisement_to_router1_never_reaches_router2(fleet: tuple[Fleet, Path]) -> None:
    cluster, manifests = fleet
    (manifests / "pool.yaml").write_text(POOL.split("---")[0] + "---\n" + advertisement("  peers: [router1]\n"))
    for n in cluster.nodes:
        cluster.start_speaker(n, manifests)
    r1, r2 = cluster.routers
    seen_at_router2: list[dict[str, set[str]]] = []

    def router1_has_it() -> bool:
        seen_at_router2.append(r2.routes())
        return r1.routes().get(WEB) == hops(1, 1, 2, 3)

    wait_until(router1_has_it, timeout=60, interval=0.2, what="router1: web from three nodes")
    for _ in range(10):  # and a while longer: nothing arrives late either
        seen_at_router2.append(r2.routes())
    assert r2.protocols_established() == {"node_1", "node_2", "node_3"}  # the sessions are up: just no route
    assert all(routes == {} for routes in seen_at_router2)


@pytest.mark.parametrize("fleet", ["bird", "frr"], indirect=True)
def test_a_node_that_dies_silently_leaves_the_ecmp_set_after_its_hold_time(fleet: tuple[Fleet, Path]) -> None:
    """No BFD here: a node cut off and killed (no Cease, no withdrawal) stays in the routers' ECMP set
    until their hold time (9 s) expires, then leaves it; the other nodes' routes are not disturbed."""
    cluster, manifests = fleet
    r1, r2 = started(cluster, manifests)
    wait_until(lambda: r1.kernel().get(WEB) == hops(1, 1, 2, 3), timeout=10, what="router1's kernel: three next hops")
    node3 = cluster.nodes[2]
    cluster.cut(node3)
    cut_at = time.monotonic()
    cluster.kill(node3)
    time.sleep(3)
    assert r1.kernel().get(WEB) == hops(1, 1, 2, 3)  # still there: nobody told the router
    wait_until(lambda: r1.kernel().get(WEB) == hops(1, 1, 2), timeout=15, interval=0.05, what="router1 drops node-3")
    gone_after = time.monotonic() - cut_at
    wait_until(lambda: r2.kernel().get(WEB) == hops(2, 1, 2), timeout=5, what="router2 drops node-3")
    print(f"node-3 left router1's ({type(r1).__name__}) ECMP set {gone_after:.2f} s after it fell silent (hold time 9 s)")
    assert 6 <= gone_after <= 12


def _restart_and_watch(cluster: Fleet, manifests: Path, router: Router, back: Callable[[], bool]) -> list[set[str] | None]:
    """Restart node-2's speaker (SIGTERM to its process group, then a new one); the router's kernel
    table for web, sampled every 0.1 s until `back()` says node-2 is back (and two seconds at least)."""
    node2 = cluster.nodes[1]
    cluster.stop_speaker(node2)
    cluster.start_speaker(node2, manifests)
    seen: list[set[str] | None] = []

    def restarted() -> bool:
        seen.append(router.kernel().get(WEB))
        return back() and len(seen) > 20

    wait_until(restarted, timeout=60, interval=0.1, what="node-2 back")
    return seen


def test_with_graceful_restart_a_restarted_node_loses_nothing(fleet: tuple[Fleet, Path]) -> None:
    """The speaker on node-2 is restarted (SIGTERM, then a new one): with graceful restart the routers
    keep its routes as stale meanwhile, so the ECMP set never loses node-2."""
    cluster, manifests = fleet
    for r in (1, 2):
        (manifests / f"peer{r}.yaml").write_text(peer(r, graceful_restart=True))
    r1, _r2 = started(cluster, manifests)
    wait_until(lambda: r1.kernel().get(WEB) == hops(1, 1, 2, 3), timeout=10, what="router1's kernel: three next hops")
    seen = _restart_and_watch(
        cluster, manifests, r1, lambda: "node_2" in r1.protocols_established() and r1.routes().get(WEB) == hops(1, 1, 2, 3)
    )
    assert all(hops_seen == hops(1, 1, 2, 3) for hops_seen in seen), [s for s in seen if s != hops(1, 1, 2, 3)][:3]


BFD_PROFILE = """apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast, namespace: metallb-system}
spec: {receiveInterval: 300, transmitInterval: 300, detectMultiplier: 3}
"""


@pytest.fixture
def bfd_fleet(short_tmp: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Fleet, Path]]:
    """The fleet with BFD at the routers (`bfd on`, or `bfd graceful` with the `bfd_graceful` marker);
    parametrized indirectly with "frr" and/or "multihop" for FRR routers and multihop sessions."""
    graceful = request.node.get_closest_marker("bfd_graceful") is not None
    variant = str(getattr(request, "param", ""))
    kind = "frr" if "frr" in variant else "bird"
    with built_fleet(short_tmp, bfd=True, bfd_graceful=graceful, multihop="multihop" in variant, router_kind=kind) as found:
        yield found


def bfd_up(router: Router, *nodes: int) -> bool:
    sessions = router.bfd_sessions()
    return all(sessions.get(f"10.{router.index}.0.{10 + n}") == "Up" for n in nodes)


def bfd_started(cluster: Fleet, manifests: Path) -> tuple[Router, Router]:
    """The speakers started, BFD up with every node at both routers, router1's kernel with three next hops."""
    r1, r2 = started(cluster, manifests)
    wait_until(lambda: bfd_up(r1, 1, 2, 3) and bfd_up(r2, 1, 2, 3), timeout=30, what="BFD up with every node")
    wait_until(lambda: r1.kernel().get(WEB) == hops(1, 1, 2, 3), timeout=10, what="router1's kernel: three next hops")
    return r1, r2


@pytest.mark.parametrize("bfd_fleet", ["bird", "frr", "bird-multihop", "frr-multihop"], indirect=True)
def test_with_bfd_a_node_that_dies_silently_leaves_the_ecmp_set_in_under_a_second(bfd_fleet: tuple[Fleet, Path]) -> None:
    """300 ms x 3 against BIRD's `protocol bfd` and FRR's bfdd, single hop (RFC 5881) and multihop
    (RFC 5883, peers with `ebgpMultiHop`): the router's kernel table drops the node in under a second,
    where without BFD it took the hold time (the test above)."""
    cluster, manifests = bfd_fleet
    r1, r2 = bfd_started(cluster, manifests)
    if isinstance(r1, FrrRouter):  # FRR says which kind of session it runs (BIRD's came up on the multihop port)
        peers = r1.vtysh("show bfd peers json")
        assert isinstance(peers, list) and {p["multihop"] for p in peers} == {cluster.multihop}
    node3 = cluster.nodes[2]
    cluster.cut(node3)
    cut_at = time.monotonic()
    cluster.kill(node3)
    wait_until(lambda: r1.kernel().get(WEB) == hops(1, 1, 2), timeout=5, interval=0.02, what="router1 drops node-3")
    gone_after = time.monotonic() - cut_at
    print(f"with BFD 300 ms x 3 ({type(r1).__name__}, multihop={cluster.multihop}), "
          f"node-3 left router1's ECMP set {gone_after:.3f} s after it fell silent")
    assert gone_after < 1.0
    wait_until(lambda: r2.kernel().get(WEB) == hops(2, 1, 2), timeout=2, what="router2 drops node-3")
    assert r1.routes()[WEB] == hops(1, 1, 2)


@pytest.mark.parametrize("bfd_fleet", ["bird", "frr"], indirect=True)
def test_bfd_does_not_flap_while_the_speaker_process_is_paused(bfd_fleet: tuple[Fleet, Path]) -> None:
    """The speaker's own interpreter stopped for 3 s (longer than any collection or reconcile): BFD runs
    in its own process, so no session goes down and the ECMP set stays whole."""
    cluster, manifests = bfd_fleet
    r1, _r2 = bfd_started(cluster, manifests)
    speaker = cluster.speakers["node-2"]
    os.kill(speaker.pid, signal.SIGSTOP)  # the speaker itself; its ExaBGP and BFD children run on
    try:
        seen = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            seen.append((r1.bfd_sessions().get("10.1.0.12"), r1.kernel().get(WEB)))
            time.sleep(0.1)
    finally:
        os.kill(speaker.pid, signal.SIGCONT)
    assert seen and all(state == "Up" and found == hops(1, 1, 2, 3) for state, found in seen), seen[:5]
    assert "node_2" in r1.protocols_established()


def _graceful_restart_peers(manifests: Path) -> None:
    for r in (1, 2):
        (manifests / f"peer{r}.yaml").write_text(peer(r, graceful_restart=True, bfd="fast"))


def test_with_bfd_a_restart_is_a_bfd_down_and_the_router_drops_the_node_for_about_a_second(bfd_fleet: tuple[Fleet, Path]) -> None:
    """What BFD down means beside graceful restart (RFC 5882 4.3), as BIRD does it by default
    (`bfd on`): a speaker that stops sends AdminDown (its BFD process outlives the SIGTERM for that),
    and BIRD takes any BFD down as a failure, so even a graceful-restart peer's routes leave the ECMP
    set until the new speaker is back, about a second later. BFD chooses failover over hitless
    restarts; the next test shows the router's other choice."""
    cluster, manifests = bfd_fleet
    _graceful_restart_peers(manifests)
    r1, _r2 = bfd_started(cluster, manifests)
    seen = _restart_and_watch(cluster, manifests, r1, lambda: bfd_up(r1, 2) and "node_2" in r1.protocols_established())
    missing = [found for found in seen if found != hops(1, 1, 2, 3)]
    assert missing and all(found == hops(1, 1, 3) for found in missing)  # only node-2, and only for a while
    assert len(missing) * 0.1 < 5
    assert seen[-1] == hops(1, 1, 2, 3)


@pytest.mark.bfd_graceful
def test_with_bfd_graceful_at_the_router_a_restart_loses_nothing(bfd_fleet: tuple[Fleet, Path]) -> None:
    """With `bfd graceful` (BIRD) a BFD down restarts the BGP session gracefully: our C bit 0 says BFD
    shares fate with the speaker, so this is the configuration for hitless speaker restarts. The price,
    said in docs/routers.md: a node that dies is then also kept until the graceful-restart time."""
    cluster, manifests = bfd_fleet
    _graceful_restart_peers(manifests)
    r1, _r2 = bfd_started(cluster, manifests)
    seen = _restart_and_watch(cluster, manifests, r1, lambda: bfd_up(r1, 2) and "node_2" in r1.protocols_established())
    assert all(found == hops(1, 1, 2, 3) for found in seen), [s for s in seen if s != hops(1, 1, 2, 3)][:3]


# --- the same fleet through the Kubernetes path -----------------------------------------------------
# One controller (on the host, through 127.0.0.1) and three `metallb-bgp speaker`s, one per node
# namespace, reaching the fake API server through a second listener the test opens inside router1's
# namespace (10.1.0.1): the path a node's API traffic takes in a real cluster.

GROUP, NS = "metallb.io", "metallb-system"


class KubeFleet:
    def __init__(self, fleet: Fleet, fake: FakeKube, directory: Path) -> None:
        self.fleet, self.fake, self.directory = fleet, fake, directory
        self.core = client.CoreV1Api(fake.client)
        self.custom = client.CustomObjectsApi(fake.client)
        self.discovery = client.DiscoveryV1Api(fake.client)
        router1 = fleet.routers[0]
        url = fake.listen_also(router1.address, entered(router1.namespace))
        self.node_kubeconfig = fake.write_kubeconfig(directory / "node-kubeconfig", server=url)
        self.controller: subprocess.Popen[bytes] | None = None

    def create(self, doc: Mapping[str, Any]) -> None:
        group, _, version = str(doc["apiVersion"]).rpartition("/")
        namespace = doc["metadata"].get("namespace", "default")
        if group == GROUP:
            plural = str(doc["kind"]).lower() + "s"
            self.custom.create_namespaced_custom_object(group, version, namespace, plural, dict(doc))
        elif doc["kind"] == "Node":
            self.core.create_node(dict(doc))
            if "status" in doc:  # status is a subresource: a create leaves it out, as the real API server does
                self.core.patch_node_status(doc["metadata"]["name"], {"status": doc["status"]})
        elif doc["kind"] == "Service":
            self.core.create_namespaced_service(namespace, dict(doc))
        else:
            self.discovery.create_namespaced_endpoint_slice(namespace, dict(doc))

    def start(self) -> None:
        log = (self.directory / "controller.log").open("ab")
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "metallb_bgp.cli", "controller", "--identity", "c1", "--log-format", "json",
             "--kubeconfig", str(self.fake.write_kubeconfig(self.directory / "kubeconfig"))],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        for n in self.fleet.nodes:
            self.fleet.start_kube_speaker(n, self.node_kubeconfig)


@pytest.fixture
def kube_fleet(short_tmp: Path, fake_kube: FakeKube) -> Iterator[KubeFleet]:
    fake_kube.register_crd(schemaless_crd(GROUP, "ConfigurationState", "configurationstates", ("v1beta1",)))
    built = Fleet(short_tmp / "fleet").create()
    kube = None
    try:
        kube = KubeFleet(built, fake_kube, short_tmp)
        yield kube
    finally:
        built.destroy()
        if kube is not None and kube.controller is not None:
            stop_child(kube.controller, sig=signal.SIGTERM, timeout=20)
        for n in built.nodes:
            print(f"--- {n.name}\n{built.log_of(n)[-3000:]}")
        if (short_tmp / "controller.log").exists():
            print(f"--- controller\n{(short_tmp / 'controller.log').read_text()[-3000:]}")


def test_through_the_kubernetes_path_three_speakers_give_the_ecmp_set_and_an_endpoint_move_moves_it(
    kube_fleet: KubeFleet,
) -> None:
    """The controller assigns, each node's speaker announces from its own Node: web (ETP Cluster) from
    all three, local (ETP Local) from node-1 only; its endpoint moves to node-3 through the API, and
    both routers' kernel tables follow (the time is printed)."""
    kube = kube_fleet
    for n in (1, 2, 3):
        kube.create(builders.node(f"node-{n}", addresses={"InternalIP": f"10.1.0.{10 + n}"}, **{"kubernetes.io/hostname": f"node-{n}"}))
    kube.create(builders.pool("pool", "198.51.100.0/28"))
    for r in (1, 2):
        kube.create(builders.metallb_object("metallb.io/v1beta2", "BGPPeer", f"router{r}", {
            "myASN": NODE_ASN, "peerASN": ROUTER_ASN_BASE + r, "peerAddress": f"10.{r}.0.1", "holdTime": "9s"}))
    kube.create(builders.advertisement("adv"))
    for name, local in (("local", True), ("web", False)):
        kube.create(builders.service(name, traffic_policy="Local" if local else "Cluster", selector={"app": name}))
        kube.create(builders.endpoint_slice(name, builders.endpoint("node-1")))
    kube.start()
    r1, r2 = kube.fleet.routers
    expected = {WEB: hops(1, 1, 2, 3), LOCAL: hops(1, 1)}
    wait_until(lambda: r1.kernel() == expected, timeout=60, what="router1's kernel: web from three nodes, local from node-1")
    wait_until(lambda: r2.kernel() == {WEB: hops(2, 1, 2, 3), LOCAL: hops(2, 1)}, timeout=20, what="router2 likewise")

    moved_at = time.monotonic()
    kube.discovery.patch_namespaced_endpoint_slice("local-abc12", "default", {"endpoints": [builders.endpoint("node-3")]})
    wait_until(lambda: r1.kernel().get(LOCAL) == hops(1, 3) and r2.kernel().get(LOCAL) == hops(2, 3),
               timeout=10, interval=0.02, what="local moved to node-3 at both routers")  # fmt: skip
    print(f"an ETP Local endpoint move through the API reached both routers' kernel tables in {time.monotonic() - moved_at:.3f} s")
    assert r1.kernel()[WEB] == hops(1, 1, 2, 3) and r2.kernel()[WEB] == hops(2, 1, 2, 3)
    assert kube.controller is not None and kube.controller.poll() is None
    assert all(process.poll() is None for process in kube.fleet.speakers.values())
