"""BGPPeer rules: address and ASNs, timers, password Secret, BFD profile, sessions that would clash."""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from metallb_bgp.api.core import Node, Secret
from metallb_bgp.api.metallb import (
    BGPPeer,
    BGPPeerSpecV1beta2,
)
from metallb_bgp.api.problems import printable
from metallb_bgp.core.config import model as cfg
from metallb_bgp.core.config.known import Known
from metallb_bgp.core.config.parse import may_share_nodes, parse_selectors, selected_nodes
from metallb_bgp.core.config.report import Issue, Report, err, guarded, has_error, named, warn
from metallb_bgp.core.net import IPAddress, parse_ip

BASIC_AUTH = "kubernetes.io/basic-auth"
DEFAULT_HOLD_TIME = 90
MIN_HOLD_TIME = 3
MAX_BGP_SECONDS = 65535  # hold time and connect time are 16-bit numbers of seconds
MAX_PEER_PORT = 16384


def secret_index(secrets: Iterable[Secret], namespace: str) -> dict[tuple[str, str], tuple[Secret, ...]]:
    index: dict[tuple[str, str], list[Secret]] = defaultdict(list)
    for secret in secrets:
        index[(secret.metadata.namespace or namespace, secret.metadata.name)].append(secret)
    return {key: tuple(found) for key, found in index.items()}


def check_peers(objects: Mapping[str, BGPPeer], known: Known, report: Report) -> dict[str, cfg.Peer]:
    peers: dict[str, cfg.Peer] = {}
    for name, obj in objects.items():
        peer = guarded(report, obj, functools.partial(_peer, obj, known))
        if peer is None:
            continue
        twin = next((p for p in peers.values() if _same_session(p, peer, known.nodes)), None)
        if twin is not None:
            report.add(obj, err("spec.peerAddress", _clash_message(twin, peer), named("BGPPeer", twin.name)))
            continue
        peers[name] = peer
        if (shared := _shared_router_id(peer, known.nodes)) is not None:
            report.add(obj, shared)
    for secret, issue in known.secret_issues:
        report.add(secret, issue)
    return peers


def _shared_router_id(peer: cfg.Peer, nodes: Sequence[Node]) -> Issue | None:
    """A routerID that several nodes would present to the same router (the nodes are known): legal, as
    in MetalLB, but the router then sees one BGP identifier from several speakers."""
    if peer.router_id is None:
        return None
    selected = sorted(selected_nodes(peer.node_selectors, nodes)) if peer.node_selectors else sorted(n.metadata.name for n in nodes)
    if len(selected) < 2:
        return None
    shown = ", ".join(selected[:5]) + (", ..." if len(selected) > 5 else "")
    message = (
        f"{peer.router_id} is presented by each of the {len(selected)} nodes this peer is opened from ({shown}): "
        "the router sees one BGP identifier from several speakers, which some routers refuse; "
        "leave it empty and each node uses its own address"
    )
    return warn("spec.routerID", message)


def _same_session(a: cfg.Peer, b: cfg.Peer, nodes: Sequence[Node]) -> bool:
    """Two peers that one node cannot run side by side: the same session (address, port, VRF), or the
    same address and ASNs, which is how ExaBGP tells its neighbours apart (the port is not part of it).
    Whether they meet on a node is decided on the Node objects when there are any (selectors OR-ed
    across one peer's list may match one node only through its labels), else only where provable.
    The caller checks peers in force first, so the newcomer is the one reported and left out: a working
    session is never dropped for it."""
    clash = (a.address, a.port, a.vrf) == (b.address, b.port, b.vrf) or _exabgp_identity(a) == _exabgp_identity(b)
    return clash and may_share_nodes(a.node_selectors, b.node_selectors, nodes)


def _exabgp_identity(peer: cfg.Peer) -> tuple[object, ...]:
    return (peer.address, peer.my_asn, peer.peer_asn, peer.dynamic_asn)


def _clash_message(twin: cfg.Peer, peer: cfg.Peer) -> str:
    if (twin.address, twin.port, twin.vrf) == (peer.address, peer.port, peer.vrf):
        return f"BGPPeer {twin.name} already peers with {peer.address} port {peer.port} from the same nodes"
    return (
        f"BGPPeer {twin.name} already peers with {peer.address} with the same ASNs from the same nodes"
        f" (port {twin.port}); ExaBGP cannot run two sessions that differ only in port or VRF"
    )


