"""A real BIRD 2 router for tests: its own config, control socket, pid and log file in a temporary directory.

Tests check what the router sees, never what our code believes it sent. One `BirdRouter` runs
`bird -f -c FILE -s SOCK -P PIDFILE` as a child of the test (foreground, so the test owns its whole life),
listens on a loopback address and a free non-privileged port, with one passive multihop `protocol bgp`
per speaker it expects (import all, export none, optional TCP MD5 password, graceful restart aware), and
is read through `birdc`: `routes()` parses `show route all` (on pure loopback BIRD marks the received
routes unreachable, but it imports them and `show route all` lists them with their attributes), and
`protocols()` parses `show protocols` (with `timeformat protocol iso long`, so `since` is exact).
Its waits poll the router, bounded (`waiting.wait_until`).

If `bird` is missing the test is skipped, or fails when the CI environment variable is set.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pytest
from waiting import wait_until

from metallb_bgp.core.net import IPAddress, IPNetwork

BIRD = "bird"
BIRDC = "birdc"
T = TypeVar("T")


def require_bird() -> None:
    if shutil.which(BIRD) and shutil.which(BIRDC):
        return
    message = "BIRD 2 is not installed (apt-get install bird2): real-router tests need bird and birdc"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
    """SIGTERM a router the test started, then SIGKILL if it lingers."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def free_port(address: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])








@dataclass(frozen=True)
class Speaker:
    """One BGP speaker the router accepts sessions from (a `protocol bgp` block)."""

    name: str
    address: str
    asn: int
    password: str | None = None
    hold_time: int = 9


@dataclass(frozen=True)
class BirdRoute:
    prefix: IPNetwork
    protocol: str
    as_path: tuple[int, ...] = ()
    next_hop: str | None = None
    local_pref: int | None = None
    communities: tuple[str, ...] = ()  # "65000:100", sorted
    large_communities: tuple[str, ...] = ()  # "1:2:3", sorted
    attributes: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class BirdProtocol:
    name: str
    proto: str
    state: str  # up | start | down ...
    since: datetime
    info: str  # Established | Passive | Active | Connect ...

    @property
    def established(self) -> bool:
        return self.state == "up" and self.info.startswith("Established")


