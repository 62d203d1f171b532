"""What one manifest file may cost (`api.loader.Limits`): each limit refuses the file, naming it and the
limit, and the file's previous objects stay. Small limits here, so each case is cheap; the defaults'
worst case is measured in docs/performance.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import service_manifest

from metallb_bgp.api.loader import LIMITS, Limits, load_yaml
from metallb_bgp.sources import manifests
from metallb_bgp.sources.manifests import ManifestFolder


def problems(text: str, limits: Limits) -> list[str]:
    return [str(e) for parsed in load_yaml(text, source="f.yaml", limits=limits) for e in parsed.errors]


@pytest.mark.parametrize(("limits", "text", "words"), [
    (Limits(object_bytes=100), service_manifest("web"), "more than 100 (etcd's limit for one object)"),
    (Limits(objects_per_file=1), service_manifest("web"), "more than 1 objects in one file"),
    (Limits(objects_per_file=3), "apiVersion: v1\nkind: List\nitems: [{}, {}, {}, {}]\n", "more than 3 objects in one file"),
    (Limits(values_per_file=50), service_manifest("web") * 1, "more than 50 values in one file"),
    (Limits(depth=5), "a: {b: {c: {d: {e: {f: 1}}}}}\n", "nested more than 5 levels deep"),
    (Limits(alias_values=10), "a: &a [1, 2, 3, 4, 5]\nb: [*a, *a]\n", "aliases expand this file by more than 10 values"),
])  # fmt: skip
def test_each_limit_refuses_the_file_naming_it_and_the_limit(limits: Limits, text: str, words: str) -> None:
    found = problems(text, limits)
    assert len(found) == 1 and found[0].startswith("File f.yaml: line ") and words in found[0], found


def test_a_file_within_every_limit_loads() -> None:
    assert problems(service_manifest("web"), LIMITS) == []
    assert problems("a: &a [1, 2]\nb: [*a, *a]\nc: {<<: {x: 1}}\n", Limits(alias_values=6, depth=3)) == [
        "warning: Document <unnamed in f.yaml>: apiVersion: no apiVersion or no kind (both strings) in f.yaml: "
        "not an object metallb-bgp reads; ignored"
    ]


def test_a_file_over_the_size_limit_keeps_its_previous_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(service_manifest("web"))
    folder = ManifestFolder([tmp_path])
    folder.load()
    monkeypatch.setattr(manifests, "LIMITS", Limits(file_bytes=1000))
    path.write_text(service_manifest("web").replace("port: 80", "port: 81") + "# " + "x" * 1000 + "\n")
    change = folder.reload([path])
    assert change.services == {}  # nothing moved: the old Service stands
    [error] = folder.snapshot().load_errors
    assert str(error) == f"File {path}: cannot be read: larger than 1000 bytes (the limit)"
    assert folder.snapshot().services[0].spec.ports[0].port == 80


def test_files_beyond_the_folders_total_are_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = len(service_manifest("a"))
    monkeypatch.setattr(manifests, "LIMITS", Limits(folder_bytes=2 * size + 10))
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text(service_manifest(name))
    folder = ManifestFolder([tmp_path])
    folder.load()
    assert [s.name for s in folder.snapshot().services] == ["a", "b"]
    [error] = folder.snapshot().load_errors
    assert error.name == str(tmp_path / "c.yaml") and "more than" in error.message and "(the limit)" in error.message
    (tmp_path / "a.yaml").unlink()  # room again: the refused file is read when it next changes
    folder.reload([tmp_path / "a.yaml"])
    (tmp_path / "c.yaml").write_text(service_manifest("c"))
    folder.reload([tmp_path / "c.yaml"])
    assert [s.name for s in folder.snapshot().services] == ["b", "c"]
    assert folder.snapshot().load_errors == ()
