"""Kubernetes label selectors as plain values.

Pools, peers, advertisements and namespaces all select by labels with the same semantics as
metav1.LabelSelector (matchLabels AND matchExpressions; operators In, NotIn, Exists, DoesNotExist).
One implementation, used by compile, the allocator and the route table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum


class Operator(str, Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is Operator.EXISTS:
            return self.key in labels
        if self.operator is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        if self.operator is Operator.IN:
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


@dataclass(frozen=True)
class LabelSelector:
    """An empty selector matches everything, as in Kubernetes."""

    match_labels: frozenset[tuple[str, str]] = frozenset()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


def any_matches(selectors: Iterable[LabelSelector], labels: Mapping[str, str]) -> bool:
    """MetalLB's rule for lists of selectors: an empty list matches everything, else any one must match."""
    selectors = tuple(selectors)
    return not selectors or any(s.matches(labels) for s in selectors)
