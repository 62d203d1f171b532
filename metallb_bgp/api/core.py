"""The slices of Kubernetes core objects that a BGP load balancer reads.

Fields we do not use are ignored (a real Service carries dozens), so any object `kubectl get -o yaml`
prints loads here. Defaults are the API server's defaults, because manifests in a folder have not been
through an API server. Every class here is a `core_model` (a frozen slotted pydantic dataclass, see
`api.meta`): lists are tuples, so an object is immutable all the way down.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from pydantic import Field, StrictBool, StrictInt

from metallb_bgp.api.meta import DNSLabelMeta, KubeObject, ServiceMeta, core_model

# --- Service -----------------------------------------------------------------------------------------


@core_model
class ServicePort:
    name: str = ""
    port: StrictInt = Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    node_port: StrictInt | None = Field(default=None, ge=0, le=65535)


@core_model
class ServiceSpec:
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    ports: tuple[ServicePort, ...] = ()
    selector: dict[str, str] | None = None
    external_traffic_policy: Literal["Cluster", "Local"] = "Cluster"
    load_balancer_class: str | None = None
    load_balancer_ip: str = Field(default="", alias="loadBalancerIP")
    ip_families: tuple[Literal["IPv4", "IPv6"], ...] = ()
    ip_family_policy: Literal["SingleStack", "PreferDualStack", "RequireDualStack"] | None = None
    cluster_ip: str = Field(default="", alias="clusterIP")


@core_model
class LoadBalancerIngress:
    ip: str = ""
    hostname: str = ""


@core_model
class LoadBalancerStatus:
    ingress: tuple[LoadBalancerIngress, ...] = ()


@core_model
class ServiceStatus:
    load_balancer: LoadBalancerStatus = Field(default_factory=LoadBalancerStatus)


@core_model
class Service(KubeObject):
    kind: Literal["Service"]
    metadata: ServiceMeta
    spec: ServiceSpec = Field(default_factory=ServiceSpec)
    status: ServiceStatus = Field(default_factory=ServiceStatus)

    def status_ips(self) -> tuple[IPv4Address | IPv6Address, ...]:
        """The IPs in status.loadBalancer.ingress that parse (hostnames and garbage are skipped)."""
        return status_addresses(ingress.ip for ingress in self.status.load_balancer.ingress)


def status_addresses(texts: Iterable[str]) -> tuple[IPv4Address | IPv6Address, ...]:
    """The one reading of a Service's status IPs, for every caller (`plan`, `run`, the controller):
    the entries that parse, in order; hostnames, garbage and zones are skipped, as MetalLB's
    `net.ParseIP` loop skips them. So a status holding one unreadable entry beside a good IP keeps
    the good one everywhere."""
    found = []
    for text in texts:
        try:
            found.append(_address(text.strip()))
        except ValueError:
            continue
    return tuple(found)


def _address(text: str) -> IPv4Address | IPv6Address:
    """An address without a zone: `ip_address` keeps whatever follows a `%` (newlines too) in it."""
    if "%" in text:
        raise ValueError(f"{text!r} has a zone")
    return ipaddress.ip_address(text)


# --- EndpointSlice -----------------------------------------------------------------------------------


@core_model
class EndpointConditions:
    ready: StrictBool | None = None
    serving: StrictBool | None = None
    terminating: StrictBool | None = None


@core_model
class Endpoint:
    addresses: tuple[str, ...] = ()
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)
    node_name: str | None = None

    @property
    def is_serving(self) -> bool:
        """MetalLB's rule: serving if `serving` is true, else if `ready` is unset or true."""
        if self.conditions.serving is not None:
            return self.conditions.serving
        return self.conditions.ready is not False


@core_model
class EndpointSlice(KubeObject):
    kind: Literal["EndpointSlice"]
    address_type: str = "IPv4"
    endpoints: tuple[Endpoint, ...] | None = None

    @property
    def service_name(self) -> str:
        return self.metadata.labels.get("kubernetes.io/service-name", "")


# --- Node, Namespace, Secret -------------------------------------------------------------------------


@core_model
class NodeCondition:
    type: str
    status: str = "Unknown"


@core_model
class NodeAddress:
    type: str
    address: str


@core_model
class NodeStatus:
    conditions: tuple[NodeCondition, ...] = ()
    addresses: tuple[NodeAddress, ...] = ()


@core_model
class Node(KubeObject):
    kind: Literal["Node"]
    status: NodeStatus = Field(default_factory=NodeStatus)

    def condition(self, type_: str) -> str | None:
        return next((c.status for c in self.status.conditions if c.type == type_), None)

    def address_of(self, version: int) -> IPv4Address | IPv6Address | None:
        """The node's first InternalIP of an IP version (else its first ExternalIP), as kubelet reports them."""
        for wanted in ("InternalIP", "ExternalIP"):
            for entry in self.status.addresses:
                if entry.type != wanted:
                    continue
                try:
                    address = _address(entry.address)
                except ValueError:
                    continue
                if address.version == version:
                    return address
        return None


@core_model
class Namespace(KubeObject):
    kind: Literal["Namespace"]
    metadata: DNSLabelMeta


@core_model
class Secret(KubeObject):
    kind: Literal["Secret"]
    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict, repr=False)
    string_data: dict[str, str] = Field(default_factory=dict, repr=False)

    def value(self, key: str) -> str | None:
        """A key's decoded value (stringData wins, as the API server merges it over data)."""
        if key in self.string_data:
            return self.string_data[key]
        if key not in self.data:
            return None
        try:
            return base64.b64decode(self.data[key], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(f"data.{key} is not valid base64-encoded UTF-8") from None
