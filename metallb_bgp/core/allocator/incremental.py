"""`allocate`'s answer kept across calls (`IncrementalAllocation`): re-decides only the services that changed
and the unsettled ones, and a property test holds it to `allocate` after random change sequences."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from metallb_bgp.api.core import Service
from metallb_bgp.api.problems import ObjectError
from metallb_bgp.core.allocator.allocate import allocate_new, keep_valid
from metallb_bgp.core.allocator.book import AddressBook, Use
from metallb_bgp.core.allocator.intent import Intent, read_service
from metallb_bgp.core.allocator.results import Allocation, Assignment
from metallb_bgp.core.config.model import Config
from metallb_bgp.core.keys import ServiceKey, key_order
from metallb_bgp.core.net import IPAddress
from metallb_bgp.core.ownership import is_ours
from metallb_bgp.core.persistent import SnapshotDict

Previous = Callable[[ServiceKey], "tuple[IPAddress, ...] | str | None"]


class IncrementalAllocation:
    """`allocate()` kept across calls, so one changed service costs one service's work.

    The result of every call equals `allocate(config, services, namespaces, existing=..., ...)` on the
    same inputs (a property test holds it to that; only the iteration order of `assignments` differs).
    It holds what allocate() rebuilds on every call: each service's intent and warnings, and the address
    book of every assignment. A call re-decides only a *subset*: the services that changed plus the
    unsettled ones (refused, PreferDualStack missing a family its pool has, or cleared on every call
    because their status holds IPs while they are no longer LoadBalancers). Every other service keeps
    its assignment, which is what allocate() would do too: its previous IPs are its current ones, still
    valid, and nobody ahead of it in key order can take them, because no re-decided service's previous
    IPs are held by a kept one (checked; if it happens, the call falls back to deciding every service).
    The subset is then decided exactly as allocate() decides everyone (keep, complete, allocate new), in
    the same order, against a book that holds everybody else.

    A new Config or new namespace labels mean a new `IncrementalAllocation` (the caller's job).
    """

    def __init__(
        self,
        config: Config,
        namespace_labels: Mapping[str, Mapping[str, str]],
        *,
        load_balancer_class: str | None = None,
    ) -> None:
        self.config = config
        self.namespace_labels = namespace_labels
        self.load_balancer_class = load_balancer_class
        self._book = AddressBook(config)
        self._intents: dict[ServiceKey, Intent] = {}
        self._warnings: dict[ServiceKey, tuple[ObjectError, ...]] = {}  # only services that have some
        self._all_warnings: tuple[ObjectError, ...] = ()
        # each Allocation gets an O(1) read-only snapshot of it (see snapshot_dict.SnapshotDict), not a copy
        self._assignments: SnapshotDict[ServiceKey, Assignment] = SnapshotDict()
        self._refusals: dict[ServiceKey, str] = {}
        self._unsettled: set[ServiceKey] = set()
        self.changed: set[ServiceKey] = set()  # services whose assignment the last call changed
        self.decided = 0  # services re-decided by the last call (for logs and the bench)

    def allocate_all(self, services: Mapping[ServiceKey, Service], previous: Previous) -> Allocation:
        """Decide every service: the first call, or a fallback."""
        before = self._assignments
        self._book = AddressBook(self.config)
        self._intents, self._warnings, self._refusals = {}, {}, {}
        self._assignments = SnapshotDict()  # a new one: snapshots of the old one stay as they were
        self._unsettled = set()
        cleared = self._decide(sorted(services, key=key_order), services, previous)
        self.decided = len(services)
        self.changed = {key for key in before.keys() | self._assignments.keys() if before.get(key) != self._assignments.get(key)}
        return self._result(cleared, warnings_changed=True)

    def update(
        self, services: Mapping[ServiceKey, Service], changed: Collection[ServiceKey], previous: Previous
    ) -> Allocation:
        """Re-decide the services in `changed` (added, modified or gone from `services`) and the unsettled."""
        wanted = set(changed) | self._unsettled
        subset = sorted(wanted, key=key_order)
        for key in subset:
            service = services.get(key)
            if service is None or not is_ours(service, load_balancer_class=self.load_balancer_class):
                continue
            ips = previous(key)
            if isinstance(ips, tuple) and any(h not in wanted for use in self._book.uses_of(ips) for h in use.holders):
                # a kept service holds what this one had: who keeps it depends on key order, which only
                # deciding everyone settles
                return self.allocate_all(services, previous)
        before = {key: self._assignments.get(key) for key in subset}
        shared: list[Use] = []
        for key in subset:
            self._unsettled.discard(key)
            self._refusals.pop(key, None)
            assignment = self._assignments.pop(key, None)
            if assignment is not None:
                shared.extend(self._book.release(assignment.pool, assignment.ips, key))
        for use in shared:
            self._reset_ports(use)
        warnings_before = [self._warnings.get(key) for key in subset]
        cleared = self._decide(subset, services, previous)
        self.decided = len(subset)
        self.changed = {key for key in subset if before[key] != self._assignments.get(key)}
        warnings_changed = warnings_before != [self._warnings.get(key) for key in subset]
        return self._result(cleared, warnings_changed=warnings_changed)

    # ---------------------------------------------------------------- the work, as in allocate()

    def _decide(self, keys: Sequence[ServiceKey], services: Mapping[ServiceKey, Service], previous: Previous) -> dict[ServiceKey, str]:
        """allocate()'s three steps for `keys` (sorted), against a book holding every other assignment."""
        config, book = self.config, self._book
        cleared: dict[ServiceKey, str] = {}
        intents: dict[ServiceKey, Intent] = {}
        for key in keys:
            service = services.get(key)
            self._intents.pop(key, None)
            self._warnings.pop(key, None)
            if service is None:
                continue
            if is_ours(service, load_balancer_class=self.load_balancer_class):
                warnings: list[ObjectError] = []
                intent = read_service(service, self.namespace_labels.get(key.namespace, {}), config, warnings, key)
                intents[key] = self._intents[key] = intent
                if warnings:
                    self._warnings[key] = tuple(warnings)
            elif service.spec.type != "LoadBalancer" and previous(key):
                cleared[key] = "the service is no longer of type LoadBalancer"
                self._unsettled.add(key)  # cleared again on every call while its status holds IPs

        kept, pending = keep_valid(config, book, intents, lambda key: previous(key) or (), cleared)
        self._assignments.update(kept)
        pending.sort(key=lambda intent: (not intent.requested_ips, *key_order(intent.key)))
        for intent in pending:  # 3. everyone else
            outcome = allocate_new(config, book, intent)
            if isinstance(outcome, str):
                self._refusals[intent.key] = outcome
                continue
            pool, ips = outcome
            book.take(pool.name, ips, intent.claim)
            self._assignments[intent.key] = Assignment(ips, pool.name, intent.claim.sharing_key)

        for key, intent in intents.items():
            assignment = self._assignments.get(key)
            if assignment is None or self._may_complete(intent, assignment):
                self._unsettled.add(key)
            else:
                for use in book.uses_of(assignment.ips):  # next time they are all kept in key order
                    if len(use.holders) > 1:
                        use.holders.sort()
        return cleared

    def _may_complete(self, intent: Intent, assignment: Assignment) -> bool:
        """A PreferDualStack service with one IP whose pool has the other family: it takes one when one
        frees up (allocate()'s step 2), so it is decided again on every call."""
        if not intent.families.want_both or len(assignment.ips) != 1 or intent.requested_ips:
            return False
        missing = next(v for v in intent.families.order if v != assignment.ips[0].version)
        return self._book.has_family(assignment.pool, missing)

    def _reset_ports(self, use: Use) -> None:
        use.ports = frozenset(port for holder in use.holders for port in self._intents[holder].claim.ports)

    def _result(self, cleared: Mapping[ServiceKey, str], *, warnings_changed: bool) -> Allocation:
        if warnings_changed:
            self._all_warnings = tuple(sorted({w for ws in self._warnings.values() for w in ws}))
        return Allocation(
            assignments=self._assignments.snapshot(),
            refusals=dict(sorted(self._refusals.items())),
            warnings=self._all_warnings,
            cleared=dict(sorted(cleared.items())),
        )
