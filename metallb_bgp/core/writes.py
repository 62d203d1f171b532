"""What the daemons write to the Kubernetes API, as values: object references, Events, patches.

Pure: each body is computed from values (a Service's `status.loadBalancer.ingress` patch, the
`metallb.io/ip-allocated-from-pool` annotation patch, IPAddressPool status counters, an Event, a
ConfigurationState status), and returns None when nothing would change, so a reconcile that finds the
cluster as it wants it sends nothing. The planners in `core.plan` build these; `kube.writer` sends them.

Every patch is a JSON merge patch: lists are replaced whole, which is what
`status.loadBalancer.ingress` needs, and custom resources accept it (they refuse strategic merge
patches). Nothing here ever carries a BGP password or any Secret data: bodies are built only from
service IPs, pool names, counters, object references, `ObjectError` texts and peer states.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.allocator.results import PoolUsage
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress, IPNetwork
from metallb_bgp.core.routes.table import RouteKey, RouteTable

GROUP = "metallb.io"
POOL_ANNOTATION = "metallb.io/ip-allocated-from-pool"
CONFIGURATION_STATE_VERSION = "v1beta1"
MAX_EVENT_MESSAGE = 1024  # the API server's limit on Event.message
MAX_ERROR_SUMMARY = 4096
Body = dict[str, Any]


@dataclass(frozen=True, order=True)
class ObjectRef:
    """The object an Event is about (involvedObject)."""

    kind: str
    namespace: str
    name: str
    api_version: str = "v1"
    uid: str = ""


@dataclass(frozen=True, order=True)
class EventSpec:
    """One Event to emit; `type` is Normal or Warning."""

    ref: ObjectRef
    type: str
    reason: str
    message: str


class WriteOutcome(str, Enum):
    OK = "ok"
    CONFLICT = "conflict"  # 409: the object changed since we read it
    NOT_FOUND = "not_found"  # 404: the object (or its kind) is gone
    FAILED = "failed"  # any other API or connection error
    SKIPPED = "skipped"  # not allowed to write now (not the leader)


@dataclass(frozen=True)
class WriteResult:
    outcome: WriteOutcome
    resource_version: str | None = None  # of the written object, when the answer carried it

    @property
    def ok(self) -> bool:
        return self.outcome is WriteOutcome.OK

    @property
    def needs_retry(self) -> bool:
        return self.outcome in (WriteOutcome.CONFLICT, WriteOutcome.FAILED)


# --- pure: what to write ----------------------------------------------------------------------------


def ingress_ips(ingress: Sequence[Any]) -> tuple[str, ...]:
    """The IPs of a status.loadBalancer.ingress list (model objects or dicts), hostnames left out."""
    ips = []
    for entry in ingress:
        ip = entry.get("ip") if isinstance(entry, Mapping) else getattr(entry, "ip", "")
        if ip:
            ips.append(str(ip).strip())
    return tuple(ips)


def ingress_of(ips: Sequence[IPAddress]) -> tuple[str, ...]:
    return tuple(str(ip) for ip in ips)


def service_status_patch(current: Sequence[str], desired: Sequence[str], *, resource_version: str = "") -> Body | None:
    """The Service status patch that makes the ingress IPs `desired` (in order), or None if they are.

    With `resource_version`, the API server refuses the patch (409) if the Service changed since that
    version: the allocation was computed from what we saw, so a stale view must not be written.
    """
    if tuple(current) == tuple(desired):
        return None
    patch: Body = {"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in desired]}}}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def pool_annotation_patch(annotations: Mapping[str, str], pool: str | None) -> Body | None:
    """Set `metallb.io/ip-allocated-from-pool` to `pool`, or remove it when None; None if already so."""
    if annotations.get(POOL_ANNOTATION) == pool:
        return None
    return {"metadata": {"annotations": {POOL_ANNOTATION: pool}}}


def pool_status(usage: PoolUsage) -> Body:
    return {
        "assignedIPv4": usage.assigned_ipv4,
        "assignedIPv6": usage.assigned_ipv6,
        "availableIPv4": usage.available_ipv4,
        "availableIPv6": usage.available_ipv6,
    }


def pool_status_patch(current: Mapping[str, Any] | None, usage: PoolUsage) -> Body | None:
    """The IPAddressPool status patch for `usage` (other status fields are left alone), or None."""
    wanted = pool_status(usage)
    current = current or {}
    if all(current.get(key) == value for key, value in wanted.items()):
        return None
    return {"status": wanted}


def problem_entry(problem: ObjectError) -> Body:
    return {
        "kind": problem.kind,
        "namespace": problem.namespace,
        "name": problem.name,
        "field": problem.field,
        "message": problem.message,
        "severity": problem.severity.value,
    }


def error_summary(problems: Sequence[ObjectError]) -> str:
    """The errors (not warnings) as one line each, bounded."""
    lines = [str(p) for p in problems if p.is_error]
    summary = "\n".join(lines)
    if len(summary) <= MAX_ERROR_SUMMARY:
        return summary
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > MAX_ERROR_SUMMARY - 40:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept) + f"\n... and {len(lines) - len(kept)} more"


def configuration_state_status(problems: Sequence[ObjectError], **extra: Any) -> Body:
    """A ConfigurationState status: `result` Valid|Invalid, `errorSummary` (errors only, one per line)
    and `errors` (every problem, warnings included, as structured entries), plus `extra` fields."""
    ordered = sorted(set(problems))
    status: Body = {
        "result": "Invalid" if any(p.is_error for p in ordered) else "Valid",
        "errorSummary": error_summary(ordered),
        "errors": [problem_entry(p) for p in ordered],
    }
    status.update(extra)
    return status


def configuration_state_object(name: str, namespace: str, labels: Mapping[str, str]) -> Body:
    return {
        "apiVersion": f"{GROUP}/{CONFIGURATION_STATE_VERSION}",
        "kind": "ConfigurationState",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
    }


def timestamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp_of(seconds: float) -> str:
    """`timestamp` of a `time.time()` value (when a session entered its state, say)."""
    return timestamp(datetime.fromtimestamp(seconds, UTC))


def event_body(spec: EventSpec, *, component: str, instance: str, host: str = "", now: datetime | None = None) -> Body:
    """A core/v1 Event about `spec.ref` (namespaced objects: in their namespace; others: default)."""
    ref = spec.ref
    involved: Body = {"kind": ref.kind, "name": ref.name, "apiVersion": ref.api_version}
    if ref.namespace:
        involved["namespace"] = ref.namespace
    if ref.uid:
        involved["uid"] = ref.uid
    stamp = timestamp(now)
    message = spec.message if len(spec.message) <= MAX_EVENT_MESSAGE else spec.message[: MAX_EVENT_MESSAGE - 3] + "..."
    source: Body = {"component": component}
    if host:
        source["host"] = host
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{ref.name}.", "namespace": event_namespace(ref)},
        "involvedObject": involved,
        "reason": spec.reason,
        "message": message,
        "type": spec.type,
        "source": source,
        "reportingComponent": component,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def event_namespace(ref: ObjectRef) -> str:
    return ref.namespace or "default"




# --- status objects the speakers keep, one per service or session and node -----------------------------------


@dataclass(frozen=True)
class StatusKind:
    """A kind of object a speaker keeps one of per thing it reports on (a service, a session), with the
    node in a label so a restarted speaker finds its predecessor's."""

    kind: str
    group: str
    version: str
    plural: str
    node_label: str
    labels: Callable[[Body], dict[str, str]]  # the object's labels, from its status

    def object(self, name: str, namespace: str, status: Body, owner: Body | None) -> Body:
        """The object to create (its status goes in a second write: the kind has a status subresource)."""
        metadata: Body = {"name": name, "namespace": namespace, "labels": self.labels(status)}
        if owner is not None:  # the speaker's Pod, as in MetalLB: its objects go when it goes
            metadata["ownerReferences"] = [owner]
        return {"apiVersion": f"{self.group}/{self.version}", "kind": self.kind, "metadata": metadata}


