"""`make demo`: metallb-bgp on the examples/ folder, announcing to a real BIRD 2 router on loopback.

1. starts BIRD 2 on 127.0.0.1 port 1790 (AS 64501), expecting our speaker from 127.0.0.2 (AS 64500);
2. runs `metallb-bgp run --manifests <copy of examples/> --node demo-node` as a child process;
3. shows the router's own view (`birdc show route all`): the nginx service's /32 with its communities
   and local preference;
4. deletes the Service's manifest, shows the withdrawal at the router, and stops everything.

The router is driven by the same harness the tests use (tests/bird.py), so the demo shows exactly what
the tests check.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bird import BirdRouter, Speaker  # noqa: E402

ROUTER_ADDRESS, ROUTER_PORT, SPEAKER_ADDRESS = "127.0.0.1", 1790, "127.0.0.2"


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def wait_for(check, what: str, timeout: float = 20.0):  # noqa: ANN001, ANN201 - tiny local helper
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise SystemExit(f"demo failed: timed out waiting for {what}")


def main() -> int:
    if not shutil.which("bird") or not shutil.which("birdc"):
        print("BIRD 2 is missing: install it with `apt-get install bird2` (make demo does this as root)")
        return 1
    try:
        _port_free(ROUTER_PORT)
    except OSError:
        print(f"port {ROUTER_PORT} on {ROUTER_ADDRESS} is busy: stop whatever listens there and retry")
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="mlb-demo-", dir="/tmp"))
    manifests = scratch / "manifests"
    shutil.copytree(ROOT / "examples", manifests, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    router = BirdRouter(scratch / "bird", address=ROUTER_ADDRESS, asn=64501, port=ROUTER_PORT)
    router.add_speaker(Speaker(name="metallb", address=SPEAKER_ADDRESS, asn=64500))
    speaker: subprocess.Popen[bytes] | None = None
    try:
        banner(f"starting BIRD 2 on {ROUTER_ADDRESS}:{ROUTER_PORT} (AS 64501)")
        router.start()
        banner("starting: metallb-bgp run --manifests examples/ --node demo-node")
        speaker = subprocess.Popen(
            [sys.executable, "-m", "metallb_bgp.cli", "run", "--manifests", str(manifests), "--node", "demo-node",
             "--state-file", str(scratch / "state.json"), "--workdir", str(scratch / "run"), "--log-format", "console"],
        )
        router.wait_established("metallb", timeout=30)
        wait_for(lambda: router.routes("metallb"), "the service route at the router")
        banner("the router's view: birdc show route all")
        print(router.birdc("show", "route", "all"), flush=True)
        banner("deleting the nginx Service (examples/nginx.yaml)")
        (manifests / "nginx.yaml").unlink()
        wait_for(lambda: not router.routes("metallb"), "the withdrawal at the router")
        banner("the router's view after the delete: birdc show route")
        print(router.birdc("show", "route"), flush=True)
        banner("done: the route was announced, then withdrawn")
        return 0
    finally:
        if speaker is not None and speaker.poll() is None:
            speaker.send_signal(signal.SIGTERM)
            try:
                speaker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                speaker.kill()
                speaker.wait()
        router.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _port_free(port: int) -> None:
    """Raises OSError if something already listens where the demo router must."""
    with socket.socket() as probe:
        probe.bind((ROUTER_ADDRESS, port))


if __name__ == "__main__":
    sys.exit(main())
