"""`metallb-bgp run` as a user runs it, for the tests that start one: the real CLI as a child process
(`Run`), the manifests of one loopback BIRD peer, and a port a BGPPeer may name.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

SPEAKER = "127.0.0.2"


POOL = """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: pool, namespace: metallb-system}
spec:
  addresses: [198.51.100.0/28]
"""


ADVERTISEMENT = """
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: adv, namespace: metallb-system}}
spec:
  communities: [{community}]
"""


def router_peer(port: int) -> str:
    """The BGPPeer of one BIRD on 127.0.0.1:`port`, seen from `SPEAKER`."""
    return f"""
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: router, namespace: metallb-system}}
spec:
  myASN: 64500
  peerASN: 64501
  peerAddress: 127.0.0.1
  peerPort: {port}
  sourceAddress: {SPEAKER}
"""


class Run:
    """One `metallb-bgp run` child process; stopped with SIGTERM like a user's Ctrl-C."""

    def __init__(self, manifests: Path, workdir: Path, state_file: Path, *extra: str) -> None:
        self.workdir = workdir
        self.log_path = workdir.parent / f"{workdir.name}.log"
        self.control = workdir.parent / f"{workdir.name}-control" / "control.sock"  # its own, not the machine's
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "metallb_bgp.cli", "run", "--manifests", str(manifests), "--node", "node-a",
             "--workdir", str(workdir), "--state-file", str(state_file), "--log-format", "json",
             "--control-socket", str(self.control), *extra],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def events(self) -> list[dict]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def children(self) -> set[int]:
        """Every descendant process (ExaBGP and its relay helper)."""
        return descendants(self.process.pid)

    def stop(self) -> int:
        code = stop_child(self.process)
        self.log.close()
        return code


def free_peer_port() -> int:
    """A free port a BGPPeer may name: MetalLB's schema caps peerPort at 16384, below the ephemeral range."""
    for port in random.sample(range(10000, 16384), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 10000-16383")



def stop_child(process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Stop a daemon we started as a user would (SIGTERM), killing it if it has not exited in `timeout`."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    found.add(int(entry.name))
                    frontier.append(int(entry.name))
    return found
