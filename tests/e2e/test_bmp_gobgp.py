"""The BMP station against GoBGP (Debian's gobgpd, a BMP client), in network namespaces: one router,
two nodes, the station in node-1's `run`. GoBGP reports its Adj-RIB-In pre- and post-policy, so a
route its import policy rejects is reported "received, not accepted", for exactly that service, as
GoBGP's own `adj-in` and global RIB show; node-2's session is not node-1's to report and is dropped
unread; GoBGP restarted reconnects and reports the same again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from builders import service_manifest
from netns import NODE_ASN, ROUTER_ASN_BASE, Fleet, GoBgpRouter
from waiting import wait_until

pytestmark = [pytest.mark.router, pytest.mark.timeout(180)]

STATION = ("10.1.0.11", 11019)  # node-1's address on the router's link
SERVICES = {"a": "198.51.100.0", "b": "198.51.100.1", "c": "198.51.100.2"}  # allocated in name order
DENIED = "198.51.100.1/32"

MANIFESTS = f"""apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: pool, namespace: metallb-system}}
spec:
  addresses: [198.51.100.0/28]
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: adv, namespace: metallb-system}}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: router1, namespace: metallb-system}}
spec:
  myASN: {NODE_ASN}
  peerASN: {ROUTER_ASN_BASE + 1}
  peerAddress: 10.1.0.1
  holdTime: 9s
"""


def _ask(control: Path, *args: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "metallb_bgp.cli", *args, "-o", "json", "--control-socket", str(control)],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_gobgp_reports_a_route_its_import_policy_rejected_as_received_not_accepted(short_tmp: Path) -> None:
    manifests = short_tmp / "manifests"
    manifests.mkdir()
    (manifests / "config.yaml").write_text(MANIFESTS)
    for name in SERVICES:
        (manifests / f"{name}.yaml").write_text(service_manifest(name, endpoint_nodes=("node-1", "node-2")))
    fleet = Fleet(short_tmp / "fleet", node_count=2, router_count=1, router_kind="gobgp", bmp_station=STATION,
                  import_deny=(DENIED,)).create()  # fmt: skip
    router = fleet.routers[0]
    assert isinstance(router, GoBgpRouter)
    node1, node2 = fleet.nodes
    try:
        fleet.start_speaker(node1, manifests, "--bmp-listen", f"{STATION[0]}:{STATION[1]}", "--bmp-router", router.address,
                            "--bmp-late", "3s")  # fmt: skip
        fleet.start_speaker(node2, manifests)
        wait_until(lambda: len(router.received(node1.address(1))) == 3 and len(router.received(node2.address(1))) == 3,
                   timeout=60, what="GoBGP's Adj-RIB-In with the three /32s from each node")  # fmt: skip
        rib = router.routes()
        assert DENIED not in rib and {f"{ip}/32" for ip in SERVICES.values()} - {DENIED} <= set(rib)
        control = fleet.control_socket(node1)

        def verdicts() -> dict[str, dict[str, Any]] | None:
            found = {}
            for name in SERVICES:
                routes = _ask(control, "explain", f"default/{name}")["routes"]
                verdict = routes[0].get("router") if routes else None
                if not verdict or verdict["pending"] or verdict["accepted"] is None:
                    return None
                found[name] = verdict
            return found

        found = wait_until(verdicts, timeout=30, what="GoBGP's BMP report of each of node-1's routes")
        assert found["b"]["received"] is True and found["b"]["accepted"] is False
        assert "import policy rejected it" in found["b"]["reason"]
        for name in ("a", "c"):
            assert found[name]["received"] is True and found[name]["accepted"] is True, found[name]

        (report,) = _ask(control, "status")["bmp"]
        assert report["connected"] and report["address"] == router.address
        # only node-1's own session: node-2's is another speaker's to report, dropped unread
        assert report["sessions"] == [{"speaker": node1.address(1), "routerAddress": router.address, "received": 3, "accepted": 2}]
        assert report["droppedNotOurs"] > 0

        assert router.process is not None
        router.process.terminate()  # GoBGP goes away and comes back: it reconnects and resends
        router.process.wait(timeout=15)
        wait_until(lambda: not _ask(control, "status")["bmp"][0]["connected"], timeout=15, what="the station seeing GoBGP gone")
        fleet._start_gobgp(router)
        found = wait_until(verdicts, timeout=60, what="GoBGP's report again after it reconnected")
        assert [found[name]["accepted"] for name in sorted(SERVICES)] == [True, False, True]
    finally:
        fleet.destroy()
        for n in fleet.nodes:
            print(f"--- {n.name}\n{fleet.log_of(n)[-3000:]}")
        print(f"--- router\n{router.log()[-3000:]}")
