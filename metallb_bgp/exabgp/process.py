"""Start, watch and stop one `exabgp` child process, and validate configuration files with it.

The environment is what makes ExaBGP fit to be a child: measured tuning (`reactor.speed=0.1`,
`log.processes=false`, `log.level=WARNING`), no listening socket (`tcp.bind` empty: the speaker always
connects out), no CLI named pipe, no daemonizing, no pid file, no privilege drop to `nobody` (ExaBGP
would otherwise lose access to our workdir when it re-reads its configuration), and an empty
environment file in the workdir so nothing under /etc or the venv changes its behaviour. Any
`exabgp.*` variable inherited from our own environment is removed for the same reason.

ExaBGP's log lines (stdout and stderr) are re-emitted through structlog, with lines that could carry
an MD5 password redacted. On Linux the child gets SIGTERM if the speaker dies, so a crashed speaker
does not leave a second BGP speaker running with the old routes (PR_SET_PDEATHSIG: it fires when the
thread that started the child exits, so run the engine's event loop in a thread that lives as long as
the speaker, normally the main thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import structlog

PR_SET_PDEATHSIG = 1


def find_exabgp() -> Path:
    """The `exabgp` next to our interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "exabgp"
    if beside.exists():
        return beside
    found = shutil.which("exabgp")
    if found is None:
        raise FileNotFoundError("exabgp is not installed (pip install exabgp==5.0.15)")
    return Path(found)


def exabgp_environment(
    *, env_file: Path, reactor_speed: float, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in (os.environ if base is None else base).items() if not _is_exabgp_variable(k)}
    env.update(
        {
            "EXABGP_ENVFILE": str(env_file),
            "exabgp.reactor.speed": str(reactor_speed),
            "exabgp.log.processes": "false",
            "exabgp.log.level": "WARNING",
            "exabgp.log.destination": "stdout",
            "exabgp.log.short": "true",
            "exabgp.tcp.bind": "",
            "exabgp.api.cli": "false",
            "exabgp.api.ack": "true",
            "exabgp.api.encoder": "json",
            "exabgp.api.respawn": "true",
            "exabgp.api.terminate": "false",
            "exabgp.daemon.daemonize": "false",
            "exabgp.daemon.pid": "",
        }
    )
    user = _current_user()
    if user is not None:
        env["exabgp.daemon.user"] = user  # "dropping" to ourselves keeps access to the workdir
    return env


async def validate_config(exabgp: Path, config: Path, env: Mapping[str, str]) -> tuple[bool, str]:
    """Run `exabgp validate`; returns (valid, redacted output)."""
    process = await asyncio.create_subprocess_exec(
        str(exabgp),
        "validate",
        str(config),
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = "\n".join(redact(line) for line in output.decode(errors="replace").splitlines())
    return process.returncode == 0, text


class ExaBGPChild:
    """One running `exabgp server` process and the tasks that forward its log lines."""

    def __init__(self, process: asyncio.subprocess.Process, logger: structlog.typing.FilteringBoundLogger) -> None:
        self.process = process
        self._log = logger
        self._terminating = False
        self._pumps = [
            asyncio.create_task(self._pump(process.stdout, "stdout"), name="exabgp-stdout"),
            asyncio.create_task(self._pump(process.stderr, "stderr"), name="exabgp-stderr"),
        ]

    @classmethod
    async def spawn(
        cls,
        exabgp: Path,
        config: Path,
        *,
        env: Mapping[str, str],
        cwd: Path,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> ExaBGPChild:
        process = await asyncio.create_subprocess_exec(
            str(exabgp),
            "server",
            str(config),
            env=dict(env),
            cwd=str(cwd),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C aimed at us must not reach ExaBGP before we stop it
            preexec_fn=_die_with_parent,
        )
        return cls(process, logger)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait(self) -> int:
        code = await self.process.wait()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        return code

    async def stop(self, timeout: float) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit code."""
        if self.process.returncode is None and not self._terminating:
            self._terminating = True
            self._signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self.process.wait())
            except TimeoutError:
                self._log.warning("exabgp_child_kill", pid=self.pid, after_seconds=timeout)
                self._signal(signal.SIGKILL)
        return await self.wait()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    async def _pump(self, stream: asyncio.StreamReader | None, name: str) -> None:
        if stream is None:
            return
        while True:  # ends at EOF, when the child exits
            raw = await stream.readline()
            if not raw:
                return
            self._emit(name, raw.decode(errors="replace").rstrip())

    def _emit(self, stream: str, line: str) -> None:
        if not line.strip():
            return
        source, _, message = line.partition(" ")
        message = redact(message.strip())
        # connection attempts to a router that is away repeat every few seconds, and a stop we asked
        # for is announced in several lines: keep those quiet
        noisy = self._terminating or source.startswith(("outgoing-", "incoming-"))
        emit = self._log.debug if noisy else self._log.warning
        emit("exabgp_output", pid=self.pid, stream=stream, source=source, message=message)


def redact(line: str) -> str:
    """Hide anything after an `md5` keyword: ExaBGP echoes configuration lines in its errors."""
    at = line.lower().find("md5")
    return line if at < 0 else line[:at] + "md5 <redacted>"


def _is_exabgp_variable(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith(("exabgp.", "exabgp_"))


def _current_user() -> str | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask the kernel for SIGTERM when we die."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
