"""What the three incremental planners share: the configuration kept until it changes, and the services.

Each planner (`incremental` for `run`, `speaker`, `controller`) takes `ClusterChange`s and must do
two things the same way, so they are done once here:

- `ConfigTracker`: recompile only when the configuration part changed, with the previous
  `last_good`, and when the compiled Config is equal to the one before, keep the very same object
  (the node context's memo and every `is` check downstream stay valid: the controller's pool status
  counters change an IPAddressPool on every allocation, a new snapshot but the same Config). It says
  whether the Config, the namespace labels or this node's Node object changed.
- `ServiceIndex`: every service key's definitions (the last one counts), each service's
  EndpointSlices, and which keys and slice groups a change really changed.

Pure, no I/O, not thread-safe: one reconcile loop owns each planner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from metallb_bgp.api.core import EndpointSlice, Node, Service
from metallb_bgp.core.change import ClusterChange, SliceGroup
from metallb_bgp.core.config.compile import compile_config
from metallb_bgp.core.config.result import CompileResult
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.snapshot import ClusterSnapshot


@dataclass(frozen=True)
class ConfigUpdate:
    """What one `ConfigTracker.take` found."""

    recompiled: bool = False
    config_changed: bool = False  # a Config unequal to the one before (or the first)
    labels_changed: bool = False  # the namespaces' labels (pools' namespace selectors read them)
    node_changed: bool = False  # this node's Node object (never, without a node name)


class ConfigTracker:
    """The compiled configuration, recompiled only when the configuration part of the cluster changed."""

    def __init__(self, *, node_name: str | None = None) -> None:
        self.node_name = node_name
        self.snapshot: ClusterSnapshot | None = None  # the configuration part last taken
        self.compiled: CompileResult | None = None
        self.namespace_labels: dict[str, Mapping[str, str]] = {}
        self.node: Node | None = None

    def take(self, config: ClusterSnapshot | None) -> ConfigUpdate:
        """Take `ClusterChange.config` (None: unchanged); the first one must be given."""
        if config is None or config == self.snapshot:  # field tuples compare by identity first
            if self.compiled is None:
                raise ValueError("the first change must carry the configuration (ClusterChange.whole)")
            return ConfigUpdate()
        self.snapshot = config
        previous = self.compiled
        compiled = compile_config(config, last_good=previous.last_good if previous is not None else None)
        config_changed = previous is None or compiled.config != previous.config
        if previous is not None and not config_changed:
            compiled = replace(compiled, config=previous.config)  # the very same Config
        self.compiled = compiled
        labels: dict[str, Mapping[str, str]] = {namespace.name: namespace.metadata.labels for namespace in config.namespaces}
        labels_changed, self.namespace_labels = labels != self.namespace_labels, labels
        node_changed = False
        if self.node_name is not None:
            node = next((n for n in config.nodes if n.name == self.node_name), None)
            node_changed, self.node = node != self.node, node
        return ConfigUpdate(True, config_changed, labels_changed, node_changed)


class ServiceIndex:
    """Services by key (the last definition counts) and EndpointSlices by service, kept from changes."""

    def __init__(self) -> None:
        self.definitions: dict[ServiceKey, tuple[Service, ...]] = {}
        self.services: dict[ServiceKey, Service] = {}
        self.slices: dict[SliceGroup, tuple[EndpointSlice, ...]] = {}

    def take(self, change: ClusterChange) -> tuple[set[ServiceKey], set[SliceGroup]]:
        """(the keys whose definitions changed, the groups whose EndpointSlices changed)."""
        return self._take_services(change.services), self._take_slices(change.endpoint_slices)

    def slices_of(self, key: ServiceKey) -> tuple[EndpointSlice, ...]:
        return self.slices.get((key.namespace, key.name), ())

    def _take_services(self, services: Mapping[ServiceKey, tuple[Service, ...]]) -> set[ServiceKey]:
        changed: set[ServiceKey] = set()
        for key, definitions in services.items():
            if definitions:
                if self.definitions.get(key) == definitions:  # tuples: identity first
                    continue
                self.definitions[key] = definitions
                self.services[key] = definitions[-1]
            elif key in self.definitions:
                del self.definitions[key]
                del self.services[key]
            else:
                continue
            changed.add(key)
        return changed

    def _take_slices(self, groups: Mapping[SliceGroup, tuple[EndpointSlice, ...]]) -> set[SliceGroup]:
        changed: set[SliceGroup] = set()
        for group, found in groups.items():
            if self.slices.get(group, ()) == found:
                continue
            if found:
                self.slices[group] = found
            else:
                del self.slices[group]
            changed.add(group)
        return changed
