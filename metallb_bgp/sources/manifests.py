"""A folder of YAML manifests as a cluster: the embedded default, `metallb-bgp run --manifests DIR`.

Why per-file, per-object bookkeeping: an editor saving a half-written file, or a typo in one object,
must not withdraw anything. Each file keeps its last good view: a file that is not valid YAML keeps all
of its previous objects, and an object that no longer validates keeps its previous version (matched by
kind, namespace and name) while the rest of the file moves on. Deleting the file (or the object from a
valid file) is the only way to remove an object.

Watching uses `watchfiles` (inotify through Rust's notify crate) with a short `step` so a burst of
writes becomes one change set within milliseconds, instead of polling.

Why `load` and `reload` return a `ClusterChange`: with thousands of files, rebuilding the whole
snapshot (and everything computed from it) for a one-file edit is most of a change's cost. The folder
keeps an index of which files define which service, which service's EndpointSlices and which
configuration objects, so a reload reports just the services and slice groups whose definitions
changed, plus the configuration part (small) whenever any of it did, for `reconciler.IncrementalPlanner`.
`snapshot()` stays whole, for `metallb-bgp plan` and `validate`.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import watchfiles
from pydantic import BaseModel

from metallb_bgp.api.core import EndpointSlice, Service
from metallb_bgp.api.meta import replace
from metallb_bgp.api.loader import load_yaml
from metallb_bgp.errors import ObjectError
from metallb_bgp.objects import ServiceKey
from metallb_bgp.reconciler import ClusterChange, SliceGroup, slice_group
from metallb_bgp.snapshot import DEFAULT_NAMESPACE, ClusterSnapshot

SUFFIXES = (".yaml", ".yml", ".json")

ObjectId = tuple[str, str, str]  # kind, namespace, name


def object_id(obj: BaseModel) -> ObjectId:
    meta = obj.metadata  # type: ignore[attr-defined]
    return (obj.kind, meta.namespace, meta.name)  # type: ignore[attr-defined]


@dataclass(slots=True)
class FileView:
    objects: dict[ObjectId, BaseModel] = field(default_factory=dict)
    errors: tuple[ObjectError, ...] = ()


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """YAML files named directly, or found (recursively, sorted) in the folders named."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            files = [p for p in _walk(path) if p.suffix in SUFFIXES and not _hidden(p)]
            found.extend(sorted(files, key=_path_order))
        elif path.exists():
            found.append(path)
    return found


