"""desired_routes and diff: what one node tells its routers, and the minimal change between two answers."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from builders import endpoint, endpoint_slice, node, selector, service
from hypothesis import given, settings
from hypothesis import strategies as st

from metallb_bgp.api.core import EndpointSlice, Node, Service
from metallb_bgp.api.selectors import LabelSelector, Operator, Requirement
from metallb_bgp.core.config.model import Advertisement, Community, Config, Peer, Pool
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress, IPNetwork, covering_prefix
from metallb_bgp.core.routes.desired import desired_routes, index_endpoint_slices
from metallb_bgp.core.routes.node import EXCLUDE_LABEL, PoolIndex, node_context, node_peers
from metallb_bgp.core.routes.service import prefix_of, service_routes
from metallb_bgp.core.routes.table import RouteAttributes, RouteTable, SkipReason, apply_diff, combine, diff

# --- building a cluster ----------------------------------------------------------------------------------


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def peer(name: str, address: str = "192.0.2.1", node_selectors: tuple[LabelSelector, ...] = ()) -> Peer:
    return Peer(name=name, my_asn=64500, peer_asn=64501, address=ip(address), node_selectors=node_selectors)


def pool(name: str = "default", *cidrs: str) -> Pool:
    return Pool(name=name, cidrs=tuple(net(c) for c in (cidrs or ("198.51.100.0/24",))))


def advertisement(name: str = "adv", pools: tuple[str, ...] = ("default",), **kwargs: Any) -> Advertisement:
    return Advertisement(name=name, pools=frozenset(pools), **kwargs)


def config(
    *,
    pools: tuple[Pool, ...] = (pool(),),
    peers: tuple[Peer, ...] = (peer("r1"), peer("r2", "192.0.2.2")),
    advertisements: tuple[Advertisement, ...] = (advertisement(),),
) -> Config:
    return Config(pools={p.name: p for p in pools}, peers={p.name: p for p in peers}, advertisements=advertisements)


WEB = ServiceKey("default", "web")


def routes_for(
    cfg: Config,
    services: list[Service],
    slices: list[EndpointSlice],
    *,
    assignments: Mapping[ServiceKey, tuple[str, ...]] | None = None,
    nodes: list[Node] | None = None,
    node_name: str = "n1",
    load_balancer_class: str | None = None,
) -> RouteTable:
    if assignments is None:
        assignments = {WEB: ("198.51.100.10",)}
    return desired_routes(
        cfg,
        assignments={key: tuple(ip(a) for a in ips) for key, ips in assignments.items()},
        services=services,
        endpoint_slices=slices,
        nodes={n.name: n for n in (nodes if nodes is not None else [node("n1").model, node("n2").model])},
        node_name=node_name,
        load_balancer_class=load_balancer_class,
    )


def prefixes_to(table: RouteTable, peer_name: str) -> set[str]:
    return {str(prefix) for (p, prefix) in table.routes if p == peer_name}


HOST = net("198.51.100.10/32")
PLAIN = RouteAttributes()


# --- which node announces: endpoints -----------------------------------------------------------------------


def test_etp_cluster_service_with_serving_endpoint_is_announced_to_every_peer() -> None:
    table = routes_for(config(), [service("web").model], [endpoint_slice("web", endpoint("n2")).model])
    assert table.routes == {("r1", HOST): PLAIN, ("r2", HOST): PLAIN}
    assert table.services == {HOST: (WEB,)}
    assert table.skipped == {}


def test_etp_cluster_without_serving_endpoint_anywhere_is_skipped_no_endpoints() -> None:
    table = routes_for(config(), [service("web").model], [endpoint_slice("web", endpoint("n1", ready=False)).model])
    assert table.routes == {}
    assert table.skipped[WEB].reason is SkipReason.NO_ENDPOINTS


def test_etp_cluster_without_endpoint_slices_is_skipped_no_endpoints() -> None:
    table = routes_for(config(), [service("web").model], [])
    assert table.skipped[WEB].reason is SkipReason.NO_ENDPOINTS
    assert table.skipped[WEB].detail


def test_etp_local_announces_only_on_node_with_serving_endpoint() -> None:
    slices = [endpoint_slice("web", endpoint("n2")).model]
    on_n1 = routes_for(config(), [service("web", traffic_policy="Local").model], slices, node_name="n1")
    on_n2 = routes_for(config(), [service("web", traffic_policy="Local").model], slices, node_name="n2")
    assert on_n1.routes == {}
    assert on_n1.skipped[WEB].reason is SkipReason.NO_ENDPOINTS
    assert "n1" in on_n1.skipped[WEB].detail
    assert prefixes_to(on_n2, "r1") == {"198.51.100.10/32"}


def test_etp_local_withdraws_when_last_local_endpoint_terminates() -> None:
    svc = service("web", traffic_policy="Local").model
    before = routes_for(config(), [svc], [endpoint_slice("web", endpoint("n1"), endpoint("n2")).model])
    gone = endpoint("n1", ready=False, serving=False, terminating=True)
    after = routes_for(config(), [svc], [endpoint_slice("web", gone, endpoint("n2")).model])
    change = diff(before, after)
    assert change.announce == ()
    assert {(p, prefix) for b in change.withdraw for p in b.peers for prefix in b.prefixes} == {
        ("r1", HOST),
        ("r2", HOST),
    }
    assert after.skipped[WEB].reason is SkipReason.NO_ENDPOINTS


def test_terminating_but_serving_endpoint_keeps_route() -> None:
    draining = endpoint("n1", ready=False, serving=True, terminating=True)
    table = routes_for(config(), [service("web", traffic_policy="Local").model], [endpoint_slice("web", draining).model])
    assert prefixes_to(table, "r1") == {"198.51.100.10/32"}


def test_endpoint_with_ready_unset_counts_as_serving() -> None:
    table = routes_for(config(), [service("web").model], [endpoint_slice("web", endpoint("n1", ready=None)).model])
    assert HOST in table.services


def test_endpoint_without_node_name_is_not_local_but_counts_for_cluster() -> None:
    slices = [endpoint_slice("web", endpoint(None)).model]
    assert routes_for(config(), [service("web", traffic_policy="Local").model], slices).routes == {}
    assert routes_for(config(), [service("web").model], slices).routes != {}


def test_service_without_selector_follows_its_endpoint_slices() -> None:
    manual = service("web", selector=None).model
    assert manual.spec.selector is None
    assert routes_for(config(), [manual], [endpoint_slice("web", endpoint("n1")).model]).routes != {}
    assert routes_for(config(), [manual], []).skipped[WEB].reason is SkipReason.NO_ENDPOINTS


def test_endpoints_of_a_same_named_service_in_another_namespace_do_not_count() -> None:
    table = routes_for(config(), [service("web").model], [endpoint_slice("web", endpoint("n1"), namespace="other").model])
    assert table.skipped[WEB].reason is SkipReason.NO_ENDPOINTS


def test_endpoints_spread_over_several_slices_are_all_considered() -> None:
    slices = [
        endpoint_slice("web", endpoint("n2"), name="web-1").model,
        endpoint_slice("web", endpoint("n1", serving=False), endpoint("n1", ready=True), name="web-2").model,
    ]
    assert routes_for(config(), [service("web", traffic_policy="Local").model], slices).routes != {}


# --- which peers --------------------------------------------------------------------------------------------


def test_node_peers_are_those_whose_node_selectors_match() -> None:
    cfg = config(
        peers=(
            peer("tor-a", node_selectors=(selector(rack="a"),)),
            peer("core"),
            peer("tor-b", node_selectors=(selector(rack="b"),)),
        )
    )
    assert [p.name for p in node_peers(cfg, node("n1", labels={"rack": "a"}).model)] == ["core", "tor-a"]


def test_unknown_node_has_only_peers_without_node_selectors() -> None:
    cfg = config(peers=(peer("tor-a", node_selectors=(selector(rack="a"),)), peer("core")))
    assert [p.name for p in node_peers(cfg, None)] == ["core"]


def test_routes_go_only_to_peers_of_this_node() -> None:
    cfg = config(
        peers=(peer("tor-a", node_selectors=(selector(rack="a"),)), peer("tor-b", node_selectors=(selector(rack="b"),)))
    )
    table = routes_for(cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model], nodes=[node("n1", labels={"rack": "a"}).model])
    assert set(table.routes) == {("tor-a", HOST)}


def test_advertisement_peers_limits_routes_to_named_peer() -> None:
    cfg = config(advertisements=(advertisement(peers=frozenset({"r2"})),))
    table = routes_for(cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model])
    assert set(table.routes) == {("r2", HOST)}


def test_advertisement_naming_no_peer_of_this_node_is_skipped_no_peers() -> None:
    cfg = config(advertisements=(advertisement(peers=frozenset({"elsewhere"})),))
    table = routes_for(cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model])
    assert table.routes == {}
    assert table.skipped[WEB].reason is SkipReason.NO_PEERS
    assert "adv" in table.skipped[WEB].detail


def test_node_without_peers_skips_every_service_no_peers() -> None:
    table = routes_for(config(peers=()), [service("web").model], [endpoint_slice("web", endpoint("n1")).model])
    assert table.skipped[WEB].reason is SkipReason.NO_PEERS


# --- which advertisements -----------------------------------------------------------------------------------


def test_pool_without_advertisement_is_not_selected() -> None:
    table = routes_for(config(advertisements=()), [service("web").model], [endpoint_slice("web", endpoint("n1")).model])
    assert table.skipped[WEB].reason is SkipReason.NOT_SELECTED
    assert "pool default" in table.skipped[WEB].detail


def test_advertisement_node_selector_limits_announcing_nodes() -> None:
    cfg = config(advertisements=(advertisement(node_selectors=(selector(bgp="yes"),)),))
    slices = [endpoint_slice("web", endpoint("n1")).model]
    nodes = [node("n1", labels={"bgp": "yes"}).model, node("n2").model]
    assert routes_for(cfg, [service("web").model], slices, nodes=nodes, node_name="n1").routes != {}
    on_n2 = routes_for(cfg, [service("web").model], slices, nodes=nodes, node_name="n2")
    assert on_n2.skipped[WEB].reason is SkipReason.NOT_SELECTED
    assert "n2" in on_n2.skipped[WEB].detail


def test_advertisement_service_selector_limits_services() -> None:
    cfg = config(advertisements=(advertisement(service_selectors=(selector(expose="bgp"),)),))
    other = ServiceKey("default", "other")
    table = routes_for(
        cfg,
        [service("web", labels={"expose": "bgp"}).model, service("other").model],
        [endpoint_slice("web", endpoint("n1")).model, endpoint_slice("other", endpoint("n1")).model],
        assignments={WEB: ("198.51.100.10",), other: ("198.51.100.11",)},
    )
    assert table.services == {HOST: (WEB,)}
    assert table.skipped[other].reason is SkipReason.NOT_SELECTED


def test_advertisement_of_another_pool_does_not_apply() -> None:
    cfg = config(pools=(pool(), pool("other", "203.0.113.0/24")), advertisements=(advertisement(pools=("other",)),))
    table = routes_for(cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model])
    assert table.skipped[WEB].reason is SkipReason.NOT_SELECTED


# --- which services -----------------------------------------------------------------------------------------


def test_service_without_assigned_ip_is_skipped_no_ip() -> None:
    table = routes_for(config(), [service("web").model], [endpoint_slice("web", endpoint("n1")).model], assignments={})
    assert table.skipped[WEB].reason is SkipReason.NO_IP


def test_ip_outside_every_pool_is_skipped_no_pool() -> None:
    table = routes_for(
        config(), [service("web").model], [endpoint_slice("web", endpoint("n1")).model], assignments={WEB: ("192.0.2.99",)}
    )
    assert table.skipped[WEB].reason is SkipReason.NO_POOL
    assert "192.0.2.99" in table.skipped[WEB].detail


def test_services_that_are_not_load_balancers_are_ignored() -> None:
    table = routes_for(config(), [service("web", type_="ClusterIP").model], [endpoint_slice("web", endpoint("n1")).model])
    assert table == RouteTable()


def test_service_of_another_load_balancer_class_without_assignment_is_ignored() -> None:
    table = routes_for(config(), [service("web", load_balancer_class="other.io/lb").model], [], assignments={})
    assert table.skipped == {}
    mine = routes_for(
        config(), [service("web", load_balancer_class="me.io/lb").model], [], assignments={}, load_balancer_class="me.io/lb"
    )
    assert mine.skipped[WEB].reason is SkipReason.NO_IP


def test_assignment_without_service_is_ignored() -> None:
    table = routes_for(config(), [], [], assignments={WEB: ("198.51.100.10",)})
    assert table == RouteTable()


def test_dual_stack_service_announces_both_families() -> None:
    cfg = config(pools=(pool("default", "198.51.100.0/24", "2001:db8::/64"),))
    table = routes_for(
        cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model], assignments={WEB: ("198.51.100.10", "2001:db8::10")}
    )
    assert prefixes_to(table, "r1") == {"198.51.100.10/32", "2001:db8::10/128"}


# --- node exclusions ----------------------------------------------------------------------------------------


def test_excluded_node_announces_nothing() -> None:
    nodes = [node("n1", labels={EXCLUDE_LABEL: ""}).model]
    table = routes_for(config(), [service("web").model], [endpoint_slice("web", endpoint("n1")).model], nodes=nodes)
    assert table.routes == {}
    assert table.skipped[WEB].reason is SkipReason.EXCLUDED_NODE
    assert node_peers(config(), nodes[0]) != ()  # the sessions stay up


def test_node_with_network_unavailable_announces_nothing() -> None:
    nodes = [node("n1", conditions={"NetworkUnavailable": "True"}).model]
    table = routes_for(config(), [service("web").model], [endpoint_slice("web", endpoint("n1")).model], nodes=nodes)
    assert table.skipped[WEB].reason is SkipReason.NETWORK_UNAVAILABLE


def test_node_with_network_available_announces() -> None:
    nodes = [node("n1", conditions={"NetworkUnavailable": "False", "Ready": "True"}).model]
    assert routes_for(config(), [service("web").model], [endpoint_slice("web", endpoint("n1")).model], nodes=nodes).routes != {}


def test_unknown_node_announces_as_a_node_without_labels() -> None:
    cfg = config(
        advertisements=(advertisement(), advertisement("racked", node_selectors=(selector(rack="a"),), local_pref=200))
    )
    table = routes_for(cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model], nodes=[])
    assert table.routes == {("r1", HOST): PLAIN, ("r2", HOST): PLAIN}


# --- prefixes and attributes --------------------------------------------------------------------------------


def test_aggregation_announces_covering_prefix_once() -> None:
    cfg = config(advertisements=(advertisement(aggregation_length=24),))
    keys = [ServiceKey("default", n) for n in ("a", "b", "c")]
    table = routes_for(
        cfg,
        [service(k.name).model for k in keys],
        [endpoint_slice(k.name, endpoint("n1")).model for k in keys],
        assignments={k: (f"198.51.100.{i + 1}",) for i, k in enumerate(keys)},
    )
    covering = net("198.51.100.0/24")
    assert table.routes == {("r1", covering): PLAIN, ("r2", covering): PLAIN}
    assert table.services == {covering: tuple(keys)}


def test_aggregated_prefix_stands_only_for_services_that_announce() -> None:
    cfg = config(advertisements=(advertisement(aggregation_length=24),))
    a, b = ServiceKey("default", "a"), ServiceKey("default", "b")
    table = routes_for(
        cfg,
        [service("a", traffic_policy="Local").model, service("b", traffic_policy="Local").model],
        [endpoint_slice("a", endpoint("n1")).model, endpoint_slice("b", endpoint("n2")).model],
        assignments={a: ("198.51.100.1",), b: ("198.51.100.2",)},
    )
    assert table.services == {net("198.51.100.0/24"): (a,)}
    assert table.skipped[b].reason is SkipReason.NO_ENDPOINTS


def test_service_with_two_ips_in_one_covering_prefix_stands_once_for_it() -> None:
    cfg = config(advertisements=(advertisement(aggregation_length=24),))
    table = routes_for(
        cfg,
        [service("web").model],
        [endpoint_slice("web", endpoint("n1")).model],
        assignments={WEB: ("198.51.100.1", "198.51.100.2")},
    )
    assert table.services == {net("198.51.100.0/24"): (WEB,)}
    assert len(table.routes) == 2


def test_ipv6_aggregation_uses_its_own_length() -> None:
    cfg = config(
        pools=(pool("default", "198.51.100.0/24", "2001:db8::/64"),),
        advertisements=(advertisement(aggregation_length=32, aggregation_length_v6=64),),
    )
    table = routes_for(
        cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model], assignments={WEB: ("198.51.100.10", "2001:db8::10")}
    )
    assert prefixes_to(table, "r1") == {"198.51.100.10/32", "2001:db8::/64"}


def test_two_advertisements_with_different_aggregation_announce_both_prefixes() -> None:
    cfg = config(
        advertisements=(
            advertisement("host", local_pref=100),
            advertisement("agg", aggregation_length=24, local_pref=100),
        )
    )
    table = routes_for(cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model])
    assert prefixes_to(table, "r1") == {"198.51.100.10/32", "198.51.100.0/24"}


def test_local_pref_and_communities_come_from_the_advertisement() -> None:
    communities = frozenset({Community("65000:100"), Community("65000:2:3", large=True)})
    cfg = config(advertisements=(advertisement(local_pref=150, communities=communities),))
    table = routes_for(cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model])
    assert table.routes[("r1", HOST)] == RouteAttributes(150, ("65000:100",), ("65000:2:3",))


def test_communities_from_two_advertisements_are_merged() -> None:
    cfg = config(
        advertisements=(
            advertisement("a", communities=frozenset({Community("65000:100"), Community("1:2:3", large=True)})),
            advertisement(
                "b", communities=frozenset({Community("65000:20"), Community("65000:100")}), peers=frozenset({"r1"})
            ),
        )
    )
    table = routes_for(cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model])
    assert table.routes[("r1", HOST)] == RouteAttributes(None, ("65000:20", "65000:100"), ("1:2:3",))
    assert table.routes[("r2", HOST)] == RouteAttributes(None, ("65000:100",), ("1:2:3",))


def test_services_sharing_a_covering_prefix_merge_their_advertisements_communities() -> None:
    cfg = config(
        advertisements=(
            advertisement(
                "gold",
                aggregation_length=24,
                communities=frozenset({Community("65000:1")}),
                service_selectors=(selector(tier="gold"),),
            ),
            advertisement(
                "rest",
                aggregation_length=24,
                communities=frozenset({Community("65000:2")}),
                service_selectors=(selector(tier="rest"),),
            ),
        )
    )
    a, b = ServiceKey("default", "a"), ServiceKey("default", "b")
    table = routes_for(
        cfg,
        [service("a", labels={"tier": "gold"}).model, service("b", labels={"tier": "rest"}).model],
        [endpoint_slice("a", endpoint("n1")).model, endpoint_slice("b", endpoint("n1")).model],
        assignments={a: ("198.51.100.1",), b: ("198.51.100.2",)},
    )
    assert table.routes[("r1", net("198.51.100.0/24"))].communities == ("65000:1", "65000:2")


def test_conflicting_local_prefs_take_the_highest() -> None:
    cfg = config(
        advertisements=(advertisement("a", local_pref=100), advertisement("b", local_pref=300), advertisement("c"))
    )
    table = routes_for(cfg, [service("web").model], [endpoint_slice("web", endpoint("n1")).model])
    assert table.routes[("r1", HOST)].local_pref == 300


# --- composition ------------------------------------------------------------------------------------------


def test_nodes_may_be_given_as_a_sequence() -> None:
    cfg = config()
    as_list = desired_routes(
        cfg,
        assignments={WEB: (ip("198.51.100.10"),)},
        services=[service("web").model],
        endpoint_slices=[endpoint_slice("web", endpoint("n1")).model],
        nodes=[node("n1", labels={EXCLUDE_LABEL: "true"}).model],
        node_name="n1",
    )
    assert as_list.skipped[WEB].reason is SkipReason.EXCLUDED_NODE


def test_table_does_not_depend_on_input_order() -> None:
    keys = [ServiceKey("ns", f"s{i}") for i in range(6)]
    services = [service(k.name, namespace="ns").model for k in keys]
    slices = [endpoint_slice(k.name, endpoint("n1"), namespace="ns").model for k in keys[:4]]
    assignments = {k: ("198.51.100.7",) for k in keys}  # all in one prefix: services tuple order matters
    one = routes_for(config(), services, slices, assignments=assignments)
    two = routes_for(config(), services[::-1], slices[::-1], assignments=assignments)
    assert one == two
    assert list(one.services[net("198.51.100.7/32")]) == sorted(keys[:4])


def test_per_service_contributions_compose_into_the_table() -> None:
    """A reconciler recomputes one changed service and recombines; the result equals a full recompute."""
    cfg = config()
    keys = [ServiceKey("default", n) for n in ("a", "b")]
    services = {k: service(k.name, traffic_policy="Local").model for k in keys}
    assignments = {keys[0]: (ip("198.51.100.1"),), keys[1]: (ip("198.51.100.2"),)}
    slices = [endpoint_slice("a", endpoint("n1")).model, endpoint_slice("b", endpoint("n1")).model]
    context = node_context(cfg, "n1", node("n1").model)
    index = index_endpoint_slices(slices)
    cached = {
        k: service_routes(context, services[k], assignments[k], index.get((k.namespace, k.name), ())) for k in keys
    }

    slices[1] = endpoint_slice("b", endpoint("n2")).model  # b's only endpoint moves away
    cached[keys[1]] = service_routes(context, services[keys[1]], assignments[keys[1]], [slices[1]])
    incremental = combine(sorted(cached.items()))
    full = desired_routes(
        cfg,
        assignments=assignments,
        services=list(services.values()),
        endpoint_slices=slices,
        nodes=[node("n1").model],
        node_name="n1",
    )
    assert incremental == full
    assert full.skipped[keys[1]].reason is SkipReason.NO_ENDPOINTS


def test_pool_index_finds_the_pool_of_an_ip() -> None:
    cfg = config(
        pools=(pool("a", "198.51.100.0/25"), pool("b", "198.51.100.128/26", "2001:db8::/64"), pool("c", "10.0.0.5/32"))
    )
    index = PoolIndex(cfg)
    for text, expected in [
        ("198.51.100.3", "a"),
        ("198.51.100.130", "b"),
        ("198.51.100.200", None),
        ("2001:db8::ffff", "b"),
        ("2001:db9::1", None),
        ("10.0.0.5", "c"),
        ("10.0.0.6", None),
    ]:
        assert index.pool_of(ip(text)) == expected
        found = cfg.pool_of(ip(text))
        assert (found.name if found else None) == expected


# --- properties -----------------------------------------------------------------------------------------


ANY_ADDRESS = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address) | st.integers(0, 2**128 - 1).map(
    ipaddress.IPv6Address
)


@given(address=ANY_ADDRESS, length=st.integers(0, 128))
def test_prefix_of_is_the_covering_prefix(address: IPAddress, length: int) -> None:
    length = min(length, 32 if address.version == 4 else 128)
    assert prefix_of(address, length) == covering_prefix(address, length)


PEER_NAMES = st.sampled_from(["r1", "r2", "r3"])
PREFIXES = st.one_of(
    st.integers(0, 15).map(lambda i: net(f"198.51.100.{i}/32")),
    st.sampled_from([net("198.51.100.0/24"), net("2001:db8::/64"), net("2001:db8::1/128")]),
)
ATTRIBUTES = st.builds(
    RouteAttributes,
    local_pref=st.none() | st.sampled_from([100, 200]),
    communities=st.sampled_from([(), ("65000:1",), ("65000:1", "65000:2")]),
    large_communities=st.sampled_from([(), ("1:2:3",)]),
)
ROUTE_MAPS = st.dictionaries(st.tuples(PEER_NAMES, PREFIXES), ATTRIBUTES, max_size=20)
TABLES = ROUTE_MAPS.map(lambda routes: RouteTable(routes=routes))


@given(old=TABLES, new=TABLES)
def test_applying_the_diff_to_old_routes_gives_new_routes(old: RouteTable, new: RouteTable) -> None:
    assert apply_diff(old.routes, diff(old, new)) == dict(new.routes)


@given(table=TABLES)
def test_diff_of_a_table_with_itself_is_empty(table: RouteTable) -> None:
    assert diff(table, table).is_empty


@given(old=TABLES, new=TABLES)
def test_diff_never_withdraws_and_announces_the_same_route(old: RouteTable, new: RouteTable) -> None:
    change = diff(old, new)
    withdrawn = {(p, prefix) for b in change.withdraw for p in b.peers for prefix in b.prefixes}
    announced = {(p, prefix) for b in change.announce for p in b.peers for prefix in b.prefixes}
    assert not withdrawn & announced
    for batch in (*change.withdraw, *change.announce):
        assert len({prefix.version for prefix in batch.prefixes}) == 1


NODE_NAMES = st.sampled_from(["n1", "n2", "n3"])
LABELS = st.dictionaries(st.sampled_from(["rack", "tier", EXCLUDE_LABEL]), st.sampled_from(["a", "b", ""]), max_size=2)
SELECTORS = st.lists(
    st.one_of(
        st.builds(
            lambda k, v: LabelSelector(match_labels=frozenset({(k, v)})),
            st.sampled_from(["rack", "tier"]),
            st.sampled_from(["a", "b"]),
        ),
        st.builds(
            lambda k, op: LabelSelector(match_expressions=(Requirement(k, op, frozenset({"a"})),)),
            st.sampled_from(["rack", "tier"]),
            st.sampled_from(list(Operator)),
        ),
    ),
    max_size=2,
).map(tuple)
COMMUNITIES = st.frozensets(
    st.sampled_from(
        [Community("65000:1"), Community("65000:2"), Community("1:2:3", large=True), Community("no-export")]
    ),
    max_size=3,
)
POOL_CIDRS = ["198.51.100.0/24", "203.0.113.0/28", "2001:db8::/64", "10.0.0.1/32"]
ADDRESSES = st.sampled_from(
    ["198.51.100.1", "198.51.100.2", "198.51.100.200", "203.0.113.3", "2001:db8::1", "10.0.0.1"] * 3
    + ["203.0.113.99", "2001:db9::1"]
).map(ip)


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, Any]:
    """Small clusters, biased so that most draws announce something and every skip reason occurs."""
    pool_names = ["p0", "p1", "p2", "p3"]
    cidrs = draw(st.permutations(POOL_CIDRS))
    pools = tuple(Pool(name=name, cidrs=(net(cidrs[i]),)) for i, name in enumerate(pool_names))
    maybe_selectors = st.sampled_from([(), (), ()]) | SELECTORS
    peers = tuple(
        peer(name, node_selectors=draw(maybe_selectors))
        for name in draw(st.sampled_from([["r1", "r2"], ["r1"], ["r1", "r2", "r3"], []]))
    )
    advertisements = tuple(
        Advertisement(
            name=f"adv{i}",
            pools=draw(st.frozensets(st.sampled_from(pool_names + ["ghost"]), min_size=2, max_size=5)),
            aggregation_length=draw(st.sampled_from([32, 32, 24]) | st.integers(-1, 40)),
            aggregation_length_v6=draw(st.sampled_from([128, 128, 64]) | st.integers(0, 130)),
            local_pref=draw(st.none() | st.integers(0, 2**32 - 1)),
            communities=draw(COMMUNITIES),
            node_selectors=draw(maybe_selectors),
            peers=draw(st.just(frozenset()) | st.frozensets(PEER_NAMES | st.just("ghost"), max_size=2)),
            service_selectors=draw(maybe_selectors),
        )
        for i in range(draw(st.sampled_from([1, 2, 3, 0])))
    )
    keys = draw(
        st.lists(
            st.builds(ServiceKey, st.sampled_from(["default", "other"]), st.sampled_from(["a", "b", "c", "d"])),
            unique=True,
            max_size=5,
        )
    )
    services = [
        service(
            key.name,
            namespace=key.namespace,
            traffic_policy=draw(st.sampled_from(["Cluster", "Local", "Cluster"])),
            labels=draw(LABELS),
            type_=draw(st.sampled_from(["LoadBalancer", "LoadBalancer", "ClusterIP"])),
            selector=draw(st.none() | st.just({"app": key.name})),
            load_balancer_class=draw(st.sampled_from([None, None, "other.io/lb"])),
        ).model
        for key in keys
    ]
    any_key = (
        st.sampled_from(keys) | st.just(ServiceKey("default", "stray"))
        if keys
        else st.just(ServiceKey("default", "stray"))
    )
    assignments = {
        key: draw(st.lists(ADDRESSES, min_size=1, max_size=2).map(tuple)) for key in keys if draw(st.integers(0, 4))
    }
    assignments.update(draw(st.dictionaries(any_key, st.lists(ADDRESSES, max_size=2).map(tuple), max_size=2)))
    conditions = st.sampled_from([{}, {}, {"NetworkUnavailable": "True"}, {"NetworkUnavailable": "False"}])
    node_labels = st.dictionaries(
        st.sampled_from(["rack", "tier", "rack", "tier", EXCLUDE_LABEL]), st.sampled_from(["a", "b", ""]), max_size=2
    )
    nodes = [node(n, labels=draw(node_labels), conditions=draw(conditions)).model for n in draw(st.lists(NODE_NAMES, unique=True, max_size=3))]
    endpoint_strategy = st.builds(
        endpoint,
        st.none() | NODE_NAMES,
        ready=st.none() | st.booleans(),
        serving=st.none() | st.booleans(),
        terminating=st.none() | st.booleans(),
    )
    slices = [
        endpoint_slice(
            k.name, *draw(st.lists(endpoint_strategy, max_size=3)), namespace=k.namespace, name=f"{k.name}-{i}"
        ).model
        for i, k in enumerate([*keys, *keys, *draw(st.lists(any_key, max_size=3))])
    ]
    return {
        "config": Config(
            pools={p.name: p for p in pools}, peers={p.name: p for p in peers}, advertisements=advertisements
        ),
        "assignments": assignments,
        "services": services,
        "endpoint_slices": slices,
        "nodes": nodes,
        "node_name": draw(NODE_NAMES),
    }


@settings(max_examples=300, deadline=None)
@given(cluster=clusters())
def test_desired_routes_never_raises_and_accounts_for_every_service(cluster: dict[str, Any]) -> None:
    table = desired_routes(**cluster)
    reordered = {**cluster, "services": cluster["services"][::-1], "endpoint_slices": cluster["endpoint_slices"][::-1]}
    assert desired_routes(**reordered) == table
    announced = {key for keys in table.services.values() for key in keys}
    assert not announced & set(table.skipped)
    node_peer_names = {
        p.name for p in node_peers(cluster["config"], {n.name: n for n in cluster["nodes"]}.get(cluster["node_name"]))
    }
    assert {p for p, _prefix in table.routes} <= node_peer_names
    assert {prefix for _peer, prefix in table.routes} == set(table.services)
    for svc in cluster["services"]:
        key = ServiceKey(svc.namespace, svc.name)
        ours = svc.spec.type == "LoadBalancer" and (
            bool(cluster["assignments"].get(key)) or svc.spec.load_balancer_class is None
        )
        assert (key in announced or key in table.skipped) == ours
    for attrs in table.routes.values():
        assert len(set(attrs.communities)) == len(attrs.communities)
        assert all(c.count(":") == 2 for c in attrs.large_communities)
