"""The generated parts of the user documentation: the CRD field reference, Helm values, metrics.

Why generate: a hand-written field table drifts from the models the daemons read objects with (a field
is added, a bound or default changes, and the docs keep the old story). So names, types, bounds,
defaults and required-ness come from the pydantic models in `metallb_bgp.api` (the chart's values from
`values.schema.json` and `values.yaml`, the metrics from `metallb_bgp.observe.metrics`); only the prose about
CRD fields is written here, in `DESCRIPTIONS`, keyed by field path. A model field without a
description, or a description for a field that no longer exists, stops the generator with the field
named, so the tables can never silently lose a row.
Facts that live in code (default hold time, graceful-restart time, what ExaBGP ignores) are quoted
from the constants in `metallb_bgp.core.config` and `metallb_bgp.exabgp.render`.

What it does not do: write whole documents. Each generated table sits between two markers in a
hand-written Markdown file,

    <!-- BEGIN GENERATED: crd-reference -->  ...  <!-- END GENERATED: crd-reference -->

and only the text between them is replaced. Regenerate with `python -m metallb_bgp.gen.docs_reference
--write`; `--check` exits 1 when a committed file differs (tests/test_docs.py fails likewise).

Its ~700 lines are mostly prose: one sentence per CRD field and per metric, kept next to the code that
checks it is complete. Nothing at run time imports it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.functional_validators import BeforeValidator

from metallb_bgp.api.duration import parse_duration
from metallb_bgp.api.meta import LabelSelectorSpec
from metallb_bgp.api.metallb import (
    GROUP,
    UINT32,
    BFDProfile,
    BGPAdvertisement,
    BGPPeer,
    BGPPeerV1beta1,
    Community,
    IPAddressPool,
    L2Advertisement,
    MetalLBObject,
)
from metallb_bgp.core.config import peers
from metallb_bgp.exabgp.render import (
    EBGP_MULTIHOP_TTL,
    EBGP_SINGLE_HOP_TTL,
    GRACEFUL_RESTART_TIME,
    MAX_MD5_PASSWORD_BYTES,
    UNSUPPORTED,
)
from metallb_bgp.gen.crds import KINDS as CRD_KINDS
from metallb_bgp.gen.crds import ConfigurationState
from metallb_bgp.observe import metrics

ROOT = Path(__file__).resolve().parents[2]
DOCS_DIR = ROOT / "docs"
CHART_DIR = ROOT / "charts" / "metallb-bgp"
COMMAND = "python -m metallb_bgp.gen.docs_reference --write"
_MARKER = re.compile(
    r"<!-- BEGIN GENERATED: (?P<name>[a-z0-9-]+)[^>]*-->\n(?P<body>.*?)<!-- END GENERATED: (?P=name) -->",
    re.DOTALL,
)


class DocsGenerationError(ValueError):
    """The generator cannot produce a faithful table (a field without prose, a missing marker, ...)."""


# --- the prose ------------------------------------------------------------------------------------------

_HOLD = peers.DEFAULT_HOLD_TIME
_MAX_SECONDS = peers.MAX_BGP_SECONDS
_SELECTOR_NOTE = "See [LabelSelector](#labelselector); several selectors: any one matching is enough."

DESCRIPTIONS: Mapping[str, Mapping[str, str]] = {
    "IPAddressPool": {
        "spec.addresses": (
            "The addresses to assign: CIDRs (`192.168.10.0/24`, `fc00:f853:ccd:e799::/124`) or ranges "
            "(`192.168.9.1-192.168.9.5`, both ends of one family). At least one. Entries must not overlap "
            "each other or another pool. A CIDR with host bits set (`10.0.0.5/24`) is used as its network, "
            "with a warning."
        ),
        "spec.autoAssign": (
            "When false, the pool only serves Services that ask for it by name (`metallb.io/address-pool`) "
            "or ask for one of its addresses (`metallb.io/loadBalancerIPs`)."
        ),
        "spec.avoidBuggyIPs": "Never assign IPv4 addresses ending in `.0` or `.255`.",
        "spec.serviceAllocation": "Which Services may take addresses from this pool, and in which order pools are tried.",
        "spec.serviceAllocation.priority": (
            "Pools with a priority are tried before pools without one, lowest number first; 0 or less "
            "counts as no priority. Ties are broken by pool name."
        ),
        "spec.serviceAllocation.namespaces": "Only Services in these namespaces.",
        "spec.serviceAllocation.namespaceSelectors": "Only Services in namespaces whose labels match. " + _SELECTOR_NOTE,
        "spec.serviceAllocation.serviceSelectors": "Only Services whose labels match. " + _SELECTOR_NOTE,
    },
    "BGPPeer": {
        "spec.myASN": "Our AS number, the one the router expects from the nodes. Must not be 0.",
        "spec.peerASN": "The router's AS number. Exactly one of `peerASN` and `dynamicASN` is required.",
        "spec.dynamicASN": (
            "Instead of `peerASN`: `internal` (the router uses `myASN`, iBGP) or `external` (any other ASN). "
            "ExaBGP renders `external` as `peer-as auto`, which accepts any ASN the router sends, "
            "including `myASN`: the internal/external distinction is not enforced."
        ),
        "spec.localASN": (
            "The AS presented to this router instead of `myASN`, as MetalLB's FRR modes do with "
            "`local-as X no-prepend replace-as`: the session is opened as X (iBGP when `peerASN` is X) and "
            "the router sees X alone in the AS path."
        ),
        "spec.peerAddress": "The router's IP address. Required (unnumbered peering over `interface` is not supported).",
        "spec.sourceAddress": (
            "The local address of the session, of the same family as `peerAddress`. It must exist on every "
            "node that opens the session (use `nodeSelectors`). Unset: each node uses the address its "
            "kernel routes the peer from (found when the speaker configures ExaBGP, and written into its "
            "configuration, so a reload never leaves the session without one)."
        ),
        "spec.peerPort": f"The router's TCP port, 1 to {peers.MAX_PEER_PORT} (MetalLB's limit).",
        "spec.holdTime": (
            f"BGP hold time. Unset: {_HOLD}s. 0 (no keepalives) or from {peers.MIN_HOLD_TIME}s to "
            f"{_MAX_SECONDS}s; whole seconds (a fraction is truncated, with a warning)."
        ),
        "spec.keepaliveTime": (
            "MetalLB's keepalive interval: checked (at most `holdTime`; alone, it sets `holdTime` to three "
            "times its value) but not used, see the note."
        ),
        "spec.connectTime": (
            f"Time between connection attempts, 1s to {_MAX_SECONDS}s, whole seconds; checked but not used, see the note."
        ),
        "spec.routerID": (
            "The BGP identifier (an IPv4 address) used on this session, by every node it selects (a warning "
            "when that is several nodes). Unset: the speaker's `--router-id` (chart: `speaker.routerIDFromHostIP`), "
            "else the node's own IPv4 InternalIP, else an IPv4 `sourceAddress`."
        ),
        "spec.nodeSelectors": "The nodes that open this session; none: every node. " + _SELECTOR_NOTE,
        "spec.password": (
            f"TCP MD5 password (RFC 2385), at most {MAX_MD5_PASSWORD_BYTES} bytes, no line breaks. "
            "It is stored in the object in clear text: prefer `passwordSecret`. Not together with `passwordSecret`."
        ),
        "spec.passwordSecret": (
            "The TCP MD5 password from a Secret of type `kubernetes.io/basic-auth`, key `password`. Not "
            "together with `password`. A missing or malformed Secret is an error on the peer."
        ),
        "spec.passwordSecret.name": "The Secret's name.",
        "spec.passwordSecret.namespace": (
            "Unset: MetalLB's namespace (`metallb-system`). The daemons read Secrets only from that namespace."
        ),
        "spec.bfdProfile": (
            "A BFDProfile's name (an unknown one is an error): the speaker runs a BFD session to the peer "
            "beside the BGP session, see the note on BFD: single hop (RFC 5881), or multihop (RFC 5883) "
            "with `ebgpMultiHop`."
        ),
        "spec.enableGracefulRestart": (
            f"Announce the graceful-restart capability (restart time {GRACEFUL_RESTART_TIME}s): the "
            "router keeps our routes while a speaker restarts; after the full re-announcement the speaker "
            "sends End-of-RIB and the router drops what was not re-announced."
        ),
        "spec.ebgpMultiHop": (
            f"eBGP to a router that is not directly connected: packets leave with TTL {EBGP_MULTIHOP_TTL} "
            f"instead of {EBGP_SINGLE_HOP_TTL}. An error on an iBGP peer."
        ),
        "spec.vrf": "Bind the session to this Linux VRF device (ExaBGP `source-interface`); no line breaks.",
        "spec.disableMP": (
            "Deprecated in MetalLB: a warning (each family already gets its own session unless "
            "`dualStackAddressFamily` is set); an error together with `dualStackAddressFamily: true`."
        ),
        "spec.dualStackAddressFamily": (
            "Negotiate IPv4 and IPv6 unicast on this one session. Routes of the other family carry the "
            "node's own address of that family as next hop (its Node's InternalIP, else ExternalIP, from "
            "`status.addresses`); a node without one gets a warning and the session carries its own family only."
        ),
        "spec.interface": "BGP unnumbered over an interface: not supported by this speaker (an error); set `peerAddress`.",
        "spec.port": (
            "Older spelling of `peerPort` in v1beta1 manifests (manifest files only: not in the cluster's v1beta1 schema)."
        ),
    },
    "BGPAdvertisement": {
        "spec.aggregationLength": (
            "Announce the covering IPv4 prefix of this length instead of each /32. Must not be shorter than "
            "the widest prefix of an advertised pool entry (a /24 pool cannot be aggregated to /16); must stay "
            "32 when `serviceSelectors` is set."
        ),
        "spec.aggregationLengthV6": "As `aggregationLength`, for IPv6 (128: each address).",
        "spec.localPref": (
            "BGP LOCAL_PREF. Sent to iBGP peers only (routers ignore it from eBGP peers). Two advertisements "
            "that would send one prefix to one peer from one node with different values conflict: the later "
            "one by name is an error."
        ),
        "spec.communities": (
            "BGP communities: values `AA:NN` (two 16-bit numbers), large communities `large:A:B:C` (three "
            "32-bit numbers), or alias names defined in a Community object."
        ),
        "spec.ipAddressPools": (
            "The pools advertised, by name. With neither this nor `ipAddressPoolSelectors`: every pool. An "
            "unknown or invalid pool is an error on this advertisement, which keeps advertising its other pools."
        ),
        "spec.ipAddressPoolSelectors": "Pools advertised by label. " + _SELECTOR_NOTE,
        "spec.nodeSelectors": "The nodes that announce; none: every node. " + _SELECTOR_NOTE,
        "spec.peers": (
            "The BGPPeers (by name) announced to; none: every peer of the node. An unknown or invalid peer is "
            "an error; the advertisement keeps its other peers, and is left out when none is left (an empty "
            "list would mean every peer)."
        ),
        "spec.serviceSelectors": "Only Services whose labels match. " + _SELECTOR_NOTE,
    },
    "Community": {
        "spec.communities": "Aliases. An alias name must be unique across all Community objects.",
        "spec.communities[].name": "The alias, usable in `BGPAdvertisement.spec.communities`.",
        "spec.communities[].value": "`AA:NN` (two 16-bit numbers) or `large:A:B:C` (three 32-bit numbers).",
    },
    "BFDProfile": {
        "spec.receiveInterval": "Milliseconds: the slowest rate at which we accept the router's packets.",
        "spec.transmitInterval": (
            "Milliseconds: the rate at which we would send ours (the slower of this and the router's receive "
            "interval is used)."
        ),
        "spec.detectMultiplier": (
            "Packets missed before the router declares the session down (detection time: this times the interval)."
        ),
        "spec.echoInterval": "Milliseconds. Range-checked, not used: echo mode is not implemented.",
        "spec.echoMode": "Not implemented: a warning, and the session runs in asynchronous mode.",
        "spec.passiveMode": "Wait for the router's first packet before sending any.",
        "spec.minimumTtl": (
            "Multihop sessions only (a peer with `ebgpMultiHop`): the lowest TTL a received BFD packet may "
            "carry (MetalLB's default 254: one router between). Single-hop sessions require 255 (RFC 5881)."
        ),
    },
    "L2Advertisement": {
        "spec.ipAddressPools": "Accepted, not used (layer 2 mode is not handled).",
        "spec.ipAddressPoolSelectors": "Accepted, not used.",
        "spec.nodeSelectors": "Accepted, not used.",
        "spec.interfaces": "Accepted, not used.",
    },
    "LabelSelector": {
        "matchLabels": "Labels that must all be present with these values.",
        "matchExpressions": "Requirements that must all hold.",
        "matchExpressions[].key": "A label key (optionally with a DNS-subdomain prefix: `example.com/rack`).",
        "matchExpressions[].operator": "`In` and `NotIn` need `values`; `Exists` and `DoesNotExist` take none.",
        "matchExpressions[].values": "Label values, no duplicates.",
    },
}

# ExaBGP cannot honour these BGPPeer fields (model field name -> UNSUPPORTED key).
_UNSUPPORTED_BY_EXABGP = {"keepalive_time": "keepalive_time", "connect_time": "connect_time"}


@dataclass(frozen=True)
class Section:
    kind: str
    model: type[MetalLBObject]
    api_version: str
    summary: str


def _summary(kind: str) -> str:
    return next(k.description for k in CRD_KINDS if k.kind == kind)


SECTIONS: tuple[Section, ...] = (
    Section("IPAddressPool", IPAddressPool, f"{GROUP}/v1beta1", _summary("IPAddressPool")),
    Section("BGPPeer", BGPPeer, f"{GROUP}/v1beta2", _summary("BGPPeer")),
    Section("BGPAdvertisement", BGPAdvertisement, f"{GROUP}/v1beta1", _summary("BGPAdvertisement")),
    Section("Community", Community, f"{GROUP}/v1beta1", _summary("Community")),
    Section("BFDProfile", BFDProfile, f"{GROUP}/v1beta1", _summary("BFDProfile")),
    Section("L2Advertisement", L2Advertisement, f"{GROUP}/v1beta1", _summary("L2Advertisement")),
)


# --- model fields -> rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    path: str
    type: str
    required: bool
    default: str
    description: str


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_duration(annotation: Any) -> bool:
    if get_origin(annotation) is typing.Annotated:
        return any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in annotation.__metadata__)
    return any(_is_duration(arg) for arg in get_args(annotation))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip_optional(annotation)
    if get_origin(annotation) is list:
        return _model_of(get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _type_text(annotation: Any) -> str:
    if _is_duration(annotation):
        return "duration"
    annotation = _strip_optional(annotation)
    origin = get_origin(annotation)
    if origin is typing.Annotated:  # StrictInt, StrictBool: the type is what the reader needs
        return _type_text(get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(f"`{value}`" for value in get_args(annotation))
    if origin is list:
        return "[]" + _type_text(get_args(annotation)[0])
    if origin is dict:
        key, value = get_args(annotation)
        return "object" if value is Any else f"map[{_type_text(key)}]{_type_text(value)}"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " | ".join(f"`{member.value}`" for member in annotation)
    if annotation is LabelSelectorSpec:
        return "[LabelSelector](#labelselector)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return {str: "string", int: "integer", bool: "boolean", float: "number"}.get(annotation, str(annotation))


def _bounds_text(info: FieldInfo) -> str:
    low = next((m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), None)
    min_length = next((m.min_length for m in info.metadata if isinstance(m, annotated_types.MinLen)), None)
    if low is not None and high is not None:
        return f", {low}–{'2³²−1' if high == UINT32 else high}"
    if low is not None:
        return f", ≥ {low}"
    if min_length:
        return ", not empty"
    return ""


def value_text(value: Any) -> str:
    """A default as a user would write it in YAML, in backticks; `—` for "unset"."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, (int, float)):
        return f"`{value}`"
    flow = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"`{flow}`"


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return ""
    return value_text(info.get_default(call_default_factory=True))


