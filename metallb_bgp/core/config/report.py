"""How the rules report: an `Issue` per problem (field, message, the objects it names), gathered
per object by a `Report`; `Scope` decides which objects take part and in what order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from metallb_bgp.api.core import Secret
from metallb_bgp.api.metallb import MetalLBObject
from metallb_bgp.api.problems import ObjectError, Severity


@dataclass(frozen=True)
class Issue:
    """A problem in one object, before we know which object: the checks do not need to."""

    field: str
    message: str
    severity: Severity = Severity.ERROR
    refs: tuple[Ref, ...] = ()  # the other objects the message names

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


Ref = tuple[str, str, str]  # (kind, namespace, name); namespace "" is MetalLB's, filled in by `Report`


def named(kind: str, name: str, namespace: str = "") -> Ref:
    """An object a message names, as the last-valid-versions search reads it (never from the text)."""
    return (kind, namespace, name)


def err(field_: str, message: str, *refs: Ref) -> Issue:
    return Issue(field_, message, Severity.ERROR, refs)


def warn(field_: str, message: str, *refs: Ref) -> Issue:
    return Issue(field_, message, Severity.WARNING, refs)


class Report:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.items: set[ObjectError] = set()

    def extend(self, errors: Iterable[ObjectError]) -> None:
        self.items.update(errors)

    def add(self, obj: MetalLBObject | Secret, issue: Issue) -> None:
        namespace = obj.metadata.namespace or self.namespace
        refs = tuple((kind, ns or self.namespace, name) for kind, ns, name in issue.refs)
        self.items.add(ObjectError(obj.kind, namespace, obj.metadata.name, issue.field, issue.message, issue.severity, refs))

    def add_all(self, obj: MetalLBObject | Secret, issues: Iterable[Issue]) -> None:
        for issue in issues:
            self.add(obj, issue)

    def sorted(self) -> tuple[ObjectError, ...]:
        return tuple(sorted(self.items))


T = TypeVar("T")
M = TypeVar("M", bound=MetalLBObject)


def guarded(report: Report, obj: MetalLBObject, build: Callable[[list[Issue]], T | None]) -> T | None:
    """Run one object's checks and record its issues; `build` returns None to leave the object out.

    A bug becomes an error on that object instead of taking every other object down with it.
    """
    issues: list[Issue] = []
    try:
        value = build(issues)
    except Exception as exc:  # noqa: BLE001 - the promise is "never raises"; the message names the failure
        issues.append(err("", f"internal error while compiling this object ({type(exc).__name__}); please report it"))
        value = None
    report.add_all(obj, issues)
    return value


def has_error(issues: Iterable[Issue]) -> bool:
    return any(issue.is_error for issue in issues)


class Scope:
    """Which objects take part: those in MetalLB's namespace, with a name unique within their kind.

    It also fixes the order in which objects are checked: established objects first, then by name.
    """

    def __init__(self, namespace: str, report: Report, established: frozenset[tuple[str, str]] = frozenset()) -> None:
        self.namespace = namespace
        self.report = report
        self.established = established
        self.bad: dict[tuple[str, str], str] = {}  # (kind, name) -> why it is unusable
        self.duplicates: list[MetalLBObject] = []  # objects left out because their name is not unique

    def unique(self, objects: Iterable[M]) -> dict[str, M]:
        in_scope = [o for o in objects if self._in_namespace(o)]
        counts = Counter(o.metadata.name for o in in_scope)
        result: dict[str, M] = {}
        for obj in in_scope:
            name = obj.metadata.name
            if counts[name] > 1:
                message = f"defined {counts[name]} times; names must be unique, so none of the definitions is used"
                self.report.add(obj, err("metadata.name", message))
                self.bad[(obj.kind, name)] = "is defined more than once"
                self.duplicates.append(obj)
            else:
                result[name] = obj
        return {obj.metadata.name: obj for obj in sorted(result.values(), key=self.check_order)}

    def check_order(self, obj: MetalLBObject) -> tuple[bool, str]:
        """Established objects first, then by name: in a clash the later one is reported and left out."""
        return ((obj.kind, obj.metadata.name) not in self.established, obj.metadata.name)

    def mark_invalid(self, kind: str, objects: Mapping[str, MetalLBObject], good: Mapping[str, object]) -> None:
        for name in objects.keys() - good.keys():
            self.bad.setdefault((kind, name), "is invalid")

    def duplicates_of(self, kind: type[M]) -> list[M]:
        return [obj for obj in self.duplicates if isinstance(obj, kind)]

    def _in_namespace(self, obj: MetalLBObject) -> bool:
        if obj.metadata.namespace and obj.metadata.namespace != self.namespace:
            message = f"ignored: metallb.io objects are read only from namespace {self.namespace}"
            self.report.add(obj, warn("metadata.namespace", message))
            return False
        return True
