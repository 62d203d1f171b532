"""Which BGP identifier a node presents: its own address by default, so a fleet never shares one."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest
from builders import node

from metallb_bgp.core.config.model import Peer
from metallb_bgp.daemons import runtime
from metallb_bgp.daemons.runtime import choose_router_id


def peer(address: str = "192.0.2.1", source: str | None = None, router_id: str | None = None) -> Peer:
    return Peer(name="r", my_asn=64500, peer_asn=64501, address=ip_address(address),
                source_address=ip_address(source) if source else None, router_id=ip_address(router_id) if router_id else None)  # fmt: skip


def test_the_nodes_own_ipv4_address_comes_first_after_an_explicit_router_id() -> None:
    own = node("n1", addresses={"InternalIP": "10.1.0.7"}).model
    assert choose_router_id((peer(source="10.9.9.9"),), None, own) == IPv4Address("10.1.0.7")
    assert choose_router_id((peer(source="10.9.9.9"),), IPv4Address("10.2.2.2"), own) == IPv4Address("10.2.2.2")


def test_an_ipv6_only_node_falls_back_to_an_ipv4_source_address_then_to_the_route_toward_a_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v6_only = node("n1", addresses={"InternalIP": "2001:db8::7"}).model
    assert choose_router_id((peer(source="10.9.9.9"),), None, v6_only) == IPv4Address("10.9.9.9")
    monkeypatch.setattr(runtime, "route_source", lambda address: IPv4Address("10.3.3.3") if str(address) == "192.0.2.1" else None)
    assert choose_router_id((peer("2001:db8::1"), peer()), None, v6_only) == IPv4Address("10.3.3.3")


def test_a_peers_own_router_id_is_not_the_nodes_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BGPPeer's routerID applies to its own session (rendered per neighbour), not to the others."""
    monkeypatch.setattr(runtime, "route_source", lambda _address: None)
    assert choose_router_id((peer("2001:db8::1", router_id="10.4.4.4"),), None, None) == IPv4Address("127.0.0.1")
