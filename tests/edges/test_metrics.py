"""The metrics/health endpoint: MetalLB's metric names, readiness after the first reconcile, nothing on by default."""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY

from metallb_bgp.api.problems import ObjectError, Severity
from metallb_bgp.core.allocator.results import PoolUsage
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.routes.table import RouteAttributes, RouteTable, Skip, SkipReason
from metallb_bgp.observe import metrics

PEERS = (
    Peer(name="a", my_asn=64500, peer_asn=64501, address=ipaddress.ip_address("10.0.0.1")),
    Peer(name="b", my_asn=64500, peer_asn=64501, address=ipaddress.ip_address("10.0.0.2")),
)


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_routes_sessions_pools_and_config_errors_use_metallb_names() -> None:
    table = RouteTable(
        routes={("a", ipaddress.ip_network("192.0.2.1/32")): RouteAttributes()},
        skipped={ServiceKey("default", "x"): Skip(SkipReason.NO_ENDPOINTS)},
    )
    metrics.record_routes(table, PEERS)
    metrics.record_sessions({"a": True, "b": False})
    metrics.record_pools({"pool": PoolUsage(assigned_ipv4=3, available_ipv4=13)})
    metrics.record_config([ObjectError("BGPPeer", "ns", "r", "spec", "bad"), ObjectError("L2Advertisement", "ns", "l", "", "w", Severity.WARNING)])
    assert value("metallb_bgp_announced_prefixes_total", peer="a") == 1
    assert value("metallb_bgp_announced_prefixes_total", peer="b") == 0
    assert value("metallb_bgp_session_up", peer="a") == 1 and value("metallb_bgp_session_up", peer="b") == 0
    assert value("metallb_bgp_services_not_announced", reason="noEndpoints") == 1
    assert value("metallb_allocator_addresses_in_use_total", pool="pool") == 3
    assert value("metallb_allocator_addresses_total", pool="pool") == 16
    assert value("metallb_config_errors", severity="error") == 1
    assert value("metallb_config_errors", severity="warning") == 1
    assert value("metallb_k8s_client_config_loaded_bool") == 1 and value("metallb_k8s_client_config_stale_bool") == 1


def test_a_peer_that_goes_away_leaves_the_metrics() -> None:
    metrics.record_routes(RouteTable(), PEERS)
    metrics.record_routes(RouteTable(), PEERS[:1])
    assert value("metallb_bgp_announced_prefixes_total", peer="b") is None


def test_endpoint_serves_metrics_health_and_readiness() -> None:
    server = metrics.serve(f"127.0.0.1:{_free_port()}")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        metrics._ready.clear()
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert not_ready.value.code == 503
        metrics.record_reconcile(0.01)
        assert urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
        body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "metallb_bgp_reconciles_total" in body
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("bad", ["7472", "host:", "host:70000", "nonsense"])
def test_a_bad_metrics_address_is_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        metrics.parse_address(bad)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_allocator_gauges_have_metallbs_per_family_variants_and_services_per_pool() -> None:
    metrics.record_pools({"dual": PoolUsage(assigned_ipv4=2, assigned_ipv6=1, available_ipv4=2, available_ipv6=3)}, {"dual": 2})
    assert value("metallb_allocator_ipv4_addresses_in_use_total", pool="dual") == 2
    assert value("metallb_allocator_ipv6_addresses_in_use_total", pool="dual") == 1
    assert value("metallb_allocator_ipv4_addresses_total", pool="dual") == 4
    assert value("metallb_allocator_ipv6_addresses_total", pool="dual") == 4
    assert value("metallb_allocator_services_allocated_total", pool="dual") == 2
    metrics.record_config([])
    assert value("metallb_k8s_client_config_stale_bool") == 0
    metrics.record_config([ObjectError("Service", "default", "web", "metadata.annotations", "no such pool")])
    assert value("metallb_k8s_client_config_stale_bool") == 0  # the allocator's problem, not the configuration's


