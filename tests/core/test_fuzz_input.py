"""Property-based fuzzing of what a user's text goes through: the loader, compile, ExaBGP's configuration
and the API commands.

Two promises are checked on arbitrary input: no exception escapes (a bad file is a reported problem),
and no user string (names, communities, passwords, VRFs, annotations) can put a newline or a statement
of its own into a rendered configuration line or an API command. The second is checked by shape: every
rendered line must be one of the statements the renderer writes, and every command one line of the
grammar the engine sends.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from builders import peer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metallb_bgp.api.loader import load_yaml, parse_object
from metallb_bgp.api.problems import printable
from metallb_bgp.core.plan.pipeline import check, make_plan
from metallb_bgp.core.routes.table import RouteTable, diff
from metallb_bgp.core.snapshot import ClusterSnapshot
from metallb_bgp.exabgp.commands import route_commands
from metallb_bgp.exabgp.render import render

NS = "metallb-system"
HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from([
        "a\nb", "x; md5-password y", "}", "{", '"', "'", "\\", "#", "[", "]", ",", "\x1b[31m", "\u2028", "\x00",
        "1:1\nneighbor 10.0.0.1", "large:1:2:3 ]", "64500:1 ] next-hop 1.2.3.4 [", "red; hold-time 3", "ok",
    ]),
)  # fmt: skip
TOKENS = st.sampled_from([
    "apiVersion: v1\n", "kind: Service\n", "kind: List\n", "items:\n", "- ", "  ", "metadata:\n", "name: x\n", "&a ", "*a",
    "!!int ", "!!str ", "!!map ", "!!binary ", "<<: ", "[", "]", "{", "}", ",", ": ", "---\n", "...\n", "? ", "'", '"', "#",
    "\t", "\n", "9" * 30, ".nan", "~", "yes", "2024-02-30", "\x00", "\ufeff", "%YAML 1.1\n", "!!python/tuple ",
])  # fmt: skip


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), st.lists(TOKENS, max_size=60).map("".join)))
def test_the_loader_never_raises_and_every_problem_prints_on_one_line(text: str) -> None:
    for parsed in load_yaml(text, source="fuzz.yaml"):
        for error in parsed.errors:
            assert "\n" not in str(error) and printable(str(error)) == str(error)


PEER_SPECS = st.fixed_dictionaries({}, optional={
    "password": HOSTILE_TEXT, "vrf": HOSTILE_TEXT, "routerID": HOSTILE_TEXT, "sourceAddress": HOSTILE_TEXT,
    "holdTime": st.sampled_from(["90s", "3s", "0s", "1h", "nonsense"]), "ebgpMultiHop": st.booleans(),
    "enableGracefulRestart": st.booleans(), "peerASN": st.sampled_from([64500, 64501, 0]),
})  # fmt: skip


@st.composite
def clusters(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = st.one_of(HOSTILE_TEXT, st.sampled_from(["router", "pool", "web", "adv"]))
    docs: list[dict[str, Any]] = [
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": draw(names), "namespace": NS},
         "spec": {"addresses": [draw(st.sampled_from(["198.51.100.0/28", "2001:db8::/124"])), draw(HOSTILE_TEXT)]}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "pool", "namespace": NS},
         "spec": {"addresses": ["198.51.100.0/28", "2001:db8::/124"]}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement", "metadata": {"name": draw(names), "namespace": NS},
         "spec": {"communities": draw(st.lists(st.one_of(HOSTILE_TEXT, st.sampled_from(["64500:1", "large:1:2:3", "alias"])), max_size=3)),
                  "localPref": draw(st.sampled_from([100, 200]))}},
        {"apiVersion": "metallb.io/v1beta1", "kind": "Community", "metadata": {"name": draw(names), "namespace": NS},
         "spec": {"communities": [{"name": "alias", "value": draw(st.one_of(HOSTILE_TEXT, st.just("64500:7")))}]}},
        peer(draw(names), draw(st.sampled_from(["192.0.2.1", "2001:db8::1", "192.0.2.1%x\nneighbor"])), **draw(PEER_SPECS)),
        peer("router", "192.0.2.2", **draw(PEER_SPECS)),
    ]  # fmt: skip
    for i in range(draw(st.integers(1, 3))):
        name = draw(st.one_of(HOSTILE_TEXT, st.just(f"web{i}")))
        annotations = draw(st.dictionaries(
            st.sampled_from(["metallb.io/loadBalancerIPs", "metallb.io/address-pool", "metallb.io/allow-shared-ip", "x"]),
            st.one_of(HOSTILE_TEXT, st.sampled_from(["198.51.100.3", "2001:db8::5", "pool"])), max_size=3,
        ))  # fmt: skip
        docs.append({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "ipFamilyPolicy": "PreferDualStack"},
        })  # fmt: skip
        docs.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "nodeName": "node-a"}],
        })  # fmt: skip
    return docs


# Every statement the renderer writes, and the one shape of an API command.
_WORD = r"[^\s;{}\"'\[\]#\\]+"
_STATEMENT = re.compile(
    rf"^\s*(?:(?:process {_WORD}|neighbor {_WORD}|capability|family|api|receive) \{{|\}}|run {_WORD}(?: {_WORD})*;|encoder json;"
    rf'|description "metallb-bgp peer=[A-Za-z0-9._:/=-]* rev=[0-9a-f]{{12}}";|(?:router-id|local-address|local-as|peer-as|connect'
    rf"|hold-time|passive|adj-rib-in|adj-rib-out|group-updates|manual-eor|md5-base64|outgoing-ttl|source-interface"
    rf'|graceful-restart|route-refresh) {_WORD};|md5-password "[A-Za-z0-9+/=]+";|ipv[46] unicast;|processes \[ {_WORD} \];'
    rf"|neighbor-changes;|parsed;|notification;)$"
)  # fmt: skip
_SELECTOR = rf"neighbor {_WORD} local-as \d+ peer-as (?:\d+|auto)"
_COMMAND = re.compile(
    rf"^{_SELECTOR}(?: , {_SELECTOR})* (?:announce|withdraw) attributes next-hop {_WORD}(?: local-preference \d+)?"
    rf"(?: community \[(?: \d+:\d+)+ \])?(?: large-community \[(?: \d+:\d+:\d+)+ \])? nlri(?: [0-9a-f.:]+/\d+)+$"
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(clusters())
def test_no_user_string_reaches_a_rendered_line_or_an_api_command_as_more_than_a_value(docs: list[dict[str, Any]]) -> None:
    outcomes = [parse_object(doc, source="fuzz.yaml") for doc in docs]
    snapshot = ClusterSnapshot.from_objects(
        [o.obj for o in outcomes if o.obj is not None], errors=[e for o in outcomes for e in o.errors], namespace=NS
    )
    problems = check(snapshot)
    assert all("\n" not in str(p) for p in problems)
    plan = make_plan(snapshot, node_name="node-a")
    rendered = render(plan.peers, router_id=ipaddress.IPv4Address("192.0.2.254"), process_command=["/usr/bin/python3", "relay.py"])
    for line in rendered.text.splitlines():
        assert not line.strip() or _STATEMENT.match(line), line
    hops = {4: ipaddress.ip_address("192.0.2.10"), 6: ipaddress.ip_address("2001:db8::10")}
    for line in route_commands(diff(RouteTable(), plan.table), rendered.neighbors, next_hops=hops, prefixes_per_command=50):
        assert _COMMAND.match(line), line
