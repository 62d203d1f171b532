"""The metallb.io CRDs the chart ships: generated from the pydantic models, structural, and in agreement
with the models about what is valid.

The committed YAML must equal what `python -m metallb_bgp.gen.crds --write` generates. User manifests
(examples/ and MetalLB's documented ones in tests/data/metallb/) must pass the CRD schemas as the API
server applies them with kubectl's default strict field validation (unknown fields rejected), and
known-bad objects must fail both the schemas and the models.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from builders import peer
from fakekube import FakeKube
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import BaseModel, Field

from metallb_bgp.api.loader import _YAMLLoader, parse_object  # _YAMLLoader: YAML as kubectl reads it (1234:1)
from metallb_bgp.gen import crds

try:
    import jsonschema
except ImportError:  # a test extra: fail loudly in CI, skip the schema checks on a bare machine
    jsonschema = None

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_FILES = [*sorted((ROOT / "examples").glob("*.yaml")), *sorted((ROOT / "tests" / "data" / "metallb").glob("*.yaml"))]
GENERATED = {name: yaml.safe_load(text) for name, text in crds.generated_files().items()}
BY_KIND = {doc["spec"]["names"]["kind"]: doc for doc in GENERATED.values()}


def version_schema(kind: str, version: str) -> dict[str, Any]:
    crd = BY_KIND[kind]
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


def as_strict_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The structural schema as the API server enforces it with fieldValidation=Strict (kubectl's default):
    a field no schema declares is an error, except under x-kubernetes-preserve-unknown-fields."""
    out = copy.deepcopy(schema)

    def walk(node: dict[str, Any]) -> None:
        open_object = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
        if node.get("type") == "object" and not open_object:
            node["additionalProperties"] = False
        for sub in (node.get("properties") or {}).values():
            walk(sub)
        if isinstance(node.get("items"), dict):
            walk(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"])

    walk(out)
    out["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is checked by the API server itself
    return out


def require_jsonschema() -> Any:
    if jsonschema is None:
        message = "jsonschema is missing: install the test extras (`make venv`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return jsonschema


def schema_errors(doc: dict[str, Any]) -> list[str]:
    jsonschema = require_jsonschema()
    version = doc["apiVersion"].split("/")[1]
    validator = jsonschema.Draft7Validator(as_strict_json_schema(version_schema(doc["kind"], version)))
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc))


def metallb_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFEST_FILES:
        for index, doc in enumerate(yaml.load_all(path.read_text(), Loader=_YAMLLoader)):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("metallb.io/"):
                yield f"{path.relative_to(ROOT)}#{index}:{doc['kind']}/{doc['metadata']['name']}", doc


