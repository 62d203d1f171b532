"""The raw ExaBGP bulk baseline as a process of its own, so it is timed the way `metallb-bgp run` is.

It is bench/exabgp_baseline.py's bulk case (the engine's default tuning: 500 prefixes a line, 4 lines
in flight) with the routes known before it starts: a Python process that imports the engine, starts
ExaBGP with one peer and hands it N host routes, and nothing else (no manifests, no compile, no
allocation, no desired-routes). The parent times it from `Popen` to BIRD holding N routes, exactly as
it times `metallb-bgp run`; the difference between the two is our own work.

    python -m bench.baseline_child --port P --count N --workdir DIR
Then on stdin: `withdraw` (every route withdrawn; prints `withdrawn` once ExaBGP acked), `stop`.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from pathlib import Path

import structlog

from bench.cluster import COMMUNITY, ROUTER_ADDRESS, ROUTER_ASN, SPEAKER_ADDRESS, SPEAKER_ASN, service_ip
from metallb_bgp.core.config.model import Peer
from metallb_bgp.core.routes.table import RouteAttributes, RouteTable
from metallb_bgp.exabgp import EngineTuning, ExaBGPEngine


def table(count: int) -> RouteTable:
    attributes = RouteAttributes(communities=(COMMUNITY,))
    return RouteTable(
        routes={("router", ipaddress.ip_network(f"{service_ip(i)}/32")): attributes for i in range(count)}
    )


async def main(port: int, count: int, workdir: Path) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    peer = Peer(
        name="router",
        my_asn=SPEAKER_ASN,
        peer_asn=ROUTER_ASN,
        address=ipaddress.ip_address(ROUTER_ADDRESS),
        port=port,
        source_address=ipaddress.ip_address(SPEAKER_ADDRESS),
        hold_time=30,
    )
    engine = ExaBGPEngine(workdir=workdir, router_id=ipaddress.IPv4Address(SPEAKER_ADDRESS), tuning=EngineTuning())
    loop = asyncio.get_running_loop()
    try:
        await engine.start([peer])
        await engine.apply(table(count))  # returns at once (no session yet): pushed when it comes up
        print("started", flush=True)
        for _ in range(3):  # bounded: withdraw, stop
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "withdraw":
                await engine.apply(RouteTable())
                print("withdrawn", flush=True)
            elif line in ("stop", ""):
                break
    finally:
        await engine.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.count, args.workdir))
