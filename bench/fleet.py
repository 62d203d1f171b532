"""Three nodes converging: `python -m bench.fleet [N,N...]` (root), and a section of `make bench`.

The tests' multi-node topology (tests/netns.py: two BIRD routers with `merge paths on`, three node
namespaces, one `metallb-bgp run` per node, all reading one manifests folder) with N ETP Cluster
services in one file. Figures per N:
- convergence: seconds from starting the three speakers at once to both routers holding N networks
  with three paths each (every node announces every service), read on BIRD's control socket; beside
  the raw ExaBGP baseline (bench.baseline_child: one process, one router, N routes) for the same N in
  the same run, and the ratio. Three speakers share the machine's two cores here, and each router
  takes three full tables: the ratio says what a fleet costs over one node on this hardware;
- endpoint moves through three nodes at N: an ETP Local service's endpoint moved to the next node by
  a file write, timed until both routers' RIBs show only the new node as next hop (p50/p99 ms).
Every wait is bounded; the fleet removes its namespaces and processes when it ends.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "e2e")]

import test_multinode as topology  # noqa: E402  (the tests' topology and manifests, one for both)
from builders import service_manifest  # noqa: E402
from netns import Fleet, Router  # noqa: E402

from bench.bird_control import BirdControl  # noqa: E402
from bench.cluster import POOL_CIDR, service_name  # noqa: E402
from bench.scenarios import BaselineRun, Latencies, wait_for  # noqa: E402

MOVES = 20  # endpoint-move samples per N
_TOTALS = re.compile(rb"Total: (\d+) of \d+ routes for (\d+) networks")
_VIA = re.compile(rb"via (\d+\.\d+\.\d+\.\d+)")


def _counts(control: BirdControl) -> tuple[int, int]:
    """(paths, networks) in BIRD's master table."""
    _code, reply = control.command("show route count")
    match = _TOTALS.search(reply)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _next_hops(control: BirdControl, prefix: str) -> set[str]:
    _code, reply = control.command(f"show route {prefix}")
    return {hop.decode() for hop in _VIA.findall(reply)}


def _memory(control: BirdControl) -> dict[str, str]:
    """BIRD's own account (`show memory`): its routing tables and the total, as it prints them."""
    _code, reply = control.command("show memory")
    found = {}
    for line in reply.decode(errors="replace").splitlines():
        name, _, rest = line.partition(":")
        name = name.strip().lstrip("0123456789- ").strip()
        if name in ("Routing tables", "Route attributes", "Total"):
            found[name] = " ".join(rest.split()[:2])
    return found


def _manifests(directory: Path, count: int) -> Path:
    manifests = directory / "manifests"
    manifests.mkdir()
    (manifests / "pool.yaml").write_text(topology.POOL.replace("198.51.100.0/28", f"198.51.100.0/28, {POOL_CIDR}"))
    for r in (1, 2):
        (manifests / f"peer{r}.yaml").write_text(topology.peer(r))
    for n in (1, 2, 3):
        (manifests / f"node{n}.yaml").write_text(topology.node(n))
    (manifests / "local.yaml").write_text(topology.service("local", "Local", ["node-1"]))  # 198.51.100.0
    services = "---\n".join(service_manifest(service_name(i), endpoint_node="node-1") for i in range(count))
    (manifests / "services.yaml").write_text(services)
    return manifests


def converge(count: int, log: Callable[[str], None], timeout: float = 600) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="mlb-fleet-", dir="/tmp"))
    manifests = _manifests(directory, count)
    fleet = Fleet(directory / "fleet").create()
    controls = [BirdControl(router.control) for router in fleet.routers]
    try:
        started = time.perf_counter()
        for node in fleet.nodes:
            fleet.start_speaker(node, manifests)
        want = (3 * count + 1, count + 1)  # three paths per service, local from node-1 only

        def converged() -> bool:
            for node in fleet.nodes:
                if fleet.speakers[node.name].poll() is not None:
                    raise RuntimeError(f"{node.name}'s speaker exited: {fleet.log_of(node)[-2000:]}")
            return all(_counts(control) == want for control in controls)

        at = wait_for(converged, timeout=timeout, interval=0.02, what=f"{count} services from three nodes at both routers")
        seconds = round(at - started, 3)
        memory = _memory(controls[0])
        log(f"   three nodes -> both routers hold {count} services x 3 paths in {seconds}s; BIRD's memory {memory}")
        moves = _moves(fleet, manifests, controls, log)
        return {"count": count, "converge_s": seconds, "router_memory": memory, "endpoint_move": moves}
    finally:
        for control in controls:
            control.close()
        fleet.destroy()


def _moves(fleet: Fleet, manifests: Path, controls: list[BirdControl], log: Callable[[str], None]) -> dict[str, Any]:
    samples = Latencies("etp_local_move_three_nodes")
    routers: list[Router] = fleet.routers
    for step in range(MOVES):
        n = 1 + (step + 1) % 3

        def moved(n: int = n) -> float:
            written = time.perf_counter()
            (manifests / "local.yaml").write_text(topology.service("local", "Local", [f"node-{n}"]))
            expected = [{f"10.{router.index}.0.{10 + n}"} for router in routers]
            at = wait_for(lambda: [_next_hops(c, topology.LOCAL) for c in controls] == expected,
                          timeout=10, interval=0.001, what=f"local's next hop at node-{n} on both routers")  # fmt: skip
            return (at - written) * 1000

        samples.take(moved, log)
    summary = samples.summary()
    log(f"   ETP Local endpoint move through three nodes, file write -> both routers: {summary}")
    return summary


def measure(counts: list[int], log: Callable[[str], None], baseline: bool = True) -> list[dict[str, Any]]:
    found = []
    for count in counts:
        entry: dict[str, Any] = {}
        if baseline:
            directory = Path(tempfile.mkdtemp(prefix="mlb-fleet-base-", dir="/tmp"))
            entry["baseline_s"] = BaselineRun(directory, count=count, label="baseline").run().start_to_routes_s
            log(f"-- fleet {count}: raw ExaBGP baseline (one node, one router) {entry['baseline_s']}s")
        entry.update(converge(count, log))
        if "baseline_s" in entry:
            entry["ratio_to_baseline"] = round(entry["converge_s"] / entry["baseline_s"], 2)
        found.append(entry)
    return found


def main() -> int:
    counts = [int(c) for c in (sys.argv[1] if len(sys.argv) > 1 else "1000,10000").split(",") if c]
    for entry in measure(counts, print):
        move = entry["endpoint_move"]
        print(f"{entry['count']:>7} services: three nodes converge in {entry['converge_s']:.2f}s "
              f"({entry.get('ratio_to_baseline', '?')}x the raw baseline {entry.get('baseline_s', '?')}s); "
              f"endpoint move p50 {move.get('p50_ms')} ms, p99 {move.get('p99_ms')} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
