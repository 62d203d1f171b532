"""`python -m bench.status_writes [N]`: the ServiceBGPStatus writes a speaker makes at an N-service cold start.

The Kubernetes path of `bench.kube` (controller and speaker against the fake API server, one BIRD),
with the generated ServiceBGPStatus CRD served and the speaker writing its objects (the default):
requests a second to servicebgpstatuses for the first 40 s, counted in the fake server's request log.
The figure is the pacing's (20 objects a second, burst 50; a new object is two requests).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.kube import KubeRun
from bench.scenarios import ROOT

CRD = ROOT / "charts" / "metallb-bgp" / "crds" / "metallb.io_servicebgpstatuses.yaml"
SECONDS = 40


def measure(count: int) -> dict[str, object]:
    run = KubeRun(Path(tempfile.mkdtemp(prefix="mlb-status-", dir="/tmp")), count=count, local_every=50, label="status")
    run.fake.store.apply_crd(yaml.safe_load(CRD.read_text()))
    run.speaker_flags = []  # the default: ServiceBGPStatus objects on

    def writes() -> int:
        return sum(1 for r in run.fake.requests if "servicebgpstatuses" in r.path and r.method in ("POST", "PATCH", "DELETE"))

    try:
        run.start()
        totals = []
        for _ in range(SECONDS):  # bounded: SECONDS samples
            time.sleep(1)
            totals.append(writes())
        rates = [b - a for a, b in zip([0, *totals], totals, strict=False)]
        return {"count": count, "requests_per_second": rates, "max": max(rates), "total": totals[-1]}
    finally:
        run.stop()


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
    print(f"{result['count']} services: ServiceBGPStatus requests a second over {SECONDS} s: {result['requests_per_second']}")
    print(f"max {result['max']}/s, {result['total']} requests in all")
