"""How `metallb-bgp status` and `explain` print their answers: a table by default, JSON or YAML on request.

The answers are plain dicts (from a running `run` over its control socket, or assembled from the
Kubernetes status objects by `kube.inspect`); this module only lays them out for a person.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

Answer = dict[str, Any]


def render(answer: Answer, output: str, table: str) -> str:
    if output == "json":
        return json.dumps(answer, indent=2, sort_keys=False) + "\n"
    if output == "yaml":
        return yaml.safe_dump(answer, sort_keys=False)
    return table


def columns(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned columns, as `kubectl get` prints them."""
    cells = [[str(h) for h in header]] + [["-" if v is None or v == "" else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells) + "\n"


def status_table(answer: Answer) -> str:
    parts = []
    for daemon in answer.get("daemons", [answer]):
        title = f"{daemon.get('mode', 'speaker')} {daemon.get('node') or daemon.get('name', '')}".strip()
        exabgp = daemon.get("exabgp")
        if exabgp:
            title += f"   ExaBGP pid {exabgp.get('pid')}, restarts {exabgp.get('restarts', 0)}"
        if "routes" in daemon:
            title += f"   routes {daemon['routes']}, services announced {daemon.get('servicesAnnounced', 0)}"
        parts.append(title + "\n")
        peers = daemon.get("peers") or []
        if peers:
            parts.append(columns(
                [(p.get("name"), p.get("address"), p.get("state"), p.get("since"), p.get("announced"), p.get("pending"),
                  p.get("bfd"), p.get("lastError")) for p in peers],
                ("PEER", "ADDRESS", "STATE", "SINCE", "ANNOUNCED", "PENDING", "BFD", "LAST ERROR"),
            ))  # fmt: skip
        routers = daemon.get("bmp") or []
        if routers:
            parts.append(columns(
                [(r.get("sysName") or r.get("address"), r.get("address"), "connected" if r.get("connected") else "not connected",
                  r.get("since"), s.get("speaker"), s.get("received"), s.get("accepted"), r.get("droppedNotOurs"), r.get("lastError"))
                 for r in routers for s in (r.get("sessions") or [{}])],
                ("BMP ROUTER", "ADDRESS", "REPORT", "SINCE", "SESSION FROM", "RECEIVED", "ACCEPTED", "DROPPED", "LAST ERROR"),
            ))  # fmt: skip
        skipped = daemon.get("servicesNotAnnounced") or {}
        if skipped:
            parts.append("not announced: " + ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) + "\n")
        for problem in daemon.get("problems") or []:
            where = f"{problem.get('kind')} {problem.get('namespace')}/{problem.get('name')}".replace(" /", " ")
            parts.append(f"{problem.get('severity', 'error')}: {where}: {problem.get('field')}: {problem.get('message')}\n")
        parts.append("\n")
    return "".join(parts).rstrip("\n") + "\n"


def explain_table(answer: Answer) -> str:
    lines = [f"service {answer.get('service')}"]
    if not answer.get("found", True):
        return "\n".join([*lines, f"  {answer.get('reason')}"]) + "\n"
    lines.append(f"  IPs {', '.join(answer.get('ips') or []) or '-'} from pool {answer.get('pool') or '-'}, "
                 f"externalTrafficPolicy {answer.get('externalTrafficPolicy') or '-'}")  # fmt: skip
    for adv in answer.get("advertisements") or []:
        applies = "applies" if adv.get("appliesToNode") and adv.get("selectsService") else (
            "not this node (nodeSelectors)" if not adv.get("appliesToNode") else "does not select the service")
        lines.append(f"  BGPAdvertisement {adv.get('name')}: {applies}; peers {adv.get('peers')}")
    text = "\n".join(lines) + "\n"
    for node in answer.get("nodes", [answer]):
        title = f"node {node.get('node')}: " + ("announced" if node.get("announced") else f"not announced: {node.get('reason', '-')}")
        text += title + "\n"
        routes = node.get("routes") or []
        if routes:
            reported = any("router" in r for r in routes)
            text += columns(
                [(r.get("peer"), r.get("prefix"), r.get("session"), "yes" if r.get("advertised") else "no",
                  " ".join(r.get("communities") or []) or None, r.get("localPref"),
                  *((_router_cell(r.get("router")),) if reported else ())) for r in routes],
                ("PEER", "PREFIX", "SESSION", "ADVERTISED", "COMMUNITIES", "LOCAL PREF", *(("ROUTER (BMP)",) if reported else ())),
            )  # fmt: skip
    return text


def _router_cell(report: Answer | None) -> str | None:
    """What the router said of a route, in a word or two; the whole reason is in -o json/yaml."""
    if not report:
        return None
    if report.get("accepted"):
        return "accepted"
    if report.get("received") and report.get("accepted") is False:
        return "received, not accepted"
    if report.get("pending"):
        return "pending"
    if report.get("accepted") is False:
        return "not accepted"
    if report.get("received"):
        return "received"
    return "no report"
