"""Which BFD sessions a node's peers ask for: single hop, or multihop (RFC 5883) for an `ebgpMultiHop` peer,
with the profile's timers and `minimumTtl`. The sessions themselves against BIRD and FRR: test_multinode."""

from __future__ import annotations

from ipaddress import ip_address

from metallb_bgp.bfd.daemon import MULTIHOP_PORT, PORT, Wanted
from metallb_bgp.bfd.session import Profile
from metallb_bgp.core.config.model import BFDProfile, Peer
from metallb_bgp.daemons.runtime import bfd_sessions


def peer(name: str, address: str, *, profile: str | None = "fast", multihop: bool = False) -> Peer:
    return Peer(name=name, my_asn=64500, peer_asn=64501, address=ip_address(address), source_address=ip_address("10.0.0.2"),
                bfd_profile=profile, ebgp_multihop=multihop)  # fmt: skip


def test_a_multihop_peer_gets_a_multihop_session_with_the_profiles_minimum_ttl_and_a_direct_one_requires_255() -> None:
    profiles = {"fast": BFDProfile(name="fast", receive_interval=200, transmit_interval=250, detect_multiplier=4, minimum_ttl=60)}
    peers = (peer("direct", "10.0.0.1"), peer("far", "10.9.0.1", multihop=True), peer("none", "10.0.0.3", profile=None),
             peer("unknown", "10.0.0.4", profile="slow"))  # fmt: skip
    sessions = {s.name: s for s in bfd_sessions(peers, profiles)}
    assert set(sessions) == {"direct", "far"}
    direct, far = sessions["direct"], sessions["far"]
    assert (direct.multihop, direct.minimum_ttl, far.multihop, far.minimum_ttl) == (False, 255, True, 60)
    assert (far.receive_ms, far.transmit_ms, far.detect_multiplier, far.local) == (200, 250, 4, "10.0.0.2")


def test_single_hop_accepts_only_ttl_255_on_3784_and_multihop_at_least_its_minimum_on_4784() -> None:
    single = Wanted("r", "10.0.0.1", "10.0.0.2", Profile())
    multi = Wanted("r", "10.9.0.1", "10.0.0.2", Profile(), multihop=True, minimum_ttl=254)
    assert (single.port, multi.port) == (PORT, MULTIHOP_PORT) == (3784, 4784)
    assert single.accepts(255) and not single.accepts(254) and not single.accepts(None)
    assert multi.accepts(255) and multi.accepts(254) and not multi.accepts(253) and not multi.accepts(64)
