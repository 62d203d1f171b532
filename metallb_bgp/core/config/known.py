"""What later kinds may refer to (pools, profiles, aliases, Secrets, Nodes, peers) and why an unusable
name is unusable: built by `rules` once the earlier kinds are checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metallb_bgp.api.core import Node, Secret
from metallb_bgp.api.metallb import (
    IPAddressPool,
)
from metallb_bgp.core.config import model as cfg
from metallb_bgp.core.config.pools import PoolInfo
from metallb_bgp.core.config.profiles import Aliases
from metallb_bgp.core.config.report import Issue


@dataclass(frozen=True)
class Known:
    """What the later objects may refer to, and why an unusable name is unusable."""

    namespace: str
    pools: Mapping[str, PoolInfo]
    pool_objects: tuple[IPAddressPool, ...]
    bad: Mapping[tuple[str, str], str]
    bfd_profiles: Mapping[str, cfg.BFDProfile]
    aliases: Aliases
    secrets: Mapping[tuple[str, str], tuple[Secret, ...]]
    nodes: tuple[Node, ...]
    peers: Mapping[str, cfg.Peer] = field(default_factory=dict)
    secret_issues: list[tuple[Secret, Issue]] = field(default_factory=list)  # found while reading passwords