def walk_schema(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk_schema(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk_schema(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk_schema(node["additionalProperties"], f"{path}.*")


# --- generated and committed -----------------------------------------------------------------------------


def test_the_committed_crds_are_what_the_models_generate() -> None:
    stale = crds.stale_files(crds.CHART_CRDS_DIR, crds.generated_files())
    assert not stale, f"out of date: {stale}; regenerate with: python -m metallb_bgp.gen.crds --write"


def test_every_metallb_kind_the_daemons_read_or_write_has_a_crd() -> None:
    assert set(BY_KIND) == {"IPAddressPool", "BGPPeer", "BGPAdvertisement", "Community", "BFDProfile",
                            "L2Advertisement", "ConfigurationState", "ServiceBGPStatus", "BGPSessionState"}
    for kind, crd in BY_KIND.items():
        group = "metallb-bgp.io" if kind == "BGPSessionState" else "metallb.io"  # not MetalLB's kind: our own group
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.{group}" and crd["spec"]["group"] == group
        assert crd["spec"]["scope"] == "Namespaced"
        assert all(v["subresources"] == {"status": {}} for v in crd["spec"]["versions"]), kind


def test_the_check_command_fails_when_a_committed_file_was_edited_by_hand(tmp_path: Path) -> None:
    assert crds.main(["--write", "--dir", str(tmp_path)]) == 0
    assert crds.main(["--check", "--dir", str(tmp_path)]) == 0
    peers = tmp_path / "metallb.io_bgppeers.yaml"
    peers.write_text(peers.read_text().replace("maximum: 16384", "maximum: 65535"))
    (tmp_path / "metallb.io_retired.yaml").write_text("# a CRD no longer generated\n")
    assert crds.stale_files(tmp_path, crds.generated_files()) == ["metallb.io_bgppeers.yaml", "metallb.io_retired.yaml"]
    assert crds.main(["--check", "--dir", str(tmp_path)]) == 1
    crds.main(["--write", "--dir", str(tmp_path)])
    assert crds.main(["--check", "--dir", str(tmp_path)]) == 0
    assert not (tmp_path / "metallb.io_retired.yaml").exists()


# --- structural -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_every_schema_is_structural(kind: str) -> None:
    """apiextensions.k8s.io/v1 rules: every node typed, no unions, maps only as additionalProperties
    schemas, defaults valid for their node, printer columns typed."""
    for version in BY_KIND[kind]["spec"]["versions"]:
        for path, node in walk_schema(version["schema"]["openAPIV3Schema"]):
            where = f"{kind} {version['name']} {path or '.'}"
            assert "type" in node, f"{where}: no type"
            assert not {"anyOf", "oneOf", "allOf", "not", "$ref", "title", "nullable"} & set(node), where
            assert node.get("additionalProperties") in (None,) or isinstance(node["additionalProperties"], dict), where
            assert not ("properties" in node and "additionalProperties" in node), where
            if node["type"] == "array":
                assert "items" in node, where
            if "default" in node:
                require_jsonschema().validate(node["default"], node)
        for column in version["additionalPrinterColumns"]:
            assert column["type"] in ("string", "integer", "number", "boolean", "date")
            assert column["jsonPath"].startswith(".")


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_printer_columns_show_fields_the_schema_has(kind: str) -> None:
    for version in BY_KIND[kind]["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        for column in version["additionalPrinterColumns"]:
            node = schema
            for part in column["jsonPath"].lstrip(".").split("."):
                if node.get("x-kubernetes-preserve-unknown-fields"):
                    break  # status maps: any field
                if part == "creationTimestamp" and node is schema["properties"]["metadata"]:
                    break
                assert part in (node.get("properties") or {}), f"{kind} {version['name']}: {column['jsonPath']}"
                node = node["properties"][part]


def test_bgppeers_get_shows_address_and_both_asns() -> None:
    for version in BY_KIND["BGPPeer"]["spec"]["versions"]:
        shown = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"] if not c.get("priority")}
        assert shown["Address"] == ".spec.peerAddress"
        assert shown["ASN"] == ".spec.myASN"
        assert shown["Peer ASN"] == ".spec.peerASN"


def test_the_models_non_zero_defaults_become_schema_defaults() -> None:
    pool = version_schema("IPAddressPool", "v1beta1")["properties"]["spec"]["properties"]
    advertisement = version_schema("BGPAdvertisement", "v1beta1")["properties"]["spec"]["properties"]
    peer = version_schema("BGPPeer", "v1beta2")["properties"]["spec"]["properties"]
    assert pool["autoAssign"]["default"] is True
    assert "default" not in pool["avoidBuggyIPs"]  # false: what an absent field means anyway
    assert (advertisement["aggregationLength"]["default"], advertisement["aggregationLengthV6"]["default"]) == (32, 128)
    assert peer["peerPort"]["default"] == 179
    assert peer["holdTime"]["type"] == "string"


def test_status_kept_open_so_a_daemon_status_write_is_never_pruned() -> None:
    for kind in BY_KIND:
        for version in BY_KIND[kind]["spec"]["versions"]:
            status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
            assert status["x-kubernetes-preserve-unknown-fields"] is True, kind
    state = version_schema("ConfigurationState", "v1beta1")["properties"]["status"]
    assert state["properties"]["result"]["enum"] == ["Valid", "Invalid", "Unknown"]
    assert "required" not in state["properties"]["peers"]["items"]


# --- BGPPeer v1beta1 / v1beta2 without a conversion webhook ----------------------------------------------


def test_bgppeer_serves_both_versions_stores_v1beta2_and_converts_nothing() -> None:
    spec = BY_KIND["BGPPeer"]["spec"]
    assert spec["conversion"] == {"strategy": "None"}
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        ("v1beta1", True, False), ("v1beta2", True, True)]


def test_bgppeer_v1beta1_schema_is_a_subset_of_v1beta2() -> None:
    assert crds.subset_problems(version_schema("BGPPeer", "v1beta1"), version_schema("BGPPeer", "v1beta2")) == []
    assert "port" not in version_schema("BGPPeer", "v1beta1")["properties"]["spec"]["properties"]


def test_the_subset_check_names_what_v1beta2_would_lose_or_refuse() -> None:
    wide = version_schema("BGPPeer", "v1beta2")
    narrow = copy.deepcopy(version_schema("BGPPeer", "v1beta1"))
    spec = narrow["properties"]["spec"]
    spec["properties"]["port"] = {"type": "integer"}
    spec["properties"]["peerPort"]["maximum"] = 65535
    spec["properties"]["myASN"]["type"] = "string"
    assert crds.subset_problems(narrow, wide) == [
        ".spec.myASN: type string vs integer",
        ".spec.peerPort: maximum 65535 is above 16384",
        ".spec.port: not in the wider version",
    ]


# --- the manifests users write ----------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [pytest.param(doc, id=where) for where, doc in metallb_documents()])
def test_documented_manifests_pass_the_crd_schemas(doc: dict[str, Any]) -> None:
    assert schema_errors(doc) == []


def _peer(**spec: Any) -> dict[str, Any]:
    return peer("p", **spec)


def _with(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["spec"].update(changes)
    return out


BAD = {
    "unknown field": _peer(peerAdress="10.0.0.2"),
    "wrong type": _peer(peerAddress=167772161),
    "peerPort above 16384": _peer(peerPort=16385),
    "ASN above 32 bits": _peer(peerASN=4294967296),
    "dynamicASN not internal or external": _peer(dynamicASN="both"),
    "unknown selector operator": _peer(nodeSelectors=[{"matchExpressions": [{"key": "a", "operator": "Maybe"}]}]),
    "v1beta1 peer without peerAddress": {**_peer(), "apiVersion": "metallb.io/v1beta1",
                                         "spec": {"myASN": 64500, "peerASN": 64501}},
    "v1beta1 peer with a v1beta2-only field": {**_peer(dynamicASN="external"), "apiVersion": "metallb.io/v1beta1"},
    "pool without addresses": {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                               "metadata": {"name": "p"}, "spec": {"autoAssign": False}},
    "pool addresses not a list": {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                                  "metadata": {"name": "p"}, "spec": {"addresses": "10.0.0.0/24"}},
    "localPref negative": {"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
                           "metadata": {"name": "a"}, "spec": {"localPref": -1}},
    "BFD multiplier below 2": {"apiVersion": "metallb.io/v1beta1", "kind": "BFDProfile",
                               "metadata": {"name": "b"}, "spec": {"detectMultiplier": 1}},
    "community alias without value": {"apiVersion": "metallb.io/v1beta1", "kind": "Community",
                                      "metadata": {"name": "c"}, "spec": {"communities": [{"name": "x"}]}},
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_known_bad_objects_fail_the_crd_schema_and_the_model_alike(case: str) -> None:
    doc = BAD[case]
    assert schema_errors(doc), f"{case}: accepted by the CRD schema"
    assert parse_object(doc).errors, f"{case}: accepted by the model"


@pytest.mark.parametrize(("spec", "error", "ours"), [
    ({"holdTime": 90}, "spec.holdTime: 90 is not of type 'string'", "90 is a number, not a duration"),
    ({"myASN": "64500"}, "spec.myASN: '64500' is not of type 'integer'", "Input should be a valid integer"),
    ({"myASN": True}, "spec.myASN: True is not of type 'integer'", "Input should be a valid integer"),
    ({"ebgpMultiHop": "yes"}, "spec.ebgpMultiHop: 'yes' is not of type 'boolean'", "Input should be a valid boolean"),
])
def test_what_the_api_server_refuses_for_its_type_manifest_files_refuse_too(spec: dict[str, Any], error: str, ours: str) -> None:
    """Types are checked, not coerced: a folder of manifests is read as strictly as the cluster reads it."""
    doc = _peer(**spec)
    assert schema_errors(doc) == [error]
    assert [e.field for e in parse_object(doc).errors] == [f"spec.{next(iter(spec))}"]
    assert ours in parse_object(doc).errors[0].message


# --- in a (fake) cluster ----------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[FakeKube]:
    with FakeKube(crds=tuple(GENERATED.values())) as fake:
        yield fake


def test_a_v1beta1_peer_reads_back_through_v1beta2_as_the_daemons_watch_it(cluster: FakeKube) -> None:
    custom = client.CustomObjectsApi(cluster.client)
    old = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPPeer", "metadata": {"name": "legacy"},
           "spec": {"myASN": 64500, "peerASN": 64501, "peerAddress": "10.0.0.1", "holdTime": "90s"}}
    custom.create_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "bgppeers", old)
    seen = custom.get_namespaced_custom_object("metallb.io", "v1beta2", "metallb-system", "bgppeers", "legacy")
    assert seen["apiVersion"] == "metallb.io/v1beta2"
    assert seen["spec"] == {"myASN": 64500, "peerASN": 64501, "peerAddress": "10.0.0.1", "holdTime": "90s"}
    assert parse_object(seen).errors == ()


def test_the_api_server_defaults_what_the_models_default(cluster: FakeKube) -> None:
    custom = client.CustomObjectsApi(cluster.client)
    pool = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {"name": "pool"},
            "spec": {"addresses": ["192.0.2.0/28"]}}
    stored = custom.create_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "ipaddresspools", pool)
    assert stored["spec"] == {"addresses": ["192.0.2.0/28"], "autoAssign": True}


def test_a_misspelt_field_is_refused_under_strict_field_validation(cluster: FakeKube) -> None:
    custom = client.CustomObjectsApi(cluster.client)
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object("metallb.io", "v1beta2", "metallb-system", "bgppeers",
                                               _peer(peerAdress="10.0.0.2"), field_validation="Strict")
    assert refused.value.status == 400
    assert "peerAdress" in refused.value.body


def test_the_daemons_configuration_state_status_is_stored_whole(cluster: FakeKube) -> None:
    custom = client.CustomObjectsApi(cluster.client)
    custom.create_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "configurationstates", {
        "apiVersion": "metallb.io/v1beta1", "kind": "ConfigurationState", "metadata": {"name": "speaker-n1"}})
    status = {"result": "Invalid", "errorSummary": "BGPPeer metallb-system/p: spec.peerAddress: bad",
              "errors": [{"kind": "BGPPeer", "namespace": "metallb-system", "name": "p", "field": "spec.peerAddress",
                          "message": "bad", "severity": "error"}],
              "peers": [{"name": "q", "address": "10.0.0.1", "state": "established", "since": "2024-01-01T00:00:00Z"}],
              "somethingNewer": {"kept": True}}
    written = custom.patch_namespaced_custom_object_status(
        "metallb.io", "v1beta1", "metallb-system", "configurationstates", "speaker-n1", {"status": status})
    assert written["status"] == status


