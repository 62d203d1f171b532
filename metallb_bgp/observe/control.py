"""The local control socket of `metallb-bgp run`: what `metallb-bgp status` and `explain` ask it.

Why a Unix socket and not an HTTP endpoint: nothing may listen beyond what the user configured, and
the questions come from the same machine. The socket is mode 0600 in a directory of mode 0700 owned by
the daemon's user, so only that user (and root) can ask; its questions are read-only. One JSON request
per connection (`{"command": "status"}`, `{"command": "explain", "service": "ns/name"}`), one JSON
answer, then the connection closes. A request is bounded (`MAX_REQUEST` bytes, `TIMEOUT` seconds); a
handler's failure is answered as an error, never raised into the daemon's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("metallb_bgp.control")

MAX_REQUEST = 4096  # bytes: a command and a service name
TIMEOUT = 5.0  # seconds for a client to send its request, and for `ask` to get the answer
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def default_socket() -> Path:
    """/run/metallb-bgp/control.sock for root; else $XDG_RUNTIME_DIR/metallb-bgp/, else /tmp/metallb-bgp-<uid>/."""
    if os.geteuid() == 0:
        return Path("/run/metallb-bgp/control.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "metallb-bgp" if runtime else Path(f"/tmp/metallb-bgp-{os.geteuid()}")
    return base / "control.sock"


def _private_directory(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to uid {info.st_uid}, not to us: not putting a control socket there")
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)


async def serve(path: Path, handle: Handler) -> asyncio.AbstractServer:
    """Listen on `path` (a stale socket file there is replaced); the caller closes the server."""
    _private_directory(path.parent)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            if _answers(path):
                raise FileExistsError(f"another daemon answers on {path}: give this one its own --control-socket")
            path.unlink()  # left by a daemon that is gone
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The socket is created 0600, never briefly wider. The umask is the whole process's: it is set
    # around the bind alone, with no await in between, so no other task creates a file under it.
    previous = os.umask(0o177)
    try:
        listener.bind(str(path))
    except OSError:
        listener.close()
        raise
    finally:
        os.umask(previous)
    path.chmod(0o600)
    server = await asyncio.start_unix_server(lambda r, w: _answer(r, w, handle), sock=listener, limit=MAX_REQUEST)
    log.info("control_socket_listening", path=str(path))
    return server


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: Handler) -> None:
    try:
        try:
            async with asyncio.timeout(TIMEOUT):
                line = await reader.readline()
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            answer = await handle(request)
        except (TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
            answer = {"error": f"bad request: {type(exc).__name__}: {exc}"[:300]}
        except Exception as exc:
            log.exception("control_request_failed")
            answer = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        writer.write(json.dumps(answer, default=str).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def ask(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """The CLI's side: one request, its answer (raises OSError when nothing listens there)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(TIMEOUT)
        connection.connect(str(path))
        connection.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = connection.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data)
    if not isinstance(answer, dict):
        raise ValueError("the daemon's answer is not a JSON object")
    return answer