def _alias(name: str, info: FieldInfo) -> str:
    return info.alias or name


def model_rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, FieldInfo]]:
    """(path, python name, field) for every field of `model`, nested models expanded (LabelSelector not)."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{_alias(name, info)}"
        yield path, name, info
        nested = _model_of(info.annotation)
        if nested is not None and nested is not LabelSelectorSpec:
            is_list = get_origin(_strip_optional(info.annotation)) is list
            yield from model_rows(nested, f"{path}[]." if is_list else f"{path}.")


def _rows(kind: str, model: type[BaseModel], prefix: str, descriptions: Mapping[str, str]) -> list[Row]:
    rows = []
    for path, name, info in model_rows(model, prefix):
        description = descriptions.get(path) or (info.description or "")
        if not description:
            raise DocsGenerationError(f"{kind} {path}: no description; add one to DESCRIPTIONS in {__name__}")
        if kind == "BGPPeer" and name in _UNSUPPORTED_BY_EXABGP:
            description += f" **Not supported by ExaBGP:** {UNSUPPORTED[_UNSUPPORTED_BY_EXABGP[name]]}."
        type_text = _type_text(info.annotation) + _bounds_text(info)
        rows.append(Row(path, type_text, info.is_required(), _default_text(info), markdown_escape(description)))
    return rows


def markdown_escape(text: str) -> str:
    """Plain text in a table cell: `<node>` must not become an HTML tag, nor `|` a cell border.

    Text inside `code spans` is left alone (Markdown shows it literally); a `|` is escaped everywhere.
    """
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def _table(rows: Sequence[Row]) -> str:
    lines = ["| Field | Type | Required | Default | Description |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [f"`{row.path}`", row.type.replace("|", "\\|"), "yes" if row.required else "", row.default, row.description]
        lines.append("| " + " | ".join(cell.replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines)


def _spec_model(model: type[MetalLBObject]) -> type[BaseModel]:
    spec = _model_of(model.model_fields["spec"].annotation)
    assert spec is not None
    return spec


def _check_descriptions_used() -> None:
    """A description for a field that no longer exists is a stale sentence in the docs."""
    known: dict[str, set[str]] = {}
    for section in SECTIONS:
        known.setdefault(section.kind, set()).update(p for p, _, _ in model_rows(_spec_model(section.model), "spec."))
    known["BGPPeer"].update(p for p, _, _ in model_rows(_spec_model(BGPPeerV1beta1), "spec."))
    known["LabelSelector"] = {p for p, _, _ in model_rows(LabelSelectorSpec)}
    for kind, paths in DESCRIPTIONS.items():
        stale = sorted(set(paths) - known.get(kind, set()))
        if stale:
            raise DocsGenerationError(f"{kind}: DESCRIPTIONS names fields the models do not have: {', '.join(stale)}")


def _peer_versions_text() -> str:
    v1 = [p for p, _, _ in model_rows(_spec_model(BGPPeerV1beta1), "spec.")]
    v2 = [p for p, _, _ in model_rows(_spec_model(BGPPeer), "spec.")]
    only_v1 = [p for p in v1 if p not in v2]
    only_v2 = [p for p in v2 if p not in v1 and not p.startswith("spec.passwordSecret.")]
    rows = [r for r in _rows("BGPPeer", _spec_model(BGPPeerV1beta1), "spec.", DESCRIPTIONS["BGPPeer"]) if r.path in only_v1]
    return "\n".join([
        f"`{GROUP}/v1beta1` BGPPeers are read too and converted to v1beta2, as MetalLB's conversion webhook "
        "does. v1beta1 has the same fields except: "
        f"{', '.join(f'`{p}`' for p in only_v2)} exist only in v1beta2, and v1beta1 also has:",
        "",
        _table(rows),
    ])


def _labelselector_section() -> str:
    rows = _rows("LabelSelector", LabelSelectorSpec, "", DESCRIPTIONS["LabelSelector"])
    return "\n".join([
        "### LabelSelector",
        "",
        "Kubernetes' label selector, as in MetalLB. An empty selector (`{}`) matches everything. Keys and "
        "values are checked as Kubernetes checks them, and duplicated selectors or expressions are errors.",
        "",
        _table(rows),
    ])


def _configuration_state_section() -> str:
    status = _model_of(ConfigurationState.model_fields["status"].annotation)
    assert status is not None
    rows = _rows("ConfigurationState", status, "status.", {})
    return "\n".join([
        "### ConfigurationState (written by metallb-bgp)",
        "",
        f"`{GROUP}/v1beta1`. {markdown_escape(_summary('ConfigurationState'))} Users do not create these.",
        "",
        _table(rows),
    ])


def reference_markdown() -> str:
    """The CRD field reference (the `crd-reference` region of docs/configuration.md)."""
    _check_descriptions_used()
    parts: list[str] = []
    for section in SECTIONS:
        spec_field = section.model.model_fields["spec"]
        rows = _rows(section.kind, _spec_model(section.model), "spec.", DESCRIPTIONS.get(section.kind, {}))
        required = "required" if spec_field.is_required() else "optional"
        parts += [
            f"### {section.kind}",
            "",
            f"`apiVersion: {section.api_version}`, `kind: {section.kind}`. {markdown_escape(section.summary)} "
            f"`spec` is {required}.",
            "",
            _table(rows),
            "",
        ]
        if section.kind == "BGPPeer":
            parts += [_peer_versions_text(), ""]
    parts += [_labelselector_section(), "", _configuration_state_section(), ""]
    return "\n".join(parts)


# --- Helm values ---------------------------------------------------------------------------------------------

# For keys the chart's schema and values.yaml leave without words: the usual Kubernetes meaning.
_GENERIC_VALUE_WORDS = {
    "create": "Create it.",
    "name": "Name (empty: generated from the release name).",
    "annotations": "Annotations on it.",
    "requests": "Container resource requests.",
    "limits": "Container resource limits.",
    "nodeSelector": "Pod nodeSelector.",
    "tolerations": "Pod tolerations.",
    "affinity": "Pod affinity.",
    "priorityClassName": "Pod priorityClassName.",
    "podAnnotations": "Extra pod annotations.",
    "podLabels": "Extra pod labels.",
    "port": "TCP port.",
    "interval": "Scrape interval (empty: Prometheus' default).",
    "labels": "Extra labels on the object.",
    "enabled": "Turn it on.",
    "renewDeadline": "Seconds a leader keeps trying to renew its lease before it stops writing.",
    "retryPeriod": "Seconds between leader election attempts.",
    "logFormat": "`json` (one object per line), `console`, or `auto` (console on a terminal).",
    "pullPolicy": "imagePullPolicy.",
    "repository": "Image repository.",
    "nameOverride": "Replaces the chart name in resource names.",
    "fullnameOverride": "Replaces the release-chart name of every resource.",
    "imagePullSecrets": "Secrets for pulling the image.",
}


def values_comments(text: str) -> dict[str, str]:
    """Dotted key path -> the comment lines right above that key in values.yaml (commented-out YAML skipped)."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if body and not stripped.startswith("#  "):  # "# prose"; "#  - name: x" is a commented-out example
                pending.append(body)
            continue
        match = re.match(r"^(\s*)([A-Za-z0-9_.-]+):", line)
        if not match:
            pending = [] if not stripped else pending
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if pending:
            comments[".".join(key for _, key in stack)] = " ".join(pending)
        pending = []
    return comments


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """`node` with its $ref followed (own keys win), and the referenced definition's description."""
    if "$ref" not in node:
        return dict(node), ""
    target: Any = schema
    for part in node["$ref"].lstrip("#/").split("/"):
        target = target[part]
    resolved, inherited = _resolve(schema, target)
    merged = resolved | {k: v for k, v in node.items() if k != "$ref"}
    return merged, inherited or str(target.get("description", ""))


