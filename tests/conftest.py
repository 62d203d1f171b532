"""Shared fixtures. Real routers (BIRD) and real ExaBGP children: every process a test starts is stopped.

The fake API server's `fake_kube` fixture comes in as a plugin (`tests/fakekube`), for every test.
Tests live in folders that mirror the package (`core/`, `edges/`, `daemons/`, `e2e/`); what they share
sits here at the top: `builders` (objects as model, dict or YAML), `strategies` (hypothesis),
`assertions`, `waiting`, and the router and topology harnesses (`bird`, `frr`, `netns`, `runs`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bird import BirdRouter, require_bird

pytest_plugins = ["fakekube"]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path: unix socket paths are limited to 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="mlb-", dir="/tmp"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def bird_factory(short_tmp: Path) -> Iterator[Callable[..., BirdRouter]]:
    """Make `BirdRouter`s (not started) in the test's directory; all of them are stopped at the end."""
    require_bird()
    routers: list[BirdRouter] = []

    def make(name: str = "bird", **kwargs: object) -> BirdRouter:
        router = BirdRouter(short_tmp / name, **kwargs)  # type: ignore[arg-type]
        routers.append(router)
        return router

    try:
        yield make
    finally:
        for router in routers:
            router.stop()
