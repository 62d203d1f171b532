"""The command channel to one ExaBGP child, through the relay's unix socket connection.

ExaBGP answers every command `done` or `error`, in the order the commands complete. Most commands
(`announce ...`, `withdraw ...`, `show ...`, the success path of `announce eor`) are queued and run in
arrival order, so their acks come back first-in first-out and a FIFO of pending replies matches them.
A few are answered on the spot, ahead of anything still queued (`reload`, and `announce eor` for a peer
that is not established): those are sent as barriers, only when nothing else is outstanding.

Acks are also the flow control: at most `window` commands are outstanding, so ExaBGP's queue (and its
memory) stays small and a large push cannot starve its keepalives.

Lines that are neither acks nor events are the output of the oldest pending command.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from metallb_bgp.exabgp.events import Ack, Line, Output, parse_line

MAX_LINE = 1024 * 1024


class ChannelClosed(Exception):
    """The relay connection is gone; outstanding commands have unknown outcome."""


@dataclass(frozen=True)
class Reply:
    ok: bool
    output: tuple[str, ...] = ()


@dataclass
class _Pending:
    command: str
    future: asyncio.Future[Reply]
    output: list[str] = field(default_factory=list)


class Channel:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_line: Callable[[Line], None],
        window: int,
        ack_timeout: float,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_line = on_line
        self._slots = asyncio.Semaphore(max(1, window))
        self._ack_timeout = ack_timeout
        self._pending: deque[_Pending] = deque()
        self._closed = asyncio.Event()
        self._log = logger
        self._reader_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader_task = asyncio.create_task(self._read_loop(), name="exabgp-channel-reader")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def submit(self, command: str) -> asyncio.Future[Reply]:
        """Send `command` once a window slot is free; the future resolves with its ack."""
        await self._acquire_slot()
        try:
            future = self._send(command)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        return future

    async def request(self, command: str) -> Reply:
        return await self.wait(await self.submit(command))

    async def barrier(self, command: str) -> Reply:
        """Send a command ExaBGP may answer out of order: only when nothing else is outstanding."""
        await self.drain()
        return await self.request(command)

    async def wait(self, future: asyncio.Future[Reply]) -> Reply:
        try:
            async with asyncio.timeout(self._ack_timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            self._log.error("exabgp_ack_timeout", seconds=self._ack_timeout)
            self.close()
            raise ChannelClosed("no ack from ExaBGP") from None

    async def drain(self) -> None:
        """Wait until every outstanding command is acknowledged."""
        for pending in list(self._pending):
            await self.wait(pending.future)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._writer.close()
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(ChannelClosed("relay connection closed"))
                pending.future.exception()  # retrieved: nobody may be waiting for it any more
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()

    async def _acquire_slot(self) -> None:
        # closing fails every pending command, and each failure frees its slot: no waiter is left behind
        await self._slots.acquire()
        if self.closed:
            self._slots.release()
            raise ChannelClosed("relay connection closed")

    def _send(self, command: str) -> asyncio.Future[Reply]:
        if self.closed:
            raise ChannelClosed("relay connection closed")
        if "\n" in command or len(command) >= MAX_LINE:
            raise ValueError("an ExaBGP command must be a single line under 1 MiB")
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(command=command, future=future))
        self._writer.write(command.encode() + b"\n")
        return future

    async def _read_loop(self) -> None:
        try:
            while True:
                raw = await self._reader.readline()
                if not raw:
                    break
                self._dispatch(parse_line(raw.decode(errors="replace")))
        except (ConnectionError, OSError, asyncio.LimitOverrunError, ValueError) as exc:
            self._log.warning("exabgp_channel_read_failed", error=str(exc))
        finally:
            self.close()

    def _dispatch(self, line: Line) -> None:
        if isinstance(line, Ack):
            self._complete(line.ok)
        elif isinstance(line, Output) and self._pending:
            self._pending[0].output.append(line.text)
        else:
            self._on_line(line)

    def _complete(self, ok: bool) -> None:
        if not self._pending:
            self._log.warning("exabgp_unexpected_ack", ok=ok)
            return
        pending = self._pending.popleft()
        if not ok:
            self._log.warning("exabgp_command_failed", command=_head(pending.command))
        if not pending.future.done():
            pending.future.set_result(Reply(ok=ok, output=tuple(pending.output)))


def _head(command: str, limit: int = 160) -> str:
    return command if len(command) <= limit else command[:limit] + " ..."
