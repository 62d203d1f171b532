"""In-process micro-benchmark: the CPU of one change and of a cold read, without ExaBGP or BIRD.

`make bench` measures the whole daemon against a real router, which takes minutes and a quiet machine.
This measures only our own work, in one process, with `time.process_time` over many repetitions, so it
can run next to other work and still compare N = 100 with N = 10,000:

- one ETP Local endpoint moved away and back, through `ManifestFolder.reload` of the one file and
  `IncrementalPlanner.update`, plus what `Runner.reconcile` reads besides the engine
  (`plan.problems`, the table's sizes, the assignments that moved);
- a cold read of N service files (`ManifestFolder.load`), and the YAML parse alone over the same texts,
  PyYAML's own constructor (over the C parser) next to `api.loader`'s;
- a state-file write at N assignments, every entry encoded afresh against after one change with the
  entries kept (what `metallb-bgp run` writes after a change that moved an IP).

    .venv/bin/python -m bench.inprocess                      # N = 100 and 10,000
    .venv/bin/python -m bench.inprocess --sizes 100,50000 --moves 400
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.cluster import NODE, OTHER_NODE, BenchCluster, service_ip, service_manifest, service_name, write_atomically
from metallb_bgp.api import loader
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.plan.incremental import IncrementalPlanner
from metallb_bgp.sources.manifests import ManifestFolder
from metallb_bgp.sources.state_file import StateFile, save_state

LOCAL_EVERY = 10


def _cluster(folder: Path, count: int) -> BenchCluster:
    cluster = BenchCluster(folder, local_every=LOCAL_EVERY)
    cluster.write_config(router_port=179)
    cluster.write_services(count)
    return cluster


def per_change_ms(count: int, moves: int) -> tuple[float, float]:
    """(CPU ms per endpoint move, of which reload ms) at `count` services."""
    with tempfile.TemporaryDirectory() as scratch:
        cluster = _cluster(Path(scratch), count)
        folder = ManifestFolder([Path(scratch)])
        planner = IncrementalPlanner(node_name=NODE)
        planner.update(folder.load())
        gc.collect()
        gc.freeze()  # as `metallb-bgp run` does after the initial sync
        name = service_name(0)  # index 0 is an ETP Local service
        path = cluster.service_path(name).resolve()
        texts = [service_manifest(name, local=True, endpoint_node=node) for node in (OTHER_NODE, NODE)]
        plans = []
        total = reloading = 0.0
        for move in range(moves):
            write_atomically(path, texts[move % 2])
            started = time.process_time()
            change = folder.reload([path])
            reloaded = time.process_time()
            plan = planner.update(change)
            _ = plan.problems, len(plan.table.routes), len(plan.table.skipped), planner.assignments_changed
            _ = planner.routes_touched
            total += time.process_time() - started
            reloading += reloaded - started
            plans.append(plan)  # the daemon keeps the previous plan: snapshots must stay cheap when kept
            del plans[:-2]
        assert len(plan.table.routes) == count - (1 if moves % 2 else 0), len(plan.table.routes)
        gc.unfreeze()
        return total / moves * 1000, reloading / moves * 1000


def cold_read_seconds(count: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        _cluster(Path(scratch), count)
        folder = ManifestFolder([Path(scratch)])
        started = time.process_time()
        folder.load()
        return time.process_time() - started


def yaml_seconds(count: int, repeat: int) -> tuple[float, float, float, float]:
    """For `count` service texts: (the C parser's events alone, PyYAML's constructor over it,
    `api.loader`'s documents, `json.loads` of the same documents as JSON): the floor any YAML path over
    PyYAML's parser has, and what a JSON parse of the same content costs."""
    texts = [service_manifest(service_name(i), local=i % LOCAL_EVERY == 0) for i in range(count)]
    events = min(_timed(lambda: [_events(t) for t in texts]) for _ in range(repeat))
    plain = min(_timed(lambda: [list(yaml.load_all(t, Loader=loader._YAMLLoader)) for t in texts]) for _ in range(repeat))
    documents = getattr(loader, "yaml_documents", lambda t: list(yaml.load_all(t, Loader=loader._YAMLLoader)))
    ours = min(_timed(lambda: [documents(t) for t in texts]) for _ in range(repeat))
    as_json = [json.dumps(documents(t)) for t in texts]
    parsed = min(_timed(lambda: [json.loads(t) for t in as_json]) for _ in range(repeat))
    return events, plain, ours, parsed


def state_write_ms(count: int, writes: int = 30) -> tuple[float, float]:
    """Wall ms per state-file write at `count` assignments: every entry encoded afresh (`save_state`),
    and after one service's change with the entries kept (`StateFile`, as `metallb-bgp run` writes it).
    Both include the fsync."""
    assignments = {ServiceKey("default", service_name(i)): (service_ip(i),) for i in range(count)}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "state.json"
        fresh = statistics.median(_timed(lambda: save_state(path, assignments), clock=time.perf_counter) for _ in range(writes))
        kept = StateFile(path, assignments)

        def one_change(i: int) -> None:
            kept.set(ServiceKey("default", f"new-{i}"), (service_ip(count + i),))
            kept.write()

        changed = statistics.median(_timed(lambda: one_change(i), clock=time.perf_counter) for i in range(writes))
    return fresh * 1000, changed * 1000


def _events(text: str) -> None:
    parser = loader._YAMLLoader(text)
    try:
        while parser.check_event():
            parser.get_event()
    finally:
        parser.dispose()


def _timed(work: object, clock: Callable[[], float] = time.process_time) -> float:
    started = clock()
    work()  # type: ignore[operator]
    return clock() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,10000", help="service counts for the per-change figure")
    parser.add_argument("--moves", type=int, default=400, help="endpoint moves per size")
    parser.add_argument("--cold", type=int, default=10000, help="service files for the cold read (0: skip)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    figures = {}
    for count in sizes:
        total, reload_ms = per_change_ms(count, args.moves)
        figures[count] = total
        print(f"one endpoint move, N={count:>6}: {total:.3f} ms CPU (reload {reload_ms:.3f}, planner {total - reload_ms:.3f})")
    if len(sizes) > 1:
        print(f"ratio N={sizes[-1]} / N={sizes[0]}: {figures[sizes[-1]] / figures[sizes[0]]:.2f}")
    if args.cold:
        events, plain, ours, parsed = yaml_seconds(args.cold, repeat=3)
        print(f"YAML of {args.cold} service files: C parser events alone {events:.3f} s, PyYAML constructor "
              f"{plain:.3f} s, api.loader {ours:.3f} s; the same documents as JSON, json.loads {parsed:.3f} s")
        print(f"ManifestFolder.load of {args.cold} service files: {cold_read_seconds(args.cold):.3f} s CPU")
        fresh, changed = state_write_ms(args.cold)
        print(f"state file of {args.cold} assignments, median write: all encoded afresh {fresh:.1f} ms, "
              f"after one change with the entries kept {changed:.1f} ms")


if __name__ == "__main__":
    main()
