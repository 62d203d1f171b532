"""Classify the lines ExaBGP writes to its API process.

One stream carries three kinds of line, interleaved: JSON events about sessions (`{ "exabgp": ...`),
the `done` / `error` acknowledgement of every command in the order the commands complete, and the
plain output of query commands (`show neighbor configuration`). The relay adds one `#relay` hello line
when it connects. This module turns a line into a typed value and nothing else; the engine decides.

ExaBGP 5.0.15 writes Python's `None` where JSON needs `null` (the peer ASN of a `peer-as auto`
neighbour), so such lines are repaired before decoding.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from metallb_bgp.core.net import IPAddress

RELAY_HELLO = "#relay"


@dataclass(frozen=True)
class Ack:
    ok: bool


@dataclass(frozen=True)
class RelayHello:
    pid: int
    exabgp_pid: int


@dataclass(frozen=True)
class NeighborId:
    """How ExaBGP's events name a neighbour."""

    address: IPAddress
    local_asn: int | None
    peer_asn: int | None


@dataclass(frozen=True)
class SessionEvent:
    neighbor: NeighborId
    state: str  # connected | up | down
    reason: str


@dataclass(frozen=True)
class NotificationEvent:
    neighbor: NeighborId
    direction: str  # receive | send
    code: int
    subcode: int
    message: str


@dataclass(frozen=True)
class ShutdownEvent:
    """ExaBGP is exiting."""


@dataclass(frozen=True)
class OtherEvent:
    kind: str


@dataclass(frozen=True)
class Output:
    text: str


Line = Ack | RelayHello | SessionEvent | NotificationEvent | ShutdownEvent | OtherEvent | Output

_PY_NONE = re.compile(r":\s*None\b")


def parse_line(line: str) -> Line:
    text = line.rstrip("\r\n")
    if text == "done":
        return Ack(ok=True)
    if text == "error":
        return Ack(ok=False)
    if text.startswith(RELAY_HELLO):
        return _relay_hello(text)
    if text.startswith("{"):
        return _event(text)
    return Output(text=text)


def relay_hello_line(pid: int, exabgp_pid: int) -> str:
    return f"{RELAY_HELLO} pid={pid} exabgp={exabgp_pid}\n"


def _relay_hello(text: str) -> Line:
    fields = dict(part.split("=", 1) for part in text.split()[1:] if "=" in part)
    try:
        return RelayHello(pid=int(fields["pid"]), exabgp_pid=int(fields["exabgp"]))
    except (KeyError, ValueError):
        return Output(text=text)


def _event(text: str) -> Line:
    data = _decode(text)
    if data is None:
        return Output(text=text)
    kind = str(data.get("type", ""))
    if kind == "state":
        return _session_event(data) or OtherEvent(kind=kind)
    if kind == "notification":
        if data.get("notification") == "shutdown":
            return ShutdownEvent()
        return _notification_event(data) or OtherEvent(kind=kind)
    return OtherEvent(kind=kind)


def _decode(text: str) -> dict[str, Any] | None:
    for candidate in (text, _PY_NONE.sub(": null", text)):
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        return value if isinstance(value, dict) else None
    return None


def _neighbor_id(data: dict[str, Any]) -> NeighborId | None:
    neighbor = data.get("neighbor")
    if not isinstance(neighbor, dict):
        return None
    try:
        address = ipaddress.ip_address(neighbor["address"]["peer"])
    except (KeyError, TypeError, ValueError):
        return None
    asn = neighbor.get("asn") or {}
    return NeighborId(address=address, local_asn=_int_or_none(asn.get("local")), peer_asn=_int_or_none(asn.get("peer")))


def _session_event(data: dict[str, Any]) -> SessionEvent | None:
    neighbor_id = _neighbor_id(data)
    if neighbor_id is None:
        return None
    body = data["neighbor"]
    return SessionEvent(neighbor=neighbor_id, state=str(body.get("state", "")), reason=str(body.get("reason", "")))


def _notification_event(data: dict[str, Any]) -> NotificationEvent | None:
    neighbor_id = _neighbor_id(data)
    body = data.get("neighbor", {})
    notification = body.get("notification") if isinstance(body, dict) else None
    if neighbor_id is None or not isinstance(notification, dict):
        return None
    return NotificationEvent(
        neighbor=neighbor_id,
        direction=str(body.get("direction", "")),
        code=_int_or_none(notification.get("code")) or 0,
        subcode=_int_or_none(notification.get("subcode")) or 0,
        message=str(notification.get("message", "")),
    )


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
