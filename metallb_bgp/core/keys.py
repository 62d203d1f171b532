"""Names of cluster objects, as small hashable values (never `"ns/name"` strings used as keys).

A NamedTuple rather than a frozen dataclass: service keys are hashed tens of times per service in a
plan (dict and set look-ups everywhere), and a tuple hashes and compares in C, where a dataclass runs
its generated `__hash__`/`__eq__` in Python (250,000 calls, ~0.1 s, in one 10,000-service plan).
"""

from __future__ import annotations

from typing import NamedTuple


class ServiceKey(NamedTuple):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def key_order(key: ServiceKey) -> tuple[str, str]:
    """ServiceKey's own order, as a plain tuple to compare (sorting keys with `key=` costs less this way)."""
    return (key.namespace, key.name)
