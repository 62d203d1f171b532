"""The allocator, rule by rule (MetalLB's controller behaviour), then its properties under hypothesis."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

import pytest
from builders import config_of as config
from builders import config_pool as pool
from builders import namespace, selector, service
from hypothesis import HealthCheck, given, settings
from strategies import NAMESPACES, SHARE, V4, clusters

from metallb_bgp.api.core import Namespace, Service
from metallb_bgp.api.meta import replace
from metallb_bgp.api.problems import Severity
from metallb_bgp.core.allocator.allocate import allocate
from metallb_bgp.core.allocator.intent import INT64_MAX
from metallb_bgp.core.allocator.results import Allocation, Assignment, PoolUsage
from metallb_bgp.core.allocator.usage import pool_usage
from metallb_bgp.core.config.model import Config, ServiceAllocation
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress

# --- builders ------------------------------------------------------------------------------------------


def key(name: str, ns: str = "default") -> ServiceKey:
    return ServiceKey(ns, name)


def ips(*texts: str) -> tuple[IPAddress, ...]:
    return tuple(ipaddress.ip_address(t) for t in texts)


def run(
    cfg: Config,
    *services: Service,
    namespaces: Sequence[Namespace] = (),
    existing: Mapping[ServiceKey, tuple[IPAddress, ...]] | None = None,
    load_balancer_class: str | None = None,
) -> Allocation:
    return allocate(cfg, services, namespaces, existing=existing, load_balancer_class=load_balancer_class)


def assigned(allocation: Allocation, name: str, ns: str = "default") -> tuple[str, ...]:
    return tuple(str(ip) for ip in allocation.assignments[key(name, ns)].ips)


def warning_fields(allocation: Allocation) -> set[str]:
    return {w.field for w in allocation.warnings}


LB_IPS = "metallb.io/loadBalancerIPs"
POOL = "metallb.io/address-pool"

# --- which services are ours -------------------------------------------------------------------------


def test_only_load_balancer_services_get_ips() -> None:
    result = run(V4, service("web").model, service("internal", type_="ClusterIP").model, service("np", type_="NodePort").model)
    assert set(result.assignments) == {key("web")}
    assert not result.refusals


def test_services_with_a_load_balancer_class_are_not_ours_without_a_class() -> None:
    result = run(V4, service("mine").model, service("theirs", load_balancer_class="other.io/lb").model)
    assert set(result.assignments) == {key("mine")}
    assert not result.refusals


def test_with_a_class_only_services_of_exactly_that_class_are_ours() -> None:
    result = run(
        V4,
        service("plain").model,
        service("mine", load_balancer_class="metallb.io/bgp").model,
        service("theirs", load_balancer_class="other.io/lb").model,
        load_balancer_class="metallb.io/bgp",
    )
    assert set(result.assignments) == {key("mine")}


def test_new_services_get_the_lowest_free_addresses_in_key_order() -> None:
    result = run(V4, service("b").model, service("a").model, service("c", "aaa").model)
    assert assigned(result, "c", "aaa") == ("10.0.0.0",)
    assert assigned(result, "a") == ("10.0.0.1",)
    assert assigned(result, "b") == ("10.0.0.2",)
    assert result.assignments[key("a")].pool == "v4"


def test_result_does_not_depend_on_input_order() -> None:
    services = [service(f"s{i}", annotations={SHARE: "k"} if i % 2 else {}).model for i in range(6)]
    assert run(V4, *services) == run(V4, *reversed(services))


# --- requested addresses -----------------------------------------------------------------------------


def test_spec_load_balancer_ip_is_honoured_with_a_deprecation_warning() -> None:
    result = run(V4, service("web", load_balancer_ip="10.0.0.5").model)
    assert assigned(result, "web") == ("10.0.0.5",)
    assert "spec.loadBalancerIP" in warning_fields(result)
    assert all(w.severity is Severity.WARNING for w in result.warnings)


def test_load_balancer_ips_annotation_requests_one_address_per_family() -> None:
    cfg = config(pool("dual", "10.0.0.0/29", "2001:db8::/125"))
    web = service(
        "web", families=("IPv6", "IPv4"), policy="RequireDualStack", annotations={LB_IPS: "10.0.0.3, 2001:db8::4"}
    ).model
    assert assigned(run(cfg, web), "web") == ("2001:db8::4", "10.0.0.3")


def test_spec_ip_and_annotation_together_are_refused() -> None:
    result = run(V4, service("web", load_balancer_ip="10.0.0.5", annotations={LB_IPS: "10.0.0.5"}).model)
    assert "both set" in result.refusals[key("web")]
    assert "spec.loadBalancerIP" in warning_fields(result)


def test_invalid_load_balancer_ips_annotation_is_refused_with_a_field_named_error() -> None:
    result = run(V4, service("web", annotations={LB_IPS: "10.0.0.x"}).model)
    assert "10.0.0.x" in result.refusals[key("web")]
    [error] = [w for w in result.warnings if w.field == f"metadata.annotations[{LB_IPS}]"]
    assert str(error).startswith("Service default/web: metadata.annotations[metallb.io/loadBalancerIPs]")
    assert error.is_error


@pytest.mark.parametrize("value", ["2001:db8::5%x\nforged line", "10.0.0.1%eth0", ",".join(f"10.0.{i // 250}.{i % 250}" for i in range(10000))])
def test_a_zone_or_thousands_of_addresses_in_the_annotation_are_refused_in_one_short_line(value: str) -> None:
    result = run(V4, service("web", annotations={LB_IPS: value}).model)
    assert key("web") not in result.assignments
    [error] = [w for w in result.warnings if w.field == f"metadata.annotations[{LB_IPS}]"]
    assert "\n" not in str(error) and len(str(error)) < 400


def test_two_requested_addresses_of_one_family_are_refused() -> None:
    result = run(V4, service("web", annotations={LB_IPS: "10.0.0.1,10.0.0.2"}).model)
    assert "at most one IPv4 and one IPv6" in result.refusals[key("web")]


def test_requested_ip_outside_every_pool_is_refused() -> None:
    result = run(V4, service("web", annotations={LB_IPS: "192.0.2.1"}).model)
    assert result.refusals[key("web")] == "requested IP 192.0.2.1 is not in any pool"


def test_requested_ip_in_use_is_refused_naming_the_holder() -> None:
    result = run(V4, service("a", annotations={LB_IPS: "10.0.0.4"}).model, service("b", annotations={LB_IPS: "10.0.0.4"}).model)
    assert assigned(result, "a") == ("10.0.0.4",)
    assert result.refusals[key("b")] == "requested IP 10.0.0.4 is in use by default/a"


def test_requested_ip_of_the_wrong_family_is_refused() -> None:
    cfg = config(pool("dual", "10.0.0.0/29", "2001:db8::/125"))
    result = run(cfg, service("web", families=("IPv6",), annotations={LB_IPS: "10.0.0.1"}).model)
    assert "do not fit the service's IP families (SingleStack IPv6)" in result.refusals[key("web")]


def test_pinned_requests_are_served_before_automatic_picks() -> None:
    result = run(V4, service("a-auto").model, service("z-pinned", annotations={LB_IPS: "10.0.0.0"}).model)
    assert assigned(result, "z-pinned") == ("10.0.0.0",)
    assert assigned(result, "a-auto") == ("10.0.0.1",)


# --- pool annotation and legacy prefix ----------------------------------------------------------------


def test_address_pool_annotation_picks_that_pool() -> None:
    cfg = config(pool("a", "10.0.0.0/30"), pool("b", "10.0.1.0/30"))
    result = run(cfg, service("web", annotations={POOL: "b"}).model)
    assert result.assignments[key("web")] == Assignment(ips("10.0.1.0"), "b")


def test_unknown_pool_annotation_is_refused_and_warned() -> None:
    result = run(V4, service("web", annotations={POOL: "ghost"}).model)
    assert result.refusals[key("web")] == f"unknown pool 'ghost' in {POOL}"
    assert f"metadata.annotations[{POOL}]" in warning_fields(result)


def test_requested_ip_must_come_from_the_requested_pool() -> None:
    cfg = config(pool("a", "10.0.0.0/30"), pool("b", "10.0.1.0/30"))
    result = run(cfg, service("web", annotations={POOL: "b", LB_IPS: "10.0.0.1"}).model)
    assert "belong to pool a" in result.refusals[key("web")]


def test_legacy_annotation_prefix_works_and_warns() -> None:
    cfg = config(pool("a", "10.0.0.0/30"), pool("b", "10.0.1.0/30"))
    result = run(cfg, service("web", annotations={"metallb.universe.tf/address-pool": "b"}).model)
    assert result.assignments[key("web")].pool == "b"
    [warning] = result.warnings
    assert warning.field == "metadata.annotations[metallb.universe.tf/address-pool]"
    assert "deprecated" in warning.message and POOL in warning.message


def test_metallb_io_annotation_wins_over_the_legacy_one() -> None:
    cfg = config(pool("a", "10.0.0.0/30"), pool("b", "10.0.1.0/30"))
    result = run(cfg, service("web", annotations={POOL: "a", "metallb.universe.tf/address-pool": "b"}).model)
    assert result.assignments[key("web")].pool == "a"
    assert "takes precedence" in result.warnings[0].message


# --- pool attributes -------------------------------------------------------------------------------


def test_auto_assign_false_pool_is_used_only_when_explicitly_requested() -> None:
    cfg = config(pool("reserved", "10.0.9.0/30", auto_assign=False))
    result = run(
        cfg,
        service("auto").model,
        service("by-pool", annotations={POOL: "reserved"}).model,
        service("by-ip", annotations={LB_IPS: "10.0.9.3"}).model,
    )
    assert "pool reserved has autoAssign false" in result.refusals[key("auto")]
    assert assigned(result, "by-pool") == ("10.0.9.0",)
    assert assigned(result, "by-ip") == ("10.0.9.3",)


def test_auto_assign_false_pool_is_skipped_for_the_next_pool() -> None:
    cfg = config(pool("a-reserved", "10.0.9.0/30", auto_assign=False), pool("b", "10.0.1.0/30"))
    assert assigned(run(cfg, service("web").model), "web") == ("10.0.1.0",)


def test_avoid_buggy_ips_skips_every_ipv4_address_ending_in_0_or_255() -> None:
    cfg = config(pool("p", "10.0.0.254/31", "10.0.1.0/31", avoid_buggy_ips=True))
    result = run(cfg, service("a").model, service("b").model, service("c").model)
    assert assigned(result, "a") == ("10.0.0.254",)
    assert assigned(result, "b") == ("10.0.1.1",)
    assert "pool p: IPv4 exhausted" in result.refusals[key("c")]


def test_avoid_buggy_ips_refuses_a_requested_dot_255() -> None:
    cfg = config(pool("p", "10.0.0.0/23", avoid_buggy_ips=True))
    result = run(cfg, service("web", annotations={LB_IPS: "10.0.0.255"}).model)
    assert "avoidBuggyIPs" in result.refusals[key("web")]


def test_avoid_buggy_ips_leaves_ipv6_alone() -> None:
    cfg = config(pool("p", "2001:db8::/127", avoid_buggy_ips=True))
    assert assigned(run(cfg, service("web", families=("IPv6",)).model), "web") == ("2001:db8::",)


def test_namespace_restricted_pool_serves_only_its_namespaces() -> None:
    cfg = config(pool("team", "10.0.0.0/30", allocation=ServiceAllocation(namespaces=frozenset({"team"}))))
    result = run(cfg, service("web", "team").model, service("web", "other").model)
    assert assigned(result, "web", "team") == ("10.0.0.0",)
    assert "pool team does not allow namespace other" in result.refusals[key("web", "other")]


def test_namespace_selector_matches_namespace_labels() -> None:
    gold_only = ServiceAllocation(namespace_selectors=(selector(tier="gold"),))
    cfg = config(pool("gold", "10.0.0.0/30", allocation=gold_only))
    namespaces = [namespace("rich", tier="gold").model, namespace("poor", tier="bronze").model]
    result = run(cfg, service("web", "rich").model, service("web", "poor").model, namespaces=namespaces)
    assert key("web", "rich") in result.assignments
    assert key("web", "poor") in result.refusals


def test_service_selector_restricts_pool() -> None:
    web_only = ServiceAllocation(service_selectors=(selector(app="web"),))
    cfg = config(pool("web-only", "10.0.0.0/30", allocation=web_only))
    result = run(cfg, service("web", labels={"app": "web"}).model, service("db", labels={"app": "db"}).model)
    assert key("web") in result.assignments
    assert "does not select this service" in result.refusals[key("db")]


def test_requested_pool_must_allow_the_service() -> None:
    cfg = config(pool("team", "10.0.0.0/30", allocation=ServiceAllocation(namespaces=frozenset({"team"}))))
    result = run(cfg, service("web", "other", annotations={POOL: "team"}).model)
    assert result.refusals[key("web", "other")] == "pool team does not allow namespace other"


def test_pools_with_priority_are_tried_in_ascending_order_before_others() -> None:
    cfg = config(
        pool("a-plain", "10.0.0.0/32"),
        pool("b-second", "10.0.1.0/32", allocation=ServiceAllocation(priority=20)),
        pool("c-first", "10.0.2.0/32", allocation=ServiceAllocation(priority=10)),
    )
    result = run(cfg, service("s1").model, service("s2").model, service("s3").model)
    assert [result.assignments[key(n)].pool for n in ("s1", "s2", "s3")] == ["c-first", "b-second", "a-plain"]


def test_pool_ties_are_broken_by_name() -> None:
    cfg = config(pool("zeta", "10.0.0.0/32"), pool("alpha", "10.0.1.0/32"))
    result = run(cfg, service("s1").model, service("s2").model)
    assert [result.assignments[key(n)].pool for n in ("s1", "s2")] == ["alpha", "zeta"]


def test_dedicated_pool_is_preferred_over_a_general_pool() -> None:
    team_only = ServiceAllocation(namespaces=frozenset({"team"}))
    cfg = config(pool("a-general", "10.0.0.0/30"), pool("z-team", "10.0.1.0/30", allocation=team_only))
    result = run(cfg, service("web", "team").model, service("web", "other").model)
    assert result.assignments[key("web", "team")].pool == "z-team"
    assert result.assignments[key("web", "other")].pool == "a-general"


# --- address families --------------------------------------------------------------------------------

DUAL = config(pool("dual", "10.0.0.0/30", "2001:db8::/126"))


def test_single_stack_gets_one_ip_of_its_first_family() -> None:
    assert assigned(run(DUAL, service("web", families=("IPv6",), policy="SingleStack").model), "web") == ("2001:db8::",)


def test_single_stack_without_families_follows_the_cluster_ip() -> None:
    web = service("web", families=()).model
    web = replace(web, spec=replace(web.spec, cluster_ip="fd00::10"))
    assert assigned(run(DUAL, web), "web") == ("2001:db8::",)


def test_require_dual_stack_gets_both_families_from_one_pool() -> None:
    result = run(DUAL, service("web", families=("IPv4", "IPv6"), policy="RequireDualStack").model)
    assert assigned(result, "web") == ("10.0.0.0", "2001:db8::")


def test_require_dual_stack_is_refused_without_a_dual_pool() -> None:
    cfg = config(pool("v4", "10.0.0.0/30"), pool("v6", "2001:db8::/126"))
    result = run(cfg, service("web", families=("IPv4", "IPv6"), policy="RequireDualStack").model)
    assert result.refusals[key("web")] == (
        "no available IP: need an IPv4 and an IPv6 address from one pool (RequireDualStack) "
        "(pool v4: no IPv6 range; pool v6: no IPv4 range)"
    )


def test_prefer_dual_stack_takes_both_when_a_pool_has_both() -> None:
    cfg = config(pool("a-v4", "10.0.1.0/30"), pool("b-dual", "10.0.0.0/30", "2001:db8::/126"))
    result = run(cfg, service("web", families=("IPv4", "IPv6"), policy="PreferDualStack").model)
    assert result.assignments[key("web")] == Assignment(ips("10.0.0.0", "2001:db8::"), "b-dual")


def test_prefer_dual_stack_falls_back_to_one_family() -> None:
    cfg = config(pool("v6", "2001:db8::/126"))
    result = run(cfg, service("web", families=("IPv4", "IPv6"), policy="PreferDualStack").model)
    assert assigned(result, "web") == ("2001:db8::",)


def test_prefer_dual_stack_with_one_ip_gains_the_missing_family_from_its_pool() -> None:
    web = service("web", families=("IPv4", "IPv6"), policy="PreferDualStack").model
    result = run(DUAL, web, existing={key("web"): ips("10.0.0.2")})
    assert assigned(result, "web") == ("10.0.0.2", "2001:db8::")
    assert not result.cleared


def test_family_change_clears_and_reallocates() -> None:
    result = run(DUAL, service("web", families=("IPv6",)).model, existing={key("web"): ips("10.0.0.1")})
    assert assigned(result, "web") == ("2001:db8::",)
    assert "do not fit the service's IP families" in result.cleared[key("web")]


# --- sharing ---------------------------------------------------------------------------------------


def test_same_sharing_key_and_disjoint_ports_share_an_ip() -> None:
    result = run(
        V4,
        service("dns-tcp", annotations={SHARE: "dns"}, ports=[(53, "TCP")]).model,
        service("dns-udp", annotations={SHARE: "dns"}, ports=[(53, "UDP")]).model,
    )
    assert assigned(result, "dns-tcp") == assigned(result, "dns-udp") == ("10.0.0.0",)
    assert result.assignments[key("dns-udp")].sharing_key == "dns"


def test_sharing_needs_disjoint_ports() -> None:
    result = run(V4, service("a", annotations={SHARE: "k"}).model, service("b", annotations={SHARE: "k"}).model)
    assert assigned(result, "a") != assigned(result, "b")


def test_sharing_a_requested_ip_with_overlapping_ports_is_refused() -> None:
    result = run(
        V4,
        service("a", annotations={SHARE: "k", LB_IPS: "10.0.0.3"}).model,
        service("b", annotations={SHARE: "k", LB_IPS: "10.0.0.3"}).model,
    )
    assert result.refusals[key("b")] == "requested IP 10.0.0.3 is in use by default/a on TCP/80"


def test_different_sharing_keys_do_not_share() -> None:
    result = run(
        V4,
        service("a", annotations={SHARE: "x", LB_IPS: "10.0.0.3"}, ports=[(80, "TCP")]).model,
        service("b", annotations={SHARE: "y", LB_IPS: "10.0.0.3"}, ports=[(443, "TCP")]).model,
    )
    assert "sharing key 'x', not 'y'" in result.refusals[key("b")]


def test_without_a_sharing_key_an_ip_is_exclusive() -> None:
    result = run(
        V4,
        service("a", annotations={SHARE: "x", LB_IPS: "10.0.0.3"}, ports=[(80, "TCP")]).model,
        service("b", annotations={LB_IPS: "10.0.0.3"}, ports=[(443, "TCP")]).model,
    )
    assert result.refusals[key("b")] == "requested IP 10.0.0.3 is in use by default/a"


def test_etp_local_services_share_only_with_the_same_selector() -> None:
    def local(name: str, app: str, port: int) -> Service:
        return service(
            name, annotations={SHARE: "k"}, ports=[(port, "TCP")], traffic_policy="Local", selector={"app": app}
        ).model

    result = run(V4, local("a", "web", 80), local("b", "web", 443), local("c", "db", 5432))
    assert assigned(result, "a") == assigned(result, "b") == ("10.0.0.0",)
    assert assigned(result, "c") == ("10.0.0.1",)


def test_etp_local_and_cluster_services_do_not_share() -> None:
    result = run(
        V4,
        service("a", annotations={SHARE: "k", LB_IPS: "10.0.0.3"}, traffic_policy="Local", selector={"app": "web"}).model,
        service("b", annotations={SHARE: "k", LB_IPS: "10.0.0.3"}, ports=[(443, "TCP")], selector={"app": "web"}).model,
    )
    assert "externalTrafficPolicy Local" in result.refusals[key("b")]


# --- stability ---------------------------------------------------------------------------------------


def test_existing_assignment_is_kept_even_when_lower_addresses_are_free() -> None:
    result = run(V4, service("old").model, service("new").model, existing={key("old"): ips("10.0.0.6")})
    assert assigned(result, "old") == ("10.0.0.6",)
    assert assigned(result, "new") == ("10.0.0.0",)


def test_existing_ips_are_read_from_status_when_not_given() -> None:
    result = run(V4, service("old", ips=["10.0.0.6"]).model, service("new").model)
    assert assigned(result, "old") == ("10.0.0.6",)


def test_newcomer_cannot_take_an_address_held_by_an_existing_service() -> None:
    result = run(V4, service("z-holder", ips=["10.0.0.1"]).model, service("a-wants", annotations={LB_IPS: "10.0.0.1"}).model)
    assert assigned(result, "z-holder") == ("10.0.0.1",)
    assert result.refusals[key("a-wants")] == "requested IP 10.0.0.1 is in use by default/z-holder"


def test_assignment_is_reallocated_when_its_pool_is_deleted() -> None:
    result = run(V4, service("web").model, existing={key("web"): ips("192.0.2.7")})
    assert assigned(result, "web") == ("10.0.0.0",)
    assert result.cleared[key("web")] == "current IP 192.0.2.7 is not in any pool"


def test_assignment_moves_when_the_pool_annotation_changes() -> None:
    cfg = config(pool("a", "10.0.0.0/30"), pool("b", "10.0.1.0/30"))
    result = run(cfg, service("web", annotations={POOL: "b"}).model, existing={key("web"): ips("10.0.0.2")})
    assert assigned(result, "web") == ("10.0.1.0",)
    assert "asks for pool b" in result.cleared[key("web")]


def test_assignment_moves_when_the_requested_ip_changes() -> None:
    result = run(V4, service("web", annotations={LB_IPS: "10.0.0.5"}).model, existing={key("web"): ips("10.0.0.2")})
    assert assigned(result, "web") == ("10.0.0.5",)
    assert result.cleared[key("web")] == "the service now requests 10.0.0.5"


def test_assignment_is_cleared_when_its_namespace_is_no_longer_allowed() -> None:
    cfg = config(
        pool("team", "10.0.0.0/30", allocation=ServiceAllocation(namespaces=frozenset({"team"}))),
        pool("general", "10.0.1.0/30"),
    )
    result = run(cfg, service("web", "other").model, existing={key("web", "other"): ips("10.0.0.1")})
    assert assigned(result, "web", "other") == ("10.0.1.0",)
    assert "does not allow namespace other" in result.cleared[key("web", "other")]


def test_conflicting_existing_assignments_keep_the_first_key() -> None:
    result = run(V4, service("a").model, service("b").model, existing={key("a"): ips("10.0.0.3"), key("b"): ips("10.0.0.3")})
    assert assigned(result, "a") == ("10.0.0.3",)
    assert assigned(result, "b") == ("10.0.0.0",)
    assert result.cleared[key("b")] == "current IP 10.0.0.3 is in use by default/a"


def test_malformed_request_keeps_a_valid_current_assignment() -> None:
    result = run(V4, service("web", annotations={LB_IPS: "garbage"}).model, existing={key("web"): ips("10.0.0.2")})
    assert assigned(result, "web") == ("10.0.0.2",)
    assert f"metadata.annotations[{LB_IPS}]" in warning_fields(result)


def test_unreadable_status_ip_is_cleared_and_reallocated() -> None:
    result = run(V4, service("web", ips=["not-an-ip"]).model)
    assert assigned(result, "web") == ("10.0.0.0",)
    assert "not an IP address" in result.cleared[key("web")]


def test_service_that_is_no_longer_a_load_balancer_is_cleared() -> None:
    result = run(V4, service("web", type_="ClusterIP", ips=["10.0.0.1"]).model)
    assert not result.assignments
    assert result.cleared[key("web")] == "the service is no longer of type LoadBalancer"


# --- refusals ----------------------------------------------------------------------------------------


def test_refusal_names_the_exhausted_pool() -> None:
    cfg = config(pool("tiny", "10.0.0.0/32"))
    result = run(cfg, service("a").model, service("b").model)
    assert result.refusals[key("b")] == "no available IP: need an IPv4 address (pool tiny: IPv4 exhausted)"


def test_refusal_without_any_pool() -> None:
    assert run(Config(), service("web").model).refusals[key("web")] == "no IPAddressPool is configured"


# --- pool usage --------------------------------------------------------------------------------------


def test_pool_usage_counts_shared_addresses_once_and_excludes_avoided_ones() -> None:
    cfg = config(pool("p", "10.0.0.0/24", "2001:db8::/126", avoid_buggy_ips=True), pool("z-idle", "10.0.1.0/30"))
    result = run(
        cfg,
        service("a", annotations={SHARE: "k"}, ports=[(80, "TCP")]).model,
        service("b", annotations={SHARE: "k"}, ports=[(443, "TCP")]).model,
        service("c", families=("IPv6",)).model,
    )
    usage = pool_usage(cfg, result)
    assert usage["p"] == PoolUsage(assigned_ipv4=1, assigned_ipv6=1, available_ipv4=253, available_ipv6=3)
    assert usage["z-idle"] == PoolUsage(available_ipv4=4)


def test_pool_usage_caps_huge_ipv6_pools_at_int64() -> None:
    cfg = config(pool("huge", "2001:db8::/32"))
    assert pool_usage(cfg, Allocation())["huge"].available_ipv6 == INT64_MAX


# --- properties --------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ours(svcs: Sequence[Service]) -> set[ServiceKey]:
    last = {ServiceKey(s.namespace, s.name): s for s in svcs}
    return {k for k, s in last.items() if s.spec.type == "LoadBalancer" and s.spec.load_balancer_class is None}


@PROPERTY_SETTINGS
@given(clusters)
def test_every_service_of_ours_gets_an_assignment_or_a_reason(case: tuple[Config, list[Service]]) -> None:
    cfg, svcs = case
    result = allocate(cfg, svcs, NAMESPACES)
    assert set(result.assignments) | set(result.refusals) == ours(svcs)
    assert not set(result.assignments) & set(result.refusals)
    assert all(reason for reason in result.refusals.values())


@PROPERTY_SETTINGS
@given(clusters)
def test_allocation_is_stable(case: tuple[Config, list[Service]]) -> None:
    cfg, svcs = case
    first = allocate(cfg, svcs, NAMESPACES)
    second = allocate(cfg, svcs, NAMESPACES, existing=first.service_ips())
    assert second.assignments == first.assignments
    assert set(second.refusals) == set(first.refusals)
    assert not second.cleared


@PROPERTY_SETTINGS
@given(clusters)
def test_an_ip_is_never_given_to_two_services_that_may_not_share(case: tuple[Config, list[Service]]) -> None:
    cfg, svcs = case
    result = allocate(cfg, svcs, NAMESPACES)
    by_key = {ServiceKey(s.namespace, s.name): s for s in svcs}
    holders: dict[IPAddress, list[ServiceKey]] = {}
    for k, assignment in result.assignments.items():
        assert len({ip.version for ip in assignment.ips}) == len(assignment.ips)
        for ip in assignment.ips:
            holders.setdefault(ip, []).append(k)
    for ip, keys in holders.items():
        if len(keys) < 2:
            continue
        sharing = {result.assignments[k].sharing_key for k in keys}
        assert len(sharing) == 1 and None not in sharing, (ip, keys)
        seen: set[tuple[str, int]] = set()
        for k in keys:
            ports = {(p.protocol, p.port) for p in by_key[k].spec.ports}
            assert not seen & ports, (ip, keys)
            seen |= ports
        backends = {
            (by_key[k].spec.external_traffic_policy, tuple(sorted((by_key[k].spec.selector or {}).items())))
            if by_key[k].spec.external_traffic_policy == "Local"
            else ("Cluster",)
            for k in keys
        }
        assert len(backends) == 1, (ip, keys)


@PROPERTY_SETTINGS
@given(clusters)
def test_every_assigned_ip_lies_in_its_recorded_pool(case: tuple[Config, list[Service]]) -> None:
    cfg, svcs = case
    result = allocate(cfg, svcs, NAMESPACES)
    for assignment in result.assignments.values():
        recorded = cfg.pools[assignment.pool]
        for ip in assignment.ips:
            assert any(ip in cidr for cidr in recorded.cidrs if cidr.version == ip.version)
            if recorded.avoid_buggy_ips and ip.version == 4:
                assert ip.packed[-1] not in (0, 255)
    for usage in pool_usage(cfg, result).values():
        assert min(usage.assigned_ipv4, usage.assigned_ipv6, usage.available_ipv4, usage.available_ipv6) >= 0
