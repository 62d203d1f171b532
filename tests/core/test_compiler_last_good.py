"""compile_config with memory: a bad edit is reported and not applied, and nothing unrelated is lost.

Each test compiles a cluster state, then a later state with the first result's `last_good`, and checks
what the second Config keeps and which object the errors name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from builders import NS, V1B1, V1B2, Doc, advertisement, community, metallb_object, peer, pool, secret
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metallb_bgp.api.loader import parse_object
from metallb_bgp.api.problems import ObjectError, Severity
from metallb_bgp.core.config import last_good, report
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.last_good import KEEPING_LAST_VALID
from metallb_bgp.core.config.model import Community
from metallb_bgp.core.config.result import CompileResult, LastGood
from metallb_bgp.core.snapshot import ClusterSnapshot

# --- building cluster states ---------------------------------------------------------------------------


def models(objects: Any) -> list[Any]:
    return [o.model if isinstance(o, Doc) else o for o in objects]


def compile_(*objects: Any, after: CompileResult | None = None, errors: tuple[ObjectError, ...] = ()) -> CompileResult:
    snapshot = ClusterSnapshot.from_objects(models(objects), errors=errors)
    return compile_config(snapshot, last_good=None if after is None else after.last_good)


def problems(result: CompileResult, severity: Severity | None = Severity.ERROR) -> set[tuple[str, str, str]]:
    return {(e.kind, e.name, e.field) for e in result.errors if severity is None or e.severity is severity}


def message(result: CompileResult, kind: str, name: str, field: str) -> str:
    (found,) = [e.message for e in result.errors if (e.kind, e.name, e.field, e.severity) == (kind, name, field, Severity.ERROR)]
    return found


def keeps_last_valid(result: CompileResult) -> set[tuple[str, str]]:
    """(kind, name) of every object reported as falling back to its last valid version."""
    return {(e.kind, e.name) for e in result.errors if e.message == KEEPING_LAST_VALID and e.severity is Severity.WARNING}


def cidrs(result: CompileResult, name: str) -> list[str]:
    return [str(c) for c in result.config.pools[name].cidrs]


# --- pools ----------------------------------------------------------------------------------------------


def test_editing_pool_a_to_overlap_b_keeps_b_and_as_old_addresses_and_reports_the_overlap_on_a() -> None:
    before = compile_(pool("a", "10.0.0.0/24"), pool("b", "10.0.1.0/24"))

    after = compile_(pool("a", "10.0.0.0/23"), pool("b", "10.0.1.0/24"), after=before)

    assert (cidrs(after, "a"), cidrs(after, "b")) == (["10.0.0.0/24"], ["10.0.1.0/24"])
    assert problems(after) == {("IPAddressPool", "a", "spec.addresses[0]")}
    assert "IPAddressPool b" in message(after, "IPAddressPool", "a", "spec.addresses[0]")
    assert keeps_last_valid(after) == {("IPAddressPool", "a")}


def test_without_memory_the_same_overlap_reports_the_later_pool_as_before() -> None:
    result = compile_(pool("a", "10.0.0.0/23"), pool("b", "10.0.1.0/24"))

    assert problems(result) == {("IPAddressPool", "b", "spec.addresses[0]")}
    assert list(result.config.pools) == ["a"]
    assert compile_config(ClusterSnapshot.from_objects(models([pool("a", "10.0.0.0/23"), pool("b", "10.0.1.0/24")])), last_good=LastGood()) == result


def test_a_typod_pool_edit_keeps_the_pools_last_addresses_and_reports_the_field() -> None:
    objects = (advertisement("adv", ipAddressPools=["a"]), pool("b", "10.0.1.0/24"))
    before = compile_(pool("a", "10.0.0.0/24"), *objects)

    after = compile_(pool("a", "10.0.0.0/33"), *objects, after=before)

    assert cidrs(after, "a") == ["10.0.0.0/24"]
    assert problems(after) == {("IPAddressPool", "a", "spec.addresses[0]")}
    assert "invalid CIDR '10.0.0.0/33'" in message(after, "IPAddressPool", "a", "spec.addresses[0]")
    assert keeps_last_valid(after) == {("IPAddressPool", "a")}
    assert after.config.advertisements[0].pools == {"a"}  # the advertisement follows the pool
    assert after.last_good["IPAddressPool", NS, "a"] == before.last_good["IPAddressPool", NS, "a"]


def test_a_pool_edit_that_does_not_parse_is_not_taken_as_a_deletion() -> None:
    before = compile_(pool("a", "10.0.0.0/24"))
    unparsable = parse_object(metallb_object(V1B1, "IPAddressPool", "a", {"addresses": "10.0.0.0/24", "autoAsign": False}))

    after = compile_(errors=unparsable.errors, after=before)

    assert cidrs(after, "a") == ["10.0.0.0/24"]
    assert problems(after) == {("IPAddressPool", "a", "spec.addresses"), ("IPAddressPool", "a", "spec.autoAsign")}
    assert keeps_last_valid(after) == {("IPAddressPool", "a")}


def test_a_new_pool_overlapping_an_existing_one_is_left_out_and_reported_and_the_existing_stays() -> None:
    before = compile_(pool("b", "10.0.0.0/24"))

    after = compile_(pool("a", "10.0.0.0/23"), pool("b", "10.0.0.0/24"), after=before)

    assert list(after.config.pools) == ["b"]
    assert problems(after) == {("IPAddressPool", "a", "spec.addresses[0]")}
    assert "IPAddressPool b" in message(after, "IPAddressPool", "a", "spec.addresses[0]")
    assert keeps_last_valid(after) == set()


def test_a_status_write_does_not_make_an_object_new() -> None:
    before = compile_(pool("b", "10.0.0.0/24", rv="7"))

    after = compile_(pool("a", "10.0.0.0/23"), pool("b", "10.0.0.0/24", rv="9", annotations={"x": "y"}), after=before)

    assert list(after.config.pools) == ["b"]
    assert after.last_good["IPAddressPool", NS, "b"].metadata.resource_version == "9"


def test_deleting_a_pool_removes_it() -> None:
    before = compile_(pool("a", "10.0.0.0/24"), pool("b", "10.0.1.0/24"))

    after = compile_(pool("b", "10.0.1.0/24"), after=before)

    assert list(after.config.pools) == ["b"]
    assert after.errors == ()
    assert list(after.last_good) == [("IPAddressPool", NS, "b")]


def test_fixing_an_edit_applies_it() -> None:
    good = compile_(pool("a", "10.0.0.0/24"))
    typo = compile_(pool("a", "10.0.0.0/33"), after=good)

    fixed = compile_(pool("a", "10.0.5.0/24"), after=typo)

    assert cidrs(fixed, "a") == ["10.0.5.0/24"]
    assert fixed.errors == ()


def test_a_valid_edit_is_applied_at_once() -> None:
    before = compile_(pool("a", "10.0.0.0/24"), pool("b", "10.0.1.0/24"))

    after = compile_(pool("a", "10.0.2.0/24"), pool("b", "10.0.0.0/24"), after=before)  # the two swap ranges

    assert (cidrs(after, "a"), cidrs(after, "b")) == (["10.0.2.0/24"], ["10.0.0.0/24"])
    assert after.errors == ()


def test_a_second_definition_of_a_name_keeps_the_last_valid_one() -> None:
    before = compile_(pool("p", "10.0.0.0/24"))

    after = compile_(pool("p", "10.0.0.0/24"), pool("p", "10.9.0.0/24"), after=before)

    assert cidrs(after, "p") == ["10.0.0.0/24"]
    assert problems(after) == {("IPAddressPool", "p", "metadata.name")}
    assert keeps_last_valid(after) == {("IPAddressPool", "p")}


def test_a_pool_edit_that_would_break_an_advertisements_aggregation_length_is_not_applied() -> None:
    adv = advertisement("covers-all", aggregationLength=24)
    before = compile_(pool("a", "10.0.0.0/24"), adv)

    after = compile_(pool("a", "10.0.0.0/28"), adv, after=before)  # aggregating a /28 to /24 would leak

    assert cidrs(after, "a") == ["10.0.0.0/24"]
    assert [a.name for a in after.config.advertisements] == ["covers-all"]
    assert problems(after) == {("IPAddressPool", "a", "spec.addresses")}
    assert "BGPAdvertisement metallb-system/covers-all" in message(after, "IPAddressPool", "a", "spec.addresses")
    assert keeps_last_valid(after) == {("IPAddressPool", "a")}


def test_a_new_pool_that_would_break_an_advertisement_is_left_out() -> None:
    adv = advertisement("covers-all", aggregationLength=24)
    before = compile_(pool("a", "10.0.0.0/24"), adv)

    after = compile_(pool("a", "10.0.0.0/24"), pool("small", "10.1.0.0/28"), adv, after=before)

    assert list(after.config.pools) == ["a"]
    assert after.config.advertisements[0].pools == {"a"}
    assert problems(after) == {("IPAddressPool", "small", "spec")}
    assert message(after, "IPAddressPool", "small", "spec").startswith("left out: it would make BGPAdvertisement")


# --- communities, advertisements, peers -----------------------------------------------------------------


def test_a_new_community_duplicating_an_alias_does_not_break_advertisements_using_the_old_one() -> None:
    objects = (pool("p", "10.0.0.0/24"), community("b", shared="1:1"), advertisement("adv", communities=["shared"]))
    before = compile_(*objects)

    after = compile_(*objects, community("a", shared="2:2"), after=before)

    assert [a.name for a in after.config.advertisements] == ["adv"]
    assert after.config.advertisements[0].communities == {Community("1:1")}
    assert problems(after) == {("Community", "a", "spec.communities[0].name")}
    assert "Community b" in message(after, "Community", "a", "spec.communities[0].name")


def test_a_new_advertisement_with_a_conflicting_local_pref_is_rejected_and_the_existing_stays() -> None:
    before = compile_(pool("p", "10.0.0.0/24"), advertisement("b", localPref=100))

    after = compile_(pool("p", "10.0.0.0/24"), advertisement("b", localPref=100), advertisement("a", localPref=200), after=before)

    assert [(a.name, a.local_pref) for a in after.config.advertisements] == [("b", 100)]
    assert problems(after) == {("BGPAdvertisement", "a", "spec.localPref")}
    assert "BGPAdvertisement b" in message(after, "BGPAdvertisement", "a", "spec.localPref")


def test_an_advertisement_edit_naming_an_unknown_pool_applies_with_a_warning_as_in_metallb() -> None:
    before = compile_(pool("p", "10.0.0.0/24"), advertisement("adv", ipAddressPools=["p"], localPref=100))

    after = compile_(pool("p", "10.0.0.0/24"), advertisement("adv", ipAddressPools=["q"], localPref=200), after=before)

    assert [(a.pools, a.local_pref) for a in after.config.advertisements] == [(frozenset(), 200)]
    assert problems(after) == set()
    assert ("BGPAdvertisement", "adv", "spec.ipAddressPools[0]") in {(e.kind, e.name, e.field) for e in after.errors}
    assert keeps_last_valid(after) == set()


def test_an_edit_is_applied_when_its_only_errors_were_there_before() -> None:
    before = compile_(pool("p", "10.0.0.0/24"), advertisement("adv", ipAddressPools=["p", "q"], localPref=100))

    after = compile_(pool("p", "10.0.0.0/24"), advertisement("adv", ipAddressPools=["p", "q"], localPref=200), after=before)

    assert [(a.pools, a.local_pref) for a in after.config.advertisements] == [({"p"}, 200)]
    assert ("BGPAdvertisement", "adv", "spec.ipAddressPools[1]") in {(e.kind, e.name, e.field) for e in after.errors}
    assert keeps_last_valid(after) == set()


def test_a_new_peer_for_an_existing_session_is_rejected_and_the_existing_peer_stays() -> None:
    before = compile_(peer("b", "10.0.0.1"))

    after = compile_(peer("a", "10.0.0.1"), peer("b", "10.0.0.1"), after=before)

    assert list(after.config.peers) == ["b"]
    assert problems(after) == {("BGPPeer", "a", "spec.peerAddress")}
    assert "BGPPeer b" in message(after, "BGPPeer", "a", "spec.peerAddress")


def test_a_new_peer_differing_only_in_port_is_rejected_and_the_peer_in_force_stays() -> None:
    before = compile_(peer("b", "10.0.0.1"))

    after = compile_(peer("a", "10.0.0.1", peerPort=1790), peer("b", "10.0.0.1"), after=before)

    assert list(after.config.peers) == ["b"]
    assert problems(after) == {("BGPPeer", "a", "spec.peerAddress")}


def test_a_broken_password_secret_keeps_the_peer_with_its_last_password() -> None:
    the_peer = peer("r", passwordSecret={"name": "s"})
    before = compile_(the_peer, secret("s", password="hunter2"))

    after = compile_(the_peer, secret("s", type_="Opaque", password="hunter2"), after=before)

    assert after.config.peers["r"].password == "hunter2"
    assert problems(after) == {("Secret", "s", "type")}
    assert "BGPPeer metallb-system/r" in message(after, "Secret", "s", "type")
    assert keeps_last_valid(after) == {("Secret", "s")}
    assert not any("hunter2" in str(e) for e in after.errors)


def test_a_peer_edit_breaking_its_session_keeps_the_last_peer() -> None:
    before = compile_(peer("r", "10.0.0.1"))

    after = compile_(peer("r", "10.0.0.1", holdTime="1s"), after=before)

    assert after.config.peers["r"].hold_time == 90
    assert problems(after) == {("BGPPeer", "r", "spec.holdTime")}
    assert keeps_last_valid(after) == {("BGPPeer", "r")}


def test_last_good_holds_the_versions_in_the_config_and_nothing_rejected() -> None:
    result = compile_(pool("a", "10.0.0.0/24"), pool("bad", "x"), peer("r", passwordSecret={"name": "s"}), secret("s", password="pw"))

    assert list(result.last_good) == [("BGPPeer", NS, "r"), ("IPAddressPool", NS, "a"), ("Secret", NS, "s")]
    assert "pw" not in repr(result.last_good)


def test_a_bug_in_keeping_last_valid_versions_falls_back_to_the_plain_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    before = compile_(pool("a", "10.0.0.0/24"))

    def broken(self: Any) -> CompileResult:
        raise RuntimeError("bug")

    monkeypatch.setattr(last_good.History, "resolve", broken)
    after = compile_(pool("a", "10.0.0.0/24"), pool("b", "10.1.0.0/24"), after=before)

    assert list(after.config.pools) == ["a", "b"]
    assert [str(e) for e in after.errors] == [
        "Config last-valid-versions: internal error while keeping last valid versions (RuntimeError); please report it"
    ]


# --- the promise, over random histories ------------------------------------------------------------------
# A small world of names and values chosen so that edits clash: overlapping and invalid addresses,
# shared aliases, one pool per advertisement, peers to the same address, a password Secret.

POOL_NAMES = ("p1", "p2", "p3")
PEER_NAMES = ("r1", "r2")
ADDRESSES = st.sampled_from(["10.0.0.0/24", "10.0.0.0/23", "10.0.1.0/24", "10.0.0.128/25", "10.1.0.0/28", "fc00::/120", "10.0.0.0/33", "bad"])
POOL_SPECS = st.one_of(
    st.fixed_dictionaries({"addresses": st.lists(ADDRESSES, min_size=1, max_size=2)}),
    st.just({"addresses": "10.0.0.0/24"}),  # does not parse
)
PEER_SPECS = st.fixed_dictionaries(
    {"myASN": st.sampled_from([64500, 64500, 0]), "peerASN": st.just(64501), "peerAddress": st.sampled_from(["10.0.0.1", "10.0.0.2", "bad"])},
    optional={"passwordSecret": st.just({"name": "s1"}), "bfdProfile": st.sampled_from(["f1", "missing"]), "holdTime": st.sampled_from(["1s", "60s"])},
)  # fmt: skip
ADVERTISEMENT_SPECS = st.fixed_dictionaries(
    {},
    optional={
        "localPref": st.sampled_from([100, 200]), "ipAddressPools": st.lists(st.sampled_from([*POOL_NAMES, "ghost"]), max_size=2, unique=True),
        "communities": st.lists(st.sampled_from(["x", "y", "3:3", "nope"]), max_size=2, unique=True), "aggregationLength": st.sampled_from([16, 24]),
        "peers": st.lists(st.sampled_from([*PEER_NAMES, "ghost"]), min_size=1, max_size=2, unique=True),
    },
)  # fmt: skip
COMMUNITY_SPECS = st.fixed_dictionaries(
    {"communities": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["x", "y"]), "value": st.sampled_from(["1:1", "2:2", "65536:1"])}), max_size=2)}
)
BFD_SPECS = st.fixed_dictionaries({}, optional={"receiveInterval": st.sampled_from([100, 5])})  # 5 does not parse

KINDS: dict[str, tuple[str, tuple[str, ...], st.SearchStrategy[Any]]] = {  # kind -> (apiVersion, names, specs)
    "IPAddressPool": (V1B1, POOL_NAMES, POOL_SPECS),
    "BGPPeer": (V1B2, PEER_NAMES, PEER_SPECS),
    "BGPAdvertisement": (V1B1, ("a1", "a2", "a3"), ADVERTISEMENT_SPECS),
    "Community": (V1B1, ("c1", "c2"), COMMUNITY_SPECS),
    "BFDProfile": (V1B1, ("f1",), BFD_SPECS),
}
Key = tuple[str, str]  # (kind, name)


@st.composite
def versions(draw: st.DrawFn, key: Key) -> dict[str, Any]:
    kind, name = key
    if kind == "Secret":
        data = draw(st.sampled_from([{"password": "pw"}, {"password": "pw2"}, {"username": "u"}]))
        meta = {"name": name, "namespace": NS}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": draw(st.sampled_from(["kubernetes.io/basic-auth", "Opaque"])), "stringData": data}
    api, _, specs = KINDS[kind]
    return metallb_object(api, kind, name, draw(specs))


ALL_KEYS: list[Key] = [(kind, name) for kind, (_, names, _) in KINDS.items() for name in names] + [("Secret", "s1")]


@st.composite
def histories(draw: st.DrawFn) -> list[dict[Key, dict[str, Any]]]:
    """A few cluster states, each the one before with some objects added, edited (maybe badly) or deleted."""
    state = {key: draw(versions(key)) for key in draw(st.lists(st.sampled_from(ALL_KEYS), unique=True, max_size=10))}
    states = [state]
    for _ in range(draw(st.integers(1, 4))):
        state = dict(state)
        for key in draw(st.lists(st.sampled_from(ALL_KEYS), unique=True, min_size=1, max_size=3)):
            if key in state and draw(st.integers(0, 3)) == 0:
                del state[key]
            else:
                state[key] = draw(versions(key))
        states.append(state)
    return states


def snapshot_of(state: dict[Key, dict[str, Any]]) -> ClusterSnapshot:
    outcomes = [parse_object(doc) for _, doc in sorted(state.items())]
    return ClusterSnapshot.from_objects([o.obj for o in outcomes if o.obj is not None], errors=[e for o in outcomes for e in o.errors])


def in_config(result: CompileResult, kind: str, name: str) -> bool:
    config = result.config
    present = {
        "IPAddressPool": name in config.pools,
        "BGPPeer": name in config.peers,
        "BGPAdvertisement": name in {a.name for a in config.advertisements},
        "BFDProfile": name in config.bfd_profiles,
        "Community": (kind, NS, name) in result.last_good,  # its aliases resolve; it has no entry of its own
    }
    return present[kind]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(histories())
def test_an_unchanged_object_that_was_good_stays_in_the_config_whatever_else_is_edited(states: list[dict[Key, dict[str, Any]]]) -> None:
    previous_state, previous = states[0], compile_config(snapshot_of(states[0]))
    for state in states[1:]:
        snapshot = snapshot_of(state)
        result = compile_config(snapshot, last_good=previous.last_good)

        assert compile_config(snapshot, last_good=previous.last_good) == result
        assert not any("internal error" in e.message for e in result.errors), [str(e) for e in result.errors]
        assert {(kind, name) for kind, _, name in result.last_good} <= state.keys()  # deleted means forgotten
        spans = [c for p in result.config.pools.values() for c in p.cidrs]
        assert not any(a.overlaps(b) for i, a in enumerate(spans) for b in spans[i + 1 :] if a.version == b.version)
        deleted = previous_state.keys() - state.keys()
        for key, version in previous.last_good.items():
            kind, _, name = key
            unchanged = (kind, name) in state and parse_object(state[(kind, name)]).obj == version
            independent = kind in ("IPAddressPool", "Community", "BFDProfile")  # a deletion cannot break these
            if kind == "Secret" or not unchanged or (deleted and not independent):
                continue
            assert in_config(result, kind, name), (kind, name, [str(e) for e in result.errors])
            if kind == "IPAddressPool":
                assert result.config.pools[name].cidrs == previous.config.pools[name].cidrs
        previous_state, previous = state, result


# --- which object is blamed is read from structured references, not from message text ---------------


def _identities(result: CompileResult) -> set[tuple[str, str, str, str, Severity, tuple[tuple[str, str, str], ...]]]:
    return {(e.kind, e.namespace, e.name, e.field, e.severity, e.refs) for e in result.errors}


def _history_results(states: list[dict[Key, dict[str, Any]]]) -> list[CompileResult]:
    results = [compile_config(snapshot_of(states[0]))]
    for state in states[1:]:
        results.append(compile_config(snapshot_of(state), last_good=results[-1].last_good))
    return results


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(histories())
def test_rewording_every_rule_message_changes_no_decision(states: list[dict[Key, dict[str, Any]]]) -> None:
    """Every message the rules write is replaced by its reverse, which names no object a reader could
    parse: the same objects are held back, the same Config results, the same objects are blamed."""
    plain = _history_results(states)
    original_add = report.Report.add

    def reworded_add(self: report.Report, obj: Any, issue: report.Issue) -> None:
        original_add(self, obj, replace(issue, message=issue.message[::-1]))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report.Report, "add", reworded_add)
        reworded = _history_results(states)
    for ours, theirs in zip(plain, reworded, strict=True):
        assert theirs.config == ours.config
        assert set(theirs.last_good) == set(ours.last_good)
        assert _identities(theirs) == _identities(ours)


def test_an_object_named_only_in_the_text_is_not_blamed_and_one_named_in_refs_is() -> None:
    """The search reads `refs`: a reference to pool b in the text alone says nothing about b."""
    victim = ("BGPAdvertisement", NS, "a1")
    said = ObjectError(*victim, "spec.aggregationLength", "16 is shorter than the /8 prefix in IPAddressPool b")
    meant = ObjectError(*victim, "spec.aggregationLength", "reworded", Severity.ERROR, (("IPAddressPool", NS, "c"),))
    assert not last_good._names(said, ("IPAddressPool", NS, "b"))
    assert last_good._names(meant, ("IPAddressPool", NS, "c"))


def test_a_pool_edit_blamed_for_breaking_an_advertisement_names_it_in_refs() -> None:
    first = compile_(pool("p", "10.0.0.0/24"), advertisement("a1", ipAddressPools=["p"], aggregationLength=24))
    second = compile_(pool("p", "10.0.0.0/28"), advertisement("a1", ipAddressPools=["p"], aggregationLength=24), after=first)
    blamed = [e for e in second.errors if (e.kind, e.name) == ("IPAddressPool", "p") and e.is_error]
    assert blamed and blamed[0].refs == (("BGPAdvertisement", NS, "a1"),)
    assert cidrs(second, "p") == ["10.0.0.0/24"]
