"""The bench's measurements, each against a real BIRD 2 on loopback.

`SpeakerRun` is one `metallb-bgp run` child on a synthetic manifests folder (bench.cluster) and
`BaselineRun` one raw-engine child (bench.baseline_child); both are timed from `Popen` to what the
router holds, read through BIRD's control socket (bench.bird_control). Every wait is bounded, and every
process started here is stopped by its PID (BIRD by its Popen handle, the children with SIGTERM, then
SIGKILL).
"""

from __future__ import annotations

import json
import math
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import procfs
from bench.bird_control import BirdControl
from bench.cluster import (
    NODE,
    OTHER_NODE,
    ROUTER_ADDRESS,
    ROUTER_ASN,
    SPEAKER_ADDRESS,
    SPEAKER_ASN,
    BenchCluster,
    service_ip,
    service_manifest,
    service_name,
    write_atomically,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from bird import BirdRouter, Speaker  # noqa: E402  (the tests' real-BIRD harness)

POLL_INTERVAL = 0.001  # seconds between two route look-ups while timing one change
SETTLE = 0.05  # seconds of quiet between two samples


def free_peer_port() -> int:
    """A free port a BGPPeer may name (MetalLB caps peerPort at 16384, below the ephemeral range)."""
    for port in random.sample(range(10000, 16384), 200):
        with socket.socket() as probe:
            try:
                probe.bind((ROUTER_ADDRESS, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 10000-16383")


def wait_for(check: Callable[[], bool], *, timeout: float, interval: float, what: str) -> float:
    """Poll until `check()`; return the perf_counter time it first held. Raises TimeoutError."""
    deadline = time.perf_counter() + timeout
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def start_router(directory: Path) -> BirdRouter:
    router = BirdRouter(directory, asn=ROUTER_ASN, port=free_peer_port())
    router.add_speaker(Speaker(name="speaker", address=SPEAKER_ADDRESS, asn=SPEAKER_ASN, hold_time=30))
    return router.start()


def session_up(router: BirdRouter) -> bool:
    protocol = router.protocols().get("speaker")
    return protocol is not None and protocol.established


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Latencies:
    """Event-to-router times of one kind of change, in milliseconds."""

    kind: str
    samples_ms: list[float] = field(default_factory=list)
    failures: int = 0
    written_at: list[float] = field(default_factory=list)  # wall-clock time of each sample's write

    def take(self, timed: Callable[[], float], log: Callable[[str], None]) -> bool:
        """Record one sample (`timed` returns milliseconds, or raises TimeoutError: a failure), then
        let the system settle; returns whether it succeeded."""
        try:
            self.written_at.append(time.time())
            self.samples_ms.append(timed())
            return True
        except TimeoutError as exc:
            self.failures += 1
            log(f"  {self.kind}: {exc}")
            return False
        finally:
            time.sleep(SETTLE)

    def summary(self) -> dict[str, float | int]:
        values = sorted(self.samples_ms)
        if not values:
            return {"count": 0, "failures": self.failures}
        return {
            "count": len(values),
            "failures": self.failures,
            "p50_ms": round(statistics.median(values), 2),
            "p99_ms": round(percentile(values, 99), 2),
            "max_ms": round(values[-1], 2),
            "mean_ms": round(statistics.fmean(values), 2),
            "min_ms": round(values[0], 2),
        }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least `pct`% of samples at or below it."""
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class ColdStart:
    count: int
    start_to_routes_s: float
    layout: str = "files"
    delete_all_to_empty_s: float | None = None
    phases: dict[str, float] = field(default_factory=dict)  # from our log: seconds since Popen
    rss: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process, start to all routes at BIRD


# ---------------------------------------------------------------------------------------------- runs


class SpeakerRun:
    """One `metallb-bgp run` on a bench folder, with its BIRD."""

    def __init__(
        self,
        directory: Path,
        *,
        count: int,
        local_every: int,
        label: str,
        profile: Path | None = None,
        module: str = "metallb_bgp.cli",
        layout: str = "files",
    ) -> None:
        self.profile = profile  # run under cProfile, writing here at exit
        self.module = module
        self.directory = directory / label
        self.directory.mkdir(parents=True)
        self.router = start_router(self.directory / "bird")
        self.control = BirdControl(self.router.control)
        self.cluster = BenchCluster(self.directory / "manifests", local_every=local_every, layout=layout)
        self.cluster.write_config(self.router.port)
        self.cluster.write_services(count)
        self.count = count
        self.next_index = count
        self.log_path = self.directory / "run.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        profiler = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        command = [
            sys.executable, *profiler, "-m", self.module, "run",
            "--manifests", str(self.cluster.folder), "--node", NODE,
            "--workdir", str(self.directory / "w"), "--state-file", str(self.directory / "state.json"),
            "--log-format", "json", "--control-socket", str(self.directory / "control" / "control.sock"),
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.started_at = time.perf_counter()
            self.started_wall = time.time()
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"metallb-bgp run exited with {self.process.returncode}:\n{tail}")

    def wait_count(self, expected: int, timeout: float) -> float:
        def check() -> bool:
            self.alive()
            return self.control.route_count() == expected

        return wait_for(check, timeout=timeout, interval=0.01, what=f"{expected} routes at the router")

    def events(self) -> list[dict[str, object]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def phases(self) -> dict[str, float]:
        """When our own log says the first plan, the ExaBGP start, the session and the push happened (and
how long the folder's read and the first plan took)."""
        from datetime import datetime

        wanted = {"reconciled": "first_reconcile", "relay_connected": "exabgp_connected",
                  "bgp_session_state": "session_up", "routes_synced": "first_full_push_acked"}  # fmt: skip
        found: dict[str, float] = {}
        for event in self.events():
            if event.get("event") == "initial_sync":  # how long reading the folder and the first plan took
                found["load_s"], found["plan_s"] = float(event["load_seconds"]), float(event["plan_seconds"])  # type: ignore[arg-type]
                continue
            name = wanted.get(str(event.get("event")))
            if name is None or name in found or "timestamp" not in event:
                continue
            if name == "session_up" and event.get("state") != "up":
                continue
            stamp = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
            found[name] = round(stamp - self.started_wall, 3)
        return found

    def stop(self) -> None:
        try:
            if self.process is not None:
                stop_process(self.process)
        finally:
            self.control.close()
            self.router.stop()

    # ------------------------------------------------------------------ single changes

    def time_change(self, change: Callable[[], None], prefix: str, *, present: bool, timeout: float = 30.0) -> float:
        """Milliseconds from `change()` (a file write) to BIRD holding (or no longer holding) `prefix`."""
        started = time.perf_counter()
        change()
        seen = wait_for(
            lambda: self.control.has_route(prefix) is present,
            timeout=timeout,
            interval=POLL_INTERVAL,
            what=f"{prefix} {'announced' if present else 'withdrawn'}",
        )
        return (seen - started) * 1000

    def create_one(self) -> tuple[Callable[[], None], str, int]:
        index = self.next_index
        self.next_index += 1
        name = service_name(index)
        path = self.cluster.service_path(name)
        return (lambda: write_atomically(path, service_manifest(name))), f"{service_ip(index)}/32", index

    def delete(self, index: int) -> tuple[Callable[[], None], str]:
        path = self.cluster.service_path(service_name(index))
        return path.unlink, f"{service_ip(index)}/32"

    def move_endpoint(self, index: int, node: str) -> tuple[Callable[[], None], str]:
        name = service_name(index)
        path = self.cluster.service_path(name)
        text = service_manifest(name, local=True, endpoint_node=node)
        return (lambda: write_atomically(path, text)), f"{service_ip(index)}/32"

    def single_changes(self, samples: int, log: Callable[[str], None]) -> dict[str, Latencies]:
        """`samples` creates, deletes of those, endpoint moves away (withdraw) and back (announce)."""
        results = {kind: Latencies(kind) for kind in ("create", "delete", "etp_local_move_away", "etp_local_move_back")}
        created: list[int] = []

        def sample(kind: str, change: Callable[[], None], prefix: str, present: bool) -> bool:
            return results[kind].take(lambda: self.time_change(change, prefix, present=present), log)

        for _ in range(samples):
            change, prefix, index = self.create_one()
            if sample("create", change, prefix, True):
                created.append(index)
        for index in created:
            change, prefix = self.delete(index)
            sample("delete", change, prefix, False)
        local = [i for i in range(self.count) if self.cluster.is_local(i)]
        for turn in range(samples if local else 0):
            index = local[turn % len(local)]
            change, prefix = self.move_endpoint(index, OTHER_NODE)
            sample("etp_local_move_away", change, prefix, False)
            change, prefix = self.move_endpoint(index, NODE)
            sample("etp_local_move_back", change, prefix, True)
        return results

    def cpu_per_change(self, changes: int, idle_seconds: float = 2.0) -> dict[str, float]:
        """CPU seconds of the `metallb-bgp run` process per single-service change (endpoint moves, each
        waited for at the router), and its idle CPU rate over `idle_seconds` for comparison."""
        local = [i for i in range(self.count) if self.cluster.is_local(i)]
        before_idle = procfs.cpu_seconds(self.pid)
        time.sleep(idle_seconds)
        idle_rate = (procfs.cpu_seconds(self.pid) - before_idle) / idle_seconds
        started = time.perf_counter()
        before = procfs.cpu_seconds(self.pid)
        done = 0
        for turn in range(changes // 2):
            index = local[turn % len(local)]
            for node, present in ((OTHER_NODE, False), (NODE, True)):
                change, prefix = self.move_endpoint(index, node)
                self.time_change(change, prefix, present=present)
                done += 1
        elapsed = time.perf_counter() - started
        used = procfs.cpu_seconds(self.pid) - before
        return {
            "changes": done,
            "cpu_seconds": round(used, 3),
            "wall_seconds": round(elapsed, 3),
            "cpu_ms_per_change": round(used / done * 1000, 3),
            "idle_cpu_ms_per_s": round(idle_rate * 1000, 3),
            "cpu_ms_per_change_minus_idle": round(max(0.0, used - idle_rate * elapsed) / done * 1000, 3),
        }


class BaselineRun:
    """The raw-engine baseline (bench.baseline_child) against its own BIRD."""

    def __init__(self, directory: Path, *, count: int, label: str) -> None:
        self.directory = directory / label
        self.directory.mkdir(parents=True)
        self.router = start_router(self.directory / "bird")
        self.control = BirdControl(self.router.control)
        self.count = count
        self.process: subprocess.Popen[str] | None = None

    def run(self) -> ColdStart:
        command = [sys.executable, "-m", "bench.baseline_child", "--port", str(self.router.port),
                   "--count", str(self.count), "--workdir", str(self.directory / "w")]  # fmt: skip
        started = time.perf_counter()
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
        )
        try:
            at_router = wait_for(
                lambda: self._alive() and self.control.route_count() == self.count,
                timeout=600, interval=0.01, what=f"{self.count} baseline routes",
            )  # fmt: skip
            cpu = converged_cpu(self.process.pid, self.router)
            rss = procfs.tree_rss(self.process.pid)
            withdraw_started = time.perf_counter()
            assert self.process.stdin is not None
            self.process.stdin.write("withdraw\n")
            self.process.stdin.flush()
            empty = wait_for(lambda: self.control.route_count() == 0, timeout=600, interval=0.01, what="baseline empty")
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
            return ColdStart(
                count=self.count,
                start_to_routes_s=round(at_router - started, 3),
                delete_all_to_empty_s=round(empty - withdraw_started, 3),
                rss={**rss, "speaker": rss["speaker"]},
                cpu=cpu,
            )
        finally:
            self.stop()

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"baseline child exited with {self.process.returncode}")
        return True

    def stop(self) -> None:
        try:
            if self.process is not None:
                if self.process.poll() is None:
                    try:
                        self.process.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        stop_process(self.process)  # type: ignore[arg-type]
        finally:
            self.control.close()
            self.router.stop()


def cold_start(run: SpeakerRun, timeout: float) -> ColdStart:
    run.start()
    at_router = run.wait_count(run.count, timeout)
    cpu = converged_cpu(run.pid, run.router)
    layout = run.cluster.layout
    return ColdStart(count=run.count, start_to_routes_s=round(at_router - run.started_at, 3), layout=layout, cpu=cpu)


def converged_cpu(pid: int, router: BirdRouter) -> dict[str, float]:
    """CPU seconds each process has used by now: where a cold start's time went, the router's included
    (on a machine with fewer free cores than busy processes, the sum bounds the wall time from below)."""
    assert router.process is not None
    cpu = procfs.tree_cpu(pid)
    cpu["bird"] = round(procfs.cpu_seconds(router.process.pid), 2)
    return cpu


def delete_all(run: SpeakerRun, timeout: float) -> float:
    started = time.perf_counter()
    run.cluster.delete_services(range(run.next_index))
    empty = run.wait_count(0, timeout)
    return round(empty - started, 3)


def as_dict(value: object) -> object:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else value  # type: ignore[arg-type]


