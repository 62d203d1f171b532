"""The objects tests (and the bench) build, one builder per kind, as a document, a model or YAML.

Each builder returns a `Doc`: the object as a Kubernetes document (a dict: what the fake API server
stores and a manifests folder holds), with `.model` (parsed by our own loader, failing the test if
it does not parse) and `.yaml` (one YAML document) from the same call. Defaults are what a Service or
a pool looks like after an API server has seen it (a LoadBalancer Service with `ipFamilies: [IPv4]`,
MetalLB's namespace for metallb.io objects); every keyword that is not a convenience below goes into
`spec` (or the object's body) as written, in the API's own camelCase.

`service_manifest` is the one text template the bench writes 10,000 of: kept as text, so what the
bench parses is what it always parsed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from metallb_bgp.api.loader import parse_object
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.api.selectors import LabelSelector
from metallb_bgp.core.config import model as cfg
from metallb_bgp.core.snapshot import ClusterSnapshot

GROUP = "metallb.io"
NS = "metallb-system"
V1B1 = f"{GROUP}/v1beta1"
V1B2 = f"{GROUP}/v1beta2"
BASIC_AUTH = "kubernetes.io/basic-auth"


class Doc(dict[str, Any]):
    """A Kubernetes object document, readable as our model (`.model`) or as YAML (`.yaml`)."""

    @property
    def model(self) -> Any:
        parsed = parse_object(dict(self))
        assert not parsed.errors, [str(e) for e in parsed.errors]
        return parsed.obj

    @property
    def yaml(self) -> str:
        return yaml.safe_dump(dict(self), sort_keys=False)


def yaml_of(*docs: Mapping[str, Any]) -> str:
    """Several documents as one YAML stream."""
    return "---\n".join(yaml.safe_dump(dict(doc), sort_keys=False) for doc in docs)


def served(doc: Mapping[str, Any], rv: str = "1") -> dict[str, Any]:
    """The document as an API server hands it back: with a uid (`uid-<name>`) and a resourceVersion."""
    metadata = dict(doc.get("metadata", {}))
    metadata.setdefault("uid", f"uid-{metadata.get('name', '')}")
    metadata.setdefault("resourceVersion", rv)
    return {**doc, "metadata": metadata}


def snapshot(*docs: Mapping[str, Any], namespace: str = NS, from_api: bool = False) -> ClusterSnapshot:
    """A snapshot of these documents as a source reads them (what fails to parse is a load error);
    `from_api`: as the Kubernetes source does, every object `served`."""
    objects: list[Any] = []
    errors: list[ObjectError] = []
    for doc in docs:
        parsed = parse_object(served(doc) if from_api else dict(doc))
        if parsed.obj is not None:
            objects.append(parsed.obj)
        errors.extend(parsed.errors)
    return ClusterSnapshot.from_objects(objects, errors=errors, namespace=namespace)


def _metadata(
    name: str,
    namespace: str | None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    uid: str | None = None,
    rv: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    if uid is not None:
        metadata["uid"] = uid
    if rv is not None:
        metadata["resourceVersion"] = rv
    return metadata


# --- core objects ------------------------------------------------------------------------------------


def service(
    name: str,
    namespace: str = "default",
    *,
    ips: Iterable[str] = (),
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    uid: str | None = None,
    rv: str | None = None,
    load_balancer_ip: str = "",
    ports: Iterable[tuple[int, str]] = ((80, "TCP"),),
    families: Sequence[str] | None = ("IPv4",),
    policy: str | None = None,
    traffic_policy: str = "Cluster",
    selector: Mapping[str, str] | None = None,
    load_balancer_class: str | None = None,
    type_: str = "LoadBalancer",
    **spec: Any,
) -> Doc:
    """A Service; `ips` are its status.loadBalancer.ingress IPs, `policy` its ipFamilyPolicy."""
    body: dict[str, Any] = {
        "type": type_,
        "ports": [{"port": port, "protocol": protocol} for port, protocol in ports],
        "externalTrafficPolicy": traffic_policy,
    }
    if families is not None:
        body["ipFamilies"] = list(families)
    if load_balancer_ip:
        body["loadBalancerIP"] = load_balancer_ip
    if policy is not None:
        body["ipFamilyPolicy"] = policy
    if selector is not None:
        body["selector"] = dict(selector)
    if load_balancer_class is not None:
        body["loadBalancerClass"] = load_balancer_class
    return Doc(
        apiVersion="v1",
        kind="Service",
        metadata=_metadata(name, namespace, labels, annotations, uid, rv),
        spec=body | spec,
        status={"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}},
    )


def endpoint(
    node: str | None,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    address: str = "10.244.0.1",
) -> dict[str, Any]:
    """One endpoint of an EndpointSlice; a condition left None is absent."""
    conditions = {k: v for k, v in {"ready": ready, "serving": serving, "terminating": terminating}.items() if v is not None}
    found: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if node is not None:
        found["nodeName"] = node
    return found


def endpoint_slice(service_name: str, *endpoints: dict[str, Any], namespace: str = "default", name: str | None = None) -> Doc:
    """An EndpointSlice of `service_name` (its `kubernetes.io/service-name` label)."""
    return Doc(
        apiVersion="discovery.k8s.io/v1",
        kind="EndpointSlice",
        metadata=_metadata(name or f"{service_name}-abc12", namespace, {"kubernetes.io/service-name": service_name}),
        addressType="IPv4",
        endpoints=list(endpoints),
    )


def node(
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    conditions: Mapping[str, str] | None = None,
    addresses: Mapping[str, str] | None = None,
    **more_labels: str,
) -> Doc:
    """A Node; `conditions` by type (`{"NetworkUnavailable": "True"}`), `addresses` by type (`InternalIP`)."""
    status: dict[str, Any] = {}
    if conditions:
        status["conditions"] = [{"type": kind, "status": value} for kind, value in conditions.items()]
    if addresses:
        status["addresses"] = [{"type": kind, "address": value} for kind, value in addresses.items()]
    doc = Doc(apiVersion="v1", kind="Node", metadata=_metadata(name, None, {**(labels or {}), **more_labels}))
    if status:
        doc["status"] = status
    return doc


def namespace(name: str, **labels: str) -> Doc:
    return Doc(apiVersion="v1", kind="Namespace", metadata=_metadata(name, None, labels))


def secret(name: str, *, namespace: str = NS, type_: str = BASIC_AUTH, raw: str | None = None, **string_data: str) -> Doc:
    """A Secret with `stringData`, or with `data.password` given base64 as it is (`raw`)."""
    doc = Doc(apiVersion="v1", kind="Secret", metadata=_metadata(name, namespace), type=type_)
    if raw is not None:
        doc["data"] = {"password": raw}
    else:
        doc["stringData"] = dict(string_data)
    return doc


# --- metallb.io objects ------------------------------------------------------------------------------


def metallb_object(
    api_version: str,
    kind: str,
    name: str,
    spec: Mapping[str, Any] | None,
    *,
    namespace: str | None = NS,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    rv: str | None = None,
    status: Mapping[str, Any] | None = None,
) -> Doc:
    """Any metallb.io object; the builders below are this with each kind's spec."""
    doc = Doc(apiVersion=api_version, kind=kind, metadata=_metadata(name, namespace, labels, annotations, None, rv))
    if spec is not None:
        doc["spec"] = dict(spec)
    if status is not None:
        doc["status"] = dict(status)
    return doc


