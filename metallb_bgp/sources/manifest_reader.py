"""Reading a large manifests folder on two cores at start-up.

Why: `metallb-bgp run` reads every file before it may announce anything, and at 10,000 services most
of that read is PyYAML (the C parser still builds a Python node for every scalar): about a second of
one core, while the other core idles. A helper process parses a share of the files into plain
documents (dicts, lists and scalars, which pickle cheaply; the validated models do not: unpickling
them cost more than parsing) and this process parses the rest; validation stays here.

The work is shared in chunks: the helper takes them from the end, this process from the front, and a
chunk the helper has not started yet is taken back (`Future.cancel`), so neither side waits for the
other whatever the helper's start-up time. A helper that cannot start or dies costs only time: its
chunks are read here. The helper is spawned, not forked (this process already runs threads, such as
the file watcher's), and imports only PyYAML and `api.yaml_text`. It exits when the read is done.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import structlog

from metallb_bgp.api.yaml_text import documents_or_error
from metallb_bgp.errors import ObjectError

log = structlog.get_logger("metallb_bgp.sources")

Documents = list[Any] | ObjectError  # a file's YAML documents, or why it could not be read or parsed

# Below this many files one core is done before a helper would have started (~0.2 s to spawn and import).
PARALLEL_FROM = 2000
CHUNK = 200  # files per chunk: small enough that the last one (the only wait) is short


def file_documents(path: Path) -> Documents:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return ObjectError("File", "", str(path), "", f"cannot be read: {exc}")
    return documents_or_error(text, source=str(path))


def read_chunk(paths: Sequence[Path]) -> list[Documents]:
    return [file_documents(path) for path in paths]


def helper() -> Executor:
    return concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def read_all(paths: Sequence[Path]) -> list[Documents]:
    """`[file_documents(p) for p in paths]`, on two cores when there are many."""
    if len(paths) < PARALLEL_FROM:
        return read_chunk(paths)
    try:
        pool = helper()
    except (OSError, ImportError, NotImplementedError) as exc:  # no semaphores (/dev/shm), say
        log.info("parallel_read_unavailable", error=str(exc))
        return read_chunk(paths)
    with pool:
        return _Shared(paths, pool).read()


class _Shared:
    """One read shared with the helper: this process takes chunks from the front, the helper from the
    back, with IN_FLIGHT chunks handed to it at a time so it never waits for this process to hand more."""

    IN_FLIGHT = 2

    def __init__(self, paths: Sequence[Path], pool: Executor) -> None:
        self.chunks = [paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)]
        self.pool: Executor | None = pool
        self.results: dict[int, list[Documents]] = {}
        self.pending: dict[int, Future[list[Documents]]] = {}
        self.front, self.back = 0, len(self.chunks)  # chunks[front:back] are nobody's yet
        self.helped = 0  # chunks the helper read

    def read(self) -> list[Documents]:
        while self.front < self.back or self.pending:
            self._collect()
            self._hand_out()
            if self.front < self.back:
                self.results[self.front] = read_chunk(self.chunks[self.front])
                self.front += 1
            elif self.pending:
                concurrent.futures.wait(self.pending.values(), return_when=concurrent.futures.FIRST_COMPLETED)
        log.debug("parallel_read", files=sum(map(len, self.chunks)), chunks=len(self.chunks), helper_chunks=self.helped)
        return [documents for index in range(len(self.chunks)) for documents in self.results[index]]

    def _collect(self) -> None:
        for index, future in list(self.pending.items()):
            if future.done():
                del self.pending[index]
                try:
                    self.results[index] = future.result()
                    self.helped += 1
                except Exception as exc:  # the helper died or could not start: read it here
                    self._give_up(exc)
                    self.results[index] = read_chunk(self.chunks[index])

    def _hand_out(self) -> None:
        while self.pool is not None and len(self.pending) < self.IN_FLIGHT and self.front < self.back:
            try:
                self.pending[self.back - 1] = self.pool.submit(read_chunk, self.chunks[self.back - 1])
            except Exception as exc:
                self._give_up(exc)
                return
            self.back -= 1

    def _give_up(self, exc: Exception) -> None:
        if self.pool is not None:
            log.warning("parallel_read_failed", error=repr(exc), action="reading the rest in this process")
        self.pool = None
