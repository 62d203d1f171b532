"""Waiting for something to become true, in tests: one poll loop with a sync front (`wait_until`) and an
async one (`eventually`, which lets the code under test run between polls). Both fail the test, naming
what they waited for and the last value seen, after `timeout` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from typing import Literal, TypeVar

import pytest

T = TypeVar("T")


def _polls(check: Callable[[], T | Literal[False] | None], *, timeout: float, what: str) -> Generator[None, None, T]:
    """Calls `check` until it returns something truthy, yielding between calls for the caller to sleep
    (the one difference between the sync and the async waits); fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = check()
    while not last:
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
        yield
        last = check()
    return last


def wait_until(
    check: Callable[[], T | Literal[False] | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    polls = _polls(check, timeout=timeout, what=what)
    try:
        while True:
            next(polls)
            time.sleep(interval)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def eventually(
    check: Callable[[], T | Literal[False] | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """`wait_until` for asyncio tests: polls between `asyncio.sleep`s so the code under test keeps running."""
    polls = _polls(check, timeout=timeout, what=what)
    try:
        while True:
            next(polls)
            await asyncio.sleep(interval)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
