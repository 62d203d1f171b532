"""The BMP station in `run`, against real routers: FRR's bgpd with its BMP module (`-M bmp`) on
loopback. What the router itself reports (pre- and post-policy) reaches `metallb-bgp explain` and
`status` and the metrics, and agrees with the router's own RIB (`vtysh`): an import policy that drops
one /32 makes exactly that service "received, not accepted"; a router that disconnects loses its
report, and gives it back when it reconnects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from builders import service_manifest
from frr import FrrRouter
from runs import ADVERTISEMENT, POOL, SPEAKER, Run, free_peer_port, router_peer
from waiting import wait_until

pytestmark = pytest.mark.router

SERVICES = ("web", "db", "api")  # 198.51.100.0, .1 and .2 (allocated in name order: api, db, web)


def _ask(run: Run, *args: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "metallb_bgp.cli", *args, "-o", "json", "--control-socket", str(run.control)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _router_of(run: Run, service: str) -> dict[str, Any] | None:
    routes = _ask(run, "explain", f"default/{service}")["routes"]
    return routes[0].get("router") if routes else None


def _start(directory: Path, router: FrrRouter, station_port: int, *extra: str) -> Run:
    manifests = directory / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "pool.yaml").write_text(POOL)
    (manifests / "peer.yaml").write_text(router_peer(router.port))
    (manifests / "adv.yaml").write_text(ADVERTISEMENT.format(community="64500:1"))
    for name in SERVICES:
        (manifests / f"{name}.yaml").write_text(service_manifest(name, endpoint_node="node-a"))
    return Run(manifests, directory / "run", directory / "state.json", "--bmp-listen", f"127.0.0.1:{station_port}",
               "--bmp-router", "127.0.0.1", "--bmp-late", "3s", *extra)  # fmt: skip


def test_frr_reports_over_bmp_what_its_import_policy_accepted_and_explain_agrees_with_its_rib(short_tmp: Path) -> None:
    station = free_peer_port()
    router = FrrRouter(short_tmp / "frr", asn=64501, allow_martian=True, port=free_peer_port(),
                       bmp_station=("127.0.0.1", station), import_deny=("198.51.100.1/32",))  # fmt: skip
    router.add_neighbor(SPEAKER, 64500).start()
    run = _start(short_tmp, router, station)
    try:
        rib = wait_until(lambda: sorted(router.routes()) if len(router.routes()) == 2 else None, timeout=30,
                         what="the two /32s FRR's policy lets in")  # fmt: skip
        ips = {name: _ask(run, "explain", f"default/{name}")["ips"][0] for name in SERVICES}
        accepted = {name for name, ip in ips.items() if f"{ip}/32" in rib}
        assert len(accepted) == 2 and ips[next(iter(set(SERVICES) - accepted))] == "198.51.100.1"

        def verdicts() -> dict[str, dict[str, Any]] | None:
            found = {name: _router_of(run, name) for name in SERVICES}
            return found if all(v and v["accepted"] is not None and not v["pending"] for v in found.values()) else None

        found = wait_until(verdicts, timeout=20, what="FRR's BMP report of each route")
        for name in SERVICES:
            assert found[name]["router"] == "test-frr"  # its sysName, from the Initiation message
            assert found[name]["accepted"] is (name in accepted), (name, found[name])
        dropped = found[next(iter(set(SERVICES) - accepted))]
        # FRR 8.4 reports a route its import policy rejected pre-policy or not, depending on whether the
        # route or the BMP connection came first (seen both ways here, soft-reconfiguration inbound on):
        # "not accepted" it always says; GoBGP says "received, not accepted" every time (test_bmp_gobgp)
        assert dropped["accepted"] is False
        assert ("import policy rejected it" if dropped["received"] else "does not have it") in dropped["reason"]
        for name in accepted:
            assert found[name]["received"] is True and "accepted it" in found[name]["reason"]

        status = _ask(run, "status")
        (report,) = status["bmp"]
        assert report["connected"] and report["sysName"] == "test-frr"
        received = 3 if dropped["received"] else 2  # FRR's pre-policy stream, either way (above)
        assert report["sessions"] == [{"speaker": SPEAKER, "routerAddress": "127.0.0.1", "received": received, "accepted": 2}]

        table = subprocess.run([sys.executable, "-m", "metallb_bgp.cli", "explain", "default/db", "--control-socket",
                                str(run.control)], capture_output=True, text=True, timeout=30).stdout  # fmt: skip
        assert "ROUTER (BMP)" in table and "not accepted" in table

        router.stop()  # the router goes away: its report with it, never a stale "accepted"
        gone = wait_until(lambda: (v := _router_of(run, "web")) and v["accepted"] is None and v, timeout=20,
                          what="the report gone with the router")  # fmt: skip
        assert "has not connected" in gone["reason"] or "not reported" in gone["reason"]
        assert _ask(run, "status")["bmp"][0]["connected"] is False

        router.start()  # it comes back, reconnects and resends its table
        wait_until(verdicts, timeout=30, what="the report back after the router's reconnection")
        assert {name for name in SERVICES if _router_of(run, name)["accepted"]} == accepted
    finally:
        run.stop()
        router.stop()
        print(run.log_path.read_text()[-3000:])


def test_a_station_that_cannot_listen_is_logged_and_the_routes_still_go_out(short_tmp: Path, bird_factory) -> None:  # type: ignore[no-untyped-def]
    """The BMP address taken by another program: `run` says so and announces as without a station."""
    import socket

    from bird import Speaker

    router = bird_factory(asn=64501, port=free_peer_port())
    router.add_speaker(Speaker(name="speaker", address=SPEAKER, asn=64500)).start()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        manifests = short_tmp / "manifests"
        manifests.mkdir()
        (manifests / "pool.yaml").write_text(POOL)
        (manifests / "peer.yaml").write_text(router_peer(router.port))
        (manifests / "adv.yaml").write_text(ADVERTISEMENT.format(community="64500:1"))
        (manifests / "web.yaml").write_text(service_manifest("web", endpoint_node="node-a"))
        run = Run(manifests, short_tmp / "run", short_tmp / "state.json", "--bmp-listen",
                  f"127.0.0.1:{taken.getsockname()[1]}", "--bmp-router", "127.0.0.1")  # fmt: skip
        try:
            router.wait_routes(lambda routes: len(routes) == 1, what="web's /32 at BIRD")
            assert [e for e in run.events() if e["event"] == "bmp_station_not_listening"]
            assert "bmp" not in _ask(run, "status")
        finally:
            run.stop()
