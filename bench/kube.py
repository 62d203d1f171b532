"""The Kubernetes path: `metallb-bgp controller` + `metallb-bgp speaker` against the fake API server.

Why: `metallb-bgp run` (the rest of the bench) reads a manifests folder and plans incrementally; in a
cluster the same routes go through a longer road: the controller watches Services, allocates, writes
`status.loadBalancer.ingress` back through the API; the speaker watches that status and announces
through its ExaBGP child. This module times that road end to end, so the watch/allocation overhead
is a number next to the embedded figures and the raw ExaBGP baseline.

The fake API server (tests/fakekube) runs in this process, the daemons are the real CLI as child
processes with a kubeconfig pointing at it, ExaBGP is the speaker's real child, BIRD is real. The N
services (each with an EndpointSlice) are put straight into the fake server's store before the
daemons start (an HTTP POST each would take minutes at 10k and measures nothing of ours); single
changes go through real HTTP requests with the official client, as kubectl would send them.
Every wait is bounded; every process started here is stopped by its PID.
"""

from __future__ import annotations

import gc
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from bench import procfs
from bench.bird_control import BirdControl
from bench.cluster import NODE, OTHER_NODE, config_manifests, service_ip, service_manifest, service_name
from bench.scenarios import POLL_INTERVAL, ROOT, Latencies, start_router, stop_process, wait_for

sys.path.insert(0, str(ROOT / "tests"))

from fakekube import FakeKube, schemaless_crd  # noqa: E402  (the tests' fake API server)
from fakekube.store import Event  # noqa: E402
from kubernetes import client  # noqa: E402

from metallb_bgp.kube.client import user_agent  # noqa: E402

NAMESPACE = "default"
KINDS = ("create", "delete", "etp_local_move_away")


def service_body(name: str, *, local: bool) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local" if local else "Cluster",
                     "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}}  # fmt: skip


def slice_body(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "nodeName": node}]}  # fmt: skip


