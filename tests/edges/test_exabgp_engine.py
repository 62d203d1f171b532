"""The ExaBGP engine against real routers: a real `exabgp` child, real BIRD 2, checked at the router.

Every test runs on loopback with free non-privileged ports, polls the router's RIB with bounded waits,
and stops every BIRD and ExaBGP it started (the engine by `stop()`, BIRD by the `bird_factory` fixture).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import pytest
from bird import BirdRouter, Speaker
from waiting import eventually

from metallb_bgp.core.config.model import DynamicASN, Peer
from metallb_bgp.core.net import IPNetwork
from metallb_bgp.core.routes.table import RouteAttributes, RouteKey, RouteTable
from metallb_bgp.exabgp import EngineTuning, ExaBGPEngine, SessionState

pytestmark = [pytest.mark.router, pytest.mark.timeout(60)]

ROUTER_ASN = 64512
NODE_ASN = 64513
SPEAKER = "127.0.0.2"  # the node's address: ExaBGP connects from here
ROUTER_ID = ipaddress.IPv4Address("10.0.0.9")
TUNING = EngineTuning(restart_backoff_initial=0.2, ack_timeout=20.0, relay_connect_timeout=10.0)
ip = ipaddress.ip_address
net = ipaddress.ip_network
BirdFactory = Callable[..., BirdRouter]


def peer_for(router: BirdRouter, name: str, *, asn: int = NODE_ASN, source: str = SPEAKER, **extra: object) -> Peer:
    return Peer(
        name=name,
        my_asn=asn,
        peer_asn=router.asn,
        address=ip(router.address),
        port=router.port,
        source_address=ip(source),
        hold_time=9,
        **extra,  # type: ignore[arg-type]
    )


def router_with_speaker(
    make: BirdFactory, name: str, *, address: str = "127.0.0.1", speaker_asn: int = NODE_ASN, **speaker: object
) -> BirdRouter:
    router = make(name, address=address)
    router.add_speaker(Speaker(name="node", address=str(speaker.pop("source", SPEAKER)), asn=speaker_asn, **speaker))  # type: ignore[arg-type]
    return router.start()


def table(routes: dict[RouteKey, RouteAttributes]) -> RouteTable:
    return RouteTable(routes=routes)


def hosts(count: int, base: str = "10.1.0.0") -> list[IPNetwork]:
    first = ip(base)
    return [net(f"{first + i}/{first.max_prefixlen}") for i in range(count)]


async def run_engine(
    short_tmp: Path,
    peers: Iterable[Peer],
    scenario: Callable[[ExaBGPEngine], Awaitable[None]],
    **options: object,
) -> None:
    options.setdefault("tuning", TUNING)
    engine = ExaBGPEngine(workdir=short_tmp / "exabgp", router_id=ROUTER_ID, **options)  # type: ignore[arg-type]
    pids: list[int | None] = []
    try:
        await engine.start(list(peers))
        await scenario(engine)
    finally:
        pids = [engine.child_pid, engine.relay_pid]
        await engine.stop()
    assert engine.child_pid is None
    for pid in pids:
        assert pid is None or not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} left running"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


async def established(router: BirdRouter, protocol: str = "node", timeout: float = 15.0) -> None:
    await eventually(
        lambda: (p := router.protocols().get(protocol)) is not None and p.established,
        timeout=timeout,
        what=f"session {protocol} established at the router",
    )


async def router_has(router: BirdRouter, expected: set[IPNetwork], timeout: float = 15.0) -> None:
    await eventually(
        lambda: set(router.routes()) == expected, timeout=timeout, what=f"router holding exactly {len(expected)} routes"
    )


def test_announce_then_withdraw(bird_factory: BirdFactory, short_tmp: Path) -> None:
    router = router_with_speaker(bird_factory, "r1")
    attrs = RouteAttributes(communities=("65000:10",))
    prefixes = hosts(3)

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r1", p): attrs for p in prefixes}))
        await router_has(router, set(prefixes))
        assert {r.communities for r in router.routes().values()} == {("65000:10",)}
        assert {r.as_path for r in router.routes().values()} == {(NODE_ASN,)}
        await engine.apply(table({("r1", p): attrs for p in prefixes[:1]}))
        await router_has(router, {prefixes[0]})
        await engine.apply(table({}))
        await router_has(router, set())

    asyncio.run(run_engine(short_tmp, [peer_for(router, "r1")], scenario))


def test_attribute_changes_are_visible_at_the_router(bird_factory: BirdFactory, short_tmp: Path) -> None:
    # iBGP: routers ignore LOCAL_PREF from eBGP peers, and the engine only sends it to iBGP peers
    router = router_with_speaker(bird_factory, "r1", speaker_asn=ROUTER_ASN)
    prefix = net("10.2.0.1/32")
    before = RouteAttributes(local_pref=150, communities=("65000:1",))
    after = RouteAttributes(local_pref=250, communities=("65000:2", "65000:3"), large_communities=("64512:1:2",))

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r1", prefix): before}))
        route = await eventually(lambda: router.routes().get(prefix), what="route")
        assert (route.local_pref, route.communities, route.large_communities) == (150, ("65000:1",), ())
        await engine.apply(table({("r1", prefix): after}))
        route = await eventually(
            lambda: (r := router.routes().get(prefix)) is not None and r.local_pref == 250 and r, what="new attributes"
        )
        assert route.communities == ("65000:2", "65000:3")
        assert route.large_communities == ("64512:1:2",)

    asyncio.run(run_engine(short_tmp, [peer_for(router, "r1", asn=ROUTER_ASN)], scenario))


def test_rapid_announce_withdraw_announce_ends_as_desired(bird_factory: BirdFactory, short_tmp: Path) -> None:
    router = router_with_speaker(bird_factory, "r1")
    prefixes = hosts(50)
    attrs = RouteAttributes(communities=("65000:7",))
    full = table({("r1", p): attrs for p in prefixes})
    half = table({("r1", p): attrs for p in prefixes[:25]})

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        for step in (full, half, full, half, full):
            await engine.apply(step)
        await router_has(router, set(prefixes))
        for step in (half, full, half):
            await engine.apply(step)
        await router_has(router, set(prefixes[:25]))

    asyncio.run(run_engine(short_tmp, [peer_for(router, "r1")], scenario))


def test_routes_reach_only_their_own_peer(bird_factory: BirdFactory, short_tmp: Path) -> None:
    router_a = router_with_speaker(bird_factory, "a", address="127.0.0.1")
    router_b = router_with_speaker(bird_factory, "b", address="127.0.0.3")
    only_a, only_b, both = net("10.3.0.1/32"), net("10.3.0.2/32"), net("10.3.0.3/32")
    attrs = RouteAttributes()
    routes = {("a", only_a): attrs, ("b", only_b): attrs, ("a", both): attrs, ("b", both): attrs}

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router_a)
        await established(router_b)
        await engine.apply(table(routes))
        await router_has(router_a, {only_a, both})
        await router_has(router_b, {only_b, both})

    asyncio.run(run_engine(short_tmp, [peer_for(router_a, "a"), peer_for(router_b, "b")], scenario))


def test_peer_added_and_removed_while_the_other_session_stays_up(bird_factory: BirdFactory, short_tmp: Path) -> None:
    router_a = router_with_speaker(bird_factory, "a", address="127.0.0.1")
    router_b = router_with_speaker(bird_factory, "b", address="127.0.0.3")
    peer_a, peer_b = peer_for(router_a, "a"), peer_for(router_b, "b")
    attrs = RouteAttributes()
    routes = {("a", p): attrs for p in hosts(20)} | {("b", p): attrs for p in hosts(10, "10.4.0.0")}

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router_a)
        await engine.apply(table(routes))  # b's routes are held until b exists and is up
        await router_has(router_a, set(hosts(20)))
        since_a = router_a.protocol("node").since
        engine_since_a = engine.peer_states()["a"].since

        await engine.set_peers([peer_a, peer_b])
        await established(router_b)
        await router_has(router_b, set(hosts(10, "10.4.0.0")))

        await engine.set_peers([peer_a])
        await eventually(lambda: not router_b.protocol("node").established, what="session b closed")
        await router_has(router_b, set())
        assert set(engine.peer_states()) == {"a"}

        assert router_a.protocol("node").established
        assert router_a.protocol("node").since == since_a, "the other session was reset"
        assert engine.peer_states()["a"].since == engine_since_a
        await router_has(router_a, set(hosts(20)))

    asyncio.run(run_engine(short_tmp, [peer_a], scenario))


def test_peer_added_while_a_large_push_is_still_queued_in_exabgp(bird_factory: BirdFactory, short_tmp: Path) -> None:
    # ExaBGP drops a reload that arrives while routes are queued for a peer; the engine must notice
    router_a = router_with_speaker(bird_factory, "a", address="127.0.0.1")
    router_b = router_with_speaker(bird_factory, "b", address="127.0.0.3")
    peer_a, peer_b = peer_for(router_a, "a"), peer_for(router_b, "b")
    many = hosts(5000)
    routes = {("a", p): RouteAttributes() for p in many} | {("b", net("10.8.0.1/32")): RouteAttributes()}

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router_a)
        await asyncio.gather(engine.apply(table(routes)), engine.set_peers([peer_a, peer_b]))
        await established(router_b)
        await router_has(router_b, {net("10.8.0.1/32")})
        await router_has(router_a, set(many), timeout=30)

    asyncio.run(run_engine(short_tmp, [peer_a], scenario))


def test_peers_can_be_added_to_an_engine_started_without_any(bird_factory: BirdFactory, short_tmp: Path) -> None:
    router = router_with_speaker(bird_factory, "r1")
    prefix = net("10.5.0.1/32")

    async def scenario(engine: ExaBGPEngine) -> None:
        await engine.apply(table({("r1", prefix): RouteAttributes()}))
        await engine.set_peers([peer_for(router, "r1")])
        await established(router)
        await router_has(router, {prefix})

    asyncio.run(run_engine(short_tmp, [], scenario))


def test_session_flap_at_the_router_gets_the_full_table_again(bird_factory: BirdFactory, short_tmp: Path) -> None:
    router = router_with_speaker(bird_factory, "r1")
    prefixes = hosts(200)

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r1", p): RouteAttributes() for p in prefixes}))
        await router_has(router, set(prefixes))
        router.birdc("disable", "node")
        await eventually(lambda: engine.peer_states()["r1"].state is not SessionState.ESTABLISHED, what="session down")
        assert engine.peer_states()["r1"].last_error
        await engine.apply(table({("r1", p): RouteAttributes() for p in prefixes[:150]}))  # held while down
        router.birdc("enable", "node")
        await established(router)
        await router_has(router, set(prefixes[:150]))

    asyncio.run(run_engine(short_tmp, [peer_for(router, "r1")], scenario))


def test_dynamic_external_asn_accepts_the_routers_asn(bird_factory: BirdFactory, short_tmp: Path) -> None:
    router = router_with_speaker(bird_factory, "r1")
    prefix = net("10.10.0.1/32")
    dynamic = Peer(
        name="r1",
        my_asn=NODE_ASN,
        dynamic_asn=DynamicASN.EXTERNAL,  # ExaBGP `peer-as auto`: its events then carry `None` for the ASN
        address=ip(router.address),
        port=router.port,
        source_address=ip(SPEAKER),
        hold_time=9,
    )

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        await eventually(lambda: engine.peer_states()["r1"].state is SessionState.ESTABLISHED, what="engine state")
        await engine.apply(table({("r1", prefix): RouteAttributes()}))
        await router_has(router, {prefix})

    asyncio.run(run_engine(short_tmp, [dynamic], scenario))


def test_md5_session_needs_the_right_password(bird_factory: BirdFactory, short_tmp: Path) -> None:
    right = router_with_speaker(bird_factory, "right", address="127.0.0.1", password="s3cret pass")
    wrong = router_with_speaker(bird_factory, "wrong", address="127.0.0.3", password="the-real-one")
    prefix = net("10.6.0.1/32")
    routes = {("right", prefix): RouteAttributes(), ("wrong", prefix): RouteAttributes()}

    async def scenario(engine: ExaBGPEngine) -> None:
        await engine.apply(table(routes))
        await established(right)
        await router_has(right, {prefix})
        await asyncio.sleep(3)  # plenty for a loopback session to come up, were it going to
        assert not wrong.protocol("node").established
        assert wrong.routes() == {}
        assert engine.peer_states()["wrong"].state is not SessionState.ESTABLISHED

    peers = [peer_for(right, "right", password="s3cret pass"), peer_for(wrong, "wrong", password="not-it")]
    asyncio.run(run_engine(short_tmp, peers, scenario))


def test_killed_exabgp_is_restarted_and_the_router_gets_every_route_again(
    bird_factory: BirdFactory, short_tmp: Path
) -> None:
    router = router_with_speaker(bird_factory, "r1")
    prefixes = hosts(300)

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r1", p): RouteAttributes() for p in prefixes}))
        await router_has(router, set(prefixes))
        first = engine.child_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: engine.child_pid not in (None, first), what="a new ExaBGP child")
        await established(router)
        await router_has(router, set(prefixes))
        assert engine.peer_states()["r1"].state is SessionState.ESTABLISHED

    asyncio.run(run_engine(short_tmp, [peer_for(router, "r1")], scenario))


def test_graceful_restart_keeps_routes_at_the_router_across_an_exabgp_restart(
    bird_factory: BirdFactory, short_tmp: Path
) -> None:
    router = router_with_speaker(bird_factory, "r1")
    kept = hosts(100)
    dropped = net("10.9.9.9/32")  # withdrawn while ExaBGP is down: End-of-RIB must flush it

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r1", p): RouteAttributes() for p in [*kept, dropped]}))
        await router_has(router, {*kept, dropped})
        first = engine.child_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await engine.apply(table({("r1", p): RouteAttributes() for p in kept}))
        seen: list[set[IPNetwork]] = []
        while engine.child_pid in (None, first) or engine.peer_states()["r1"].state is not SessionState.ESTABLISHED:
            seen.append(set(router.routes()))  # the router keeps the stale routes meanwhile
            assert len(seen) < 300, "ExaBGP did not come back"
            await asyncio.sleep(0.05)
        assert all(set(kept) <= routes for routes in seen), "routes dipped at the router during the restart"
        await router_has(router, set(kept))  # the stale `dropped` is gone: End-of-RIB was sent

    asyncio.run(run_engine(short_tmp, [peer_for(router, "r1", graceful_restart=True)], scenario))


def test_a_restarted_speaker_sends_nothing_before_its_first_table(bird_factory: BirdFactory, short_tmp: Path) -> None:
    """A new process's session may come up before it has read its cluster: End-of-RIB then (over an
    empty table) would make a graceful-restart router flush every stale route it kept for us."""
    router = router_with_speaker(bird_factory, "r1")
    kept = hosts(20)
    peers = [peer_for(router, "r1", graceful_restart=True)]

    async def first(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r1", p): RouteAttributes() for p in kept}))
        await router_has(router, set(kept))

    async def restarted(engine: ExaBGPEngine) -> None:
        await eventually(lambda: engine.peer_states()["r1"].state is SessionState.ESTABLISHED, timeout=15, what="session up")
        for _ in range(20):  # a second with the session up and no table given
            assert set(router.routes()) == set(kept), "routes flushed before the first table"
            await asyncio.sleep(0.05)
        await engine.apply(table({("r1", p): RouteAttributes() for p in kept[:5]}))
        await router_has(router, set(kept[:5]))  # End-of-RIB after the first table flushes the rest

    asyncio.run(run_engine(short_tmp, peers, first))  # stop() without withdraw: the router keeps them stale
    asyncio.run(run_engine(short_tmp, peers, restarted))


def test_stop_with_withdraw_leaves_no_stale_routes_at_a_graceful_restart_router(
    bird_factory: BirdFactory, short_tmp: Path
) -> None:
    router = router_with_speaker(bird_factory, "r1")
    prefixes = hosts(50)
    engine = ExaBGPEngine(workdir=short_tmp / "exabgp", router_id=ROUTER_ID, tuning=TUNING)

    async def scenario() -> None:
        try:
            await engine.start([peer_for(router, "r1", graceful_restart=True)])
            await established(router)
            await engine.apply(table({("r1", p): RouteAttributes() for p in prefixes}))
            await router_has(router, set(prefixes))
        finally:
            await engine.stop(withdraw=True)
        assert router.routes() == {}  # without the withdrawal, the router would keep them for 120 s

    asyncio.run(scenario())


def test_ipv6_session_on_loopback(bird_factory: BirdFactory, short_tmp: Path) -> None:
    router = router_with_speaker(bird_factory, "r6", address="::1", source="::1")
    prefixes = [net("2001:db8:1::1/128"), net("2001:db8:1::2/128")]

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r6", p): RouteAttributes(communities=("65000:6",)) for p in prefixes}))
        await router_has(router, set(prefixes))
        assert {r.next_hop for r in router.routes().values()} == {"::1"}

    asyncio.run(run_engine(short_tmp, [peer_for(router, "r6", source="::1")], scenario))


def test_dual_stack_ipv4_session_carries_ipv6_with_the_configured_next_hop(
    bird_factory: BirdFactory, short_tmp: Path
) -> None:
    router = router_with_speaker(bird_factory, "r1")
    v4, v6 = net("10.7.0.1/32"), net("2001:db8:7::1/128")

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r1", v4): RouteAttributes(), ("r1", v6): RouteAttributes()}))
        await router_has(router, {v4, v6})
        assert router.routes()[v6].next_hop == "2001:db8:ff::1"

    peer = peer_for(router, "r1", dual_stack=True)
    asyncio.run(run_engine(short_tmp, [peer], scenario, ipv6_next_hop=ipaddress.IPv6Address("2001:db8:ff::1")))


def test_a_next_hop_change_in_the_same_pass_as_route_changes_ends_as_desired(
    bird_factory: BirdFactory, short_tmp: Path
) -> None:
    """The node's IPv6 address changes while, in the same pass, one IPv6 route goes away and another
    changes its community: the kept route moves to the new hop, the changed one arrives with both its
    new community and the new hop, the removed one is withdrawn (with the hop it carried); IPv4 stays."""
    router = router_with_speaker(bird_factory, "r1")
    v4, kept, changed, removed = (net(p) for p in ("10.7.0.1/32", "2001:db8:7::1/128", "2001:db8:7::2/128",
                                                      "2001:db8:7::3/128"))  # fmt: skip
    plain, tagged = RouteAttributes(), RouteAttributes(communities=("64500:9",))

    async def scenario(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r1", p): plain for p in (v4, kept, changed, removed)}))
        await router_has(router, {v4, kept, changed, removed})
        since = router.protocols()["node"].since
        engine.set_next_hops(None, ipaddress.IPv6Address("2001:db8:ff::9"))
        await engine.apply(table({("r1", v4): plain, ("r1", kept): plain, ("r1", changed): tagged}))
        await router_has(router, {v4, kept, changed})
        routes = router.routes()
        assert routes[kept].next_hop == routes[changed].next_hop == "2001:db8:ff::9"
        assert routes[changed].communities == ("64500:9",) and routes[kept].communities == ()
        engine.set_next_hops(None, None)  # no IPv6 address any more: the IPv6 routes go, IPv4 stays
        await engine.apply(table({("r1", v4): plain, ("r1", kept): plain, ("r1", changed): tagged}))
        await router_has(router, {v4})
        assert router.protocols()["node"].since == since  # never a session reset

    peer = peer_for(router, "r1", dual_stack=True)
    asyncio.run(run_engine(short_tmp, [peer], scenario, ipv6_next_hop=ipaddress.IPv6Address("2001:db8:ff::1")))


def _without_source(peer: Peer) -> Peer:
    """The usual BGPPeer: no sourceAddress (one BGPPeer serves every node, so it cannot name one)."""
    return Peer(**{**peer.__dict__, "source_address": None})


def _two_routers(make: BirdFactory) -> tuple[BirdRouter, BirdRouter]:
    first = make("r1", address="127.0.0.1")
    first.add_speaker(Speaker(name="node", address="127.0.0.1", asn=NODE_ASN)).start()
    second = make("r2", address="127.0.0.3", asn=64514)
    second.add_speaker(Speaker(name="node", address="127.0.0.1", asn=NODE_ASN)).start()
    return first, second


def test_an_unchanged_neighbour_keeps_getting_updates_after_a_reload_adds_a_peer(bird_factory: BirdFactory, short_tmp: Path) -> None:
    """ExaBGP gives unchanged neighbours fresh configuration objects on reload; with `local-address
    auto` their local address is then empty and every `next-hop self` to them is refused until the
    session reconnects. The engine renders the kernel's source address instead."""
    r1, r2 = _two_routers(bird_factory)
    first, second = _without_source(peer_for(r1, "r1")), _without_source(peer_for(r2, "r2"))
    prefixes = hosts(3)
    attrs = RouteAttributes()

    async def scenario(engine: ExaBGPEngine) -> None:
        await engine.apply(table({("r1", prefixes[0]): attrs}))
        await router_has(r1, {prefixes[0]})
        since = r1.protocol("node").since
        await engine.set_peers([first, second])
        await engine.apply(table({("r1", prefixes[0]): attrs, ("r1", prefixes[1]): attrs, ("r2", prefixes[1]): attrs}))
        await router_has(r1, {prefixes[0], prefixes[1]})
        await router_has(r2, {prefixes[1]})
        assert r1.protocol("node").since == since  # r1's session was not reset to get there
        assert engine.unacknowledged() == {}

    asyncio.run(run_engine(short_tmp, [first], scenario))


