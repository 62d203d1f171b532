"""Prometheus metrics and health endpoints.

Names reuse MetalLB's where the meaning is the same (`metallb_bgp_session_up`,
`metallb_bgp_announced_prefixes_total`, `metallb_allocator_addresses_in_use_total`,
`metallb_allocator_addresses_total`), so existing dashboards and alerts keep working; ours carry the
`metallb_bgp_` or `metallb_` prefix and say what they add.

Nothing listens unless `--metrics-address` is given: the endpoint serves `/metrics`, `/healthz`
(the process is alive) and `/readyz` (the initial sync is done and the loop has reconciled once).
The server is the standard library's threading HTTP server with prometheus_client's exposition; a
scrape never touches the reconcile loop's state, only the metric values it last set.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.allocator.results import PoolUsage
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.routes.table import RouteTable, tally

SESSION_UP = Gauge("metallb_bgp_session_up", "BGP session state (1 established, 0 not)", ["peer"])
BFD_SESSION_UP = Gauge("metallb_bfd_session_up", "BFD session state (1 up, 0 not), per BGPPeer with a bfdProfile", ["peer"])
ANNOUNCED = Gauge("metallb_bgp_announced_prefixes_total", "Prefixes currently announced to the peer", ["peer"])
NOT_ANNOUNCED = Gauge(
    "metallb_bgp_services_not_announced", "LoadBalancer services this node does not announce, by reason", ["reason"]
)
IN_USE = Gauge("metallb_allocator_addresses_in_use_total", "IP addresses assigned from the pool", ["pool"])
TOTAL = Gauge("metallb_allocator_addresses_total", "Assignable IP addresses in the pool", ["pool"])
IN_USE_V4 = Gauge("metallb_allocator_ipv4_addresses_in_use_total", "IPv4 addresses assigned from the pool", ["pool"])
IN_USE_V6 = Gauge("metallb_allocator_ipv6_addresses_in_use_total", "IPv6 addresses assigned from the pool", ["pool"])
TOTAL_V4 = Gauge("metallb_allocator_ipv4_addresses_total", "Assignable IPv4 addresses in the pool", ["pool"])
TOTAL_V6 = Gauge("metallb_allocator_ipv6_addresses_total", "Assignable IPv6 addresses in the pool", ["pool"])
SERVICES_ALLOCATED = Gauge("metallb_allocator_services_allocated_total", "Services with an IP from the pool", ["pool"])
CONFIG_LOADED = Gauge("metallb_k8s_client_config_loaded_bool", "1 once a configuration has been compiled and is in force")
CONFIG_STALE = Gauge(
    "metallb_k8s_client_config_stale_bool",
    "1 while the configuration in force is not the latest: an object has errors and is left out or kept at its last valid version",
)
CONFIG_ERRORS = Gauge("metallb_config_errors", "Problems in the configuration objects, by severity", ["severity"])
RECONCILES = Counter("metallb_bgp_reconciles_total", "Reconcile passes")
RECONCILE_FAILURES = Counter(
    "metallb_bgp_reconcile_failures_total", "Change sets our own code failed on (routes kept; the next one starts over)"
)
REFUSED = Counter(
    "metallb_bgp_route_updates_refused_total",
    "Route updates ExaBGP answered `error` to, per peer (kept as not sent, and sent again with backoff)",
    ["peer"],
)
NOTIFICATIONS = Counter(
    "metallb_bgp_notifications_total",
    "BGP NOTIFICATION messages, by peer, direction (receive: the router reset the session), code and subcode",
    ["peer", "direction", "code", "subcode"],
)
CHANGE_LATENCY = Histogram(
    "metallb_bgp_change_latency_seconds",
    "Time from the event that woke the loop (a watch event, a manifest file change) until ExaBGP "
    "acknowledged the routes it changed",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_SECONDS = Histogram(
    "metallb_bgp_reconcile_duration_seconds",
    "Time from the start of a reconcile until ExaBGP acknowledged the change",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_ready = threading.Event()
_serving = threading.Event()  # nobody can scrape unless `serve` ran: the loops then skip the bookkeeping


def enabled() -> bool:
    return _serving.is_set()


def record_config(problems: Iterable[ObjectError]) -> None:
    problems = list(problems)
    errors = sum(1 for p in problems if p.is_error)
    CONFIG_ERRORS.labels("error").set(errors)
    CONFIG_ERRORS.labels("warning").set(len(problems) - errors)
    CONFIG_LOADED.set(1)
    # stale: a configuration object is not used as written (a Service's problems are the allocator's)
    CONFIG_STALE.set(1 if any(p.is_error and p.kind != "Service" for p in problems) else 0)


def record_routes(table: RouteTable, peers: Iterable[Peer]) -> None:
    """Per-peer announced prefixes, and why services are not announced; gone peers leave the output."""
    tallies = tally(table)  # kept by the planners as the table changes: this costs the peers, not the routes
    _replace_children(ANNOUNCED, {peer.name: tallies.per_peer.get(peer.name, 0) for peer in peers})
    _replace_children(NOT_ANNOUNCED, tallies.skipped)


def record_bfd(peer: str, up: bool) -> None:
    BFD_SESSION_UP.labels(peer=peer).set(1 if up else 0)


def record_sessions(states: Mapping[str, bool]) -> None:
    """`states`: peer name -> established."""
    _replace_children(SESSION_UP, {name: 1 if up else 0 for name, up in states.items()})


def mark_ready() -> None:
    """The initial sync is done (a controller that is not the leader is ready too: it stands by)."""
    _ready.set()


def record_refused(peer: str, routes: int) -> None:
    REFUSED.labels(peer).inc(routes)


def record_notification(peer: str, direction: str, code: int, subcode: int) -> None:
    NOTIFICATIONS.labels(peer, direction, str(code), str(subcode)).inc()


def record_reconcile_failure() -> None:
    RECONCILE_FAILURES.inc()


def record_change_latency(seconds: float) -> None:
    CHANGE_LATENCY.observe(seconds)


def record_reconcile(seconds: float) -> None:
    RECONCILES.inc()
    RECONCILE_SECONDS.observe(seconds)
    _ready.set()


def record_pools(usage: Mapping[str, PoolUsage], services: Mapping[str, int] | None = None) -> None:
    """MetalLB's allocator gauges: addresses in use and assignable addresses (in use + available), in all
    and per family, and the services holding an address of each pool (`services`: pool -> count)."""
    _replace_children(IN_USE, {pool: u.assigned_ipv4 + u.assigned_ipv6 for pool, u in usage.items()})
    _replace_children(
        TOTAL,
        {pool: u.assigned_ipv4 + u.assigned_ipv6 + u.available_ipv4 + u.available_ipv6 for pool, u in usage.items()},
    )
    _replace_children(IN_USE_V4, {pool: u.assigned_ipv4 for pool, u in usage.items()})
    _replace_children(IN_USE_V6, {pool: u.assigned_ipv6 for pool, u in usage.items()})
    _replace_children(TOTAL_V4, {pool: u.assigned_ipv4 + u.available_ipv4 for pool, u in usage.items()})
    _replace_children(TOTAL_V6, {pool: u.assigned_ipv6 + u.available_ipv6 for pool, u in usage.items()})
    if services is not None:
        _replace_children(SERVICES_ALLOCATED, {pool: services.get(pool, 0) for pool in usage})


class ScrapedMetric:
    """A metric computed when Prometheus scrapes, from a source the daemon registers (`watch`): the
    engine's books, the source's counters, the table in force. Walking 10,000 routes on every reconcile
    would cost each change milliseconds of CPU for a figure read every 30 s."""

    def __init__(self, name: str, kind: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.kind, self.help, self.labels = name, kind, help_text, labels
        self.source: Callable[[], Mapping[tuple[str, ...], float]] | None = None

    @property
    def exposed(self) -> str:
        """The sample name Prometheus shows (a counter's ends in `_total`)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name

    def _family(self) -> GaugeMetricFamily | CounterMetricFamily:
        kind = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        return kind(self.name, self.help, labels=list(self.labels))

    def describe(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        family = self._family()
        for labels, value in sorted((self.source() if self.source is not None else {}).items()):
            family.add_metric(list(labels), value)
        yield family


PENDING = ScrapedMetric("metallb_bgp_pending_prefixes_total", "gauge",
                        "Prefixes that should be announced to the peer and ExaBGP has not acknowledged", ("peer",))
UPDATES = ScrapedMetric("metallb_bgp_updates", "counter",
                        "Prefix updates (announcements and withdrawals) ExaBGP acknowledged for the peer; ExaBGP "
                        "packs several into one BGP UPDATE message", ("peer",))
EXABGP_RESTARTS = ScrapedMetric("metallb_bgp_exabgp_restarts", "counter",
                                "Times the ExaBGP child ended and was started again (with backoff)")
K8S_UPDATES = ScrapedMetric("metallb_k8s_client_updates", "counter",
                            "Kubernetes object updates processed (each watch event, and each object of a list)")
K8S_UPDATE_ERRORS = ScrapedMetric("metallb_k8s_client_update_errors", "counter",
                                  "Kubernetes object updates that failed: the object did not parse, and is left out or "
                                  "kept at its last valid version")
SPEAKER_ANNOUNCED = ScrapedMetric("metallb_speaker_announced", "gauge",
                                  "1 for each service IP this node announces (`ip` is the announced prefix's address)",
                                  ("ip", "node", "protocol", "service"))
ROUTER_RECEIVED = ScrapedMetric("metallb_bgp_router_received_prefixes", "gauge",
                                "Prefixes of ours the router reports over BMP as received on the session from `speaker`, "
                                "before its import policy (Adj-RIB-In pre-policy)", ("router", "speaker"))
ROUTER_ACCEPTED = ScrapedMetric("metallb_bgp_router_accepted_prefixes", "gauge",
                                "Prefixes of ours the router reports over BMP as accepted from `speaker`, after its "
                                "import policy (Adj-RIB-In post-policy)", ("router", "speaker"))
BMP_CONNECTED = ScrapedMetric("metallb_bgp_bmp_router_connected", "gauge",
                              "1 while the listed router is connected to the BMP station", ("router",))
BMP_MESSAGES = ScrapedMetric("metallb_bgp_bmp_messages", "counter", "BMP messages received from the router", ("router",))
BMP_DROPPED = ScrapedMetric("metallb_bgp_bmp_dropped", "counter",
                            "BMP messages (`not_ours`: about sessions that are not our speakers') and prefixes "
                            "(`over_limit`) the station dropped, messages of a type it does not know (`unknown_type`), "
                            "and messages that did not decode (`invalid`)",
                            ("router", "reason"))
for _scraped in (PENDING, UPDATES, EXABGP_RESTARTS, K8S_UPDATES, K8S_UPDATE_ERRORS, SPEAKER_ANNOUNCED,
                 ROUTER_RECEIVED, ROUTER_ACCEPTED, BMP_CONNECTED, BMP_MESSAGES, BMP_DROPPED):
    REGISTRY.register(_scraped)


class EngineBooks(Protocol):
    """What the engine's scraped metrics read (`exabgp.ExaBGPEngine`)."""

    def pending(self) -> Mapping[str, int]: ...

    def updates(self) -> Mapping[str, int]: ...

    @property
    def restarts(self) -> int: ...


def watch_engine(engine: EngineBooks) -> None:
    """MetalLB's pending prefixes and UPDATE count, and our ExaBGP restarts, read from the engine's own
    books at each scrape (desired minus acknowledged; acknowledged updates; child restarts)."""
    PENDING.source = lambda: {(peer,): count for peer, count in engine.pending().items()}
    UPDATES.source = lambda: {(peer,): count for peer, count in engine.updates().items()}
    EXABGP_RESTARTS.source = lambda: {(): engine.restarts}


def watch_bmp(samples: Callable[[], Mapping[str, Mapping[tuple[str, ...], float]]]) -> None:
    """The BMP station's books, read at each scrape: `samples()` maps "received", "accepted",
    "connected", "messages" and "dropped" to each metric's samples (`bmp.station.Station.samples`)."""
    for key, metric in (("received", ROUTER_RECEIVED), ("accepted", ROUTER_ACCEPTED), ("connected", BMP_CONNECTED),
                        ("messages", BMP_MESSAGES), ("dropped", BMP_DROPPED)):  # fmt: skip
        metric.source = lambda key=key: samples().get(key, {})


def watch_k8s(counts: Callable[[], tuple[int, int]]) -> None:
    """`counts()`: (objects processed, objects that failed to parse), as the Kubernetes source keeps them."""
    K8S_UPDATES.source = lambda: {(): counts()[0]}
    K8S_UPDATE_ERRORS.source = lambda: {(): counts()[1]}


def watch_announced(node: str, table: Callable[[], RouteTable | None]) -> None:
    """MetalLB's `metallb_speaker_announced`: one sample per (service, prefix) in the table in force."""

    def samples() -> dict[tuple[str, ...], float]:
        current = table()
        if current is None:
            return {}
        found: dict[tuple[str, ...], float] = {}
        for prefix, services in current.services.items():
            for service in services:
                found[(str(prefix.network_address), node, "bgp", str(service))] = 1
        return found

    SPEAKER_ANNOUNCED.source = samples


def _replace_children(gauge: Gauge, values: Mapping[str, float]) -> None:
    for labels in list(gauge._metrics):  # noqa: SLF001 - prometheus_client has no public "label sets" view
        if labels[0] not in values:
            gauge.remove(*labels)
    for label, value in values.items():
        gauge.labels(label).set(value)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            ready = _ready.is_set()
            self._reply(200 if ready else 503, b"ready\n" if ready else b"not ready: initial sync pending\n")
        else:
            self._reply(404, b"not found\n")

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - scrapes are not worth a log line
        return


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` (all addresses, only when the user says so explicitly)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:7472")
    return host.strip("[]"), int(port)


def serve(address: str) -> ThreadingHTTPServer:
    """Start the metrics/health endpoint in a daemon thread; `server.shutdown()` stops it."""
    host, port = parse_address(address)
    server_class = type("Server", (ThreadingHTTPServer,), {"address_family": _family(host), "daemon_threads": True})
    server = server_class((host, port), _Handler)
    _serving.set()
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
