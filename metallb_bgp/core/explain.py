"""Why a service is (or is not) announced from this node, to which peers, with which attributes.

`metallb-bgp explain` asks a running `run` for this; the answer is computed from the same values the
daemon acts on (the plan in force and the engine's acknowledgements), so it cannot disagree with
what was sent: intent (pool, IPs, the BGPAdvertisements that apply), the decision (the routes, or the
reason there are none), and, per route, whether the session is up and ExaBGP acknowledged it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from metallb_bgp.api.core import Service
from metallb_bgp.api.selectors import any_matches
from metallb_bgp.core.allocator.results import Allocation
from metallb_bgp.core.config.model import Config
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.routes.table import RouteKey, RouteTable

Answer = dict[str, Any]


def explain_service(
    key: ServiceKey,
    *,
    service: Service | None,
    allocation: Allocation,
    config: Config,
    node_name: str,
    node_labels: Mapping[str, str],
    table: RouteTable,
    advertised: Callable[[RouteKey], bool],
    sessions: Mapping[str, str],
    router: Callable[[RouteKey], Answer | None] = lambda _key: None,
) -> Answer:
    """The explanation of one service on this node (`sessions`: peer -> session state; `router`: what
    the route's router reports of it over BMP, where a station runs)."""
    answer: Answer = {"service": str(key), "node": node_name, "found": service is not None}
    if service is None:
        answer["reason"] = "no LoadBalancer service of this name (or not of our load balancer class)"
        return answer
    assignment = allocation.assignments.get(key)
    answer["externalTrafficPolicy"] = service.spec.external_traffic_policy
    answer["ips"] = [str(ip) for ip in assignment.ips] if assignment is not None else []
    answer["pool"] = assignment.pool if assignment is not None else None
    if assignment is None:
        answer["reason"] = allocation.refusals.get(key, "no IP assigned")
    else:
        answer["advertisements"] = _advertisements(config, assignment.pool, node_labels, service.metadata.labels)
    routes = [
        {"peer": peer, "prefix": str(prefix), "localPref": attrs.local_pref, "communities": list(attrs.communities),
         "largeCommunities": list(attrs.large_communities), "session": sessions.get(peer, "unknown"),
         "advertised": advertised((peer, prefix)), **_router_entry(router((peer, prefix)))}
        for prefix, services in table.services.items() if key in services
        for (peer, routed), attrs in _routes_of(table, prefix)
    ]  # fmt: skip
    answer["routes"] = sorted(routes, key=lambda r: (r["peer"], r["prefix"]))
    answer["announced"] = bool(routes)
    skip = table.skipped.get(key)
    if skip is not None and "reason" not in answer:
        answer["reason"] = skip.detail or skip.reason.value
    return answer


def _router_entry(report: Answer | None) -> Answer:
    return {} if report is None else {"router": report}


def _routes_of(table: RouteTable, prefix: Any) -> list[tuple[RouteKey, Any]]:
    return [(route, attrs) for route, attrs in table.routes.items() if route[1] == prefix]


def _advertisements(config: Config, pool: str, node_labels: Mapping[str, str], service_labels: Mapping[str, str]) -> list[Answer]:
    """The BGPAdvertisements of the service's pool, and whether each applies to this node and service."""
    found = []
    for adv in sorted(config.advertisements, key=lambda a: a.name):
        if pool not in adv.pools:
            continue
        node_ok = not adv.node_selectors or any_matches(adv.node_selectors, node_labels)
        service_ok = not adv.service_selectors or any_matches(adv.service_selectors, service_labels)
        found.append({"name": adv.name, "appliesToNode": node_ok, "selectsService": service_ok,
                      "peers": sorted(adv.peers) or "all", "communities": sorted(c.value for c in adv.communities),
                      "localPref": adv.local_pref})  # fmt: skip
    return found
