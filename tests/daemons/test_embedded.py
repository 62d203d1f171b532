"""`metallb-bgp run` on a folder of manifests, as a user runs it: the real CLI as a child process, a real
ExaBGP child, a real BIRD 2, and checks on the router's own RIB."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import builders
import pytest
from bird import BirdRouter, Speaker
from builders import service_manifest
from runs import ADVERTISEMENT, POOL, SPEAKER, Run, free_peer_port, router_peer
from waiting import wait_until

pytestmark = pytest.mark.router







def service(name: str, node: str = "node-a") -> str:
    return service_manifest(name, endpoint_node=node)




@pytest.fixture
def cluster(short_tmp: Path, bird_factory: Callable[..., BirdRouter]) -> Iterator[tuple[BirdRouter, Path, Callable[[], Run]]]:
    router = bird_factory(asn=64501, port=free_peer_port())
    router.add_speaker(Speaker(name="speaker", address=SPEAKER, asn=64500)).start()
    manifests = short_tmp / "manifests"
    manifests.mkdir()
    (manifests / "pool.yaml").write_text(POOL)
    (manifests / "peer.yaml").write_text(router_peer(router.port))
    (manifests / "adv.yaml").write_text(ADVERTISEMENT.format(community="64500:1"))
    runs: list[Run] = []

    def start() -> Run:
        run = Run(manifests, short_tmp / f"run{len(runs)}", short_tmp / "state.json")
        runs.append(run)
        return run

    try:
        yield router, manifests, start
    finally:
        for run in runs:
            run.stop()
            print(f"--- {run.log_path.name}\n{run.log_path.read_text()[-4000:]}")  # shown when a test fails




def host(text: str) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(text)


def test_service_file_added_is_announced_and_deleting_it_withdraws(cluster) -> None:
    router, manifests, start = cluster
    run = start()
    router.wait_established("speaker")
    (manifests / "web.yaml").write_text(service("web"))
    routes = router.wait_routes(lambda r: host("198.51.100.0/32") in r, what="web's /32")
    assert routes[host("198.51.100.0/32")].communities == ("64500:1",)
    (manifests / "web.yaml").unlink()
    wait_until(lambda: not router.routes(), what="web's withdrawal")
    assert run.process.poll() is None


def test_editing_an_advertisement_changes_the_community_without_resetting_the_session(cluster) -> None:
    router, manifests, start = cluster
    (manifests / "web.yaml").write_text(service("web"))
    start()
    router.wait_routes(lambda r: host("198.51.100.0/32") in r, what="web's /32")
    since = router.wait_established("speaker").since
    (manifests / "adv.yaml").write_text(ADVERTISEMENT.format(community="64500:2"))
    router.wait_routes(lambda r: r[host("198.51.100.0/32")].communities == ("64500:2",), what="new community")
    assert router.protocol("speaker").since == since


def test_malformed_file_is_reported_and_every_route_stays(cluster) -> None:
    router, manifests, start = cluster
    (manifests / "web.yaml").write_text(service("web"))
    (manifests / "api.yaml").write_text(service("api"))
    run = start()
    router.wait_routes(lambda r: len(r) == 2, what="two service routes")
    (manifests / "web.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web\n")  # broken YAML
    wait_until(
        lambda: any(e.get("event") == "config_problem" and "web.yaml" in e.get("object", "") for e in run.events()),
        what="the broken file reported",
    )
    (manifests / "api.yaml").write_text(service("api").replace("port: 80", "port: 8080"))  # others keep working
    wait_until(lambda: sum(1 for e in run.events() if e.get("event") == "reconciled") >= 3, what="later reconciles")
    assert set(router.routes()) == {host("198.51.100.0/32"), host("198.51.100.1/32")}
    problem = next(e for e in run.events() if e.get("event") == "config_problem")
    assert "line" in problem["field"] and "invalid YAML" in problem["message"]


def test_assignments_survive_a_restart_through_the_state_file(cluster) -> None:
    router, manifests, start = cluster
    (manifests / "a.yaml").write_text(service("a"))
    (manifests / "b.yaml").write_text(service("b"))
    first = start()
    router.wait_routes(lambda r: len(r) == 2, what="two routes")
    assert first.stop() == 0
    (manifests / "a.yaml").unlink()  # without memory, b would now take the lowest free address
    start()
    routes = router.wait_routes(lambda r: len(r) == 1, what="b's route after restart")
    assert set(routes) == {host("198.51.100.1/32")}


def test_sigterm_withdraws_stops_cleanly_and_leaves_no_process_behind(cluster) -> None:
    router, manifests, start = cluster
    (manifests / "web.yaml").write_text(service("web"))
    run = start()
    router.wait_routes(lambda r: host("198.51.100.0/32") in r, what="web's /32")
    children = wait_until(run.children, what="the ExaBGP child")
    assert run.stop() == 0
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")]
    # no graceful restart here: the router must not keep the route until its hold time (9 s) expires
    assert router.routes() == {}


def advertisement(**spec: object) -> str:
    return builders.advertisement("adv", **spec).yaml


def test_aggregation_announces_the_covering_prefix_once(cluster) -> None:
    router, manifests, start = cluster
    (manifests / "adv.yaml").write_text(advertisement(aggregationLength=28))
    (manifests / "a.yaml").write_text(service("a"))
    (manifests / "b.yaml").write_text(service("b"))
    start()
    router.wait_established("speaker")
    wait_until(lambda: set(router.routes()) == {host("198.51.100.0/28")}, what="one /28 for both services")
    (manifests / "a.yaml").unlink()  # b still stands behind the aggregate
    (manifests / "b.yaml").write_text(service("b").replace("port: 80", "port: 81"))
    wait_until(lambda: router.routes() and set(router.routes()) == {host("198.51.100.0/28")}, what="the /28 kept")
    (manifests / "b.yaml").unlink()
    wait_until(lambda: not router.routes(), what="the /28 withdrawn with its last service")


def test_etp_local_withdraws_when_the_last_local_endpoint_stops_serving(cluster) -> None:
    router, manifests, start = cluster
    local = service_manifest("web", local=True)
    (manifests / "web.yaml").write_text(local)
    start()
    router.wait_routes(lambda r: host("198.51.100.0/32") in r, what="web's /32 (serving endpoint on this node)")
    terminating_but_serving = local.replace("conditions: {ready: true}",
                                            "conditions: {ready: false, serving: true, terminating: true}")
    (manifests / "web.yaml").write_text(terminating_but_serving)
    (manifests / "poke.yaml").write_text(service("poke"))  # a later change proves the edit was processed
    router.wait_routes(lambda r: host("198.51.100.1/32") in r, what="the later service")
    assert host("198.51.100.0/32") in router.routes()  # terminating but still serving keeps the route
    (manifests / "web.yaml").write_text(local.replace("nodeName: node-a", "nodeName: node-b"))
    wait_until(lambda: host("198.51.100.0/32") not in router.routes(), what="withdrawal: no local endpoint")


def test_advertisement_peers_sends_the_route_to_the_named_peer_only(cluster, bird_factory) -> None:
    router, manifests, start = cluster
    other = bird_factory("other", asn=64502, port=free_peer_port())
    other.add_speaker(Speaker(name="speaker", address=SPEAKER, asn=64500)).start()
    (manifests / "peer2.yaml").write_text(
        router_peer(other.port).replace("name: router", "name: other").replace("peerASN: 64501", "peerASN: 64502")
    )
    (manifests / "adv.yaml").write_text(advertisement(peers=["other"]))
    (manifests / "web.yaml").write_text(service("web"))
    start()
    router.wait_established("speaker")
    other.wait_routes(lambda r: host("198.51.100.0/32") in r, what="the route at the named peer")
    assert router.routes() == {}


def test_an_edit_that_makes_a_pool_overlap_another_keeps_every_route(cluster) -> None:
    router, manifests, start = cluster
    (manifests / "pool-z.yaml").write_text(POOL.replace("name: pool", "name: z").replace("198.51.100.0/28", "203.0.113.0/28"))
    (manifests / "web.yaml").write_text(
        service("web").replace("metadata: {name: web, namespace: default}",
                               "metadata: {name: web, namespace: default, annotations: {metallb.io/address-pool: z}}")
    )
    run = start()
    router.wait_routes(lambda r: host("203.0.113.0/32") in r, what="web's /32 from pool z")
    (manifests / "pool.yaml").write_text(POOL.replace("198.51.100.0/28", "203.0.113.0/27"))  # now overlaps z
    wait_until(
        lambda: any(e.get("event") == "config_problem" and "overlaps" in e.get("message", "") for e in run.events()),
        what="the overlap reported",
    )
    problem = next(e for e in run.events() if e.get("event") == "config_problem" and "overlaps" in e.get("message", ""))
    assert problem["object"] == "IPAddressPool metallb-system/pool"  # the edited pool, not the untouched one
    (manifests / "poke.yaml").write_text(service("poke"))  # a later change proves the loop moved on
    wait_until(lambda: len(router.routes()) == 2, what="the later service announced")
    assert host("203.0.113.0/32") in router.routes()
    assert not any(e.get("event") == "ip_released" for e in run.events())


DUAL_STACK_POOL = """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool, namespace: metallb-system}
spec:
  addresses: [198.51.100.0/28, 2001:db8:5::/124]
