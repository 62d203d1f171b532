"""One consistent view of everything in the cluster that matters to us.

Both sources (a manifests folder, the Kubernetes API) build the same `ClusterSnapshot`, and the whole
core is a pure function of it. It holds typed user objects (pydantic models from `metallb_bgp.api`) and
the errors met while reading them, so a malformed object is reported once, by whoever shows errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

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
from metallb_bgp.errors import ObjectError

DEFAULT_NAMESPACE = "metallb-system"


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
