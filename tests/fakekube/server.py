"""The fake API server over real HTTP, with fault injection, for tests that use the official client.

Why: no kube-apiserver can run here, and mocking the client would hide exactly what we need to test
(urllib3's retries, chunked watch streams, 409/410/422 handling, ApiException codes). `FakeKube`
serves `Store` on 127.0.0.1 with HTTP/1.1 keep-alive, one thread per connection (a store-wide lock
makes each request atomic: resourceVersions and 409s hold under concurrent writes), streams watches
as chunked JSON lines, and lets a test fail, throttle, slow down or drop the next requests, compact the
history, or restart on the same port.
Not covered: authentication, protobuf, aggregated discovery, server-side apply, websockets (exec,
logs), HTTP/2, and the events.k8s.io group.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes.client import ApiClient, Configuration

from . import protobuf
from .resources import METALLB_CRDS, ResourceType
from .selectors import field_matcher, label_matcher
from .store import ApiError, Event, Obj, Store, bad_request

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease", "metallb-system")
CLIENT_POOL_SIZE = 32
_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


@dataclass(frozen=True)
class Request:
    """One request as the server saw it; `status` is None when the connection was dropped."""

    method: str
    path: str
    query: str
    status: int | None


@dataclass
class _Fault:
    remaining: int
    status: int | None  # None: drop the connection without answering; 200: answer normally (after `delay`)
    retry_after: int | None
    method: str | None
    target: re.Pattern[str] | None
    delay: float = 0.0  # seconds to wait before answering

    def matches(self, method: str, target: str) -> bool:
        return self.remaining > 0 and self.method in (None, method) and (
            self.target is None or bool(self.target.search(target)))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog (socketserver's default is 5). A client opening a dozen connections at once (a
    # controller's concurrent writes next to its watches) overflows 5 while the accepting thread waits for
    # the GIL; the kernel then drops SYNs and the client retries a second later. The real API server
    # listens with the system's somaxconn (4096).
    request_queue_size = 128

    def __init__(self, fake: FakeKube, port: int, host: str = "127.0.0.1") -> None:
        self.fake = fake
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        super().__init__((host, port), _Handler)


def _translate(event: Event, rt: ResourceType, ns: str, match: Any, store: Store) -> Obj | None:
    """A stored event as this watcher sees it: objects entering/leaving its selection are ADDED/DELETED."""
    def selected(obj: Obj | None) -> bool:
        return obj is not None and (not ns or obj["metadata"].get("namespace") == ns) and match(obj)

    now, before = selected(event.obj), selected(event.old)
    if event.type == "MODIFIED" and before and not now:  # previous content, the event's resourceVersion
        gone = event.old | {"metadata": event.old["metadata"] | {"resourceVersion": str(event.rv)}}  # type: ignore[operator]
        return {"type": "DELETED", "object": store.view(rt, gone)}
    if not now:
        return None
    kind = "ADDED" if event.type == "MODIFIED" and not before else event.type
    return {"type": kind, "object": store.view(rt, event.obj)}


def _int(query: dict[str, str], name: str) -> int:
    try:
        return int(query.get(name) or 0)
    except ValueError:
        raise bad_request(f"{name}: Invalid value: {query[name]!r}: must be an integer") from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # the request log is FakeKube.requests
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # --- plumbing ------------------------------------------------------------------------------

    def _serve(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = fake._take_fault(self.command, self.path)
        if fault is not None and fault.delay > 0:
            time.sleep(fault.delay)  # this request only: the server goes on serving the others meanwhile
            if fault.status == 200:
                fault = None
        if fault is not None and fault.status is None:
            fake._record(self.command, url, None)
            self.close_connection = True
            return
        if fault is not None:
            status = fault.status or 500
            error = ApiError(status, _REASONS.get(status, "InternalError"), "Internal error occurred: injected by fakekube"
                             if status == 500 else f"injected by fakekube ({status})",
                             {"retryAfterSeconds": fault.retry_after} if fault.retry_after is not None else None)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return self._send(url, status, error.status(), headers)
        try:
            if raw and self.headers.get("Content-Type", "").startswith(protobuf.CONTENT_TYPE):
                body = protobuf.decode(raw)
            else:
                body = json.loads(raw) if raw else None
        except ValueError as error:
            message = str(error) if raw.startswith(protobuf.MAGIC) else "the body of the request is not valid JSON"
            return self._send(url, 415 if raw.startswith(protobuf.MAGIC) else 400, bad_request(message).status())
        self._streaming = False
        try:
            answer = self._dispatch(url.path, query, body)
        except ApiError as error:
            return self._send(url, error.code, error.status())
        except Exception as error:  # a fakekube bug: answer 500 rather than drop the connection silently
            if self._streaming:
                raise
            return self._send(url, 500, ApiError(500, "InternalError", f"fakekube bug: {error!r}").status())
        if answer is not None:
            code, obj, warnings = answer
            headers = {} if query.get("fieldValidation") == "Ignore" else {"Warning": warnings}
            self._send(url, code, obj, headers)

    def _send(self, url: Any, code: int, obj: Obj | str, headers: dict[str, Any] | None = None) -> None:
        self.server.fake._record(self.command, url, code)
        data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(obj, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            for item in value if isinstance(value, list) else [value]:
                self.send_header(name, f'299 - {json.dumps(item)}' if name == "Warning" else item)
        self.end_headers()
        self.server.fake._count_sent(self.headers.get("User-Agent", ""), len(data))  # before: the client may read it first
        with contextlib.suppress(OSError):
            self.wfile.write(data)

    def _write_chunk(self, data: bytes) -> bool:
        try:
            self.server.fake._count_sent(self.headers.get("User-Agent", ""), len(data))
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            return True
        except OSError:
            self.close_connection = True
            return False

    def _client_connected(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return not readable or self.connection.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    # --- routing -------------------------------------------------------------------------------

    def _discovery(self, path: str) -> Obj | str | None:
        registry = self.server.fake.store.registry
        parts = [p for p in path.split("/") if p]
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.server.fake.port}"}]}
        if parts == ["api", "v1"]:
            return registry.resource_list("", "v1")
        if parts == ["apis"]:
            return registry.api_group_list()
        if len(parts) in (2, 3) and parts[0] == "apis":
            return registry.api_group(parts[1]) if len(parts) == 2 else registry.resource_list(parts[1], parts[2])
        if parts == ["version"]:
            return {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fakekube", "platform": "linux/amd64"}
        return "ok" if parts and parts[0] in ("healthz", "livez", "readyz") else None

    def _resolve(self, path: str) -> tuple[ResourceType, str, str, str]:
        registry = self.server.fake.store.registry
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            rest, group, version = [], "", ""
        ns = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and getattr(registry.lookup(group, version, rest[2]),
                                                                   "namespaced", False):
            ns, rest = rest[1], rest[2:]
        rt = registry.lookup(group, version, rest[0]) if 1 <= len(rest) <= 3 else None
        name, sub = (rest + ["", "", ""])[1:3]
        if rt is None or (rt.namespaced and name and not ns) or (sub and not (sub == "status" and rt.status)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource",
                           {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})
        return rt, ns, name, sub

    def _dispatch(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Obj | str, list[str]] | None:
        store = self.server.fake.store
        if self.command == "GET" and (doc := self._discovery(path)) is not None:
            return 200, doc, []
        rt, ns, name, sub = self._resolve(path)
        if query.get("dryRun"):
            raise bad_request("fakekube does not support dryRun")
        strict = query.get("fieldValidation") == "Strict"
        if not name and self.command in ("GET", "DELETE"):
            try:
                labels = label_matcher(query.get("labelSelector"))
                fields = field_matcher(query.get("fieldSelector"), rt.fields)
            except ValueError as error:
                raise bad_request(str(error)) from None
            match = lambda obj: labels(obj) and fields(obj)  # noqa: E731
            if self.command == "DELETE":
                return 200, store.delete_collection(rt, ns, match), []
            if query.get("watch") in ("true", "1"):
                self._watch(rt, ns, match, query)
                return None
            return 200, store.list(rt, ns, match, rv=query.get("resourceVersion", ""),
                                   rv_match=query.get("resourceVersionMatch", ""),
                                   limit=_int(query, "limit"), cont=query.get("continue", "")), []
        if not name and self.command == "POST" and (ns or not rt.namespaced):
            return 201, *store.create(rt, ns, body, strict=strict)
        if name and self.command == "GET":
            return 200, store.get(rt, ns, name), []
        if name and self.command == "PUT":
            return 200, *store.update(rt, ns, name, body, status=bool(sub), strict=strict)
        if name and self.command == "PATCH":
            content_type = self.headers.get("Content-Type", "")
            return 200, *store.patch(rt, ns, name, body, content_type, status=bool(sub), strict=strict)
        if name and not sub and self.command == "DELETE":
            return 200, store.delete(rt, ns, name, body), []
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # --- watch ---------------------------------------------------------------------------------

    def _watch(self, rt: ResourceType, ns: str, match: Any, query: dict[str, str]) -> None:
        """Chunked JSON lines until timeoutSeconds, the client leaving, or the server stopping."""
        fake, store = self.server.fake, self.server.fake.store
        timeout = _int(query, "timeoutSeconds")
        deadline = time.monotonic() + timeout if timeout > 0 else math.inf
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        rv = query.get("resourceVersion", "")
        with store.cond:
            if rv in ("", "0"):  # "get state and start at most recent": current objects as ADDED first
                cursor = store.rv
                frames = [{"type": "ADDED", "object": store.view(rt, obj)}
                          for key, obj in sorted(store.objects[rt.key].items())
                          if (not ns or key[0] == ns) and match(obj)]
            else:
                cursor, frames = store._parse_rv(rv), []
        fake._record(self.command, urlsplit(self.path), 200)
        self._streaming = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        next_bookmark = time.monotonic() + fake.bookmark_interval
        while not self.server.stopping.is_set() and self._client_connected():
            if frames and not self._write_chunk(b"".join(json.dumps(f).encode() + b"\n" for f in frames)):
                return
            if time.monotonic() >= deadline:
                self._write_chunk(b"")
                return
            with store.cond:
                try:
                    events = store.events_after(rt.key, cursor)
                    if not events:
                        store.cond.wait(max(0.0, min(0.2, deadline - time.monotonic())))
                        events = store.events_after(rt.key, cursor)
                except ApiError as error:
                    if self._write_chunk(json.dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n"):
                        self._write_chunk(b"")
                    return
                cursor = store.rv
            frames = [f for e in events if (f := _translate(e, rt, ns, match, store))]
            if bookmarks and time.monotonic() >= next_bookmark:
                next_bookmark = time.monotonic() + fake.bookmark_interval
                frames.append({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.group_version,
                                                              "metadata": {"resourceVersion": str(cursor)}}})
        self.close_connection = True


class FakeKube:
    """A started-on-demand fake API server; see tests/fakekube/__init__.py for the test-facing API."""

    def __init__(self, *, namespaces: tuple[str, ...] = DEFAULT_NAMESPACES, crds: tuple[Obj, ...] = METALLB_CRDS,
                 bookmark_interval: float = 1.0) -> None:
        self._seed = (tuple(namespaces), tuple(crds))
        self.store = Store(namespaces=self._seed[0], crds=self._seed[1])
        self.bookmark_interval = bookmark_interval
        self.port = 0
        self.client: ApiClient | None = None  # set by start(): an ApiClient configured for this server
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._requests: list[Request] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._also: list[tuple[_HTTPServer, threading.Thread]] = []  # listen_also()
        self.sent_bytes: dict[str, int] = {}  # User-Agent -> body bytes sent (lists, objects, watch events)

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> Configuration:
        """A client configuration for this server, with as many pooled connections as the daemons give
        themselves (metallb_bgp.kube.client.CONNECTION_POOL_SIZE): room for their watches and concurrent
        writers, where the client's default (5 per CPU) would open and drop a connection per extra request."""
        configuration = Configuration(host=self.url)
        configuration.connection_pool_maxsize = CLIENT_POOL_SIZE
        return configuration

    def write_kubeconfig(self, path: Path, server: str | None = None) -> Path:
        """A kubeconfig file for this server (or for one of its `listen_also` addresses), as the
        daemons' `--kubeconfig` reads it (JSON is YAML)."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": server or self.url}}],
            "users": [{"name": "nobody", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "nobody"}}],
        }))  # fmt: skip
        return path

    def start(self) -> FakeKube:
        self._httpd = _HTTPServer(self, self.port)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fakekube:{self.port}", daemon=True)
        self._thread.start()
        if self.client is None:
            self.client = ApiClient(self.configuration())
        return self

    def listen_also(self, host: str, binding: contextlib.AbstractContextManager[object] | None = None) -> str:
        """Serve the same store on another address too, bound inside `binding` (for example a network
        namespace the test entered: the socket stays in it). The URL; `stop()` ends it for good."""
        with binding or contextlib.nullcontext():
            httpd = _HTTPServer(self, 0, host)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"fakekube:{host}", daemon=True)  # fmt: skip
        thread.start()
        self._also.append((httpd, thread))
        return f"http://{host}:{httpd.server_address[1]}"

    def stop(self) -> None:
        """Close the listeners and every open connection (watches end abruptly, as in a crash)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        servers = [(httpd, self._thread), *self._also]
        self._also = []
        for server, _thread in servers:
            server.stopping.set()
        with self.store.cond:
            self.store.cond.notify_all()
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            for conn in list(server.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            if thread is not None:
                thread.join(timeout=5)

    def restart(self, *, keep_state: bool = True) -> None:
        """Stop and start on the same port. Without state the cluster is re-seeded (namespaces, CRDs) and
        every earlier resourceVersion is compacted away, so resumed watches get 410 and must relist."""
        self.stop()
        if not keep_state:
            self.store = Store(start_rv=self.store.rv + 1, namespaces=self._seed[0], crds=self._seed[1])
        self.start()

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.client is not None:
            self.client.close()

    @contextlib.contextmanager
    def as_default_configuration(self) -> Iterator[None]:
        """Make clients built without a configuration (LeaseLock, Watch, CoreV1Api()) talk to this server."""
        previous = Configuration._default
        Configuration.set_default(self.configuration())
        try:
            yield
        finally:
            Configuration.set_default(previous)

    # --- state helpers -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self.store.rv

    def compact(self, rv: int | None = None) -> None:
        self.store.compact(rv)

    def register_crd(self, manifest: Obj) -> Obj:
        return self.store.apply_crd(manifest)

    # --- faults and the request log ------------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int | None = 500, retry_after: int | None = None,
                  method: str | None = None, path: str | None = None) -> None:
        """Answer the next `count` requests matching `method` (e.g. "GET") and `path` (a regex searched in
        the request target, query string included) with `status` and a Status body; `status=None` closes
        the connection without answering. urllib3 retries 429 with Retry-After and dropped connections
        for idempotent methods (up to 3 times), never 500."""
        with self._lock:
            self._faults.append(_Fault(count, status, retry_after, method, re.compile(path) if path else None))

    def throttle_next(self, count: int = 1, *, retry_after: int = 1, method: str | None = None,
                      path: str | None = None) -> None:
        self.fail_next(count, status=429, retry_after=retry_after, method=method, path=path)

    def drop_next(self, count: int = 1, *, method: str | None = None, path: str | None = None) -> None:
        self.fail_next(count, status=None, method=method, path=path)

    def slow_next(self, count: int = 1, *, seconds: float, method: str | None = None, path: str | None = None) -> None:
        """Answer the next `count` matching requests normally, each after `seconds` (an API server under
        load): what concurrent clients gain shows in the time they take."""
        with self._lock:
            self._faults.append(_Fault(count, 200, None, method, re.compile(path) if path else None, delay=seconds))

    def _count_sent(self, agent: str, size: int) -> None:
        with self._lock:
            self.sent_bytes[agent] = self.sent_bytes.get(agent, 0) + size

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, target: str) -> _Fault | None:
        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, target)), None)
            if fault is not None:
                fault.remaining -= 1
            return fault

    @property
    def requests(self) -> list[Request]:
        """Every request so far, in order: method, path, query string, status (None: dropped)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, method: str, url: Any, status: int | None) -> None:
        with self._lock:
            self._requests.append(Request(method, url.path, url.query, status))