def test_pending_prefixes_are_what_exabgp_has_not_acknowledged(tmp_path) -> None:
    """MetalLB's pending prefixes, from the engine's own books: desired minus acknowledged."""
    from metallb_bgp.exabgp.engine import ExaBGPEngine

    engine = ExaBGPEngine(workdir=tmp_path, router_id=ipaddress.IPv4Address("192.0.2.9"))
    engine._peers = PEERS  # noqa: SLF001 - the books only, no child started
    key = ("a", ipaddress.ip_network("192.0.2.1/32"))
    engine._desired = RouteTable(routes={key: RouteAttributes()})  # noqa: SLF001
    assert engine.pending() == {"a": 1, "b": 0}
    engine._sent[key] = RouteAttributes()  # noqa: SLF001 - ExaBGP acknowledged it
    assert engine.pending() == {"a": 0, "b": 0}
    metrics.watch_engine(engine)  # read at each scrape
    assert value("metallb_bgp_pending_prefixes_total", peer="a") == 0
    del engine._sent[key]  # noqa: SLF001
    assert value("metallb_bgp_pending_prefixes_total", peer="a") == 1
    engine._sent[key] = RouteAttributes()  # noqa: SLF001 - recorded as this pass tells the router ...
    engine._in_flight = {key}  # noqa: SLF001 - ... but ExaBGP has not answered yet
    engine._established.add("a")  # noqa: SLF001
    assert engine.pending() == {"a": 1, "b": 0} and not engine.advertised(key)
    engine._in_flight = set()  # noqa: SLF001 - answered
    assert engine.pending() == {"a": 0, "b": 0} and engine.advertised(key)


def test_updates_and_restarts_are_read_from_the_engine_and_the_k8s_counts_from_the_source(tmp_path) -> None:
    """MetalLB's `metallb_bgp_updates_total` (here: prefix updates ExaBGP acknowledged) and k8s client
    counters, and our ExaBGP restarts, as counters read at each scrape."""
    from metallb_bgp.exabgp.commands import Command
    from metallb_bgp.exabgp.engine import ExaBGPEngine

    engine = ExaBGPEngine(workdir=tmp_path, router_id=ipaddress.IPv4Address("192.0.2.9"))
    metrics.watch_engine(engine)
    keys = tuple(("a", ipaddress.ip_network(f"192.0.2.{i}/32")) for i in range(3))

    class Reply:
        def __init__(self, ok: bool) -> None:
            self.ok = ok

    sent = [Command("announce ...", "announce", keys[:2], RouteAttributes()), Command("withdraw ...", "withdraw", keys[2:], RouteAttributes())]
    engine._count_acknowledged(sent, [Reply(True), Reply(False)])  # noqa: SLF001 - the books, no child
    assert value("metallb_bgp_updates_total", peer="a") == 2  # the refused withdrawal does not count
    engine.restarts = 2
    assert value("metallb_bgp_exabgp_restarts_total") == 2
    metrics.watch_k8s(lambda: (120, 3))
    assert (value("metallb_k8s_client_updates_total"), value("metallb_k8s_client_update_errors_total")) == (120, 3)


def test_speaker_announced_has_metallbs_labels_for_each_service_prefix_in_force() -> None:
    web, api = ServiceKey("default", "web"), ServiceKey("prod", "api")
    prefix = ipaddress.ip_network("198.51.100.7/32")
    table = RouteTable(routes={("a", prefix): RouteAttributes()}, services={prefix: (web, api)})
    current: list[RouteTable | None] = [None]
    metrics.watch_announced("node-1", lambda: current[0])
    assert value("metallb_speaker_announced", ip="198.51.100.7", node="node-1", protocol="bgp", service="default/web") is None
    current[0] = table
    for service in ("default/web", "prod/api"):
        assert value("metallb_speaker_announced", ip="198.51.100.7", node="node-1", protocol="bgp", service=service) == 1
    current[0] = RouteTable()
    assert value("metallb_speaker_announced", ip="198.51.100.7", node="node-1", protocol="bgp", service="default/web") is None


def test_the_change_latency_histogram_counts_each_change_once() -> None:
    before = value("metallb_bgp_change_latency_seconds_count") or 0
    metrics.record_change_latency(0.004)
    assert value("metallb_bgp_change_latency_seconds_count") == before + 1
    assert (value("metallb_bgp_change_latency_seconds_bucket", le="0.005") or 0) >= 1
