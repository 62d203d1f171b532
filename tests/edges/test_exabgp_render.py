"""ExaBGP configuration rendering (golden files), bulk command building, and API line parsing.

Golden files live in tests/golden/exabgp/<case>.conf; regenerate them on purpose with UPDATE_GOLDEN=1.
Every golden file must also pass the real `exabgp validate`.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metallb_bgp.core.config.model import DynamicASN, Peer
from metallb_bgp.core.net import IPNetwork
from metallb_bgp.core.routes.table import RouteAttributes, RouteDiff, RouteKey, RouteTable, apply_diff, diff, group_routes
from metallb_bgp.exabgp import commands
from metallb_bgp.exabgp.events import (
    Ack,
    NotificationEvent,
    Output,
    RelayHello,
    SessionEvent,
    ShutdownEvent,
    parse_line,
    relay_hello_line,
)
from metallb_bgp.exabgp.process import redact
from metallb_bgp.exabgp.render import Neighbor, render, render_config

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "exabgp"
EXABGP = Path(sys.executable).parent / "exabgp"
RELAY = ["/usr/bin/env", "python3", "-I", "/opt/metallb-bgp/relay.py", "/run/metallb-bgp/api.sock"]
ROUTER_ID = ipaddress.IPv4Address("10.0.0.1")
ip = ipaddress.ip_address
net = ipaddress.ip_network


def peer(name: str = "router", **overrides: object) -> Peer:
    values: dict[str, object] = {"name": name, "my_asn": 64512, "peer_asn": 64513, "address": ip("192.0.2.1")}
    values.update(overrides)
    return Peer(**values)  # type: ignore[arg-type]


CASES: dict[str, Callable[[], list[Peer]]] = {
    "no_peers": lambda: [],
    "single_ebgp": lambda: [peer()],
    "ibgp_graceful_restart": lambda: [peer(peer_asn=64512, graceful_restart=True, hold_time=30)],
    "ebgp_multihop_md5_port_source": lambda: [
        peer(
            ebgp_multihop=True,
            password='pa ss"wo;rd{}',
            port=1790,
            source_address=ip("192.0.2.10"),
            router_id=ip("10.9.9.9"),
            hold_time=9,
        )
    ],
    "dual_stack_and_ipv6": lambda: [
        peer("v4", dual_stack=True),
        peer("v6", address=ip("2001:db8::1")),
        peer("v4-no-mp", address=ip("192.0.2.2"), dual_stack=True, disable_mp=True),
    ],
    "dynamic_asn": lambda: [
        peer("internal", peer_asn=None, dynamic_asn=DynamicASN.INTERNAL),
        peer("external", address=ip("192.0.2.2"), peer_asn=None, dynamic_asn=DynamicASN.EXTERNAL),
    ],
    "vrf": lambda: [peer(vrf="red")],
    "duplicates_rejected": lambda: [
        peer("first"),
        peer("second", port=1790),  # ExaBGP would see the same neighbour twice
        peer("bad-source", address=ip("192.0.2.3"), source_address=ip("2001:db8::10")),
    ],
}


def rendered_text(case: str) -> str:
    local = [ip("192.0.2.20"), ip("2001:db8::20")] if case == "dual_stack_and_ipv6" else []
    return render_config(CASES[case](), router_id=ROUTER_ID, process_command=RELAY, local_addresses=local)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_config_matches_golden_file(case: str) -> None:
    golden = GOLDEN / f"{case}.conf"
    text = rendered_text(case)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"missing golden file {golden}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_file_passes_exabgp_validate(case: str, tmp_path: Path) -> None:
    golden = GOLDEN / f"{case}.conf"
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith(("exabgp.", "exabgp_"))}
    env["EXABGP_ENVFILE"] = str(tmp_path / "none.env")
    result = subprocess.run([str(EXABGP), "validate", str(golden)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_password_is_base64_in_the_file_and_absent_from_reprs() -> None:
    rendered = render([peer(password="hunter2")], router_id=ROUTER_ID, process_command=RELAY)
    assert 'md5-password "aHVudGVyMg==";' in rendered.text
    assert "hunter2" not in rendered.text
    assert "aHVudGVyMg" not in repr(rendered) + repr(rendered.neighbors["router"])


def test_duplicate_neighbors_are_rejected_with_a_reason() -> None:
    rendered = render(CASES["duplicates_rejected"](), router_id=ROUTER_ID, process_command=RELAY)
    assert sorted(rendered.neighbors) == ["first"]
    assert "first" in rendered.rejected["second"]
    assert "different families" in rendered.rejected["bad-source"]


def test_rev_changes_with_the_block_and_only_with_it() -> None:
    def description(p: Peer) -> str:
        return render([p], router_id=ROUTER_ID, process_command=RELAY).neighbors[p.name].description

    assert description(peer()) == description(peer())
    assert description(peer()) != description(peer(hold_time=30))
    assert description(peer()) != description(peer(password="x"))


def test_ebgp_single_hop_uses_ttl_1_and_ibgp_leaves_it_to_the_kernel() -> None:
    rendered = render(
        [peer("e"), peer("i", address=ip("192.0.2.2"), peer_asn=64512)], router_id=ROUTER_ID, process_command=RELAY
    )
    assert "outgoing-ttl 1;" in rendered.neighbors["e"].block
    assert "outgoing-ttl" not in rendered.neighbors["i"].block


# ---------------------------------------------------------------------- commands


def neighbors(*peers: Peer) -> dict[str, Neighbor]:
    return dict(render(list(peers), router_id=ROUTER_ID, process_command=RELAY).neighbors)


def test_one_bulk_line_per_batch_chunked_by_prefix_count() -> None:
    nbrs = neighbors(peer("a"), peer("b", address=ip("192.0.2.2")))
    routes = {(p, net(f"10.0.0.{i}/32")): RouteAttributes(communities=("65000:1",)) for p in "ab" for i in range(5)}
    lines = commands.route_commands(
        diff(RouteTable(), RouteTable(routes=routes)), nbrs, next_hops={}, prefixes_per_command=2
    )
    assert lines == [
        "neighbor 192.0.2.1 local-as 64512 peer-as 64513 , neighbor 192.0.2.2 local-as 64512 peer-as 64513 "
        f"announce attributes next-hop self community [ 65000:1 ] nlri {chunk}"
        for chunk in ("10.0.0.0/32 10.0.0.1/32", "10.0.0.2/32 10.0.0.3/32", "10.0.0.4/32")
    ]


def test_withdrawals_come_first_and_carry_the_announced_attributes() -> None:
    nbrs = neighbors(peer("a"))
    attrs = RouteAttributes(communities=("65000:1",), large_communities=("1:2:3",))
    old = RouteTable(routes={("a", net("10.0.0.1/32")): attrs})
    new = RouteTable(routes={("a", net("10.0.0.2/32")): attrs})
    lines = commands.route_commands(diff(old, new), nbrs, next_hops={}, prefixes_per_command=500)
    assert [line.split(" attributes ")[0].split()[-1] for line in lines] == ["withdraw", "announce"]
    withdrawal = "withdraw attributes next-hop self community [ 65000:1 ] large-community [ 1:2:3 ] nlri 10.0.0.1/32"
    assert withdrawal in lines[0]


def test_local_pref_only_for_ibgp_and_cross_family_uses_the_configured_next_hop() -> None:
    nbrs = neighbors(
        peer("ebgp", dual_stack=True), peer("ibgp", address=ip("192.0.2.2"), peer_asn=64512, dual_stack=True)
    )
    attrs = RouteAttributes(local_pref=200)
    routes = {(p, prefix): attrs for p in ("ebgp", "ibgp") for prefix in (net("10.0.0.1/32"), net("2001:db8::1/128"))}
    lines = commands.route_commands(
        diff(RouteTable(), RouteTable(routes=routes)),
        nbrs,
        next_hops={6: ip("2001:db8::99")},
        prefixes_per_command=500,
    )
    assert sorted(lines) == sorted(
        [
            "neighbor 192.0.2.1 local-as 64512 peer-as 64513 announce attributes next-hop self nlri 10.0.0.1/32",
            "neighbor 192.0.2.2 local-as 64512 peer-as 64512 announce attributes next-hop self "
            "local-preference 200 nlri 10.0.0.1/32",
            "neighbor 192.0.2.1 local-as 64512 peer-as 64513 announce attributes next-hop 2001:db8::99 "
            "nlri 2001:db8::1/128",
            "neighbor 192.0.2.2 local-as 64512 peer-as 64512 announce attributes next-hop 2001:db8::99 "
            "local-preference 200 nlri 2001:db8::1/128",
        ]
    )


def test_end_of_rib_for_every_family_of_the_session() -> None:
    nbrs = neighbors(peer("a", dual_stack=True))
    assert commands.end_of_rib_commands(nbrs["a"]) == [
        "neighbor 192.0.2.1 local-as 64512 peer-as 64513 announce eor ipv4 unicast",
        "neighbor 192.0.2.1 local-as 64512 peer-as 64513 announce eor ipv6 unicast",
    ]


PEERS = ("a", "b", "c")
prefixes = st.sampled_from([net(f"10.0.0.{i}/32") for i in range(6)] + [net("2001:db8::1/128")])
attributes = st.builds(
    RouteAttributes,
    local_pref=st.sampled_from([None, 100, 200]),
    communities=st.sampled_from([(), ("65000:1",), ("65000:1", "65000:2")]),
)
route_maps = st.dictionaries(st.tuples(st.sampled_from(PEERS), prefixes), attributes, max_size=12)
peer_sets = st.frozensets(st.sampled_from(PEERS))


def v4_only(_peer: str, family: int) -> bool:
    return family == 4


@settings(max_examples=300, deadline=None)
@given(desired=route_maps, sent=route_maps, established=peer_sets, fresh=peer_sets)
def test_plan_sync_brings_every_established_peer_to_its_desired_routes(
    desired: dict[RouteKey, RouteAttributes],
    sent: dict[RouteKey, RouteAttributes],
    established: frozenset[str],
    fresh: frozenset[str],
) -> None:
    plan = commands.plan_sync(
        desired=desired,
        sent=sent,
        established=established,
        fresh=fresh,
        can_carry=v4_only,
        graceful_restart=lambda p: p == "a",
    )
    target = {k: v for k, v in desired.items() if k[0] in established and k[1].version == 4}
    router_view = {k: v for k, v in sent.items() if k[0] in established and k[0] not in fresh}
    assert {k: v for k, v in apply_diff(router_view, plan.change).items()} == target
    assert {k: v for k, v in plan.sent.items() if k[0] in established} == target
    assert {k: v for k, v in plan.sent.items() if k[0] not in established} == {
        k: v for k, v in sent.items() if k[0] not in established
    }
    announced = _keys(plan.change, "announce")
    assert not announced & _keys(plan.change, "withdraw")
    assert {k for k in target if k[0] in fresh} <= announced  # a fresh session gets everything again
    assert set(plan.end_of_rib) == ({"a"} & fresh & established)


def _keys(change: RouteDiff, half: str) -> set[RouteKey]:
    return {(p, prefix) for batch in getattr(change, half) for p in batch.peers for prefix in batch.prefixes}


def test_fresh_peer_withdraws_what_it_was_told_and_is_no_longer_desired() -> None:
    stale: dict[RouteKey, RouteAttributes] = {("a", net("10.0.0.9/32")): RouteAttributes()}
    plan = commands.plan_sync(
        desired={},
        sent=stale,
        established=frozenset({"a"}),
        fresh=frozenset({"a"}),
        can_carry=v4_only,
        graceful_restart=lambda _p: False,
    )
    assert plan.change.withdraw == group_routes(stale)
    assert plan.sent == {}


# ---------------------------------------------------------------------- API lines


STATE_UP = (
    '{ "exabgp": "5.0.0", "time": 1.0, "host" : "h", "pid" : 1, "ppid" : 1, "counter": 2, "type": "state", '
    '"neighbor": { "address": { "local": "127.0.0.2", "peer": "127.0.0.1" }, "asn": { "local": 64513, '
    '"peer": None }, "router-id": "10.0.0.9" , "state": "up" } }'
)


def test_parse_acks_events_hello_and_output() -> None:
    assert parse_line("done\n") == Ack(ok=True)
    assert parse_line("error") == Ack(ok=False)
    assert parse_line(relay_hello_line(10, 20)) == RelayHello(pid=10, exabgp_pid=20)
    assert parse_line('  description "x";') == Output(text='  description "x";')
    event = parse_line(STATE_UP)  # ExaBGP writes Python's None for a `peer-as auto` neighbour
    assert isinstance(event, SessionEvent)
    assert (event.neighbor.address, event.neighbor.local_asn, event.neighbor.peer_asn, event.state) == (
        ip("127.0.0.1"),
        64513,
        None,
        "up",
    )
    down = parse_line(STATE_UP.replace('"state": "up"', '"state": "down", "reason": "peer reset"'))
    assert isinstance(down, SessionEvent) and down.reason == "peer reset"
    shutdown = '{ "exabgp": "5.0.0", "time": 1.0, "type": "notification", "notification": "shutdown" }'
    assert parse_line(shutdown) == ShutdownEvent()


def test_parse_notification() -> None:
    line = STATE_UP.replace(
        '"state": "up"',
        '"direction": "receive", "notification": { "code": 6, "subcode": 2, "data": "", "message": "bye" }',
    ).replace('"type": "state"', '"type": "notification"')
    event = parse_line(line)
    assert isinstance(event, NotificationEvent)
    assert (event.direction, event.code, event.subcode, event.message) == ("receive", 6, 2, "bye")


def test_relay_hello_format_is_the_relays() -> None:
    relay_source = (Path(commands.__file__).parent / "relay.py").read_text()
    assert 'f"#relay pid={os.getpid()} exabgp={os.getppid()}\\n"' in relay_source
    assert relay_hello_line(1, 2) == "#relay pid=1 exabgp=2\n"


def test_redact_hides_md5_values() -> None:
    assert redact('line 12: md5-password "c2VjcmV0";') == "line 12: md5 <redacted>"
    assert redact("connected to peer") == "connected to peer"


def test_prefix_strings_are_canonical() -> None:
    # commands print ipaddress objects: no leading zeros, compressed IPv6
    prefix: IPNetwork = net("2001:0db8:0000::1/128")
    assert str(prefix) == "2001:db8::1/128"
