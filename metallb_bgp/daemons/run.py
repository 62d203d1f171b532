"""`metallb-bgp run`: controller and speaker in one process, on a folder of manifests.

This is the embedded default (and `make demo`): no Kubernetes, the folder is the cluster. One loop
owns the state: it waits for a change set from the folder watcher, asks the folder what changed, brings
the plan up to date (`reconciler.IncrementalPlanner`: the same answer as `plan.make_plan` on the whole
folder, at the cost of what changed), hands the node's peers and desired routes to the ExaBGP engine,
which sends only the difference, and persists new IP assignments. Problems are logged once when they
appear and once when they clear, not on every reconcile.

After the initial sync the objects loaded so far are moved out of the garbage collector's sight
(`gc.GcPolicy`, which also freezes what a later full collection leaves alive): they live as long as the
process, and scanning tens of thousands of them on every collection would otherwise be most of a small
change's cost.

The state file is written once the engine has taken the routes, not before (`state_file.StateFile`
keeps each service's entry encoded, so a write after a change costs ~1 ms at 10,000 services, not the
~20 ms of encoding every assignment again), and a crash in between loses nothing, because the restarted
process recomputes the same assignments from the same manifests and the previous state file (the
allocation is a deterministic function of both, and the previous file is what this process started
the change from).

ExaBGP is started as soon as the folder is read (with the peers its configuration names), so that its
start-up runs on another core while this process allocates and routes; the engine announces nothing
before the first table it is given.

Nothing is announced before the folder has been read completely once (the initial sync), and a file
that stops parsing keeps its last good objects (see `sources.manifests`), so an editor's half-saved file
never withdraws a route.
"""

from __future__ import annotations

import asyncio
import stat
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import structlog

from metallb_bgp.api.problems import printable
from metallb_bgp.core.change import ClusterChange
from metallb_bgp.core.explain import explain_service
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.plan.incremental import IncrementalPlanner
from metallb_bgp.core.plan.pipeline import Plan
from metallb_bgp.daemons.gc import GcPolicy
from metallb_bgp.daemons.runtime import (
    BMP_LATE,
    NextHops,
    ProblemLog,
    RouterTruth,
    bfd_process,
    bfd_sessions,
    control_answer,
    engine_for,
    find_node,
    first_peers,
    peers_to_withdraw,
    router_of,
    serve_control,
    status_answer,
    until_signalled,
)
from metallb_bgp.exabgp import (
    ExaBGPConfigError,
    ExaBGPEngine,
    SessionState,
)
from metallb_bgp.observe import metrics
from metallb_bgp.sources.manifests import ManifestFolder
from metallb_bgp.sources.state_file import StateFile, load_state

log = structlog.get_logger("metallb_bgp.run")


@dataclass(frozen=True)
class RunOptions:
    manifests: tuple[Path, ...]
    node_name: str
    workdir: Path
    state_file: Path | None = None
    router_id: IPv4Address | None = None
    namespace: str = "metallb-system"
    load_balancer_class: str | None = None
    watch_step_ms: int = 1  # the watcher reports a change 1-2 steps after it; each step wakes a thread
    control_socket: Path | None = None  # where `metallb-bgp status` / `explain` ask (observe.control)
    bmp_listen: tuple[str, int] | None = None  # the BMP station's address (off when None)
    bmp_routers: tuple[str, ...] = ()  # the routers that may connect to it, each expected to report
    bmp_late: float = BMP_LATE


