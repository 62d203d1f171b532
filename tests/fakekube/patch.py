"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), the two patch formats the fake applies.

Why: controllers patch status and annotations; the client picks the content type, and the server's
answer (applied, 422, 415) is observable. Strategic merge patch is treated as a merge patch for
built-in kinds (lists are replaced, never merged by key; `$patch` directives are not understood).
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _walk(doc: Any, pointer: str) -> tuple[Any, str | int]:
    """The container holding `pointer`'s target, and the target's key or index in it."""
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]
    if not pointer.startswith("/"):
        raise PatchError(f"invalid or root JSON pointer {pointer!r}")
    node = doc
    try:
        for token in tokens[:-1]:
            node = node[int(token)] if isinstance(node, list) else node[token]
        last = tokens[-1]
        return node, (len(node) if last == "-" else int(last)) if isinstance(node, list) else last
    except (KeyError, IndexError, ValueError, TypeError):
        raise PatchError(f"path {pointer!r} not found") from None


def _get(doc: Any, pointer: str) -> Any:
    parent, key = _walk(doc, pointer)
    try:
        return parent[key]
    except (KeyError, IndexError, TypeError):
        raise PatchError(f"path {pointer!r} not found") from None


def _add(doc: Any, pointer: str, value: Any) -> None:
    parent, key = _walk(doc, pointer)
    if isinstance(parent, list) and isinstance(key, int) and 0 <= key <= len(parent):
        parent.insert(key, value)
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise PatchError(f"cannot add at {pointer!r}")


def _remove(doc: Any, pointer: str) -> Any:
    value = _get(doc, pointer)
    parent, key = _walk(doc, pointer)
    del parent[key]
    return value


def json_patch(doc: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        kind, path = op.get("op"), op.get("path", "")
        if kind in ("add", "replace"):
            if kind == "replace":
                _remove(doc, path)
            _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind in ("move", "copy"):
            value = _remove(doc, op["from"]) if kind == "move" else copy.deepcopy(_get(doc, op["from"]))
            _add(doc, path, value)
        elif kind != "test":
            raise PatchError(f"unknown operation {kind!r}")
        elif _get(doc, path) != op.get("value"):
            raise PatchError(f"test failed at {path!r}")
    return doc
