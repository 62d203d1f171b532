"""Which Kubernetes Events are due: a problem's Event once while the problem lasts, a transition's once.

Shared by the controller and the speaker (both write Events through `kube.writer`); a failed write
stays due and is tried again on a later reconcile, a bounded number of times.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from metallb_bgp.core.writes import EventSpec, WriteOutcome, WriteResult


class EventLedger:
    """Which Events are due: problem events once while the problem lasts, transition events once.

    A failed emission stays due and is tried again on a later reconcile, up to `max_attempts`.
    """

    def __init__(self, *, max_attempts: int = 5) -> None:
        self.max_attempts = max_attempts
        self.emitted: set[EventSpec] = set()  # problem events already emitted, still current
        self.current: frozenset[EventSpec] = frozenset()
        self.once: dict[EventSpec, int] = {}  # transition events not yet emitted -> attempts
        self.attempts: dict[EventSpec, int] = {}

    def set_problems(self, current: frozenset[EventSpec]) -> None:
        self.current = current
        self.emitted &= current  # a resolved problem is emitted again if it comes back
        self.attempts = {spec: n for spec, n in self.attempts.items() if spec in current}

    def add_once(self, specs: Iterable[EventSpec]) -> None:
        for spec in specs:
            self.once.setdefault(spec, 0)

    def due(self, limit: int | None = None) -> list[EventSpec]:
        """The Events to write now, at most `limit`: transition events in the order they came (a cold
        start holds thousands, paced out a batch at a time: no sort per batch), then current problems."""
        return list(itertools.islice(itertools.chain(self.once, sorted(self.current - self.emitted)), limit))

    def pending(self) -> int:
        return len(self.once) + len(self.current - self.emitted)

    def record(self, spec: EventSpec, result: WriteResult) -> None:
        if spec in self.once:
            self.once[spec] += 1
            if result.ok or result.outcome is WriteOutcome.NOT_FOUND or self.once[spec] >= self.max_attempts:
                del self.once[spec]
            return
        self.attempts[spec] = self.attempts.get(spec, 0) + 1
        if result.ok or result.outcome is WriteOutcome.NOT_FOUND or self.attempts[spec] >= self.max_attempts:
            self.emitted.add(spec)
