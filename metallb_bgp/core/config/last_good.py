"""Last valid versions. Leaving a bad object out is right for a new object, but wrong for an edit: a typo
in a working pool would take its Services' IPs away, and an edit of pool `a` that overlaps pool `b`
would, by name order, take out `b`, which nobody touched. MetalLB's webhook rejects such an edit; at
runtime we do the same with memory. Each result carries `last_good` (for each object in its Config, the
version used, plus the Secrets its peers read); the daemons pass it to the next compile, and then:

- a changed object with an error falls back to its last valid version: its errors are reported on the
  current version, with a warning that the last valid version is kept; an object that fails to parse
  (in `load_errors`) is not taken as deleted and falls back too;
- objects unchanged since they were valid are checked first, so in a clash (overlap, duplicate alias,
  duplicate peer session, localPref conflict) the new or changed object is "the later one";
- if an unchanged object is still rejected because of a changed or new one (a wider pool breaking an
  advertisement's aggregation length, a new Community making an alias ambiguous, a changed Secret), the
  changed one falls back (a new one is left out) and is reported naming the object it would break;
  the culprit is found by recompiling, not by a rule per case (see `History`);
- a deleted object is gone (nothing is remembered for it), and a fixed edit is simply used.
With no memory (the first compile) the result is exactly that of the plain rules (`rules.compile_once`).

How the culprit is found: `History` (below). Which object a problem names is read from its
structured `refs` (each rule fills them in where its message names another object), never from the
message text, so a message can be reworded without changing what is held back.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from metallb_bgp.api.meta import to_document
from metallb_bgp.api.problems import ObjectError, Severity
from metallb_bgp.core.config.result import CompileResult, LastGood, ObjectKey, Remembered, object_key
from metallb_bgp.core.config.rules import compile_once
from metallb_bgp.core.snapshot import ClusterSnapshot

KEEPING_LAST_VALID = "keeping the last valid version until this is fixed"
WITHHELD = "is left out until its errors are fixed"
_FIELD_OF_KIND: Mapping[str, str] = {  # ClusterSnapshot field holding each remembered kind
    "IPAddressPool": "pools",
    "BGPPeer": "peers",
    "BGPAdvertisement": "advertisements",
    "Community": "communities",
    "BFDProfile": "bfd_profiles",
    "Secret": "secrets",
}
_LAYER: Mapping[str, int] = {  # an object's acceptance depends only on objects of its own or a lower layer
    "IPAddressPool": 0, "Community": 0, "BFDProfile": 0, "Secret": 0, "BGPPeer": 1, "BGPAdvertisement": 2,
}  # fmt: skip
_DEPENDS_ON: Mapping[str, frozenset[str]] = {  # kinds whose objects can get an object of this kind rejected
    "IPAddressPool": frozenset({"IPAddressPool"}),
    "Community": frozenset({"Community"}),
    "BFDProfile": frozenset({"BFDProfile"}),
    "BGPPeer": frozenset({"BGPPeer", "BFDProfile", "Secret"}),
    "BGPAdvertisement": frozenset(_LAYER),
}
_SINGLE_TRIALS = 16  # culprits tried one by one before holding back every candidate at once
_VOLATILE_METADATA = {"resource_version", "generation", "annotations", "uid", "deletion_timestamp"}


def same_version(a: Remembered, b: Remembered) -> bool:
    """Whether two versions of one object compile the same: equal, one resourceVersion, or equal content.

    Content leaves out what changes without the user editing anything (resourceVersion after a status
    write, annotations, status).
    """
    if a == b:
        return True
    if type(a) is not type(b):
        return False
    version = a.metadata.resource_version
    return bool(version and version == b.metadata.resource_version) or _content(a) == _content(b)


def _content(obj: Remembered) -> dict[str, object]:
    return to_document(obj, exclude={"status": True, "metadata": _VOLATILE_METADATA})


def _changed_field(current: Remembered, previous: Remembered | None) -> str:
    """The field an edit changed (`spec.addresses`), or its common prefix when it changed several."""
    now = _content(current)
    if previous is None:
        return "spec" if "spec" in now else ""
    before = _content(previous)
    paths: list[str] = []
    for top in sorted(now.keys() | before.keys()):
        new, old = now.get(top), before.get(top)
        if new == old:
            continue
        if isinstance(new, dict) and isinstance(old, dict) and top in ("spec", "metadata"):
            paths.extend(f"{top}.{key}" for key in sorted(new.keys() | old.keys()) if new.get(key) != old.get(key))
        else:
            paths.append(top)
    if len(paths) == 1:
        return paths[0]
    tops = {path.split(".")[0] for path in paths}
    return tops.pop() if len(tops) == 1 else ""


def _names(error: ObjectError, key: ObjectKey) -> bool:
    """Whether an error names the object: read from its structured `refs`, never from its text."""
    return key in error.refs


@dataclass(frozen=True)
class _Held:
    """An object whose current version is not used: its last valid version instead, or nothing if new."""

    version: Remembered | None
    errors: tuple[ObjectError, ...]  # reported instead of the errors of whatever is used in its place


@dataclass(frozen=True)
class _Outcome:
    """One compile of one choice of versions, and which objects made it into its Config."""

    snapshot: ClusterSnapshot  # the versions compiled
    result: CompileResult
    accepted: frozenset[ObjectKey]  # in the Config (Communities: without error; Secrets: read by such a peer)
    erroneous: frozenset[ObjectKey]  # with at least one error
    by_object: Mapping[ObjectKey, tuple[ObjectError, ...]]  # the result's errors, by the object they name

    def errors_of(self, key: ObjectKey) -> tuple[ObjectError, ...]:
        return self.by_object.get(key, ())


def _outcome(snapshot: ClusterSnapshot, result: CompileResult) -> _Outcome:
    namespace, config = snapshot.namespace, result.config
    by_object: dict[ObjectKey, list[ObjectError]] = defaultdict(list)
    for error in result.errors:
        by_object[(error.kind, error.namespace or namespace, error.name)].append(error)
    erroneous = frozenset(key for key, errors in by_object.items() if any(e.is_error for e in errors))
    accepted = {
        *(("IPAddressPool", namespace, name) for name in config.pools),
        *(("BGPPeer", namespace, name) for name in config.peers),
        *(("BGPAdvertisement", namespace, adv.name) for adv in config.advertisements),
        *(("BFDProfile", namespace, name) for name in config.bfd_profiles),
    }
    communities = (object_key(obj, namespace) for obj in snapshot.communities)
    accepted.update(key for key in communities if key[1] == namespace and key not in erroneous)
    secrets = Counter(object_key(obj, namespace) for obj in snapshot.secrets)
    for peer in snapshot.peers:
        ref = peer.spec.password_secret
        if ref is not None and object_key(peer, namespace) in accepted:
            key = ("Secret", ref.namespace or namespace, ref.name)
            if secrets[key] == 1:
                accepted.add(key)
    return _Outcome(snapshot, result, frozenset(accepted), erroneous, {k: tuple(v) for k, v in by_object.items()})


def _memory_of(outcome: _Outcome) -> LastGood:
    namespace = outcome.snapshot.namespace
    kept: dict[ObjectKey, Remembered] = {}
    for field_name in _FIELD_OF_KIND.values():
        for obj in getattr(outcome.snapshot, field_name):
            if object_key(obj, namespace) in outcome.accepted:  # accepted objects have a unique key
                kept[object_key(obj, namespace)] = obj
    return LastGood(kept)


def remember(snapshot: ClusterSnapshot, result: CompileResult) -> LastGood:
    return _memory_of(_outcome(snapshot, result))


def _error_texts(errors: Iterable[ObjectError]) -> set[tuple[str, str]]:
    return {(e.field, e.message) for e in errors if e.is_error}


class History:
    """One compile against the last valid versions: which current versions to hold back, found by recompiling.

    Starting from every current version, each round compiles and then, in the lowest layer that has work:
    1. a changed object that is rejected, or has an error its last valid version does not have, falls
       back to that version;
    2. else, when established objects (unchanged since they were valid, or fallen back) are rejected,
       the changed or new objects that cause this step back: those the victims' errors name (all victims
       in one trial compile), else, for the first victim, the first candidate whose stepping back clears
       it, else the fewest of all candidates that do. If none of this clears it, it stays rejected (a deleted
       dependency, a Node's labels: nothing to hold back).
    Every round holds back at least one more object or gives up on one victim, so it ends; choices are
    made in sorted order, so the outcome is deterministic. The result is the last compile, with the errors
    of each held-back object taken from the compile where its current version was used.
    """

    def __init__(self, snapshot: ClusterSnapshot, memory: LastGood) -> None:
        self.snapshot = snapshot
        self.namespace = snapshot.namespace
        self.memory = {
            key: obj for key, obj in memory.items() if key[0] in _LAYER and (key[0] == "Secret" or key[1] == self.namespace)
        }
        current: dict[ObjectKey, list[Remembered]] = defaultdict(list)
        for field_name in _FIELD_OF_KIND.values():
            for obj in getattr(snapshot, field_name):
                current[object_key(obj, self.namespace)].append(obj)
        self.current = {key: tuple(objs) for key, objs in sorted(current.items())}
        self.unchanged = frozenset(
            key
            for key, objs in self.current.items()
            if key in self.memory and len(objs) == 1 and same_version(objs[0], self.memory[key])
        )
        self.movable = [  # changed or new, so they may be held back
            key for key in self.current if key not in self.unchanged and (key[0] == "Secret" or key[1] == self.namespace)
        ]
        self.outcomes: dict[frozenset[tuple[ObjectKey, bool]], _Outcome] = {}

    def resolve(self) -> CompileResult:
        held = self._unreadable()
        gave_up: set[ObjectKey] = set()
        for _ in range(2 * (len(self.current) + len(held)) + 2):
            if not self._step(held, gave_up):
                break
        return self._result(self.compile(held), held)

    def _step(self, held: dict[ObjectKey, _Held], gave_up: set[ObjectKey]) -> bool:
        """One round: hold back more objects (or give up on a victim) in the lowest layer with work."""
        outcome = self.compile(held)
        for layer in sorted(set(_LAYER.values())):
            broken = self._broken(layer, held, outcome)
            if broken:
                held.update({key: _Held(self.memory[key], outcome.errors_of(key)) for key in broken})
                return True
            victims = [
                key
                for key in sorted(self._established(held))
                if _LAYER[key[0]] == layer and key[0] != "Secret" and key not in outcome.accepted and key not in gave_up
            ]
            if not victims:
                continue
            blamed = self._blame_named(victims, held, outcome) or {key: victims[0] for key in self._culprits(victims[0], held)}
            if not blamed:
                gave_up.add(victims[0])
            for key, victim in sorted(blamed.items()):
                held[key] = _Held(self.memory.get(key), outcome.errors_of(key) + self._note(key, victim, outcome))
            return True
        return False

    def compile(self, held: Mapping[ObjectKey, _Held]) -> _Outcome:
        signature = frozenset((key, choice.version is not None) for key, choice in held.items())
        if signature not in self.outcomes:
            effective = self._effective(held)
            established = frozenset((kind, name) for kind, namespace, name in self._established(held))
            withheld = {
                (kind, name): WITHHELD
                for (kind, namespace, name), choice in held.items()
                if choice.version is None and namespace == self.namespace
            }
            result = compile_once(effective, established=established, withheld=withheld)
            self.outcomes[signature] = _outcome(effective, result)
        return self.outcomes[signature]

    def _unreadable(self) -> dict[ObjectKey, _Held]:
        """Objects whose new version failed to parse are not deleted: they keep their last valid version."""
        load_errors: dict[ObjectKey, list[ObjectError]] = defaultdict(list)
        for error in self.snapshot.load_errors:
            load_errors[(error.kind, error.namespace or self.namespace, error.name)].append(error)
        return {
            key: _Held(last, tuple(load_errors[key]))
            for key, last in self.memory.items()
            if key not in self.current and key in load_errors
        }

    def _established(self, held: Mapping[ObjectKey, _Held]) -> set[ObjectKey]:
        """Objects used in a version that was valid last time: checked first, and never the ones to lose."""
        kept = {key for key, choice in held.items() if choice.version is not None}
        return kept | {key for key in self.unchanged if key not in held}

    def _broken(self, layer: int, held: Mapping[ObjectKey, _Held], outcome: _Outcome) -> list[ObjectKey]:
        """Rule 1: changed objects of `layer` that are rejected, or have an error their last valid version
        does not have (an advertisement narrowed to fewer pools), fall back to their last valid version."""
        changed = [
            key
            for key in self.current
            if _LAYER[key[0]] == layer
            and key[0] != "Secret"
            and key in self.memory
            and key not in held
            and key not in self.unchanged
            and (key not in outcome.accepted or key in outcome.erroneous)
        ]
        flawed = [key for key in changed if key in outcome.accepted]
        if not flawed:
            return changed
        before = self.compile({**held, **{key: _Held(self.memory[key], ()) for key in flawed}})
        worse = {key for key in flawed if not _error_texts(outcome.errors_of(key)) <= _error_texts(before.errors_of(key))}
        return [key for key in changed if key not in outcome.accepted or key in worse]

    def _candidates(self, victim: ObjectKey, held: Mapping[ObjectKey, _Held]) -> list[ObjectKey]:
        """The changed or new objects that could get `victim` rejected."""
        return [key for key in self.movable if key not in held and key[0] in _DEPENDS_ON[victim[0]]]

    def _named(self, victim: ObjectKey, candidates: Iterable[ObjectKey], outcome: _Outcome) -> list[ObjectKey]:
        reasons = [e for e in outcome.errors_of(victim) if e.is_error]
        return [key for key in candidates if any(_names(reason, key) for reason in reasons)]

    def _blame_named(
        self, victims: Sequence[ObjectKey], held: Mapping[ObjectKey, _Held], outcome: _Outcome
    ) -> dict[ObjectKey, ObjectKey]:
        """Rule 2 for many victims at once (one compile): culprit -> victim, for the objects the victims'
        errors name, when holding all of them back clears the victim."""
        named = {victim: self._named(victim, self._candidates(victim, held), outcome) for victim in victims}
        suspects = sorted({key for keys in named.values() for key in keys})
        if not suspects:
            return {}
        trial = self.compile({**held, **{key: _Held(self.memory.get(key), ()) for key in suspects}})
        blamed: dict[ObjectKey, ObjectKey] = {}
        for victim, keys in named.items():
            if victim in trial.accepted:
                for key in keys:
                    blamed.setdefault(key, victim)
        return blamed

    def _culprits(self, victim: ObjectKey, held: Mapping[ObjectKey, _Held]) -> tuple[ObjectKey, ...]:
        """Rule 2 for one victim: the changed or new objects whose stepping back lets it into the Config."""
        candidates = self._candidates(victim, held)
        if not candidates:
            return ()
        named = self._named(victim, candidates, self.compile(held))
        others = [key for key in candidates if key not in named]

        def clears(trial: Iterable[ObjectKey]) -> bool:
            stepped_back = {key: _Held(self.memory.get(key), ()) for key in trial}
            return victim in self.compile({**held, **stepped_back}).accepted

        for trial in [(key,) for key in (*named, *others)[:_SINGLE_TRIALS]]:
            if clears(trial):
                return trial
        if not clears(candidates):
            return ()
        culprits = list(candidates)  # several together: keep only those needed, the unnamed ones tried first
        for key in (*reversed(others), *reversed(named)):
            if len(culprits) > 1 and clears(k for k in culprits if k != key):
                culprits.remove(key)
        return tuple(culprits)

    def _note(self, culprit: ObjectKey, victim: ObjectKey, outcome: _Outcome) -> tuple[ObjectError, ...]:
        """The error on an object held back for breaking another, unless its own errors already say why."""
        own = outcome.errors_of(culprit)
        if culprit not in outcome.accepted and any(e.is_error for e in own):
            return ()
        reasons = [e for e in outcome.errors_of(victim) if e.is_error]
        reason = next((e for e in reasons if _names(e, culprit)), reasons[0] if reasons else None)
        detail = "" if reason is None else f" ({reason.field}: {reason.message})" if reason.field else f" ({reason.message})"
        verb = "not applied" if culprit in self.memory else "left out"
        victim_ref = ObjectError(*victim, "", "").object_ref
        field_ = _changed_field(self.current[culprit][0], self.memory.get(culprit))
        message = f"{verb}: it would make {victim_ref} invalid{detail}"
        return (ObjectError(*culprit, field_, message, Severity.ERROR, (victim,)),)

    def _effective(self, held: Mapping[ObjectKey, _Held]) -> ClusterSnapshot:
        """The snapshot with each held object replaced by its last valid version, or taken out."""
        chosen: dict[str, list[Remembered]] = {}
        for field_name in _FIELD_OF_KIND.values():
            objects: list[Remembered] = []
            seen: set[ObjectKey] = set()
            for obj in getattr(self.snapshot, field_name):
                key = object_key(obj, self.namespace)
                if key not in held:
                    objects.append(obj)
                elif key not in seen:
                    seen.add(key)
                    version = held[key].version
                    if version is not None:
                        objects.append(version)
            chosen[field_name] = objects
        for key, choice in held.items():
            if key not in self.current and choice.version is not None:
                chosen[_FIELD_OF_KIND[key[0]]].append(choice.version)
        fields: dict[str, Any] = {name: tuple(objects) for name, objects in chosen.items()}  # each kind's own objects
        return replace(self.snapshot, **fields)

    def _result(self, outcome: _Outcome, held: Mapping[ObjectKey, _Held]) -> CompileResult:
        """The last compile, reporting each held object's current errors (and any its last version has)."""
        errors = {e for e in outcome.result.errors if (e.kind, e.namespace or self.namespace, e.name) not in held}
        for key, choice in held.items():
            errors.update(choice.errors)
            if choice.version is None:
                continue
            if key in outcome.accepted:
                errors.add(ObjectError(*key, "", KEEPING_LAST_VALID, Severity.WARNING))
            else:  # even the last valid version is rejected now (a deleted dependency): say why
                errors.update(outcome.errors_of(key))
        return CompileResult(config=outcome.result.config, errors=tuple(sorted(errors)), last_good=_memory_of(outcome))
