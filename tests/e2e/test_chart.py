"""The Helm chart, rendered by the pinned Helm (.tools/helm, `make tools`) and checked as Kubernetes would.

Every value set renders, passes `kubernetes-validate --strict` for two Kubernetes versions (custom
resources such as PodMonitor only get a warning there), and keeps the promises the chart makes:
non-root read-only daemons without capabilities, a host-network speaker named by the downward API,
RBAC without wildcards, Secrets readable only in the release namespace, and arguments the
`metallb-bgp` command line accepts. A misspelt value fails the render (values.schema.json). The
default rendering is a golden file: regenerate it on purpose with UPDATE_GOLDEN=1.

Without .tools/helm these tests skip, except in CI (CI set), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakekube import FakeKube
from kubernetes import client

from metallb_bgp import __version__
from metallb_bgp.cli import _parser
from metallb_bgp.observe.metrics import parse_address

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "helm"
CHART = ROOT / "charts" / "metallb-bgp"
GOLDEN = ROOT / "tests" / "golden" / "chart"
RELEASE, NAMESPACE = "metallb-bgp", "metallb-system"
KUBERNETES_VERSIONS = ("1.33.0", "1.30.0")
Doc = dict[str, Any]

VALUE_SETS: dict[str, Doc] = {
    "default": {},
    "monitoring": {
        "prometheus": {
            "podMonitor": {"enabled": True, "interval": "30s", "labels": {"release": "prometheus"}},
            "serviceMonitor": {"enabled": True},
            "rules": {"enabled": True, "sessionDownFor": "5m", "poolUsageHighPercent": 90},
        },
        "grafana": {"dashboard": {"enabled": True, "namespace": "monitoring"}},
    },
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "apiServerCIDRs": ["10.0.0.1/32", "192.0.2.10/32"],
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        },
        "controller": {"bmp": {"enabled": True, "routers": ["192.0.2.1", "2001:db8::1"], "service": {"type": "NodePort"}}},
    },
    "custom": {
        "loadBalancerClass": "example.com/bgp",
        "logLevel": "debug",
        "logFormat": "console",
        "image": {"repository": "registry.example/metallb-bgp", "digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "registry"}],
        "controller": {
            "replicas": 2,
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                    "matchLabels": {"app.kubernetes.io/component": "controller"}}}}]}},
            "extraArgs": ["--lease-duration=30"],
            "leaderElection": {"leaseDuration": 30, "renewDeadline": 20, "retryPeriod": 4},
            "priorityClassName": "system-cluster-critical",
        },
        "speaker": {
            "tolerations": [{"operator": "Exists"}],
            "nodeSelector": {"bgp": "enabled"},
            "routerIDFromHostIP": True,
            "serviceBGPStatus": False,
            "exabgp": {"prefixesPerCommand": 200, "reactorSpeed": 0.2},
            "extraCapabilities": ["NET_RAW"],
            "serviceAccount": {"name": "bgp-speaker", "annotations": {"example.com/owner": "network"}},
            "podAnnotations": {"example.com/scrape": "true"},
            "maxUnavailable": "10%",
            "bmp": {"enabled": True, "port": 11020, "routers": ["192.0.2.1", "2001:db8::1"], "late": "45s"},
        },
    },
    "minimal": {
        "rbac": {"create": False},
        "controller": {"leaderElection": {"enabled": False}, "metrics": {"enabled": False},
                       "serviceAccount": {"create": False, "name": "existing-controller"}},
        "speaker": {"metrics": {"enabled": False}, "serviceAccount": {"create": False, "name": "existing-speaker"}},
    },
}

DOWNWARD_API = {"$(NODE_NAME)": "node-1", "$(POD_NAME)": "controller-0", "$(HOST_IP)": "192.0.2.10", "$(POD_IP)": "10.244.0.7"}


def _missing(what: str, remedy: str) -> None:
    message = f"{what} is missing: {remedy}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def helm() -> Path:
    if not (HELM.is_file() and os.access(HELM, os.X_OK)):
        _missing(str(HELM), "run `make tools` (fetches the pinned Helm into .tools/)")
    return HELM


@pytest.fixture(scope="module")
def kubernetes_validate() -> str:
    found = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or shutil.which("kubernetes-validate")
    if found is None:
        _missing("kubernetes-validate", "install the test extras (`make venv`)")
    return str(found)


def run_helm(helm: Path, *args: str, values: Doc | None = None, tmp: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(helm), *args]
    if values:
        assert tmp is not None
        values_file = tmp / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        command += ["-f", str(values_file)]
    home = {"HELM_CACHE_HOME": "/tmp/helm-test/cache", "HELM_CONFIG_HOME": "/tmp/helm-test/config",
            "HELM_DATA_HOME": "/tmp/helm-test/data"}
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **home, **(env or {})})


def render_text(helm: Path, values: Doc, tmp: Path) -> str:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values, tmp=tmp)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def rendered(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each value set's `helm template` output, rendered once for the module."""
    return {name: render_text(helm, values, tmp_path_factory.mktemp(name)) for name, values in VALUE_SETS.items()}


