"""IP address and prefix types shared by the core.

Everything inside the core carries `ipaddress` objects, never strings: comparisons, containment and
sorting are then exact, and string forms (`10.0.0.1/32`, `2001:db8::1/128`) are produced only at the
edges (ExaBGP commands, status, CLI output).
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network


def host_prefix(ip: IPAddress) -> IPNetwork:
    """The /32 or /128 that announces one service IP."""
    return ipaddress.ip_network(ip)


def covering_prefix(ip: IPAddress, length: int) -> IPNetwork:
    """The prefix of `length` bits that contains `ip` (aggregation)."""
    return ipaddress.ip_network(f"{ip}/{length}", strict=False)


def family_of(value: IPAddress | IPNetwork) -> int:
    """4 or 6."""
    return value.version


def parse_ip(text: str) -> IPAddress:
    """An IP literal as Go's net.ParseIP takes it: no zone (`fe80::1%eth0`), no surrounding space; raises
    ValueError. Python's `ip_address` keeps whatever follows a `%`, newlines included, in the address."""
    if not isinstance(text, str) or "%" in text or text != text.strip():
        raise ValueError(f"{text!r} is not an IP address")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
