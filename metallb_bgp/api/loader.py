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
from metallb_bgp.api.problems import ObjectError, Severity, printable

# PyYAML's C loader parses large manifest folders several times faster than the pure-Python one.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_YAML11_ONLY = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"}


class _YAMLLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """YAML as Kubernetes reads it: no YAML 1.1 base-60 numbers or timestamps in plain scalars.

    PyYAML reads `1234:1` (a BGP community in MetalLB's own docs) as the integer 74041 and `2024-01-01`
    as a date; the Go YAML library behind kubectl keeps both as strings.
    """

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML's own class attribute, as its resolver reads it
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


_MERGE, _TIMESTAMP, _BINARY = "tag:yaml.org,2002:merge", "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary"
_SCALAR, _MAPPING = yaml.ScalarNode, yaml.MappingNode
_INT_TEXT = re.compile(r"^[-+]?(?:0b[0-1_]+|0[0-7_]+|(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$")


@dataclass(frozen=True)
class Limits:
    """What one manifest file may cost; each is far beyond what a real cluster writes.

    `object_bytes` is etcd's request limit (1.5 MiB): no object a real cluster stores is larger. A
    `kind: List` (what `kubectl get -o yaml` prints) is a container, so each of its items is held to it,
    not the List. `values_per_file` bounds the values (map keys, map values, list items) of a file: a
    real Service or EndpointSlice as kubectl prints it has ~40-60, so 5,000,000 is ~50,000 services
    with their slices; what costs the most per byte is many tiny values (`[1,1,1,...]`), and this is
    what bounds them. `alias_values` bounds what YAML aliases may add to a file beyond its own nodes
    (the billion-laughs attack: ten lines that expand to 10^9 values); Go's YAML library behind kubectl
    refuses "excessive aliasing" in the same spirit. The worst a file within all of them costs is in
    docs/performance.md.
    """

    file_bytes: int = 64 * 1024 * 1024
    object_bytes: int = 1536 * 1024
    objects_per_file: int = 100_000
    values_per_file: int = 5_000_000
    depth: int = 100
    alias_values: int = 100_000
    folder_bytes: int = 1024 * 1024 * 1024


LIMITS = Limits()


class YAMLProblem(Exception):
    """A document that parses but cannot be a Kubernetes manifest: where, and why, in a person's words."""

    def __init__(self, message: str, node: Any = None) -> None:
        mark = getattr(node, "start_mark", None)
        self.where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        self.message = message
        super().__init__(f"{self.where}: {message}" if self.where else message)


def yaml_documents(text: str, *, limits: Limits = LIMITS) -> list[Any]:
    """Every document of `text` as plain dicts, lists and scalars, the way kubectl reads YAML.

    Why not PyYAML's `load_all`: with the C parser doing the parsing, PyYAML's constructor (generators
    per collection, a state machine per node, deep-construct bookkeeping) was ~2/3 of the time on
    Kubernetes manifests; turning the composed nodes into values directly took the bench's 10,000
    service files from 1.36-1.47 s to 0.88 s of CPU (bench/inprocess.py). And its constructor is not
    ours to bound: an explicit tag that does not convert (`!!int abc`, `!!bool maybe`) raises a bare
    ValueError or KeyError, aliases are shared without limit, and a duplicate key silently wins. Here
    every such document raises `YAMLProblem` naming the line, and each `limits` is enforced.
    """
    loader = _YAMLLoader(text)
    try:
        documents = []
        budget = _Budget(limits)
        while loader.check_node():
            node = loader.get_node()
            budget.objects += _check_sizes(node, limits)
            if budget.objects > limits.objects_per_file:
                raise YAMLProblem(f"more than {limits.objects_per_file} objects in one file (the limit)", node)
            documents.append(_Builder(loader, budget).value(node, 0))
        return documents
    finally:
        loader.dispose()


@dataclass
class _Budget:
    limits: Limits
    aliased: int = 0  # values reached again through aliases, in this file
    objects: int = 0  # documents, and the items of Lists, so far
    values: int = 0  # keys, values and items built, so far


def _check_sizes(root: Any, limits: Limits) -> int:
    """Each object at most `limits.object_bytes` of text: a document, or each item of a `kind: List`.
    Returns how many objects the document holds."""
    items = _list_items(root)
    objects = items if items is not None else [root]
    for node in objects:
        size = node.end_mark.index - node.start_mark.index
        if size > limits.object_bytes:
            raise YAMLProblem(f"an object of {size} bytes: more than {limits.object_bytes} (etcd's limit for one object)", node)
    return len(objects)


def _list_items(root: Any) -> list[Any] | None:
    if not isinstance(root, yaml.MappingNode):
        return None
    fields = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    kind, items = fields.get("kind"), fields.get("items")
    if isinstance(kind, yaml.ScalarNode) and kind.value == "List" and isinstance(items, yaml.SequenceNode):
        return list(items.value)
    return None


_LONG = 64  # characters: a scalar longer than this counts as one value per _LONG when aliased


