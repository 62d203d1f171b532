"""`python -m bench.bfd_soak [SECONDS]`: BFD false positives under load, as root.

The multi-node topology of the tests (tests/netns.py: two BIRD routers with `protocol bfd` at
300 ms x 3, three node namespaces, one `metallb-bgp run` per node) runs for SECONDS (default 120)
while the speakers are kept busy: an ETP Local endpoint moves between nodes every 0.2 s, and every
5 s 200 services appear in one file or go. BIRD's BFD sessions are sampled every 0.2 s; the figure is
how often one was not Up, and how many state changes there were (a healthy run: none).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "e2e")]

import test_multinode as topology  # noqa: E402  (the tests' topology and manifests, one for both)
from builders import service_manifest  # noqa: E402
from netns import Fleet  # noqa: E402


def soak(seconds: float) -> dict[str, int]:
    directory = Path(tempfile.mkdtemp(prefix="mlb-soak-", dir="/tmp"))
    with topology.built_fleet(directory, bfd=True) as (fleet, manifests):
        return _churn(fleet, manifests, seconds)


def _churn(fleet: Fleet, manifests: Path, seconds: float) -> dict[str, int]:
    counts = {"samples": 0, "not_up": 0, "changes": 0, "manifest_changes": 0}
    # room for the 200 services of the bursts
    (manifests / "pool.yaml").write_text(topology.POOL.replace("198.51.100.0/28", "198.51.100.0/22"))
    for node in fleet.nodes:
        fleet.start_speaker(node, manifests)
    deadline = time.monotonic() + 30
    while not all(topology.bfd_up(router, 1, 2, 3) for router in fleet.routers):
        if time.monotonic() > deadline:
            raise RuntimeError(f"BFD did not come up: {[r.bfd_sessions() for r in fleet.routers]}")
        time.sleep(0.5)
    last = {router.index: router.bfd_sessions() for router in fleet.routers}
    started, step = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        step += 1
        big = manifests / "big.yaml"
        if step % 25 == 0:
            if big.exists():
                big.unlink()
            else:
                nodes = ("node-1", "node-2", "node-3")
                big.write_text("---\n".join(service_manifest(f"s{k}", endpoint_nodes=nodes) for k in range(200)))
        else:
            (manifests / "local.yaml").write_text(topology.service("local", "Local", [f"node-{1 + step % 3}"]))
        counts["manifest_changes"] += 1
        for router in fleet.routers:
            now = router.bfd_sessions()
            counts["samples"] += 1
            counts["not_up"] += sum(1 for state in now.values() if state != "Up")
            counts["changes"] += sum(1 for address, state in now.items() if last[router.index].get(address) != state)
            last[router.index] = now
        time.sleep(0.2)
    return counts


if __name__ == "__main__":
    length = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
    found = soak(length)
    print(f"BFD soak, {length:.0f} s, 2 routers x 3 nodes at 300 ms x 3: {found['samples']} samples, "
          f"{found['not_up']} not Up, {found['changes']} state changes, {found['manifest_changes']} manifest changes")  # fmt: skip
