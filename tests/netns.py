"""A fleet in network namespaces: router namespaces running BIRD 2 (or FRR), node namespaces running speakers.

Each router namespace holds a bridge with the router's address (`10.R.0.1/24` for router R) and runs
BIRD with one BGP session per node and `merge paths on`, so its kernel table shows the ECMP set; or,
with `router_kind="frr"`, FRR's zebra, bgpd (`maximum-paths`) and bfdd, the three daemons FRR needs
for BGP with BFD and routes in the kernel. Each
node namespace has one veth link to each router's bridge (`10.R.0.(10+N)` for node N) and runs a
`metallb-bgp run` of its own; all nodes read one manifests folder, so they compute the same
allocation. Everything is created by the test and removed at the end, also when it fails: names carry
a per-run prefix (`mlbt<pid>`), and `remove_stale()` finds what an interrupted run left behind.
Addresses live only inside these namespaces. Root is required (`ip netns`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bird import BIRD, BIRDC, parse_protocols, parse_routes, require_bird
from frr import FRR_DAEMONS, require_frr
from waiting import wait_until

ROUTER_ASN_BASE = 64510  # router R is AS 64510 + R
NODE_ASN = 64500
PREFIX = f"mlbt{os.getpid() % 100000}"
_BFD_TIMERS = "min rx interval 300 ms; min tx interval 300 ms; multiplier 3;"
BIRD_BFD = f'protocol bfd {{ interface "br0" {{ {_BFD_TIMERS} }}; multihop {{ {_BFD_TIMERS} }}; }}\n'


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """This thread inside network namespace `namespace` for the block (sockets made here stay there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{namespace}") as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")


def remove_stale() -> None:
    """Namespaces left by an earlier run of these tests (their names start with `mlbt`)."""
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("mlbt") and not name.startswith(PREFIX):
            _ip("netns", "del", name, check=False)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("multi-node tests create network namespaces: run them as root")


@dataclass
class Router:
    index: int
    namespace: str
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"10.{self.index}.0.1"

    @property
    def asn(self) -> int:
        return ROUTER_ASN_BASE + self.index

    @property
    def control(self) -> Path:
        return self.directory / "bird.ctl"

    def birdc(self, *command: str) -> str:
        return subprocess.run([BIRDC, "-s", str(self.control), *command], capture_output=True, text=True,
                              timeout=10, check=True).stdout  # fmt: skip

    def routes(self) -> dict[str, set[str]]:
        """Prefix -> the BGP next hops BIRD holds for it (one per node announcing it)."""
        found: dict[str, set[str]] = {}
        for route in parse_routes(self.birdc("show", "route", "all")):
            if not route.protocol.startswith("node_"):
                continue  # the link's own route (`protocol direct`, multihop only)
            found.setdefault(str(route.prefix), set()).add((route.next_hop or "").split()[0])
        return found

    def protocols_established(self) -> set[str]:
        """The BGP protocols (one per node) whose session is up."""
        return {name for name, protocol in parse_protocols(self.birdc("show", "protocols")).items() if protocol.established}

    def bfd_sessions(self) -> dict[str, str]:
        """Neighbour address -> BIRD's BFD state (Up, Down, Init, ...)."""
        found = {}
        for line in self.birdc("show", "bfd", "sessions").splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0].count(".") == 3:
                found[fields[0]] = fields[2]
        return found

    def kernel(self) -> dict[str, set[str]]:
        """Prefix -> next hops in the router's own kernel table (what traffic would follow)."""
        return _kernel_routes(self.namespace, "bird")

    def log(self) -> str:
        return (self.directory / "bird.log").read_text(errors="replace")


def _node_name(address: str) -> str:
    """The BGP protocol name BIRD gives node N (`node_N`), from its address 10.R.0.(10+N)."""
    return f"node_{int(address.rsplit('.', 1)[1]) - 10}"


