"""How long until a real router holds N routes: bulk commands vs one prefix per command.

Runs a real BIRD 2 and the real engine on loopback (the test harness in tests/bird.py), announces N
host routes, and measures (a) when `apply` returns (every command acked by ExaBGP) and (b) when BIRD's
RIB holds all N routes, by polling `birdc show route count`. Then withdraws them all the same way.

    .venv/bin/python bench/exabgp_baseline.py [N]
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bird import BirdRouter, Speaker

from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.routes.table import RouteAttributes, RouteTable
from metallb_bgp.exabgp import EngineTuning, ExaBGPEngine

SPEAKER = "127.0.0.2"
_COUNT = re.compile(r"Total: (\d+) of \d+ routes")


def route_count(router: BirdRouter) -> int:
    return sum(int(n) for n in _COUNT.findall(router.birdc("show", "route", "count")))


async def until_count(router: BirdRouter, expected: int, timeout: float = 300.0) -> float:
    started = time.monotonic()
    while route_count(router) != expected:  # bounded by `timeout`
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"router did not reach {expected} routes")
        await asyncio.sleep(0.02)
    return time.monotonic()


async def measure(label: str, tuning: EngineTuning, count: int, directory: Path) -> None:
    router = BirdRouter(directory / f"bird-{label}")
    router.add_speaker(Speaker("node", SPEAKER, 64513)).start()
    engine = ExaBGPEngine(
        workdir=directory / f"exa-{label}", router_id=ipaddress.IPv4Address("10.0.0.9"), tuning=tuning
    )
    peer = Peer(
        name="r1",
        my_asn=64513,
        peer_asn=64512,
        address=ipaddress.ip_address("127.0.0.1"),
        port=router.port,
        source_address=ipaddress.ip_address(SPEAKER),
        hold_time=30,
    )
    first = ipaddress.IPv4Address("10.128.0.0")
    routes = {
        ("r1", ipaddress.ip_network(f"{first + i}/32")): RouteAttributes(communities=("65000:1",)) for i in range(count)
    }
    try:
        await engine.start([peer])
        while not router.protocols()["node"].established:  # bounded by the session coming up
            await asyncio.sleep(0.05)
        started = time.monotonic()
        await engine.apply(RouteTable(routes=routes))
        acked = time.monotonic()
        at_router = await until_count(router, count)
        w_started = time.monotonic()
        await engine.apply(RouteTable())
        w_acked = time.monotonic()
        w_router = await until_count(router, 0)
        print(
            f"{label:<28} announce {count}: acked {acked - started:6.2f}s, at router {at_router - started:6.2f}s "
            f"({count / (at_router - started):7.0f} routes/s) | withdraw: acked {w_acked - w_started:6.2f}s, "
            f"at router {w_router - w_started:6.2f}s"
        )
    finally:
        await engine.stop()
        router.stop()


async def main(count: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    directory = Path(tempfile.mkdtemp(prefix="mlb-bench-", dir="/tmp"))
    try:
        await measure("bulk 500/line, 4 in flight", EngineTuning(), count, directory)
        await measure("bulk 1000/line, 4 in flight", EngineTuning(prefixes_per_command=1000), count, directory)
        await measure(
            "1 prefix/line, 200 in flight",
            EngineTuning(prefixes_per_command=1, commands_in_flight=200),
            count,
            directory,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
