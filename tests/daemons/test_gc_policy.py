"""Collections are held off only while a first read runs, and never left off."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from metallb_bgp.daemons.gc import GcPolicy


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if was else gc.disable)()


def test_held_until_released_then_what_lives_is_frozen() -> None:
    asyncio.run(held_until_released())


async def held_until_released() -> None:
    heap = GcPolicy()
    heap.hold()
    assert not gc.isenabled()
    frozen = gc.get_freeze_count()
    survivors = [[i] for i in range(1000)]  # objects the collector tracks, made while held
    heap.release(freeze=True)
    assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(survivors)
    heap.release(freeze=False)  # a second release (the daemons' `finally`) changes nothing
    assert gc.isenabled()


def test_the_hold_ends_by_itself_after_its_limit() -> None:
    asyncio.run(ends_by_itself())


async def ends_by_itself() -> None:
    heap = GcPolicy()
    heap.hold(limit=0.05)
    assert not gc.isenabled()
    await asyncio.sleep(0.2)
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    heap.release(freeze=False)
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    asyncio.run(stays_off())


async def stays_off() -> None:
    gc.disable()
    heap = GcPolicy()
    heap.hold()
    heap.release(freeze=False)
    assert not gc.isenabled()


def test_what_a_full_collection_leaves_alive_is_frozen_after_the_next_reconcile() -> None:
    heap = GcPolicy()
    frozen = gc.get_freeze_count()
    heap.settle()  # no full collection since: nothing to do
    assert gc.get_freeze_count() == frozen
    survivors = [[i] for i in range(1000)]
    gc.collect()  # a full collection, as CPython runs one when the heap has grown
    heap.settle()
    assert gc.get_freeze_count() >= frozen + len(survivors)
    frozen = gc.get_freeze_count()
    heap.settle()  # once per full collection
    assert gc.get_freeze_count() == frozen
