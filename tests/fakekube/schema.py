"""Pruning, defaulting and validation of custom resources against a CRD's structural schema.

Why: the real API server drops fields a schema does not declare (with a warning, or a 400 under
`fieldValidation=Strict`), fills `default`s, and answers 422 Invalid naming each bad field in
`details.causes[].field` (`spec.peerAddress`). Our controller's error handling depends on those
answers. `jsonschema` is not installed and a structural schema needs only this subset: type,
nullable, x-kubernetes-int-or-string, x-kubernetes-preserve-unknown-fields, properties,
additionalProperties, items, required, enum, minimum/maximum (+exclusive), min/maxLength, pattern,
min/maxItems. Not covered: allOf/anyOf/oneOf/not, format, CEL rules, list-type uniqueness.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

Schema = dict[str, Any]
Cause = dict[str, str]
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")
_PY_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def prune_and_default(obj: dict[str, Any], schema: Schema) -> list[str]:
    """Drop undeclared fields and fill defaults in place; return the dropped fields' paths."""
    pruned: list[str] = []
    _prune(obj, schema, "", pruned)
    return pruned


def _prune(value: Any, schema: Schema, path: str, pruned: list[str]) -> None:
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _prune(item, schema["items"], f"{path}[{i}]", pruned)
    if not isinstance(value, dict):
        return
    props: dict[str, Schema] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
    for key in list(value):
        if not path and key in _ROOT_FIELDS:
            continue
        sub = props.get(key, extra if isinstance(extra, dict) else None)
        if sub is not None:
            _prune(value[key], sub, _join(path, key), pruned)
        elif not keep_unknown:
            del value[key]
            pruned.append(_join(path, key))
    for key, sub in props.items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])


def validate(obj: dict[str, Any], schema: Schema) -> list[Cause]:
    causes: list[Cause] = []
    _validate(obj, schema, "", causes)
    return causes


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for name, kind in (("boolean", bool), ("integer", int), ("number", float), ("string", str), ("array", list)):
        if isinstance(value, kind):
            return name
    return "object"


def _type_ok(value: Any, schema: Schema) -> bool:
    if value is None:
        return bool(schema.get("nullable"))
    if schema.get("x-kubernetes-int-or-string"):
        return _json_type(value) in ("integer", "string")
    wanted = schema.get("type")
    if wanted is None:
        return True
    if wanted == "integer":
        return _json_type(value) == "integer"
    if wanted == "number":
        return _json_type(value) in ("integer", "number")
    return isinstance(value, _PY_TYPES.get(wanted, object))


def _bad(causes: list[Cause], reason: str, path: str, message: str) -> None:
    causes.append({"reason": reason, "message": message, "field": path})


def _invalid(causes: list[Cause], path: str, value: Any, why: str) -> None:
    _bad(causes, "FieldValueInvalid", path, f"Invalid value: {json.dumps(value)}: {path} in body {why}")


def _validate(value: Any, schema: Schema, path: str, causes: list[Cause]) -> None:
    if not _type_ok(value, schema):
        want = "integer or string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        message = f"Invalid value: {json.dumps(_json_type(value))}: {path} in body must be of type {want}: {json.dumps(_json_type(value))}"
        _bad(causes, "FieldValueTypeInvalid", path, message)
        return
    if value is None:
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(e) for e in schema["enum"])
        _bad(causes, "FieldValueNotSupported", path, f"Unsupported value: {json.dumps(value)}: supported values: {supported}")
    if _json_type(value) in ("integer", "number"):
        _check_bounds(value, schema, path, causes)
    elif isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            _bad(causes, "FieldValueTooLong", path, f"Too long: may not be more than {schema['maxLength']} bytes")
        if "minLength" in schema and len(value) < schema["minLength"]:
            _invalid(causes, path, value, f"should be at least {schema['minLength']} chars long")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            _invalid(causes, path, value, f"should match '{schema['pattern']}'")
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            _bad(causes, "FieldValueTooMany", path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            _invalid(causes, path, len(value), f"should have at least {schema['minItems']} items")
        for i, item in enumerate(value):
            _validate(item, schema.get("items") or {}, f"{path}[{i}]", causes)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, causes)


def _check_bounds(value: float, schema: Schema, path: str, causes: list[Cause]) -> None:
    if "minimum" in schema:
        low, exclusive = schema["minimum"], schema.get("exclusiveMinimum", False)
        if value < low or (exclusive and value == low):
            _invalid(causes, path, value, f"should be greater than {'' if exclusive else 'or equal to '}{low}")
    if "maximum" in schema:
        high, exclusive = schema["maximum"], schema.get("exclusiveMaximum", False)
        if value > high or (exclusive and value == high):
            _invalid(causes, path, value, f"should be less than {'' if exclusive else 'or equal to '}{high}")


def _validate_object(value: dict[str, Any], schema: Schema, path: str, causes: list[Cause]) -> None:
    for key in schema.get("required") or []:
        if key not in value:
            _bad(causes, "FieldValueRequired", _join(path, key), "Required value")
    props: dict[str, Schema] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if not path and key in _ROOT_FIELDS:
            continue
        sub = props.get(key, extra if isinstance(extra, dict) else None)
        if sub is not None:
            _validate(item, sub, _join(path, key), causes)
