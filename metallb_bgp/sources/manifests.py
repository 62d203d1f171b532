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

import dataclasses
import gc
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles
from pydantic import BaseModel

from metallb_bgp.api.core import EndpointSlice, Service
from metallb_bgp.api.loader import KINDS, LIMITS, load_yaml
from metallb_bgp.api.meta import replace
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.change import ClusterChange, SliceGroup, slice_group
from metallb_bgp.core.keys import ServiceKey
from metallb_bgp.core.snapshot import DEFAULT_NAMESPACE, ClusterSnapshot

SUFFIXES = (".yaml", ".yml", ".json")

ObjectId = tuple[str, str, str]  # kind, namespace, name


def object_id(obj: BaseModel) -> ObjectId:
    meta = obj.metadata  # type: ignore[attr-defined]
    return (obj.kind, meta.namespace, meta.name)  # type: ignore[attr-defined]


@dataclass(slots=True)
class FileView:
    objects: dict[ObjectId, BaseModel] = field(default_factory=dict)  # namespaces defaulted, in file order
    errors: tuple[ObjectError, ...] = ()
    size: int = 0  # bytes read


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


def read_file(
    path: Path, previous: FileView | None = None, *, namespace: str = DEFAULT_NAMESPACE, room: int | None = None,
    too_large: str = "",
) -> FileView:
    """Parse one file, falling back to `previous` for whatever did not parse this time.

    Objects are keyed by their id with the namespace defaulted (see `defaulted`); a second definition
    of one id in the file is an error and the first one is kept. `room` is how many bytes the file may
    have (`Limits.file_bytes`, less when the folder's total is near `Limits.folder_bytes`), and
    `too_large` what to say when it has more. Nothing here raises: whatever goes wrong is this file's
    error, and its previous objects stay.
    """
    room = LIMITS.file_bytes if room is None else room
    try:
        with path.open("rb") as handle:
            data = handle.read(room + 1)
        if len(data) > room:
            raise _TooLarge(too_large or f"larger than {room} bytes (the limit)")
        text = data.decode("utf-8")
        objects, errors, yaml_broken = _parse(text, path, previous, namespace)
    except (OSError, UnicodeDecodeError, _TooLarge) as exc:
        return _kept(previous, ObjectError("File", "", str(path), "", f"cannot be read: {exc}"))
    except Exception as exc:  # noqa: BLE001 - one file's problem, never the process's
        return _kept(previous, ObjectError("File", "", str(path), "", f"cannot be read ({type(exc).__name__})"))
    if yaml_broken and previous is not None:
        objects = dict(previous.objects)
    return FileView(objects, tuple(dict.fromkeys(errors)), len(data))


class _TooLarge(Exception):
    pass


def _kept(previous: FileView | None, error: ObjectError) -> FileView:
    """The previous view (its objects and the bytes counted for it), with the error that kept it."""
    return FileView(dict(previous.objects) if previous else {}, (error,), previous.size if previous else 0)


def _parse(
    text: str, path: Path, previous: FileView | None, namespace: str
) -> tuple[dict[ObjectId, BaseModel], list[ObjectError], bool]:
    objects: dict[ObjectId, BaseModel] = {}
    errors: list[ObjectError] = []
    yaml_broken = False
    for parsed in load_yaml(text, source=str(path)):
        errors.extend(_in_file(e, path) for e in parsed.errors)
        if parsed.obj is not None:
            obj = defaulted(parsed.obj, namespace)
            key = object_id(obj)
            if key in objects:
                message = f"defined more than once in {path}; the first definition is used"
                errors.append(ObjectError(key[0], key[1], key[2], "metadata.name", message))
            else:
                objects[key] = obj
        elif parsed.errors and parsed.errors[0].kind == "File":
            yaml_broken = True
        elif previous is not None:
            for error in parsed.errors:
                kind = error.kind
                kept = previous.objects.get((kind, error.namespace or default_namespace(kind, namespace), error.name))
                if kept is not None:
                    objects[object_id(kept)] = kept
    return objects, errors, yaml_broken


