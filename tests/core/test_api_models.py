"""MetalLB's own documented manifests load unchanged and compile cleanly; the loader names bad fields.

The manifests under tests/data/metallb are MetalLB's documentation examples (quick start, advanced BGP,
API reference). A user moving from MetalLB must be able to point us at exactly those files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from metallb_bgp.api.duration import parse_duration
from metallb_bgp.api.loader import load_yaml, parse_object
from metallb_bgp.api.metallb import BGPPeer
from metallb_bgp.api.problems import ObjectError, Severity
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.model import Community
from metallb_bgp.core.snapshot import ClusterSnapshot

DATA = Path(__file__).resolve().parents[1] / "data" / "metallb"

# The only problems MetalLB's examples may raise here: each is a warning, and each is deliberate.
EXPECTED_WARNINGS = {
    "aggregation_localpref.yaml": {("IPAddressPool", "first-pool", "spec.addresses[0]")},  # host bits in .10/24
    "l2_advertisement.yaml": {("L2Advertisement", "example", "")},  # BGP-only speaker
    "advertisement_nodes_and_peers.yaml": {  # names the objects refused above: MetalLB warns and announces nothing
        ("BGPAdvertisement", "example-peers", field) for field in ("spec.ipAddressPools[0]", "spec.peers[0]", "spec.peers[1]", "spec.peers")
    },
}


# MetalLB's documentation names a pool `PoolA` and peers `PeerA`, `PeerB`; a real API server refuses
# those names (not DNS subdomains), so do we; the advertisement naming them then announces nothing.
EXPECTED_LOAD_ERRORS = {
    "advertisement_nodes_and_peers.yaml": {
        ("IPAddressPool", "PoolA", "metadata.name"), ("BGPPeer", "PeerA", "metadata.name"), ("BGPPeer", "PeerB", "metadata.name"),
    },
}


def load(path: Path) -> ClusterSnapshot:
    parsed = list(load_yaml(path.read_text(), source=str(path)))
    errors = {(e.kind, e.name, e.field) for p in parsed for e in p.errors}
    assert errors == EXPECTED_LOAD_ERRORS.get(path.name, set())
    return ClusterSnapshot.from_objects(p.obj for p in parsed if p.obj is not None)


def peer_doc(**spec: object) -> dict[str, object]:
    base = {"myASN": 64500, "peerASN": 64501, "peerAddress": "10.0.0.1"}
    return {"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer", "metadata": {"name": "router"}, "spec": base | spec}


@pytest.mark.parametrize("path", sorted(DATA.glob("*.yaml")), ids=lambda p: p.name)
def test_metallb_documented_manifests_load_unchanged_and_compile_cleanly(path: Path) -> None:
    result = compile_config(load(path))

    assert not result.has_errors, [str(e) for e in result.errors]
    warnings = {(w.kind, w.name, w.field) for w in result.warnings}
    assert warnings == EXPECTED_WARNINGS.get(path.name, set())


def test_quick_start_compiles_to_one_peer_one_pool_one_advertisement_for_every_pool() -> None:
    config = compile_config(load(DATA / "quickstart_bgp.yaml")).config

    assert list(config.pools) == ["first-pool"]
    assert str(config.peers["sample"].address) == "10.0.0.1"
    (advertisement,) = config.advertisements
    assert advertisement.pools == {"first-pool"}
    assert advertisement.peers == frozenset()
    assert (advertisement.aggregation_length, advertisement.aggregation_length_v6) == (32, 128)


def test_v1beta1_bgppeer_is_converted_to_v1beta2() -> None:
    snapshot = load(DATA / "bgppeer_v1beta1.yaml")

    (peer,) = snapshot.peers
    assert isinstance(peer, BGPPeer)
    assert peer.api_version == "metallb.io/v1beta2"
    assert compile_config(snapshot).config.peers["sample"].peer_asn == 64501


def test_v1beta1_bgppeer_old_port_field_becomes_peer_port() -> None:
    doc = peer_doc() | {"apiVersion": "metallb.io/v1beta1"}
    doc["spec"] = {"myASN": 64500, "peerASN": 64501, "peerAddress": "10.0.0.1", "port": 1790}

    parsed = parse_object(doc)

    assert parsed.errors == ()
    assert parsed.obj.spec.peer_port == 1790


def test_community_alias_and_large_communities_resolve() -> None:
    config = compile_config(load(DATA / "large_communities.yaml")).config

    (advertisement,) = config.advertisements
    assert advertisement.communities == {
        Community("123:456:789", large=True),
        Community("4294967295:1:2", large=True),
        Community("65535:65281"),
    }


def test_password_secret_example_gives_the_peer_its_password() -> None:
    config = compile_config(load(DATA / "password_secret.yaml")).config

    assert config.peers["example"].password == "password"


def test_service_allocation_example_is_copied() -> None:
    pool = compile_config(load(DATA / "service_allocation.yaml")).config.pools["ip-pool-ns1"]

    assert (pool.auto_assign, pool.avoid_buggy_ips) == (False, True)
    assert pool.allocation is not None
    assert pool.allocation.priority == 50
    assert pool.allocation.namespaces == {"namespace1"}
    assert pool.allocation.namespace_selectors[0].matches({"foo": "bar"})
    assert pool.allocation.service_selectors[0].matches({"app": "bar"})
    assert not pool.allocation.service_selectors[0].matches({"app": "baz"})


def test_timer_durations_of_the_example_become_seconds() -> None:
    peer = compile_config(load(DATA / "timers.yaml")).config.peers["timers"]

    assert (peer.hold_time, peer.keepalive_time, peer.connect_time, peer.graceful_restart) == (90, 30, 5, True)


def test_typo_in_a_field_name_is_an_unknown_field() -> None:
    doc = peer_doc()
    doc["spec"] = {"myASN": 64500, "peerASN": 64501, "peerAdress": "10.0.0.1"}

    parsed = parse_object(doc)

    assert parsed.obj is None
    assert ObjectError("BGPPeer", "", "router", "spec.peerAdress", "unknown field") in parsed.errors
    assert "BGPPeer router: spec.peerAdress: unknown field" in [str(e) for e in parsed.errors]


def test_wrong_type_names_the_field() -> None:
    parsed = parse_object(peer_doc(myASN="many"))

    assert parsed.obj is None
    assert [e.field for e in parsed.errors] == ["spec.myASN"]


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("0", 0.0)])
def test_durations_parse_like_go(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_object(peer_doc(holdTime=text)).obj.spec.hold_time == seconds


@pytest.mark.parametrize("text", ["90", "1m30", "ninety", "-5s", "s", ""])
def test_bad_durations_are_reported_on_their_field(text: str) -> None:
    parsed = parse_object(peer_doc(holdTime=text))

    assert parsed.obj is None
    assert [e.field for e in parsed.errors] == ["spec.holdTime"]


def test_unknown_kinds_are_ignored_and_unknown_metallb_versions_are_reported() -> None:
    assert parse_object({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}).errors == ()
    parsed = parse_object({"apiVersion": "metallb.io/v1alpha1", "kind": "IPAddressPool", "metadata": {"name": "x"}})
    assert [(e.field, e.severity) for e in parsed.errors] == [("apiVersion", Severity.ERROR)]


def test_secret_string_data_wins_and_bad_base64_is_a_value_error() -> None:
    secret = parse_object(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "!!"}, "stringData": {"a": "b"}}
    ).obj

    assert secret.value("a") == "b"
    assert secret.value("missing") is None
    with pytest.raises(ValueError, match="data.password"):
        secret.value("password")


def test_colon_numbers_and_dates_stay_strings_as_kubectl_reads_them() -> None:
    text = """
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: c, labels: {since: 2024-01-01}}
spec:
  communities:
  - {name: vpn-only, value: 1234:1}
"""
    (parsed,) = load_yaml(text, source="c.yaml")

    assert parsed.errors == ()
    assert parsed.obj.spec.communities[0].value == "1234:1"
    assert parsed.obj.metadata.labels == {"since": "2024-01-01"}


def test_a_node_address_is_its_first_internal_ip_of_the_family_else_its_external_ip() -> None:
    from metallb_bgp.api.core import Node

    node = Node.model_validate({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "status": {"addresses": [
        {"type": "Hostname", "address": "n"}, {"type": "ExternalIP", "address": "203.0.113.9"},
        {"type": "InternalIP", "address": "not-an-ip"}, {"type": "InternalIP", "address": "10.0.0.2"},
        {"type": "ExternalIP", "address": "2001:db8::9"},
    ]}})
    assert str(node.address_of(4)) == "10.0.0.2"
    assert str(node.address_of(6)) == "2001:db8::9"
    assert Node.model_validate({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}).address_of(4) is None
