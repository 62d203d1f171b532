"""The control socket `status` and `explain` ask (observe.control): private, bounded, and a bad question
gets an error answer while the daemon goes on answering."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from metallb_bgp.observe import control


async def _raw(path: Path, data: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return dict(json.loads(answer))


def test_bad_questions_get_errors_and_the_socket_stays_private_and_answering(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "TIMEOUT", 0.3)
    path = short_tmp / "ctl" / "control.sock"
    asked: list[dict[str, Any]] = []

    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        asked.append(request)
        if request.get("command") == "boom":
            raise RuntimeError("handler bug")
        return {"ok": True}

    async def scenario() -> None:
        server = await control.serve(path, handle)
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            assert "bad request" in (await _raw(path, b"not json\n"))["error"]
            assert "bad request" in (await _raw(path, b"[1, 2]\n"))["error"]  # not an object
            assert "bad request" in (await _raw(path, b"{" + b"x" * 10_000))["error"]  # over MAX_REQUEST, no newline
            assert "bad request" in (await _raw(path, b""))["error"]  # says nothing: answered after TIMEOUT
            assert "handler bug" in (await _raw(path, b'{"command": "boom"}\n'))["error"]
            assert await _raw(path, b'{"command": "status"}\n') == {"ok": True}
            assert [r.get("command") for r in asked] == ["boom", "status"]
            with pytest.raises(FileExistsError):  # a second daemon does not take over a socket that answers
                await control.serve(path, handle)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as probe:  # nothing listens once closed
        probe.connect(str(path))
