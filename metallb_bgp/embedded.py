"""`metallb-bgp run`: controller and speaker in one process, on a folder of manifests.

This is the embedded default (and `make demo`): no Kubernetes, the folder is the cluster. One loop
owns the state: it waits for a change set from the folder watcher, recomputes the whole plan (pure),
persists new IP assignments, and hands the node's peers and desired routes to the ExaBGP engine, which
sends only the difference. Problems are logged once when they appear and once when they clear, not on
every reconcile.

Nothing is announced before the folder has been read completely once (the initial sync), and a file
that stops parsing keeps its last good objects (see `sources.manifests`), so an editor's half-saved file
never withdraws a route.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import structlog

from metallb_bgp.config import Peer
from metallb_bgp.errors import ObjectError
from metallb_bgp.exabgp import ExaBGPConfigError, ExaBGPEngine
from metallb_bgp.net import IPAddress
from metallb_bgp.objects import ServiceKey
from metallb_bgp.plan import Plan, make_plan
from metallb_bgp.snapshot import ClusterSnapshot
from metallb_bgp.sources.manifests import ManifestFolder
from metallb_bgp.state_file import load_state, save_state

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


def status_assignments(snapshot: ClusterSnapshot) -> dict[ServiceKey, tuple[IPAddress, ...]]:
    """IPs already written in the manifests' Service status (as `kubectl get -o yaml` shows them)."""
    found: dict[ServiceKey, tuple[IPAddress, ...]] = {}
    for service in snapshot.services:
        ips = []
        for ingress in service.status.load_balancer.ingress:
            try:
                ips.append(ipaddress.ip_address(ingress.ip))
            except ValueError:
                continue
        if ips:
            found[ServiceKey(service.namespace, service.name)] = tuple(ips)
    return found


def choose_router_id(peers: tuple[Peer, ...], explicit: IPv4Address | None) -> IPv4Address:
    """--router-id, else a peer's routerID, else an IPv4 sourceAddress, else 127.0.0.1 (demo only)."""
    if explicit is not None:
        return explicit
    for candidate in [p.router_id for p in peers] + [p.source_address for p in peers]:
        if isinstance(candidate, IPv4Address):
            return candidate
    return IPv4Address("127.0.0.1")


class ProblemLog:
    """Logs each problem when it appears and when it is resolved, not on every reconcile."""

    def __init__(self) -> None:
        self.current: frozenset[ObjectError] = frozenset()

    def update(self, problems: tuple[ObjectError, ...]) -> None:
        new = frozenset(problems)
        for problem in sorted(new - self.current):
            (log.error if problem.is_error else log.warning)(
                "config_problem", object=problem.object_ref, field=problem.field, message=problem.message
            )
        for problem in sorted(self.current - new):
            log.info("config_problem_resolved", object=problem.object_ref, field=problem.field)
        self.current = new


class EmbeddedRunner:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.folder = ManifestFolder(options.manifests, namespace=options.namespace)
        self.assignments: dict[ServiceKey, tuple[IPAddress, ...]] = (
            load_state(options.state_file) if options.state_file else {}
        )
        self.problems = ProblemLog()
        self.engine: ExaBGPEngine | None = None
        self.plan: Plan | None = None

    def compute(self) -> Plan:
        snapshot = self.folder.snapshot()
        existing = status_assignments(snapshot) | self.assignments
        plan = make_plan(
            snapshot,
            node_name=self.options.node_name,
            existing=existing,
            load_balancer_class=self.options.load_balancer_class,
        )
        self.problems.update(plan.problems)
        self._remember(plan)
        return plan

    def _remember(self, plan: Plan) -> None:
        assignments = {key: a.ips for key, a in plan.allocation.assignments.items()}
        if assignments == self.assignments:
            return
        for key in sorted(assignments.keys() - self.assignments.keys()):
            log.info("ip_allocated", service=str(key), ips=[str(ip) for ip in assignments[key]])
        for key in sorted(self.assignments.keys() - assignments.keys()):
            log.info("ip_released", service=str(key), ips=[str(ip) for ip in self.assignments[key]])
        for key, reason in sorted(plan.allocation.refusals.items()):
            log.warning("ip_not_allocated", service=str(key), reason=reason)
        self.assignments = assignments
        if self.options.state_file is not None:
            save_state(self.options.state_file, assignments)

    async def reconcile(self, plan: Plan) -> None:
        started = time.monotonic()
        assert self.engine is not None
        try:
            await self.engine.set_peers(plan.peers)
        except ExaBGPConfigError as exc:
            log.error("peers_not_applied", error=str(exc), action="previous sessions kept")
        await self.engine.apply(plan.table)
        self.plan = plan
        log.info(
            "reconciled",
            routes=len(plan.table.routes),
            skipped=len(plan.table.skipped),
            peers=len(plan.peers),
            seconds=round(time.monotonic() - started, 4),
        )

    async def run(self, stop: asyncio.Event) -> None:
        changes: asyncio.Queue[set[Path]] = asyncio.Queue()
        watcher = asyncio.create_task(self._watch(changes), name="manifest-watch")
        # watchfiles registers its inotify watches synchronously in the task's first step: after this
        # yield, a write is either seen by the full read below or reported by the watcher (or both).
        await asyncio.sleep(0)
        self.folder.load()  # initial sync: the whole folder before anything is announced
        plan = self.compute()
        router_id = choose_router_id(plan.peers, self.options.router_id)
        local = tuple(p.source_address for p in plan.peers if p.source_address is not None)
        self.engine = ExaBGPEngine(workdir=self.options.workdir, router_id=router_id, local_addresses=local)
        try:
            await self.engine.start(plan.peers)
            await self.reconcile(plan)
            while not stop.is_set():
                changed = await _next_or_stop(changes, stop)
                if changed is None:
                    break
                while not changes.empty():  # coalesce whatever else arrived meanwhile
                    changed |= changes.get_nowait()
                self.folder.reload(changed)
                log.debug("manifests_changed", files=sorted(str(p) for p in changed))
                await self.reconcile(self.compute())
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await self.engine.stop(withdraw=self._withdraw_on_stop())
            log.info("stopped")

    def _withdraw_on_stop(self) -> set[str]:
        """Peers to withdraw from before exiting: those without graceful restart. ExaBGP closes its
        sessions without a Cease, so they would otherwise keep our routes until their hold time runs out;
        graceful-restart peers keep them as stale across our restart, which is the point (hitless)."""
        plan = self.plan
        return set() if plan is None else {p.name for p in plan.peers if not p.graceful_restart}

    async def _watch(self, changes: asyncio.Queue[set[Path]]) -> None:
        async for changed in self.folder.changes():
            changes.put_nowait(changed)


async def _next_or_stop(changes: asyncio.Queue[set[Path]], stop: asyncio.Event) -> set[Path] | None:
    getter = asyncio.ensure_future(changes.get())
    stopper = asyncio.ensure_future(stop.wait())
    done, pending = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return getter.result() if getter in done else None


async def run(options: RunOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await EmbeddedRunner(options).run(stop)


