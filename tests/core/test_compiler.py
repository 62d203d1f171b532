"""compile_config: one test per rule, each checking the exact field reported and that the rest survives."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from builders import NS, V1B1, V1B2, Doc, advertisement, community, metallb_object, node, peer, pool, secret
from builders import bfd_profile as bfd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metallb_bgp.api.loader import parse_object
from metallb_bgp.api.problems import ObjectError, Severity
from metallb_bgp.api.selectors import LabelSelector, Operator, Requirement
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.model import Community
from metallb_bgp.core.config.parse import parse_community, parse_pool_addresses
from metallb_bgp.core.config.result import CompileResult
from metallb_bgp.core.snapshot import ClusterSnapshot

# --- building cluster states ---------------------------------------------------------------------------


def parsed(doc: dict[str, Any]) -> Any:
    result = parse_object(doc)
    assert result.errors == (), result.errors
    return result.obj


def models(objects: Any) -> list[Any]:
    return [o.model if isinstance(o, Doc) else o for o in objects]


def compile_(*objects: Any, errors: tuple[ObjectError, ...] = ()) -> CompileResult:
    return compile_config(ClusterSnapshot.from_objects(models(objects), errors=errors))


def problems(result: CompileResult, severity: Severity | None = Severity.ERROR) -> set[tuple[str, str, str]]:
    """(kind, name, field) of every problem (of `severity`, or all)."""
    return {(e.kind, e.name, e.field) for e in result.errors if severity is None or e.severity is severity}


def message(result: CompileResult, kind: str, name: str, field: str) -> str:
    (found,) = [e.message for e in result.errors if (e.kind, e.name, e.field) == (kind, name, field)]
    return found


GOOD_POOL = pool("good", "192.168.0.0/24")
GOOD_PEER = peer("router")

# --- IPAddressPool ------------------------------------------------------------------------------------------


def test_pool_ranges_are_summarized_into_cidrs_in_the_users_order() -> None:
    result = compile_(pool("p", "192.168.9.1-192.168.9.5", "10.0.0.0/24", "fc00::1-fc00::2"))

    assert result.errors == ()
    assert [str(c) for c in result.config.pools["p"].cidrs] == [
        "192.168.9.1/32", "192.168.9.2/31", "192.168.9.4/31", "10.0.0.0/24", "fc00::1/128", "fc00::2/128",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    ["10.0.0.0/33", "10.0.0.300/24", "10.0.0.1", "10.0.0.0/24 ", "10.0.0.0/255.255.255.0", "fe80::1%eth0/64", "x-y", "10.0.0.1-"],
)
def test_invalid_cidr_or_range_is_reported_on_its_entry_and_the_pool_is_left_out(bad: str) -> None:
    result = compile_(pool("bad", "10.1.0.0/24", bad), GOOD_POOL)

    assert problems(result) == {("IPAddressPool", "bad", "spec.addresses[1]")}
    assert list(result.config.pools) == ["good"]


def test_range_mixing_ipv4_and_ipv6_is_rejected() -> None:
    result = compile_(pool("bad", "10.0.0.1-fc00::1"), GOOD_POOL)

    assert "both be IPv4 or both be IPv6" in message(result, "IPAddressPool", "bad", "spec.addresses[0]")
    assert list(result.config.pools) == ["good"]


def test_range_whose_start_is_after_its_end_is_rejected() -> None:
    result = compile_(pool("bad", "10.0.0.9-10.0.0.1"))

    assert "start 10.0.0.9 is after end 10.0.0.1" in message(result, "IPAddressPool", "bad", "spec.addresses[0]")


def test_pool_without_addresses_is_rejected() -> None:
    result = compile_(pool("empty"), GOOD_POOL)

    assert problems(result) == {("IPAddressPool", "empty", "spec.addresses")}
    assert list(result.config.pools) == ["good"]


def test_cidr_with_host_bits_warns_and_uses_the_network_as_metallb_does() -> None:
    result = compile_(pool("p", "198.51.100.10/24"))

    assert problems(result, Severity.WARNING) == {("IPAddressPool", "p", "spec.addresses[0]")}
    assert not result.has_errors
    assert [str(c) for c in result.config.pools["p"].cidrs] == ["198.51.100.0/24"]


def test_overlapping_pools_report_the_later_pool_and_keep_the_first() -> None:
    result = compile_(pool("b-later", "10.0.0.128/25"), pool("a-first", "10.0.0.0/24"), pool("c-apart", "10.0.1.0/24"))

    assert problems(result) == {("IPAddressPool", "b-later", "spec.addresses[0]")}
    assert "IPAddressPool a-first" in message(result, "IPAddressPool", "b-later", "spec.addresses[0]")
    assert list(result.config.pools) == ["a-first", "c-apart"]


def test_range_overlapping_a_cidr_of_another_pool_is_an_overlap() -> None:
    result = compile_(pool("a", "fc00::/120"), pool("b", "2001:db8::1", "fc00::ff-fc00::1:0"))

    assert ("IPAddressPool", "b", "spec.addresses[1]") in problems(result)
    assert list(result.config.pools) == ["a"]


def test_a_pool_overlapping_only_a_bad_pool_is_kept() -> None:
    result = compile_(pool("a", "10.0.0.0/24", "nonsense"), pool("b", "10.0.0.0/24"))

    assert problems(result) == {("IPAddressPool", "a", "spec.addresses[1]")}
    assert list(result.config.pools) == ["b"]


def test_overlap_within_one_pool_reports_the_later_entry() -> None:
    result = compile_(pool("p", "10.0.0.0/16", "172.16.0.0/24", "10.0.5.1-10.0.5.9"), GOOD_POOL)

    assert problems(result) == {("IPAddressPool", "p", "spec.addresses[2]")}
    assert "spec.addresses[0]" in message(result, "IPAddressPool", "p", "spec.addresses[2]")


def test_ipv4_and_ipv6_pools_with_the_same_numbers_do_not_overlap() -> None:
    result = compile_(pool("v4", "0.0.0.0/8"), pool("v6", "::/104"))

    assert result.errors == ()
    assert list(result.config.pools) == ["v4", "v6"]


def test_service_allocation_is_copied_with_its_selectors() -> None:
    allocation = {
        "priority": 10,
        "namespaces": ["a", "b"],
        "namespaceSelectors": [{"matchLabels": {"team": "x"}}],
        "serviceSelectors": [{"matchExpressions": [{"key": "tier", "operator": "Exists"}]}],
    }
    result = compile_(pool("p", "10.0.0.0/24", serviceAllocation=allocation, autoAssign=False, avoidBuggyIPs=True))

    p = result.config.pools["p"]
    assert (p.auto_assign, p.avoid_buggy_ips) == (False, True)
    assert p.allocation.priority == 10
    assert p.allocation.namespaces == {"a", "b"}
    assert p.allocation.namespace_selectors == (LabelSelector(match_labels=frozenset({("team", "x")})),)
    assert p.allocation.service_selectors == (LabelSelector(match_expressions=(Requirement("tier", Operator.EXISTS),)),)


def test_duplicate_namespace_in_service_allocation_is_rejected() -> None:
    result = compile_(pool("p", "10.0.0.0/24", serviceAllocation={"namespaces": ["a", "a"]}))

    assert problems(result) == {("IPAddressPool", "p", "spec.serviceAllocation.namespaces[1]")}


def test_pool_labels_are_kept_for_pool_selectors() -> None:
    result = compile_(pool("p", "10.0.0.0/24", labels={"zone": "a"}))

    assert result.config.pools["p"].labels == {"zone": "a"}


# --- names and namespaces ---------------------------------------------------------------------------------


def test_duplicate_names_within_a_kind_leave_out_every_definition_and_dependents_say_why() -> None:
    result = compile_(pool("p", "10.0.0.0/24"), pool("p", "10.1.0.0/24"), GOOD_POOL, advertisement("adv", ipAddressPools=["p", "good"]))

    assert problems(result) == {("IPAddressPool", "p", "metadata.name"), ("BGPAdvertisement", "adv", "spec.ipAddressPools[0]")}
    assert "defined more than once" in message(result, "BGPAdvertisement", "adv", "spec.ipAddressPools[0]")
    assert list(result.config.pools) == ["good"]
    assert result.config.advertisements[0].pools == {"good"}


def test_the_same_name_in_different_kinds_is_fine() -> None:
    result = compile_(pool("same", "10.0.0.0/24"), peer("same"), advertisement("same"), community("same", a="1:1"), bfd("same"))

    assert problems(result) == set()
    assert list(result.config.pools) == ["same"] and list(result.config.peers) == ["same"]


def test_objects_in_another_namespace_are_ignored_with_a_warning() -> None:
    other = pool("elsewhere", "10.9.0.0/24", namespace="default")

    result = compile_(other, GOOD_POOL)

    assert problems(result, Severity.WARNING) == {("IPAddressPool", "elsewhere", "metadata.namespace")}
    assert list(result.config.pools) == ["good"]


def test_objects_without_namespace_count_as_metallbs_namespace() -> None:
    bare = parsed({"apiVersion": V1B1, "kind": "IPAddressPool", "metadata": {"name": "bare"}, "spec": {"addresses": ["10.0.0.0/24"]}})

    result = compile_(bare, pool("clash", "10.0.0.0/25"))

    assert list(result.config.pools) == ["bare"]
    assert [e.namespace for e in result.errors] == [NS]


# --- BGPPeer --------------------------------------------------------------------------------------------


def test_peer_compiles_with_metallbs_defaults() -> None:
    result = compile_(peer("r", "10.0.0.1", sourceAddress="10.0.0.2", routerID="1.2.3.4", ebgpMultiHop=True, vrf="red"))

    assert result.errors == ()
    p = result.config.peers["r"]
    assert (str(p.address), str(p.source_address), str(p.router_id)) == ("10.0.0.1", "10.0.0.2", "1.2.3.4")
    assert (p.my_asn, p.peer_asn, p.port, p.hold_time, p.keepalive_time, p.connect_time) == (64500, 64501, 179, 90, 30, None)
    assert (p.ebgp_multihop, p.vrf, p.password, p.bfd_profile, p.node_selectors) == (True, "red", None, None, ())


def test_peer_address_is_required_unless_interface_is_set() -> None:
    result = compile_(peer("r", ""), GOOD_PEER)

    assert problems(result) == {("BGPPeer", "r", "spec.peerAddress")}
    assert list(result.config.peers) == ["router"]


def test_interface_peering_is_reported_as_unsupported_by_this_speaker() -> None:
    result = compile_(peer("unnumbered", "", interface="eth0"), GOOD_PEER)

    assert problems(result) == {("BGPPeer", "unnumbered", "spec.interface")}
    assert "not supported" in message(result, "BGPPeer", "unnumbered", "spec.interface")
    assert list(result.config.peers) == ["router"]


def test_peer_address_and_interface_together_are_rejected() -> None:
    result = compile_(peer("r", "10.0.0.1", interface="eth0"))

    assert problems(result) == {("BGPPeer", "r", "spec.interface")}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"peerAddress": "10.0.0.256"}, "spec.peerAddress"),
        ({"peerAddress": "fe80::1%eth0"}, "spec.peerAddress"),
        ({"sourceAddress": "nowhere"}, "spec.sourceAddress"),
        ({"sourceAddress": "fc00::2"}, "spec.sourceAddress"),
        ({"routerID": "1.2.3"}, "spec.routerID"),
        ({"routerID": "fc00::1"}, "spec.routerID"),
        ({"peerPort": 0}, "spec.peerPort"),
        ({"vrf": "red\nblue"}, "spec.vrf"),
    ],
)
def test_peer_addresses_must_be_valid_ips_and_the_router_id_ipv4(spec: dict[str, Any], field: str) -> None:
    result = compile_(peer("bad", **spec), peer("router", "10.0.0.9"))

    assert problems(result) == {("BGPPeer", "bad", field)}
    assert list(result.config.peers) == ["router"]


def test_peer_asn_and_dynamic_asn_together_are_rejected() -> None:
    result = compile_(peer("r", dynamicASN="external"))

    assert problems(result) == {("BGPPeer", "r", "spec.dynamicASN")}


def test_peer_asn_or_dynamic_asn_is_required() -> None:
    result = compile_(metallb_object(V1B2, "BGPPeer", "r", {"myASN": 64500, "peerAddress": "10.0.0.1"}))

    assert problems(result) == {("BGPPeer", "r", "spec.peerASN")}


def test_dynamic_asn_alone_is_accepted() -> None:
    result = compile_(metallb_object(V1B2, "BGPPeer", "r", {"myASN": 64500, "dynamicASN": "internal", "peerAddress": "10.0.0.1"}))

    assert result.errors == ()
    p = result.config.peers["r"]
    assert (p.peer_asn, p.dynamic_asn.value, p.is_ibgp) == (None, "internal", True)


def test_my_asn_zero_is_rejected() -> None:
    result = compile_(peer("r", myASN=0))

    assert problems(result) == {("BGPPeer", "r", "spec.myASN")}


def test_local_asn_is_the_asn_presented_on_that_session() -> None:
    result = compile_(
        peer("differs", "10.0.0.1", localASN=65000),
        peer("same", "10.0.0.2", localASN=64500),
        peer("ibgp", "10.0.0.3", localASN=64501, peerASN=64501),
    )

    assert result.errors == ()
    assert {name: p.my_asn for name, p in result.config.peers.items()} == {"differs": 65000, "same": 64500, "ibgp": 64501}
    assert [name for name, p in result.config.peers.items() if p.is_ibgp] == ["ibgp"]


def test_ebgp_multihop_is_refused_when_local_asn_makes_the_session_ibgp() -> None:
    result = compile_(peer("ibgp", "10.0.0.3", localASN=64501, peerASN=64501, ebgpMultiHop=True))

    assert problems(result) == {("BGPPeer", "ibgp", "spec.ebgpMultiHop")}


@pytest.mark.parametrize("spec", [{"peerASN": 64500}, {"peerASN": None, "dynamicASN": "internal"}])
def test_ebgp_multihop_on_an_ibgp_peer_is_rejected(spec: dict[str, Any]) -> None:
    doc = {"myASN": 64500, "peerAddress": "10.0.0.1", "ebgpMultiHop": True} | {k: v for k, v in spec.items() if v is not None}

    result = compile_(metallb_object(V1B2, "BGPPeer", "r", doc))

    assert problems(result) == {("BGPPeer", "r", "spec.ebgpMultiHop")}


@pytest.mark.parametrize(
    ("hold", "keepalive", "expected"),
    [
        (None, None, (90, 30)),
        ("90s", None, (90, 30)),
        ("1m30s", "30s", (90, 30)),
        (None, "10s", (30, 10)),
        ("3s", None, (3, 1)),
        ("0s", None, (0, 0)),
        ("0s", "0s", (0, 0)),
        ("2s", None, "spec.holdTime"),
        (None, "500ms", "spec.keepaliveTime"),  # derived hold time 1.5s
        ("30s", "40s", "spec.keepaliveTime"),
        ("0s", "10s", "spec.keepaliveTime"),
        ("65536s", None, "spec.holdTime"),
    ],
)
def test_hold_and_keepalive_follow_metallbs_timer_rules(hold: str | None, keepalive: str | None, expected: Any) -> None:
    spec = {k: v for k, v in (("holdTime", hold), ("keepaliveTime", keepalive)) if v is not None}

    result = compile_(peer("r", **spec))

    if isinstance(expected, tuple):
        assert problems(result) == set()
        assert (result.config.peers["r"].hold_time, result.config.peers["r"].keepalive_time) == expected
    else:
        assert problems(result) == {("BGPPeer", "r", expected)}
        assert result.config.peers == {}


def test_fractional_timer_warns_and_is_truncated_to_whole_seconds() -> None:
    result = compile_(peer("r", holdTime="4.5s"))

    assert problems(result, Severity.WARNING) == {("BGPPeer", "r", "spec.holdTime")}
    assert (result.config.peers["r"].hold_time, result.config.peers["r"].keepalive_time) == (4, 1)


@pytest.mark.parametrize(("value", "ok"), [("1s", True), ("65535s", True), ("0s", False), ("500ms", False), ("1.5s", False), ("20h", False)])
def test_connect_time_is_whole_seconds_from_1_to_65535(value: str, ok: bool) -> None:
    result = compile_(peer("r", connectTime=value))

    assert problems(result) == (set() if ok else {("BGPPeer", "r", "spec.connectTime")})


def test_bfd_profile_reference_must_exist() -> None:
    result = compile_(peer("r", bfdProfile="missing"), peer("other", "10.0.0.2"))

    assert problems(result) == {("BGPPeer", "r", "spec.bfdProfile")}
    assert "no BFDProfile named missing" in message(result, "BGPPeer", "r", "spec.bfdProfile")
    assert list(result.config.peers) == ["other"]


def test_peer_using_a_bad_bfd_profile_is_reported_too() -> None:
    result = compile_(bfd("fast"), bfd("fast", receiveInterval=100), peer("r", bfdProfile="fast"))

    assert problems(result) == {("BFDProfile", "fast", "metadata.name"), ("BGPPeer", "r", "spec.bfdProfile")}
    assert result.config.peers == {} and result.config.bfd_profiles == {}


def test_known_bfd_profile_is_compiled_with_defaults_and_warned_as_not_implemented() -> None:
    result = compile_(bfd("fast", receiveInterval=100, echoMode=True), peer("r", bfdProfile="fast"))

    assert problems(result, None) == {("BGPPeer", "r", "spec.bfdProfile")}
    assert not result.has_errors
    profile = result.config.bfd_profiles["fast"]
    assert (profile.receive_interval, profile.transmit_interval, profile.echo_mode, profile.minimum_ttl) == (100, 300, True, 254)
    assert result.config.peers["r"].bfd_profile == "fast"


def test_password_and_password_secret_together_are_rejected() -> None:
    result = compile_(peer("r", password="hunter2", passwordSecret={"name": "s"}), secret("s", password="x"))

    assert problems(result) == {("BGPPeer", "r", "spec.passwordSecret")}


def test_password_secret_is_read_from_a_basic_auth_secret_in_metallbs_namespace() -> None:
    result = compile_(peer("r", passwordSecret={"name": "s"}), secret("s", password="hunter2"))

    assert result.errors == ()
    assert result.config.peers["r"].password == "hunter2"


def test_password_secret_in_another_namespace_is_refused_as_the_docs_say() -> None:
    result = compile_(peer("r", passwordSecret={"name": "s", "namespace": "vault"}), secret("s", namespace="vault", password="pw"))

    assert "r" not in result.config.peers
    assert problems(result) == {("BGPPeer", "r", "spec.passwordSecret.namespace")}


def test_password_secret_may_name_metallbs_own_namespace() -> None:
    result = compile_(peer("r", passwordSecret={"name": "s", "namespace": "metallb-system"}), secret("s", password="pw"))

    assert result.config.peers["r"].password == "pw"


@pytest.mark.parametrize(
    ("the_secret", "fragment"),
    [
        (secret("other", password="pw"), "not found"),
        (secret("s", namespace="default", password="pw"), "not found"),
        (secret("s", type_="Opaque", password="pw"), "kubernetes.io/basic-auth"),
        (secret("s", username="admin"), "no 'password' key"),
        (secret("s", password="pw\n"), "line break"),
    ],
)
def test_password_secret_must_exist_be_basic_auth_and_hold_a_password(the_secret: Any, fragment: str) -> None:
    result = compile_(peer("r", passwordSecret={"name": "s"}), the_secret, peer("other", "10.0.0.2"))

    assert problems(result) == {("BGPPeer", "r", "spec.passwordSecret")}
    assert fragment in message(result, "BGPPeer", "r", "spec.passwordSecret")
    assert list(result.config.peers) == ["other"]


def test_password_secret_with_bad_base64_is_reported_on_the_secret_and_the_peer() -> None:
    result = compile_(peer("r", passwordSecret={"name": "s"}), secret("s", raw="not base64!"))

    assert problems(result) == {("Secret", "s", "data.password"), ("BGPPeer", "r", "spec.passwordSecret")}


@pytest.mark.parametrize(
    "objects",
    [
        (peer("r", password="hunter2", passwordSecret={"name": "s"}), secret("s", password="hunter2")),
        (peer("r", password="hunter2\nx"),),
        (peer("r", passwordSecret={"name": "s"}), secret("s", password="hunter2\n")),
        (peer("r", passwordSecret={"name": "s"}), secret("s", raw="hunter2")),
        (peer("r", password="hunter2", peerAddress="bad", holdTime="1s", myASN=0),),
    ],
)
def test_the_password_never_appears_in_any_message(objects: tuple[Any, ...]) -> None:
    result = compile_(*objects)

    assert result.has_errors
    assert not any("hunter2" in str(e) for e in result.errors)
    assert "hunter2" not in repr(result.config)


def test_disable_mp_is_accepted_with_a_deprecation_warning() -> None:
    result = compile_(peer("r", disableMP=True))

    assert problems(result, None) == {("BGPPeer", "r", "spec.disableMP")}
    assert not result.has_errors
    assert result.config.peers["r"].disable_mp


def test_disable_mp_contradicting_dual_stack_is_rejected() -> None:
    result = compile_(peer("r", disableMP=True, dualStackAddressFamily=True))

    assert problems(result) == {("BGPPeer", "r", "spec.disableMP")}


def test_peer_node_selectors_become_label_selectors() -> None:
    selectors = [{"matchLabels": {"rack": "a"}, "matchExpressions": [{"key": "speed", "operator": "NotIn", "values": ["slow"]}]}]

    result = compile_(peer("r", nodeSelectors=selectors))

    (selector,) = result.config.peers["r"].node_selectors
    assert selector.matches({"rack": "a"}) and not selector.matches({"rack": "a", "speed": "slow"})


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ({"key": "k", "operator": "In"}, "spec.nodeSelectors[0].matchExpressions[0].values"),
        ({"key": "k", "operator": "NotIn", "values": []}, "spec.nodeSelectors[0].matchExpressions[0].values"),
        ({"key": "k", "operator": "Exists", "values": ["v"]}, "spec.nodeSelectors[0].matchExpressions[0].values"),
        ({"key": "k", "operator": "DoesNotExist", "values": ["v"]}, "spec.nodeSelectors[0].matchExpressions[0].values"),
        ({"key": "bad key", "operator": "Exists"}, "spec.nodeSelectors[0].matchExpressions[0].key"),
        ({"key": "k", "operator": "In", "values": ["a", "a"]}, "spec.nodeSelectors[0].matchExpressions[0].values[1]"),
        ({"key": "k", "operator": "In", "values": ["not valid!"]}, "spec.nodeSelectors[0].matchExpressions[0].values[0]"),
    ],
)
def test_selector_operators_need_values_exactly_when_metallb_says(expression: dict[str, Any], field: str) -> None:
    result = compile_(peer("r", nodeSelectors=[{"matchExpressions": [expression]}]))

    assert problems(result) == {("BGPPeer", "r", field)}


def test_invalid_label_in_match_labels_and_duplicate_selectors_are_rejected() -> None:
    selectors = [{"matchLabels": {"-bad": "x"}}, {"matchLabels": {"a": "b"}}, {"matchLabels": {"a": "b"}}]

    result = compile_(peer("r", nodeSelectors=selectors))

    assert problems(result) == {("BGPPeer", "r", "spec.nodeSelectors[0].matchLabels"), ("BGPPeer", "r", "spec.nodeSelectors[2]")}


def test_two_peers_for_the_same_session_keep_the_first_by_name() -> None:
    result = compile_(peer("b", "10.0.0.1"), peer("a", "10.0.0.1"), peer("c", "10.0.0.1", peerPort=1790, peerASN=64999))

    assert problems(result) == {("BGPPeer", "b", "spec.peerAddress")}
    assert list(result.config.peers) == ["a", "c"]


def test_a_peer_differing_only_in_port_is_a_clash_exabgp_could_not_run() -> None:
    result = compile_(peer("a", "10.0.0.1"), peer("b", "10.0.0.1", peerPort=1790))

    assert problems(result) == {("BGPPeer", "b", "spec.peerAddress")}
    assert "ExaBGP cannot run two sessions that differ only in port" in message(result, "BGPPeer", "b", "spec.peerAddress")
    assert list(result.config.peers) == ["a"]


def test_selectors_that_meet_only_through_a_node_are_a_clash() -> None:
    """OR-ed selectors: rack=1 or role=edge, against role=edge alone; they meet on a node labelled role=edge."""
    either = [{"matchLabels": {"rack": "1"}}, {"matchLabels": {"role": "edge"}}]
    edge = [{"matchLabels": {"role": "edge"}, "matchExpressions": [{"key": "rack", "operator": "Exists"}]}]
    apart = compile_(peer("a", "10.0.0.1", nodeSelectors=either), peer("b", "10.0.0.1", nodeSelectors=edge))
    assert apart.errors == ()  # no Node objects: not provably the same nodes

    met = compile_(peer("a", "10.0.0.1", nodeSelectors=either), peer("b", "10.0.0.1", nodeSelectors=edge), node("n1", role="edge", rack="2"))
    assert problems(met) == {("BGPPeer", "b", "spec.peerAddress")}
    assert list(met.config.peers) == ["a"]


def test_peers_to_one_router_from_different_nodes_are_fine() -> None:
    result = compile_(
        peer("rack1", "10.0.0.1", nodeSelectors=[{"matchLabels": {"rack": "1"}}]),
        peer("rack2", "10.0.0.1", nodeSelectors=[{"matchLabels": {"rack": "2"}}]),
    )

    assert result.errors == ()


# --- Community ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("65535:65282", Community("65535:65282")), ("0:0", Community("0:0")), ("007:1", Community("7:1")),
     ("large:4294967295:0:1", Community("4294967295:0:1", large=True))],
)  # fmt: skip
def test_community_values_are_two_16_bit_or_three_32_bit_numbers(text: str, value: Community) -> None:
    assert parse_community(text) == value


@pytest.mark.parametrize("text", ["65536:1", "1:-1", "+1:1", "1: 1", "large:1:2", "big:1:2:3", "large:4294967296:1:1", "1:2:3", "x"])
def test_invalid_community_values_are_rejected(text: str) -> None:
    result = compile_(community("c", bad=text), community("d", fine="1:1"))

    assert problems(result) == {("Community", "c", "spec.communities[0].value")}
    with pytest.raises(ValueError):
        parse_community(text)


def test_duplicate_alias_across_communities_reports_the_later_and_the_alias_is_unusable() -> None:
    result = compile_(
        community("b", shared="1:2", other="3:4"),
        community("a", shared="1:1", mine="5:6"),
        advertisement("uses-shared", communities=["shared"]),
        advertisement("uses-a", communities=["mine"]),
        advertisement("uses-b", communities=["other"]),
        GOOD_POOL,
    )

    assert problems(result) == {
        ("Community", "b", "spec.communities[0].name"),
        ("BGPAdvertisement", "uses-shared", "spec.communities[0]"),
        ("BGPAdvertisement", "uses-b", "spec.communities[0]"),
    }
    assert "Community a" in message(result, "Community", "b", "spec.communities[0].name")
    assert [a.name for a in result.config.advertisements] == ["uses-a"]
    assert result.config.advertisements[0].communities == {Community("5:6")}


def test_duplicate_alias_within_one_community_is_rejected() -> None:
    doc = {"communities": [{"name": "x", "value": "1:1"}, {"name": "x", "value": "1:2"}]}

    result = compile_(metallb_object(V1B1, "Community", "c", doc))

    assert problems(result) == {("Community", "c", "spec.communities[1].name")}


# --- BGPAdvertisement ----------------------------------------------------------------------------------


def test_advertisement_resolves_aliases_values_and_large_communities() -> None:
    result = compile_(
        community("c", noexport="65535:65281", big="large:1:2:3"),
        GOOD_POOL,
        advertisement("a", communities=["noexport", "big", "64500:7", "large:4:5:6"], localPref=150),
    )

    assert result.errors == ()
    (adv,) = result.config.advertisements
    assert adv.communities == {Community("65535:65281"), Community("1:2:3", True), Community("64500:7"), Community("4:5:6", True)}
    assert (adv.local_pref, adv.pools) == (150, {"good"})


def test_unknown_community_alias_leaves_the_advertisement_out() -> None:
    result = compile_(GOOD_POOL, advertisement("a", communities=["nope"]), advertisement("b"))

    assert problems(result) == {("BGPAdvertisement", "a", "spec.communities[0]")}
    assert "neither a community value" in message(result, "BGPAdvertisement", "a", "spec.communities[0]")
    assert [a.name for a in result.config.advertisements] == ["b"]


def test_invalid_community_value_in_an_advertisement_is_rejected() -> None:
    result = compile_(GOOD_POOL, advertisement("a", communities=["1:99999"]))

    assert problems(result) == {("BGPAdvertisement", "a", "spec.communities[0]")}
    assert result.config.advertisements == ()


def test_alias_from_a_bad_community_leaves_the_advertisement_out_and_names_it() -> None:
    result = compile_(community("c", ok="1:1", broken="1:x"), GOOD_POOL, advertisement("a", communities=["ok"]))

    assert problems(result) == {("Community", "c", "spec.communities[1].value"), ("BGPAdvertisement", "a", "spec.communities[0]")}
    assert "Community c, which is invalid" in message(result, "BGPAdvertisement", "a", "spec.communities[0]")
    assert result.config.advertisements == ()


def test_unknown_pool_name_is_a_warning_as_in_metallb_and_the_other_pools_are_still_advertised() -> None:
    result = compile_(GOOD_POOL, advertisement("a", ipAddressPools=["typo", "good"]))

    assert problems(result) == set()
    assert problems(result, Severity.WARNING) == {("BGPAdvertisement", "a", "spec.ipAddressPools[0]")}
    assert "no IPAddressPool named typo" in message(result, "BGPAdvertisement", "a", "spec.ipAddressPools[0]")
    assert result.config.advertisements[0].pools == {"good"}


def test_advertisement_naming_a_bad_pool_is_reported() -> None:
    result = compile_(pool("broken", "nonsense"), advertisement("a", ipAddressPools=["broken"]))

    assert problems(result) == {("IPAddressPool", "broken", "spec.addresses[0]"), ("BGPAdvertisement", "a", "spec.ipAddressPools[0]")}
    assert "IPAddressPool broken is invalid" in message(result, "BGPAdvertisement", "a", "spec.ipAddressPools[0]")
    assert result.config.advertisements[0].pools == frozenset()


def test_pool_selector_matching_a_bad_pool_is_reported() -> None:
    result = compile_(
        pool("broken", "nonsense", labels={"zone": "a"}),
        pool("fine", "10.0.0.0/24", labels={"zone": "a"}),
        advertisement("a", ipAddressPoolSelectors=[{"matchLabels": {"zone": "a"}}]),
    )

    assert ("BGPAdvertisement", "a", "spec.ipAddressPoolSelectors[0]") in problems(result)
    assert result.config.advertisements[0].pools == {"fine"}


def test_pools_come_from_names_and_selectors_together() -> None:
    result = compile_(
        pool("named", "10.0.0.0/24"),
        pool("labelled", "10.0.1.0/24", labels={"tier": "gold"}),
        pool("other", "10.0.2.0/24", labels={"tier": "iron"}),
        advertisement("a", ipAddressPools=["named"], ipAddressPoolSelectors=[{"matchLabels": {"tier": "gold"}}]),
    )

    assert result.errors == ()
    assert result.config.advertisements[0].pools == {"named", "labelled"}


def test_advertisement_without_pools_or_selectors_covers_every_good_pool() -> None:
    result = compile_(pool("a", "10.0.0.0/24"), pool("b", "10.0.1.0/24"), pool("bad", "x"), advertisement("all"))

    assert result.config.advertisements[0].pools == {"a", "b"}
    assert problems(result) == {("IPAddressPool", "bad", "spec.addresses[0]")}


def test_unknown_peer_is_a_warning_as_in_metallb_and_the_other_peers_are_kept() -> None:
    result = compile_(GOOD_POOL, GOOD_PEER, advertisement("a", peers=["router", "ghost"]))

    assert problems(result) == set()
    assert problems(result, Severity.WARNING) == {("BGPAdvertisement", "a", "spec.peers[1]")}
    assert "no BGPPeer named ghost" in message(result, "BGPAdvertisement", "a", "spec.peers[1]")
    assert result.config.advertisements[0].peers == {"router"}


def test_an_advertisement_naming_only_missing_peers_announces_nothing_with_a_warning() -> None:
    result = compile_(GOOD_POOL, GOOD_PEER, advertisement("a", peers=["ghost"]))

    assert problems(result) == set()
    assert problems(result, Severity.WARNING) == {("BGPAdvertisement", "a", "spec.peers[0]"), ("BGPAdvertisement", "a", "spec.peers")}
    assert result.config.advertisements == ()


def test_advertisement_whose_peers_are_all_unusable_is_left_out_rather_than_sent_to_every_peer() -> None:
    result = compile_(GOOD_POOL, GOOD_PEER, peer("broken", "x"), advertisement("a", peers=["broken"]))

    assert problems(result) == {
        ("BGPPeer", "broken", "spec.peerAddress"),
        ("BGPAdvertisement", "a", "spec.peers[0]"),
        ("BGPAdvertisement", "a", "spec.peers"),
    }
    assert "BGPPeer broken is invalid" in message(result, "BGPAdvertisement", "a", "spec.peers[0]")
    assert result.config.advertisements == ()


@pytest.mark.parametrize(
    ("spec", "field"), [({"aggregationLength": 33}, "spec.aggregationLength"), ({"aggregationLengthV6": 129}, "spec.aggregationLengthV6")]
)
def test_aggregation_lengths_are_at_most_32_and_128(spec: dict[str, int], field: str) -> None:
    result = compile_(GOOD_POOL, advertisement("a", **spec), advertisement("b"))

    assert problems(result) == {("BGPAdvertisement", "a", field)}
    assert [a.name for a in result.config.advertisements] == ["b"]


@pytest.mark.parametrize(
    ("addresses", "length", "ok"),
    [
        (["10.0.0.0/24"], 24, True),
        (["10.0.0.0/24"], 28, True),
        (["10.0.0.0/24"], 16, False),
        (["10.0.0.1-10.0.0.6"], 31, True),
        (["10.0.0.1-10.0.0.6"], 30, False),
        (["10.0.0.0/16", "10.1.0.0/24"], 20, False),
        (["fc00::/64"], 8, True),  # the v4 length does not apply to v6 pools
    ],
)
def test_aggregation_length_may_not_be_shorter_than_the_pools_prefixes(addresses: list[str], length: int, ok: bool) -> None:
    result = compile_(pool("p", *addresses), advertisement("a", aggregationLength=length))

    assert problems(result) == (set() if ok else {("BGPAdvertisement", "a", "spec.aggregationLength")})
    assert len(result.config.advertisements) == (1 if ok else 0)


def test_aggregation_length_v6_is_checked_against_ipv6_prefixes() -> None:
    result = compile_(pool("p", "10.0.0.0/24", "fc00::/120"), advertisement("a", aggregationLengthV6=112))

    assert problems(result) == {("BGPAdvertisement", "a", "spec.aggregationLengthV6")}
    assert "IPAddressPool p" in message(result, "BGPAdvertisement", "a", "spec.aggregationLengthV6")


@pytest.mark.parametrize(
    ("spec", "field"), [({"aggregationLength": 24}, "spec.aggregationLength"), ({"aggregationLengthV6": 64}, "spec.aggregationLengthV6")]
)
def test_service_selectors_and_aggregation_are_mutually_exclusive(spec: dict[str, int], field: str) -> None:
    result = compile_(pool("p", "10.0.0.0/16", "fc00::/48"), advertisement("a", serviceSelectors=[{"matchLabels": {"app": "x"}}], **spec))

    assert problems(result) == {("BGPAdvertisement", "a", field)}


def test_two_advertisements_with_different_local_pref_for_one_pool_reject_the_later() -> None:
    result = compile_(GOOD_POOL, advertisement("b", localPref=200), advertisement("a", localPref=100), advertisement("c", localPref=100))

    assert problems(result) == {("BGPAdvertisement", "b", "spec.localPref")}
    assert "BGPAdvertisement a" in message(result, "BGPAdvertisement", "b", "spec.localPref")
    assert [a.name for a in result.config.advertisements] == ["a", "c"]


def test_unset_local_pref_counts_as_zero_against_a_set_one() -> None:
    result = compile_(GOOD_POOL, advertisement("a"), advertisement("b", localPref=100))

    assert problems(result) == {("BGPAdvertisement", "b", "spec.localPref")}


@pytest.mark.parametrize(
    "extra",
    [
        {"aggregationLength": 24},  # a different route (MetalLB's documented example)
        {"peers": ["other"]},  # different peers
        {"serviceSelectors": [{"matchLabels": {"app": "x"}}]},  # which services is unknown until runtime
        {"nodeSelectors": [{"matchLabels": {"rack": "2"}}]},  # different nodes (nodes are known)
    ],
)
def test_different_local_pref_is_fine_when_the_updates_cannot_meet(extra: dict[str, Any]) -> None:
    result = compile_(
        GOOD_POOL, GOOD_PEER, peer("other", "10.0.0.2"), node("n1", rack="1"), node("n2", rack="2"),
        advertisement("a", localPref=100, peers=["router"], nodeSelectors=[{"matchLabels": {"rack": "1"}}]),
        advertisement("b", localPref=200, **({"peers": ["router"], "nodeSelectors": [{"matchLabels": {"rack": "1"}}]} | extra)),
    )  # fmt: skip

    assert result.errors == ()
    assert len(result.config.advertisements) == 2


def test_local_pref_conflict_without_known_nodes_assumes_overlap_only_when_provable() -> None:
    rack1 = [{"matchLabels": {"r": "1"}}]
    same = compile_(GOOD_POOL, advertisement("a", localPref=1, nodeSelectors=rack1), advertisement("b", localPref=2))
    apart = compile_(
        GOOD_POOL,
        advertisement("a", localPref=1, nodeSelectors=[{"matchLabels": {"r": "1"}}]),
        advertisement("b", localPref=2, nodeSelectors=[{"matchLabels": {"r": "2"}}]),
    )

    assert problems(same) == {("BGPAdvertisement", "b", "spec.localPref")}
    assert apart.errors == ()


def test_duplicate_entries_in_advertisement_lists_are_rejected() -> None:
    twice = advertisement("a", ipAddressPools=["good", "good"], peers=["router", "router"], communities=["1:1", "1:1"])

    result = compile_(GOOD_POOL, GOOD_PEER, twice)

    assert problems(result) == {
        ("BGPAdvertisement", "a", "spec.ipAddressPools[1]"),
        ("BGPAdvertisement", "a", "spec.peers[1]"),
        ("BGPAdvertisement", "a", "spec.communities[1]"),
    }


def test_advertisement_node_and_service_selectors_are_compiled() -> None:
    selective = advertisement("a", nodeSelectors=[{"matchLabels": {"r": "1"}}], serviceSelectors=[{"matchLabels": {"app": "x"}}])

    result = compile_(GOOD_POOL, selective)

    (adv,) = result.config.advertisements
    assert adv.node_selectors[0].matches({"r": "1"}) and adv.service_selectors[0].matches({"app": "x"})


# --- L2Advertisement and the whole result ------------------------------------------------------------


def test_l2_advertisement_gives_one_warning_and_blocks_nothing() -> None:
    l2 = metallb_object(V1B1, "L2Advertisement", "l2", {"ipAddressPools": ["missing"]})

    result = compile_(l2, GOOD_POOL, GOOD_PEER, advertisement("a"))

    assert [(e.kind, e.severity) for e in result.errors] == [("L2Advertisement", Severity.WARNING)]
    assert not result.has_errors
    assert len(result.config.advertisements) == 1


def test_load_errors_are_part_of_the_result() -> None:
    load_error = ObjectError("BGPPeer", NS, "typo", "spec.peerAdress", "unknown field")

    result = compile_(GOOD_POOL, errors=(load_error,))

    assert result.errors == (load_error,)
    assert result.has_errors


def test_errors_are_sorted_and_the_output_does_not_depend_on_input_order() -> None:
    objects = [
        pool("z", "10.0.0.0/24"), pool("a", "10.0.0.0/25"), pool("m", "bad"), peer("p2", "x"), peer("p1", "10.0.0.1"),
        advertisement("adv2", localPref=5), advertisement("adv1", ipAddressPools=["m"]), community("c", x="1:1"),
    ]  # fmt: skip
    first = compile_(*objects)

    for seed in range(5):
        shuffled = objects[:]
        random.Random(seed).shuffle(shuffled)
        assert compile_(*shuffled) == first
    assert list(first.errors) == sorted(first.errors)


def test_good_objects_keep_working_around_bad_ones() -> None:
    result = compile_(
        GOOD_POOL, pool("bad", "10.0.0.0/40"), GOOD_PEER, peer("bad", myASN=0), advertisement("good-adv", ipAddressPools=["good"]),
        advertisement("bad-adv", communities=["nope"]), community("c", ok="1:1"),
    )  # fmt: skip

    assert result.has_errors
    assert list(result.config.pools) == ["good"]
    assert list(result.config.peers) == ["router"]
    assert [a.name for a in result.config.advertisements] == ["good-adv"]


# --- never raises -----------------------------------------------------------------------------------------
# Objects are mostly valid with a few fields replaced by odd or wrong values, so that compiled configs,
# dependencies between objects and every rule are all exercised, not just the parser's rejections.

NAMES = st.sampled_from(["a", "b", "c", "first-pool", ""])
OBJECT_NAMES = st.sampled_from(["a", "b", "c", "first-pool"])
GOOD_ADDRESSES = st.sampled_from(["10.0.0.0/24", "10.0.1.0/24", "10.0.2.1-10.0.2.9", "fc00::/120", "fc00:1::1-fc00:1::5"])
ADDRESSES = st.sampled_from(
    ["10.0.0.0/16", "10.0.0.128/25", "10.0.0.5-10.0.0.1", "10.0.0.1-fc00::1", "1.2.3.4/33", "bad", "", "-", "/", "10.0.0.0/x",
     "::/0", "0.0.0.0/0", "198.51.100.10/24", "10.0.0.0/24"]
)  # fmt: skip
COMMUNITIES = st.sampled_from(["1:1", "65535:65282", "65536:1", "large:1:2:3", "large:1:2", "x:1:2:3", "alias", "other", "", ":"])
DURATIONS = st.sampled_from(["0s", "1s", "2s", "3s", "90s", "500ms", "1m30s", "100000s", "9" * 400 + "s", "4.5s", 5, "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=6), st.floats(allow_nan=True))
JSONISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
SELECTOR = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(st.sampled_from(["zone", "a/b", "-x", "k"]), st.sampled_from(["a", "b", "", "!"]), max_size=2),
        "matchExpressions": st.lists(
            st.fixed_dictionaries(
                {"key": st.sampled_from(["zone", "k", "bad key"]), "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Eq"])},
                optional={"values": st.lists(st.sampled_from(["a", "b", "a"]), max_size=3)},
            ),
            max_size=2,
        ),
    },
)
SELECTORS = st.lists(SELECTOR, max_size=2)


def _mostly_valid(base: dict[str, st.SearchStrategy[Any]], wild: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid spec from `base`, with up to three fields drawn from `wild` (sometimes plain garbage)."""
    keys = st.lists(st.sampled_from(sorted(wild)), max_size=3, unique=True)
    overrides = keys.flatmap(lambda chosen: st.fixed_dictionaries({k: st.one_of(wild[k], wild[k], wild[k], JSONISH) for k in chosen}))
    return st.tuples(st.fixed_dictionaries(base), overrides).map(lambda pair: pair[0] | pair[1])


