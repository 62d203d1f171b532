"""`metallb-bgp status` and `explain` in Kubernetes mode: the answers, from the objects the daemons write.

Nothing here asks a daemon: the speakers' ConfigurationStates (`speaker-<node>`: configuration
problems and each BGP session) and ServiceBGPStatus objects (per service and node: the peers it is
configured to go to and whether it is advertised to each), and the Service's own status, read with
the same kubeconfig `kubectl` uses. The answers have the shape a running `run` gives, so one printer
serves both (`observe.inspect`).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from metallb_bgp.core.writes import (
    CONFIGURATION_STATE_VERSION,
    GROUP,
    LABEL_SERVICE_NAME,
    LABEL_SERVICE_NAMESPACE,
    SERVICE_BGP_STATUS,
)

Answer = dict[str, Any]
TIMEOUT = (3.0, 30.0)


def _items(api: client.CustomObjectsApi, namespace: str, version: str, plural: str, **query: Any) -> list[Answer]:
    answer: Any = api.list_namespaced_custom_object(GROUP, version, namespace, plural, _request_timeout=TIMEOUT, **query)
    return list(answer.get("items") or [])


def cluster_status(api_client: ApiClient, namespace: str) -> Answer:
    """Every daemon's ConfigurationState, with the ServiceBGPStatus count of each speaker's node."""
    custom = client.CustomObjectsApi(api_client)
    announced: dict[str, int] = {}
    for item in _items(custom, namespace, SERVICE_BGP_STATUS.version, SERVICE_BGP_STATUS.plural):
        node = (item.get("status") or {}).get("node", "")
        announced[node] = announced.get(node, 0) + 1
    daemons = []
    for item in sorted(_items(custom, namespace, CONFIGURATION_STATE_VERSION, "configurationstates"),
                       key=lambda i: i["metadata"]["name"]):  # fmt: skip
        name, status = item["metadata"]["name"], item.get("status") or {}
        node = name.removeprefix("speaker-") if name.startswith("speaker-") else None
        entry: Answer = {"mode": "speaker" if node else "controller", "name": name, "node": node,
                         "result": status.get("result"), "problems": status.get("errors") or [],
                         "peers": status.get("peers") or []}  # fmt: skip
        if node is not None:
            entry["servicesAnnounced"] = announced.get(node, 0)
        daemons.append(entry)
    return {"mode": "kubernetes", "namespace": namespace, "daemons": daemons}


def cluster_explain(api_client: ApiClient, namespace: str, service_namespace: str, service_name: str) -> Answer:
    """The Service's IPs, and per node that announces it: the peers, whether advertised, the sessions."""
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    key = f"{service_namespace}/{service_name}"
    try:
        service = core.read_namespaced_service(service_name, service_namespace, _request_timeout=TIMEOUT)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        return {"service": key, "found": False, "reason": "no such Service"}
    ingress = (service.status.load_balancer.ingress if service.status and service.status.load_balancer else None) or []
    annotations = (service.metadata.annotations if service.metadata is not None else None) or {}
    answer: Answer = {"service": key, "found": True, "ips": [i.ip for i in ingress if i.ip],
                      "externalTrafficPolicy": service.spec.external_traffic_policy if service.spec is not None else None,
                      "pool": annotations.get("metallb.io/ip-allocated-from-pool")}  # fmt: skip
    selector = f"{LABEL_SERVICE_NAME}={service_name},{LABEL_SERVICE_NAMESPACE}={service_namespace}"
    sessions: dict[str, dict[str, str]] = {}
    for item in _items(custom, namespace, CONFIGURATION_STATE_VERSION, "configurationstates"):
        peers = (item.get("status") or {}).get("peers") or []
        sessions[item["metadata"]["name"].removeprefix("speaker-")] = {p.get("name"): p.get("state") for p in peers}
    nodes = []
    for item in _items(custom, namespace, SERVICE_BGP_STATUS.version, SERVICE_BGP_STATUS.plural, label_selector=selector):
        status = item.get("status") or {}
        node = status.get("node", "")
        per_peer = {p.get("peer"): p for p in status.get("peerStatus") or []}
        routes = [{"peer": peer, "prefix": ", ".join(answer["ips"]), "session": sessions.get(node, {}).get(peer, "unknown"),
                   "advertised": bool(per_peer.get(peer, {}).get("advertised")), **_router_report(per_peer.get(peer, {}))}
                  for peer in status.get("peers") or []]  # fmt: skip
        nodes.append({"node": node, "announced": bool(routes), "routes": routes})
    answer["nodes"] = sorted(nodes, key=lambda n: n["node"])
    if not nodes:
        answer["reason"] = "no node announces it (no ServiceBGPStatus): see `metallb-bgp status` and the speakers' logs"
    return answer


def _router_report(peer_status: dict[str, Any]) -> dict[str, Any]:
    """What the router reported over BMP, as the speaker wrote it (`routerReceived`, `routerAccepted`)."""
    if "routerAccepted" not in peer_status and "routerReceived" not in peer_status:
        return {}
    received, accepted = peer_status.get("routerReceived"), peer_status.get("routerAccepted")
    return {"router": {"received": received, "accepted": accepted, "pending": False,
                       "reason": "as the speaker's BMP station reports it (ServiceBGPStatus)"}}  # fmt: skip