class Runner:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.folder = ManifestFolder(options.manifests, namespace=options.namespace)
        self.assignments: dict[ServiceKey, tuple[IPAddress, ...]] = (
            load_state(options.state_file) if options.state_file else {}
        )
        self.planner = self._new_planner()
        self.problems = ProblemLog(self.folder.file_of)
        self.next_hops = NextHops(options.node_name)
        self.state_file = StateFile(options.state_file, self.assignments) if options.state_file else None
        self.heap = GcPolicy()
        self.bfd = bfd_process()
        self.truth = RouterTruth(options.bmp_listen, options.bmp_routers, late=options.bmp_late)
        self.engine: ExaBGPEngine | None = None
        self.plan: Plan | None = None
        self._unsaved = False  # assignments changed since the state file was written
        self._broken = False  # the last change failed in our code: the next one starts over

    def compute(self, change: ClusterChange) -> Plan:
        """The plan after `change`: what `make_plan` gives for the whole folder, with `existing` being
        the services' status IPs overridden by the assignments we hold (from the state file at first)."""
        plan = self.planner.update(change)
        self.problems.update(plan.problems)
        self._remember(plan)
        return plan

    def _remember(self, plan: Plan) -> None:
        moved = self.planner.assignments_changed
        if not moved:
            return
        now = self.planner.remembered
        for key in sorted(moved):
            if key not in self.assignments:
                log.info("ip_allocated", service=str(key), ips=[str(ip) for ip in now[key]])
            elif key not in now:
                log.info("ip_released", service=str(key), ips=[str(ip) for ip in self.assignments[key]])
        for key, reason in sorted(plan.allocation.refusals.items()):
            log.warning("ip_not_allocated", service=str(key), reason=reason)
        for key in moved:
            if key in now:
                self.assignments[key] = now[key]
            else:
                self.assignments.pop(key, None)
            if self.state_file is not None:
                self.state_file.set(key, now.get(key))
        self._unsaved = self.state_file is not None

    def _save_state(self) -> None:
        if self._unsaved and self.state_file is not None:
            self.state_file.write()
            self._unsaved = False

    async def reconcile(self, plan: Plan) -> None:
        started = time.monotonic()
        assert self.engine is not None
        self.truth.track(plan.peers)  # before a new session can come up and be reported
        try:
            await self.engine.set_peers(plan.peers)
        except ExaBGPConfigError as exc:
            log.error("peers_not_applied", error=str(exc), action="previous sessions kept")
        await self.engine.apply(plan.table, touched=self.planner.routes_touched)
        profiles = plan.compiled.config.bfd_profiles  # a new Config gives new peers: `want` recomputes
        await self.bfd.want(plan.peers, lambda: bfd_sessions(plan.peers, profiles))
        self.plan = plan
        self._save_state()
        if metrics.enabled():  # nobody can scrape them otherwise
            metrics.record_routes(plan.table, plan.peers)
            metrics.record_sessions({n: s.state is SessionState.ESTABLISHED for n, s in self.engine.peer_states().items()})
            metrics.record_config(plan.problems)
        metrics.record_reconcile(time.monotonic() - started)
        stats = self.planner.stats
        log.info(
            "reconciled",
            routes=len(plan.table.routes),
            skipped=len(plan.table.skipped),
            peers=len(plan.peers),
            services_allocated=stats.allocated,
            services_routed=stats.routed,
            seconds=round(time.monotonic() - started, 4),
        )

    async def run(self, stop: asyncio.Event) -> None:
        changes: asyncio.Queue[set[Path]] = asyncio.Queue()
        watcher = asyncio.create_task(self._watch(changes), name="manifest-watch")
        # watchfiles registers its inotify watches synchronously in the task's first step: after this
        # yield, a write is either seen by the full read below or reported by the watcher (or both).
        await asyncio.sleep(0)
        started = time.monotonic()
        change = self._load()
        peers = first_peers(change, self.options.node_name)
        assert change.config is not None
        node = find_node(change.config, self.options.node_name)
        hops = self.next_hops.update(node, peers)
        self.engine = engine_for(self.options.workdir, peers, hops, router_id=self.options.router_id, node=node)
        metrics.watch_engine(self.engine)
        metrics.watch_announced(self.options.node_name, lambda: self.plan.table if self.plan is not None else None)
        # ExaBGP starts (in its own process: the other core) while this one allocates and routes; the
        # engine sends nothing before the first apply, so nothing is announced before the initial sync.
        starting = asyncio.create_task(self.engine.start(peers), name="exabgp-start")
        control = await serve_control(self.options.control_socket, self._answer)
        self.truth.track(peers)
        await self.truth.start()
        try:
            try:
                plan = await asyncio.to_thread(self._first_plan, change, started)
            finally:
                await asyncio.wait([starting])
            starting.result()
            await self.reconcile(plan)
            while not stop.is_set():
                changed = await _next_or_stop(changes, stop)
                if changed is None:
                    break
                woken_at = time.monotonic()
                while not changes.empty():  # coalesce whatever else arrived meanwhile
                    changed |= changes.get_nowait()
                await self.step(changed, woken_at=woken_at)
                self.heap.settle()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if control is not None:
                control.close()
            await self.truth.close()
            await self.engine.stop(withdraw=self._withdraw_on_stop())
            await self.bfd.stop()  # AdminDown to each BFD peer: a stop, not a failure (RFC 5882 3.2)
            log.info("stopped")

    async def step(self, changed: set[Path], *, woken_at: float | None = None) -> None:
        """One change set from the watcher, read, planned and applied.

        Whatever a file or object does to the code that reads, compiles or plans it, the failure stops
        here: it is logged, the routes stay as they are, and the next change set starts over from a
        fresh read of the whole folder with a new planner (the old one may have been left half-updated),
        carrying the assignments in force. Nothing is withdrawn because our code failed.
        """
        assert self.engine is not None
        log.debug("manifests_changed", files=sorted(str(p) for p in changed))
        try:
            read = self._start_over if self._broken else self.folder.reload
            # a large read goes to a worker thread: a hostile file may take seconds to refuse (see
            # `api.loader.Limits`), and meanwhile the engine's tasks on this loop (session events,
            # re-pushes) keep running; a small one stays here, where it costs no thread hop (~0.5 ms
            # of the event-to-router latency in `make bench`)
            change = await asyncio.to_thread(read, changed) if self._broken or _large(changed) else read(changed)
            plan = self.compute(change)
        except Exception as exc:  # noqa: BLE001 - one change's failure must never end the daemon
            self._broken = True
            log.error(
                "reconcile_failed", error=type(exc).__name__, detail=printable(str(exc))[:300],
                action="routes kept as they were; the next change re-reads the whole folder",
            )  # fmt: skip
            metrics.record_reconcile_failure()
            return
        self._broken = False
        if change.config is not None:  # the Node may have changed: its addresses are next hops
            node = find_node(change.config, self.options.node_name)
            self.engine.set_next_hops(*self.next_hops.update(node, plan.peers))
        await self.reconcile(plan)
        if woken_at is not None:
            metrics.record_change_latency(time.monotonic() - woken_at)

    # --- what `metallb-bgp status` and `explain` ask (observe.control) --------------------------------

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.plan is None or self.engine is None:
            return {"error": "starting: the manifests have not been planned yet"}
        return control_answer(request, self.status, self.explain)

    def status(self) -> dict[str, Any]:
        assert self.plan is not None and self.engine is not None
        return status_answer("embedded", self.options.node_name, self.plan.table, self.plan.peers, self.engine,
                             self.bfd.states, self.plan.problems, self.truth.status())  # fmt: skip

    def explain(self, key: ServiceKey) -> dict[str, Any]:
        assert self.plan is not None and self.engine is not None
        node = self.planner.node
        states = {name: state.state.value for name, state in self.engine.peer_states().items()}
        return explain_service(
            key, service=self.planner.services.get(key), allocation=self.plan.allocation,
            config=self.plan.compiled.config, node_name=self.options.node_name,
            node_labels=node.metadata.labels if node is not None else {}, table=self.plan.table,
            advertised=self.engine.advertised, sessions=states, router=router_of(self.plan.peers, self.engine, self.truth),
        )  # fmt: skip

    def _start_over(self, _changed: set[Path]) -> ClusterChange:
        """Everything again, from the files, for a new planner that starts from the assignments in force."""
        self.planner = self._new_planner()
        return self.folder.load()

    def _new_planner(self) -> IncrementalPlanner:
        return IncrementalPlanner(
            node_name=self.options.node_name,
            load_balancer_class=self.options.load_balancer_class,
            remembered=dict(self.assignments),
        )

    def _load(self) -> ClusterChange:
        """The whole folder, read before anything is announced (the objects all live on: collecting
        them finds nothing, so collections are held off until `_first_plan` has run; see `heap`)."""
        self.heap.hold(limit=None)  # the read is bounded by the folder, and the release runs in a thread
        try:
            return self.folder.load()
        except BaseException:
            self.heap.release(freeze=False)
            raise

    def _first_plan(self, change: ClusterChange, started: float) -> Plan:
        loaded = time.monotonic()
        planned = False
        try:
            plan = self.compute(change)
            planned = True
        finally:
            self.heap.release(freeze=planned)
        log.info(
            "initial_sync",
            files=len(self.folder.files),
            services=len(change.services),
            load_seconds=round(loaded - started, 3),
            plan_seconds=round(time.monotonic() - loaded, 3),
        )
        return plan

    def _withdraw_on_stop(self) -> set[str]:
        return set() if self.plan is None else peers_to_withdraw(self.plan.peers)

    async def _watch(self, changes: asyncio.Queue[set[Path]]) -> None:
        async for changed in self.folder.changes(step_ms=self.options.watch_step_ms):
            changes.put_nowait(changed)


INLINE_READ_BYTES = 256 * 1024  # changed files up to this size are read on the loop itself


def _large(changed: set[Path]) -> bool:
    """Whether reading `changed` may take long: more than INLINE_READ_BYTES, or a folder to scan."""
    total = 0
    for path in changed:
        try:
            info = path.stat()
        except OSError:
            continue  # gone: nothing to read
        if not stat.S_ISREG(info.st_mode):
            return True
        total += info.st_size
        if total > INLINE_READ_BYTES:
            return True
    return False


async def _next_or_stop(changes: asyncio.Queue[set[Path]], stop: asyncio.Event) -> set[Path] | None:
    getter = asyncio.ensure_future(changes.get())
    stopper = asyncio.ensure_future(stop.wait())
    done, pending = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return getter.result() if getter in done else None


async def run(options: RunOptions) -> None:
    await until_signalled(Runner(options).run)