def _peer(obj: BGPPeer, known: Known, issues: list[Issue]) -> cfg.Peer | None:
    spec = obj.spec
    _check_asns(obj, issues)
    address = _peer_address(obj, issues)
    source = _optional_ip(spec.source_address, "spec.sourceAddress", issues)
    if address is not None and source is not None and source.version != address.version:
        issues.append(err("spec.sourceAddress", f"{source} and peerAddress {address} are of different IP families"))
    router_id = _optional_ip(spec.router_id, "spec.routerID", issues)
    if router_id is not None and router_id.version != 4:
        issues.append(err("spec.routerID", f"{router_id} is not an IPv4 address (a BGP router ID is 32 bits)"))
    if spec.peer_port == 0:
        issues.append(err("spec.peerPort", f"must be from 1 to {MAX_PEER_PORT}"))
    hold, keepalive = _timers(spec.hold_time, spec.keepalive_time, issues)
    connect = _connect_time(spec.connect_time, issues)
    node_selectors = parse_selectors(spec.node_selectors, "spec.nodeSelectors", issues)
    password = _password(obj, known, issues)
    _check_bfd(spec.bfd_profile, known, issues)
    _check_flags(obj, issues)
    if address is None or has_error(issues):
        return None
    return cfg.Peer(
        name=obj.metadata.name,
        my_asn=_session_asn(spec),
        address=address,
        peer_asn=spec.peer_asn or None,
        dynamic_asn=cfg.DynamicASN(spec.dynamic_asn) if spec.dynamic_asn else None,
        port=spec.peer_port,
        source_address=source,
        router_id=router_id,
        hold_time=hold,
        keepalive_time=keepalive,
        connect_time=connect,
        node_selectors=node_selectors,
        password=password,
        bfd_profile=spec.bfd_profile or None,
        graceful_restart=spec.enable_graceful_restart,
        ebgp_multihop=spec.ebgp_multi_hop,
        vrf=spec.vrf,
        disable_mp=spec.disable_mp,
        dual_stack=spec.dual_stack_address_family,
    )


def _check_asns(obj: BGPPeer, issues: list[Issue]) -> None:
    spec = obj.spec
    if not spec.my_asn:
        issues.append(err("spec.myASN", "must not be 0"))
    if spec.peer_asn and spec.dynamic_asn:
        issues.append(err("spec.dynamicASN", "peerASN and dynamicASN are mutually exclusive; set only one"))
    elif not spec.peer_asn and not spec.dynamic_asn:
        issues.append(err("spec.peerASN", "required (or set dynamicASN to internal or external)"))
    ibgp = spec.dynamic_asn == "internal" or (bool(spec.peer_asn) and spec.peer_asn == _session_asn(spec))
    if ibgp and spec.ebgp_multi_hop:
        issues.append(err("spec.ebgpMultiHop", "must not be set for an iBGP peer (peer ASN equals myASN)"))


def _session_asn(spec: BGPPeerSpecV1beta2) -> int:
    """The AS this speaker presents on the session: `localASN` when set (MetalLB's FRR modes render it
    `local-as X no-prepend replace-as`, so the router sees X alone in the AS path; ExaBGP's per-neighbour
    `local-as` does the same), else `myASN`."""
    return spec.local_asn or spec.my_asn


def _peer_address(obj: BGPPeer, issues: list[Issue]) -> IPAddress | None:
    spec = obj.spec
    if spec.peer_address and spec.interface:
        issues.append(err("spec.interface", "peerAddress and interface are mutually exclusive; set only one"))
    elif spec.interface:
        message = "BGP unnumbered peering over an interface is not supported by this speaker; set peerAddress"
        issues.append(err("spec.interface", message))
        return None
    elif not spec.peer_address:
        issues.append(err("spec.peerAddress", "required"))
        return None
    return _optional_ip(spec.peer_address, "spec.peerAddress", issues)


def _optional_ip(text: str, path: str, issues: list[Issue]) -> IPAddress | None:
    if not text:
        return None
    try:
        return parse_ip(text)
    except ValueError as exc:
        issues.append(err(path, str(exc)))
        return None


def _timers(hold_given: float | None, keepalive_given: float | None, issues: list[Issue]) -> tuple[int, int]:
    """MetalLB's parseTimers: derive the missing one (keepalive = hold/3, hold = 3 x keepalive), then check.

    BGP carries whole seconds (the hold time in 16 bits), so values are truncated as MetalLB does.
    """
    if hold_given is None and keepalive_given is None:
        return DEFAULT_HOLD_TIME, DEFAULT_HOLD_TIME // 3
    hold = hold_given if hold_given is not None else 3 * keepalive_given  # type: ignore[operator]
    keepalive = keepalive_given if keepalive_given is not None else hold / 3
    if hold > MAX_BGP_SECONDS:
        path = "spec.holdTime" if hold_given is not None else "spec.keepaliveTime"
        issues.append(err(path, f"gives a hold time of {hold:g}s; BGP allows at most {MAX_BGP_SECONDS}s"))
        return 0, 0
    if int(hold) != 0 and int(hold) < MIN_HOLD_TIME:
        if hold_given is not None:
            issues.append(err("spec.holdTime", f"{hold:g}s: must be 0 or at least {MIN_HOLD_TIME}s"))
        else:
            message = f"{keepalive:g}s gives a hold time of {hold:g}s (3 x keepaliveTime); it must be 0 or >= {MIN_HOLD_TIME}s"
            issues.append(err("spec.keepaliveTime", message))
    elif keepalive > hold:
        issues.append(err("spec.keepaliveTime", f"{keepalive:g}s must not exceed holdTime {hold:g}s"))
    for path, value in (("spec.holdTime", hold_given), ("spec.keepaliveTime", keepalive_given)):
        if value is not None and math.isfinite(value) and value != int(value):
            issues.append(warn(path, f"BGP counts whole seconds: {value:g}s is used as {int(value)}s"))
    return int(hold), int(keepalive) if math.isfinite(keepalive) else 0  # an infinite keepalive was reported