def test_a_refused_update_is_kept_as_unsent_and_sent_again_with_backoff(
    bird_factory: BirdFactory, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `local-address auto` (today's ExaBGP failure mode, forced here), the refused announcement
    is not recorded as sent: it is counted, retried with growing delays, and reaches the router once
    the session reconnects and ExaBGP accepts it."""
    from metallb_bgp.exabgp import engine as engine_module

    monkeypatch.setattr(engine_module, "route_source", lambda _address: None)
    r1, r2 = _two_routers(bird_factory)
    first, second = _without_source(peer_for(r1, "r1")), _without_source(peer_for(r2, "r2"))
    prefixes = hosts(3)
    attrs = RouteAttributes()
    refused: list[tuple[str, int]] = []
    tuning = EngineTuning(restart_backoff_initial=0.2, ack_timeout=20.0, relay_connect_timeout=10.0,
                          retry_backoff_initial=0.2, retry_backoff_max=1.0)  # fmt: skip

    async def scenario(engine: ExaBGPEngine) -> None:
        await engine.apply(table({("r1", prefixes[0]): attrs}))
        await router_has(r1, {prefixes[0]})
        await engine.set_peers([first, second])
        await established(r2)
        await engine.apply(table({("r1", prefixes[0]): attrs, ("r1", prefixes[1]): attrs}))
        await eventually(lambda: engine.unacknowledged().get("r1", 0) >= 3, timeout=10, what="refusals retried")
        assert prefixes[1] not in r1.routes()
        assert ("r1", prefixes[1]) not in engine._sent  # never claimed as sent
        r1.birdc("restart", "node")  # the session reconnects: ExaBGP learns its local address again
        await router_has(r1, {prefixes[0], prefixes[1]}, timeout=20)
        assert refused and all(peer == "r1" for peer, _count in refused)

    asyncio.run(run_engine(short_tmp, [first], scenario, tuning=tuning, on_refused=lambda p, n: refused.append((p, n))))


def test_a_router_that_resets_the_session_is_not_stormed(short_tmp: Path, bird_factory: BirdFactory) -> None:
    """FRR resets the session (NOTIFICATION 3/8) on every UPDATE whose next hop is in 127/8. ExaBGP alone
    reconnects at once, ~18 sessions a second; the engine holds the neighbour back, doubling the wait
    with each reset, and names the NOTIFICATION in the log and in the peer's state."""
    from frr import FrrRouter

    router = FrrRouter(short_tmp / "frr", asn=ROUTER_ASN).add_neighbor(SPEAKER, NODE_ASN).start()
    notified: list[tuple[str, str, int, int]] = []
    tuning = EngineTuning(restart_backoff_initial=0.2, ack_timeout=20.0, relay_connect_timeout=10.0,
                          reset_backoff_initial=0.5, reset_backoff_max=4.0)  # fmt: skip
    the_peer = Peer(name="frr", my_asn=NODE_ASN, peer_asn=ROUTER_ASN, address=ip(router.address), port=router.port,
                    source_address=ip(SPEAKER), hold_time=9)  # fmt: skip
    window = 10.0

    async def scenario(engine: ExaBGPEngine) -> None:
        await engine.apply(table({("frr", prefix): RouteAttributes() for prefix in hosts(2)}))
        await eventually(lambda: len(notified) >= 1, timeout=15, what="the router's first NOTIFICATION")
        before = router.neighbor(SPEAKER).get("connectionsEstablished", 0)
        await asyncio.sleep(window)
        sessions = router.neighbor(SPEAKER).get("connectionsEstablished", 0) - before
        # the waits are 0.5, 1, 2, 4, 4 s (less jitter): about five resets in 10 s, against ~180 unheld
        assert 2 <= sessions <= 12, sessions
        state = engine.peer_states()["frr"]
        assert state.last_error is not None and "code 3 subcode 8" in state.last_error
        assert {(p, d, c, s) for p, d, c, s in notified} >= {("frr", "receive", 3, 8)}

    try:
        asyncio.run(run_engine(short_tmp, [the_peer], scenario, tuning=tuning,
                               on_notification=lambda *args: notified.append(args)))  # fmt: skip
    finally:
        router.stop()


def test_an_offered_table_is_announced_withdrawing_nothing_and_end_of_rib_waits_for_the_first_apply(
    bird_factory: BirdFactory, short_tmp: Path
) -> None:
    """A restarting speaker offers what its lists justify so far: the router gets those routes at once
    (new attributes too), keeps every stale one (no End-of-RIB, no withdrawal, even when a later offer
    is smaller), and only the first `apply` ends the RIB, flushing what the whole table no longer has."""
    router = router_with_speaker(bird_factory, "r1")
    old, new = hosts(20), hosts(3, base="10.2.0.0")
    peers = [peer_for(router, "r1", graceful_restart=True)]
    marked = RouteAttributes(communities=("65000:7",))

    async def first(engine: ExaBGPEngine) -> None:
        await established(router)
        await engine.apply(table({("r1", p): RouteAttributes() for p in old}))
        await router_has(router, set(old))

    async def restarted(engine: ExaBGPEngine) -> None:
        engine.offer(table({("r1", p): marked for p in old[:5] + new}))
        await eventually(lambda: set(router.routes()) == set(old + new), timeout=15, what="offered routes beside the stale")
        await eventually(lambda: all(router.routes()[p].communities == ("65000:7",) for p in old[:5]), timeout=5,
                         what="the offered attributes")  # fmt: skip
        engine.offer(table({("r1", p): marked for p in new[:1]}))  # smaller: withdraws nothing
        for _ in range(20):
            assert set(router.routes()) == set(old + new), "an offer withdrew, or End-of-RIB flushed, a route"
            await asyncio.sleep(0.05)
        await engine.apply(table({("r1", p): marked for p in old[:5] + new}))
        await router_has(router, set(old[:5] + new))  # End-of-RIB after the first apply flushes the stale rest
        with pytest.raises(RuntimeError):
            engine.offer(table({}))

    asyncio.run(run_engine(short_tmp, peers, first))  # stop() without withdraw: the router keeps them stale
    asyncio.run(run_engine(short_tmp, peers, restarted))