def _schema_type(schema: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    node, _ = _resolve(schema, node)
    if "anyOf" in node:
        return " or ".join(_schema_type(schema, branch) for branch in node["anyOf"])
    kind = node.get("type", "any")
    kinds = [kind] if isinstance(kind, str) else list(kind)
    texts = []
    for k in kinds:
        if k == "array":
            texts.append("[]" + _schema_type(schema, node.get("items", {})))
        elif k == "object" and "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
            value = _schema_type(schema, node["additionalProperties"])
            texts.append(f"map[string]({value})" if " " in value else f"map[string]{value}")
        else:
            texts.append(k)
    text = " or ".join(texts)
    if "enum" in node:
        text += ": " + ", ".join(value_text(v) for v in node["enum"])
    return text


_MISSING = object()




def helm_value_rows(schema: Mapping[str, Any], values: Any, comments: Mapping[str, str]) -> list[Row]:
    rows: list[Row] = []

    def walk(node: Mapping[str, Any], value: Any, path: str, required: bool) -> None:
        resolved, inherited = _resolve(schema, node)
        properties = resolved.get("properties")
        if properties and (value is _MISSING or (isinstance(value, dict) and value)):
            needed = set(resolved.get("required", []))
            for key, child in properties.items():
                child_value = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
                walk(child, child_value, f"{path}.{key}" if path else key, key in needed)
            return
        leaf = path.rsplit(".", 1)[-1]
        description = (
            str(resolved.get("description", "")) or comments.get(path, "") or inherited or _GENERIC_VALUE_WORDS.get(leaf, "")
        )
        default = "" if value is _MISSING else value_text(value)
        rows.append(Row(path, _schema_type(schema, node), required, default, markdown_escape(description)))

    walk(schema, values, "", False)
    return rows


def helm_values_markdown(chart_dir: Path = CHART_DIR) -> str:
    """The Helm values table (the `helm-values` region of docs/installation.md)."""
    schema_path, values_path = chart_dir / "values.schema.json", chart_dir / "values.yaml"
    if not schema_path.is_file() or not values_path.is_file():
        return (
            "> **Not generated yet:** the chart's `values.schema.json` and `values.yaml` were not found in "
            f"`charts/{chart_dir.name}` when this file was generated. Run `{COMMAND}` once they exist.\n"
        )
    schema = json.loads(schema_path.read_text())
    text = values_path.read_text()
    rows = helm_value_rows(schema, yaml.safe_load(text) or {}, values_comments(text))
    header = (
        f"Generated from `charts/{chart_dir.name}/values.schema.json` (types, required keys) and "
        "`values.yaml` (defaults and the comments above each key). The schema rejects unknown keys.\n"
    )
    return header + "\n" + _table(rows) + "\n"


# --- metrics ---------------------------------------------------------------------------------------------------


def metrics_markdown() -> str:
    """Every metric the daemons export (the `metrics` region of docs/troubleshooting.md)."""
    lines = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    for name, collector in vars(metrics).items():
        if name.startswith("_"):  # the registration loop's variable names one of them a second time
            continue
        if isinstance(collector, metrics.ScrapedMetric):  # counted when scraped, not kept
            labels = ", ".join(f"`{label}`" for label in collector.labels) or "—"
            lines.append(f"| `{collector.exposed}` | {collector.kind} | {labels} | {markdown_escape(collector.help)} |")
            continue
        if not isinstance(collector, MetricWrapperBase):
            continue
        name = collector._name  # noqa: SLF001 - prometheus_client has no public accessor for these
        kind = collector._type  # noqa: SLF001
        shown = {"counter": f"{name}_total", "histogram": f"{name}_bucket`, `{name}_sum`, `{name}_count"}.get(kind or "", name)
        labels = ", ".join(f"`{label}`" for label in collector._labelnames) or "—"  # noqa: SLF001
        lines.append(f"| `{shown}` | {kind} | {labels} | {markdown_escape(collector._documentation)} |")  # noqa: SLF001
    return "\n".join(lines) + "\n"


# --- regions in Markdown files ---------------------------------------------------------------------------------

REGIONS: Mapping[tuple[str, str], Callable[[], str]] = {
    ("configuration.md", "crd-reference"): reference_markdown,
    ("installation.md", "helm-values"): helm_values_markdown,
    ("troubleshooting.md", "metrics"): metrics_markdown,
}


def replace_region(text: str, name: str, content: str) -> str:
    """`text` with the body of region `name` replaced by `content`; raises if the markers are missing."""
    found = [m for m in _MARKER.finditer(text) if m.group("name") == name]
    if len(found) != 1:
        raise DocsGenerationError(
            f"expected one '<!-- BEGIN GENERATED: {name} -->' ... '<!-- END GENERATED: {name} -->' pair, found {len(found)}"
        )
    match = found[0]
    body = content if content.endswith("\n") else content + "\n"
    return text[: match.start("body")] + body + text[match.end("body") :]


def generated_files(docs_dir: Path = DOCS_DIR) -> dict[Path, str]:
    """Every documentation file with a generated region, as it should be."""
    files: dict[Path, str] = {}
    for (file_name, region), make in REGIONS.items():
        path = docs_dir / file_name
        current = files.get(path)
        if current is None:
            if not path.is_file():
                raise DocsGenerationError(f"{path} is missing")
            current = path.read_text()
        files[path] = replace_region(current, region, make())
    return files


def stale_files(docs_dir: Path = DOCS_DIR) -> list[Path]:
    return [path for path, text in generated_files(docs_dir).items() if path.read_text() != text]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metallb_bgp.gen.docs_reference", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the generated regions of docs/*.md")
    action.add_argument("--check", action="store_true", help="exit 1 if a generated region is out of date")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(reference_markdown())
        return 0
    try:
        files = generated_files()
    except DocsGenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.write:
        for path, text in files.items():
            if path.read_text() != text:
                path.write_text(text)
                print(f"updated {path.relative_to(ROOT)}")
        return 0
    stale = [path for path, text in files.items() if path.read_text() != text]
    for path in stale:
        print(f"out of date: {path.relative_to(ROOT)} (run: {COMMAND})", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
