"""The engine's cheap sync pass (only the routes the planner touched) must send exactly what the full
comparison sends, whenever its preconditions hold: same sessions, no fresh peer, `touched` covering
every key whose desired attributes changed."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from metallb_bgp.core.routes.table import RouteAttributes
from metallb_bgp.exabgp import commands

PEERS = ("a", "b", "c")
PREFIXES = [ipaddress.ip_network(f"192.0.2.{i}/32") for i in range(6)] + [ipaddress.ip_network("2001:db8::1/128")]
ATTRS = [RouteAttributes(), RouteAttributes(local_pref=200), RouteAttributes(communities=("64500:1",))]

routes = st.dictionaries(st.tuples(st.sampled_from(PEERS), st.sampled_from(PREFIXES)), st.sampled_from(ATTRS), max_size=15)


def carry(peer: str, family: int) -> bool:
    return not (peer == "c" and family == 6)  # one peer that cannot carry IPv6


@settings(max_examples=300, deadline=None)
@given(old=routes, new=routes, down_sent=routes, established=st.sets(st.sampled_from(PEERS)))
def test_touched_sync_sends_what_the_full_comparison_sends(old, new, down_sent, established) -> None:
    established = frozenset(established)
    # what the routers hold after a full pass on `old` (plus stale entries for peers that are down)
    start = {k: v for k, v in down_sent.items() if k[0] not in established}
    sent = commands.plan_sync(desired=old, sent=start, established=established, fresh=frozenset(),
                              can_carry=carry, graceful_restart=lambda _peer: False).sent
    touched = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}

    full = commands.plan_sync(desired=new, sent=sent, established=established, fresh=frozenset(),
                              can_carry=carry, graceful_restart=lambda _peer: False)
    cheap = commands.plan_touched_sync(desired=new, sent=dict(sent), established=established, touched=touched,
                                       can_carry=carry)  # it updates the dict it is given
    assert cheap.change == full.change
    established_view = {k: v for k, v in full.sent.items() if k[0] in established}
    assert {k: v for k, v in cheap.sent.items() if k[0] in established} == established_view
