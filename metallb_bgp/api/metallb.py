"""The metallb.io kinds, accepting MetalLB's manifests unchanged.

Field names, optionality and defaults follow MetalLB's Go types (api/v1beta1, api/v1beta2). Shape
checks live here (types, unknown fields, enums); every rule that needs more than one field or more than
one object lives in `metallb_bgp.core.config`, so all rules are reported the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictInt

from metallb_bgp.api.duration import Duration
from metallb_bgp.api.meta import LabelSelectorSpec, Named, ObjectMeta, Strict

GROUP = "metallb.io"
UINT32 = 4294967295


class MetalLBObject(Named, Strict):
    model_config = ConfigDict(extra="forbid")
    api_version: str
    kind: str
    metadata: ObjectMeta
    status: dict[str, Any] | None = None


# --- IPAddressPool -----------------------------------------------------------------------------------


class ServiceAllocationSpec(Strict):
    priority: StrictInt | None = None
    namespaces: list[str] = Field(default_factory=list)
    namespace_selectors: list[LabelSelectorSpec] = Field(default_factory=list)
    service_selectors: list[LabelSelectorSpec] = Field(default_factory=list)


class IPAddressPoolSpec(Strict):
    addresses: list[str]
    auto_assign: StrictBool = True
    avoid_buggy_ips: StrictBool = Field(default=False, alias="avoidBuggyIPs")
    service_allocation: ServiceAllocationSpec | None = None


class IPAddressPool(MetalLBObject):
    kind: Literal["IPAddressPool"]
    spec: IPAddressPoolSpec


# --- BGPPeer -----------------------------------------------------------------------------------------


class SecretReference(Strict):
    name: str = Field(min_length=1)
    namespace: str = ""


class BGPPeerSpecV1beta2(Strict):
    my_asn: StrictInt = Field(alias="myASN", ge=0, le=UINT32)
    peer_asn: StrictInt | None = Field(default=None, alias="peerASN", ge=0, le=UINT32)
    dynamic_asn: Literal["internal", "external"] | None = Field(default=None, alias="dynamicASN")
    local_asn: StrictInt | None = Field(default=None, alias="localASN", ge=0, le=UINT32)
    peer_address: str = ""
    source_address: str = ""
    peer_port: StrictInt = Field(default=179, ge=0, le=16384)
    hold_time: Duration | None = None
    keepalive_time: Duration | None = None
    connect_time: Duration | None = None
    router_id: str = Field(default="", alias="routerID")
    node_selectors: list[LabelSelectorSpec] = Field(default_factory=list)
    password: str = Field(default="", repr=False)
    password_secret: SecretReference | None = None
    bfd_profile: str = Field(default="", alias="bfdProfile")
    enable_graceful_restart: StrictBool = False
    ebgp_multi_hop: StrictBool = Field(default=False, alias="ebgpMultiHop")
    vrf: str = ""
    disable_mp: StrictBool = Field(default=False, alias="disableMP")
    dual_stack_address_family: StrictBool = False
    interface: str = ""


class BGPPeerSpecV1beta1(Strict):
    """v1beta1: `peerPort` (older manifests also say `port`), node selectors without the LabelSelector type."""

    my_asn: StrictInt = Field(alias="myASN", ge=0, le=UINT32)
    peer_asn: StrictInt = Field(alias="peerASN", ge=0, le=UINT32)
    peer_address: str
    source_address: str = ""
    peer_port: StrictInt | None = Field(default=None, ge=0, le=16384)
    port: StrictInt | None = Field(default=None, ge=0, le=16384)
    hold_time: Duration | None = None
    keepalive_time: Duration | None = None
    router_id: str = Field(default="", alias="routerID")
    node_selectors: list[LabelSelectorSpec] = Field(default_factory=list)
    password: str = Field(default="", repr=False)
    bfd_profile: str = Field(default="", alias="bfdProfile")
    ebgp_multi_hop: StrictBool = Field(default=False, alias="ebgpMultiHop")

    def to_v1beta2(self) -> BGPPeerSpecV1beta2:
        """The same values, already validated here (durations already seconds): built, not re-read."""
        return BGPPeerSpecV1beta2.model_construct(
            my_asn=self.my_asn,
            peer_asn=self.peer_asn,
            peer_address=self.peer_address,
            source_address=self.source_address,
            peer_port=self.peer_port if self.peer_port is not None else (self.port if self.port is not None else 179),
            hold_time=self.hold_time,
            keepalive_time=self.keepalive_time,
            router_id=self.router_id,
            node_selectors=self.node_selectors,
            password=self.password,
            bfd_profile=self.bfd_profile,
            ebgp_multi_hop=self.ebgp_multi_hop,
        )


class BGPPeer(MetalLBObject):
    """Both versions end up here: a v1beta1 object is converted on load, as MetalLB's conversion webhook does."""

    kind: Literal["BGPPeer"]
    spec: BGPPeerSpecV1beta2