@dataclass
class FrrRouter(Router):
    """The same router as FRR: zebra (routes into the kernel), bgpd and bfdd, read with vtysh. Names
    and states are given as the BIRD router gives them, so one test reads either."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def vtysh(self, command: str) -> object:
        result = subprocess.run(["vtysh", "--vty_socket", str(self.directory), "-c", command],
                                capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
        return json.loads(result.stdout or "{}")

    def routes(self) -> dict[str, set[str]]:
        table = self.vtysh("show bgp ipv4 unicast json")
        assert isinstance(table, dict)
        return {prefix: {hop["ip"] for path in paths for hop in path.get("nexthops", [])}
                for prefix, paths in table.get("routes", {}).items()}  # fmt: skip

    def protocols_established(self) -> set[str]:
        summary = self.vtysh("show bgp ipv4 unicast summary json")
        assert isinstance(summary, dict)
        return {_node_name(address) for address, peer in summary.get("peers", {}).items() if peer.get("state") == "Established"}

    def bfd_sessions(self) -> dict[str, str]:
        peers = self.vtysh("show bfd peers json")
        assert isinstance(peers, list)
        return {str(peer["peer"]): str(peer["status"]).capitalize() for peer in peers}

    def kernel(self) -> dict[str, set[str]]:
        return _kernel_routes(self.namespace, "bgp")

    def log(self) -> str:
        return "".join((self.directory / f"{daemon}.log").read_text(errors="replace")[-1500:]
                       for daemon in FRR_DAEMONS if (self.directory / f"{daemon}.log").exists())  # fmt: skip


@dataclass
class GoBgpRouter(Router):
    """The same router as GoBGP 3 (Debian's gobgpd), read with its `gobgp` client: no kernel table
    (no zebra), so a test reads its RIB. It can report to a BMP station (`Fleet.bmp_station`)."""

    API_PORT = 50051  # on the namespace's own loopback

    def gobgp(self, *command: str) -> Any:
        result = subprocess.run(["ip", "netns", "exec", self.namespace, "gobgp", "-u", "127.0.0.1", "-p", str(self.API_PORT),
                                 *command, "-j"], capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
        return json.loads(result.stdout or "{}")

    def routes(self) -> dict[str, set[str]]:
        """Prefix -> next hops of the paths its import policy accepted (the global RIB)."""
        table = self.gobgp("global", "rib", "-a", "ipv4")
        return {prefix: {a.get("nexthop") for path in paths for a in path.get("attrs", []) if a.get("type") == 3}
                for prefix, paths in table.items()}  # fmt: skip

    def received(self, neighbor: str) -> set[str]:
        """The prefixes it received from `neighbor`, before its import policy (its Adj-RIB-In); none
        while the session is not up (gobgp then refuses the question)."""
        try:
            return set(self.gobgp("neighbor", neighbor, "adj-in", "-a", "ipv4"))
        except subprocess.CalledProcessError:
            return set()

    def protocols_established(self) -> set[str]:
        return {_node_name(n["conf"]["neighbor_address"]) for n in self.gobgp("neighbor")
                if n.get("state", {}).get("session_state") == 6}  # fmt: skip

    def log(self) -> str:
        path = self.directory / "gobgpd.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _kernel_routes(namespace: str, protocol: str) -> dict[str, set[str]]:
    result = subprocess.run(["ip", "netns", "exec", namespace, "ip", "-j", "route", "show", "proto", protocol],
                            capture_output=True, text=True, check=True, timeout=10)  # fmt: skip
    found: dict[str, set[str]] = {}
    for entry in json.loads(result.stdout or "[]"):
        hops = {entry["gateway"]} if "gateway" in entry else {hop["gateway"] for hop in entry.get("nexthops", [])}
        found[str(ipaddress.ip_network(entry["dst"]))] = hops
    return found


@dataclass
class Node:
    index: int
    namespace: str
    name: str

    def address(self, router: int) -> str:
        return f"10.{router}.0.{10 + self.index}"


@dataclass
class Fleet:
    directory: Path
    node_count: int = 3
    router_count: int = 2
    bfd: bool = False  # BIRD runs `protocol bfd` (300 ms x 3) and its BGP sessions follow it
    bfd_graceful: bool = False  # ... and a BFD down is a graceful restart of the BGP session (`bfd graceful`)
    multihop: bool = False  # the routers' sessions are multihop (BGP and BFD, RFC 5883), the nodes' too
    router_kind: str = "bird"  # or "frr", or "gobgp"
    bmp_station: tuple[str, int] | None = None  # GoBGP reports to this BMP station, pre- and post-policy
    import_deny: tuple[str, ...] = ()  # GoBGP's import policy rejects these prefixes
    routers: list[Router] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    speakers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def create(self) -> Fleet:
        require_root()
        require_bird() if self.router_kind == "bird" else require_gobgp() if self.router_kind == "gobgp" else require_frr()
        remove_stale()
        try:
            for r in range(1, self.router_count + 1):
                self._router(r)
            for n in range(1, self.node_count + 1):
                self._node(n)
            for router in self.routers:
                if isinstance(router, FrrRouter):
                    self._start_frr(router)
                elif isinstance(router, GoBgpRouter):
                    self._start_gobgp(router)
                else:
                    self._start_bird(router)
        except BaseException:
            self.destroy()
            raise
        return self

    def _router(self, r: int) -> None:
        namespace = f"{PREFIX}r{r}"
        _ip("netns", "add", namespace)
        kind = {"frr": FrrRouter, "gobgp": GoBgpRouter}.get(self.router_kind, Router)
        router = kind(r, namespace, self.directory / f"router{r}")
        self.routers.append(router)
        router.directory.mkdir(parents=True, exist_ok=True)
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "link", "add", "br0", "type", "bridge")
        _ip("-n", namespace, "addr", "add", f"{router.address}/24", "dev", "br0")
        _ip("-n", namespace, "link", "set", "br0", "up")

    def _node(self, n: int) -> None:
        namespace = f"{PREFIX}n{n}"
        _ip("netns", "add", namespace)
        node = Node(n, namespace, f"node-{n}")
        self.nodes.append(node)
        _ip("-n", namespace, "link", "set", "lo", "up")
        for router in self.routers:
            inside, outside = f"eth{router.index}", f"n{n}r{router.index}"
            _ip("link", "add", outside, "netns", router.namespace, "type", "veth", "peer", "name", inside, "netns", namespace)
            _ip("-n", router.namespace, "link", "set", outside, "master", "br0")
            _ip("-n", router.namespace, "link", "set", outside, "up")
            _ip("-n", namespace, "addr", "add", f"{node.address(router.index)}/24", "dev", inside)
            _ip("-n", namespace, "link", "set", inside, "up")

    def _start_bird(self, router: Router) -> None:
        config = router.directory / "bird.conf"
        sessions = "".join(
            f"protocol bgp {node.name.replace('-', '_')} {{\n  local {router.address} as {router.asn};\n"
            f"  neighbor {node.address(router.index)} as {NODE_ASN};\n  passive on;\n  hold time 9;\n"
            f"  error wait time 1, 2;\n  graceful restart on;\n{self._bfd_option()}\n{'  multihop;' if self.multihop else ''}\n"
            "  ipv4 { import all; export none; };\n}\n"
            for node in self.nodes
        )  # fmt: skip
        config.write_text(
            f'log "{router.directory / "bird.log"}" all;\nrouter id {router.address};\ntimeformat protocol iso long;\n'
            "protocol device { }\n"
            "protocol kernel { ipv4 { export where source != RTS_DEVICE; }; merge paths on; }\n"
            # a multihop session's next hop is resolved recursively, through the link's own route
            + ('protocol direct { ipv4; interface "br0"; }\n' if self.multihop else "")
            + (BIRD_BFD if self.bfd or self.bfd_graceful else "")
            + sessions
        )
        router.process = subprocess.Popen(
            ["ip", "netns", "exec", router.namespace, BIRD, "-f", "-c", str(config), "-s", str(router.control),
             "-P", str(router.directory / "bird.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_until(lambda: router.control.exists(), timeout=10, what=f"BIRD in {router.namespace}")

    def _start_gobgp(self, router: GoBgpRouter) -> None:
        lines = ["[global.config]", f"  as = {router.asn}", f'  router-id = "{router.address}"', "  port = 179",
                 f'  local-address-list = ["{router.address}"]']  # fmt: skip
        if self.import_deny:
            lines += ["[global.apply-policy.config]", '  import-policy-list = ["deny-some"]',
                      '  default-import-policy = "accept-route"', "[[defined-sets.prefix-sets]]", '  prefix-set-name = "denied"']
            for prefix in self.import_deny:
                lines += ["  [[defined-sets.prefix-sets.prefix-list]]", f'    ip-prefix = "{prefix}"']
            lines += ["[[policy-definitions]]", '  name = "deny-some"', "  [[policy-definitions.statements]]", '    name = "deny"',
                      "    [policy-definitions.statements.conditions.match-prefix-set]", '      prefix-set = "denied"',
                      "    [policy-definitions.statements.actions]", '      route-disposition = "reject-route"']  # fmt: skip
        if self.bmp_station is not None:
            lines += ["[[bmp-servers]]", "  [bmp-servers.config]", f'    address = "{self.bmp_station[0]}"',
                      f"    port = {self.bmp_station[1]}", '    route-monitoring-policy = "all"']  # fmt: skip
        for node in self.nodes:
            lines += ["[[neighbors]]", "  [neighbors.config]", f'    neighbor-address = "{node.address(router.index)}"',
                      f"    peer-as = {NODE_ASN}", "  [neighbors.transport.config]", "    passive-mode = true",
                      f'    local-address = "{router.address}"', "  [neighbors.timers.config]", "    hold-time = 9",
                      "    keepalive-interval = 3"]  # fmt: skip
        config = router.directory / "gobgpd.toml"
        config.write_text("\n".join(lines) + "\n")
        with (router.directory / "gobgpd.log").open("ab") as log:
            router.process = subprocess.Popen(
                ["ip", "netns", "exec", router.namespace, "gobgpd", "-f", str(config), "-t", "toml",
                 "--api-hosts", f"127.0.0.1:{router.API_PORT}", "--log-level", "info"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until(lambda: _answers(router), timeout=10, what=f"GoBGP in {router.namespace}")

    def _start_frr(self, router: FrrRouter) -> None:
        """zebra first (the others connect to its socket), then bfdd and bgpd, each as a plain process."""
        router.directory.chmod(0o777)  # FRR's daemons drop to the frr user and write their sockets here
        for parent in router.directory.parents:  # ... which must reach it through the test's 0700 temporary folder
            if parent == Path(tempfile.gettempdir()):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
        (router.directory / "zebra.conf").write_text("hostname zebra\n")
        (router.directory / "bfdd.conf").write_text(
            "bfd\n profile fast\n  receive-interval 300\n  transmit-interval 300\n  detect-multiplier 3\n !\n!\n")
        lines = [f"router bgp {router.asn}", f" bgp router-id {router.address}", " no bgp ebgp-requires-policy",
                 " bgp graceful-restart"]  # fmt: skip
        for node in self.nodes:
            neighbor = f" neighbor {node.address(router.index)}"
            lines += [f"{neighbor} remote-as {NODE_ASN}", f"{neighbor} passive", f"{neighbor} timers 3 9"]
            lines += [f"{neighbor} ebgp-multihop 2"] if self.multihop else []
            lines += [f"{neighbor} bfd", f"{neighbor} bfd profile fast"] if self.bfd else []
        lines += [" address-family ipv4 unicast", "  maximum-paths 8", " exit-address-family", "!"]
        (router.directory / "bgpd.conf").write_text("\n".join(lines) + "\n")
        zserv = router.directory / "zserv.api"
        for daemon in FRR_DAEMONS:
            extra = ["-p", "179", "-l", router.address] if daemon == "bgpd" else []
            extra += ["--bfdctl", str(router.directory / "bfdd.sock")] if daemon == "bfdd" else []
            router.processes.append(subprocess.Popen(
                ["ip", "netns", "exec", router.namespace, f"/usr/lib/frr/{daemon}", "-f", str(router.directory / f"{daemon}.conf"),
                 "-i", str(router.directory / f"{daemon}.pid"), "-z", str(zserv), "--vty_socket", str(router.directory),
                 "-P", "0", "--log", f"file:{router.directory / f'{daemon}.log'}", *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
            vty = router.directory / f"{daemon}.vty"
            wait_until(vty.exists, timeout=10, what=f"FRR {daemon} in {router.namespace}")

    def _bfd_option(self) -> str:
        return "  bfd graceful;" if self.bfd_graceful else "  bfd on;" if self.bfd else ""

    def start_speaker(self, node: Node, manifests: Path, *extra: str) -> subprocess.Popen[bytes]:
        """`metallb-bgp run` on `node`, reading the manifests folder."""
        return self._start(node, ["run", "--manifests", str(manifests), "--node", node.name,
                                  "--state-file", str(self.directory / f"state-{node.index}.json"),
                                  "--control-socket", str(self.control_socket(node)), *extra])  # fmt: skip

    def control_socket(self, node: Node) -> Path:
        return self.directory / f"control-{node.index}" / "control.sock"

    def start_kube_speaker(self, node: Node, kubeconfig: Path) -> subprocess.Popen[bytes]:
        """`metallb-bgp speaker` on `node`, against an API server reachable from inside the namespace."""
        return self._start(node, ["speaker", "--node-name", node.name, "--kubeconfig", str(kubeconfig),
                                  "--control-socket", str(self.directory / f"control-{node.index}" / "control.sock")])  # fmt: skip

    def _start(self, node: Node, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{node.name}.log").open("ab")
        process = subprocess.Popen(
            ["ip", "netns", "exec", node.namespace, sys.executable, "-m", "metallb_bgp.cli", *args,
             "--workdir", str(self.directory / f"w{node.index}"), "--log-format", "json"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        self.speakers[node.name] = process
        return process

    def stop_speaker(self, node: Node) -> None:
        """SIGTERM, as a DaemonSet rollout does: graceful-restart peers keep its routes as stale."""
        _stop(self.speakers[node.name], signal.SIGTERM)

    def cut(self, node: Node) -> None:
        """Every link of `node` down, from inside it: it falls silent, nothing reaches the routers."""
        for router in self.routers:
            _ip("-n", node.namespace, "link", "set", f"eth{router.index}", "down")

    def kill(self, node: Node) -> None:
        """SIGKILL its speaker, ExaBGP and relay (their own process group): no Cease, no withdrawal."""
        process = self.speakers[node.name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)

    def log_of(self, node: Node) -> str:
        return (self.directory / f"{node.name}.log").read_text(errors="replace")

    def destroy(self) -> None:
        for process in self.speakers.values():
            _stop(process, signal.SIGTERM)
        for router in self.routers:
            for process in [router.process] + (router.processes[::-1] if isinstance(router, FrrRouter) else []):
                if process is not None:
                    _stop(process, signal.SIGTERM)
        for namespace in [r.namespace for r in self.routers] + [n.namespace for n in self.nodes]:
            _ip("netns", "del", namespace, check=False)


def require_gobgp() -> None:
    """A missing router binary is a failure, never a skip (install it: apt-get install gobgpd)."""
    import shutil

    if shutil.which("gobgpd") is None or shutil.which("gobgp") is None:
        pytest.fail("GoBGP is missing: apt-get install gobgpd")


def _answers(router: GoBgpRouter) -> bool:
    if router.process is not None and router.process.poll() is not None:
        pytest.fail(f"gobgpd exited with {router.process.returncode}: {router.log()[-2000:]}")
    try:
        router.gobgp("global")
    except (subprocess.CalledProcessError, ValueError):
        return False
    return True


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)  # its own session: the speaker, its ExaBGP and relay, or BIRD
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=5)
