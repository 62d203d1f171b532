"""The state file written from kept entries says what writing every assignment afresh says.

`StateFile` encodes only the services a change moved; whatever the history of sets and removals, the
file must be the one `save_state` writes for the assignments as they now are (byte for byte: the same
assignments always give the same file), and `load_state` must read it back.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress
from metallb_bgp.sources.state_file import StateFile, load_state, save_state

KEYS = [ServiceKey(ns, name) for ns in ("default", "a-b", "a", "z.y") for name in ("web", "web-2", "a", "x.y")]
IPS = st.lists(
    st.one_of(
        st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
        st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
    ),
    max_size=2,
).map(tuple)


@settings(max_examples=60, deadline=None)
@given(
    start=st.dictionaries(st.sampled_from(KEYS), IPS, max_size=6),
    steps=st.lists(st.tuples(st.sampled_from(KEYS), st.none() | IPS), max_size=20),
)
def test_kept_entries_write_what_a_fresh_write_would(tmp_path_factory, start, steps) -> None:
    directory = tmp_path_factory.mktemp("state")
    kept = StateFile(directory / "kept.json", start)
    now: dict[ServiceKey, tuple[IPAddress, ...]] = dict(start)
    for key, ips in steps:
        kept.set(key, ips)
        if ips is None:
            now.pop(key, None)
        else:
            now[key] = ips
        kept.write()
        save_state(directory / "fresh.json", now)
        assert (directory / "kept.json").read_text() == (directory / "fresh.json").read_text()
        assert load_state(directory / "kept.json") == now


def test_entries_are_sorted_and_names_are_escaped(tmp_path: Path) -> None:
    odd = ServiceKey("default", 'we"b\\')  # no Kubernetes name holds these, but the file must stay JSON
    assignments = {
        ServiceKey("default", "web-2"): (ipaddress.ip_address("10.0.0.2"),),
        ServiceKey("default", "web"): (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("2001:db8::1")),
        odd: (),
    }
    save_state(tmp_path / "s.json", assignments)
    data = json.loads((tmp_path / "s.json").read_text())
    # sorted as written: the escaped quote (backslash) sorts before letters; Kubernetes names need no escape
    assert list(data["assignments"]) == ['default/we"b\\', "default/web", "default/web-2"]
    assert data["assignments"]["default/web"] == ["10.0.0.1", "2001:db8::1"]
    assert load_state(tmp_path / "s.json") == assignments