class BGPPeerV1beta1(MetalLBObject):
    kind: Literal["BGPPeer"]
    spec: BGPPeerSpecV1beta1

    def to_v1beta2(self) -> BGPPeer:
        return BGPPeer(
            api_version=f"{GROUP}/v1beta2", kind="BGPPeer", metadata=self.metadata, spec=self.spec.to_v1beta2()
        )


# --- BGPAdvertisement, Community, BFDProfile, L2Advertisement -------------------------------------


class BGPAdvertisementSpec(Strict):
    aggregation_length: StrictInt = Field(default=32, ge=1)
    aggregation_length_v6: StrictInt = Field(default=128, alias="aggregationLengthV6", ge=1)
    local_pref: StrictInt | None = Field(default=None, ge=0, le=UINT32)
    communities: list[str] = Field(default_factory=list)
    ip_address_pools: list[str] = Field(default_factory=list, alias="ipAddressPools")
    ip_address_pool_selectors: list[LabelSelectorSpec] = Field(default_factory=list, alias="ipAddressPoolSelectors")
    node_selectors: list[LabelSelectorSpec] = Field(default_factory=list)
    peers: list[str] = Field(default_factory=list)
    service_selectors: list[LabelSelectorSpec] = Field(default_factory=list)


class BGPAdvertisement(MetalLBObject):
    kind: Literal["BGPAdvertisement"]
    spec: BGPAdvertisementSpec = Field(default_factory=BGPAdvertisementSpec)


class CommunityAlias(Strict):
    name: str = Field(min_length=1)
    value: str = Field(min_length=1)


class CommunitySpec(Strict):
    communities: list[CommunityAlias] = Field(default_factory=list)


class Community(MetalLBObject):
    kind: Literal["Community"]
    spec: CommunitySpec = Field(default_factory=CommunitySpec)


class BFDProfileSpec(Strict):
    receive_interval: StrictInt | None = Field(default=None, ge=10, le=60000)
    transmit_interval: StrictInt | None = Field(default=None, ge=10, le=60000)
    detect_multiplier: StrictInt | None = Field(default=None, ge=2, le=255)
    echo_interval: StrictInt | None = Field(default=None, ge=10, le=60000)
    echo_mode: StrictBool | None = None
    passive_mode: StrictBool | None = None
    minimum_ttl: StrictInt | None = Field(default=None, alias="minimumTtl", ge=1, le=254)


class BFDProfile(MetalLBObject):
    kind: Literal["BFDProfile"]
    spec: BFDProfileSpec = Field(default_factory=BFDProfileSpec)


class L2AdvertisementSpec(Strict):
    ip_address_pools: list[str] = Field(default_factory=list, alias="ipAddressPools")
    ip_address_pool_selectors: list[LabelSelectorSpec] = Field(default_factory=list, alias="ipAddressPoolSelectors")
    node_selectors: list[LabelSelectorSpec] = Field(default_factory=list)
    interfaces: list[str] = Field(default_factory=list)


class L2Advertisement(MetalLBObject):
    """Accepted so MetalLB manifests load; this speaker is BGP-only and reports it as not handled."""

    kind: Literal["L2Advertisement"]
    spec: L2AdvertisementSpec = Field(default_factory=L2AdvertisementSpec)