class BirdRouter:
    def __init__(
        self,
        directory: Path,
        *,
        address: str = "127.0.0.1",
        asn: int = 64512,
        router_id: str = "10.255.0.1",
        port: int | None = None,
    ) -> None:
        require_bird()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.asn = asn
        self.router_id = router_id
        self.port = port if port is not None else free_port(address)
        self.speakers: dict[str, Speaker] = {}
        self.config_path = directory / "bird.conf"
        self.control = directory / "bird.ctl"
        self.pid_path = directory / "bird.pid"
        self.log_path = directory / "bird.log"
        self.process: subprocess.Popen[bytes] | None = None

    # ---------------------------------------------------------------- lifecycle

    def add_speaker(self, speaker: Speaker) -> BirdRouter:
        self.speakers[speaker.name] = speaker
        return self

    def start(self) -> BirdRouter:
        """Run BIRD in the foreground as our child, so the test owns its whole life."""
        self.config_path.write_text(self.render())
        subprocess.run([BIRD, "-p", "-c", str(self.config_path)], check=True, capture_output=True, timeout=10)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [BIRD, "-f", "-c", str(self.config_path), "-s", str(self.control), "-P", str(self.pid_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._ready, timeout=5, what="bird control socket")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"bird exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
        if not self.control.exists():
            return False
        return subprocess.run([BIRDC, "-s", str(self.control), "show", "status"], capture_output=True).returncode == 0

    def reconfigure(self) -> None:
        self.config_path.write_text(self.render())
        self.birdc("configure")

    def __enter__(self) -> BirdRouter:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def render(self) -> str:
        parts = [
            f'log "{self.log_path}" all;',
            f"router id {self.router_id};",
            "timeformat protocol iso long;",
            "timeformat route iso long;",
            "protocol device { }",
        ]
        parts += [self._protocol(s) for s in self.speakers.values()]
        return "\n".join(parts) + "\n"

    def _protocol(self, speaker: Speaker) -> str:
        password = f'  password "{speaker.password}";\n' if speaker.password else ""
        return (
            f"protocol bgp {speaker.name} {{\n"
            f"  local {self.address} port {self.port} as {self.asn};\n"
            f"  neighbor {speaker.address} as {speaker.asn};\n"
            "  passive on;\n"
            "  multihop;\n"
            f"  hold time {speaker.hold_time};\n"
            "  error wait time 1, 2;\n"
            "  graceful restart aware;\n"
            f"{password}"
            "  ipv4 { import all; export none; };\n"
            "  ipv6 { import all; export none; };\n"
            "}\n"
        )

    # ---------------------------------------------------------------- reading the router

    def birdc(self, *command: str) -> str:
        result = subprocess.run(
            [BIRDC, "-s", str(self.control), *command], capture_output=True, text=True, timeout=10, check=True
        )
        return result.stdout

    def routes(self, protocol: str | None = None) -> dict[IPNetwork, BirdRoute]:
        """Routes BIRD imported (reachable or not), keyed by prefix, from one protocol or all."""
        command = ["show", "route", "all"] + (["protocol", protocol] if protocol else [])
        routes: dict[IPNetwork, BirdRoute] = {}
        for route in parse_routes(self.birdc(*command)):
            routes.setdefault(route.prefix, route)
        return routes

    def all_routes(self) -> list[BirdRoute]:
        return parse_routes(self.birdc("show", "route", "all"))

    def protocols(self) -> dict[str, BirdProtocol]:
        return parse_protocols(self.birdc("show", "protocols"))

    def protocol(self, name: str) -> BirdProtocol:
        return self.protocols()[name]

    def neighbor_id(self, name: str) -> str | None:
        """The BGP identifier the speaker of protocol `name` presented (`show protocols all`), once up."""
        found = re.search(r"Neighbor ID:\s+(\S+)", self.birdc("show", "protocols", "all", name))
        return found.group(1) if found else None

    def wait_established(self, name: str, timeout: float = 15.0) -> BirdProtocol:
        return wait_until(
            lambda: (p := self.protocols().get(name)) is not None and p.established and p,
            timeout=timeout,
            what=f"BGP session {name} established",
        )

    def wait_routes(
        self,
        check: Callable[[dict[IPNetwork, BirdRoute]], bool],
        *,
        protocol: str | None = None,
        timeout: float = 15.0,
        what: str = "routes",
    ) -> dict[IPNetwork, BirdRoute]:
        def poll() -> dict[IPNetwork, BirdRoute] | None:
            routes = self.routes(protocol)
            return routes if check(routes) else None

        return wait_until(poll, timeout=timeout, what=what)


# -------------------------------------------------------------------- parsing birdc output

_ROUTE_LINE = re.compile(r"^(?P<prefix>[0-9a-fA-F:.]+/\d+)?\s+\S*\s*\[(?P<proto>[^\s\]]+)\s")
_ATTRIBUTE = re.compile(r"^\t(?P<key>[A-Za-z][\w.]*):\s?(?P<value>.*)$")
_PAIR = re.compile(r"\((\d+),\s*(\d+)\)")
_TRIPLE = re.compile(r"\((\d+),\s*(\d+),\s*(\d+)\)")


def parse_routes(text: str) -> list[BirdRoute]:
    routes: list[BirdRoute] = []
    prefix: IPNetwork | None = None
    current: dict[str, str] | None = None
    protocol = ""

    def flush() -> None:
        if prefix is not None and current is not None:
            routes.append(_route(prefix, protocol, current))

    for line in text.splitlines():
        if line.startswith("\t"):
            match = _ATTRIBUTE.match(line)
            if match and current is not None:
                current[match["key"]] = match["value"].strip()
            continue
        match = _ROUTE_LINE.match(line)
        if not match:
            continue
        flush()
        if match["prefix"]:
            prefix = ipaddress.ip_network(match["prefix"])
        protocol = match["proto"]
        current = {}
    flush()
    return routes


def _route(prefix: IPNetwork, protocol: str, attributes: dict[str, str]) -> BirdRoute:
    as_path = tuple(int(asn) for asn in attributes.get("BGP.as_path", "").split() if asn.isdigit())
    local_pref = attributes.get("BGP.local_pref")
    return BirdRoute(
        prefix=prefix,
        protocol=protocol,
        as_path=as_path,
        next_hop=attributes.get("BGP.next_hop"),
        local_pref=int(local_pref) if local_pref and local_pref.isdigit() else None,
        communities=tuple(sorted(f"{a}:{b}" for a, b in _PAIR.findall(attributes.get("BGP.community", "")))),
        large_communities=tuple(
            sorted(f"{a}:{b}:{c}" for a, b, c in _TRIPLE.findall(attributes.get("BGP.large_community", "")))
        ),
        attributes=attributes,
    )


def parse_protocols(text: str) -> dict[str, BirdProtocol]:
    protocols: dict[str, BirdProtocol] = {}
    for line in text.splitlines():
        fields = line.split(maxsplit=6)
        if len(fields) < 6 or fields[0] == "Name" or not re.match(r"\d{4}-\d\d-\d\d", fields[4]):
            continue
        name, proto, _table, state, day, clock = fields[:6]
        info = fields[6].strip() if len(fields) > 6 else ""
        since = datetime.fromisoformat(f"{day} {clock}")
        protocols[name] = BirdProtocol(name=name, proto=proto, state=state, since=since, info=info)
    return protocols


__all__ = [
    "BirdProtocol",
    "BirdRoute",
    "BirdRouter",
    "IPAddress",
    "Speaker",
    "free_port",
    "parse_protocols",
    "parse_routes",
    "require_bird",
]
