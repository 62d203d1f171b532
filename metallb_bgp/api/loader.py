"""Turning YAML text and plain dicts into typed objects, with errors a person can act on.

A folder of manifests, `metallb-bgp validate` and the Kubernetes watchers all go through
`parse_object`, so an unknown field or a wrong type reads the same everywhere:
`BGPPeer metallb-system/router: spec.peerAdress: unknown field`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from metallb_bgp.api.core import EndpointSlice, Namespace, Node, Secret, Service
from metallb_bgp.api.metallb import (
    GROUP,
    BFDProfile,
    BGPAdvertisement,
    BGPPeer,
    BGPPeerV1beta1,
    Community,
    IPAddressPool,
    L2Advertisement,
)
from metallb_bgp.errors import ObjectError

# PyYAML's C loader parses large manifest folders several times faster than the pure-Python one.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_YAML11_ONLY = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"}


class _YAMLLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """YAML as Kubernetes reads it: no YAML 1.1 base-60 numbers or timestamps in plain scalars.

    PyYAML reads `1234:1` (a BGP community in MetalLB's own docs) as the integer 74041 and `2024-01-01`
    as a date; the Go YAML library behind kubectl keeps both as strings.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML11_ONLY]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)

_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"

# Per first character, the implicit resolvers a plain scalar is tried against (the wildcard ones last).
_RESOLVERS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    first: tuple(resolvers) + tuple(_YAMLLoader.yaml_implicit_resolvers.get(None, ()))
    for first, resolvers in _YAMLLoader.yaml_implicit_resolvers.items()
    if first is not None
}
_NO_RESOLVERS = tuple(_YAMLLoader.yaml_implicit_resolvers.get(None, ()))


def _resolve(_loader: Any, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
    """PyYAML's `BaseResolver.resolve` for a loader without path resolvers, in fewer steps.

    The C composer calls it for every node (27 times per Service manifest); PyYAML's version builds a
    list of resolvers per call and was 0.5 s of the bench's 1.5 s read of 10,000 service files.
    """
    if kind is yaml.ScalarNode:
        if implicit[0]:
            for tag, regexp in _RESOLVERS.get(value[:1], _NO_RESOLVERS):
                if regexp.match(value):
                    return tag
        return _STR
    return _SEQ if kind is yaml.SequenceNode else _MAP


assert not _YAMLLoader.yaml_path_resolvers  # _resolve ignores them
_YAMLLoader.resolve = _resolve
_INT, _BOOL, _NULL = "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null"
_FLOAT = "tag:yaml.org,2002:float"


class _Unusual(Exception):
    """A node the lean path leaves to PyYAML's constructor: merge keys, other tags, odd keys, cycles."""


def yaml_documents(text: str) -> list[Any]:
    """Every document of `text`, as `yaml.load_all(text, Loader=_YAMLLoader)` gives them.

    Why not load_all itself: with the C parser doing the parsing, PyYAML's constructor (generators per
    collection, a state machine per node, deep-construct bookkeeping) was ~2/3 of the time on
    Kubernetes manifests; turning the composed nodes into dicts, lists and scalars directly took the
    bench's 10,000 service files from 1.36-1.47 s to 0.88 s of CPU (bench/inprocess.py). The same parser, resolver
    (so the same YAML 1.1 quirks stay disabled) and errors with their marks; a document with anything
    beyond plain maps, sequences and str/int/float/bool/null scalars is built by PyYAML's constructor.
    """
    loader = _YAMLLoader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            try:
                documents.append(_construct(loader, node, {}))
            except (_Unusual, RecursionError):
                documents.append(loader.construct_document(node))
        return documents
    finally:
        loader.dispose()


def _construct(loader: Any, node: Any, building: dict[int, Any]) -> Any:
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag == _MAP:
        if id(node) in building:
            raise _Unusual  # an alias of a collection: share it as PyYAML does
        building[id(node)] = None
        result = {}
        for key_node, value_node in node.value:
            if key_node.tag != _STR:
                raise _Unusual  # merge keys (<<), and keys that may not be hashable
            result[key_node.value] = _construct(loader, value_node, building)
        return result
    if tag == _SEQ:
        if id(node) in building:
            raise _Unusual
        building[id(node)] = None
        return [_construct(loader, item, building) for item in node.value]
    if tag == _INT:
        value = node.value
        if value.isdigit() and (value[0] != "0" or value == "0"):
            return int(value)
        return loader.construct_yaml_int(node)
    if tag == _BOOL:
        return loader.construct_yaml_bool(node)
    if tag == _NULL:
        return None
    if tag == _FLOAT:
        return loader.construct_yaml_float(node)
    raise _Unusual


KINDS: Mapping[tuple[str, str], type[BaseModel]] = {
    (f"{GROUP}/v1beta1", "IPAddressPool"): IPAddressPool,
    (f"{GROUP}/v1beta1", "BGPPeer"): BGPPeerV1beta1,
    (f"{GROUP}/v1beta2", "BGPPeer"): BGPPeer,
    (f"{GROUP}/v1beta1", "BGPAdvertisement"): BGPAdvertisement,
    (f"{GROUP}/v1beta1", "Community"): Community,
    (f"{GROUP}/v1beta1", "BFDProfile"): BFDProfile,
    (f"{GROUP}/v1beta1", "L2Advertisement"): L2Advertisement,
    ("v1", "Service"): Service,
    ("discovery.k8s.io/v1", "EndpointSlice"): EndpointSlice,
    ("v1", "Node"): Node,
    ("v1", "Namespace"): Namespace,
    ("v1", "Secret"): Secret,
}


@dataclass(frozen=True)
class Parsed:
    """One document's outcome: an object, or the errors that kept it out (never both empty)."""

    obj: BaseModel | None
    errors: tuple[ObjectError, ...] = ()


def field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def parse_object(doc: Any, *, source: str = "") -> Parsed:
    """Validate one manifest document; unknown kinds come back as `Parsed(None, ())` (ignored)."""
    if not isinstance(doc, dict):
        return Parsed(None, (ObjectError("Document", "", source, "", "is not a mapping (an object with apiVersion and kind)"),))
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = str(metadata.get("name") or (f"<unnamed in {source}>" if source else ""))
    namespace = str(metadata.get("namespace", "") or "")
    model = KINDS.get((str(api_version), str(kind)))
    if model is None:
        if isinstance(api_version, str) and api_version.startswith(f"{GROUP}/"):
            return Parsed(None, (ObjectError(str(kind), namespace, name, "apiVersion", f"unsupported {api_version} {kind}"),))
        return Parsed(None, ())
    try:
        obj = model.model_validate(doc)
    except ValidationError as exc:
        errors = tuple(
            ObjectError(str(kind), namespace, name, field_path(e["loc"]), _message(e)) for e in exc.errors()
        )
        return Parsed(None, errors)
    if isinstance(obj, BGPPeerV1beta1):
        obj = obj.to_v1beta2()
    return Parsed(obj)


def load_yaml(text: str, *, source: str) -> Iterator[Parsed]:
    """Every document of a (multi-document) YAML text; a syntax error names the file and line."""
    try:
        docs = yaml_documents(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        yield Parsed(None, (ObjectError("File", "", source, where, f"invalid YAML: {problem}"),))
        return
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                yield parse_object(item, source=source)
        else:
            yield parse_object(doc, source=source)
