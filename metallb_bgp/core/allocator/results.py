"""What allocation returns: each service's `Assignment`, refusals and cleared assignments (`Allocation`),
and a pool's counters (`PoolUsage`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress


@dataclass(frozen=True, slots=True)
class Assignment:
    ips: tuple[IPAddress, ...]  # one per family, the service's primary family first
    pool: str
    sharing_key: str | None = None


@dataclass(frozen=True)
class Allocation:
    assignments: Mapping[ServiceKey, Assignment] = field(default_factory=dict)
    refusals: Mapping[ServiceKey, str] = field(default_factory=dict)  # LoadBalancer services of ours left without IP
    warnings: tuple[ObjectError, ...] = ()
    cleared: Mapping[ServiceKey, str] = field(default_factory=dict)  # previous IPs dropped, and why

    def service_ips(self) -> dict[ServiceKey, tuple[IPAddress, ...]]:
        """The assignments as `allocate(existing=...)` takes them on the next run."""
        return {key: assignment.ips for key, assignment in self.assignments.items()}


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """IPAddressPool status counters (MetalLB's assignedIPv4/assignedIPv6/availableIPv4/availableIPv6)."""

    assigned_ipv4: int = 0
    assigned_ipv6: int = 0
    available_ipv4: int = 0
    available_ipv6: int = 0
