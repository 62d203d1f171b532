"""The manifests folder as a cluster: each file keeps its last good view, deletions are the only removals."""

from __future__ import annotations

import asyncio
from pathlib import Path

from metallb_bgp.sources.manifests import ManifestFolder

POOL = """apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: {name}}}
spec: {{addresses: [{cidr}]}}
"""
SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{type: LoadBalancer, ports: [{{port: {port}}}]}}
"""


def folder(tmp_path: Path) -> ManifestFolder:
    source = ManifestFolder([tmp_path])
    source.load()
    return source


def test_objects_without_namespace_land_where_kubectl_would_put_them(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(POOL.format(name="p", cidr="10.0.0.0/24") + "---\n" + SERVICE.format(name="s", port=80))
    snapshot = folder(tmp_path).snapshot()
    assert snapshot.pools[0].namespace == "metallb-system"
    assert snapshot.services[0].namespace == "default"


def test_invalid_yaml_keeps_every_object_of_the_file_and_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(POOL.format(name="p", cidr="10.0.0.0/24") + "---\n" + SERVICE.format(name="s", port=80))
    source = folder(tmp_path)
    path.write_text("kind: [broken\n")
    source.reload({path})
    snapshot = source.snapshot()
    assert [p.name for p in snapshot.pools] == ["p"] and [s.name for s in snapshot.services] == ["s"]
    (error,) = snapshot.load_errors
    assert error.kind == "File" and error.name == str(path) and error.field.startswith("line ")


def test_an_object_that_stops_validating_keeps_its_previous_version_while_the_rest_moves_on(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(POOL.format(name="p", cidr="10.0.0.0/24") + "---\n" + SERVICE.format(name="s", port=80))
    source = folder(tmp_path)
    path.write_text(POOL.format(name="p", cidr="10.0.0.0/24").replace("addresses", "adresses") + "---\n" + SERVICE.format(name="s", port=81))
    source.reload({path})
    snapshot = source.snapshot()
    assert snapshot.pools[0].spec.addresses == ["10.0.0.0/24"]  # the last good version
    assert snapshot.services[0].spec.ports[0].port == 81  # the valid edit took effect
    assert any(e.field == "spec.adresses" and e.name == "p" for e in snapshot.load_errors)


def test_removing_an_object_from_a_valid_file_or_deleting_the_file_removes_it(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(POOL.format(name="p", cidr="10.0.0.0/24") + "---\n" + SERVICE.format(name="s", port=80))
    b.write_text(SERVICE.format(name="t", port=80))
    source = folder(tmp_path)
    a.write_text(POOL.format(name="p", cidr="10.0.0.0/24"))
    b.unlink()
    source.reload({a, b})
    snapshot = source.snapshot()
    assert [p.name for p in snapshot.pools] == ["p"] and snapshot.services == ()


def test_a_burst_of_writes_arrives_as_one_change_set(tmp_path: Path) -> None:
    source = folder(tmp_path)

    async def scenario() -> set[Path]:
        changes = source.changes(step_ms=50)
        first = asyncio.ensure_future(changes.__anext__())
        await asyncio.sleep(0.2)  # the watcher is registered
        for i in range(20):
            (tmp_path / f"f{i}.yaml").write_text(SERVICE.format(name=f"s{i}", port=80))
        batch = await asyncio.wait_for(first, 10)
        await changes.aclose()
        return batch

    batch = asyncio.run(scenario())
    assert batch == {tmp_path / f"f{i}.yaml" for i in range(20)}
