"""What `metallb-bgp plan` prints: one Plan as aligned tables for people, or as JSON for scripts."""

from __future__ import annotations

import json
from typing import Any

from metallb_bgp.api.problems import printable
from metallb_bgp.core.plan.pipeline import Plan
from metallb_bgp.core.routes.table import RouteAttributes


def attributes_text(attrs: RouteAttributes) -> str:
    parts = []
    if attrs.local_pref is not None:
        parts.append(f"local-pref {attrs.local_pref}")
    if attrs.communities:
        parts.append("communities " + ",".join(attrs.communities))
    if attrs.large_communities:
        parts.append("large-communities " + ",".join(attrs.large_communities))
    return "; ".join(parts) or "-"


def plan_json(plan: Plan, node_name: str) -> dict[str, Any]:
    ibgp = {p.name for p in plan.peers if p.is_ibgp}  # LOCAL_PREF is sent over iBGP only: show what is sent
    routes = []
    for (peer, prefix), attrs in sorted(plan.table.routes.items(), key=lambda kv: (kv[0][1].version, kv[0][1], kv[0][0])):
        routes.append(
            {
                "prefix": str(prefix),
                "peer": peer,
                "localPref": attrs.local_pref if peer in ibgp else None,
                "communities": list(attrs.communities),
                "largeCommunities": list(attrs.large_communities),
                "services": [str(s) for s in plan.table.services.get(prefix, ())],
            }
        )
    return {
        "node": node_name,
        "peers": [{"name": p.name, "address": str(p.address), "port": p.port} for p in plan.peers],
        "allocations": [
            {"service": str(key), "ips": [str(ip) for ip in a.ips], "pool": a.pool}
            for key, a in sorted(plan.allocation.assignments.items())
        ],
        "refusals": [{"service": str(key), "reason": reason} for key, reason in sorted(plan.allocation.refusals.items())],
        "routes": routes,
        "skipped": [
            {"service": str(key), "reason": skip.reason.value, "detail": skip.detail}
            for key, skip in sorted(plan.table.skipped.items())
        ],
        "problems": [str(p) for p in plan.problems],
    }


def plan_text(plan: Plan, node_name: str) -> str:
    data = plan_json(plan, node_name)
    lines = [f"node {node_name}: {len(data['peers'])} peer(s)"]
    lines += [f"  peer {p['name']} {p['address']}:{p['port']}" for p in data["peers"]]
    lines.append("")
    lines.append(_table(["SERVICE", "IPS", "POOL"], [[a["service"], ",".join(a["ips"]), a["pool"]] for a in data["allocations"]]))
    if data["refusals"]:
        lines.append("")
        lines.append(_table(["SERVICE", "NOT ALLOCATED BECAUSE"], [[r["service"], r["reason"]] for r in data["refusals"]]))
    lines.append("")
    rows = [[r["prefix"], r["peer"], attributes_text_from_json(r), ",".join(r["services"])] for r in data["routes"]]
    lines.append(_table(["PREFIX", "PEER", "ATTRIBUTES", "SERVICES"], rows))
    if data["skipped"]:
        lines.append("")
        rows = [[s["service"], s["reason"], s["detail"]] for s in data["skipped"]]
        lines.append(_table(["SERVICE", "NOT ANNOUNCED", "DETAIL"], rows))
    if data["problems"]:
        lines.append("")
        lines += data["problems"]
    return "\n".join(lines)


def attributes_text_from_json(route: dict[str, Any]) -> str:
    return attributes_text(
        RouteAttributes(route["localPref"], tuple(route["communities"]), tuple(route["largeCommunities"]))
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Aligned columns; every cell printable (`api.problems.printable`), so no value can forge a row."""
    if not rows:
        return f"{header[0]}: none"
    rows = [[printable(str(cell)) for cell in row] for row in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False)
