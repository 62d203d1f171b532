"""Equalities the incremental-equals-reference tests assert, in one place (an incremental result holds
read-only snapshots where the reference holds dicts, so plain `==` is not the question)."""

from __future__ import annotations

from metallb_bgp.core.allocator.results import Allocation
from metallb_bgp.core.plan.pipeline import Plan


def assert_same_allocation(got: Allocation, want: Allocation) -> None:
    assert dict(got.assignments) == dict(want.assignments)  # the incremental one is a read-only snapshot
    assert got.refusals == want.refusals
    assert got.cleared == want.cleared
    assert got.warnings == want.warnings


def assert_same_plan(got: Plan, want: Plan) -> None:
    assert got.compiled == want.compiled
    assert_same_allocation(got.allocation, want.allocation)
    assert got.peers == want.peers
    assert got.table.routes == want.table.routes
    assert got.table.services == want.table.services
    assert got.table.skipped == want.table.skipped
    assert got == want
    assert got.problems == want.problems
