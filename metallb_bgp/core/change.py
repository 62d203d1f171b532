"""What changed in the cluster, in one vocabulary: `ClusterChange`, whichever source saw it.

A daemon holding 10,000 services must not recompute everything on every event, so each planner is fed
what changed instead of the whole cluster: services by key, EndpointSlices by the service they belong
to, and the rest of the cluster (the configuration, Nodes, Namespaces, Secrets) whole whenever any of
it changed. The manifests source builds these directly as it reloads files; the Kubernetes source
hands out whole snapshots, and `SnapshotChanges` turns successive snapshots into the same changes,
by object identity (the source hands back the very same object for everything no watch event
touched, and records what it replaced: see `snapshot.ObjectsSeen`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metallb_bgp.api.core import EndpointSlice, Service
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.routes.desired import index_endpoint_slices
from metallb_bgp.core.routes.node import SERVICE_NAME_LABEL
from metallb_bgp.core.snapshot import ClusterSnapshot, ObjectsSeen

SliceGroup = tuple[str, str]  # (namespace, service name): the EndpointSlices of one service


@dataclass(frozen=True)
class ClusterChange:
    """What changed in the cluster, as a source saw it.

    `services` maps each changed service key to every definition of it, in snapshot order (a manifests
    folder may define one twice; the last one counts, as in the snapshot), `()` when it is gone.
    `endpoint_slices` maps each changed (namespace, service name) to all of its EndpointSlices now.
    `config` is the rest of the cluster (every kind but Services and EndpointSlices, and the load
    errors), whole, whenever any of it changed; None when none of it did.
    """

    services: Mapping[ServiceKey, tuple[Service, ...]] = field(default_factory=dict)
    endpoint_slices: Mapping[SliceGroup, tuple[EndpointSlice, ...]] = field(default_factory=dict)
    config: ClusterSnapshot | None = None

    @property
    def is_empty(self) -> bool:
        return not self.services and not self.endpoint_slices and self.config is None

    @classmethod
    def whole(cls, snapshot: ClusterSnapshot) -> ClusterChange:
        """Everything in `snapshot`, as the first change (or to start over)."""
        services: dict[ServiceKey, list[Service]] = {}
        for service in snapshot.services:
            services.setdefault(ServiceKey(service.namespace, service.name), []).append(service)
        slices = index_endpoint_slices(snapshot.endpoint_slices)
        return cls(
            services={key: tuple(defs) for key, defs in services.items()},
            endpoint_slices={group: tuple(found) for group, found in slices.items()},
            config=config_part(snapshot),
        )


def config_part(snapshot: ClusterSnapshot) -> ClusterSnapshot:
    """The snapshot without Services and EndpointSlices: what compile, namespaces and nodes come from."""
    return ClusterSnapshot(
        pools=snapshot.pools,
        peers=snapshot.peers,
        advertisements=snapshot.advertisements,
        communities=snapshot.communities,
        bfd_profiles=snapshot.bfd_profiles,
        l2_advertisements=snapshot.l2_advertisements,
        nodes=snapshot.nodes,
        namespaces=snapshot.namespaces,
        secrets=snapshot.secrets,
        namespace=snapshot.namespace,
        load_errors=snapshot.load_errors,
    )


def slice_group(endpoint_slice: EndpointSlice) -> SliceGroup | None:
    """The (namespace, service name) an EndpointSlice belongs to, as `routes` reads it."""
    name = endpoint_slice.metadata.labels.get(SERVICE_NAME_LABEL)
    return (endpoint_slice.metadata.namespace, name) if name else None


class SnapshotChanges:
    """Successive snapshots of one source in, the `ClusterChange` since the previous one out.

    The first change is whole. Services are found by identity (`ObjectsSeen`), so the cost is what
    changed, not the size of the cluster; a key defined twice (possible only in a snapshot built by
    hand) keeps its definitions in snapshot order, the last one counting, as everywhere else.
    """

    def __init__(self) -> None:
        self._services_seen: ObjectsSeen[Service] = ObjectsSeen("services")
        self._slices_seen: ObjectsSeen[EndpointSlice] = ObjectsSeen("endpoint_slices")
        self._definitions: dict[ServiceKey, tuple[Service, ...]] = {}
        self._twice: set[ServiceKey] = set()  # keys defined more than once
        self._groups: dict[SliceGroup, tuple[EndpointSlice, ...]] = {}
        self._config: ClusterSnapshot | None = None

    def take(self, snapshot: ClusterSnapshot) -> ClusterChange:
        config = config_part(snapshot)
        changed_config = None if self._config is not None and config == self._config else config  # tuples: identity first
        self._config = config
        return ClusterChange(services=self._services(snapshot), endpoint_slices=self._slices(snapshot), config=changed_config)

    def _services(self, snapshot: ClusterSnapshot) -> dict[ServiceKey, tuple[Service, ...]]:
        if (replaced := self._services_seen.take(snapshot)) is None:  # the very same tuple
            return {}
        went, came = replaced
        definitions = self._definitions
        touched = {ServiceKey(s.namespace, s.name) for s in (*went, *came)}
        for service in went:
            key = ServiceKey(service.namespace, service.name)
            definitions[key] = tuple(d for d in definitions.get(key, ()) if d is not service)
        for service in came:
            key = ServiceKey(service.namespace, service.name)
            definitions[key] = (*definitions.get(key, ()), service)
        twice = {key for key in touched if len(definitions[key]) > 1} | self._twice
        if twice:  # snapshot order decides which definition counts: re-sort, a reordered tuple too
            order = {id(service): i for i, service in enumerate(snapshot.services)}
            for key in twice:
                ordered = tuple(sorted(definitions.get(key, ()), key=lambda s: order[id(s)]))
                if ordered != definitions.get(key, ()):
                    touched.add(key)
                definitions[key] = ordered
            self._twice = {key for key in twice if len(definitions[key]) > 1}
        changes = {}
        for key in touched:
            changes[key] = definitions[key]
            if not definitions[key]:
                del definitions[key]
        return changes

    def _slices(self, snapshot: ClusterSnapshot) -> dict[SliceGroup, tuple[EndpointSlice, ...]]:
        """Each touched group's EndpointSlices now: its survivors, then its new slices (order is moot)."""
        if (replaced := self._slices_seen.take(snapshot)) is None:
            return {}
        went, came = replaced
        gone = {id(endpoint_slice) for endpoint_slice in went}
        arrived: dict[SliceGroup, list[EndpointSlice]] = {}
        for endpoint_slice in went:
            if (group := slice_group(endpoint_slice)) is not None:
                arrived.setdefault(group, [])
        for endpoint_slice in sorted(came, key=lambda s: (s.metadata.namespace, s.metadata.name)):
            if (group := slice_group(endpoint_slice)) is not None:
                arrived.setdefault(group, []).append(endpoint_slice)
        changes = {}
        for group, new in arrived.items():
            members = (*(s for s in self._groups.get(group, ()) if id(s) not in gone), *new)
            if members:
                self._groups[group] = members
            else:
                self._groups.pop(group, None)
            changes[group] = members
        return changes
