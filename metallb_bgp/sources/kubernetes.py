"""Cluster state from the Kubernetes API: list + watch per resource, kept whole.

Why this module exists: the core is a pure function of a `ClusterSnapshot`, so this adapter's only job
is to keep an in-memory copy of the cluster that is never wrong in a way that withdraws routes. Hence:

- One thread per resource runs list, then watch from the list's resourceVersion (bookmarks on, a
  server-side timeout), remembers the last resourceVersion it saw (bookmarks included) and resumes from
  it whenever a stream ends. The official client is synchronous, so threads it is.
- 410 Gone (an `ApiException`, or an ERROR event with code 410) means our resourceVersion was
  compacted away: relist, build a new cache beside the old one and swap it in under the lock, so a
  snapshot sees either the old or the new cache, never an empty or half-built one.
- Any other failure (500, 429, dropped connection, server down) keeps the cache as it is and reconnects
  with jittered exponential backoff. Objects leave a cache only by a DELETED event or a relist that no
  longer contains them.
- An object that does not parse (`metallb_bgp.api.loader.parse_object`) is reported in
  `snapshot().load_errors`, and its last good version, if any, stays (as in `sources/manifests.py`).
- The first list of Services and EndpointSlices fills the cache page by page (each page parsed and
  put as it arrives, the owner woken): a restarting speaker may announce what the part listed so far
  justifies while the rest is still coming (`synced` stays False until every kind has listed; only
  callers that announce and never withdraw may read a snapshot before that). Relists build beside.
- Secrets are read in our namespace only, and only those named by some BGPPeer's `passwordSecret` are
  kept; the rest are dropped as they arrive. When the set of named Secrets changes, the Secret watcher
  relists. No Secret data is ever logged.

Lists and watch events are read as raw JSON (`_preload_content=False`) rather than the client's
models: listing 10,000 Services through `V1Service` objects and `sanitize_for_serialization` took about
2.1-2.4 s against 0.85-1.25 s for `json.loads` plus our models (fake API server, same machine).
The watch streams are read here too rather than with `kubernetes.watch.Watch`, which builds its own
ApiClient from the default Configuration and cannot hand back raw events that include ERRORs.

Deliberately not here: deciding anything. `on_change()` only tells the owner that `snapshot()` moved on.

Why ~620 lines in one module: the watcher, its cache and the source share one lock and one notion of
"synced"; the pure part (`SnapshotChanges`, the models) lives in `core` and `api`.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes.client import ApiClient, CustomObjectsApi, DiscoveryV1Api
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines
from pydantic import BaseModel

from metallb_bgp.api.loader import Parsed, parse_object
from metallb_bgp.api.metallb import GROUP, BGPPeer
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.change import ClusterChange, SnapshotChanges
from metallb_bgp.core.snapshot import DEFAULT_NAMESPACE, ClusterSnapshot, Replacements
from metallb_bgp.kube.client import CoreV1

log = structlog.get_logger(__name__)

Raw = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
ListCall = Callable[..., Any]  # a generated client's list_* method, partially applied


# --- what we watch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One list+watch: what it is called in logs, what its items are, and where they go in the snapshot."""

    name: str  # the plural, for logs and thread names
    kind: str
    api_version: str
    field: str  # the ClusterSnapshot field its objects fill
    list_call: ListCall