def _connect_time(value: float | None, issues: list[Issue]) -> int | None:
    if value is None:
        return None
    if not 1 <= value <= MAX_BGP_SECONDS:
        issues.append(err("spec.connectTime", f"must be from 1s to {MAX_BGP_SECONDS}s"))
        return None
    if value != int(value):
        issues.append(err("spec.connectTime", "must be a whole number of seconds"))
    return int(value)


def _password(obj: BGPPeer, known: Known, issues: list[Issue]) -> str | None:
    """The TCP MD5 password, from the spec or its Secret. Never put it (or any part of it) in a message."""
    spec = obj.spec
    if spec.password and spec.password_secret is not None:
        issues.append(err("spec.passwordSecret", "password and passwordSecret are mutually exclusive; set only one"))
        return None
    if spec.password_secret is None:
        if any(c in spec.password for c in "\r\n"):
            issues.append(err("spec.password", "must not contain line breaks"))
        elif len(spec.password.encode()) > cfg.MAX_MD5_PASSWORD_BYTES:
            issues.append(err("spec.password", f"longer than {cfg.MAX_MD5_PASSWORD_BYTES} bytes (TCP MD5's limit)"))
            return None
        return spec.password or None
    ref = spec.password_secret
    namespace = ref.namespace or known.namespace
    if namespace != known.namespace:
        message = f"must be {known.namespace} or empty: only Secrets in MetalLB's namespace are read"
        issues.append(err("spec.passwordSecret.namespace", message))
        return None
    secret_ref = named("Secret", ref.name, namespace)
    found = known.secrets.get((namespace, ref.name), ())
    if len(found) != 1:
        problem = "not found" if not found else "defined more than once"
        issues.append(err("spec.passwordSecret", f"Secret {namespace}/{ref.name} {problem}", secret_ref))
        return None
    secret = found[0]
    if secret.type != BASIC_AUTH:
        message = f"Secret {namespace}/{ref.name} has type {secret.type!r}; a password Secret must be {BASIC_AUTH}"
        issues.append(err("spec.passwordSecret", message, secret_ref))
        return None
    try:
        password = secret.value("password")
    except ValueError as exc:
        known.secret_issues.append((secret, err("data.password", str(exc))))
        issues.append(err("spec.passwordSecret", f"Secret {namespace}/{ref.name} is invalid: {exc}", secret_ref))
        return None
    if password is None:
        issues.append(err("spec.passwordSecret", f"Secret {namespace}/{ref.name} has no 'password' key", secret_ref))
        return None
    if any(c in password for c in "\r\n"):
        issues.append(err("spec.passwordSecret", f"the password in Secret {namespace}/{ref.name} has a line break", secret_ref))
        return None
    if len(password.encode()) > cfg.MAX_MD5_PASSWORD_BYTES:
        message = f"the password in Secret {namespace}/{ref.name} is longer than {cfg.MAX_MD5_PASSWORD_BYTES} bytes (TCP MD5's limit)"
        issues.append(err("spec.passwordSecret", message, secret_ref))
        return None
    return password or None


def _check_bfd(profile: str, known: Known, issues: list[Issue]) -> None:
    if not profile:
        return
    if profile in known.bfd_profiles:
        if known.bfd_profiles[profile].echo_mode:
            issues.append(warn("spec.bfdProfile", f"BFDProfile {profile} asks for echo mode, which this speaker does not "
                                                  "implement: the session runs BFD in asynchronous mode", named("BFDProfile", profile)))
    elif ("BFDProfile", profile) in known.bad:
        issues.append(err("spec.bfdProfile", f"BFDProfile {profile} {known.bad[('BFDProfile', profile)]}", named("BFDProfile", profile)))
    else:
        issues.append(err("spec.bfdProfile", f"no BFDProfile named {profile}", named("BFDProfile", profile)))


_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
INTERFACE_SHAPE = "1 to 15 letters, digits, '-', '_' or '.'"


def _check_flags(obj: BGPPeer, issues: list[Issue]) -> None:
    spec = obj.spec
    if spec.disable_mp:
        if spec.dual_stack_address_family:
            issues.append(err("spec.disableMP", "contradicts dualStackAddressFamily: true; remove disableMP"))
        else:
            message = "deprecated: use dualStackAddressFamily (its default, false, keeps each family on its own session)"
            issues.append(warn("spec.disableMP", message))
    if spec.vrf and not _INTERFACE_NAME.fullmatch(spec.vrf):
        issues.append(err("spec.vrf", f"{printable(spec.vrf)!r} is not a VRF (a Linux interface name: {INTERFACE_SHAPE})"))
