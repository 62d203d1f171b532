"""Label and field selectors as the API server parses them from `?labelSelector=` and `?fieldSelector=`.

Why: list and watch filtering is observable by the client (a watch with a selector sees ADDED/DELETED
when an object starts or stops matching), so the fake must parse the same syntax. Not covered: the
`key>1` / `key<1` numeric label operators.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]
Matcher = Callable[[Obj], bool]

_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_FIELD = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*([^,]*?)\s*$")


def _split(text: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [part for part in parts if part.strip()]


def _requirement(text: str) -> Callable[[dict[str, str]], bool]:
    if match := _SET.match(text):
        key, op, raw = match.groups()
        values = {v.strip() for v in raw.split(",")}
        if not all(re.fullmatch(_VALUE, v) for v in values):
            raise ValueError(f"invalid label value in {text!r}")
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ.match(text):
        key, op, value = match.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(text):
        negated, key = match.groups()
        return (lambda labels: key not in labels) if negated else (lambda labels: key in labels)
    raise ValueError(f"unable to parse requirement: {text!r}")


def label_matcher(text: str | None) -> Matcher:
    """`app=x,tier!=db,env in (a,b),!legacy` -> a predicate on objects. Raises ValueError."""
    requirements = [_requirement(part) for part in _split(text or "")]
    return lambda obj: all(req(obj.get("metadata", {}).get("labels") or {}) for req in requirements)


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def field_matcher(text: str | None, supported: tuple[str, ...]) -> Matcher:
    """`metadata.name=x,spec.nodeName!=n1` -> a predicate; unknown field labels are a 400 upstream."""
    checks: list[tuple[str, bool, str]] = []
    for part in _split(text or ""):
        match = _FIELD.match(part)
        if not match:
            raise ValueError(f"invalid field selector: {part!r}")
        field, op, value = match.groups()
        if field not in ("metadata.name", "metadata.namespace", *supported):
            raise ValueError(f"field label not supported: {field}")
        checks.append((field, op == "!=", value))
    return lambda obj: all((_field_value(obj, f) == v) != neg for f, neg, v in checks)
