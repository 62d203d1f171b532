"""A bad file never costs a route: the hostile corpus (`hostile_corpus`) against `validate` and a live `run`.

Three good services are announced to a real BIRD through a real ExaBGP child. Every hostile file is
then dropped into the folder: it must be reported naming the file, the object and the field (the
case's words), in bounded time and memory, without a traceback, and the router must still hold
exactly the three routes it held before. A failure injected into each stage of our own code (reading,
parsing, indexing, compiling, allocating, routing) must cost nothing either.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from bird import BirdRouter, Speaker
from builders import service_manifest
from hostile_corpus import GOOD_SERVICES, Case, corpus
from runs import ADVERTISEMENT, POOL, SPEAKER, Run, free_peer_port, router_peer
from waiting import eventually, wait_until

from metallb_bgp.cli import main
from metallb_bgp.daemons.run import Runner, RunOptions

CASES = corpus()
SECRET = """apiVersion: v1
kind: Secret
metadata: {name: s, namespace: metallb-system}
type: kubernetes.io/basic-auth
stringData: {password: pw}
"""
UNPRINTABLE = {chr(c) for c in range(32) if chr(c) != "\n"} | {"\x7f", "\u2028", "\u2029"}


def write(path: Path, text: str | bytes) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def good_folder(folder: Path, router_port: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pool.yaml").write_text(POOL)
    (folder / "peer.yaml").write_text(router_peer(router_port))
    (folder / "adv.yaml").write_text(ADVERTISEMENT.format(community="64500:1"))
    (folder / "secret.yaml").write_text(SECRET)
    for name in GOOD_SERVICES:
        (folder / f"{name}.yaml").write_text(service_manifest(name))


def test_the_corpus_is_large_and_every_case_is_distinct() -> None:
    assert len(CASES) >= 100
    assert len({case.text for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_validate_reports_each_hostile_file_by_name_field_and_reason(case: Case, tmp_path: Path) -> None:
    good_folder(tmp_path, 1790)
    write(tmp_path / case.filename, case.text)
    out, err = io.StringIO(), io.StringIO()
    started = time.process_time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["validate", str(tmp_path)])
    used = time.process_time() - started
    lines = out.getvalue().splitlines()
    assert status in (0, 1), err.getvalue()  # 2 would be an internal failure
    assert "Traceback" not in err.getvalue() + out.getvalue()
    naming = [line for line in lines if case.filename in line or case.clash]
    assert any(case.expect in line for line in naming), lines
    assert not UNPRINTABLE & set(out.getvalue()), "a user string reached the output raw"
    assert used < 10, f"{used:.1f} s of CPU for one file"  # a bound on the damage, not a benchmark


@pytest.fixture
def live(short_tmp: Path, bird_factory: Callable[..., BirdRouter]) -> Iterator[tuple[BirdRouter, Path, Run]]:
    router = bird_factory(asn=64501, port=free_peer_port())
    router.add_speaker(Speaker(name="speaker", address=SPEAKER, asn=64500)).start()
    manifests = short_tmp / "manifests"
    good_folder(manifests, router.port)
    run = Run(manifests, short_tmp / "run", short_tmp / "state.json")
    try:
        yield router, manifests, run
    finally:
        run.stop()
        print(f"--- {run.log_path.name}\n{run.log_path.read_text()[-4000:]}")


def routes_of(router: BirdRouter) -> dict[ipaddress.IPv4Network | ipaddress.IPv6Network, tuple[str, ...]]:
    return {prefix: route.communities for prefix, route in router.routes().items()}


class LogReader:
    """The run's JSON events, read on from where the last call stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: list[dict[str, Any]] = []

    def new(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        fresh = [json.loads(line) for line in complete.splitlines() if line.startswith(b"{")]
        self.events += fresh
        return fresh


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.router
@pytest.mark.timeout(600)
def test_a_live_run_loses_no_route_to_any_hostile_file(live: tuple[BirdRouter, Path, Run]) -> None:
    router, manifests, run = live
    before = router.wait_routes(lambda r: len(r) == len(GOOD_SERVICES), what="the good services' routes")
    assert run.workdir.stat().st_mode & 0o777 == 0o700  # created by run: private (it holds the API socket)
    expected = routes_of(router)
    log = LogReader(run.log_path)
    slowest = (0.0, "")
    for case in CASES:
        path = manifests / case.filename
        started = time.monotonic()
        write(path, case.text)

        def reported(case: Case = case) -> bool:
            log.new()
            texts = (" ".join(map(str, e.values())) for e in log.events[-300:] if e.get("event") == "config_problem")
            return any(case.filename in text and case.expect in text for text in texts)

        wait_until(reported, timeout=30, interval=0.02, what=f"{case.name} reported")
        slowest = max(slowest, (time.monotonic() - started, case.name))
        assert run.process.poll() is None, f"run exited on {case.name}"
        assert routes_of(router) == expected, f"routes changed after {case.name}"
        path.unlink()
    time.sleep(0.5)  # the last removal reconciled
    assert routes_of(router) == expected
    assert set(router.routes()) == set(before)
    log.new()
    assert not [e for e in log.events if e.get("event") == "reconcile_failed"]
    assert "Traceback" not in run.log_path.read_text()
    print(f"{len(CASES)} hostile files; slowest to be reported: {slowest[1]} in {slowest[0]:.2f} s; "
          f"run's peak RSS {vm_hwm_mb(run.process.pid):.0f} MB")
    assert vm_hwm_mb(run.process.pid) < 1024


# ---------------------------------------------------------------- failures injected into our own code


def _poisoned(name: str) -> bool:
    return "poison" in name


def _fail_on_poison(original: Callable[..., Any], pick: Callable[..., str]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _poisoned(pick(*args, **kwargs)):
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    return wrapper


def _injections() -> dict[str, tuple[object, str, Callable[..., str]]]:
    from metallb_bgp.api import loader
    from metallb_bgp.core.allocator import incremental as allocator
    from metallb_bgp.core.plan import incremental, tracking
    from metallb_bgp.sources import manifests

    def text_of(text: str, **_kw: Any) -> str:
        return text

    def doc_of(doc: Any, **_kw: Any) -> str:
        return json.dumps(doc, default=str)

    return {
        "yaml": (loader, "yaml_documents", text_of),
        "parse": (loader, "parse_object", doc_of),
        "index": (manifests._Index, "replace", lambda _self, path, *_a: str(path)),
        "compile": (tracking, "compile_config", lambda snapshot, **_kw: json.dumps([p.name for p in snapshot.pools])),
        "allocate": (allocator.IncrementalAllocation, "update", lambda _self, _services, changed, _previous: str(sorted(changed))),
        "routes": (incremental, "service_routes", lambda _context, service, *_a: service.name),
    }


@pytest.mark.router
@pytest.mark.parametrize("stage", ["yaml", "parse", "index", "compile", "allocate", "routes"])
def test_a_failure_injected_into_each_stage_keeps_every_route(
    stage: str, short_tmp: Path, bird_factory: Callable[..., BirdRouter], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = bird_factory(asn=64501, port=free_peer_port())
    router.add_speaker(Speaker(name="speaker", address=SPEAKER, asn=64500)).start()
    manifests = short_tmp / "manifests"
    good_folder(manifests, router.port)
    target, attribute, pick = _injections()[stage]
    monkeypatch.setattr(target, attribute, _fail_on_poison(getattr(target, attribute), pick))
    poison = {
        "yaml": service_manifest("poison"), "parse": service_manifest("poison"), "index": service_manifest("poison"),
        "compile": POOL.replace("name: pool", "name: poison").replace("198.51.100.0/28", "203.0.113.0/28"),
        "allocate": service_manifest("poison"), "routes": service_manifest("poison"),
    }[stage]

    async def scenario() -> list[dict[str, Any]]:
        runner = Runner(RunOptions(manifests=(manifests,), node_name="node-a", workdir=short_tmp / "run"))
        stop = asyncio.Event()
        with structlog.testing.capture_logs() as events:
            task = asyncio.create_task(runner.run(stop))
            try:
                await eventually(lambda: len(router.routes()) == 3, timeout=20, what="the good routes")
                expected = routes_of(router)
                (manifests / "poison.yaml").write_text(poison)
                await eventually(lambda: _seen(events, stage), timeout=10, what=f"the {stage} failure reported")
                await asyncio.sleep(0.3)
                assert routes_of(router) == expected and not task.done()
                (manifests / "poison.yaml").unlink()
                (manifests / "late.yaml").write_text(service_manifest("late"))  # the daemon still works
                await eventually(lambda: len(router.routes()) == 4, timeout=10, what="a later service announced")
                assert set(expected) <= set(router.routes())
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
        return events

    events = asyncio.run(scenario())
    assert any(_seen([e], stage) for e in events)


def _seen(events: list[dict[str, Any]], stage: str) -> bool:
    if stage in ("yaml", "parse"):  # reading is guarded per file: the file's own problem
        return any(e.get("event") == "config_problem" and "poison" in str(e) and "RuntimeError" in str(e) for e in events)
    return any(e.get("event") == "reconcile_failed" and e.get("error") == "RuntimeError" for e in events)