"""


def dual_stack_service(name: str) -> str:
    return service(name).replace(
        "  ports: [{port: 80}]", "  ports: [{port: 80}]\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]"
    )


def node_with(*addresses: str) -> str:
    entries = ", ".join(f"{{type: InternalIP, address: '{a}'}}" for a in addresses)
    return f"apiVersion: v1\nkind: Node\nmetadata: {{name: node-a}}\nstatus: {{addresses: [{entries}]}}\n"


def test_a_dual_stack_session_carries_the_other_family_with_the_nodes_own_address(cluster) -> None:
    router, manifests, start = cluster
    (manifests / "pool.yaml").write_text(DUAL_STACK_POOL)
    (manifests / "peer.yaml").write_text(router_peer(router.port) + "  dualStackAddressFamily: true\n")
    (manifests / "node.yaml").write_text(node_with(SPEAKER, "2001:db8:ff::2"))
    (manifests / "web.yaml").write_text(dual_stack_service("web"))
    start()
    v4, v6 = host("198.51.100.0/32"), ipaddress.ip_network("2001:db8:5::/128")
    router.wait_routes(lambda r: {v4, v6} <= set(r), what="both families over the one IPv4 session")
    assert router.routes()[v6].next_hop == "2001:db8:ff::2"


def test_a_dual_stack_sessions_other_family_follows_the_nodes_address_as_it_changes(cluster) -> None:
    """The Node's IPv6 address changes, goes away and comes back while `run` runs: the IPv6 route moves
    to the new next hop, is withdrawn (with a warning) and announced again; the IPv4 route never moves."""
    router, manifests, start = cluster
    (manifests / "pool.yaml").write_text(DUAL_STACK_POOL)
    (manifests / "peer.yaml").write_text(router_peer(router.port) + "  dualStackAddressFamily: true\n")
    (manifests / "node.yaml").write_text(node_with(SPEAKER, "2001:db8:ff::2"))
    (manifests / "web.yaml").write_text(dual_stack_service("web"))
    (manifests / "api.yaml").write_text(dual_stack_service("api"))
    run = start()
    v4 = {host("198.51.100.0/32"), host("198.51.100.1/32")}
    v6 = {ipaddress.ip_network("2001:db8:5::/128"), ipaddress.ip_network("2001:db8:5::1/128")}
    router.wait_routes(lambda r: v4 | v6 <= set(r), what="both services in both families")

    def v6_hops() -> set[str | None]:
        routes = router.routes()
        return {routes[prefix].next_hop for prefix in v6 if prefix in routes}

    (manifests / "node.yaml").write_text(node_with(SPEAKER, "2001:db8:ff::9"))
    wait_until(lambda: v6_hops() == {"2001:db8:ff::9"} and v4 <= set(router.routes()), what="the new IPv6 next hop")

    (manifests / "node.yaml").write_text(node_with(SPEAKER))
    router.wait_routes(lambda r: not v6 & set(r), what="the IPv6 routes withdrawn")
    assert v4 <= set(router.routes())
    wait_until(lambda: [e for e in run.events() if e.get("event") == "dual_stack_next_hop_missing"], what="the warning")

    (manifests / "web.yaml").write_text(dual_stack_service("web").replace("port: 80", "port: 81"))  # moves on meanwhile
    (manifests / "node.yaml").write_text(node_with(SPEAKER, "2001:db8:ff::2"))
    wait_until(lambda: v6_hops() == {"2001:db8:ff::2"} and len(v6_hops()) == 1 and v6 <= set(router.routes()),
               what="the IPv6 routes back with the node's address")  # fmt: skip
    assert set(router.routes()) == v4 | v6
    moved = [e for e in run.events() if e.get("event") == "next_hops_changed"]
    assert [(e["announced_again"], e["withdrawn"]) for e in moved][:2] == [(2, 0), (0, 2)]


def test_a_dual_stack_peer_without_a_node_address_of_the_other_family_is_warned_about(cluster) -> None:
    router, manifests, start = cluster
    (manifests / "pool.yaml").write_text(DUAL_STACK_POOL)
    (manifests / "peer.yaml").write_text(router_peer(router.port) + "  dualStackAddressFamily: true\n")
    (manifests / "node.yaml").write_text(node_with(SPEAKER))
    (manifests / "web.yaml").write_text(dual_stack_service("web"))
    run = start()
    router.wait_routes(lambda r: host("198.51.100.0/32") in r, what="the IPv4 route")
    warnings = [e for e in run.events() if e.get("event") == "dual_stack_next_hop_missing"]
    assert warnings and warnings[0]["peer"] == "router" and "Node node-a has no IPv6" in warnings[0]["message"]
    assert all(prefix.version == 4 for prefix in router.routes())


def test_local_asn_is_the_as_the_router_sees_on_the_session_and_in_the_path(
    short_tmp: Path, bird_factory: Callable[..., BirdRouter]
) -> None:
    """MetalLB's FRR modes present localASN with `local-as X no-prepend replace-as`: the router peers
    with X and sees X alone in the AS path, never myASN."""
    router = bird_factory(asn=64501, port=free_peer_port())
    router.add_speaker(Speaker(name="speaker", address=SPEAKER, asn=64999)).start()
    run = _run_with_local_asn(short_tmp, router.port, 64999)
    try:
        routes = router.wait_routes(lambda r: host("198.51.100.0/32") in r, what="web's /32")
        assert routes[host("198.51.100.0/32")].as_path == (64999,)
    finally:
        run.stop()


def test_local_asn_is_what_frr_sees_too(short_tmp: Path) -> None:
    """The same on FRR, whose `local-as X no-prepend replace-as` is what MetalLB's FRR modes render."""
    from frr import FrrRouter

    router = FrrRouter(short_tmp / "frr", asn=64501, allow_martian=True, port=free_peer_port())
    router.add_neighbor(SPEAKER, 64999).start()
    run = _run_with_local_asn(short_tmp, router.port, 64999)
    try:
        routes = wait_until(lambda: router.routes().get("198.51.100.0/32"), timeout=20, what="web's /32 at FRR")
        assert [path["path"] for path in routes] == ["64999"]
    finally:
        run.stop()
        router.stop()


