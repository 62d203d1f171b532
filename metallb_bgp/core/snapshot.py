"""One consistent view of everything in the cluster that matters to us.

Both sources (a manifests folder, the Kubernetes API) build the same `ClusterSnapshot`, and the whole
core is a pure function of it. It holds typed user objects (pydantic models from `metallb_bgp.api`) and
the errors met while reading them, so a malformed object is reported once, by whoever shows errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from metallb_bgp.api.core import EndpointSlice, Namespace, Node, Secret, Service
from metallb_bgp.api.metallb import (
    BFDProfile,
    BGPAdvertisement,
    BGPPeer,
    Community,
    IPAddressPool,
    L2Advertisement,
)
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.net import IPAddress

DEFAULT_NAMESPACE = "metallb-system"


@dataclass(frozen=True)
class Replacements:
    """What a source recorded as it changed its caches: per kind (a `ClusterSnapshot` field name), the
    tuple it handed out now and the objects that left and joined it since the snapshot whose `token` is
    `since`. A kind the source lost track of (a relist swapped its cache) is missing."""

    since: object
    kinds: Mapping[str, tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]]  # kind -> (now, went, came)


@dataclass(frozen=True)
class ClusterSnapshot:
    pools: tuple[IPAddressPool, ...] = ()
    peers: tuple[BGPPeer, ...] = ()
    advertisements: tuple[BGPAdvertisement, ...] = ()
    communities: tuple[Community, ...] = ()
    bfd_profiles: tuple[BFDProfile, ...] = ()
    l2_advertisements: tuple[L2Advertisement, ...] = ()
    services: tuple[Service, ...] = ()
    endpoint_slices: tuple[EndpointSlice, ...] = ()
    nodes: tuple[Node, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    secrets: tuple[Secret, ...] = ()
    namespace: str = DEFAULT_NAMESPACE  # where the metallb.io objects and peer Secrets live
    load_errors: tuple[ObjectError, ...] = field(default=())  # objects that failed to parse
    # who this snapshot is, and what its source knows changed since its previous one (see `ObjectsSeen`)
    token: object = field(default_factory=object, compare=False, repr=False)
    replacements: Replacements | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_objects(
        cls, objects: Iterable[BaseModel], *, errors: Iterable[ObjectError] = (), namespace: str = DEFAULT_NAMESPACE
    ) -> ClusterSnapshot:
        buckets: dict[type, list[BaseModel]] = {}
        for obj in objects:
            buckets.setdefault(type(obj), []).append(obj)

        def of(kind: type) -> tuple:
            return tuple(buckets.get(kind, ()))

        return cls(
            pools=of(IPAddressPool),
            peers=of(BGPPeer),
            advertisements=of(BGPAdvertisement),
            communities=of(Community),
            bfd_profiles=of(BFDProfile),
            l2_advertisements=of(L2Advertisement),
            services=of(Service),
            endpoint_slices=of(EndpointSlice),
            nodes=of(Node),
            namespaces=of(Namespace),
            secrets=of(Secret),
            namespace=namespace,
            load_errors=tuple(errors),
        )


T = TypeVar("T")


def replaced_objects(old: Sequence[T], new: Sequence[T]) -> tuple[list[T], list[T]]:
    """(the objects of `old` that `new` no longer holds, the objects of `new` that `old` did not), by
    identity, in no particular order.

    Why: the Kubernetes source hands back the very same object for everything no watch event touched
    (and the same tuple for a kind nothing happened to), so what changed between two snapshots is a set
    difference of object ids, done in C (about a millisecond at 10,000 objects), where indexing every
    object by key on every pass cost tens of milliseconds.
    """
    before, after = {id(o): o for o in old}, {id(o): o for o in new}  # both held: no id is reused meanwhile
    return [before[i] for i in before.keys() - after.keys()], [after[i] for i in after.keys() - before.keys()]


class ObjectsSeen(Generic[T]):
    """One kind's tuple as a planner last took it, and what replaced it since.

    Why: finding the few changed objects among 10,000 by identity (`replaced_objects`) still builds two
    dicts per pass, ~2.4 ms for each of Services and EndpointSlices: most of what a watch event cost the
    speaker at 10,000 services. The Kubernetes source records what it replaced as it goes, so when the
    snapshot says its record starts at the very snapshot this planner took last, its answer is used;
    otherwise (the first pass, a relist, a snapshot built by hand) the identity diff is.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.objects: tuple[T, ...] = ()
        self._token: object = None

    def take(self, snapshot: ClusterSnapshot) -> tuple[Sequence[T], Sequence[T]] | None:
        """(went, came) since the last take, as `replaced_objects` gives them; None if the very same tuple."""
        new: tuple[T, ...] = getattr(snapshot, self.kind)
        old, since = self.objects, self._token
        self.objects, self._token = new, snapshot.token
        if new is old:
            return None
        hint = snapshot.replacements
        if hint is not None and hint.since is since and (entry := hint.kinds.get(self.kind)) is not None and entry[0] is new:
            return entry[1], entry[2]
        return replaced_objects(old, new)


def status_assignments(snapshot: ClusterSnapshot) -> dict[ServiceKey, tuple[IPAddress, ...]]:
    """IPs already written in the manifests' Service status (as `kubectl get -o yaml` shows them)."""
    found: dict[ServiceKey, tuple[IPAddress, ...]] = {}
    for service in snapshot.services:
        if ips := service.status_ips():
            found[ServiceKey(service.namespace, service.name)] = ips
    return found


