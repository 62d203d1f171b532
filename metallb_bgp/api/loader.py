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
from metallb_bgp.api.yaml_text import _YAMLLoader, documents_or_error, yaml_documents  # noqa: F401 (re-exported)
from metallb_bgp.errors import ObjectError

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
    documents = documents_or_error(text, source=source)
    if isinstance(documents, ObjectError):
        yield Parsed(None, (documents,))
        return
    yield from parse_documents(documents, source=source)


def parse_documents(documents: list[Any], *, source: str) -> Iterator[Parsed]:
    """Every object of a file's documents (a `kind: List` gives its items)."""
    for doc in documents:
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                yield parse_object(item, source=source)
        else:
            yield parse_object(doc, source=source)