def _run_with_local_asn(directory: Path, router_port: int, local_asn: int) -> Run:
    """`run` on a pool, one web service and a peer (myASN 64500) that presents `local_asn`."""
    manifests = directory / "manifests"
    manifests.mkdir()
    (manifests / "pool.yaml").write_text(POOL)
    (manifests / "peer.yaml").write_text(router_peer(router_port) + f"  localASN: {local_asn}\n")
    (manifests / "adv.yaml").write_text(ADVERTISEMENT.format(community="64500:1"))
    (manifests / "web.yaml").write_text(service("web"))
    return Run(manifests, directory / "run", directory / "state.json")



def _inspect(run: Run, *args: str) -> tuple[int, str]:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "metallb_bgp.cli", *args, "--control-socket", str(run.control)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def test_status_and_explain_ask_the_running_daemon_and_agree_with_the_routers_rib(cluster) -> None:
    """`metallb-bgp status` / `explain` over the control socket (0600 in a 0700 folder): the session,
    what is announced and acknowledged, why a service is not announced, as the router's RIB shows it;
    and the session going down at the router turns `advertised` off."""
    import json

    router, manifests, start = cluster
    (manifests / "web.yaml").write_text(service("web"))
    (manifests / "local.yaml").write_text(service_manifest("local", local=True, endpoint_node="node-b"))
    run = start()
    router.wait_routes(lambda r: host("198.51.100.1/32") in r, what="web's /32")  # local is 198.51.100.0, not announced
    assert oct(run.control.stat().st_mode & 0o777) == "0o600" and oct(run.control.parent.stat().st_mode & 0o777) == "0o700"

    def explained(name: str) -> dict:
        code, out = _inspect(run, "explain", f"default/{name}", "-o", "json")
        assert code in (0, 1), out
        return json.loads(out)

    wait_until(lambda: explained("web")["routes"] and explained("web")["routes"][0]["advertised"], what="web advertised")
    web = explained("web")
    assert (web["found"], web["announced"], web["ips"], web["pool"]) == (True, True, ["198.51.100.1"], "pool")
    (route,) = web["routes"]
    at_router = router.routes()[host("198.51.100.1/32")]
    assert (route["peer"], route["prefix"], route["session"]) == ("router", "198.51.100.1/32", "established")
    assert tuple(route["communities"]) == at_router.communities == ("64500:1",)
    assert [a["name"] for a in web["advertisements"] if a["appliesToNode"] and a["selectsService"]] == ["adv"]
    local = explained("local")
    assert (local["announced"], local["routes"]) == (False, []) and "endpoint" in local["reason"]
    assert host("198.51.100.0/32") not in router.routes()
    code, out = _inspect(run, "explain", "default/nope", "-o", "json")
    assert code == 1 and json.loads(out)["found"] is False

    code, out = _inspect(run, "status", "-o", "json")
    status = json.loads(out)
    assert code == 0 and status["mode"] == "embedded" and status["node"] == "node-a"
    (peer,) = status["peers"]
    assert (peer["name"], peer["state"], peer["announced"], peer["pending"]) == ("router", "established", len(router.routes()), 0)
    assert status["exabgp"]["pid"] in run.children() and status["servicesNotAnnounced"] == {"noEndpoints": 1}
    code, table = _inspect(run, "status")
    assert code == 0 and "PEER" in table and "established" in table.splitlines()[2]

    router.birdc("disable", "speaker")
    wait_until(lambda: not explained("web")["routes"][0]["advertised"], what="advertised off with the session down")
    assert explained("web")["routes"][0]["session"] != "established"
    code, table = _inspect(run, "explain", "web")
    assert code == 0 and "ADVERTISED" in table and " no " in table
