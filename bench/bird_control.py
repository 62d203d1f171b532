"""BIRD's control socket spoken directly: a route lookup in ~0.1 ms instead of ~3 ms for a `birdc` fork.

Latency samples poll the router every millisecond or so; spawning `birdc` for each poll would cost more
than what is measured. The protocol is BIRD's CLI protocol: one command per line, each reply line starts
with a 4-digit code followed by '-' (more lines follow), ' ' (last line) or nothing (continuation).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

_TOTAL = re.compile(rb"Total: (\d+) of \d+ routes")
_FINAL = re.compile(rb"(?:^|\n)(\d{4}) [^\n]*\n$")


class BirdControl:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        self._socket.connect(str(path))
        self._buffer = b""
        self._read_reply()  # "0001 BIRD 2.x ready."

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> BirdControl:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def command(self, text: str) -> tuple[int, bytes]:
        """(final reply code, whole reply)."""
        self._socket.sendall(text.encode() + b"\n")
        return self._read_reply()

    def route_count(self) -> int:
        _code, reply = self.command("show route count")
        match = _TOTAL.search(reply)
        return int(match.group(1)) if match else 0

    def has_route(self, prefix: str) -> bool:
        """Whether BIRD holds `prefix` exactly (reachable or not: on loopback it marks them unreachable)."""
        code, _reply = self.command(f"show route {prefix}")
        return code == 0

    def _read_reply(self) -> tuple[int, bytes]:
        for _ in range(100_000):  # bounded: a reply is at most a few hundred kB
            match = _FINAL.search(self._buffer)
            if match is not None:
                reply, self._buffer = self._buffer[: match.end()], self._buffer[match.end() :]
                return int(match.group(1)), reply
            chunk = self._socket.recv(65536)
            if not chunk:
                raise ConnectionError("BIRD closed its control socket")
            self._buffer += chunk
        raise ConnectionError("no end of reply from BIRD")
