"""A folder of YAML manifests as a cluster: the embedded default, `metallb-bgp run --manifests DIR`.

Why per-file, per-object bookkeeping: an editor saving a half-written file, or a typo in one object,
must not withdraw anything. Each file keeps its last good view: a file that is not valid YAML keeps all
of its previous objects, and an object that no longer validates keeps its previous version (matched by
kind, namespace and name) while the rest of the file moves on. Deleting the file (or the object from a
valid file) is the only way to remove an object.

Watching uses `watchfiles` (inotify through Rust's notify crate) with a short `step` so a burst of
writes becomes one change set within milliseconds, instead of polling.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles
from pydantic import BaseModel

from metallb_bgp.api.loader import load_yaml
from metallb_bgp.errors import ObjectError
from metallb_bgp.snapshot import DEFAULT_NAMESPACE, ClusterSnapshot

SUFFIXES = (".yaml", ".yml", ".json")

ObjectId = tuple[str, str, str]  # kind, namespace, name


def object_id(obj: BaseModel) -> ObjectId:
    meta = obj.metadata  # type: ignore[attr-defined]
    return (obj.kind, meta.namespace, meta.name)  # type: ignore[attr-defined]


@dataclass
class FileView:
    objects: dict[ObjectId, BaseModel] = field(default_factory=dict)
    errors: tuple[ObjectError, ...] = ()


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """YAML files named directly, or found (recursively, sorted) in the folders named."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in SUFFIXES and not _hidden(p))
        elif path.exists():
            found.append(path)
    return found


def _hidden(path: Path) -> bool:
    return any(part.startswith(".") for part in path.parts[-1:])


def read_file(path: Path, previous: FileView | None = None) -> FileView:
    """Parse one file, falling back to `previous` for whatever did not parse this time."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        error = ObjectError("File", "", str(path), "", f"cannot be read: {exc}")
        return FileView(dict(previous.objects) if previous else {}, (error,))
    objects: dict[ObjectId, BaseModel] = {}
    errors: list[ObjectError] = []
    yaml_broken = False
    for parsed in load_yaml(text, source=str(path)):
        errors.extend(_in_file(e, path) for e in parsed.errors)
        if parsed.obj is not None:
            objects[object_id(parsed.obj)] = parsed.obj
        elif parsed.errors and parsed.errors[0].kind == "File":
            yaml_broken = True
        elif previous is not None:
            for error in parsed.errors:
                kept = previous.objects.get((error.kind, error.namespace, error.name))
                if kept is not None:
                    objects[object_id(kept)] = kept
    if yaml_broken and previous is not None:
        objects = dict(previous.objects)
    return FileView(objects, tuple(dict.fromkeys(errors)))


def _in_file(error: ObjectError, path: Path) -> ObjectError:
    if error.kind == "File":
        return error
    return ObjectError(error.kind, error.namespace, error.name, error.field, f"{error.message} (in {path})", error.severity)


class ManifestFolder:
    """The cluster as described by YAML files under some paths; `snapshot()` is always whole."""

    def __init__(self, paths: Iterable[Path], *, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.paths = [Path(p) for p in paths]
        self.namespace = namespace
        self.files: dict[Path, FileView] = {}

    def load(self) -> None:
        """(Re)read every file; files that vanished are dropped."""
        current = manifest_files(self.paths)
        self.files = {path: read_file(path, self.files.get(path)) for path in current}

    def reload(self, changed: Iterable[Path]) -> None:
        """Re-read only the files that changed; a changed path that no longer exists is removed."""
        wanted = set(manifest_files(self.paths))
        for path in changed:
            if path in wanted:
                self.files[path] = read_file(path, self.files.get(path))
            else:
                self.files.pop(path, None)
        for path in wanted - self.files.keys():
            self.files[path] = read_file(path)

    def snapshot(self) -> ClusterSnapshot:
        objects: list[BaseModel] = []
        errors: list[ObjectError] = []
        for path in sorted(self.files):
            view = self.files[path]
            objects.extend(view.objects.values())
            errors.extend(view.errors)
        return ClusterSnapshot.from_objects(
            (self._defaulted(o) for o in objects), errors=errors, namespace=self.namespace
        )

    def _defaulted(self, obj: BaseModel) -> BaseModel:
        """Objects without a namespace land where `kubectl apply` would put them."""
        meta = obj.metadata  # type: ignore[attr-defined]
        if meta.namespace or obj.kind in ("Node", "Namespace"):  # type: ignore[attr-defined]
            return obj
        default = self.namespace if obj.__class__.__module__.endswith("metallb") else "default"
        return obj.model_copy(update={"metadata": meta.model_copy(update={"namespace": default})})

    async def changes(self, *, step_ms: int = 10, max_batch_ms: int = 200) -> AsyncIterator[set[Path]]:
        """Yield sets of changed files, a burst of writes coalesced (quiet for `step_ms`)."""
        roots = [p for p in self.paths if p.exists()]
        async for batch in watchfiles.awatch(*roots, debounce=max_batch_ms, step=step_ms):
            paths = {Path(p) for _change, p in batch}
            relevant = {p for p in paths if p.suffix in SUFFIXES and not _hidden(p)}
            if relevant:
                yield relevant