class _Builder:
    """One document's values from its composed nodes; each alias charged to the file's budget."""

    def __init__(self, loader: Any, budget: _Budget) -> None:
        self.loader = loader
        self.budget = budget
        self.built: dict[int, Any] = {}  # id(node) -> value, for aliases (shared, as PyYAML shares them)
        self.sizes: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
        self.building: set[int] = set()  # collections under construction: an alias to one is a cycle
        self.long_seen: set[int] = set()  # scalars longer than _LONG met so far

    def value(self, node: Any, depth: int) -> Any:
        if type(node) is _SCALAR:  # scalars first and without bookkeeping: most nodes are plain strings
            if len(node.value) > _LONG:
                self._long_scalar(node)
            return node.value if node.tag == _STR else self._scalar(node)
        key = id(node)
        if key in self.built:
            self._charge(node)
            return self.built[key]
        if key in self.building:
            raise YAMLProblem("an alias refers to a collection that contains it (a cycle)", node)
        if depth >= self.budget.limits.depth:
            raise YAMLProblem(f"nested more than {self.budget.limits.depth} levels deep (the limit)", node)
        self.building.add(key)
        value = self._mapping(node, depth) if type(node) is _MAPPING else self._sequence(node, depth)
        self.building.discard(key)
        self.built[key] = value
        return value

    def _long_scalar(self, node: Any) -> None:
        """A long value reached again is an alias: charged by its length (a short one costs the alias's
        own few bytes of text at least, so the file's size bounds those)."""
        key = id(node)
        if key in self.long_seen:
            self._charge(node)
        else:
            self.long_seen.add(key)

    def _charge(self, node: Any) -> None:
        self.budget.aliased += self._size(node)
        limit = self.budget.limits.alias_values
        if self.budget.aliased > limit:
            raise YAMLProblem(f"aliases expand this file by more than {limit} values (the limit)", node)

    def _size(self, node: Any) -> int:
        key = id(node)
        if key not in self.sizes:
            if isinstance(node, yaml.MappingNode):
                total = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                total = 1 + sum(self._size(item) for item in node.value)
            else:
                total = 1 + len(node.value) // _LONG
            self.sizes[key] = total
        return self.sizes[key]

    def _count(self, node: Any, values: int) -> None:
        budget = self.budget
        budget.values += values
        if budget.values > budget.limits.values_per_file:
            raise YAMLProblem(f"more than {budget.limits.values_per_file} values in one file (the limit)", node)

    def _sequence(self, node: Any, depth: int) -> list[Any]:
        if node.tag != _SEQ:
            raise YAMLProblem(f"tag {_short(node.tag)} on a sequence", node)
        self._count(node, len(node.value))
        return [self.value(item, depth + 1) for item in node.value]

    def _mapping(self, node: Any, depth: int) -> dict[str, Any]:
        if node.tag != _MAP:
            raise YAMLProblem(f"tag {_short(node.tag)} on a mapping", node)
        self._count(node, 2 * len(node.value))
        result: dict[str, Any] = {}
        merged: dict[str, Any] | None = None
        for key_node, value_node in node.value:
            if key_node.tag == _STR and type(key_node) is _SCALAR:
                name = key_node.value
            elif key_node.tag == _MERGE:
                merged = {**(merged or {}), **self._merge(value_node, depth)}
                continue
            else:
                name = self._key(key_node)
            if name in result:
                raise YAMLProblem(f'mapping key "{printable(name)}" already defined at line {_line_of(node, name)}', key_node)
            result[name] = self.value(value_node, depth + 1)
        return {**merged, **result} if merged else result

    def _merge(self, node: Any, depth: int) -> dict[str, Any]:
        """`<<: *base` or `<<: [*a, *b]` (earlier ones win), as YAML 1.1 and kubectl read them."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for source in reversed(sources):
            value = self.value(source, depth + 1)
            if not isinstance(value, dict):
                raise YAMLProblem("a merge key (<<) needs a mapping or a list of mappings", source)
            merged.update(value)
        return merged

    def _key(self, node: Any) -> str:
        """Keys as kubectl's YAML-to-JSON step gives them: scalars as their text, nothing else."""
        if type(node) is not _SCALAR:
            raise YAMLProblem("a mapping key must be a plain value, not a collection", node)
        value = self._scalar(node)
        if isinstance(value, bool):
            return "true" if value else "false"
        return "null" if value is None else str(value if node.tag != _STR else node.value)

    def _scalar(self, node: Any) -> Any:
        tag, text = node.tag, node.value
        try:
            if tag == _STR:
                return text
            if tag == _INT:
                if not _INT_TEXT.match(text):
                    raise ValueError
                return int(text) if text.isdigit() and (text[0] != "0" or text == "0") else self.loader.construct_yaml_int(node)
            if tag == _BOOL:
                return self.loader.bool_values[text.lower()]
            if tag == _NULL:
                if text not in ("", "~", "null", "Null", "NULL"):
                    raise ValueError
                return None
            if tag == _FLOAT:
                return self.loader.construct_yaml_float(node)
            if tag == _TIMESTAMP:
                self.loader.construct_yaml_timestamp(node)  # checked, then kept as text, as kubectl does
                return text
            if tag == _BINARY:
                return text
        except (ValueError, KeyError, TypeError, OverflowError, IndexError, AttributeError, yaml.YAMLError):
            shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
            raise YAMLProblem(f"{printable(shown)!r} is not a valid {_short(tag)}", node) from None
        raise YAMLProblem(f"unsupported tag {printable(_short(tag))}", node)