def metrics_flag() -> list[str]:
    """The daemons run with their metrics endpoint on, as the Helm chart runs them (on loopback here)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return ["--metrics-address", f"127.0.0.1:{probe.getsockname()[1]}"]


class Daemon:
    """One `metallb-bgp controller|speaker` child with JSON logs in a file."""

    def __init__(self, directory: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "metallb_bgp.cli", *args, "--log-format", "json"],
                                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        stop_process(self.process)


class KubeRun:
    """A fake API server holding N services, one BIRD, and (once started) a controller and a speaker."""

    def __init__(self, directory: Path, *, count: int, local_every: int, label: str) -> None:
        self.directory = directory / label
        self.directory.mkdir(parents=True)
        self.count = count
        self.local_every = local_every
        self.next_index = count
        self.router = start_router(self.directory / "bird")
        self.control = BirdControl(self.router.control)
        self.fake = FakeKube().start()
        self.daemons: list[Daemon] = []
        self.started_at = 0.0
        self._trigger: Callable[[Event], bool] | None = None  # the watch event a single change waits for
        self._triggered_at: float | None = None
        self.fake.store.observers.append(self._observe)
        store = self.fake.store
        self._services = store.registry.lookup("", "v1", "services")
        self._slices = store.registry.lookup("discovery.k8s.io", "v1", "endpointslices")
        assert self._services is not None and self._slices is not None
        self.api = client.CoreV1Api(self.fake.client)
        self.discovery = client.DiscoveryV1Api(self.fake.client)
        self.seed_seconds = self._seed()
        self.speaker_flags = ["--no-service-bgp-status"]

    def is_local(self, index: int) -> bool:
        return self.local_every > 0 and index % self.local_every == 0

    def _seed(self) -> float:
        """Nodes, the MetalLB objects and the N services with their slices, straight into the store."""
        store = self.fake.store
        store.apply_crd(schemaless_crd("metallb.io", "ConfigurationState", "configurationstates", ("v1beta1",)))
        nodes = store.registry.lookup("", "v1", "nodes")
        assert nodes is not None
        for node in (NODE, OTHER_NODE):
            store.create(nodes, "", {"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}})
        for text in config_manifests(self.router.port).values():
            body = yaml.safe_load(text)
            group, version = body["apiVersion"].split("/")
            plural = body["kind"].lower() + "s"
            rt = store.registry.lookup(group, version, plural)
            assert rt is not None, body["apiVersion"]
            store.create(rt, body["metadata"]["namespace"], body)
        started = time.perf_counter()
        for index in range(self.count):
            name = service_name(index)
            store.create(self._services, NAMESPACE, service_body(name, local=self.is_local(index)))
            store.create(self._slices, NAMESPACE, slice_body(name, NODE))
        return round(time.perf_counter() - started, 3)

    # ------------------------------------------------------------------ daemons

    def start(self) -> None:
        self.started_at = time.perf_counter()
        self.controller = Daemon(self.directory, "controller", [
            "controller", "--kubeconfig", self._kubeconfig(), "--no-leader-election", *metrics_flag()])  # fmt: skip
        self.speaker = self._speaker("speaker")
        self.daemons = [self.controller, self.speaker]

    def _kubeconfig(self) -> str:
        return str(self.fake.write_kubeconfig(self.directory / "kubeconfig"))

    def _speaker(self, name: str) -> Daemon:
        # Without ServiceBGPStatus objects: at 10,000 services they trickle in for ~500 s (paced at 20 a
        # second), through every single-change sample; `python -m bench.status_writes` measures them.
        return Daemon(self.directory, name, [
            "speaker", "--kubeconfig", self._kubeconfig(), "--node-name", NODE, "--workdir", str(self.directory / "w"),
            "--control-socket", str(self.directory / f"{name}-control" / "control.sock"), *self.speaker_flags,
            *metrics_flag()])  # fmt: skip

    def alive(self) -> None:
        for daemon in self.daemons:
            daemon.alive()

    def statuses_written(self) -> int:
        with self.fake.store.cond:
            objects = list(self.fake.store.objects[self._services.key].values())
        return sum(1 for obj in objects if ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"))

    def cold_start(self, timeout: float) -> dict[str, Any]:
        """Seconds from starting both daemons to every status written and to BIRD holding N routes."""
        self.start()
        statuses_at = None

        def check() -> bool:
            nonlocal statuses_at
            self.alive()
            if statuses_at is None:
                if self.statuses_written() < self.count:
                    return False
                statuses_at = time.perf_counter()
            return self.control.route_count() == self.count

        at_router = wait_for(check, timeout=timeout, interval=0.02, what=f"{self.count} routes via the API")
        assert statuses_at is not None
        return {"count": self.count, "seed_store_s": self.seed_seconds,
                "start_to_all_status_s": round(statuses_at - self.started_at, 3),
                "start_to_routes_s": round(at_router - self.started_at, 3)}  # fmt: skip

    def settle(self, timeout: float, window: float = 1.0) -> float:
        """Wait until both daemons are quiet (under 5% CPU each for `window` s: the controller's
        annotations and Events and the speaker's Events of the cold start are all written); return the
        perf_counter time the quiet window began. A change made earlier queues behind that backlog."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self.alive()
            began, before = time.perf_counter(), self.cpu()
            time.sleep(window)
            if all(after - b < 0.05 * window for b, after in zip(before, self.cpu(), strict=True)):
                return began
        raise TimeoutError(f"daemons still busy after {timeout}s")

    def speaker_restart(self, timeout: float) -> float:
        """Seconds from starting a new speaker on the settled cluster (every status written) to BIRD
        holding N routes again; the old one is stopped first and BIRD emptied (its peer has no graceful
        restart, so a stopping speaker withdraws). The watch, plan and push of a speaker restart, with no
        allocation to wait for."""
        self.speaker.stop()
        wait_for(lambda: self.control.route_count() == 0, timeout=timeout, interval=0.02, what="BIRD emptied")
        started, sent = time.perf_counter(), self.speaker_bytes()
        self.speaker = self._speaker("speaker-restarted")
        self.daemons = [self.controller, self.speaker]

        def check() -> bool:
            self.alive()
            return self.control.route_count() == self.count

        seconds = round(wait_for(check, timeout=timeout, interval=0.02, what="routes after a speaker restart") - started, 3)
        self.restart_api_bytes = self.speaker_bytes() - sent  # its lists (and whatever it wrote meanwhile)
        self.restart_cpu_s = procfs.cpu_seconds(self.speaker.pid)
        return seconds

    def stop(self) -> None:
        try:
            for daemon in self.daemons:
                daemon.stop()
        finally:
            self.control.close()
            self.router.stop()
            self.fake.stop()
            if self.fake.client is not None:
                self.fake.client.close()

    def rss(self) -> dict[str, int]:
        return {"controller": procfs.rss_bytes(self.controller.pid), **procfs.tree_rss(self.speaker.pid)}

    # ------------------------------------------------------------------ single changes, through HTTP

    def assigned_ip(self, index: int) -> str:
        with self.fake.store.cond:
            obj = self.fake.store.objects[self._services.key][(NAMESPACE, service_name(index))]
            return str(obj["status"]["loadBalancer"]["ingress"][0]["ip"])

    def _observe(self, event: Event) -> None:
        if self._trigger is not None and self._triggered_at is None and self._trigger(event):
            self._triggered_at = time.perf_counter()

    def time_change(self, change: Callable[[], None], prefix: str, *, present: bool, timeout: float,
                    trigger: Callable[[Event], bool]) -> tuple[float, float]:  # fmt: skip
        """Milliseconds from the API request, and from the watch event the speaker acts on (`trigger`:
        the store committed it, so any watcher may send it), to BIRD holding (or no longer holding)
        `prefix`."""
        self._triggered_at, self._trigger = None, trigger
        started = time.perf_counter()
        try:
            change()
            seen = wait_for(lambda: self.control.has_route(prefix) is present, timeout=timeout, interval=POLL_INTERVAL,
                            what=f"{prefix} {'announced' if present else 'withdrawn'}")  # fmt: skip
        finally:
            self._trigger = None
        if self._triggered_at is None:
            raise RuntimeError(f"{prefix} changed at the router without the watch event it waits for")
        return (seen - started) * 1000, (seen - self._triggered_at) * 1000

    def create(self, index: int) -> None:
        name = service_name(index)
        self.api.create_namespaced_service(NAMESPACE, service_body(name, local=False))
        self.discovery.create_namespaced_endpoint_slice(NAMESPACE, slice_body(name, NODE))

    def delete(self, index: int) -> None:
        name = service_name(index)
        self.api.delete_namespaced_service(name, NAMESPACE)
        self.discovery.delete_namespaced_endpoint_slice(f"{name}-1", NAMESPACE)

    def move(self, index: int, node: str) -> None:
        endpoints = slice_body(service_name(index), node)["endpoints"]
        self.discovery.patch_namespaced_endpoint_slice(f"{service_name(index)}-1", NAMESPACE, {"endpoints": endpoints})

    def speaker_bytes(self) -> int:
        """Response bytes the fake API server sent to speakers (their User-Agent): lists, watch events."""
        return sum(n for agent, n in self.fake.sent_bytes.items() if agent.startswith(user_agent("speaker")))

    def cpu(self) -> tuple[float, float]:
        return procfs.cpu_seconds(self.controller.pid), procfs.cpu_seconds(self.speaker.pid)

    def single_changes(self, samples: int, log: Callable[[str], None], timeout: float = 30.0) -> dict[str, Any]:
        """`samples` creates (the next free address), deletes of those, and ETP Local endpoint moves away
        (withdrawal; each moved back untimed afterwards). CPU of both daemons is read around each kind."""
        # the fake API server's own heap (store and history: hundreds of thousands of objects) is left
        # out of this process's collections: their pauses are the stand-in server's, not ours
        gc.collect()
        gc.freeze()
        results = {kind: Latencies(kind) for kind in KINDS}  # API request -> router
        from_event = {kind: Latencies(kind) for kind in KINDS}  # the speaker's watch event -> router
        cpu: dict[str, dict[str, float]] = {}
        idle_before = self.cpu()
        time.sleep(2.0)
        idle = [(after - before) / 2.0 for before, after in zip(idle_before, self.cpu(), strict=True)]

        def sample(kind: str, change: Callable[[], None], prefix: str, present: bool, trigger: Callable[[Event], bool]) -> bool:
            def timed() -> float:
                request_ms, event_ms = self.time_change(change, prefix, present=present, timeout=timeout, trigger=trigger)
                from_event[kind].samples_ms.append(event_ms)
                return request_ms

            return results[kind].take(timed, log)

        def measured(kind: str, body: Callable[[], int]) -> None:
            before, started, read = self.cpu(), time.perf_counter(), self.speaker_bytes()
            done = body()
            elapsed = time.perf_counter() - started
            after = self.cpu()
            entry: dict[str, float] = {"changes": done, "wall_seconds": round(elapsed, 3)}
            entry["speaker_api_bytes_per_change"] = round((self.speaker_bytes() - read) / max(done, 1))
            for role, b, a, rate in zip(("controller", "speaker"), before, after, idle, strict=True):
                entry[f"{role}_cpu_ms_per_change"] = round((a - b) / max(done, 1) * 1000, 2)
                entry[f"{role}_cpu_ms_per_change_minus_idle"] = round(
                    max(0.0, a - b - rate * elapsed) / max(done, 1) * 1000, 2)
            cpu[kind] = entry

        created: list[int] = []

        def creates() -> int:
            for _ in range(samples):
                index = self.next_index
                self.next_index += 1
                # the allocator hands out the lowest free address: right after the cold start, index's
                if sample("create", lambda: self.create(index), f"{service_ip(index)}/32", True, status_written(index)):
                    created.append(index)
            return samples

        def deletes() -> int:
            for index in created:
                sample("delete", lambda: self.delete(index), f"{service_ip(index)}/32", False, service_deleted(index))
            return len(created)

        local = [i for i in range(self.count) if self.is_local(i)]

        def moves() -> int:
            done = 0
            for turn in range(min(samples, len(local))):
                index = local[turn]
                prefix = f"{self.assigned_ip(index)}/32"
                sample("etp_local_move_away", lambda: self.move(index, OTHER_NODE), prefix, False, slice_changed(index))
                done += 1
            return done

        measured("create", creates)
        measured("delete", deletes)
        measured("etp_local_move_away", moves)
        for turn in range(min(samples, len(local))):  # put them back, so a later run starts from the same state
            self.move(local[turn], NODE)
        for kind, lat in results.items():  # a sample that timed out has no event time either
            from_event[kind].failures = lat.failures
        return {"latency": {kind: lat.summary() for kind, lat in results.items()},
                "latency_from_event": {kind: lat.summary() for kind, lat in from_event.items()},
                "raw_ms": {kind: lat.samples_ms for kind, lat in results.items()},
                "raw_ms_from_event": {kind: lat.samples_ms for kind, lat in from_event.items()},
                "cpu": cpu, "idle_cpu_ms_per_s": {"controller": round(idle[0] * 1000, 2),
                                                  "speaker": round(idle[1] * 1000, 2)}}  # fmt: skip


def status_written(index: int) -> Callable[[Event], bool]:
    """The controller's status write that gives the new service its IP: the event the speaker announces on."""
    name = service_name(index)

    def ingress(obj: dict[str, Any] | None) -> bool:
        return bool((((obj or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress"))

    return lambda e: (e.resource == ("", "services") and e.obj["metadata"]["name"] == name
                      and ingress(e.obj) and not ingress(e.old))  # fmt: skip


def service_deleted(index: int) -> Callable[[Event], bool]:
    name = service_name(index)
    return lambda e: e.resource == ("", "services") and e.type == "DELETED" and e.obj["metadata"]["name"] == name


def slice_changed(index: int) -> Callable[[Event], bool]:
    name = f"{service_name(index)}-1"
    return lambda e: e.resource == ("discovery.k8s.io", "endpointslices") and e.obj["metadata"]["name"] == name


def plan_cost(count: int, local_every: int, repeats: int = 5) -> dict[str, Any]:
    """In-process, milliseconds each k8s daemon's planning costs per change at `count` services (every
    service already holding its IP in status and its pool annotation, as after a cold start):

    - `speaker_plan`: the speaker's whole plan (its `SpeakerPlanner` only pays it when the
      configuration changes);
    - `controller_compute`: the controller's whole pass, `compute_pass` (compile, allocate, plan every
      write): what every pass cost before the controller became incremental, and its reference;
    - `controller_create` / `controller_delete`: one pass of the controller's `ControllerPlanner` after
      one Service was created (one status write planned) / deleted again, as the loop now runs it.
    """
    import tempfile

    from bench.cluster import BenchCluster
    from metallb_bgp.core.change import SnapshotChanges
    from metallb_bgp.core.plan.controller import ControllerPlanner, compute_pass
    from metallb_bgp.core.plan.speaker import speaker_plan
    from metallb_bgp.core.writes import POOL_ANNOTATION
    from metallb_bgp.sources.manifests import ManifestFolder

    with tempfile.TemporaryDirectory(prefix="mlb-plan-") as folder:
        cluster = BenchCluster(Path(folder), local_every=local_every)
        cluster.write_config(179)
        for index in range(count + 1):  # each service with what the controller would have written
            name = service_name(index)
            text = service_manifest(name, local=cluster.is_local(index))
            if index < count:
                written = f"annotations: {{{POOL_ANNOTATION}: bench}}}}\nspec:"
                text = text.replace("namespace: default}\nspec:", f"namespace: default, {written}", 1)
                status = f"status: {{loadBalancer: {{ingress: [{{ip: {service_ip(index)}}}]}}}}\n"
                text = text.replace("  ports: [{port: 80}]\n", f"  ports: [{{port: 80}}]\n{status}")
            cluster.service_path(name).write_text(text)
        source = ManifestFolder([Path(folder)])
        source.load()
        with_new = source.snapshot()
    new = next(s for s in with_new.services if s.name == service_name(count))
    snapshot = replace(with_new, services=tuple(s for s in with_new.services if s is not new))
    planner = ControllerPlanner()
    changes = SnapshotChanges()
    planner.update(changes.take(snapshot), {}, now=0.0)

    def controller_compute() -> int:
        writes = compute_pass(snapshot, {}, now=0.0).writes
        return len(writes.status) + len(writes.annotations)

    def controller_create() -> int:
        return len(planner.update(changes.take(with_new), {}, now=0.0).writes.status)

    def controller_delete() -> int:
        return len(planner.update(changes.take(snapshot), {}, now=0.0).writes.status)

    def speaker() -> int:
        return len(speaker_plan(snapshot, node_name=NODE).table.routes)

    result: dict[str, Any] = {"count": count}
    steps = (("speaker_plan", speaker), ("controller_compute", controller_compute),
             ("controller_create", controller_create), ("controller_delete", controller_delete))  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name, _ in steps}
    for _ in range(repeats):
        for name, step in steps:  # create and delete alternate: each pass sees exactly one change
            started = time.perf_counter()
            result[f"{name}_size"] = step()
            times[name].append((time.perf_counter() - started) * 1000)
    for name, samples in times.items():
        result[f"{name}_ms"] = round(statistics.median(samples), 1)
    return result


def measure(directory: Path, args: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """Cold start at each `--kube` N; single changes and CPU at `--kube-change-n`."""
    from bench.scenarios import BaselineRun, SpeakerRun, cold_start

    section: dict[str, Any] = {"cold_start": [], "single_change": {}, "cpu_per_change": {}, "rss": []}
    for count in sorted(set(args.kube) | {args.kube_change_n, args.kube_cpu_small}):
        cold = count in args.kube
        entry: dict[str, Any] = {}
        if cold and not args.no_baseline:
            log(f"-- kube {count}: raw ExaBGP bulk baseline")
            entry["baseline_s"] = BaselineRun(directory, count=count, label=f"kube-baseline-{count}").run().start_to_routes_s
            log(f"-- kube {count}: metallb-bgp run (embedded) for comparison")
            embedded = SpeakerRun(directory, count=count, local_every=args.local_every, label=f"kube-run-{count}")
            try:
                entry["embedded_s"] = cold_start(embedded, args.timeout).start_to_routes_s
            finally:
                embedded.stop()
        log(f"-- kube {count}: seeding the fake API server")
        # enough ETP Local services for every endpoint-move sample, in the small cluster too
        local_every = min(args.local_every, max(1, count // args.kube_samples))
        run = KubeRun(directory, count=count, local_every=local_every, label=f"kube-{count}")
        try:
            log(f"   {count} services + slices into the store in {run.seed_seconds:.2f}s; starting the daemons")
            entry.update(run.cold_start(args.timeout))
            if "baseline_s" in entry:
                entry["ratio_to_baseline"] = round(entry["start_to_routes_s"] / entry["baseline_s"], 2)
                entry["ratio_to_embedded"] = round(entry["start_to_routes_s"] / entry["embedded_s"], 2)
            entry["start_to_quiet_s"] = round(run.settle(args.timeout) - run.started_at, 3)
            log(f"   {entry}")
            section["rss"].append({"routes": count, **run.rss()})
            if cold:
                entry["speaker_restart_s"] = run.speaker_restart(args.timeout)
                entry["speaker_restart_api_bytes"] = run.restart_api_bytes
                entry["speaker_restart_cpu_s"] = run.restart_cpu_s
                run.settle(args.timeout)
                log(f"   speaker restarted -> {count} routes at BIRD in {entry['speaker_restart_s']}s")
                section["cold_start"].append(entry)
            if count in (args.kube_change_n, args.kube_cpu_small):
                log(f"   single changes through the API x{args.kube_samples}")
                changes = run.single_changes(args.kube_samples, log)
                section["single_change"][str(count)] = changes["latency"]
                section.setdefault("single_change_from_event", {})[str(count)] = changes["latency_from_event"]
                section.setdefault("raw_latencies_ms", {})[str(count)] = changes["raw_ms"]
                section.setdefault("raw_latencies_ms_from_event", {})[str(count)] = changes["raw_ms_from_event"]
                section["cpu_per_change"][str(count)] = {"by_kind": changes["cpu"], "idle_cpu_ms_per_s": changes["idle_cpu_ms_per_s"]}
                log(f"   {changes['latency']}\n   from the watch event: {changes['latency_from_event']}\n   {changes['cpu']}")
        finally:
            run.stop()
    log(f"-- kube {args.kube_change_n}: in-process cost of one whole-plan recomputation")
    section["plan_cost"] = plan_cost(args.kube_change_n, args.local_every)
    log(f"   {section['plan_cost']}")
    return section
