"""`make bench` / `python -m bench [flags]`: real ExaBGP, real BIRD, the real `metallb-bgp run`.

Measures, each on a fresh BIRD on loopback:
1. cold start (`--cold`, default 1,000, 10,000 and 50,000): `metallb-bgp run` started on a folder of
   N services until BIRD holds N routes, then every service file deleted until BIRD is empty; next
   to the raw ExaBGP bulk baseline (bench.baseline_child) for the same N, and the ratio; at
   `--layout-sizes` (default 10,000) also with all services in one file and in one `kind: List`
   (`--layouts`), the layouts `kubectl get -o yaml` gives;
2. single changes at `--change-n` services: a service created, deleted, an externalTrafficPolicy Local
   service's endpoint moved to another node (withdraw) and back (announce), each timed from the file
   write to BIRD's RIB changing (polled on BIRD's control socket every ~1 ms);
3. CPU of the `metallb-bgp run` process per single-service change at `--cpu-small` and `--change-n`;
4. RSS of the speaker and its ExaBGP child with 0 routes and at each cold-start N;
5. the same cold start (`--kube`, default 1,000 and 10,000; `--kube ''` skips it), single changes and
   CPU through the Kubernetes path (`metallb-bgp controller` + `metallb-bgp speaker` against the
   in-process fake API server, bench.kube), next to the embedded run and the raw baseline at the same
   N; single changes are timed from the API request and from the watch event the speaker acts on;
   `--kube-only` skips 1-4;
6. three nodes converging (`--fleet`, default 1,000 and 10,000; root; `--fleet ''` skips it): the
   tests' multi-node topology in network namespaces, three `metallb-bgp run` speakers to two BIRD
   routers, until both hold every service from all three nodes, beside the raw baseline at the same N;
   and ETP Local endpoint moves through the three nodes (bench.fleet).

Figures go to stdout, bench/results/bench-<time>.json (and latest.json), and a PNG if matplotlib is
installed. docs/performance.md explains them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procfs
from bench.report import check_targets, print_report, write_json, write_plot
from bench.scenarios import BaselineRun, SpeakerRun, as_dict, cold_start, delete_all, session_up, wait_for

RESULTS = Path(__file__).resolve().parent / "results"


def counts(text: str) -> list[int]:
    return sorted({int(part.replace("_", "").replace("k", "000")) for part in text.split(",") if part.strip()})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", type=counts, default=counts("1000,10000,50000"),
                        help="cold-start sizes, comma-separated (default 1000,10000,50000)")
    parser.add_argument("--layouts", type=lambda t: [x for x in t.split(",") if x], default=["one-file", "list"],
                        help="cold starts with the services in one file (one-file) and one kind: List (list); '' for none")
    parser.add_argument("--layout-sizes", type=counts, default=counts("10000"), help="sizes of the layout cold starts")
    parser.add_argument("--change-n", type=int, default=10_000, help="services during the single-change runs")
    parser.add_argument("--cpu-small", type=int, default=100, help="the small cluster for the CPU ratio")
    parser.add_argument("--samples", type=int, default=50, help="samples per kind of single change (>= 50)")
    parser.add_argument("--cpu-changes", type=int, default=400, help="changes per CPU measurement (CPU time is read in 10 ms ticks)")
    parser.add_argument("--local-every", type=int, default=10, help="every k-th service is externalTrafficPolicy Local")
    parser.add_argument("--no-baseline", action="store_true", help="skip the raw ExaBGP baseline")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on any one wait for the router, seconds")
    parser.add_argument("--label", default="", help="a word stored with the results (e.g. before/after)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, manifests)")
    parser.add_argument("--kube", type=counts, default=counts("1000,10000"),
                        help="cold-start sizes through the Kubernetes path (controller + speaker + fake API server)")
    parser.add_argument("--kube-change-n", type=int, default=10_000, help="services during the Kubernetes single changes")
    parser.add_argument("--kube-cpu-small", type=int, default=100,
                        help="the small cluster for the Kubernetes path's CPU ratio (its single changes are measured too)")
    parser.add_argument("--kube-samples", type=int, default=50, help="samples per kind of Kubernetes single change (>= 50)")
    parser.add_argument("--kube-only", action="store_true", help="run only the Kubernetes path (--kube)")
    parser.add_argument("--fleet", type=counts, default=counts("1000,10000"),
                        help="three-node convergence sizes, in network namespaces (root); '' for none")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="afterwards, profile `metallb-bgp run` (cProfile) through 100 endpoint moves at N services")
    return parser.parse_args()


def log(text: str) -> None:
    print(text, flush=True)


def measure_idle(directory: Path, results: dict[str, Any], timeout: float) -> None:
    log("-- 0 services: RSS with the session up and no routes")
    run = SpeakerRun(directory, count=0, local_every=0, label="idle")
    try:
        run.start()
        wait_for(lambda: (run.alive(), session_up(run.router))[1], timeout=60, interval=0.1, what="session up")
        time.sleep(2.0)
        results["rss"].append({"routes": 0, **procfs.tree_rss(run.pid)})
    finally:
        run.stop()


def measure_size(directory: Path, results: dict[str, Any], raw: dict[str, Any], args: argparse.Namespace, count: int,
                 *, cold: bool, changes: bool) -> Any:  # fmt: skip
    """Cold start, changes and delete-all at `count` in the file-per-service layout; returns the baseline."""
    baseline = None
    if cold and not args.no_baseline:
        log(f"-- {count} services: raw ExaBGP bulk baseline")
        baseline = BaselineRun(directory, count=count, label=f"baseline-{count}").run()
        log(f"   {baseline.start_to_routes_s:.2f}s to the router (CPU s {baseline.cpu}), withdraw all {baseline.delete_all_to_empty_s:.2f}s")
    log(f"-- {count} services: metallb-bgp run")
    module = "metallb_bgp.cli"
    run = SpeakerRun(directory, count=count, local_every=args.local_every, label=f"run-{count}", module=module)
    try:
        result = cold_start(run, args.timeout)
        result.phases = run.phases()
        log(f"   cold start {result.start_to_routes_s:.2f}s {result.phases} CPU s {result.cpu}")
        time.sleep(1.0)
        result.rss = procfs.tree_rss(run.pid)
        results["rss"].append({"routes": count, **result.rss})
        if changes:
            log(f"   single changes x{args.samples}")
            latencies = run.single_changes(args.samples, log)
            results["single_change"][str(count)] = {kind: lat.summary() for kind, lat in latencies.items()}
            raw[str(count)] = {kind: lat.samples_ms for kind, lat in latencies.items()}
            log(f"   {results['single_change'][str(count)]}")
            log(f"   CPU x{args.cpu_changes}")
            results["cpu_per_change"][str(count)] = run.cpu_per_change(args.cpu_changes)
            log(f"   {results['cpu_per_change'][str(count)]}")
        result.delete_all_to_empty_s = delete_all(run, args.timeout)
        log(f"   delete all {result.delete_all_to_empty_s:.2f}s")
        if cold:
            entry = as_dict(result)
            entry["baseline"] = as_dict(baseline) if baseline else None
            entry["ratio"] = round(result.start_to_routes_s / baseline.start_to_routes_s, 3) if baseline else None
            entry["delete_ratio"] = (
                round(result.delete_all_to_empty_s / baseline.delete_all_to_empty_s, 3) if baseline else None
            )
            results["cold_start"].append(entry)
    finally:
        run.stop()
    return baseline


def measure_layout(directory: Path, results: dict[str, Any], args: argparse.Namespace, count: int, layout: str,
                   baseline: Any) -> None:  # fmt: skip
    """The cold start and delete-all at `count` with every service in one file or one List."""
    log(f"-- {count} services in layout {layout}: metallb-bgp run")
    run = SpeakerRun(directory, count=count, local_every=args.local_every, label=f"run-{count}-{layout}", layout=layout)
    try:
        result = cold_start(run, args.timeout)
        result.phases = run.phases()
        log(f"   cold start {result.start_to_routes_s:.2f}s {result.phases} CPU s {result.cpu}")
        result.delete_all_to_empty_s = delete_all(run, args.timeout)
        entry = as_dict(result)
        entry["baseline"] = as_dict(baseline) if baseline else None
        entry["ratio"] = round(result.start_to_routes_s / baseline.start_to_routes_s, 3) if baseline else None
        entry["delete_ratio"] = round(result.delete_all_to_empty_s / baseline.delete_all_to_empty_s, 3) if baseline else None
        results["cold_start"].append(entry)
    finally:
        run.stop()


def profile_changes(directory: Path, count: int, out: Path, stamp: str, changes: int = 100) -> dict[str, Any]:
    """Where a single change's CPU goes at `count` services: `metallb-bgp run` under cProfile, twice (a
    cold start alone, then a cold start and `changes` endpoint moves); the difference is the changes'."""
    out.mkdir(parents=True, exist_ok=True)
    profiles = {}
    for moves in (0, changes):
        path = out / f"profile-{count}-{moves}-{stamp}.prof"
        log(f"-- {count} services: cProfile of a cold start and {moves} endpoint moves")
        run = SpeakerRun(directory, count=count, local_every=10, label=f"profile-{count}-{moves}", profile=path)
        try:
            cold_start(run, 900)
            if moves:
                run.cpu_per_change(moves, idle_seconds=0.1)
        finally:
            run.stop()
        profiles[moves] = _function_times(path)
    rows = []
    for function, (calls, tottime, cumtime) in profiles[changes].items():
        base_calls, base_tottime, base_cumtime = profiles[0].get(function, (0, 0.0, 0.0))
        if function.endswith("(poll)") or calls == base_calls:
            continue
        rows.append({"function": function, "calls_per_change": round((calls - base_calls) / changes, 1),
                     "tottime_ms_per_change": round((tottime - base_tottime) / changes * 1000, 3),
                     "cumtime_ms_per_change": round((cumtime - base_cumtime) / changes * 1000, 3)})  # fmt: skip
    rows.sort(key=lambda row: -row["tottime_ms_per_change"])
    log("   per change (under cProfile, which slows Python calls down): tottime ms, calls, function")
    for row in rows[:15]:
        log(f"   {row['tottime_ms_per_change']:8.3f} {row['calls_per_change']:>9} {row['function']}")
    return {"count": count, "changes": changes, "top": rows[:30]}


