"""`python -m bench.bmp_decode [N]`: the BMP station's UPDATE decoder (`metallb_bgp.bmp.message`)
against ExaBGP's own (`Update.unpack_message`), on the same N /32 routes, as a router's table dump
carries them: one prefix per UPDATE (what FRR's BMP sends) and 100 per UPDATE. Prints each one's
time and the ratio ExaBGP / ours, measured in the same run.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
import time
from collections.abc import Callable

from metallb_bgp.bmp.message import bgp_update


def _update(prefixes: list[str]) -> bytes:
    attrs = bytes([0x40, 1, 1, 0]) + bytes([0x40, 2, 6, 2, 1]) + struct.pack("!I", 64500)
    attrs += bytes([0x40, 3, 4]) + ipaddress.IPv4Address("10.1.0.11").packed + bytes([0xC0, 8, 4]) + struct.pack("!HH", 64500, 1)
    nlri = b"".join(bytes([32]) + ipaddress.IPv4Address(p).packed for p in prefixes)
    body = b"\0\0" + struct.pack("!H", len(attrs)) + attrs + nlri
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), 2) + body


def _exabgp_decoder() -> Callable[[bytes], object]:
    """ExaBGP's decoder as its own `exabgp decode` sets it up: a neighbour from a configuration, and
    the Negotiated session that `Update.unpack_message` needs."""
    from exabgp.bgp.message import Update
    from exabgp.bgp.message.direction import Direction
    from exabgp.configuration.check import _negotiated
    from exabgp.configuration.configuration import Configuration
    from exabgp.environment import getenv
    from exabgp.logger import log

    getenv()
    log.silence()
    conf = ("neighbor 127.0.0.1 { router-id 10.0.0.2; local-address 127.0.0.1; local-as 64501; peer-as 64500; "
            "family { ipv4 unicast; } }")  # fmt: skip
    configuration = Configuration([conf], text=True)
    configuration.reload()
    neighbor = next(iter(configuration.neighbors.values()))
    negotiated = _negotiated(neighbor)
    return lambda data: Update.unpack_message(data[19:], Direction.IN, negotiated)


def _time(decode: Callable[[bytes], object], messages: list[bytes], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for message in messages:
            decode(message)
        best = min(best, time.perf_counter() - started)
    return best


def main(count: int) -> None:
    prefixes = [str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("198.51.0.0")) + i)) for i in range(count)]
    exabgp = _exabgp_decoder()
    ours: Callable[[bytes], object] = bgp_update
    print(f"BMP UPDATE decoding, {count} /32 routes (best of 3)")
    for per_update in (1, 100):
        messages = [_update(prefixes[i : i + per_update]) for i in range(0, count, per_update)]
        theirs, mine = _time(exabgp, messages), _time(ours, messages)
        print(f"  {per_update:>3} per UPDATE: ExaBGP {theirs:.3f} s, ours {mine:.3f} s, ExaBGP/ours {theirs / mine:.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
