"""The API helper ExaBGP runs: a byte relay between ExaBGP's pipes and the speaker's unix socket.

ExaBGP talks to its API processes over their stdin/stdout, and it writes to a helper's stdin with a
blocking write: if nobody reads, ExaBGP stops (no keepalives, every session drops at hold time). The
speaker is an asyncio program that owns ExaBGP as a child, so instead of reading pipes from a
process it did not spawn, it listens on a unix socket and ExaBGP runs this relay, which:

- always drains its stdin (ExaBGP's output), buffering it (bounded) while no speaker is connected,
  so session events that happen before the speaker connects are not lost;
- forwards the speaker's command lines to its stdout without ever blocking on it (ExaBGP may be busy
  writing to us at the same time: a blocking write in both directions would deadlock);
- never exits while ExaBGP lives: ExaBGP respawns a dead helper at most 5 times in 64 s, then exits.

It exits when its stdin closes (ExaBGP is gone). Standard library only, run as a script with
`python -I`, so it starts fast and does not depend on how this package is installed.

Usage: python -I relay.py SOCKET_PATH
"""

from __future__ import annotations

import os
import select
import socket
import sys
import time

READ_SIZE = 65536
MAX_TO_SPEAKER = 16 * 1024 * 1024  # ExaBGP output kept while the speaker is away
MAX_TO_EXABGP = 4 * 1024 * 1024  # commands not yet taken by ExaBGP; beyond it, stop reading the socket
RECONNECT_DELAY = 0.2


class Relay:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.sock: socket.socket | None = None
        self.to_speaker = bytearray(f"#relay pid={os.getpid()} exabgp={os.getppid()}\n".encode())
        self.to_exabgp = bytearray()
        self.next_connect = 0.0
        self.dropped = 0

    def run(self) -> int:
        os.set_blocking(0, False)
        os.set_blocking(1, False)
        while True:  # one turn per I/O readiness; ends when ExaBGP closes our stdin
            self._maybe_connect()
            readable, writable = self._wait()
            if 0 in readable and not self._read_exabgp():
                return 0
            if self.sock is not None and self.sock.fileno() in readable:
                self._read_speaker()
            if self.sock is not None and self.sock.fileno() in writable:
                self._write_speaker()
            if 1 in writable:
                self._write_exabgp()

    def _wait(self) -> tuple[list[int], list[int]]:
        readers = [0]
        writers: list[int] = []
        if self.sock is not None:
            if len(self.to_exabgp) < MAX_TO_EXABGP:
                readers.append(self.sock.fileno())
            if self.to_speaker:
                writers.append(self.sock.fileno())
        if self.to_exabgp:
            writers.append(1)
        timeout = None if self.sock is not None else RECONNECT_DELAY
        readable, writable, _ = select.select(readers, writers, [], timeout)
        return readable, writable

    def _maybe_connect(self) -> None:
        if self.sock is not None or time.monotonic() < self.next_connect:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            self.next_connect = time.monotonic() + RECONNECT_DELAY
            return
        sock.setblocking(False)
        self.sock = sock

    def _disconnect(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.next_connect = time.monotonic() + RECONNECT_DELAY
        # a command cut in the middle must not be glued to the next speaker's first line
        end = self.to_exabgp.rfind(b"\n")
        del self.to_exabgp[end + 1 :]

    def _read_exabgp(self) -> bool:
        try:
            data = os.read(0, READ_SIZE)
        except BlockingIOError:
            return True
        if not data:
            return False
        self.to_speaker += data
        if len(self.to_speaker) > MAX_TO_SPEAKER:
            self._drop_oldest()
        return True

    def _drop_oldest(self) -> None:
        cut = self.to_speaker.find(b"\n", len(self.to_speaker) - MAX_TO_SPEAKER)
        cut = len(self.to_speaker) if cut < 0 else cut + 1
        self.dropped += self.to_speaker[:cut].count(b"\n")
        del self.to_speaker[:cut]
        sys.stderr.write(f"relay: speaker not reading, dropped {self.dropped} lines of ExaBGP output\n")

    def _read_speaker(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._disconnect()
            return
        self.to_exabgp += data

    def _write_speaker(self) -> None:
        assert self.sock is not None
        try:
            sent = self.sock.send(self.to_speaker)
        except BlockingIOError:
            return
        except OSError:
            self._disconnect()
            return
        del self.to_speaker[:sent]

    def _write_exabgp(self) -> None:
        try:
            written = os.write(1, self.to_exabgp)
        except BlockingIOError:
            return
        del self.to_exabgp[:written]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: relay.py SOCKET_PATH\n")
        return 2
    try:
        return Relay(argv[1]).run()
    except BrokenPipeError:
        return 0  # ExaBGP closed our stdout: it is going away
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
