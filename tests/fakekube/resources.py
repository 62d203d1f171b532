"""Which resources the fake serves, and the discovery documents that describe them.

Why: the official client and `kubernetes.dynamic` find resources through discovery, and a CRD
POSTed to the fake must become a served resource just as on a real cluster. A `ResourceType` is one
(group, version, plural); objects are stored per (group, plural), so every served version of a CRD
sees the same objects with its own apiVersion (the CRD "None" conversion strategy: MetalLB's real
v1beta1<->v1beta2 conversion webhook is not imitated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_EVENT_FIELDS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                 "involvedObject.uid", "reason", "type", "source", "reportingComponent")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False  # has a /status subresource: main writes keep status, status writes keep the rest
    custom: bool = False  # served from a CRD: generation tracking, schema, kind required in bodies
    schema: Obj | None = None  # openAPIV3Schema of this version (custom resources only)
    fields: tuple[str, ...] = ()  # field selector labels besides metadata.name and metadata.namespace
    status_on_create: bool = False  # nodes may be created with a status; other kinds drop it
    returns_deleted: bool = False  # DELETE answers the object (services, pods) instead of a Status
    short_names: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def tracks_generation(self) -> bool:
        return self.custom or self.plural == "customresourcedefinitions"

    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


BUILTINS = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, status=True, short_names=("ns",)),
    ResourceType("", "v1", "nodes", "Node", namespaced=False, status=True, status_on_create=True,
                 fields=("spec.unschedulable",), short_names=("no",)),
    ResourceType("", "v1", "services", "Service", status=True, fields=("spec.clusterIP", "spec.type"),
                 returns_deleted=True, short_names=("svc",)),
    ResourceType("", "v1", "endpoints", "Endpoints", short_names=("ep",)),
    ResourceType("", "v1", "pods", "Pod", status=True, fields=("spec.nodeName", "status.phase"),
                 returns_deleted=True, short_names=("po",)),
    ResourceType("", "v1", "secrets", "Secret", fields=("type",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "events", "Event", fields=_EVENT_FIELDS, short_names=("ev",)),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    ResourceType("apps", "v1", "deployments", "Deployment", status=True, short_names=("deploy",)),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", status=True, short_names=("ds",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
                 namespaced=False, status=True, short_names=("crd", "crds")),
)

_PRESERVE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def schemaless_crd(group: str, kind: str, plural: str, versions: tuple[str, ...], *, namespaced: bool = True) -> Obj:
    """A CRD manifest whose versions accept any content (the last version is the storage version)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [
                {"name": v, "served": True, "storage": v == versions[-1], "subresources": {"status": {}},
                 "schema": {"openAPIV3Schema": _PRESERVE}}
                for v in versions
            ],
        },
    }


METALLB_CRDS = tuple(
    schemaless_crd("metallb.io", kind, plural, versions)
    for kind, plural, versions in (
        ("IPAddressPool", "ipaddresspools", ("v1beta1",)),
        ("BGPPeer", "bgppeers", ("v1beta1", "v1beta2")),
        ("BGPAdvertisement", "bgpadvertisements", ("v1beta1",)),
        ("L2Advertisement", "l2advertisements", ("v1beta1",)),
        ("Community", "communities", ("v1beta1",)),
        ("BFDProfile", "bfdprofiles", ("v1beta1",)),
        ("ServiceBGPStatus", "servicebgpstatuses", ("v1beta1",)),
        ("ServiceL2Status", "servicel2statuses", ("v1beta1",)),
    )
)


def crd_problems(crd: Obj) -> list[dict[str, str]]:
    """The subset of the API server's CRD validation that catches malformed test fixtures."""
    spec = crd.get("spec") or {}
    names, versions = spec.get("names") or {}, spec.get("versions") or []
    checks = (("metadata.name", crd["metadata"].get("name") == f"{names.get('plural')}.{spec.get('group')}",
               "must be spec.names.plural+\".\"+spec.group"),
              ("spec.names.kind", bool(names.get("kind")), "Required value"),
              ("spec.scope", spec.get("scope") in ("Namespaced", "Cluster"), 'supported values: "Cluster", "Namespaced"'),
              ("spec.versions", sum(bool(v.get("storage")) for v in versions) == 1,
               "must have exactly one version marked as storage version"))
    return [{"reason": "FieldValueInvalid", "field": field, "message": f"Invalid value: {message}"}
            for field, ok, message in checks if not ok]


def crd_resource_types(crd: Obj) -> list[ResourceType]:
    spec = crd["spec"]
    names = spec["names"]
    return [
        ResourceType(spec["group"], v["name"], names["plural"], names["kind"],
                     namespaced=spec["scope"] == "Namespaced", status="status" in (v.get("subresources") or {}),
                     custom=True, schema=(v.get("schema") or {}).get("openAPIV3Schema") or _PRESERVE,
                     short_names=tuple(names.get("shortNames") or ()))
        for v in spec["versions"] if v.get("served")
    ]


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version order: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (-1, 0, 0)
    major, stage, minor = match.groups()
    return ({"alpha": 0, "beta": 1, None: 2}[stage], int(major), int(minor or 0))


class Registry:
    """Served resources by (group, version, plural); built-ins plus whatever CRDs are established."""

    def __init__(self) -> None:
        self.types: dict[tuple[str, str, str], ResourceType] = {(t.group, t.version, t.plural): t for t in BUILTINS}

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def register_crd(self, crd: Obj) -> None:
        self.unregister_crd(crd)
        for rt in crd_resource_types(crd):
            self.types[(rt.group, rt.version, rt.plural)] = rt

    def unregister_crd(self, crd: Obj) -> None:
        key = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        self.types = {k: t for k, t in self.types.items() if not (t.custom and t.key == key)}

    def group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for t in self.types.values():
            if t.group and t.version not in groups.setdefault(t.group, []):
                groups[t.group].append(t.version)
        return {g: sorted(vs, key=version_priority, reverse=True) for g, vs in groups.items()}

    # --- discovery documents -------------------------------------------------------------------

    def api_group(self, group: str) -> Obj | None:
        versions = self.group_versions().get(group)
        if not versions:
            return None
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries,
                "preferredVersion": entries[0]}

    def api_group_list(self) -> Obj:
        groups = [self.api_group(g) for g in self.group_versions()]
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [{k: v for k, v in g.items() if k not in ("kind", "apiVersion")} for g in groups if g]}

    def resource_list(self, group: str, version: str) -> Obj | None:
        served = [t for t in self.types.values() if (t.group, t.version) == (group, version)]
        if not served:
            return None
        resources: list[Obj] = []
        for t in served:
            resources.append({"name": t.plural, "singularName": t.kind.lower(), "namespaced": t.namespaced,
                              "kind": t.kind, "verbs": VERBS, **({"shortNames": list(t.short_names)} if t.short_names else {})})
            if t.status:
                resources.append({"name": f"{t.plural}/status", "singularName": "", "namespaced": t.namespaced,
                                  "kind": t.kind, "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": served[0].group_version,
                "resources": resources}
