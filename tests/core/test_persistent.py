"""O(1) snapshots behave exactly like copies of the dict taken at that moment."""

from __future__ import annotations

import gc

from hypothesis import given, settings
from hypothesis import strategies as st

from metallb_bgp.core.persistent import SnapshotDict

operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 9), st.integers()),
        st.tuples(st.just("del"), st.integers(0, 9), st.none()),
        st.tuples(st.just("pop"), st.integers(0, 9), st.none()),
        st.tuples(st.just("snapshot"), st.none(), st.none()),
        st.tuples(st.just("drop"), st.integers(0, 5), st.none()),
        st.tuples(st.just("gc"), st.none(), st.none()),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_every_snapshot_equals_a_copy_taken_at_that_moment(ops) -> None:
    live: SnapshotDict[int, int] = SnapshotDict()
    reference: dict[int, int] = {}
    snapshots = []
    for op, key, value in ops:
        if op == "set":
            live[key] = value
            reference[key] = value
        elif op == "del" and key in reference:
            del live[key]
            del reference[key]
        elif op == "pop":
            assert live.pop(key, None) == reference.pop(key, None)
        elif op == "snapshot":
            snapshots.append((live.snapshot(), dict(reference)))
        elif op == "drop" and snapshots:
            snapshots.pop(key % len(snapshots))
        elif op == "gc":
            gc.collect()
        for snapshot, expected in snapshots:  # point reads never materialise, and must agree
            for probe in range(11):
                assert snapshot.get(probe, "absent") == expected.get(probe, "absent")
                assert (probe in snapshot) == (probe in expected)
            assert len(snapshot) == len(expected)
    assert dict(live.items()) == reference
    for snapshot, expected in snapshots:
        assert snapshot == expected and dict(snapshot.items()) == expected and sorted(snapshot) == sorted(expected)