def _walk(folder: Path) -> Iterator[Path]:
    """Every file under `folder`, as `folder.rglob("*")` finds them (symlinked folders are not entered,
    symlinked files count) with one `scandir` per folder instead of a `stat` per file."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(folder / entry.name)
            elif entry.is_file():
                yield folder / entry.name
        except OSError:
            continue


def _path_order(path: Path) -> tuple[str, ...]:
    """Path's own order (it compares parts), as a plain tuple: sorting 10,000 Paths is much cheaper."""
    return path.parts


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
        self._index = _Index()

    def load(self) -> ClusterChange:
        """(Re)read every file; files that vanished are dropped. Returns everything, as one change."""
        current = manifest_files(self.paths)
        collecting = gc.isenabled()
        gc.disable()  # tens of thousands of small objects that all live on: collections find nothing
        try:
            self.files = {path: read_file(path, self.files.get(path)) for path in current}
        finally:
            if collecting:
                gc.enable()
        self._index = _Index()
        for path in sorted(self.files, key=_path_order):
            self._index.add(path, self._defaulted_objects(self.files[path]), self.files[path].errors)
        return self._index.everything(self.namespace)

    def reload(self, changed: Iterable[Path]) -> ClusterChange:
        """Re-read only the files that changed; a changed path that no longer exists is removed.

        A changed folder (created, moved in or away) is rescanned. Returns what changed.
        """
        paths: set[Path] = set()
        for path in map(self._as_given, changed):
            if path.suffix in SUFFIXES or path in self.files or path in self.paths:
                paths.add(path)
            elif path.is_dir():  # a folder created or moved in: whatever it holds
                paths.update(manifest_files([path]))
                paths.update(self._known_under(path))
            elif not path.exists():  # perhaps a folder deleted or moved away
                paths.update(self._known_under(path))
        touched = _Touched()
        for path in sorted(paths, key=_path_order):
            if self._wanted(path):
                view = read_file(path, self.files.get(path))
                self.files[path] = view
                self._index.replace(path, (self._defaulted_objects(view), view.errors), touched)
            elif path in self.files:
                del self.files[path]
                self._index.replace(path, None, touched)
        return self._index.change(touched, self.namespace)

    def _wanted(self, path: Path) -> bool:
        """A file `manifest_files(self.paths)` would list: named directly, or a manifest in a folder."""
        if path in self.paths:
            return path.exists() and not path.is_dir()
        if path.suffix not in SUFFIXES or _hidden(path) or not path.is_file():
            return False
        return any(root in path.parents for root in self.paths)

    def _as_given(self, path: Path) -> Path:
        """The watcher reports absolute paths; files are known by the paths as given (maybe relative)."""
        for root in self.paths:
            if root.is_absolute():
                continue
            absolute = Path(os.path.abspath(root))
            if path == absolute:
                return root
            if str(path).startswith(f"{absolute}/"):
                return root / path.relative_to(absolute)
        return path

    def _known_under(self, folder: Path) -> list[Path]:
        prefix = f"{folder}/"
        return [known for known in self.files if str(known).startswith(prefix)]

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

    def _defaulted_objects(self, view: FileView) -> list[BaseModel]:
        return [self._defaulted(obj) for obj in view.objects.values()]

    def _defaulted(self, obj: BaseModel) -> BaseModel:
        """Objects without a namespace land where `kubectl apply` would put them."""
        meta = obj.metadata  # type: ignore[attr-defined]
        if meta.namespace or obj.kind in ("Node", "Namespace"):  # type: ignore[attr-defined]
            return obj
        default = self.namespace if obj.__class__.__module__.endswith("metallb") else "default"
        return replace(obj, metadata=replace(meta, namespace=default))

    async def changes(self, *, step_ms: int = 1, max_batch_ms: int = 200) -> AsyncIterator[set[Path]]:
        """Yield sets of changed files (and folders), a burst of writes coalesced (quiet for `step_ms`).

        watchfiles reports a change once it has seen no new one for a step: a change is seen 1-2 steps
        after it happens, so the step is the floor of the event-to-router latency (1 ms here; each step
        wakes a thread for a few microseconds). A long burst is cut every `max_batch_ms`.
        """
        roots = [p for p in self.paths if p.exists()]
        async for batch in watchfiles.awatch(*roots, debounce=max_batch_ms, step=step_ms):
            paths = {Path(p) for _change, p in batch}
            relevant = {p for p in paths if not _hidden(p) and (p.suffix in SUFFIXES or p.suffix == "")}
            if relevant:
                yield relevant


@dataclass
class _Touched:
    """What one reload changed, before the index turns it into a `ClusterChange`."""

    services: set[ServiceKey] = field(default_factory=set)
    slice_groups: set[SliceGroup] = field(default_factory=set)
    config: bool = False
    before_services: dict[ServiceKey, tuple[Service, ...]] = field(default_factory=dict)
    before_slices: dict[SliceGroup, tuple[EndpointSlice, ...]] = field(default_factory=dict)


