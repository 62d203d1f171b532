"""Hypothesis strategies the property tests share: pools, configurations and services for the
allocator and the planners built on it (each incremental path is held to its reference with these)."""

from __future__ import annotations

import ipaddress

from builders import config_of, config_pool, namespace, selector, service
from hypothesis import strategies as st

from metallb_bgp.api.core import Service
from metallb_bgp.core.config.model import Config, ServiceAllocation

SHARE = "metallb.io/allow-shared-ip"
V4 = config_of(config_pool("v4", "10.0.0.0/29"))

# Disjoint CIDRs (a compiled Config never has overlapping pools), some touching .0/.255.
POOL_MENU: dict[str, tuple[str, ...]] = {
    "p-a": ("10.0.0.0/30",),
    "p-b": ("10.0.1.252/30",),
    "p-c": ("10.0.2.0/31", "2001:db8::/126"),
    "p-d": ("2001:db8:1::/127",),
    "p-e": ("10.0.3.254/31", "10.0.4.0/31"),
}
IN_POOLS = {str(ip) for cidrs in POOL_MENU.values() for c in cidrs for ip in ipaddress.ip_network(c)}
UNIVERSE = sorted(IN_POOLS | {"10.9.9.9", "2001:db8:9::1"})  # plus two addresses outside every pool
NAMESPACES = [namespace("a", team="x").model, namespace("b").model]

allocations = st.one_of(
    st.none(),
    st.none(),
    st.builds(
        ServiceAllocation,
        priority=st.sampled_from([None, 0, 1, 2]),
        namespaces=st.frozensets(st.sampled_from(["a", "b"]), max_size=1),
        namespace_selectors=st.sampled_from([(), (selector(team="x"),)]),
        service_selectors=st.sampled_from([(), (selector(app="web"),)]),
    ),
)


@st.composite
def configs(draw: st.DrawFn) -> Config:
    names = draw(st.lists(st.sampled_from(sorted(POOL_MENU)), unique=True, min_size=int(draw(st.integers(0, 9)) > 0)))
    pools = [
        config_pool(
            name,
            *POOL_MENU[name],
            auto_assign=draw(st.sampled_from([True, True, True, False])),
            avoid_buggy_ips=draw(st.booleans()),
            allocation=draw(allocations),
        )
        for name in names
    ]
    return config_of(*pools)


ip_lists = st.lists(st.sampled_from(UNIVERSE + ["nope"]), max_size=2)
status_ips: st.SearchStrategy[list[str]] = st.one_of(
    st.just([]),
    st.lists(st.sampled_from([ip for ip in UNIVERSE if ip.startswith("10.0.")]), max_size=1),
    st.lists(st.sampled_from(UNIVERSE + ["junk"]), max_size=2),
)


@st.composite
def services(draw: st.DrawFn) -> Service:
    annotations: dict[str, str] = {}
    for suffix, values in (
        ("address-pool", st.sampled_from([*POOL_MENU, "ghost"])),
        ("loadBalancerIPs", ip_lists.map(",".join)),
    ):
        if draw(st.integers(0, 5)) == 0:
            prefix = draw(st.sampled_from(["metallb.io/", "metallb.universe.tf/"]))
            annotations[prefix + suffix] = draw(values)
    sharing_key = draw(st.sampled_from([None, "k1", "k1", "k2", ""]))
    if sharing_key is not None:
        annotations[draw(st.sampled_from(["metallb.io/", "metallb.universe.tf/"])) + "allow-shared-ip"] = sharing_key
    families = draw(st.sampled_from([(), ("IPv4",), ("IPv6",), ("IPv4", "IPv6"), ("IPv6", "IPv4")]))
    return service(
        draw(st.sampled_from(["s0", "s1", "s2", "s3", "s4", "s5"])),
        draw(st.sampled_from(["a", "b"])),
        annotations=annotations,
        labels=draw(st.sampled_from([{}, {"app": "web"}])),
        load_balancer_ip=draw(st.sampled_from([""] * 15 + ["10.0.0.1", "2001:db8::2", "bad"])),
        ports=draw(st.lists(st.sampled_from([(80, "TCP"), (443, "TCP"), (53, "UDP")]), unique=True, max_size=2)),
        families=families,
        policy=draw(st.sampled_from([None, "SingleStack", "PreferDualStack", "RequireDualStack"])),
        traffic_policy=draw(st.sampled_from(["Cluster", "Cluster", "Local"])),
        selector=draw(st.sampled_from([None, {"app": "web"}, {"app": "db"}])),
        load_balancer_class=draw(st.sampled_from([None, None, None, "other"])),
        type_=draw(st.sampled_from(["LoadBalancer", "LoadBalancer", "LoadBalancer", "ClusterIP"])),
        ips=draw(status_ips),
    ).model


@st.composite
def sharing_services(draw: st.DrawFn) -> Service:
    """Services that all try to share a few addresses: exercises the sharing rules hard."""
    local = draw(st.booleans())
    return service(
        draw(st.sampled_from([f"s{i}" for i in range(8)])),
        draw(st.sampled_from(["a", "b"])),
        annotations={SHARE: draw(st.sampled_from(["k1", "k1", "k2"]))},
        ports=draw(st.lists(st.sampled_from([(80, "TCP"), (443, "TCP"), (53, "UDP"), (53, "TCP")]), unique=True)),
        families=("IPv4",),
        traffic_policy="Local" if local else "Cluster",
        selector=draw(st.sampled_from([None, {"app": "web"}, {"app": "db"}])),
        ips=draw(st.lists(st.sampled_from(["10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"]), max_size=1)),
    ).model


clusters = st.one_of(
    st.tuples(configs(), st.lists(services(), max_size=12)),
    st.tuples(st.just(config_of(config_pool("p-a", *POOL_MENU["p-a"]))), st.lists(sharing_services(), max_size=10)),
)