def resources(api_client: ApiClient, namespace: str) -> tuple[Resource, ...]:
    """Everything a MetalLB speaker/controller reads; metallb.io kinds and Secrets in `namespace` only."""
    core, discovery, custom = CoreV1(api_client), DiscoveryV1Api(api_client), CustomObjectsApi(api_client)

    def metallb(kind: str, plural: str, version: str, field: str) -> Resource:
        call = functools.partial(custom.list_namespaced_custom_object, GROUP, version, namespace, plural)
        return Resource(plural, kind, f"{GROUP}/{version}", field, call)

    return (
        Resource("services", "Service", "v1", "services", core.list_service_for_all_namespaces),
        Resource("endpointslices", "EndpointSlice", "discovery.k8s.io/v1", "endpoint_slices",
                 discovery.list_endpoint_slice_for_all_namespaces),
        Resource("nodes", "Node", "v1", "nodes", core.list_node),
        Resource("namespaces", "Namespace", "v1", "namespaces", core.list_namespace),
        metallb("IPAddressPool", "ipaddresspools", "v1beta1", "pools"),
        metallb("BGPPeer", "bgppeers", "v1beta2", "peers"),
        metallb("BGPAdvertisement", "bgpadvertisements", "v1beta1", "advertisements"),
        metallb("Community", "communities", "v1beta1", "communities"),
        metallb("BFDProfile", "bfdprofiles", "v1beta1", "bfd_profiles"),
        metallb("L2Advertisement", "l2advertisements", "v1beta1", "l2_advertisements"),
        Resource("secrets", "Secret", "v1", "secrets", functools.partial(core.list_namespaced_secret, namespace)),
    )


# --- one resource's cache (pure bookkeeping, no I/O) -----------------------------------------------


def object_key(raw: Mapping[str, Any]) -> Key:
    meta = raw.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def resource_version_of(raw: Mapping[str, Any]) -> str:
    return str((raw.get("metadata") or {}).get("resourceVersion") or "")


def parse_item(raw: Raw, resource: Resource) -> Parsed:
    """List items come without kind/apiVersion: we know what we asked for, so say it before parsing."""
    return parse_object({**raw, "kind": resource.kind, "apiVersion": resource.api_version})


class ResourceCache:
    """The last good version of every object, and the errors of those whose latest version is bad.

    Mutated only by its resource's watch thread, under the source's lock; `sorted_objects()` is cached
    so a snapshot per reconcile costs a tuple copy, not a sort of 10,000 Services, and the objects are
    kept in key order as keys come and go, so the tuple after one event is a copy, not a sort.
    """

    def __init__(self) -> None:
        self.objects: dict[Key, BaseModel] = {}
        self.errors: dict[Key, tuple[ObjectError, ...]] = {}
        self._sorted: tuple[BaseModel, ...] | None = None
        self._keys: list[Key] | None = None  # sorted(self.objects) once known
        self._ordered: list[BaseModel] = []  # the objects in `_keys` order, kept with it
        # objects that left and joined `objects` since the last `take_replaced` (by id: both dicts hold
        # them, so no id is reused meanwhile); None until the first take, which has nothing to refer to
        self._went: dict[int, BaseModel] | None = None
        self._came: dict[int, BaseModel] = {}

    def sorted_objects(self) -> tuple[BaseModel, ...]:
        if self._sorted is None:
            if self._keys is None:
                self._keys = sorted(self.objects)
                self._ordered = list(map(self.objects.__getitem__, self._keys))
            self._sorted = tuple(self._ordered)  # a copy in C: looking up 10,000 keys took ~0.5 ms a pass
        return self._sorted

    def take_replaced(self) -> tuple[tuple[BaseModel, ...], tuple[BaseModel, ...]] | None:
        """(went, came) between `sorted_objects()` at the last take and now, in no order; None at the
        first take. Taken with `sorted_objects()` under the source's lock."""
        went, came = self._went, self._came
        self._went, self._came = {}, {}
        return None if went is None else (tuple(went.values()), tuple(came.values()))

    def _replaced(self, old: BaseModel | None, new: BaseModel | None) -> None:
        if self._went is None:
            return
        if old is not None and self._came.pop(id(old), None) is None:  # an object joined since: forget it
            self._went[id(old)] = old
        if new is not None:
            self._came[id(new)] = new

    def all_errors(self) -> Iterable[ObjectError]:
        for errors in self.errors.values():
            yield from errors

    def put(self, key: Key, parsed: Parsed) -> bool:
        """Store a new version (or its errors, keeping the last good one); True if anything changed."""
        if parsed.obj is None:
            if self.errors.get(key) == parsed.errors:
                return False
            self.errors[key] = parsed.errors
            return True
        old = self.objects.get(key)
        unchanged = old is not None and key not in self.errors and _rv(old) == _rv(parsed.obj) and old == parsed.obj
        if unchanged:
            return False
        if self._keys is not None:
            index = bisect.bisect_left(self._keys, key)
            if old is None:
                self._keys.insert(index, key)
                self._ordered.insert(index, parsed.obj)
            else:
                self._ordered[index] = parsed.obj
        self._replaced(old, parsed.obj)
        self.objects[key] = parsed.obj
        self.errors.pop(key, None)
        self._sorted = None
        return True

    def remove(self, key: Key) -> bool:
        old = self.objects.pop(key, None)
        had = old is not None
        had_errors = self.errors.pop(key, None) is not None
        if had:
            self._replaced(old, None)
            self._sorted = None
            if self._keys is not None:
                index = bisect.bisect_left(self._keys, key)
                del self._keys[index], self._ordered[index]
        return had or had_errors

    def rebuilt(self, items: Iterable[Raw], resource: Resource, keep: Callable[[Raw], bool]) -> ResourceCache:
        """A new cache from a full list; unchanged objects are reused, bad ones fall back to this cache."""
        new = ResourceCache()
        for raw in items:
            if not keep(raw):
                continue
            key = object_key(raw)
            old = self.objects.get(key)
            if old is not None and key not in self.errors and _rv(old) == resource_version_of(raw) != "":
                new.objects[key] = old
                continue
            parsed = parse_item(raw, resource)
            if parsed.obj is None and old is not None:
                new.objects[key] = old
            new.put(key, parsed)
        return new

    def same_as(self, other: ResourceCache) -> bool:
        return self.errors == other.errors and self.objects.keys() == other.objects.keys() and all(
            self.objects[key] is other.objects[key] or self.objects[key] == other.objects[key] for key in self.objects
        )


