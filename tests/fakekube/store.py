"""The fake cluster's state and the API server's read/write semantics, without any HTTP.

Why: what a controller can observe of the API server is mostly here: one global, monotonically
increasing resourceVersion; uid/creationTimestamp/generation filled in; 409 on a stale
resourceVersion; status subresources that writes to the main resource cannot touch (and vice
versa); no-op updates that bump nothing; an event history that watches replay from and that
`compact()` truncates, after which older resourceVersions answer 410 Expired (etcd compaction).
One re-entrant lock (`cond`) guards everything; watchers wait on it.

Deliberately left out: finalizers and graceful deletion (a delete removes the object at once),
namespace cascade deletion, managedFields and server-side apply, admission webhooks, dryRun, and
validation of built-in kinds beyond metadata.name.
"""

from __future__ import annotations

import base64
import bisect
import copy
import json
import random
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .patch import PatchError, json_patch, merge_patch
from .resources import Registry, ResourceType, crd_problems
from .schema import prune_and_default, validate
from .selectors import Matcher

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class ApiError(Exception):
    """An error answer; `status()` is the metav1.Status body the real server would send."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        return body | ({"details": self.details} if self.details else {})


def _details(rt: ResourceType, name: str) -> Obj:
    return {"name": name, "kind": rt.plural} | ({"group": rt.group} if rt.group else {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource()} "{name}" not found', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.group_resource()} "{name}": {why}',
                    _details(rt, name))


def invalid(rt: ResourceType, name: str, causes: list[dict[str, str]]) -> ApiError:
    parts = [f"{c['field']}: {c['message']}" for c in causes]
    summary = parts[0] if len(parts) == 1 else f"[{', '.join(parts)}]"
    qualified = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    details = {"name": name, "kind": rt.kind, "causes": causes} | ({"group": rt.group} if rt.group else {})
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details)


def too_large(requested: int, current: int) -> ApiError:
    return ApiError(504, "Timeout", f"Timeout: Too large resource version: {requested}, current: {current}",
                    {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                     "retryAfterSeconds": 1})


@dataclass(frozen=True)
class Event:
    rv: int
    resource: tuple[str, str]  # (group, plural)
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj  # the object after the change; for DELETED its last state carrying the deletion's rv
    old: Obj | None  # the object before the change (None for ADDED)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(obj: Obj) -> Key:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _without(obj: Obj, *fields: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in fields}


def _same(a: Obj, b: Obj) -> bool:
    return _without(a, "apiVersion") == _without(b, "apiVersion")


class Store:
    def __init__(self, *, start_rv: int = 0, namespaces: tuple[str, ...] = (), crds: tuple[Obj, ...] = ()) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.registry = Registry()
        self.rv = self.compacted_rv = start_rv
        self.objects: dict[tuple[str, str], dict[Key, Obj]] = defaultdict(dict)
        self.history: list[Event] = []
        # called with each event as it is committed, under the lock, before any watcher can send it (the
        # bench times "watch event -> router" from here); nothing of the API's semantics depends on them
        self.observers: list[Callable[[Event], None]] = []
        for name in namespaces:
            self.create(self.registry.types[("", "v1", "namespaces")], "", {"metadata": {"name": name}})
        for crd in crds:
            self.apply_crd(crd)

    # --- reads ---------------------------------------------------------------------------------

    def view(self, rt: ResourceType, obj: Obj, *, in_list: bool = False) -> Obj:
        """The object as served by `rt`'s version. Built-in list items carry no kind/apiVersion."""
        if in_list and not rt.custom:
            return _without(obj, "apiVersion", "kind")
        return obj | {"apiVersion": rt.group_version}

    def _get(self, rt: ResourceType, ns: str, name: str) -> Obj:
        obj = self.objects[rt.key].get((ns if rt.namespaced else "", name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def get(self, rt: ResourceType, ns: str, name: str) -> Obj:
        with self.cond:
            return self.view(rt, self._get(rt, ns, name))

    def _parse_rv(self, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise bad_request(f'resourceVersion: Invalid value: "{text}": strconv.ParseUint: invalid syntax') from None

    def list(self, rt: ResourceType, ns: str, match: Matcher, *, rv: str = "", rv_match: str = "",
             limit: int = 0, cont: str = "") -> Obj:
        """List at the latest revision, or at an exact one (`resourceVersionMatch=Exact`, continue tokens)."""
        with self.cond:
            at, start = self.rv, ()
            if cont:
                try:
                    token = json.loads(base64.urlsafe_b64decode(cont))
                    at, start = int(token["rv"]), tuple(token["start"])
                except (ValueError, KeyError, TypeError):
                    raise bad_request("continue key is not valid") from None
                if at < self.compacted_rv:
                    raise gone("The provided continue parameter is too old to display a consistent list result. "
                               "You can start a new list without the continue parameter.")
            elif rv_match == "Exact":
                at = self._parse_rv(rv)
                if at < self.compacted_rv:
                    raise gone("The resourceVersion for the provided list is too old.")
            if rv and rv != "0" and self._parse_rv(rv) > self.rv:
                raise too_large(self._parse_rv(rv), self.rv)
            objects = self._state_at(rt.key, at)
            keys = sorted(k for k, obj in objects.items() if (not ns or k[0] == ns) and k > start and match(obj))
            page = keys[:limit] if limit > 0 else keys
            meta: Obj = {"resourceVersion": str(at)}
            if len(page) < len(keys):
                meta["continue"] = base64.urlsafe_b64encode(json.dumps({"rv": at, "start": page[-1]}).encode()).decode()
            return {"kind": f"{rt.kind}List", "apiVersion": rt.group_version, "metadata": meta,
                    "items": [self.view(rt, objects[k], in_list=True) for k in page]}

    def _state_at(self, resource: tuple[str, str], at: int) -> dict[Key, Obj]:
        """The objects as they were at revision `at`, by undoing later events (at >= compacted_rv)."""
        state = dict(self.objects[resource])
        for event in reversed(self.history):
            if event.rv <= at:
                break
            if event.resource == resource:
                if event.old is None:
                    state.pop(_key(event.obj), None)
                else:
                    state[_key(event.old)] = event.old
        return state

    def events_after(self, resource: tuple[str, str], rv: int) -> list[Event]:
        """Events of one resource after `rv`, or 410 when compaction dropped some of them."""
        if rv < self.compacted_rv:
            raise gone(f"too old resource version: {rv} ({self.compacted_rv})")
        start = bisect.bisect_right(self.history, rv, key=lambda e: e.rv)
        return [e for e in self.history[start:] if e.resource == resource]

    def compact(self, rv: int | None = None) -> None:
        """Forget events up to `rv` (default: now): older resourceVersions then answer 410."""
        with self.cond:
            self.compacted_rv = max(self.compacted_rv, self.rv if rv is None else rv)
            self.history = [e for e in self.history if e.rv > self.compacted_rv]
            self.cond.notify_all()

    # --- writes --------------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, kind: str, new: Obj, old: Obj | None) -> Obj:
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        if kind == "DELETED":
            del self.objects[rt.key][_key(new)]
        else:
            self.objects[rt.key][_key(new)] = new
        event = Event(self.rv, rt.key, kind, new, old)
        self.history.append(event)
        for observer in self.observers:
            observer(event)
        if rt.key == CRD_KEY and kind == "DELETED":
            self.registry.unregister_crd(new)
            self.objects.pop((new["spec"]["group"], new["spec"]["names"]["plural"]), None)
        elif rt.key == CRD_KEY:
            self.registry.register_crd(new)
        self.cond.notify_all()
        return new

    def _incoming(self, rt: ResourceType, ns: str, body: Any) -> Obj:
        """A request body as a fresh object of `rt`, or 400 as the real decoder would answer."""
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise bad_request("the body of the request must be a JSON object with an object metadata")
        if body.get("kind") is None and rt.custom:
            raise bad_request(f"Object 'Kind' is missing in '{json.dumps(body)}'")
        if body.get("kind", rt.kind) != rt.kind or body.get("apiVersion", rt.group_version) != rt.group_version:
            raise bad_request(f"the API version in the data ({body.get('apiVersion')}) and kind ({body.get('kind')}) "
                              f"do not match the expected {rt.group_version} {rt.kind}")
        obj = copy.deepcopy(body) | {"apiVersion": rt.group_version, "kind": rt.kind}
        meta = obj.setdefault("metadata", {})
        for field in ("managedFields", "selfLink"):
            meta.pop(field, None)
        if not rt.namespaced:
            meta.pop("namespace", None)
        elif meta.setdefault("namespace", ns) != ns:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        return obj

    def _admit(self, rt: ResourceType, obj: Obj, strict: bool) -> list[str]:
        """Prune, default and validate a custom resource (or a CRD); return the warnings."""
        name = obj["metadata"].get("name", "")
        if rt.key == CRD_KEY and (problems := crd_problems(obj)):
            raise invalid(rt, name, problems)
        if not (rt.custom and rt.schema):
            return []
        pruned = prune_and_default(obj, rt.schema)
        if pruned and strict:
            unknown = ", ".join(f'unknown field "{p}"' for p in pruned)
            raise bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                              f"strict decoding error: {unknown}")
        if causes := validate(obj, rt.schema):
            raise invalid(rt, name, causes)
        return [f'unknown field "{p}"' for p in pruned]

    def _check_name(self, rt: ResourceType, name: str) -> None:
        pattern, limit, kind = {"services": (_DNS1035, 63, "RFC 1035 label"),
                                "namespaces": (_DNS1123_LABEL, 63, "lowercase RFC 1123 label")}.get(
            rt.plural, (_SUBDOMAIN, 253, "lowercase RFC 1123 subdomain"))
        if not pattern.fullmatch(name) or len(name) > limit:
            raise invalid(rt, name, [{"reason": "FieldValueInvalid", "field": "metadata.name",
                                      "message": f'Invalid value: "{name}": a {kind} must consist of lower case '
                                                 "alphanumeric characters or '-'"}])

    def create(self, rt: ResourceType, ns: str, body: Any, *, strict: bool = False) -> tuple[Obj, list[str]]:
        with self.cond:
            obj = self._incoming(rt, ns, body)
            meta = obj["metadata"]
            if meta.get("resourceVersion"):
                raise ApiError(500, "InternalError",
                               "Internal error occurred: resourceVersion should not be set on objects to be created")
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            if not meta.get("name"):
                raise invalid(rt, "", [{"reason": "FieldValueRequired", "field": "metadata.name",
                                        "message": "Required value: name or generateName is required"}])
            self._check_name(rt, meta["name"])
            if rt.namespaced and ("", ns) not in self.objects[("", "namespaces")]:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
            if _key(obj) in self.objects[rt.key]:
                raise ApiError(409, "AlreadyExists", f'{rt.group_resource()} "{meta["name"]}" already exists',
                               _details(rt, meta["name"]))
            if rt.status and not rt.status_on_create:
                obj.pop("status", None)
            warnings = self._admit(rt, obj, strict)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
            meta.pop("deletionTimestamp", None)
            if rt.tracks_generation:
                meta["generation"] = 1
            self._system_status(rt, obj)
            return self.view(rt, self._commit(rt, "ADDED", obj, None)), warnings

    def _system_status(self, rt: ResourceType, obj: Obj) -> None:
        """Status the real control plane fills in right away (namespace phase, CRD established)."""
        if rt.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        elif rt.key == CRD_KEY:
            names = obj["spec"]["names"]
            obj["status"] = {"acceptedNames": names,
                             "storedVersions": [v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
                             "conditions": [{"type": t, "status": "True", "reason": r, "lastTransitionTime": _now(),
                                             "message": ""} for t, r in (("NamesAccepted", "NoConflicts"),
                                                                         ("Established", "InitialNamesAccepted"))]}

    def update(self, rt: ResourceType, ns: str, name: str, body: Any, *, status: bool = False,
               strict: bool = False) -> tuple[Obj, list[str]]:
        """PUT of the main resource (status kept) or of /status (everything but status kept)."""
        with self.cond:
            old = self._get(rt, ns, name)
            obj = self._incoming(rt, ns, body)
            meta, old_meta = obj["metadata"], old["metadata"]
            if meta.setdefault("name", name) != name:
                raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
            if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
                raise conflict(rt, name, "the object has been modified; please apply your changes to the latest "
                                         "version and try again")
            if meta.get("uid") and meta["uid"] != old_meta["uid"]:
                raise conflict(rt, name, f"Precondition failed: UID in precondition: {meta['uid']}, "
                                         f"UID in object meta: {old_meta['uid']}")
            if status:
                new = copy.deepcopy(old) | {"apiVersion": rt.group_version}
                new.pop("status", None)
                new |= {"status": obj["status"]} if "status" in obj else {}
            else:
                new = obj
                for field in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "resourceVersion"):
                    meta.pop(field, None)
                    meta |= {field: old_meta[field]} if field in old_meta else {}
                if rt.status:
                    new.pop("status", None)
                    new |= {"status": copy.deepcopy(old["status"])} if "status" in old else {}
            warnings = self._admit(rt, new, strict)
            if rt.tracks_generation and not _same(_without(new, "metadata", "status"), _without(old, "metadata", "status")):
                new["metadata"]["generation"] = old_meta.get("generation", 0) + 1
            if rt.key == CRD_KEY and new.get("spec") != old.get("spec"):
                self._system_status(rt, new)
            if _same(new, old):
                return self.view(rt, old), warnings
            return self.view(rt, self._commit(rt, "MODIFIED", new, old)), warnings

    def patch(self, rt: ResourceType, ns: str, name: str, patch: Any, content_type: str, *, status: bool = False,
              strict: bool = False) -> tuple[Obj, list[str]]:
        with self.cond:
            current = self.view(rt, self._get(rt, ns, name))
            kind = content_type.split(";")[0].strip()
            try:
                if kind == "application/json-patch+json":
                    patched = json_patch(current, patch)
                elif kind == "application/merge-patch+json" or (
                        kind == "application/strategic-merge-patch+json" and not rt.custom):
                    patched = merge_patch(current, patch)
                else:
                    accepted = "application/json-patch+json, application/merge-patch+json"
                    accepted += ", application/strategic-merge-patch+json" if not rt.custom else ""
                    raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                                                f"accepted media types include: {accepted}")
            except PatchError as error:
                raise ApiError(422, "Invalid", str(error)) from None
            return self.update(rt, ns, name, patched, status=status, strict=strict)

    def delete(self, rt: ResourceType, ns: str, name: str, options: Any = None) -> Obj:
        with self.cond:
            old = self._get(rt, ns, name)
            preconditions = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
            for field, label in (("resourceVersion", "ResourceVersion"), ("uid", "UID")):
                wanted = preconditions.get(field)
                if wanted and wanted != old["metadata"][field]:
                    raise conflict(rt, name, f"Precondition failed: {label} in precondition: {wanted}, "
                                             f"{label} in object meta: {old['metadata'][field]}")
            deleted = self._commit(rt, "DELETED", copy.deepcopy(old), old)
            if rt.returns_deleted:
                return self.view(rt, deleted)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": _details(rt, name) | {"uid": old["metadata"]["uid"]}}

    def delete_collection(self, rt: ResourceType, ns: str, match: Matcher) -> Obj:
        with self.cond:
            listed = self.list(rt, ns, match)
            for item in listed["items"]:
                self.delete(rt, item["metadata"].get("namespace", ""), item["metadata"]["name"])
            return listed

    def apply_crd(self, manifest: Obj) -> Obj:
        """Create or replace a CRD directly (test helper); its kinds are served from then on."""
        rt = self.registry.types[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
        with self.cond:
            name = manifest.get("metadata", {}).get("name", "")
            if ("", name) in self.objects[CRD_KEY]:
                body = copy.deepcopy(manifest)
                body.get("metadata", {}).pop("resourceVersion", None)
                return self.update(rt, "", name, body)[0]
            return self.create(rt, "", manifest)[0]
