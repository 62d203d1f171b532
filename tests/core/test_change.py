"""`SnapshotChanges`: successive snapshots in, the same ClusterChanges a manifests folder would report.

Held to `ClusterChange.whole`: after any sequence of snapshots (unchanged objects kept as the very same
objects, as the Kubernetes source hands them over; keys defined twice, as only a hand-built snapshot
has them; any order), the changes taken so far, applied one after the other, give what the whole
snapshot gives.
"""

from __future__ import annotations

import dataclasses
import random

from builders import endpoint, endpoint_slice, pool, service, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from metallb_bgp.core.change import ClusterChange, SnapshotChanges
from metallb_bgp.core.plan.tracking import ServiceIndex

NAMES = ["a", "b", "c", "d"]
steps = st.lists(
    st.tuples(st.sampled_from(["service", "drop-service", "slice", "drop-slice", "twice", "shuffle", "pool"]),
              st.sampled_from(NAMES), st.integers(0, 3)),
    max_size=15,
)  # fmt: skip


def index_of(*changes: ClusterChange) -> ServiceIndex:
    index = ServiceIndex()
    for change in changes:
        index.take(change)
    return index


def by_name(groups: dict) -> dict:
    return {group: sorted(found, key=lambda s: s.metadata.name) for group, found in groups.items()}


@settings(max_examples=200, deadline=None)
@given(steps)
def test_changes_taken_one_after_the_other_add_up_to_the_whole_snapshot(sequence) -> None:
    config = snapshot(pool("pool", "198.51.100.0/28"))
    services = {name: service(name).model for name in NAMES[:2]}
    extra: dict[str, object] = {}
    slices = {name: endpoint_slice(name, endpoint("n1")).model for name in NAMES[:2]}
    changes, incremental, rng = SnapshotChanges(), ServiceIndex(), random.Random(len(sequence))
    previous = None
    for kind, name, n in [("start", "", 0), *sequence]:
        if kind == "service":
            services[name] = service(name, ips=(f"198.51.100.{n}",)).model
        elif kind == "drop-service":
            services.pop(name, None)
            extra.pop(name, None)
        elif kind == "twice":
            extra[name] = service(name, ips=(f"198.51.100.{8 + n}",)).model
        elif kind == "slice":
            slices[name] = endpoint_slice(name, endpoint(f"n{n}")).model
        elif kind == "drop-slice":
            slices.pop(name, None)
        elif kind == "pool":
            config = snapshot(pool("pool", f"198.51.100.{16 * n}/28"))
        ordered, ordered_slices = [*services.values(), *extra.values()], list(slices.values())
        if kind == "shuffle":
            rng.shuffle(ordered)
            rng.shuffle(ordered_slices)
        cluster = dataclasses.replace(config, services=tuple(ordered), endpoint_slices=tuple(ordered_slices))
        change = changes.take(cluster)
        incremental.take(change)
        whole = index_of(ClusterChange.whole(cluster))
        assert incremental.services == whole.services
        assert incremental.definitions == whole.definitions
        assert by_name(incremental.slices) == by_name(whole.slices)  # a group's order is moot
        assert (change.config is None) == (previous is not None and previous.pools == config.pools)
        previous = config


def test_the_first_change_is_whole_and_an_unchanged_snapshot_gives_an_empty_change() -> None:
    cluster = snapshot(pool("pool", "198.51.100.0/28"), service("web"), endpoint_slice("web", endpoint("n1")))
    changes = SnapshotChanges()
    first = changes.take(cluster)
    assert first.config is not None and set(first.services) == {("default", "web")} and set(first.endpoint_slices) == {("default", "web")}
    assert changes.take(cluster).is_empty