def _object_name(prefix: str, *parts: str) -> str:
    """A name the same speaker computes again after a restart (MetalLB's are generated, `bgp-xxxxx`): a
    create is then idempotent and a restarted speaker finds its own objects without a lookup."""
    return f"{prefix}-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:20]}"


# MetalLB's labels on ServiceBGPStatus objects, so `kubectl get servicebgpstatuses -l metallb.io/node=...` works the same
LABEL_NODE = "metallb.io/node"
LABEL_SERVICE_NAME = "metallb.io/service-name"
LABEL_SERVICE_NAMESPACE = "metallb.io/service-namespace"
SESSION_GROUP = "metallb-bgp.io"
LABEL_SESSION_NODE = f"{SESSION_GROUP}/node"
LABEL_SESSION_PEER = f"{SESSION_GROUP}/peer"

SERVICE_BGP_STATUS = StatusKind(
    "ServiceBGPStatus", GROUP, "v1beta1", "servicebgpstatuses", LABEL_NODE,
    lambda status: {LABEL_NODE: status["node"], LABEL_SERVICE_NAME: status["serviceName"],
                    LABEL_SERVICE_NAMESPACE: status["serviceNamespace"]},
)  # fmt: skip
BGP_SESSION_STATE = StatusKind(
    "BGPSessionState", SESSION_GROUP, "v1beta1", "bgpsessionstates", LABEL_SESSION_NODE,
    lambda status: {LABEL_SESSION_NODE: status["node"], LABEL_SESSION_PEER: status["peerName"]},
)  # fmt: skip


