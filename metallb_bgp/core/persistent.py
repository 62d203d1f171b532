"""Read-only snapshots of a dict that keeps changing, at O(1) each.

The incremental planner keeps its route table and its assignments in dicts it updates one service at a
time, and every Plan it hands out must stay as it was when handed out. Copying the dicts for each Plan
cost O(services) per change; these snapshots cost O(1) to take and O(1) per later write (see
`SnapshotDict`). Only readers that walk a whole snapshot pay for a copy, once.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_ABSENT: Any = object()


class SnapshotDict(Generic[K, V]):
    """A dict that hands out read-only snapshots for O(1) each, and stays O(1) per write.

    A Plan is immutable: its table and allocation must not change when the planner moves on. Copying
    the planner's dicts for every Plan cost O(services) per change (~1.5 ms of a 3.3 ms change at 10,000
    services in `make bench`). Instead a snapshot is a view over the live dict plus an undo log: once a
    snapshot is out, each write first records, in the newest snapshot, the value the key had (only the
    first write to a key counts). An older snapshot reads its own log, then the newer snapshots' logs,
    then the live dict (the "rerooting" trick of persistent arrays). Iterating a snapshot (or comparing
    it) builds its plain dict once, as the copy used to: only readers that walk the whole table pay it.
    """

    __slots__ = ("_data", "_latest")

    def __init__(self) -> None:
        self._data: dict[K, V] = {}
        self._latest: weakref.ref[DictSnapshot[K, V]] | None = None

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def get(self, key: K, default: Any = None) -> Any:
        return self._data.get(key, default)

    def keys(self) -> Any:
        return self._data.keys()

    def items(self) -> Any:
        return self._data.items()

    def __setitem__(self, key: K, value: V) -> None:
        if self._latest is not None:
            self._record(key)
        self._data[key] = value

    def __delitem__(self, key: K) -> None:
        if self._latest is not None:
            self._record(key)
        del self._data[key]

    def pop(self, key: K, default: Any = None) -> Any:
        if key not in self._data:
            return default
        value = self._data[key]
        del self[key]
        return value

    def update(self, other: Mapping[K, V]) -> None:
        for key, value in other.items():
            self[key] = value

    def _record(self, key: K) -> None:
        assert self._latest is not None
        snapshot = self._latest()
        if snapshot is None or snapshot._data is not None:  # gone, or already a dict of its own
            self._latest = None
            return
        undo = snapshot._undo
        if key not in undo:
            undo[key] = self._data.get(key, _ABSENT)

    def snapshot(self) -> DictSnapshot[K, V]:
        """The dict as it is now, read-only; later writes do not show in it."""
        previous = self._latest() if self._latest is not None else None
        if previous is not None and previous._data is None:
            if not previous._undo:  # nothing written since: the same contents
                return previous
            snapshot = DictSnapshot(self._data)
            previous._next = snapshot  # from now on the live dict moves on past `snapshot`, not it
        else:
            snapshot = DictSnapshot(self._data)
        self._latest = weakref.ref(snapshot)
        return snapshot


class DictSnapshot(Mapping[K, V]):
    """One state of a `SnapshotDict`: a read-only Mapping equal to the plain dict it stands for."""

    __slots__ = ("__weakref__", "_data", "_len", "_live", "_next", "_undo")

    def __init__(self, live: dict[K, V]) -> None:
        self._live = live
        self._undo: dict[K, V] = {}  # what changed in `live` after this snapshot and before the next
        self._next: DictSnapshot[K, V] | None = None  # the next newer snapshot, None: `live` itself
        self._data: dict[K, V] | None = None  # set once materialized: then nothing else is read
        self._len = len(live)

    def _lookup(self, key: object) -> Any:
        node: DictSnapshot[K, V] | None = self
        while node is not None:
            if node._data is not None:
                return node._data.get(key, _ABSENT)  # type: ignore[arg-type]
            undo = node._undo
            if key in undo:
                return undo[key]
            node = node._next
        return self._live.get(key, _ABSENT)  # type: ignore[arg-type]

    def _dict(self) -> dict[K, V]:
        if self._data is None:
            chain: list[DictSnapshot[K, V]] = []
            node: DictSnapshot[K, V] | None = self
            while node is not None and node._data is None:
                chain.append(node)
                node = node._next
            data = dict(node._data if node is not None else self._live)  # type: ignore[arg-type]
            for newer in reversed(chain):  # the newest log first: the older one's values win
                for key, value in newer._undo.items():
                    if value is _ABSENT:
                        data.pop(key, None)
                    else:
                        data[key] = value
            self._data, self._next = data, None
        return self._data

    def __getitem__(self, key: K) -> V:
        value = self._lookup(key)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def get(self, key: K, default: Any = None) -> Any:
        value = self._lookup(key)
        return default if value is _ABSENT else value

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not _ABSENT

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[K]:
        return iter(self._dict())

    def keys(self) -> Any:
        return self._dict().keys()

    def items(self) -> Any:
        return self._dict().items()

    def values(self) -> Any:
        return self._dict().values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DictSnapshot):
            return self._dict() == other._dict()
        if isinstance(other, dict):
            return self._dict() == other
        return Mapping.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._dict())

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self._dict(),))


# --- desired routes, kept across calls -------------------------------------------------------------------
