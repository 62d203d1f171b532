"""What a compile returns: the Config, every problem, and the versions to remember (`LastGood`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from metallb_bgp.api.core import Secret
from metallb_bgp.api.metallb import (
    MetalLBObject,
)
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.config import model as cfg

ObjectKey = tuple[str, str, str]  # (kind, namespace, name)
Remembered = MetalLBObject | Secret  # what LastGood holds: metallb.io objects and the peers' password Secrets


def object_key(obj: Remembered, namespace: str) -> ObjectKey:
    """An object's identity across versions; an object without a namespace counts as `namespace`'s."""
    return (obj.kind, obj.metadata.namespace or namespace, obj.metadata.name)


class LastGood(Mapping[ObjectKey, Remembered]):
    """Immutable: for each object in the last Config, the exact version of it that was used.

    Pass `CompileResult.last_good` to the next `compile_config`. Secrets are remembered when a peer in
    the Config reads its password from them. It holds Secrets: its repr shows keys only.
    """

    __slots__ = ("_objects",)

    def __init__(self, objects: Mapping[ObjectKey, Remembered] | None = None) -> None:
        self._objects: Mapping[ObjectKey, Remembered] = MappingProxyType(dict(sorted((objects or {}).items())))

    def __getitem__(self, key: ObjectKey) -> Remembered:
        return self._objects[key]

    def __iter__(self) -> Iterator[ObjectKey]:
        return iter(self._objects)

    def __len__(self) -> int:
        return len(self._objects)

    def __repr__(self) -> str:
        return f"LastGood({list(self._objects)!r})"


@dataclass(frozen=True)
class CompileResult:
    """The compiled Config, every problem found (errors and warnings, sorted), and what to remember."""

    config: cfg.Config
    errors: tuple[ObjectError, ...] = ()
    last_good: LastGood = field(default_factory=LastGood)

    @property
    def has_errors(self) -> bool:
        return any(e.is_error for e in self.errors)

    @property
    def warnings(self) -> tuple[ObjectError, ...]:
        return tuple(e for e in self.errors if not e.is_error)