def _line_of(mapping: Any, name: str) -> int:
    """The line of `name`'s first key in `mapping` (only to report a duplicate)."""
    return next(k.start_mark.line + 1 for k, _v in mapping.value if isinstance(k, yaml.ScalarNode) and k.value == name)


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


KINDS: Mapping[tuple[str, str], type[Any]] = {  # BaseModels and core_model dataclasses
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
    """Validate one manifest document; kinds we do not read come back without an object (see `_not_read`).

    Never raises: a document our own code fails on is an error of that object. The names used in
    messages are only ever strings the document holds, cut short, so a value that is a huge list (or a
    name of 10,000 characters) cannot blow up a message.
    """
    if not isinstance(doc, dict):
        return Parsed(None, (ObjectError("Document", "", source, "", "is not a mapping (an object with apiVersion and kind)"),))
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    raw_metadata = doc.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    name = _text(metadata.get("name")) or (f"<unnamed in {source}>" if source else "")
    namespace = _text(metadata.get("namespace"))
    if not isinstance(api_version, str) or not isinstance(kind, str) or (model := KINDS.get((api_version, kind))) is None:
        return Parsed(None, _not_read(api_version, kind, namespace, name, source))
    try:
        obj = model.model_validate(doc)
        if isinstance(obj, BGPPeerV1beta1):
            obj = obj.to_v1beta2()
    except ValidationError as exc:
        errors = tuple(ObjectError(kind, namespace, name, field_path(e["loc"]), _message(e)) for e in exc.errors())
        return Parsed(None, errors)
    except Exception as exc:  # noqa: BLE001 - one object's problem, never the process's
        return Parsed(None, (ObjectError(kind, namespace, name, "", f"cannot be read ({type(exc).__name__})"),))
    return Parsed(obj)


def _text(value: object, limit: int = 300) -> str:
    """A name or namespace for messages: the string itself (cut at `limit`), or '' for anything else."""
    if not isinstance(value, str):
        return ""
    return value if len(value) <= limit else f"{value[:limit]}..."


# Kubernetes' own API groups: a cluster dump holds Deployments, ConfigMaps and the like, which are not
# ours to read and not worth a warning. Any other group may be a typo of ours (`metalb.io/v1beta1`).
_BUILT_IN_GROUPS = frozenset({"", "apps", "batch", "autoscaling", "policy"})
_OUR_KINDS = frozenset(kind for _version, kind in KINDS)


def _not_read(api_version: object, kind: object, namespace: str, name: str, source: str) -> tuple[ObjectError, ...]:
    """Why a document of a kind we do not read is left out: an error for a metallb.io kind we do not
    support, a warning for a group we do not know (a typo loses an object silently otherwise)."""
    shown_kind = printable(_text(kind, 100)) or "Document"
    where = f" in {source}" if source else ""
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        message = f"no apiVersion or no kind (both strings){where}: not an object metallb-bgp reads; ignored"
        return (ObjectError(shown_kind, namespace, name, "apiVersion", message, Severity.WARNING),)
    group = api_version.rpartition("/")[0]
    if group == GROUP:
        return (ObjectError(shown_kind, namespace, name, "apiVersion", f"unsupported {printable(api_version)} {shown_kind}"),)
    if (group in _BUILT_IN_GROUPS or group.endswith(".k8s.io")) and kind not in _OUR_KINDS:
        return ()
    hint = f" (metallb-bgp reads {kind} from {_home_of(kind)})" if kind in _OUR_KINDS else ""
    message = f"{printable(api_version)[:100]} {shown_kind}{where} is not a kind metallb-bgp reads; ignored{hint}"
    return (ObjectError(shown_kind, namespace, name, "apiVersion", message, Severity.WARNING),)


def _home_of(kind: str) -> str:
    return " or ".join(api_version for api_version, known in KINDS if known == kind)


def load_yaml(text: str, *, source: str, limits: Limits = LIMITS) -> Iterator[Parsed]:
    """Every document of a (multi-document) YAML text; a problem anywhere in it names the file and line.

    Anything that goes wrong while reading the text (a syntax error, a limit, a tag that does not
    convert, a bug of ours) is a problem of this file, returned as a `File` error, never raised.
    """
    try:
        docs = yaml_documents(text, limits=limits)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        yield Parsed(None, (ObjectError("File", "", source, where, f"invalid YAML: {problem}"),))
        return
    except YAMLProblem as exc:
        yield Parsed(None, (ObjectError("File", "", source, exc.where, f"invalid YAML: {exc.message}"),))
        return
    except Exception as exc:  # noqa: BLE001 - one file's problem, never the process's
        yield Parsed(None, (ObjectError("File", "", source, "", f"cannot be read ({type(exc).__name__})"),))
        return
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                yield parse_object(item, source=source)
        else:
            yield parse_object(doc, source=source)
