"""The requests that write to the Kubernetes API: `KubeWriter`, which never raises.

What to write is computed elsewhere, purely (`core.writes`: patches, Events, ConfigurationState
bodies; each None when nothing would change). `KubeWriter` sends those bodies with the official
client: a 409 or 404 is logged and reported to the caller, which re-reads the cluster (its watch cache)
and tries again on a later reconcile; any other API or connection error is logged the same way. A
daemon's loop must outlive any API outage. Only the leader writes: the writer asks before every request.

Also here: `concurrently` (a batch of independent writes, `WRITE_WORKERS` in flight at a time) and
`EventPacer` (the API server's event rate limits, kept on our side).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from metallb_bgp.core.writes import (
    CONFIGURATION_STATE_VERSION,
    GROUP,
    Body,
    EventSpec,
    StatusKind,
    WriteOutcome,
    WriteResult,
    configuration_state_object,
    event_body,
    event_namespace,
    ingress_ips,
)
from metallb_bgp.kube.client import MERGE_PATCH, CoreV1

log = structlog.get_logger("metallb_bgp.kube")

CONFIGURATION_STATE_PLURAL = "configurationstates"
COMPONENT_LABEL = "metallb.io/component-type"
NODE_LABEL = "metallb.io/node-name"
REQUEST_TIMEOUT = (3.0, 10.0)  # connect, read (seconds): a hung API server must not hang a reconcile
# Requests in flight at once when a pass has many independent writes (a cold start: one status patch
# per service, ~3.5 ms each on loopback, nearly all of it waiting for the API server). 8 overlap that
# wait ~8x; more would mostly queue inside the API server, which serves every client of the cluster
# from one max-requests-inflight budget (API Priority and Fairness gives each flow a share of it).
WRITE_WORKERS = 8
STATE_UNAVAILABLE_BACKOFF = 60.0  # seconds between attempts when ConfigurationState is not served
T = TypeVar("T")


# --- I/O: sending it ------------------------------------------------------------------------------


def _outcome(exc: ApiException) -> WriteOutcome:
    if exc.status == 409:
        return WriteOutcome.CONFLICT
    if exc.status == 404:
        return WriteOutcome.NOT_FOUND
    return WriteOutcome.FAILED


def _resource_version(answer: Any) -> str | None:
    if isinstance(answer, Mapping):
        return (answer.get("metadata") or {}).get("resourceVersion")
    metadata = getattr(answer, "metadata", None)
    return getattr(metadata, "resource_version", None)


class KubeWriter:
    """Sends writes with the official client; logs and reports failures instead of raising.

    `may_write` is asked before every request: the controller passes "am I still the leader", so a
    controller that loses its lease stops writing between two requests, not at the end of a batch.
    The methods are synchronous (the client is); daemons call them from a worker thread.
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        component: str,
        instance: str,
        host: str = "",
        may_write: Callable[[], bool] = lambda: True,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self.core = CoreV1(api_client)  # not the generated CoreV1Api: see core_v1
        self.custom = client.CustomObjectsApi(api_client)
        self.component = component
        self.instance = instance
        self.host = host
        self.may_write = may_write
        self.timeout = timeout
        self._state_unavailable_until = 0.0  # monotonic; ConfigurationState writes pause until then
        # the Events this writer created, most recent last: (namespace, name, count) per EventSpec
        self._events: OrderedDict[EventSpec, tuple[str, str, int]] = OrderedDict()
        self._events_lock = threading.Lock()  # emit_event runs in several write threads at once

    def _send(self, verb: str, target: str, call: Callable[[], Any], **context: Any) -> WriteResult:
        if not self.may_write():
            log.info("kube_write_skipped", verb=verb, object=target, reason="not allowed to write (not the leader)")
            return WriteResult(WriteOutcome.SKIPPED)
        try:
            answer = call()
        except ApiException as exc:
            outcome = _outcome(exc)
            log.warning("kube_write_failed", verb=verb, object=target, code=exc.status, reason=exc.reason, outcome=outcome.value)
            return WriteResult(outcome)
        except Exception as exc:  # noqa: BLE001 - connection errors, timeouts: the loop must go on
            log.warning("kube_write_failed", verb=verb, object=target, error=f"{type(exc).__name__}: {exc}"[:300])
            return WriteResult(WriteOutcome.FAILED)
        log.info(verb, object=target, **context)
        return WriteResult(WriteOutcome.OK, _resource_version(answer))

    def patch_service_status(self, namespace: str, name: str, patch: Body) -> WriteResult:
        ips = ingress_ips(patch["status"]["loadBalancer"]["ingress"])
        return self._send(
            "service_status_written",
            f"Service {namespace}/{name}",
            lambda: self.core.patch_namespaced_service_status(name, namespace, patch, timeout=self.timeout),
            ips=list(ips),
        )

    def patch_service(self, namespace: str, name: str, patch: Body) -> WriteResult:
        return self._send(
            "service_annotation_written",
            f"Service {namespace}/{name}",
            lambda: self.core.patch_namespaced_service(name, namespace, patch, timeout=self.timeout),
            annotations=patch.get("metadata", {}).get("annotations", {}),
        )

    def patch_custom_status(
        self, *, version: str, plural: str, namespace: str, name: str, patch: Body, kind: str
    ) -> WriteResult:
        return self._send(
            f"{kind.lower()}_status_written",
            f"{kind} {namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object_status(
                GROUP, version, namespace, plural, name, patch, _content_type=MERGE_PATCH, _request_timeout=self.timeout
            ),
            status=patch.get("status"),
        )

    # --- the speakers' status objects (ServiceBGPStatus, BGPSessionState) -----------------------------

    def list_status_objects(self, kind: StatusKind, namespace: str, node: str) -> dict[str, Body] | WriteOutcome:
        """Name -> status of `node`'s objects of `kind` (what an earlier speaker left); NOT_FOUND when the
        kind is not served (its CRD not installed: `helm upgrade` does not add CRDs), FAILED otherwise
        (then nothing is deleted on their account)."""
        try:
            answer: Any = self.custom.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, label_selector=f"{kind.node_label}={node}",
                _request_timeout=self.timeout,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return WriteOutcome.NOT_FOUND
            log.warning("kube_read_failed", object=f"{kind.kind} {namespace} node={node}", code=exc.status)
            return WriteOutcome.FAILED
        except Exception as exc:  # noqa: BLE001 - a connection error: try again later
            log.warning("kube_read_failed", object=f"{kind.kind} {namespace} node={node}", error=type(exc).__name__)
            return WriteOutcome.FAILED
        return {item["metadata"]["name"]: dict(item.get("status") or {}) for item in answer.get("items") or ()}

    def write_status_object(
        self, kind: StatusKind, namespace: str, name: str, status: Body, *, exists: bool, owner: Body | None
    ) -> WriteResult:
        """Create the object if it does not exist yet (409: it does), then set its status."""
        target = f"{kind.kind} {namespace}/{name}"
        if not exists:
            created = self._send(f"{kind.kind.lower()}_created", target, lambda: self.custom.create_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, kind.object(name, namespace, status, owner),
                _request_timeout=self.timeout))  # fmt: skip
            if created.outcome not in (WriteOutcome.OK, WriteOutcome.CONFLICT):
                return created
        return self._send(f"{kind.kind.lower()}_status_written", target, lambda: self.custom.patch_namespaced_custom_object_status(
            kind.group, kind.version, namespace, kind.plural, name, {"status": status}, _content_type=MERGE_PATCH,
            _request_timeout=self.timeout), status=status)  # fmt: skip

    def delete_status_object(self, kind: StatusKind, namespace: str, name: str) -> WriteResult:
        result = self._send(f"{kind.kind.lower()}_deleted", f"{kind.kind} {namespace}/{name}",
                            lambda: self.custom.delete_namespaced_custom_object(
                                kind.group, kind.version, namespace, kind.plural, name, _request_timeout=self.timeout))  # fmt: skip
        return WriteResult(WriteOutcome.OK) if result.outcome is WriteOutcome.NOT_FOUND else result

    def emit_event(self, spec: EventSpec) -> WriteResult:
        """Create the Event, or, when this writer created the same one before (a service announced
        again after its endpoints came back, a problem that returned), count it again on that Event,
        as client-go's EventCorrelator does (`kubectl describe` shows "x3 over 5m" instead of three
        Events). The memory is this process's, of the last `REMEMBERED_EVENTS`; an Event deleted or
        expired meanwhile is created anew."""
        body = event_body(spec, component=self.component, instance=self.instance, host=self.host)
        target, context = f"{spec.ref.kind} {spec.ref.namespace}/{spec.ref.name}", {"type": spec.type, "reason": spec.reason}
        with self._events_lock:
            seen = self._events.get(spec)
        if seen is not None:
            namespace, name, count = seen
            patch = {"count": count + 1, "lastTimestamp": body["lastTimestamp"]}
            result = self._send(
                "event_counted", target,
                lambda: self.core.patch_namespaced_event(name, namespace, patch, timeout=self.timeout),
                count=count + 1, **context,
            )  # fmt: skip
            if result.outcome is not WriteOutcome.NOT_FOUND:
                if result.ok:
                    self._remember_event(spec, namespace, name, count + 1)
                return result

        def create() -> Any:
            answer = self.core.create_namespaced_event(event_namespace(spec.ref), body, timeout=self.timeout)
            self._remember_event(spec, event_namespace(spec.ref), answer["metadata"]["name"], 1)
            return answer

        return self._send("event_emitted", target, create, message=body["message"], **context)

    def _remember_event(self, spec: EventSpec, namespace: str, name: str, count: int) -> None:
        with self._events_lock:
            self._events[spec] = (namespace, name, count)
            self._events.move_to_end(spec)
            while len(self._events) > REMEMBERED_EVENTS:
                self._events.popitem(last=False)

    def read_configuration_state(self, namespace: str, name: str) -> tuple[WriteOutcome, Body | None]:
        """(OK, status) of an existing object, (NOT_FOUND, None), or (FAILED, None)."""
        try:
            obj: Any = self.custom.get_namespaced_custom_object(
                GROUP, CONFIGURATION_STATE_VERSION, namespace, CONFIGURATION_STATE_PLURAL, name,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return WriteOutcome.NOT_FOUND, None
            log.warning("kube_read_failed", object=f"ConfigurationState {namespace}/{name}", code=exc.status)
            return WriteOutcome.FAILED, None
        except Exception as exc:  # noqa: BLE001
            log.warning("kube_read_failed", object=f"ConfigurationState {namespace}/{name}", error=type(exc).__name__)
            return WriteOutcome.FAILED, None
        return WriteOutcome.OK, dict(obj.get("status") or {})

    def write_configuration_state(
        self, *, namespace: str, name: str, labels: Mapping[str, str], status: Body, known: Body | None
    ) -> WriteResult:
        """Make ConfigurationState `name`'s status `status`, creating the object if needed.

        `known` is the status this writer last wrote (None: unknown, read it first). Nothing is sent
        when the object already carries `status`.
        """
        target = f"ConfigurationState {namespace}/{name}"
        if time.monotonic() < self._state_unavailable_until:
            return WriteResult(WriteOutcome.SKIPPED)
        if known is None:
            if not self.may_write():
                return WriteResult(WriteOutcome.SKIPPED)
            found, current = self.read_configuration_state(namespace, name)
            if found is WriteOutcome.FAILED:
                return WriteResult(WriteOutcome.FAILED)
            if found is WriteOutcome.NOT_FOUND:
                created = self._send(
                    "configuration_state_created",
                    target,
                    lambda: self.custom.create_namespaced_custom_object(
                        GROUP, CONFIGURATION_STATE_VERSION, namespace, CONFIGURATION_STATE_PLURAL,
                        configuration_state_object(name, namespace, labels), _request_timeout=self.timeout,
                    ),
                )
                if created.outcome is WriteOutcome.NOT_FOUND:  # the kind is not served (CRD not installed)
                    self._state_unavailable_until = time.monotonic() + STATE_UNAVAILABLE_BACKOFF
                    log.warning("configuration_state_unavailable", object=target,
                                retry_in=STATE_UNAVAILABLE_BACKOFF, hint="is the ConfigurationState CRD installed?")
                    return WriteResult(WriteOutcome.SKIPPED)
                if created.outcome not in (WriteOutcome.OK, WriteOutcome.CONFLICT):  # 409: someone created it
                    return created
                current = {}
            if current == status:
                return WriteResult(WriteOutcome.OK)
        elif known == status:
            return WriteResult(WriteOutcome.OK)
        return self.patch_custom_status(
            version=CONFIGURATION_STATE_VERSION,
            plural=CONFIGURATION_STATE_PLURAL,
            namespace=namespace,
            name=name,
            patch={"status": status},
            kind="ConfigurationState",
        )


def concurrently(
    send: Callable[[T], WriteResult], items: Sequence[T], *, workers: int = WRITE_WORKERS
) -> list[tuple[T, WriteResult]]:
    """`send(item)` for every item, up to `workers` at a time; (item, result) pairs in the items' order.

    For independent requests only (`KubeWriter`'s methods never raise, and each asks `may_write`
    itself). One item is sent inline: a single change costs no thread.
    """
    if len(items) <= 1:
        return [(item, send(item)) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="kube-write") as pool:
        return list(zip(items, pool.map(send, items), strict=True))


REMEMBERED_EVENTS = 4096  # client-go's EventCorrelator keeps as many

# kubelet's own limits on the Events it writes (--event-qps, --event-burst): Events are best effort, and
# a cold start that announces 10,000 services must not spend the API server (and our own CPU, while
# statuses and routes wait) on 10,000 of them at once, once per node.
EVENT_QPS = 50.0
EVENT_BURST = 100


class EventPacer:
    """How many Events may be written now: a token bucket of `burst`, refilled at `qps` a second.

    Why not a rate-limiting library: the loops need "how many now, and when the next batch", without
    waiting; aiolimiter's `async with` waits per item.
    """

    def __init__(self, qps: float = EVENT_QPS, burst: int = EVENT_BURST, clock: Callable[[], float] = time.monotonic) -> None:
        self.qps, self.burst, self._clock = qps, burst, clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self, wanted: int) -> int:
        """How many of `wanted` Events may go now (those are spent)."""
        self._refill()
        allowed = min(wanted, int(self._tokens))
        self._tokens -= allowed
        return allowed

    def delay(self, wanted: int) -> float:
        """Seconds until `wanted` Events (at most a burst) may go."""
        self._refill()
        return max(0.0, (min(wanted, self.burst) - self._tokens) / self.qps)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now


PACED_BATCH = 25  # Events held back by the pacer are written in batches of this many, not one at a time


# --- plumbing both daemons share --------------------------------------------------------------------