class _Index:
    """Which file defines which service, which service's EndpointSlices and which other objects.

    The snapshot's order is files in path order, objects in file order; the index answers "every
    definition of this key, in that order" by visiting only the (usually one) files that define it.
    """

    def __init__(self) -> None:
        self.objects: dict[Path, list[BaseModel]] = {}  # defaulted, in file order
        self.errors: dict[Path, tuple[ObjectError, ...]] = {}  # only files with errors
        # the files defining each key, sorted: tuples, as nearly every key has one file (a set is 216 bytes)
        self.service_files: dict[ServiceKey, tuple[Path, ...]] = {}
        self.slice_files: dict[SliceGroup, tuple[Path, ...]] = {}
        self.config_files: set[Path] = set()  # files with any object that is not a Service or EndpointSlice

    def add(self, path: Path, objects: list[BaseModel], errors: tuple[ObjectError, ...]) -> None:
        self.objects[path] = objects
        if errors:
            self.errors[path] = errors
        for obj in objects:
            if isinstance(obj, Service):
                _add(self.service_files, ServiceKey(obj.namespace, obj.name), path)
            elif isinstance(obj, EndpointSlice):
                group = slice_group(obj)
                if group is not None:
                    _add(self.slice_files, group, path)
            else:
                self.config_files.add(path)

    def remove(self, path: Path) -> None:
        for obj in self.objects.pop(path, []):
            if isinstance(obj, Service):
                _discard(self.service_files, ServiceKey(obj.namespace, obj.name), path)
            elif isinstance(obj, EndpointSlice):
                group = slice_group(obj)
                if group is not None:
                    _discard(self.slice_files, group, path)
        self.config_files.discard(path)
        self.errors.pop(path, None)

    def replace(
        self, path: Path, content: tuple[list[BaseModel], tuple[ObjectError, ...]] | None, touched: _Touched
    ) -> None:
        """Make `content` (objects, errors) the file's (None: the file is gone), noting what it touches."""
        objects, errors = content if content is not None else ([], ())
        old_objects, old_errors = self.objects.get(path, []), self.errors.get(path, ())
        if old_objects == objects and old_errors == errors:
            return
        keys, groups = set(), set()
        for obj in (*old_objects, *objects):
            if isinstance(obj, Service):
                keys.add(ServiceKey(obj.namespace, obj.name))
            elif isinstance(obj, EndpointSlice):
                group = slice_group(obj)
                if group is not None:
                    groups.add(group)
            else:
                touched.config = True
        touched.config |= old_errors != errors
        for key in keys - touched.services:
            touched.before_services[key] = self.definitions(key)
        for group in groups - touched.slice_groups:
            touched.before_slices[group] = self.slices(group)
        touched.services |= keys
        touched.slice_groups |= groups
        self.remove(path)
        if content is not None:
            self.add(path, objects, errors)

    def definitions(self, key: ServiceKey) -> tuple[Service, ...]:
        found = []
        for path in self.service_files.get(key, ()):
            for obj in self.objects[path]:
                if isinstance(obj, Service) and obj.metadata.name == key.name and obj.metadata.namespace == key.namespace:
                    found.append(obj)
        return tuple(found)

    def slices(self, group: SliceGroup) -> tuple[EndpointSlice, ...]:
        found = []
        for path in self.slice_files.get(group, ()):
            found.extend(obj for obj in self.objects[path] if isinstance(obj, EndpointSlice) and slice_group(obj) == group)
        return tuple(found)

    def config_snapshot(self, namespace: str) -> ClusterSnapshot:
        objects = [
            obj
            for path in sorted(self.config_files)
            for obj in self.objects[path]
            if not isinstance(obj, (Service, EndpointSlice))
        ]
        errors = [error for path in sorted(self.errors) for error in self.errors[path]]
        return ClusterSnapshot.from_objects(objects, errors=errors, namespace=namespace)

    def everything(self, namespace: str) -> ClusterChange:
        return ClusterChange(
            services={key: self.definitions(key) for key in self.service_files},
            endpoint_slices={group: self.slices(group) for group in self.slice_files},
            config=self.config_snapshot(namespace),
        )

    def change(self, touched: _Touched, namespace: str) -> ClusterChange:
        services = {key: now for key in touched.services if (now := self.definitions(key)) != touched.before_services[key]}
        slices = {group: now for group in touched.slice_groups if (now := self.slices(group)) != touched.before_slices[group]}
        return ClusterChange(
            services=services,
            endpoint_slices=slices,
            config=self.config_snapshot(namespace) if touched.config else None,
        )


K = TypeVar("K")


def _add(index: dict[K, tuple[Path, ...]], key: K, path: Path) -> None:
    paths = index.get(key, ())
    if path not in paths:
        index[key] = tuple(sorted((*paths, path)))


def _discard(index: dict[K, tuple[Path, ...]], key: K, path: Path) -> None:
    paths = tuple(known for known in index.get(key, ()) if known != path)
    if paths:
        index[key] = paths
    else:
        index.pop(key, None)
