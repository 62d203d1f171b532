"""Exponential backoff with jitter, the one policy behind every retry the engine makes.

Three things are retried: an ExaBGP child that died (restarted), route updates ExaBGP refused (sent
again), and a session the router keeps resetting (its neighbour held out of the configuration). Each
waits `initial`, doubling per failure up to `maximum`, and is reset by the caller after a stretch of
success. The jitter draws each wait from the upper `jitter` fraction below it, so many speakers that
failed together (a router restart seen by every node) do not come back in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float
    maximum: float
    jitter: float = 0.25
    failures: int = 0  # since the last reset

    def next(self) -> float:
        """The wait after one more failure."""
        self.failures += 1
        delay = min(self.initial * 2 ** (self.failures - 1), self.maximum)
        return delay * random.uniform(1.0 - self.jitter, 1.0)

    def reset(self) -> None:
        self.failures = 0