def _function_times(path: Path) -> dict[str, tuple[int, float, float]]:
    import pstats

    stats = pstats.Stats(str(path))
    return {
        f"{Path(filename).name}:{line}({name})": (calls, tottime, cumtime)
        for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items()  # type: ignore[attr-defined]
    }


def main() -> int:
    args = parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "label": args.label,
        "stamp": stamp,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cold_start": [],
        "single_change": {},
        "cpu_per_change": {},
        "rss": [],
    }
    raw: dict[str, Any] = {}
    directory = Path(tempfile.mkdtemp(prefix="mlb-bench-", dir="/tmp"))
    try:
        if not args.kube_only:
            measure_idle(directory, results, args.timeout)
            sizes = sorted(set(args.cold) | {args.change_n, args.cpu_small})
            for count in sizes:
                baseline = measure_size(directory, results, raw, args, count, cold=count in args.cold,
                                        changes=count in (args.change_n, args.cpu_small))  # fmt: skip
                for layout in args.layouts if count in args.layout_sizes else ():
                    measure_layout(directory, results, args, count, layout, baseline)
        if args.kube:
            from bench import kube

            results["kube"] = kube.measure(directory, args, log)
        if args.fleet and not args.kube_only:
            from bench import fleet

            results["fleet"] = fleet.measure(args.fleet, log, baseline=not args.no_baseline)
    finally:
        if args.keep:
            log(f"scratch kept in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
        if args.profile:
            results["profile"] = profile_changes(directory, args.profile, args.out, stamp)
    results["targets"] = check_targets(results, args.change_n, args.cpu_small)
    results["raw_latencies_ms"] = raw
    print_report(results)
    path = write_json(results, args.out, stamp)
    log(f"\nresults: {path}")
    plot = write_plot(results, raw, args.out, stamp)
    if plot is not None:
        log(f"plot: {plot}")
    if "kube" in results:
        from bench.report import write_kube_plot

        kube_plot = write_kube_plot(results["kube"], args.out, stamp)
        if kube_plot is not None:
            log(f"plot: {kube_plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
