"""What if the ExaBGP engine synced only what changed? A bench-only experiment, not product code.

With the incremental planner, a one-service change at 10,000 services costs us about a millisecond;
what remains is the engine's sync pass (`commands.plan_sync`), which rebuilds and diffs the whole table
(every route hashed several times) on every `apply`. This module runs the real `metallb-bgp run` with
that one pass replaced, to measure what an incremental engine would give before anyone writes it:

- the embedded loop hands the engine the routes the planner touched (`IncrementalPlanner.routes_touched`);
- a sync pass with such a hint, no fresh session, the same sessions and the same rendered config as the
  previous pass diffs only those routes against what was sent; anything else takes the engine's own path.

It patches private engine internals, so it is for `python -m bench --what-if-engine` only.

    python -m bench.whatif_engine run --manifests DIR --node NODE ...   (same arguments as metallb-bgp)
"""

from __future__ import annotations

import sys
from typing import Any

from metallb_bgp import cli, embedded
from metallb_bgp.exabgp import commands
from metallb_bgp.exabgp.engine import ExaBGPEngine
from metallb_bgp.plan import Plan
from metallb_bgp.routes import RouteAttributes, RouteDiff, RouteKey, group_routes

_engine_sync = ExaBGPEngine._sync_pass
_runner_reconcile = embedded.EmbeddedRunner.reconcile


async def reconcile(self: embedded.EmbeddedRunner, plan: Plan) -> None:
    if self.engine is not None:
        self.engine._whatif_touched = self.planner.routes_touched  # type: ignore[attr-defined]
    await _runner_reconcile(self, plan)


async def sync_pass(self: ExaBGPEngine, channel: Any) -> None:
    touched = getattr(self, "_whatif_touched", None)
    self._whatif_touched = None  # type: ignore[attr-defined]
    established = frozenset(self._established)
    seen = (established, self._rendered.text)
    same_sessions = getattr(self, "_whatif_seen", None) == seen
    self._whatif_seen = seen  # type: ignore[attr-defined]
    if touched is None or not same_sessions or self._fresh & established:
        await _engine_sync(self, channel)
        return
    neighbors, desired, sent = self._rendered.neighbors, self._desired.routes, self._sent
    withdraw: dict[RouteKey, RouteAttributes] = {}
    announce: dict[RouteKey, RouteAttributes] = {}
    for key in touched:
        peer = key[0]
        if peer not in established:
            continue  # down: its routes are pushed whole when it comes back
        carried = commands.can_carry(neighbors.get(peer), key[1].version, self._next_hops)
        want = desired.get(key) if carried else None
        have = sent.get(key)
        if want is None and have is not None:
            withdraw[key] = have
            del sent[key]
        elif want is not None and want != have:
            announce[key] = want
            sent[key] = want
    change = RouteDiff(withdraw=group_routes(withdraw), announce=group_routes(announce))
    lines = commands.route_commands(
        change, neighbors, next_hops=self._next_hops, prefixes_per_command=self._tuning.prefixes_per_command
    )
    futures = [await channel.submit(line) for line in lines]
    for future in futures:
        await channel.wait(future)


embedded.EmbeddedRunner.reconcile = reconcile  # type: ignore[method-assign]
ExaBGPEngine._sync_pass = sync_pass  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