def service_bgp_status_name(node: str, namespace: str, name: str) -> str:
    return _object_name("bgp", node, namespace, name)


def service_bgp_statuses(
    node: str, table: RouteTable, advertised: Callable[[RouteKey], bool],
    router: Callable[[RouteKey], Mapping[str, Any] | None] | None = None,
) -> dict[str, Body]:  # fmt: skip
    """Object name -> status, for every service this node announces in `table`: MetalLB's fields (the
    peers it is configured to be advertised to) and ours (`peerStatus`: per peer, whether every one of
    its prefixes is `advertised`, i.e. acknowledged on an established session; with `router`, what the
    router itself reports over BMP: `routerReceived` and `routerAccepted`, true when every prefix is,
    false when one is not, absent while the router does not say)."""
    peers_of: dict[IPNetwork, list[str]] = {}
    for peer, prefix in table.routes:
        peers_of.setdefault(prefix, []).append(peer)
    per_service: dict[ServiceKey, dict[str, dict[str, bool | None]]] = {}
    for prefix, services in table.services.items():
        for peer in peers_of.get(prefix, ()):
            report = router((peer, prefix)) if router is not None else None
            facts: dict[str, bool | None] = {
                "advertised": advertised((peer, prefix)),
                "routerReceived": report.get("received") if report is not None else None,
                "routerAccepted": report.get("accepted") if report is not None else None,
            }
            for service in services:
                seen = per_service.setdefault(service, {})
                seen[peer] = _all_of(seen[peer], facts) if peer in seen else facts
    found: dict[str, Body] = {}
    for service, peers in per_service.items():
        names = sorted(peers)
        found[service_bgp_status_name(node, service.namespace, service.name)] = {
            "node": node, "serviceName": service.name, "serviceNamespace": service.namespace, "peers": names,
            "peerStatus": [{"peer": peer, **{k: v for k, v in peers[peer].items() if v is not None}} for peer in names],
        }  # fmt: skip
    return found


def _all_of(left: Mapping[str, bool | None], right: Mapping[str, bool | None]) -> dict[str, bool | None]:
    """Per fact: False if either is False, else None if either is unknown, else True."""
    return {k: False if left[k] is False or right[k] is False else None if left[k] is None or right[k] is None else True
            for k in left}  # fmt: skip


@dataclass(frozen=True)
class SessionView:
    """What a BGPSessionState says of one session (from the engine's books and the BFD process)."""

    peer_name: str
    address: str
    state: str  # idle, connected, established
    since: str | None = None
    last_error: str | None = None
    bfd: str | None = None
    prefixes_sent: int = 0
    vrf: str = ""


def bgp_session_state_name(node: str, peer: str) -> str:
    return _object_name("session", node, peer)


def bgp_session_states(node: str, sessions: Sequence[SessionView]) -> dict[str, Body]:
    """Object name -> status, one per session of this node (frr-k8s' fields, and ours)."""
    found: dict[str, Body] = {}
    for view in sessions:
        status: Body = {"bgpStatus": view.state.capitalize(), "bfdStatus": _bfd_word(view.bfd), "node": node,
                        "peer": view.address, "vrf": view.vrf, "peerName": view.peer_name,
                        "prefixesSent": view.prefixes_sent}  # fmt: skip
        if view.since:
            status["since"] = view.since
        if view.last_error:
            status["lastError"] = view.last_error
        found[bgp_session_state_name(node, view.peer_name)] = status
    return found


def _bfd_word(state: str | None) -> str:
    return {"up": "Up", "down": "Down", "init": "Init", "admin_down": "AdminDown"}.get(state or "", "")