def one(docs: list[Doc], kind: str, name_suffix: str = "") -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{kind} *{name_suffix}: {len(found)} found"
    return found[0]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


# --- the chart as Helm sees it ----------------------------------------------------------------------------


def test_the_values_schema_refuses_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    nodes = [("", schema)] + [(f"definitions.{name}", node) for name, node in schema["definitions"].items()]
    while nodes:
        path, node = nodes.pop()
        if "properties" in node:
            assert node.get("additionalProperties") is False, path or "."
            nodes += [(f"{path}.{name}", sub) for name, sub in node["properties"].items()]
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                nodes.append((f"{path}.{key}", node[key]))


def test_the_chart_deploys_the_version_of_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


def test_the_chart_lints_strictly(helm: Path) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_manifests_are_valid_kubernetes_objects(
    rendered: dict[str, str], kubernetes_validate: str, value_set: str, version: str
) -> None:
    result = subprocess.run([kubernetes_validate, "--strict", "-k", version, "-"], input=rendered[value_set],
                            check=False, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    built_in = [d for d in documents(rendered[value_set]) if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert len(re.findall(r"passed for resource (\S+)", output)) == len(built_in), output
    unvalidated = re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+)", output)
    assert {api for _, api in unvalidated} <= {"monitoring.coreos.com/v1"}, output


def test_the_crds_are_valid_kubernetes_objects(kubernetes_validate: str) -> None:
    files = sorted(str(p) for p in (CHART / "crds").glob("*.yaml"))
    for version in KUBERNETES_VERSIONS:
        result = subprocess.run([kubernetes_validate, "--strict", "-k", version, *files],
                                check=False, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("passed for resource customresourcedefinition/") == len(files)


def test_the_default_rendering_matches_the_golden_file(rendered: dict[str, str]) -> None:
    golden = GOLDEN / "default.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered["default"])
    assert golden.exists(), f"missing golden file {golden}; run with UPDATE_GOLDEN=1"
    assert rendered["default"] == golden.read_text(), f"{golden} is out of date; review and run with UPDATE_GOLDEN=1"


@pytest.mark.parametrize(("values", "complaint"), [
    ({"speaker": {"tolerationz": []}}, "tolerationz"),
    ({"controller": {"replica": 2}}, "replica"),
    ({"logLevel": "verbose"}, "logLevel"),
    ({"logFormat": "text"}, "logFormat"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"speaker": {"metrics": {"port": 70000}}}, "port"),
    ({"controller": {"replicas": 0}}, "replicas"),
    ({"speaker": {"exabgp": {"reactorSpeed": "fast"}}}, "reactorSpeed"),
    ({"speaker": {"tolerations": [{"key": "a", "operator": "Exist"}]}}, "operator"),
    ({"prometheus": {"rules": {"sessionDownFor": "two minutes"}}}, "sessionDownFor"),
    ({"networkPolicy": {"metricsFrom": [{"podSelectors": {}}]}}, "podSelectors"),
    ({"speaker": {"bmp": {"routers": ["tor-a"]}}}, "routers"),
    ({"speaker": {"bmp": {"late": "30"}}}, "late"),
    ({"controller": {"bmp": {"service": {"type": "ExternalName"}}}}, "type"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_a_mistyped_value_fails_the_render(helm: Path, tmp_path: Path, values: Doc, complaint: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), values=values, tmp=tmp_path)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


@pytest.mark.parametrize(("values", "complaint"), [
    ({"controller": {"replicas": 2, "leaderElection": {"enabled": False}}}, "needs controller.leaderElection.enabled"),
    ({"controller": {"leaderElection": {"renewDeadline": 20}}}, "retryPeriod < renewDeadline < leaseDuration"),
    ({"speaker": {"bmp": {"enabled": True}}}, "needs speaker.bmp.routers"),
    ({"controller": {"bmp": {"enabled": True}}}, "needs controller.bmp.routers"),
])
def test_a_contradictory_value_fails_the_render_with_a_reason(helm: Path, tmp_path: Path, values: Doc, complaint: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), values=values, tmp=tmp_path)
    assert result.returncode != 0
    assert complaint in result.stderr


# --- what the rendered objects promise --------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_daemon_runs_non_root_read_only_without_capabilities(rendered: dict[str, str], value_set: str) -> None:
    extra = set(VALUE_SETS[value_set].get("speaker", {}).get("extraCapabilities", []))
    for name, spec in pod_specs(documents(rendered[value_set])):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert set(context["capabilities"].get("add", [])) == (extra if name.endswith("-speaker") else set()), name


def test_the_speaker_runs_on_the_host_network_named_after_its_node(rendered: dict[str, str]) -> None:
    speaker = one(documents(rendered["default"]), "DaemonSet", "-speaker")["spec"]["template"]["spec"]
    assert speaker["hostNetwork"] is True
    assert speaker["dnsPolicy"] == "ClusterFirstWithHostNet"
    container = speaker["containers"][0]
    assert container["args"][:2] == ["speaker", "--node-name=$(NODE_NAME)"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    # the node's address: the metrics endpoint listens there only (hostNetwork), not on every interface;
    # the Pod's name and UID: its ServiceBGPStatus objects are owned by it (garbage-collected with it)
    assert env == {"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP", "POD_NAME": "metadata.name",
                   "POD_UID": "metadata.uid"}  # fmt: skip
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/var/run/metallb-bgp", "/tmp"}


def test_the_controller_elects_a_leader_with_its_pod_name(rendered: dict[str, str]) -> None:
    controller = one(documents(rendered["default"]), "Deployment", "-controller")["spec"]["template"]["spec"]
    args = controller["containers"][0]["args"]
    assert "--lease-name=metallb-bgp-controller" in args and "--identity=$(POD_NAME)" in args
    minimal = one(documents(rendered["minimal"]), "Deployment", "-controller")["spec"]["template"]["spec"]
    assert "--no-leader-election" in minimal["containers"][0]["args"]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_probes_and_metrics_port_follow_the_metrics_switch(rendered: dict[str, str], value_set: str) -> None:
    for name, spec in pod_specs(documents(rendered[value_set])):
        container = spec["containers"][0]
        enabled = value_set != "minimal"
        assert ("livenessProbe" in container) is enabled, name
        assert ("readinessProbe" in container) is enabled, name
        assert any(a.startswith("--metrics-address=") for a in container["args"]) is enabled, name
        if enabled:
            assert container["ports"][0] == {"name": "monitoring", "containerPort": 7472, "protocol": "TCP"}
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "monitoring"}
        bmp = [port["containerPort"] for port in container.get("ports", []) if port["name"] == "bmp"]
        expected = {("custom", "speaker"): [11020], ("network-policy", "controller"): [11019]}
        assert bmp == expected.get((value_set, container["name"]), []), name


def test_custom_values_reach_the_pods(rendered: dict[str, str]) -> None:
    docs = documents(rendered["custom"])
    speaker = one(docs, "DaemonSet", "-speaker")
    controller = one(docs, "Deployment", "-controller")
    speaker_pod, controller_pod = speaker["spec"]["template"]["spec"], controller["spec"]["template"]["spec"]
    assert speaker_pod["tolerations"] == [{"operator": "Exists"}]
    assert speaker_pod["nodeSelector"] == {"bgp": "enabled", "kubernetes.io/os": "linux"}  # Helm merges maps
    assert speaker_pod["serviceAccountName"] == "bgp-speaker"
    assert speaker["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"
    assert controller_pod["tolerations"][0]["key"] == "dedicated"
    assert "podAntiAffinity" in controller_pod["affinity"]
    assert controller["spec"]["replicas"] == 2
    for pod in (speaker_pod, controller_pod):
        container = pod["containers"][0]
        assert container["image"] == "registry.example/metallb-bgp@sha256:" + "a" * 64
        assert "--load-balancer-class=example.com/bgp" in container["args"]
        assert "--log-level=debug" in container["args"] and "--log-format=console" in container["args"]
        assert pod["imagePullSecrets"] == [{"name": "registry"}]
    speaker_args = speaker_pod["containers"][0]["args"]
    assert "--router-id=$(HOST_IP)" in speaker_args
    assert "--no-service-bgp-status" in speaker_args
    default_speaker = one(documents(rendered["default"]), "DaemonSet", "-speaker")["spec"]["template"]["spec"]
    assert "--no-service-bgp-status" not in default_speaker["containers"][0]["args"]  # on by default, as in MetalLB
    assert {"--exabgp-prefixes-per-command=200", "--exabgp-reactor-speed=0.2"} <= set(speaker_args)
    assert not any(a.startswith(("--exabgp-commands-in-flight", "--exabgp-ack-timeout")) for a in speaker_args)
    assert "--lease-duration=30" in controller_pod["containers"][0]["args"]
    # the BMP station on the node's own address (bracketed: an IPv6 node too), for the listed routers only; nothing listens by default
    assert ["--bmp-listen=[$(HOST_IP)]:11020", "--bmp-router=192.0.2.1", "--bmp-router=2001:db8::1", "--bmp-late=45s"] == [
        a for a in speaker_args if a.startswith("--bmp-")]  # fmt: skip
    assert not any(a.startswith("--bmp-") for a in default_speaker["containers"][0]["args"])


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_arguments_are_accepted_by_the_command_line(rendered: dict[str, str], value_set: str) -> None:
    for name, spec in pod_specs(documents(rendered[value_set])):
        args = [re.sub(r"\$\([A-Z_]+\)", lambda m: DOWNWARD_API[m.group(0)], a) for a in spec["containers"][0]["args"]]
        try:
            parsed = _parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"{name}: metallb-bgp refuses {args}")
        assert parsed.command == spec["containers"][0]["name"]
        assert parsed.namespace == NAMESPACE
        if parsed.metrics_address is not None:
            # the controller has a pod IP of its own; the speaker shares the node's network and binds the
            # node's address only (the kubelet probes a hostNetwork pod there)
            host = DOWNWARD_API["$(HOST_IP)"] if parsed.command == "speaker" else ""
            assert parse_address(parsed.metrics_address) == (host, 7472)


# --- RBAC -------------------------------------------------------------------------------------------------


def rules(docs: list[Doc], kind: str, component: str) -> list[Doc]:
    return one(docs, kind, f"-{component}")["rules"]


def allowed(rule_list: list[Doc], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               and (not r.get("resourceNames") or name in r["resourceNames"]) for r in rule_list)


def test_rbac_has_no_wildcards(rendered: dict[str, str]) -> None:
    for doc in documents(rendered["default"]):
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (doc["metadata"]["name"], rule)


def test_secrets_are_readable_only_in_the_release_namespace(rendered: dict[str, str]) -> None:
    docs = documents(rendered["default"])
    for component in ("controller", "speaker"):
        assert not any("secrets" in r["resources"] for r in rules(docs, "ClusterRole", component))
        role = one(docs, "Role", f"-{component}")
        assert role["metadata"]["namespace"] == NAMESPACE
        secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
        assert [sorted(r["verbs"]) for r in secret_rules] == [["get", "list", "watch"]]


def test_only_the_controller_writes_services_pools_and_leases(rendered: dict[str, str]) -> None:
    docs = documents(rendered["default"])
    controller_cluster, speaker_cluster = rules(docs, "ClusterRole", "controller"), rules(docs, "ClusterRole", "speaker")
    controller_ns, speaker_ns = rules(docs, "Role", "controller"), rules(docs, "Role", "speaker")
    assert allowed(controller_cluster, "", "services/status", "patch")
    assert allowed(controller_cluster, "", "services", "patch")  # the ip-allocated-from-pool annotation
    assert allowed(controller_ns, "metallb.io", "ipaddresspools/status", "patch")
    assert allowed(controller_ns, "coordination.k8s.io", "leases", "update", "metallb-bgp-controller")
    assert not allowed(controller_ns, "coordination.k8s.io", "leases", "update", "another-lease")
    for verb in ("patch", "update", "create", "delete"):
        assert not allowed(speaker_cluster, "", "services", verb)
        assert not allowed(speaker_cluster, "", "services/status", verb)
        assert not allowed(speaker_ns, "metallb.io", "ipaddresspools/status", verb)
        assert not allowed(speaker_ns, "coordination.k8s.io", "leases", verb)
        assert not allowed(speaker_ns, "metallb.io", "bgppeers", verb)


def test_both_daemons_may_read_what_they_watch_and_report_what_they_see(rendered: dict[str, str]) -> None:
    docs = documents(rendered["default"])
    for component, state in (("controller", "controller"), ("speaker", "speaker-node-1")):
        cluster, namespaced = rules(docs, "ClusterRole", component), rules(docs, "Role", component)
        for group, resource in (("", "services"), ("discovery.k8s.io", "endpointslices"), ("", "nodes"), ("", "namespaces")):
            assert all(allowed(cluster, group, resource, verb) for verb in ("list", "watch")), (component, resource)
        for resource in ("ipaddresspools", "bgppeers", "bgpadvertisements", "communities", "bfdprofiles", "l2advertisements"):
            assert all(allowed(namespaced, "metallb.io", resource, verb) for verb in ("list", "watch")), (component, resource)
        assert allowed(cluster, "", "events", "create")
        assert allowed(namespaced, "metallb.io", "configurationstates", "create")
        assert allowed(namespaced, "metallb.io", "configurationstates", "get", state)
        assert allowed(namespaced, "metallb.io", "configurationstates/status", "patch", state)


def test_bindings_name_the_service_accounts_the_pods_run_as(rendered: dict[str, str]) -> None:
    docs = documents(rendered["default"])
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    pods = {spec["serviceAccountName"] for _, spec in pod_specs(docs)}
    bound = {s["name"] for d in docs if d["kind"].endswith("Binding") for s in d["subjects"]}
    assert accounts == pods == bound == {"metallb-bgp-controller", "metallb-bgp-speaker"}


def test_rbac_and_service_accounts_can_be_left_to_the_user(rendered: dict[str, str]) -> None:
    docs = documents(rendered["minimal"])
    assert not [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")]
    assert {spec["serviceAccountName"] for _, spec in pod_specs(docs)} == {"existing-controller", "existing-speaker"}


# --- monitoring and network policy ------------------------------------------------------------------------


def test_monitoring_objects_select_the_daemons_metrics_port(rendered: dict[str, str]) -> None:
    docs = documents(rendered["monitoring"])
    for component in ("controller", "speaker"):
        monitor = one(docs, "PodMonitor", f"-{component}")
        assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == component
        assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "monitoring", "path": "/metrics", "interval": "30s"}]
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        service = one(docs, "Service", f"-{component}-metrics")
        assert service["spec"]["clusterIP"] == "None"
        assert one(docs, "ServiceMonitor", f"-{component}")["spec"]["endpoints"][0]["port"] == "monitoring"
    assert not [d for d in documents(rendered["default"]) if d["apiVersion"].startswith("monitoring.coreos.com")]


def test_alerts_use_metallbs_metric_names(rendered: dict[str, str]) -> None:
    rule = one(documents(rendered["monitoring"]), "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {"MetalLBBGPSessionDown", "MetalLBAddressPoolExhausted", "MetalLBAddressPoolUsageHigh",
                           "MetalLBConfigurationErrors"}
    assert "metallb_bgp_session_up" in alerts["MetalLBBGPSessionDown"]["expr"]
    assert alerts["MetalLBBGPSessionDown"]["for"] == "5m"
    for name in ("MetalLBAddressPoolExhausted", "MetalLBAddressPoolUsageHigh"):
        assert "metallb_allocator_addresses_in_use_total" in alerts[name]["expr"]
        assert "metallb_allocator_addresses_total" in alerts[name]["expr"]
    assert alerts["MetalLBAddressPoolUsageHigh"]["expr"].rstrip().endswith("> 90")
    assert 'metallb_config_errors{namespace="metallb-system", severity="error"}' in alerts["MetalLBConfigurationErrors"]["expr"]
    assert "{{ $labels.pool }}" in alerts["MetalLBAddressPoolExhausted"]["annotations"]["description"]


def test_the_network_policy_lets_the_controller_reach_only_the_api_server(rendered: dict[str, str]) -> None:
    policy = one(documents(rendered["network-policy"]), "NetworkPolicy", "-controller")["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "controller"
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"] == [{"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
                                 "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "192.0.2.10/32"}}]}]
    assert policy["ingress"][0]["ports"] == [{"port": "monitoring", "protocol": "TCP"}]
    assert policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    # the controller's BMP station (controller.bmp) is reached by the listed routers only
    assert policy["ingress"][1] == {"ports": [{"port": "bmp", "protocol": "TCP"}],
                                    "from": [{"ipBlock": {"cidr": "192.0.2.1/32"}}, {"ipBlock": {"cidr": "2001:db8::1/128"}}]}  # fmt: skip
    assert not [d for d in documents(rendered["default"]) if d["kind"] == "NetworkPolicy"]


def test_the_controllers_bmp_station_listens_on_its_pod_ip_behind_a_service_only_when_enabled(rendered: dict[str, str]) -> None:
    docs = documents(rendered["network-policy"])
    pod = one(docs, "Deployment", "-controller")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert [a for a in container["args"] if a.startswith("--bmp-")] == [
        "--bmp-listen=[$(POD_IP)]:11019", "--bmp-router=192.0.2.1", "--bmp-router=2001:db8::1", "--bmp-late=30s"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    assert {"name": "bmp", "containerPort": 11019, "protocol": "TCP"} in container["ports"]
    service = one(docs, "Service", "-bmp")["spec"]
    assert service["type"] == "NodePort" and service["externalTrafficPolicy"] == "Local"
    assert service["ports"] == [{"name": "bmp", "port": 11019, "targetPort": "bmp", "protocol": "TCP"}]
    assert service["selector"]["app.kubernetes.io/component"] == "controller"
    for value_set in ("default", "custom", "minimal"):
        docs = documents(rendered[value_set])
        assert not [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-bmp")]
        for _name, spec in pod_specs(docs):
            if spec["containers"][0]["name"] == "controller":
                assert not any(a.startswith("--bmp-") for a in spec["containers"][0]["args"])


# --- against the fake API server --------------------------------------------------------------------------


def test_helm_installs_upgrades_and_uninstalls_against_the_fake_api_server(
    helm: Path, fake_kube: FakeKube, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake_kube.url}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}],
    }))
    env = {"KUBECONFIG": str(kubeconfig)}
    common = ["--namespace", NAMESPACE, "--disable-openapi-validation"]

    installed = run_helm(helm, "install", RELEASE, str(CHART), *common, env=env)
    assert installed.returncode == 0, installed.stderr
    apps = client.AppsV1Api(fake_kube.client)
    speaker = apps.read_namespaced_daemon_set(f"{RELEASE}-speaker", NAMESPACE).spec.template.spec
    assert speaker.host_network is True
    # exactly the image `make image` builds and archives (tests/e2e/test_image.py): metallb-bgp:VERSION
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    controller = apps.read_namespaced_deployment(f"{RELEASE}-controller", NAMESPACE).spec.template.spec
    assert [c.image for c in (*speaker.containers, *controller.containers)] == [f"metallb-bgp:{version}"] * 2

    upgraded = run_helm(helm, "upgrade", RELEASE, str(CHART), *common, "--set", "loadBalancerClass=example.com/bgp", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    args = apps.read_namespaced_deployment(f"{RELEASE}-controller", NAMESPACE).spec.template.spec.containers[0].args
    assert "--load-balancer-class=example.com/bgp" in args

    removed = run_helm(helm, "uninstall", RELEASE, "--namespace", NAMESPACE, env=env)
    assert removed.returncode == 0, removed.stderr
    assert not apps.list_namespaced_deployment(NAMESPACE).items
    # Helm never deletes CRDs: the users' metallb.io objects survive an uninstall.
    assert client.CustomObjectsApi(fake_kube.client).list_namespaced_custom_object(
        "metallb.io", "v1beta2", NAMESPACE, "bgppeers")["items"] == []


def _exported_samples() -> set[str]:
    """Every sample name the daemons can export: counters end in _total, histograms in _bucket/_sum/_count."""
    from prometheus_client.metrics import MetricWrapperBase

    from metallb_bgp.observe import metrics

    found = set()
    for collector in vars(metrics).values():
        if isinstance(collector, metrics.ScrapedMetric):
            found.add(collector.exposed)
        elif isinstance(collector, MetricWrapperBase):
            name, kind = collector._name, collector._type  # noqa: SLF001 - no public accessor
            found |= {"counter": {f"{name}_total"}, "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"}}.get(
                kind, {name})
    return found


def test_the_grafana_dashboard_queries_only_metrics_the_daemons_export(rendered: dict[str, str]) -> None:
    config_map = one(documents(rendered["monitoring"]), "ConfigMap", "-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # kube-prometheus-stack's sidecar label
    dashboard = json.loads(config_map["data"]["metallb-bgp.json"])
    assert dashboard["uid"] == "metallb-bgp" and dashboard["panels"]
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for query in queries for name in re.findall(r"\bmetallb_[a-z0-9_]+", query)}
    exported = _exported_samples()
    assert used <= exported, f"the dashboard queries metrics nobody exports: {sorted(used - exported)}"
    assert {"metallb_bgp_session_up", "metallb_bfd_session_up", "metallb_bgp_pending_prefixes_total",
            "metallb_speaker_announced", "metallb_bgp_change_latency_seconds_bucket", "metallb_bgp_notifications_total",
            "metallb_allocator_addresses_in_use_total"} <= used  # fmt: skip
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
    assert not [d for d in documents(rendered["default"]) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
