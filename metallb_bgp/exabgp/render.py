"""Render ExaBGP 5 configuration text for this node's BGP peers.

ExaBGP learns its neighbours only from a configuration file (there is no runtime add/remove), so the
engine rewrites this file and asks ExaBGP to `reload` it whenever the set of peers changes. Keeping the
rendering a pure function of `Peer` values makes it golden-file testable and keeps every ExaBGP syntax
decision in one place.

Each `Peer` becomes one `neighbor` block. ExaBGP names a neighbour by its address and ASNs, not by our
peer name, so rendering also produces the mapping both ways: the `selector` that targets one
neighbour in API commands (`neighbor 192.0.2.1 local-as 64512 peer-as 64513`) and the address/ASN
triple that identifies it in ExaBGP's JSON events.

The `description` of every block carries a digest of the block (`rev=`): ExaBGP can silently skip a
`reload` (it drops the request while routes are still queued for a peer), and the engine checks the
descriptions ExaBGP reports after a reload to know whether the new configuration is really in force.

What ExaBGP 5.0.15 cannot express, and is therefore left out (see `UNSUPPORTED`): the keepalive
interval (always hold-time / 3), the connect retry time (ExaBGP backs off 1 s .. 60 s on its own), and
BFD. Dynamic ASN `external` renders as `peer-as auto`, which accepts any ASN the router sends,
including our own: the internal/external distinction is not enforced by ExaBGP.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from metallb_bgp.core.config.model import MAX_MD5_PASSWORD_BYTES, DynamicASN, Peer
from metallb_bgp.core.net import IPAddress

PROCESS_NAME = "metallb"
GRACEFUL_RESTART_TIME = 120  # seconds; FRR's default restart time, which MetalLB uses
EBGP_SINGLE_HOP_TTL = 1  # what FRR sends to an eBGP peer without ebgp-multihop
EBGP_MULTIHOP_TTL = 255

UNSUPPORTED = {
    "keepalive_time": "ExaBGP always sends keepalives every hold-time / 3",
    "connect_time": "ExaBGP retries connections with its own backoff (1 s growing to 60 s)",
}

_SAFE_TOKEN = re.compile(r"[^A-Za-z0-9._:/=-]")
_UNQUOTED_WORD = re.compile(r"^[^\s\"';{}\[\],#\\]+$")


@dataclass(frozen=True)
class Neighbor:
    """One ExaBGP `neighbor` block, derived from one `Peer`."""

    peer_name: str
    address: IPAddress
    local_asn: int
    peer_asn: int | None  # None: `peer-as auto`
    session_family: int  # 4 or 6: the family of the TCP session
    families: frozenset[int]  # address families carried on the session
    ibgp: bool
    graceful_restart: bool
    selector: str  # targets this neighbour in an API command
    description: str  # carries `rev=<digest of the block>`
    block: str = field(repr=False)  # may hold the (encoded) MD5 password: never log it


@dataclass(frozen=True)
class RenderedConfig:
    text: str = field(repr=False)  # may hold MD5 passwords: never log it
    neighbors: Mapping[str, Neighbor]  # by peer name
    rejected: Mapping[str, str]  # peer name -> why it has no neighbour block


def render_config(
    peers: Sequence[Peer],
    *,
    router_id: IPAddress,
    process_command: Sequence[str],
    local_addresses: Sequence[IPAddress] = (),
    sources: Mapping[str, IPAddress] | None = None,
) -> str:
    """The ExaBGP configuration text for `peers` (see `render` for the neighbour mapping)."""
    return render(
        peers, router_id=router_id, process_command=process_command, local_addresses=local_addresses, sources=sources
    ).text


def render(
    peers: Sequence[Peer],
    *,
    router_id: IPAddress,
    process_command: Sequence[str],
    local_addresses: Sequence[IPAddress] = (),
    sources: Mapping[str, IPAddress] | None = None,
) -> RenderedConfig:
    """Render one `process` block (the API relay) and one `neighbor` block per peer.

    `router_id` is this node's BGP identifier (a peer's own `router_id` overrides it). A peer's local
    address is its `source_address`, else `sources[peer name]` (the address the kernel would choose
    to reach it), else the one of its family in `local_addresses` (the node's addresses), else `auto`.
    An explicit address matters: after a `reload`, ExaBGP gives every unchanged neighbour a fresh
    configuration object, and with `auto` its local address stays empty until the session reconnects,
    so every `next-hop self` command to it is refused meanwhile. Peers ExaBGP could not tell apart, or
    whose settings it cannot express, are left out and named in `rejected` with the reason.
    """
    neighbors: dict[str, Neighbor] = {}
    rejected: dict[str, str] = {}
    owner_of_selector: dict[str, str] = {}
    for peer in sorted(peers, key=lambda p: p.name):
        problem = _peer_problem(peer, router_id)
        if problem is None:
            neighbor = _neighbor(peer, router_id=router_id, local_address=_local_address(peer, local_addresses, sources or {}))
            other = owner_of_selector.get(neighbor.selector)
            if other is not None:
                problem = f"ExaBGP cannot tell it apart from peer {other} (same address and ASNs)"
            else:
                owner_of_selector[neighbor.selector] = peer.name
                neighbors[peer.name] = neighbor
        if problem is not None:
            rejected[peer.name] = problem
    text = "\n".join([_process_block(process_command), *(n.block for n in neighbors.values())])
    return RenderedConfig(text=text, neighbors=neighbors, rejected=rejected)


def ignored_settings(peer: Peer) -> list[str]:
    """The settings of `peer` that ExaBGP cannot honour (see `UNSUPPORTED`)."""
    ignored = []
    if peer.keepalive_time and peer.hold_time and peer.keepalive_time != peer.hold_time // 3:
        ignored.append("keepalive_time")
    if peer.connect_time is not None:
        ignored.append("connect_time")
    return ignored


def peer_asn_of(peer: Peer) -> int | None:
    """The ASN to expect from the router; None means any (`peer-as auto`)."""
    if peer.peer_asn is not None:
        return peer.peer_asn
    if peer.dynamic_asn is DynamicASN.INTERNAL:
        return peer.my_asn
    return None


def families_of(peer: Peer) -> frozenset[int]:
    own = peer.address.version
    if peer.dual_stack and not peer.disable_mp:
        return frozenset({4, 6})
    return frozenset({own})


def selector_of(address: IPAddress, local_asn: int, peer_asn: int | None) -> str:
    """How an API command names one neighbour (ExaBGP matches these words against its neighbour key)."""
    return f"neighbor {address} local-as {local_asn} peer-as {'auto' if peer_asn is None else peer_asn}"


def _peer_problem(peer: Peer, router_id: IPAddress) -> str | None:
    if peer.peer_asn is None and peer.dynamic_asn is None:
        return "neither peer_asn nor dynamic_asn is set"
    if peer.source_address is not None and peer.source_address.version != peer.address.version:
        return "source address and peer address are of different families"
    if not isinstance(peer.router_id or router_id, IPv4Address):
        return "the BGP router id must be an IPv4 address"
    if peer.hold_time != 0 and not 3 <= peer.hold_time <= 65535:
        return "hold time must be 0 or between 3 and 65535 seconds"
    if peer.password is not None and not 0 < len(peer.password.encode()) <= MAX_MD5_PASSWORD_BYTES:
        return f"the TCP MD5 password must be 1 to {MAX_MD5_PASSWORD_BYTES} bytes"
    if peer.vrf and not _UNQUOTED_WORD.match(peer.vrf):
        return "the VRF name cannot be written in ExaBGP's configuration"
    return None


def _neighbor(peer: Peer, *, router_id: IPAddress, local_address: IPAddress | None) -> Neighbor:
    peer_asn = peer_asn_of(peer)
    selector = selector_of(peer.address, peer.my_asn, peer_asn)
    body = _neighbor_body(peer, router_id=router_id, local_address=local_address)
    rev = hashlib.sha256(f"{peer.name}\n{body}".encode()).hexdigest()[:12]
    description = f"metallb-bgp peer={_SAFE_TOKEN.sub('_', peer.name)} rev={rev}"
    block = f'neighbor {peer.address} {{\n    description "{description}";\n{body}}}\n'
    return Neighbor(
        peer_name=peer.name,
        address=peer.address,
        local_asn=peer.my_asn,
        peer_asn=peer_asn,
        session_family=peer.address.version,
        families=families_of(peer),
        ibgp=peer.is_ibgp,
        graceful_restart=peer.graceful_restart,
        selector=selector,
        description=description,
        block=block,
    )


def _local_address(peer: Peer, local_addresses: Sequence[IPAddress], sources: Mapping[str, IPAddress]) -> IPAddress | None:
    if peer.source_address is not None:
        return peer.source_address
    source = sources.get(peer.name)
    if source is not None and source.version == peer.address.version:
        return source
    return next((a for a in local_addresses if a.version == peer.address.version), None)


def _neighbor_body(peer: Peer, *, router_id: IPAddress, local_address: IPAddress | None) -> str:
    peer_asn = peer_asn_of(peer)
    lines = [
        f"router-id {peer.router_id or router_id};",
        f"local-address {local_address if local_address is not None else 'auto'};",
        f"local-as {peer.my_asn};",
        f"peer-as {'auto' if peer_asn is None else peer_asn};",
        f"connect {peer.port};",
        f"hold-time {peer.hold_time};",
        "passive false;",
        "adj-rib-in false;",
        "adj-rib-out false;",
        "group-updates true;",
        f"manual-eor {'true' if peer.graceful_restart else 'false'};",
    ]
    lines += _md5_lines(peer.password)
    lines += _ttl_lines(peer)
    if peer.vrf:
        lines.append(f"source-interface {peer.vrf};")
    lines += _block("capability", _capability_lines(peer))
    lines += _block("family", [f"ipv{family} unicast;" for family in sorted(families_of(peer))])
    lines += _block("api", _api_lines())
    return "".join(f"    {line}\n" for line in lines)


def _md5_lines(password: str | None) -> list[str]:
    if password is None:
        return []
    # base64 sidesteps every quoting and escaping rule of ExaBGP's tokeniser
    encoded = base64.b64encode(password.encode()).decode()
    return ["md5-base64 true;", f'md5-password "{encoded}";']


def _ttl_lines(peer: Peer) -> list[str]:
    if peer.is_ibgp:
        return []
    return [f"outgoing-ttl {EBGP_MULTIHOP_TTL if peer.ebgp_multihop else EBGP_SINGLE_HOP_TTL};"]


def _capability_lines(peer: Peer) -> list[str]:
    lines = ["route-refresh disable;"]
    if peer.graceful_restart:
        lines.append(f"graceful-restart {GRACEFUL_RESTART_TIME};")
    return lines


def _api_lines() -> list[str]:
    return [
        f"processes [ {PROCESS_NAME} ];",
        "neighbor-changes;",
        *_block("receive", ["parsed;", "notification;"]),
    ]


def _block(name: str, lines: Sequence[str]) -> list[str]:
    return [f"{name} {{", *(f"    {line}" for line in lines), "}"]


def _process_block(command: Sequence[str]) -> str:
    run = " ".join(_config_word(word) for word in command)
    return f"process {PROCESS_NAME} {{\n    run {run};\n    encoder json;\n}}\n"


def _config_word(word: str) -> str:
    if _UNQUOTED_WORD.match(word):
        return word
    if '"' in word or "\\" in word:
        raise ValueError(f"cannot write {word!r} in an ExaBGP configuration")
    return f'"{word}"'