def _in_file(error: ObjectError, path: Path) -> ObjectError:
    if error.kind == "File":
        return error
    return ObjectError(error.kind, error.namespace, error.name, error.field, f"{error.message} (in {path})", error.severity)


_CLUSTER_SCOPED = frozenset({"Node", "Namespace"})
_METALLB_KINDS = frozenset(kind for (api_version, kind) in KINDS if api_version.startswith("metallb.io/"))


def default_namespace(kind: str, namespace: str) -> str:
    """Where `kubectl apply` puts an object of `kind` written without a namespace (metallb.io objects:
    MetalLB's namespace, as applied from its own manifests; core objects: `default`)."""
    if kind in _CLUSTER_SCOPED:
        return ""
    return namespace if kind in _METALLB_KINDS else "default"


def defaulted(obj: BaseModel, namespace: str) -> BaseModel:
    """`obj` with its namespace defaulted (`default_namespace`); the same object when it has one."""
    meta = obj.metadata  # type: ignore[attr-defined]
    if meta.namespace or obj.kind in _CLUSTER_SCOPED:  # type: ignore[attr-defined]
        return obj
    return replace(obj, metadata=replace(meta, namespace=default_namespace(obj.kind, namespace)))  # type: ignore[attr-defined]


class ManifestFolder:
    """The cluster as described by YAML files under some paths; `snapshot()` is always whole."""

    def __init__(self, paths: Iterable[Path], *, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.paths = [Path(p) for p in paths]
        self.namespace = namespace
        self.files: dict[Path, FileView] = {}
        self._bytes = 0  # the sizes of `files`, against `Limits.folder_bytes`
        self._index = _Index()

    def load(self) -> ClusterChange:
        """(Re)read every file; files that vanished are dropped. Returns everything, as one change."""
        current = manifest_files(self.paths)
        collecting = gc.isenabled()
        gc.disable()  # tens of thousands of small objects that all live on: collections find nothing
        try:
            previous, self.files, self._bytes = self.files, {}, 0
            for path in current:
                self._read(path, previous.get(path))
        finally:
            if collecting:
                gc.enable()
        self._index = _Index()
        for path in sorted(self.files, key=_path_order):
            self._index.replace(path, self.files[path], _Touched())
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
                self._index.replace(path, self._read(path, self.files.get(path)), touched)
            elif path in self.files:
                self._bytes -= self.files.pop(path).size
                self._index.replace(path, None, touched)
        return self._index.change(touched, self.namespace)

    def _read(self, path: Path, previous: FileView | None) -> FileView:
        """Read one file into `files`, within what is left of `Limits.folder_bytes`."""
        own = previous.size if previous is not None and path in self.files else 0
        left = LIMITS.folder_bytes - (self._bytes - own)
        too_large = ""
        if left < LIMITS.file_bytes:
            roots = ", ".join(map(str, self.paths))
            too_large = f"with it, the files under {roots} would hold more than {LIMITS.folder_bytes} bytes (the limit)"
        view = read_file(path, previous, namespace=self.namespace, room=max(min(left, LIMITS.file_bytes), 0), too_large=too_large)
        self._bytes += view.size - own
        self.files[path] = view
        return view

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

    def file_of(self, problem: ObjectError) -> Path | None:
        """The file whose definition of the problem's object is in force (a `File` problem: that file)."""
        if problem.kind == "File":
            return Path(problem.name)
        owners = self._index.owners.get((problem.kind, problem.namespace, problem.name))
        return owners[0] if owners else None

    def located(self, problem: ObjectError) -> ObjectError:
        """`problem` with the file that defines its object in the message, where that is not said yet
        (and there is more than one file to tell apart)."""
        path = self.file_of(problem)
        if path is None or problem.kind == "File" or len(self.files) < 2 or str(path) in problem.message:
            return problem
        return dataclasses.replace(problem, message=f"{problem.message} (in {path})")

    def snapshot(self) -> ClusterSnapshot:
        """The whole cluster: each object once (the definition in force, see `_Index`), files in path order."""
        return self._index.snapshot(self.namespace)

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
    """Which files define each object, which one is in force, and the EndpointSlices of each service.

    An object (kind, namespace, name) defined in several files is a mistake a real cluster cannot make
    (the API server keeps one object per name): the definition already in force stays in force, and
    each other one is reported, naming both files. "In force" is seniority: at the first read, the
    first file in path order; later, a file that starts defining an object joins behind those that
    already did, so a newcomer never moves a service's IP or replaces a working peer. When the file in
    force drops the object, the next definition takes over.

    Every lookup is by key (never a scan of a file's objects), so loading is linear in the number of
    objects whatever the layout: one file per object, one file of thousands, or a `kind: List`.
    """

    def __init__(self) -> None:
        self.files: dict[Path, dict[ObjectId, BaseModel]] = {}  # defaulted, in file order
        self.errors: dict[Path, tuple[ObjectError, ...]] = {}  # only files with errors
        self.owners: dict[ObjectId, tuple[Path, ...]] = {}  # the files defining each object, senior first
        self.duplicates: dict[ObjectId, tuple[ObjectError, ...]] = {}  # only objects defined twice or more
        self.groups: dict[SliceGroup, set[ObjectId]] = {}  # the EndpointSlices in force, per service
        self.group_of: dict[ObjectId, SliceGroup] = {}  # the reverse of `groups`
        self.config_files: set[Path] = set()  # files with any object that is not a Service or EndpointSlice

    def in_force(self, key: ObjectId) -> BaseModel | None:
        owners = self.owners.get(key)
        return self.files[owners[0]][key] if owners else None

    def replace(self, path: Path, view: FileView | None, touched: _Touched) -> None:
        """Make `view` the file's content (None: the file is gone), noting in `touched` what changes."""
        old = self.files.get(path, {})
        new = view.objects if view is not None else {}
        errors = view.errors if view is not None else ()
        if old == new and self.errors.get(path, ()) == errors:
            return
        touched.config |= self.errors.get(path, ()) != errors
        keys = [key for key in dict.fromkeys((*old, *new)) if old.get(key) != new.get(key)]
        self._note_before(keys, new, touched)
        for key in keys:
            self._set_owner(key, path, defines=key in new)
        if view is None:
            self.files.pop(path, None)
        else:
            self.files[path] = new
        self._set_errors(path, errors)
        if any(key[0] not in _ROUTED for key in new):
            self.config_files.add(path)
        else:
            self.config_files.discard(path)
        for key in keys:
            self._regroup(key)
            touched.config |= self._check_duplicates(key) or key[0] not in _ROUTED

    def _note_before(self, keys: Iterable[ObjectId], new: dict[ObjectId, BaseModel], touched: _Touched) -> None:
        """What the services and slice groups that `keys` may change held before (once per reload)."""
        for key in keys:
            if key[0] == "Service":
                service = ServiceKey(key[1], key[2])
                if service not in touched.services:
                    touched.services.add(service)
                    touched.before_services[service] = self.definitions(service)
            elif key[0] == "EndpointSlice":
                for group in self._groups_of(key, new):
                    if group not in touched.slice_groups:
                        touched.slice_groups.add(group)
                        touched.before_slices[group] = self.slices(group)

    def _groups_of(self, key: ObjectId, new: dict[ObjectId, BaseModel]) -> set[SliceGroup]:
        definitions = [self.files[p][key] for p in self.owners.get(key, ())]
        if key in new:
            definitions.append(new[key])
        return {group for obj in definitions if (group := slice_group(obj)) is not None}  # type: ignore[arg-type]

    def _set_owner(self, key: ObjectId, path: Path, *, defines: bool) -> None:
        owners = self.owners.get(key, ())
        if defines and path not in owners:
            owners = (*owners, path)  # a newcomer joins behind
        elif not defines:
            owners = tuple(p for p in owners if p != path)
        if owners:
            self.owners[key] = owners
        else:
            self.owners.pop(key, None)

    def _set_errors(self, path: Path, errors: tuple[ObjectError, ...]) -> None:
        if errors:
            self.errors[path] = errors
        else:
            self.errors.pop(path, None)

    def _regroup(self, key: ObjectId) -> None:
        """Keep `groups` to the EndpointSlice in force for `key` (its service label may have changed)."""
        if key[0] != "EndpointSlice":
            return
        obj = self.in_force(key)
        group = slice_group(obj) if obj is not None else None  # type: ignore[arg-type]
        known = self.group_of.get(key)
        if known == group:
            return
        if known is not None:
            self.groups[known].discard(key)
            if not self.groups[known]:
                del self.groups[known]
        if group is not None:
            self.groups.setdefault(group, set()).add(key)
            self.group_of[key] = group
        else:
            self.group_of.pop(key, None)

    def _check_duplicates(self, key: ObjectId) -> bool:
        """Report each definition of `key` beyond the one in force; True if the reports changed."""
        owners = self.owners.get(key, ())
        errors = tuple(
            ObjectError(
                key[0], key[1], key[2], "metadata.name",
                f"also defined in {path}; the definition in {owners[0]} stays in force (names are unique in a cluster)",
            )
            for path in owners[1:]
        )  # fmt: skip
        if errors == self.duplicates.get(key, ()):
            return False
        if errors:
            self.duplicates[key] = errors
        else:
            self.duplicates.pop(key, None)
        return True

    def definitions(self, key: ServiceKey) -> tuple[Service, ...]:
        service = self.in_force(("Service", key.namespace, key.name))
        return (service,) if isinstance(service, Service) else ()

    def slices(self, group: SliceGroup) -> tuple[EndpointSlice, ...]:
        found: list[EndpointSlice] = []
        for key in self.groups.get(group, ()):
            obj = self.in_force(key)
            if isinstance(obj, EndpointSlice):
                found.append(obj)
        return tuple(sorted(found, key=lambda s: s.metadata.name))

    def load_errors(self) -> list[ObjectError]:
        errors = [error for path in sorted(self.errors) for error in self.errors[path]]
        return errors + [error for key in sorted(self.duplicates) for error in self.duplicates[key]]

    def config_snapshot(self, namespace: str) -> ClusterSnapshot:
        objects = [
            obj
            for path in sorted(self.config_files)
            for key, obj in self.files[path].items()
            if key[0] not in _ROUTED and self.owners[key][0] == path
        ]
        return ClusterSnapshot.from_objects(objects, errors=self.load_errors(), namespace=namespace)

    def snapshot(self, namespace: str) -> ClusterSnapshot:
        objects = [
            obj for path in sorted(self.files) for key, obj in self.files[path].items() if self.owners[key][0] == path
        ]
        return ClusterSnapshot.from_objects(objects, errors=self.load_errors(), namespace=namespace)

    def everything(self, namespace: str) -> ClusterChange:
        services = {ServiceKey(key[1], key[2]) for key in self.owners if key[0] == "Service"}
        return ClusterChange(
            services={key: self.definitions(key) for key in services},
            endpoint_slices={group: self.slices(group) for group in self.groups},
            config=self.config_snapshot(namespace),
        )

    def change(self, touched: _Touched, namespace: str) -> ClusterChange:
        services = {key: now for key in touched.services if (now := self.definitions(key)) != touched.before_services[key]}
        slices = {group: found for group in touched.slice_groups if (found := self.slices(group)) != touched.before_slices[group]}
        return ClusterChange(
            services=services,
            endpoint_slices=slices,
            config=self.config_snapshot(namespace) if touched.config else None,
        )


_ROUTED = frozenset({"Service", "EndpointSlice"})  # the kinds outside the configuration part
