"""Just enough of Kubernetes' protobuf encoding to read what Helm's release storage sends.

Why: client-go's typed clients (Helm stores each release in a Secret through one) send
`application/vnd.kubernetes.protobuf` bodies and do not fall back to JSON. Bodies are a 4-byte magic
`k8s\\0` and a runtime.Unknown {typeMeta, raw}; `raw` is the object's message. Only Secret,
ConfigMap and DeleteOptions are understood; anything else answers 415.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs; length-delimited values stay bytes."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out


def _map(entries: list[bytes], *, as_bytes: bool = False) -> dict[str, Any]:
    result = {}
    for entry in entries:
        kv = dict(fields(entry))
        value = kv.get(2, b"")
        result[kv.get(1, b"").decode()] = base64.b64encode(value).decode() if as_bytes else value.decode()
    return result


def _object_meta(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    labels, annotations, finalizers = [], [], []
    for number, value in fields(data):
        if number in (1, 2, 3, 5, 6):
            meta[{1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}[number]] = value.decode()
        elif number == 11:
            labels.append(value)
        elif number == 12:
            annotations.append(value)
        elif number == 14:
            finalizers.append(value.decode())
    if labels:
        meta["labels"] = _map(labels)
    if annotations:
        meta["annotations"] = _map(annotations)
    if finalizers:
        meta["finalizers"] = finalizers
    return {k: v for k, v in meta.items() if v != ""}


def _data_object(kind: str, raw: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind}
    data, string_data = [], []
    for number, value in fields(raw):
        if number == 1:
            obj["metadata"] = _object_meta(value)
        elif number == 2:
            data.append(value)
        elif number == 3 and kind == "Secret":
            obj["type"] = value.decode()
        elif number == 4 and kind == "Secret":
            string_data.append(value)
        elif number == 5 and kind == "Secret":
            obj["immutable"] = bool(value)
        elif number == 3 and kind == "ConfigMap":  # binaryData
            obj.setdefault("binaryData", {}).update(_map([value], as_bytes=True))
    if data:
        obj["data"] = _map(data, as_bytes=kind == "Secret")
    if string_data:
        obj["stringData"] = _map(string_data)
    return obj


def _delete_options(raw: bytes) -> dict[str, Any]:
    options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
    for number, value in fields(raw):
        if number == 1:
            options["gracePeriodSeconds"] = value
        elif number == 2:
            pre = dict(fields(value))
            options["preconditions"] = {k: pre[n].decode() for n, k in ((1, "uid"), (2, "resourceVersion")) if n in pre}
        elif number == 4:
            options["propagationPolicy"] = value.decode()
        elif number == 5:
            options.setdefault("dryRun", []).append(value.decode())
    return options


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object it stands for; ValueError if it is not one we read."""
    if not body.startswith(MAGIC):
        raise ValueError("not a Kubernetes protobuf message")
    unknown = dict(fields(body[len(MAGIC):]))
    type_meta = dict(fields(unknown.get(1, b"")))
    kind = type_meta.get(2, b"").decode()
    raw = unknown.get(2, b"")
    if kind in ("Secret", "ConfigMap"):
        return _data_object(kind, raw)
    if kind == "DeleteOptions":
        return _delete_options(raw)
    raise ValueError(f"protobuf bodies of kind {kind or '?'} are not supported by fakekube")
