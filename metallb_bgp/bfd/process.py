"""The speaker's side of the BFD process: start it, tell it the sessions, hear their states."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import structlog

log = structlog.get_logger("metallb_bgp.bfd")


@dataclass(frozen=True, order=True)
class BfdSession:
    name: str  # the BGPPeer
    peer: str
    local: str
    transmit_ms: int = 300
    receive_ms: int = 300
    detect_multiplier: int = 3
    passive: bool = False
    multihop: bool = False  # RFC 5883: port 4784, a received TTL of at least minimum_ttl
    minimum_ttl: int = 255


class BfdProcess:
    """`python -m metallb_bgp.bfd` as a child; `set_sessions` replaces the whole set."""

    def __init__(self, on_state: Callable[[str, str, str], None]) -> None:
        self.on_state = on_state  # (BGPPeer name, state, diagnostic)
        self.states: dict[str, str] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sessions: tuple[BfdSession, ...] = ()
        self._wanted_for: object = None  # what `want` computed the sessions from, last time
        self._wanted: tuple[BfdSession, ...] = ()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def want(self, key: object, sessions: Callable[[], tuple[BfdSession, ...]]) -> None:
        """`set_sessions(sessions())`, computing them again only when `key` (the peers) is another
        object: they cost a route lookup per peer, and the peers change far less often than reconciles
        run. A stopped process is still restarted on the next call."""
        if key is not self._wanted_for:
            self._wanted_for, self._wanted = key, sessions()
        await self.set_sessions(self._wanted)

    async def set_sessions(self, sessions: tuple[BfdSession, ...]) -> None:
        if sessions == self._sessions and self._running():
            return
        self._sessions = sessions
        if not sessions and not self._running():
            return
        if not self._running():
            await self._start()
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write((json.dumps({"sessions": [asdict(s) for s in sessions]}) + "\n").encode())
        with contextlib.suppress(ConnectionError):
            await self._process.stdin.drain()
        for name in set(self.states) - {s.name for s in sessions}:
            del self.states[name]

    async def stop(self) -> None:
        """Close its stdin: it tells every peer AdminDown and exits."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._process = None

    def _running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def _start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "metallb_bgp.bfd", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read(self._process), name="bfd-events")
        log.info("bfd_started", pid=self._process.pid)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if "error" in event:
                log.warning("bfd_error", error=event["error"])
                continue
            name, state, diag = str(event["name"]), str(event["state"]), str(event["diag"])
            if self.states.get(name) == state:
                continue
            self.states[name] = state
            log.info("bfd_session", peer=name, address=event.get("peer"), state=state, diag=diag)
            self.on_state(name, state, diag)
        if process.returncode not in (None, 0):
            log.warning("bfd_exited", code=process.returncode)