def _rv(obj: BaseModel) -> str:
    return obj.metadata.resource_version  # type: ignore[attr-defined]


# --- retry pacing ----------------------------------------------------------------------------------


def backoff_delay(attempt: int, *, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with "equal jitter": between half and all of min(cap, base * 2**(attempt-1)).

    A five-line function rather than a dependency: no backoff library (tenacity, backoff) is installed,
    and our loops need a number of seconds to wait on a stop event, not a decorator.
    """
    ceiling = min(cap, base * 2 ** min(max(attempt - 1, 0), 30))
    return ceiling / 2 + rng() * ceiling / 2


def retry_after_seconds(error: BaseException) -> float | None:
    if not isinstance(error, ApiException) or error.headers is None:
        return None
    try:
        return float(error.headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None


class Expired(Exception):
    """Our resourceVersion is gone (410): only a relist can continue."""


def _is_gone(error: BaseException) -> bool:
    return isinstance(error, Expired) or (isinstance(error, ApiException) and error.status == 410)


class WatchError(Exception):
    """An ERROR event other than 410 in a watch stream."""

    def __init__(self, code: Any, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.status = code


def _shutdown(response: Any) -> None:
    """Wake a thread blocked reading `response`: closing the socket object does not, shutting it down does."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _release(response: Any) -> None:
    with contextlib.suppress(Exception):
        response.close()
        response.release_conn()


# --- one resource's list+watch loop ----------------------------------------------------------------


@dataclass(frozen=True)
class WatchOptions:
    timeout_seconds: int = 300  # server-side watch timeout (an int, as the client requires)
    page_size: int = 500  # list in pages of this many items (0: one request)
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    retry_after_cap: float = 30.0
    connect_timeout: float = 10.0
    list_read_timeout: float = 60.0


class ResourceWatcher:
    """List, then watch from the list's resourceVersion, forever; the cache it fills is `cache`."""

    def __init__(
        self,
        resource: Resource,
        *,
        lock: threading.RLock,
        stopping: threading.Event,
        options: WatchOptions,
        changed: Callable[[ResourceWatcher], None],
        notify: Callable[[], None],
        keep: Callable[[Raw], bool] = lambda raw: True,
        list_after: threading.Event | None = None,
        progressive: bool = False,
    ) -> None:
        self.resource = resource
        self.progressive = progressive  # the first list fills the cache page by page
        self.updates = 0  # objects processed: each watch event, each object of a list (metrics)
        self.update_errors = 0  # ... of which did not parse
        self.cache = ResourceCache()
        self.resource_version = ""  # the last one seen: from the list, any event, or a bookmark
        self.listed = threading.Event()  # the first list completed
        self.list_after = list_after  # wait for this before the first list
        self._lock, self._stopping, self._options = lock, stopping, options
        self._changed, self._notify, self._keep = changed, notify, keep
        self._relist = threading.Event()
        self._response_lock = threading.Lock()
        self._response: Any = None
        self._watching = False
        self._log = log.bind(resource=resource.name)
        self.thread = threading.Thread(target=self.run, name=f"kube-watch-{resource.name}", daemon=True)

    # --- control from other threads --------------------------------------------------------------

    def request_relist(self) -> None:
        """Relist soon: ends the current watch stream (a list in progress is left to finish)."""
        self._relist.set()
        with self._response_lock:
            if self._watching and self._response is not None:
                _shutdown(self._response)

    def interrupt(self) -> None:
        with self._response_lock:
            if self._response is not None:
                _shutdown(self._response)

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        failures = 0
        must_list = True
        while not self._stopping.is_set():
            listing = must_list or self._relist.is_set()
            try:
                if listing:
                    self._wait_for_dependency()
                    if self._stopping.is_set():
                        return
                    self._list()
                    must_list = False
                elif self._watch():
                    failures = 0
                elif not self._relist.is_set():
                    raise WatchError(None, "the watch ended at once, without events")
            except Exception as error:  # noqa: BLE001 - the loop must outlive any one failure
                if self._stopping.is_set():
                    return
                if not listing and self._relist.is_set():
                    continue  # we ended the stream ourselves, to relist
                failures += 1
                if _is_gone(error):
                    must_list = True
                    self._log.info("kube_watch_expired", resource_version=self.resource_version)
                    if failures == 1:
                        continue  # relist at once; a second 410 in a row backs off like any failure
                self._pause(self._delay_after(error, failures))

    def _wait_for_dependency(self) -> None:
        while self.list_after is not None and not self._stopping.is_set():
            if self.list_after.wait(0.1):
                return

    def _delay_after(self, error: BaseException, failures: int) -> float:
        delay = backoff_delay(failures, base=self._options.backoff_base, cap=self._options.backoff_cap)
        retry_after = retry_after_seconds(error)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._options.retry_after_cap))
        status = getattr(error, "status", None)
        self._log.warning("kube_watch_error", status=status, error=type(error).__name__, retry_in=round(delay, 3),
                          resource_version=self.resource_version)
        return delay

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    # --- list ---------------------------------------------------------------------------------------

    def _open(self, *, watching: bool, **kwargs: Any) -> Any:
        response = self.resource.list_call(_preload_content=False, **kwargs)
        with self._response_lock:
            self._response, self._watching = response, watching
            if self._stopping.is_set() or (watching and self._relist.is_set()):
                _shutdown(response)
        return response

    def _close(self, response: Any) -> None:
        with self._response_lock:
            if self._response is response:
                self._response, self._watching = None, False
        _release(response)

    def _list_pages(self, on_page: Callable[[list[Raw]], None] | None = None) -> tuple[list[Raw], str]:
        items: list[Raw] = []
        token, version = "", ""
        options = self._options
        while True:
            kwargs: dict[str, Any] = {"_request_timeout": (options.connect_timeout, options.list_read_timeout)}
            if options.page_size > 0:
                kwargs["limit"] = options.page_size
            if token:
                kwargs["_continue"] = token
            response = self._open(watching=False, **kwargs)
            try:
                page = json.loads(response.data)
            finally:
                self._close(response)
            page_items = page.get("items") or []
            items.extend(page_items)
            if on_page is not None:
                on_page(page_items)
            meta = page.get("metadata") or {}
            version, token = str(meta.get("resourceVersion") or ""), str(meta.get("continue") or "")
            if not token:
                return items, version

    def _list(self) -> None:
        self._relist.clear()  # a relist asked for from now on needs another list
        first_progressive = self.progressive and not self.listed.is_set()
        items, version = self._list_pages(self._take_page if first_progressive else None)
        rebuilt = self.cache.rebuilt(items, self.resource, self._keep)
        self.updates += len(items)
        self.update_errors += len(rebuilt.errors)
        with self._lock:
            changed = not rebuilt.same_as(self.cache)
            if changed:
                self.cache = rebuilt
            self.resource_version = version
        if changed:
            self._changed(self)
        first = not self.listed.is_set()
        self.listed.set()  # after the hook (the peers' first list names the Secrets), before notifying
        self._log.debug("kube_listed", items=len(rebuilt.objects), resource_version=version, changed=changed)
        if changed or first:
            self._notify()

    def _take_page(self, page: list[Raw]) -> None:
        """One page of the first list into the cache now (parsed outside the lock); the rebuild after
        the last page then finds every object unchanged and keeps them."""
        parsed = [(object_key(raw), parse_item(raw, self.resource)) for raw in page if self._keep(raw)]
        with self._lock:
            for key, item in parsed:
                self.cache.put(key, item)
        self._notify()

    # --- watch --------------------------------------------------------------------------------------

    def _watch(self) -> bool:
        """One watch stream until it ends; True if it was healthy (saw events or lasted a while)."""
        options = self._options
        started, events = time.monotonic(), 0
        response = self._open(
            watching=True,
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=options.timeout_seconds,
            _request_timeout=(options.connect_timeout, options.timeout_seconds + 30),
        )
        try:
            for line in iter_resp_lines(response):
                if self._stopping.is_set() or self._relist.is_set():
                    break
                if line.strip():
                    self._handle(json.loads(line))
                    events += 1
        finally:
            self._close(response)
        return events > 0 or time.monotonic() - started >= 1.0

    def _handle(self, event: Raw) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Expired(obj.get("message", ""))
            raise WatchError(code, str(obj.get("reason", "")))
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._apply(kind, obj)
        version = resource_version_of(obj)
        if version:
            self.resource_version = version

    def _apply(self, kind: str, raw: Raw) -> None:
        key = object_key(raw)
        parsed = parse_item(raw, self.resource) if kind != "DELETED" and self._keep(raw) else None
        self.updates += 1
        self.update_errors += parsed is not None and parsed.obj is None
        with self._lock:
            changed = self.cache.remove(key) if parsed is None else self.cache.put(key, parsed)
        if changed:
            self._changed(self)
            self._notify()