# --- the generator on shapes the models do not use yet -----------------------------------------------------


class _Node(BaseModel):
    children: list[_Node] = []


class _Shapes(BaseModel):
    ratio: float = Field(gt=0, lt=1)
    name: str | int = ""
    node: _Node | None = None


def test_exclusive_bounds_become_openapi_flags() -> None:
    schema, required = crds.field_schema(_Shapes, "ratio")
    assert schema == {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1, "exclusiveMaximum": True}
    assert required


@pytest.mark.parametrize(("field", "why"), [("name", "a union of 2 types"), ("node", "recursive model _Node")])
def test_shapes_a_structural_schema_cannot_express_are_refused_by_name(field: str, why: str) -> None:
    with pytest.raises(crds.UnsupportedSchema, match=why):
        crds.field_schema(_Shapes, field)


def test_service_bgp_status_keeps_metallbs_schema_and_columns_and_adds_peer_status() -> None:
    """`kubectl get servicebgpstatuses -A` shows what MetalLB users expect: its columns and fields."""
    crd = BY_KIND["ServiceBGPStatus"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1beta1"
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Node", "Service Name", "Service Namespace", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"node", "serviceName", "serviceNamespace", "peers", "peerStatus"} <= set(status)
    assert status["peers"]["items"]["type"] == "string"
    assert status["peerStatus"]["items"]["properties"]["advertised"]["type"] == "boolean"