def _object(api: str, kind: str, spec: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    labels = st.dictionaries(st.sampled_from(["zone", "tier"]), st.sampled_from(["a", "b"]), max_size=2)
    metadata = st.fixed_dictionaries({"name": OBJECT_NAMES, "labels": labels}, optional={"namespace": st.sampled_from([NS, NS, "default"])})
    return st.fixed_dictionaries({"apiVersion": st.just(api), "kind": st.just(kind), "metadata": metadata, "spec": spec})


POOL_DOCS = _object(V1B1, "IPAddressPool", _mostly_valid(
    {"addresses": st.lists(GOOD_ADDRESSES, min_size=1, max_size=2)},
    {"addresses": st.lists(ADDRESSES | GOOD_ADDRESSES, max_size=3), "autoAssign": st.booleans(), "serviceAllocation": st.fixed_dictionaries(
        {}, optional={"priority": st.integers(-5, 5), "namespaces": st.lists(NAMES, max_size=2), "namespaceSelectors": SELECTORS, "serviceSelectors": SELECTORS})},
))  # fmt: skip
PEER_SPECS = _mostly_valid(
    {"myASN": st.just(64500), "peerASN": st.sampled_from([64500, 64501]), "peerAddress": st.sampled_from(["10.0.0.1", "10.0.0.2", "fc00::1"])},
    {
        "myASN": st.sampled_from([0, 64501]), "peerASN": st.sampled_from([0, 64500]), "dynamicASN": st.sampled_from(["internal", "external", "x"]),
        "localASN": st.sampled_from([0, 64500, 1]), "peerAddress": st.sampled_from(["", "bad", "fe80::1%e"]),
        "sourceAddress": st.sampled_from(["10.0.0.2", "fc00::2", "x"]), "routerID": st.sampled_from(["1.1.1.1", "fc00::1", "x"]),
        "peerPort": st.sampled_from([179, 1790, 0, 20000]), "holdTime": DURATIONS, "keepaliveTime": DURATIONS, "connectTime": DURATIONS,
        "password": st.sampled_from(["pw", "p\nw"]), "passwordSecret": st.fixed_dictionaries({"name": NAMES}, optional={"namespace": st.sampled_from([NS, "x"])}),
        "bfdProfile": NAMES, "ebgpMultiHop": st.booleans(), "disableMP": st.booleans(), "dualStackAddressFamily": st.booleans(),
        "interface": st.sampled_from(["", "eth0"]), "nodeSelectors": SELECTORS, "vrf": st.sampled_from(["", "red", "r\n"]),
    },
)  # fmt: skip
PEER_DOCS = _object(V1B2, "BGPPeer", PEER_SPECS) | _object(V1B1, "BGPPeer", PEER_SPECS)
ADVERTISEMENT_DOCS = _object(V1B1, "BGPAdvertisement", _mostly_valid(
    {},
    {
        "aggregationLength": st.integers(-1, 40), "aggregationLengthV6": st.integers(-1, 140), "localPref": st.sampled_from([0, 100, 200]),
        "communities": st.lists(COMMUNITIES, max_size=3), "ipAddressPools": st.lists(NAMES, max_size=3),
        "ipAddressPoolSelectors": SELECTORS, "nodeSelectors": SELECTORS, "peers": st.lists(NAMES, max_size=3), "serviceSelectors": SELECTORS,
    },
))  # fmt: skip
COMMUNITY_DOCS = _object(V1B1, "Community", st.fixed_dictionaries(
    {"communities": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["alias", "other", "x"]), "value": COMMUNITIES}), max_size=3)}
))  # fmt: skip
BFD_DOCS = _object(V1B1, "BFDProfile", st.fixed_dictionaries({}, optional={"receiveInterval": st.integers(0, 70000), "echoMode": st.booleans()}))
L2_DOCS = _object(V1B1, "L2Advertisement", st.fixed_dictionaries({}, optional={"ipAddressPools": st.lists(NAMES, max_size=2)}))
SECRET_DOCS = st.fixed_dictionaries({
    "apiVersion": st.just("v1"), "kind": st.just("Secret"),
    "metadata": st.fixed_dictionaries({"name": OBJECT_NAMES, "namespace": st.sampled_from([NS, "x"])}),
    "type": st.sampled_from(["kubernetes.io/basic-auth", "Opaque"]),
    "data": st.dictionaries(st.sampled_from(["password", "username"]), st.sampled_from(["cHc=", "!!", "cA0K", "/w=="]), max_size=2),
})  # fmt: skip
NODE_LABELS = st.dictionaries(st.sampled_from(["zone", "k"]), st.sampled_from(["a", "b"]))
NODE_DOCS = st.fixed_dictionaries(
    {"apiVersion": st.just("v1"), "kind": st.just("Node"), "metadata": st.fixed_dictionaries({"name": OBJECT_NAMES, "labels": NODE_LABELS})}
)
ANY_DOC = st.one_of(POOL_DOCS, PEER_DOCS, ADVERTISEMENT_DOCS, COMMUNITY_DOCS, BFD_DOCS, L2_DOCS, SECRET_DOCS, NODE_DOCS, JSONISH)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(ANY_DOC, max_size=12))
def test_compile_never_raises_and_its_config_is_consistent(docs: list[Any]) -> None:
    outcomes = [parse_object(doc, source="random.yaml") for doc in docs]
    snapshot = ClusterSnapshot.from_objects(
        [o.obj for o in outcomes if o.obj is not None], errors=[e for o in outcomes for e in o.errors]
    )

    result = compile_config(snapshot)

    assert list(result.errors) == sorted(set(result.errors))
    assert not any("internal error" in e.message for e in result.errors), [str(e) for e in result.errors]
    config = result.config
    cidrs = [c for p in config.pools.values() for c in p.cidrs]
    assert not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1 :] if a.version == b.version)
    for adv in config.advertisements:
        assert adv.pools <= config.pools.keys() and adv.peers <= config.peers.keys()
        assert 0 <= adv.aggregation_length <= 32 and 0 <= adv.aggregation_length_v6 <= 128
    for p in config.peers.values():
        assert p.bfd_profile is None or p.bfd_profile in config.bfd_profiles
        assert isinstance(p.address, ipaddress.IPv4Address | ipaddress.IPv6Address)
        assert p.hold_time == 0 or p.hold_time >= 3
        assert p.keepalive_time <= p.hold_time
    assert compile_config(snapshot) == result


@given(st.text(max_size=40))
def test_address_parsing_raises_only_value_errors(text: str) -> None:
    try:
        cidrs, _ = parse_pool_addresses(text)
    except ValueError:
        return
    assert cidrs


def test_a_router_id_several_nodes_would_present_to_one_router_is_warned_about() -> None:
    shared = compile_(peer("r", routerID="10.0.0.100"), node("n1"), node("n2"))
    assert [(e.field, e.is_error) for e in shared.errors] == [("spec.routerID", False)]
    assert "n1, n2" in shared.errors[0].message and "r" in shared.config.peers
    one_node = compile_(peer("r", routerID="10.0.0.100", nodeSelectors=[{"matchLabels": {"rack": "a"}}]),
                        node("n1", rack="a"), node("n2", rack="b"))  # fmt: skip
    assert one_node.errors == ()
    assert compile_(peer("r"), node("n1"), node("n2")).errors == ()  # each node its own identifier
