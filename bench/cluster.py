"""A synthetic cluster as a folder of manifests: one pool, one peer, one advertisement, N services.

Each service lives in its own file with its EndpointSlice (as a GitOps repository splits them per
application), so "one more service", "one service fewer" and "an endpoint moved" are each one file
write, as a user or a GitOps tool makes them. For the cold start the bench also writes the two layouts
`kubectl get svc,endpointslices -A -o yaml` gives a user: every object in one multi-document file
(`one-file`), and one `kind: List` document (`list`). Files are replaced atomically (write a hidden temporary
file, rename over the target): the watcher never sees a half-written file, so a latency sample measures
the reconcile, not an editor artefact.

Services are named `svc-000000`, `svc-000001`, ... so that key order is index order and the allocator,
starting from an empty state, gives service i the pool's i-th address: the bench knows which prefix to
look for without asking the code under test.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from builders import service_manifest  # noqa: E402  (the tests' template, one for both)

POOL_CIDR = ipaddress.ip_network("10.64.0.0/12")  # 1M addresses: room for any N the bench runs
SPEAKER_ADDRESS = "127.0.0.2"
ROUTER_ADDRESS = "127.0.0.1"
SPEAKER_ASN = 64500
ROUTER_ASN = 64501
NODE = "node-a"
OTHER_NODE = "node-b"
COMMUNITY = "64500:1"


def service_name(index: int) -> str:
    return f"svc-{index:06d}"


def service_ip(index: int) -> ipaddress.IPv4Address:
    """The address a fresh allocation gives service `index` (lowest free, in key order)."""
    return POOL_CIDR.network_address + index


def config_manifests(router_port: int, namespace: str = "metallb-system") -> dict[str, str]:
    return {
        "00-pool.yaml": f"""apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: bench, namespace: {namespace}}}
spec:
  addresses: [{POOL_CIDR}]
""",
        "00-peer.yaml": f"""apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: router, namespace: {namespace}}}
spec:
  myASN: {SPEAKER_ASN}
  peerASN: {ROUTER_ASN}
  peerAddress: {ROUTER_ADDRESS}
  peerPort: {router_port}
  sourceAddress: {SPEAKER_ADDRESS}
  holdTime: 30s
""",
        "00-adv.yaml": f"""apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: bench, namespace: {namespace}}}
spec:
  communities: ["{COMMUNITY}"]
""",
    }


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@dataclass
class BenchCluster:
    """The manifests folder of one bench run."""

    folder: Path
    local_every: int = 0  # every k-th service uses externalTrafficPolicy Local (0: none)
    layout: str = "files"  # one of LAYOUTS

    def service_path(self, name: str) -> Path:
        return self.folder / f"{name}.yaml"

    @property
    def together_path(self) -> Path:
        """The one file of the `one-file` and `list` layouts."""
        return self.folder / "services.yaml"

    def write_config(self, router_port: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for filename, text in config_manifests(router_port).items():
            (self.folder / filename).write_text(text)

    def is_local(self, index: int) -> bool:
        return self.local_every > 0 and index % self.local_every == 0

    def write_services(self, count: int, start: int = 0) -> None:
        texts = (service_manifest(service_name(i), local=self.is_local(i)) for i in range(start, start + count))
        if self.layout == "files":
            for index, text in enumerate(texts, start):
                self.service_path(service_name(index)).write_text(text)
        elif self.layout == "one-file":
            self.together_path.write_text("---\n".join(texts))
        else:
            self.together_path.write_text("apiVersion: v1\nkind: List\nitems:\n" + "".join(map(list_items, texts)))

    def delete_services(self, indexes: range) -> None:
        if self.layout != "files":
            self.together_path.unlink(missing_ok=True)
            return
        for index in indexes:
            self.service_path(service_name(index)).unlink(missing_ok=True)


LAYOUTS = ("files", "one-file", "list")


def list_items(text: str) -> str:
    """The documents of a multi-document text as items of a `kind: List` (indented under `- `)."""
    items = []
    for document in text.split("---\n"):
        lines = document.strip("\n").split("\n")
        items.append("- " + "\n  ".join(lines) + "\n")
    return "".join(items)