def pool(
    name: str = "pool",
    *addresses: str,
    namespace: str | None = NS,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    rv: str | None = None,
    **spec: Any,
) -> Doc:
    body = {"addresses": list(addresses), **spec}
    return metallb_object(V1B1, "IPAddressPool", name, body, namespace=namespace, labels=labels, annotations=annotations, rv=rv)


def peer(name: str, address: str = "10.0.0.1", *, secret: str | None = None, namespace: str | None = NS, **spec: Any) -> Doc:
    """A BGPPeer (myASN 64500, peerASN 64501 unless given); `secret` names its password Secret."""
    body: dict[str, Any] = {"myASN": 64500, "peerASN": 64501}
    if address:
        body["peerAddress"] = address
    if secret is not None:
        body["passwordSecret"] = {"name": secret, "namespace": NS}
    return metallb_object(V1B2, "BGPPeer", name, body | spec, namespace=namespace)


def advertisement(name: str = "adv", *, namespace: str | None = NS, **spec: Any) -> Doc:
    return metallb_object(V1B1, "BGPAdvertisement", name, spec, namespace=namespace)


def community(name: str, *, namespace: str | None = NS, **aliases: str) -> Doc:
    return metallb_object(V1B1, "Community", name, {"communities": [{"name": k, "value": v} for k, v in aliases.items()]},
                    namespace=namespace)  # fmt: skip


def bfd_profile(name: str, *, namespace: str | None = NS, **spec: Any) -> Doc:
    return metallb_object(V1B1, "BFDProfile", name, spec, namespace=namespace)


# --- compiled configuration (what compile_config returns), for tests of what comes after it ------------


def config_pool(
    name: str,
    *cidrs: str,
    auto_assign: bool = True,
    avoid_buggy_ips: bool = False,
    allocation: cfg.ServiceAllocation | None = None,
) -> cfg.Pool:
    return cfg.Pool(
        name=name,
        cidrs=tuple(ipaddress.ip_network(c) for c in cidrs),
        auto_assign=auto_assign,
        avoid_buggy_ips=avoid_buggy_ips,
        allocation=allocation,
    )


def config_of(*pools: cfg.Pool, peers: Iterable[cfg.Peer] = (), advertisements: Iterable[cfg.Advertisement] = ()) -> cfg.Config:
    return cfg.Config(pools={p.name: p for p in pools}, peers={p.name: p for p in peers}, advertisements=tuple(advertisements))


def selector(**labels: str) -> LabelSelector:
    return LabelSelector(match_labels=frozenset(labels.items()))


# --- text, as the bench writes it --------------------------------------------------------------------


def service_manifest(
    name: str, *, local: bool = False, endpoint_node: str = "node-a", endpoint_nodes: tuple[str, ...] = ()
) -> str:
    """One LoadBalancer Service with its EndpointSlice, as YAML text; `endpoint_nodes`: one ready
    endpoint on each (default: one on `endpoint_node`)."""
    policy = "Local" if local else "Cluster"
    endpoints = "".join(
        f"- addresses: [10.0.0.{i + 1}]\n  conditions: {{ready: true}}\n  nodeName: {node}\n"
        for i, node in enumerate(endpoint_nodes or (endpoint_node,))
    )
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  selector: {{app: {name}}}
  ports: [{{port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints:
{endpoints}"""
