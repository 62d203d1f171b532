"""What the ExaBGP engine asks of the host, apart from the child itself: the kernel's source address
toward a peer, whether a process still lives, and files only we may read.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from metallb_bgp.core.net import IPAddress


def route_source(address: IPAddress) -> IPAddress | None:
    """The local address the kernel would use to reach `address` (`ip route get`), or None.

    A UDP socket's `connect` sends nothing: it only routes, and `getsockname` then gives the source
    the route chose. This is what ExaBGP's `local-address auto` would pick when it connects; rendering
    it explicitly is what keeps an unchanged neighbour's `next-hop self` working across a `reload`.
    """
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((str(address), 9))
            found = ipaddress.ip_address(probe.getsockname()[0])
    except (OSError, ValueError):
        return None
    return None if found.is_unspecified else found


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return state_of(pid) not in ("Z", "X")  # a zombie waiting for its parent is gone for us


def state_of(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "X"
    return stat.rsplit(")", 1)[-1].split()[0]


def write_private(path: Path, text: str) -> None:
    """Write atomically, readable by us only (the file may hold MD5 passwords)."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