# --- the source ------------------------------------------------------------------------------------


def password_secret_names(peers: Iterable[BaseModel], namespace: str) -> frozenset[str]:
    """Names of the Secrets in `namespace` that some BGPPeer takes its password from."""
    names = set()
    for peer in peers:
        if isinstance(peer, BGPPeer) and peer.spec.password_secret is not None:
            ref = peer.spec.password_secret
            if ref.namespace in ("", namespace):
                names.add(ref.name)
    return frozenset(names)


class KubernetesSource:
    """The cluster as the API server shows it; `snapshot()` is always whole and consistent.

    `on_change()` is called from watch threads after any cache change; it must only enqueue/wake.
    `synced` turns True once every resource completed its first list; callers must not announce,
    withdraw or allocate before that. Eleven watches are open at once: give the ApiClient a
    `connection_pool_maxsize` of at least 16, or urllib3 discards (and warns about) a connection at
    every reconnect (the default is 5 per CPU).
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        on_change: Callable[[], None] = lambda: None,
        watch_timeout_seconds: int = 300,
        page_size: int = 500,
        backoff_cap: float = 5.0,
        backoff_base: float = 0.2,
    ) -> None:
        self.namespace = namespace
        self._on_change = on_change
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._wanted_secrets: frozenset[str] = frozenset()
        self._changes = SnapshotChanges()
        self._last_token: object = None  # the last snapshot's, which the next one's `replacements` refer to
        options = WatchOptions(timeout_seconds=int(watch_timeout_seconds), page_size=page_size,
                               backoff_base=backoff_base, backoff_cap=backoff_cap)
        self._watchers: dict[str, ResourceWatcher] = {
            resource.field: ResourceWatcher(
                resource,
                lock=self._lock,
                stopping=self._stopping,
                options=options,
                changed=self._cache_changed,
                notify=self._notify,
                keep=self._secret_wanted if resource.kind == "Secret" else (lambda raw: True),
                progressive=resource.field in ("services", "endpoint_slices"),
            )
            for resource in resources(api_client, namespace)
        }
        # Secrets are listed after the peers, so the first synced snapshot already has their passwords.
        self._watchers["secrets"].list_after = self._watchers["peers"].listed
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise RuntimeError("KubernetesSource.start() called twice")
        self._started = True
        for watcher in self._watchers.values():
            watcher.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End every watch: close their streams and wait (bounded) for the threads."""
        self._stopping.set()
        for watcher in self._watchers.values():
            watcher.interrupt()
        deadline = time.monotonic() + timeout
        for watcher in self._watchers.values():
            if watcher.thread.is_alive():
                watcher.thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def synced(self) -> bool:
        return all(w.listed.is_set() for w in self._watchers.values())

    def wait_synced(self, timeout: float | None = None, *, config_only: bool = False) -> bool:
        """Whether every kind (`config_only`: every kind but Services and EndpointSlices, which is
        enough to know a node's peers) has listed, waiting at most `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for field, watcher in self._watchers.items():
            if config_only and field in ("services", "endpoint_slices"):
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not watcher.listed.wait(remaining):
                return False
        return True

    def update_counts(self) -> tuple[int, int]:
        """(objects processed, objects that did not parse), over every watch: MetalLB's k8s client counters."""
        watchers = list(self._watchers.values())
        return sum(w.updates for w in watchers), sum(w.update_errors for w in watchers)

    @property
    def resource_versions(self) -> dict[str, str]:
        """The resourceVersion each watch would resume from (for status and debugging)."""
        return {w.resource.name: w.resource_version for w in self._watchers.values()}

    # --- reading ----------------------------------------------------------------------------------------

    def snapshot(self) -> ClusterSnapshot:
        kinds: dict[str, tuple[tuple[BaseModel, ...], tuple[BaseModel, ...], tuple[BaseModel, ...]]] = {}
        with self._lock:
            parts = {field: watcher.cache.sorted_objects() for field, watcher in self._watchers.items()}
            for field, watcher in self._watchers.items():
                if (replaced := watcher.cache.take_replaced()) is not None:
                    kinds[field] = (parts[field], *replaced)
            errors = sorted(e for watcher in self._watchers.values() for e in watcher.cache.all_errors())
            replacements = Replacements(since=self._last_token, kinds=kinds)
            snapshot = ClusterSnapshot(**parts, namespace=self.namespace, load_errors=tuple(errors),  # type: ignore[arg-type]
                                       replacements=replacements)  # fmt: skip
            self._last_token = snapshot.token
        return snapshot

    def changes(self) -> ClusterChange:
        """What changed since the last call (the first: everything), as the manifests source reports it.
        Call it from one consumer only: each call takes a snapshot and moves the starting point."""
        return self._changes.take(self.snapshot())

    # --- plumbing ---------------------------------------------------------------------------------------

    def _secret_wanted(self, raw: Raw) -> bool:
        return object_key(raw)[1] in self._wanted_secrets

    def _cache_changed(self, watcher: ResourceWatcher) -> None:
        """Called by a watch thread after its cache changed (before `_notify`)."""
        if watcher is not self._watchers["peers"]:
            return
        with self._lock:
            wanted = password_secret_names(watcher.cache.objects.values(), self.namespace)
        if wanted != self._wanted_secrets:
            self._wanted_secrets = wanted
            self._watchers["secrets"].request_relist()

    def _notify(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("kube_on_change_failed")
