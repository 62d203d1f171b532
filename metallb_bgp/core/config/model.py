"""The compiled, validated configuration: what the allocator and the speaker reason about.

These are plain frozen values produced by `metallb_bgp.core.config.compile.compile_config` from the user's
objects (pydantic models in `metallb_bgp.api`). Every reference here is already resolved and valid:
advertisement pool selectors have become pool names, community aliases have become values, a peer's
password has been read from its Secret. Code that consumes a `Config` never re-validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from metallb_bgp.api.selectors import LabelSelector
from metallb_bgp.core.net import IPAddress, IPNetwork

MAX_MD5_PASSWORD_BYTES = 80  # RFC 2385 / Linux TCP_MD5SIG_MAXKEYLEN


@dataclass(frozen=True)
class ServiceAllocation:
    """IPAddressPool.spec.serviceAllocation: which services may take IPs from a pool, and in what order."""

    priority: int | None = None  # lower number = tried first; None = after every pool with a priority
    namespaces: frozenset[str] = frozenset()
    namespace_selectors: tuple[LabelSelector, ...] = ()
    service_selectors: tuple[LabelSelector, ...] = ()


@dataclass(frozen=True)
class Pool:
    name: str
    cidrs: tuple[IPNetwork, ...]  # ranges already summarized into CIDRs, in the user's order
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    allocation: ServiceAllocation | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


class DynamicASN(str, Enum):
    INTERNAL = "internal"
    EXTERNAL = "external"


@dataclass(frozen=True)
class Peer:
    """One BGPPeer, v1beta1 and v1beta2 alike. Times are in seconds."""

    name: str
    my_asn: int
    address: IPAddress
    peer_asn: int | None = None
    dynamic_asn: DynamicASN | None = None
    port: int = 179
    source_address: IPAddress | None = None
    router_id: IPAddress | None = None
    hold_time: int = 90
    keepalive_time: int = 30
    connect_time: int | None = None
    node_selectors: tuple[LabelSelector, ...] = ()  # empty = every node
    password: str | None = field(default=None, repr=False)  # never printed
    bfd_profile: str | None = None
    graceful_restart: bool = False
    ebgp_multihop: bool = False
    vrf: str = ""
    disable_mp: bool = False
    dual_stack: bool = False

    @property
    def is_ibgp(self) -> bool:
        if self.dynamic_asn is not None:
            return self.dynamic_asn is DynamicASN.INTERNAL
        return self.peer_asn == self.my_asn


@dataclass(frozen=True, order=True)
class Community:
    """A BGP community in its canonical text form: `65000:100` (standard) or `1:2:3` (large)."""

    value: str
    large: bool = False

    def __str__(self) -> str:
        return f"large:{self.value}" if self.large else self.value


@dataclass(frozen=True)
class Advertisement:
    name: str
    pools: frozenset[str]  # resolved from ipAddressPools + ipAddressPoolSelectors (neither = all pools)
    aggregation_length: int = 32
    aggregation_length_v6: int = 128
    local_pref: int | None = None
    communities: frozenset[Community] = frozenset()
    node_selectors: tuple[LabelSelector, ...] = ()  # empty = every node
    peers: frozenset[str] = frozenset()  # empty = every peer
    service_selectors: tuple[LabelSelector, ...] = ()  # empty = every service


@dataclass(frozen=True)
class BFDProfile:
    name: str
    receive_interval: int = 300  # milliseconds
    transmit_interval: int = 300
    detect_multiplier: int = 3
    echo_interval: int = 50
    echo_mode: bool = False
    passive_mode: bool = False
    minimum_ttl: int = 254


@dataclass(frozen=True)
class Config:
    pools: Mapping[str, Pool] = field(default_factory=dict)
    peers: Mapping[str, Peer] = field(default_factory=dict)
    advertisements: tuple[Advertisement, ...] = ()
    bfd_profiles: Mapping[str, BFDProfile] = field(default_factory=dict)

    def pool_of(self, ip: IPAddress) -> Pool | None:
        """The pool that contains `ip`, if any (pools never overlap in a compiled Config)."""
        for pool in self.pools.values():
            if any(ip in cidr for cidr in pool.cidrs):
                return pool
        return None
