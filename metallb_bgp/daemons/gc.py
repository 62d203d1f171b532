"""What the daemons ask of Python's garbage collector, and why.

Why: a daemon's cluster lives in hundreds of thousands of small objects (caches, the planner's
indexes) that live on until a change replaces them, and almost none of them are in reference cycles.
CPython's full collection scans every one of them each time the heap has grown by a quarter, and finds
nothing. Measured at 10,000 services through the Kubernetes path: full collections of 100-410 ms that
freed nothing, five in the first 1.5 s of a speaker's start, then more while the controller's status
writes arrived, and about one in 50 single changes afterwards in both daemons (the bench's ~430 ms
create outliers).

So: collections are held off while the first read runs (everything it makes lives on), everything
alive is frozen (`gc.freeze`) once the first plan is made, and after any later reconcile during which a
full collection ran, everything alive then is frozen too (what that collection left, and what the
reconcile keeps; its temporaries are gone by then). Frozen objects are never scanned
again; reference counting still frees each one when a cache lets go of it. What stays for the
collector is what was made since the last freeze, so a full collection costs what changed since, not
the size of the cluster. The price: a reference cycle among frozen objects that dies later is never
freed; the cluster's objects form none.

The hold has a time limit: a daemon that cannot reach its API server keeps retrying, and the garbage of
its retries must not pile up uncollected.
"""

from __future__ import annotations

import asyncio
import gc

HOLD_LIMIT = 30.0  # seconds; a first read through the API at 10,000 services takes ~1 s


def _full_collections() -> int:
    return int(gc.get_stats()[-1]["collections"])


class GcPolicy:
    def __init__(self) -> None:
        self._held = False
        self._limit: asyncio.TimerHandle | None = None
        self._full = _full_collections()

    def hold(self, limit: float | None = HOLD_LIMIT) -> None:
        """Hold collections off until `release`, or for `limit` seconds (if nobody else already has)."""
        if gc.isenabled():
            gc.disable()
            self._held = True
            if limit is not None:
                self._limit = asyncio.get_running_loop().call_later(limit, self._resume)

    def release(self, *, freeze: bool) -> None:
        """Collections back on; with `freeze`, everything alive now is left out of them from now on."""
        self._resume()
        if freeze:
            self._freeze()

    def settle(self) -> None:
        """After a reconcile: if a full collection ran since the last freeze, freeze everything alive now."""
        if _full_collections() != self._full:
            self._freeze()

    def _freeze(self) -> None:
        gc.freeze()
        self._full = _full_collections()

    def _resume(self) -> None:
        if self._limit is not None:
            self._limit.cancel()
            self._limit = None
        if self._held:
            gc.enable()
            self._held = False
