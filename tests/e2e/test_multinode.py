"""Three nodes, two routers, in network namespaces (`netns.Fleet`): what each router holds, read from
its own RIB and kernel table, as the nodes' peers and endpoints change.

The case that broke: BGPPeers without `sourceAddress` (one BGPPeer serves every node, so it cannot
name a per-node address). When one node's peers change, its ExaBGP reloads, and an unchanged neighbour
rendered with `local-address auto` refused every later `next-hop self`: an endpoint move then never
reached the other router, which kept the old next hop. Now the unchanged neighbour has an explicit
local address, and a refused update would be retried, never recorded as sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import service_manifest
from netns import NODE_ASN, ROUTER_ASN_BASE, Fleet
from waiting import wait_until

pytestmark = [pytest.mark.router, pytest.mark.timeout(240)]

LOCAL, WEB = "198.51.100.0/32", "198.51.100.1/32"  # allocated in key order: default/local first


def peer(r: int, selectors: str = "") -> str:
    return f"""apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: router{r}, namespace: metallb-system}}
spec:
  myASN: {NODE_ASN}
  peerASN: {ROUTER_ASN_BASE + r}
  peerAddress: 10.{r}.0.1
  holdTime: 9s
{selectors}"""


def node(n: int) -> str:
    return f"""apiVersion: v1
kind: Node
metadata:
  name: node-{n}
  labels: {{kubernetes.io/hostname: node-{n}}}
status:
  addresses: [{{type: InternalIP, address: 10.1.0.{10 + n}}}]
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


@pytest.fixture
def fleet(short_tmp: Path) -> Iterator[tuple[Fleet, Path]]:
    manifests = short_tmp / "manifests"
    manifests.mkdir()
    (manifests / "pool.yaml").write_text(POOL)
    for r in (1, 2):
        (manifests / f"peer{r}.yaml").write_text(peer(r))
    for n in (1, 2, 3):
        (manifests / f"node{n}.yaml").write_text(node(n))
    (manifests / "web.yaml").write_text(service("web", "Cluster", ["node-1"]))
    (manifests / "local.yaml").write_text(service("local", "Local", ["node-1"]))
    built = Fleet(short_tmp / "fleet").create()
    try:
        yield built, manifests
    finally:
        built.destroy()
        for n in built.nodes:
            print(f"--- {n.name}\n{built.log_of(n)[-3000:]}")


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
