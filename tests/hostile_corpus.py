"""Hostile manifest files: what a careless or malicious user can drop into a manifests folder.

Each case is one file and the words its problem must be reported with (a field, a limit, a reason).
`test_hostile_input` runs every case through `metallb-bgp validate` and through a live `metallb-bgp
run` next to a real BIRD holding three good services: each must be reported naming the file, in
bounded time and memory, and none may cost a route. The cases are built from families (YAML tags in
several places, wrong types per field, bad names per kind, resource bombs, duplicates, injections), so
a new field or kind is one more line, not one more test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

NAMESPACE = "metallb-system"
GOOD_SERVICES = ("svc-a", "svc-b", "svc-c")


@dataclass(frozen=True)
class Case:
    name: str  # also the file name, `<name>.yaml`
    text: str | bytes
    expect: str  # must appear in a problem line that names the file
    # a clash between two objects: a one-shot `validate` reports the one later in name order, wherever
    # it is, so only `run` (which keeps the object in force) is sure to name this file
    clash: bool = False

    @property
    def filename(self) -> str:
        return f"{self.name}.yaml"


def peer(name: str = "hostile-peer", address: str = "192.0.2.77", **spec: str) -> str:
    fields = {"myASN": "64500", "peerASN": "64501", "peerAddress": address, **spec}
    body = "".join(f"  {key}: {value}\n" for key, value in fields.items())
    return f"apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n{body}"


def pool(name: str = "hostile-pool", addresses: str = "[203.0.113.0/28]", **spec: str) -> str:
    fields = {"addresses": addresses, **spec}
    body = "".join(f"  {key}: {value}\n" for key, value in fields.items())
    return f"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n{body}"


def advertisement(name: str = "hostile-adv", **spec: str) -> str:
    body = "".join(f"  {key}: {value}\n" for key, value in spec.items()) or "  {}\n"
    return f"apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n{body}"


def service(name: str = "hostile-svc", *, annotations: str = "", port: str = "80", extra: str = "") -> str:
    meta = f"  annotations:\n{annotations}" if annotations else ""
    return (
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n{meta}"
        f"spec:\n  type: LoadBalancer\n  ports:\n  - port: {port}\n{extra}"
    )


def configmap(value: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hostile-cm\n  namespace: default\ndata:\n  key: {value}\n"


def _laughs(levels: int = 9, width: int = 10) -> tuple[str, str]:
    """Anchors `l0`..`l{levels}`, each `width` aliases of the one before: width**levels values."""
    lines = [f"x0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels + 1):
        lines.append(f"x{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n", f"*l{levels}"


def _tags() -> Iterator[Case]:
    values = {
        "int-abc": "!!int abc", "int-float": "!!int 1.5", "float-lots": "!!float lots", "bool-maybe": "!!bool maybe",
        "bool-2": "!!bool 2", "null-x": "!!null x", "ts-feb30": "!!timestamp 2024-02-30", "ts-word": "!!timestamp yesterday",
        "map-on-seq": "!!map [1, 2]", "seq-on-map": "!!seq {a: 1}", "str-on-map": "!!str {a: 1}", "set": "!!set {a, b}",
        "omap": "!!omap [{a: 1}]", "python-object": "!!python/object:os.system x", "python-name": "!!python/name:os.system ''",
        "local-tag": "!hostile x", "verbatim-tag": "!<tag:example.com,2000:x> x",
    }
    expects = {"map-on-seq": "!!map on a sequence", "seq-on-map": "!!seq on a mapping", "str-on-map": "!!str on a mapping"}
    for label, value in values.items():
        expect = expects.get(label, "invalid YAML")
        yield Case(f"tag-{label}-in-configmap", configmap(value), expect)
        yield Case(f"tag-{label}-as-service-name", service(value), expect)
        yield Case(f"tag-{label}-as-peer-asn", peer(myASN=value), expect)


def _yaml_bombs() -> Iterator[Case]:
    digits = "9" * 5000
    yield Case("int-5000-digits-in-configmap", configmap(digits), "!!int")
    yield Case("int-5000-digits-as-asn", peer(myASN=digits), "!!int")
    yield Case("int-5000-digits-as-port", service(port=digits), "!!int")
    anchors, alias = _laughs()
    for where, text in {
        "kind": f"{anchors}apiVersion: v1\nkind: {alias}\nmetadata: {{name: x}}\n",
        "api-version": f"{anchors}apiVersion: {alias}\nkind: Service\nmetadata: {{name: x}}\n",
        "name": f"{anchors}apiVersion: v1\nkind: Service\nmetadata: {{name: {alias}}}\n",
        "labels": f"{anchors}apiVersion: v1\nkind: Service\nmetadata: {{name: x, labels: {{a: {alias}}}}}\n",
    }.items():
        yield Case(f"billion-laughs-in-{where}", text, "aliases expand this file by more than")
    long_value = "y" * 100_000
    yield Case("long-string-aliased-100k-times", f"a: &a {long_value}\nkind: [{', '.join(['*a'] * 100_000)}]\n", "aliases expand")
    yield Case("alias-cycle-sequence", "&a [*a]\n", "a cycle")
    yield Case("alias-cycle-mapping", "&a {apiVersion: v1, kind: Service, metadata: *a}\n", "a cycle")
    yield Case("nested-990-in-name", service("[" * 990 + "]" * 990), "levels deep")
    yield Case("nested-5000-flow", "a: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML")
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(150)) + "  " * 150 + "leaf: 1\n"
    yield Case("nested-150-block", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata:\n" + "\n".join("  " + line for line in block.splitlines()) + "\n", "levels deep")
    yield Case("object-of-2-mib", configmap("z" * (2 * 1024 * 1024)), "etcd's limit for one object")
    yield Case("objects-100001", "---\n{}\n" * 100_001, "objects in one file")
    yield Case("duplicate-key-top", service() + "kind: Service\n", 'mapping key "kind" already defined')
    yield Case("duplicate-key-spec", peer() + "  peerAddress: 192.0.2.78\n", 'mapping key "peerAddress" already defined')
    yield Case("duplicate-key-metadata", service().replace("  namespace: default\n", "  namespace: default\n  name: again\n"), 'mapping key "name"')
    yield Case("merge-of-a-scalar", "a: &a 1\nb: {<<: *a}\n", "merge key")
    yield Case("complex-key", "? [a, b]\n: 1\n", "plain value")
    yield Case("syntax-error", "apiVersion: v1\nkind: Service\nmetadata: {name: web\n", "invalid YAML")
    yield Case("tab-indentation", "apiVersion: v1\nkind: Service\nmetadata:\n\tname: web\n", "invalid YAML")
    yield Case("invalid-utf8", b"apiVersion: v1\nkind: Service\nmetadata: {name: \xff\xfe}\n", "cannot be read")
    yield Case("nul-byte", "apiVersion: v1\nkind: Service\nmetadata: {name: a\x00b}\n", "invalid YAML")
    yield Case("utf16", "apiVersion: v1\nkind: Service\n".encode("utf-16"), "cannot be read")
    yield Case("scalar-document", "just a string\n", "is not a mapping")
    yield Case("list-document", "- apiVersion: v1\n  kind: Service\n", "is not a mapping")
    yield Case("list-kind-with-scalars", "apiVersion: v1\nkind: List\nitems: [1, two]\n", "is not a mapping")
    yield Case("no-kind", "apiVersion: v1\nmetadata: {name: x}\n", "no apiVersion or no kind")
    yield Case("kind-is-a-list", "apiVersion: v1\nkind: [Service]\nmetadata: {name: x}\n", "no apiVersion or no kind")


def _types() -> Iterator[Case]:
    for field, value, expect in [
        ("myASN", '"64512"', "valid integer"), ("myASN", "true", "valid integer"), ("myASN", "1.5", "valid integer"),
        ("myASN", "[1]", "valid integer"), ("myASN", "-1", "greater than or equal"), ("myASN", "4294967296", "less than"),
        ("peerPort", "99999", "less than"), ("peerPort", '"179"', "valid integer"), ("peerPort", "true", "valid integer"),
        ("holdTime", ".nan", "not a duration"), ("holdTime", ".inf", "not a duration"), ("holdTime", "-1s", "negative"),
        ("holdTime", "90", "is a number, not a duration"), ("holdTime", '"90"', "not a duration"), ("holdTime", "1e400", "not a duration"),
        ("ebgpMultiHop", '"no"', "valid boolean"), ("ebgpMultiHop", "1", "valid boolean"), ("peerAddress", "[1]", "valid string"),
        ("peerAddress", "not-an-ip", "peerAddress"), ("peerAddress", '"192.0.2.1%eth0"', "peerAddress"),
        ("sourceAddress", '"fe80::1%x"', "sourceAddress"), ("routerID", "garbage", "routerID"),
        ("password", "x" * 81, "longer than 80 bytes"), ("password", '"pw\\nneighbor 1.2.3.4"', "line breaks"),
        ("vrf", '"red; md5-password injected; hold-time 3"', "is not a VRF"), ("vrf", '"a b"', "is not a VRF"),
        ("vrf", "averyveryverylongvrfname", "is not a VRF"),
        ("passwordSecret", "{name: s, namespace: vault}", "passwordSecret.namespace"),
        ("passwordSecret", "{name: missing}", "not found"), ("peerASN", "{}", "valid integer"),
    ]:
        yield Case(f"peer-{field.lower()}-{_slug(value)}", peer(**{field: value}), expect)
    for field, value, expect in [
        ("autoAssign", '"yes"', "valid boolean"), ("autoAssign", "1", "valid boolean"), ("avoidBuggyIPs", '"true"', "valid boolean"),
        ("addresses", "[1]", "valid string"), ("addresses", "[nonsense]", "spec.addresses[0]"), ("addresses", '["10.0.0.0/8\\nx"]', "spec.addresses[0]"),
        ("serviceAllocation", '{priority: "1"}', "valid integer"),
    ]:
        yield Case(f"pool-{field.lower()}-{_slug(value)}", pool(**{field: value}), expect)
    for field, value, expect in [
        ("aggregationLength", "0", "greater than or equal to 1"), ("aggregationLength", "-1", "greater than or equal to 1"),
        ("aggregationLength", "33", "longer than 32"), ("aggregationLength", '"24"', "valid integer"),
        ("aggregationLengthV6", "0", "greater than or equal to 1"), ("localPref", '"100"', "valid integer"),
        ("communities", '["1:2; neighbor x"]', "spec.communities[0]"), ("communities", "[99999:1]", "spec.communities[0]"),
    ]:
        yield Case(f"adv-{field.lower()}-{_slug(value)}", advertisement(**{field: value}), expect)
    for port, expect in [("99999999", "less than or equal to 65535"), ("0", "greater than or equal to 1"), ("-1", "greater than"), ('"80"', "valid integer"), ("true", "valid integer")]:
        yield Case(f"service-port-{_slug(port)}", service(port=port), expect)
    yield Case("service-nodeport-70000", service(extra="").replace("  - port: 80\n", "  - port: 80\n    nodePort: 70000\n"), "less than or equal")
    yield Case("service-etp-bogus", service(extra="  externalTrafficPolicy: Sometimes\n"), "externalTrafficPolicy")
    yield Case("endpoint-ready-string", (
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-a-2\n  namespace: default\n"
        "  labels: {kubernetes.io/service-name: svc-a}\naddressType: IPv4\nendpoints:\n- addresses: [10.0.0.9]\n"
        '  conditions: {ready: "yes"}\n  nodeName: node-a\n'), "valid boolean")


def _names() -> Iterator[Case]:
    bad = {
        "newline": '"web\\nforged: line"', "quote": "\"we'b\"", "braces": '"{web}"', "escape": '"web\\e[31mred"',
        "300-chars": "a" * 300, "uppercase": "Web", "underscore": "web_1", "leading-dash": '"-web"', "space": '"w eb"',
        "line-separator": '"web\\u2028x"', "unicode": '"wéb"', "empty": '""',
    }
    for label, value in bad.items():
        yield Case(f"name-{label}-service", service(value), "metadata.name")
        yield Case(f"name-{label}-peer", peer(value), "metadata.name")
    yield Case("namespace-newline", service().replace("namespace: default", 'namespace: "default\\nx"'), "metadata.namespace")
    yield Case("service-name-starts-with-digit", service("1web"), "metadata.name")
    yield Case("label-value-newline", service().replace("  namespace: default\n", '  namespace: default\n  labels: {app: "a\\nb"}\n'), "metadata.labels")
    yield Case("label-key-bad", service().replace("  namespace: default\n", '  namespace: default\n  labels: {"a b": x}\n'), "metadata.labels")
    yield Case("annotation-key-bad", service(annotations='    "not a key": x\n'), "metadata.annotations")
    yield Case("annotations-300k", service(annotations=f"    big: {'b' * 300_000}\n"), "annotations")


def _annotations() -> Iterator[Case]:
    ips = "metallb.io/loadBalancerIPs"
    many = ",".join(f"198.51.{i // 250}.{i % 250}" for i in range(10_000))
    for label, value in {
        "zone-newline": '"2001:db8::5%x\\nforged line"', "zone": '"198.51.100.3%eth0"', "garbage": '"lots, of, garbage"',
        "10000-ips": many, "two-v4": '"198.51.100.3,198.51.100.4"', "word": "here",
    }.items():
        yield Case(f"annotation-lbips-{label}", service(f"lbips-{label}", annotations=f"    {ips}: {value}\n"), ips)
    yield Case("annotation-missing-pool", service("missing-pool", annotations="    metallb.io/address-pool: nowhere\n"), "no IPAddressPool named 'nowhere'")
    yield Case("annotation-pool-newline", service("pool-newline", annotations='    metallb.io/address-pool: "a\\nb"\n'), "metallb.io/address-pool")
    yield Case("spec-lbip-garbage", service("spec-lbip", extra="  loadBalancerIP: 999.1.1.1\n"), "spec.loadBalancerIP")


def _objects() -> Iterator[Case]:
    yield Case("api-version-typo", peer().replace("metallb.io/v1beta2", "metalb.io/v1beta1"), "metalb.io/v1beta1")
    yield Case("api-version-alpha", pool().replace("v1beta1", "v1alpha1"), "unsupported metallb.io/v1alpha1")
    yield Case("kind-typo", pool().replace("kind: IPAddressPool", "kind: IPAddressPools"), "unsupported metallb.io/v1beta1 IPAddressPools")
    yield Case("unknown-group", "apiVersion: hostile.example/v1\nkind: Thing\nmetadata: {name: t}\n", "not a kind metallb-bgp reads")
    yield Case("unknown-field", peer(peerAdress="192.0.2.1"), "unknown field")
    yield Case("duplicate-service-other-file", service("svc-a", annotations="    metallb.io/loadBalancerIPs: 198.51.100.9\n"), "also defined in")
    yield Case("duplicate-peer-other-file", peer("router", "192.0.2.99"), "also defined in")
    yield Case("duplicate-pool-other-file", pool("pool", "[203.0.113.0/24]"), "also defined in")
    yield Case("duplicate-peer-in-file", peer("twin") + "---\n" + peer("twin", "192.0.2.79"), "defined more than once in")
    yield Case("duplicate-service-in-file", service("twin-svc") + "---\n" + service("twin-svc", port="81"), "defined more than once in")
    yield Case("pool-overlapping-the-good-one", pool("overlap", "[198.51.100.0/24]"), "overlaps", clash=True)
    yield Case("metallb-object-in-other-namespace", peer().replace(f"namespace: {NAMESPACE}", "namespace: elsewhere"), "metadata.namespace")
    yield Case("adv-naming-missing-pool-and-peer", advertisement(ipAddressPools="[nope]", peers="[nobody]"), "no IPAddressPool named nope")


def _slug(text: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower())[:24].strip("-")
    return cleaned or "empty"


def corpus() -> list[Case]:
    cases: list[Case] = []
    seen: set[str] = set()
    for case in (*_tags(), *_yaml_bombs(), *_types(), *_names(), *_annotations(), *_objects()):
        name, n = case.name, 1
        while name in seen:  # values that read alike (`1`, `-1`, `[1]`) get a number
            n += 1
            name = f"{case.name}-{n}"
        seen.add(name)
        cases.append(Case(name, case.text, case.expect, case.clash))
    return cases
