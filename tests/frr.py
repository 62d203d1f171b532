"""A real FRR bgpd for the tests: run as a plain process (no zebra, no service manager), read with vtysh.

FRR 8.4 from Debian (`apt-get install frr`, `make test` installs it). Its behaviour differs from BIRD's
where it matters to us: it resets the session with a NOTIFICATION on an UPDATE whose next hop it
considers martian (127/8), which is how a speaker's reconnect storm against a router was found.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bird import free_port, stop_process
from waiting import wait_until

BGPD = "/usr/lib/frr/bgpd"
FRR_DAEMONS = ("zebra", "bfdd", "bgpd")  # in the order they start: the others connect to zebra


def require_frr() -> None:
    """A missing router binary is a failure, never a skip (install it: apt-get install frr)."""
    missing = [f"/usr/lib/frr/{d}" for d in FRR_DAEMONS if not Path(f"/usr/lib/frr/{d}").exists()]
    if missing or shutil.which("vtysh") is None:
        pytest.fail(f"FRR is missing ({', '.join(missing) or 'vtysh'}): apt-get install frr")


@dataclass
class FrrNeighbor:
    address: str
    asn: int


class FrrRouter:
    def __init__(
        self, directory: Path, *, asn: int, address: str = "127.0.0.1", router_id: str = "10.255.0.2",
        allow_martian: bool = False, port: int | None = None, bmp_station: tuple[str, int] | None = None,
        import_deny: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        require_frr()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        self.asn = asn
        self.address = address
        self.router_id = router_id
        self.port = port if port is not None else free_port(address)
        self.allow_martian = allow_martian  # accept 127/8 next hops (loopback tests), as FRR allows
        self.neighbors: list[FrrNeighbor] = []
        self.bmp_station = bmp_station  # report to this BMP station (bgpd's bmp module, `-M bmp`)
        self.import_deny = import_deny  # prefixes its import policy drops (a prefix-list on every neighbor)
        self.process: subprocess.Popen[bytes] | None = None

    def add_neighbor(self, address: str, asn: int) -> FrrRouter:
        self.neighbors.append(FrrNeighbor(address, asn))
        return self

    def render(self) -> str:
        lines = ["hostname test-frr", f"log file {self.directory / 'bgpd.log'} informational"]
        if self.import_deny:
            lines += [f"ip prefix-list import seq {5 * (i + 1)} deny {p}" for i, p in enumerate(self.import_deny)]
            lines += ["ip prefix-list import seq 10000 permit 0.0.0.0/0 le 32", "route-map import permit 10",
                      " match ip address prefix-list import", "exit"]  # fmt: skip
        lines += [
            f"router bgp {self.asn}",
            f" bgp router-id {self.router_id}",
            " no bgp ebgp-requires-policy",
            " no bgp network import-check",
        ]
        if self.allow_martian:
            lines.append(" bgp allow-martian-nexthop")
        for neighbor in self.neighbors:
            lines += [
                f" neighbor {neighbor.address} remote-as {neighbor.asn}",
                f" neighbor {neighbor.address} passive",
                f" neighbor {neighbor.address} timers 3 9",
            ]
            if self.import_deny:
                lines.append(f" neighbor {neighbor.address} route-map import in")
            if self.bmp_station is not None:  # FRR reports pre-policy routes from the Adj-RIB-In it keeps then only
                lines += [" address-family ipv4 unicast", f"  neighbor {neighbor.address} soft-reconfiguration inbound",
                          " exit-address-family"]  # fmt: skip
        if self.bmp_station is not None:
            address, port = self.bmp_station
            lines += [" bmp targets station", "  bmp monitor ipv4 unicast pre-policy", "  bmp monitor ipv4 unicast post-policy",
                      "  bmp monitor ipv6 unicast pre-policy", "  bmp monitor ipv6 unicast post-policy",
                      f"  bmp connect {address} port {port} min-retry 100 max-retry 1000", " exit"]  # fmt: skip
        return "\n".join(lines) + "\n!\n"

    def start(self) -> FrrRouter:
        config = self.directory / "bgpd.conf"
        config.write_text(self.render())
        with (self.directory / "stdout.log").open("ab") as log:
            self.process = subprocess.Popen(
                [BGPD, "-f", str(config), "-i", str(self.directory / "bgpd.pid"), "--vty_socket", str(self.directory),
                 "-p", str(self.port), "-l", self.address, "-Z", "-S", "-P", "0",
                 *(["-M", "bmp"] if self.bmp_station is not None else [])],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            wait_until(self._ready, timeout=10, what="FRR bgpd's vty")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"bgpd exited with {self.process.returncode}: {(self.directory / 'stdout.log').read_text()[-2000:]}")
        return (self.directory / "bgpd.vty").exists() and self._vtysh("show bgp summary json", check=False) is not None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout=5)

    def _vtysh(self, command: str, *, check: bool = True) -> Any:
        result = subprocess.run(
            ["vtysh", "--vty_socket", str(self.directory), "-c", command], capture_output=True, text=True, timeout=10
        )
        if result.returncode != 0:
            if check:
                raise AssertionError(f"vtysh {command!r}: {result.stderr or result.stdout}")
            return None
        return json.loads(result.stdout) if result.stdout.strip() else {}

    def neighbor(self, address: str) -> dict[str, Any]:
        return self._vtysh(f"show bgp neighbors {address} json").get(address, {})  # type: ignore[no-any-return]

    def routes(self) -> dict[str, Any]:
        return self._vtysh("show bgp ipv4 unicast json").get("routes", {})  # type: ignore[no-any-return]
