"""Leader election for the controller: one writer at a time, fenced by its own renewal clock.

Why: two controllers writing Service status at once could hand one address to two services. This is
the client's own `kubernetes.leaderelection` on a coordination.k8s.io Lease, run in a thread, with
two things the stock code lacks: request timeouts on our ApiClient, and a fence. A leader counts as
leading only while its last renewal is younger than the renew deadline, and `KubeWriter` asks before
every request, so a controller that cannot renew stops writing before any other candidate may take
over (after the lease duration).

Not here: what is written (`core.plan.controller`), the loop (`daemons.controller`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = structlog.get_logger("metallb_bgp.kube.leader")


@dataclass(frozen=True)
class LeaseTimings:
    """Seconds; whole numbers, as the client's LeaderElection needs (it sys.exit()s on bad values)."""

    lease_duration: int = 15
    renew_deadline: int = 10
    retry_period: int = 2

    def problems(self) -> list[str]:
        """The client's own rules, checked here so a bad flag is an error message, not sys.exit()."""
        found = []
        if self.retry_period < 1:
            found.append("retry period must be at least 1 second")
        if self.renew_deadline <= 1.2 * self.retry_period:
            found.append("renew deadline must be greater than 1.2 x retry period")
        if self.lease_duration <= self.renew_deadline:
            found.append("lease duration must be greater than renew deadline")
        return found


class _Stopped(Exception):
    """Raised inside the election thread to end `LeaderElection.run()`, which has no stop of its own."""


class _FencedLeaseLock(LeaseLock):
    """The client's LeaseLock with our ApiClient, request timeouts, a stop switch and a renewal clock.

    The stock LeaseLock builds its API from the default configuration, has no timeouts, and lets
    connection errors escape `update()` (which ends `LeaderElection.run()` without calling
    onstopped_leading). Here every failure is an ordinary "could not get/update the lock".
    """

    def __init__(
        self, api_client: ApiClient, name: str, namespace: str, identity: str, *, timeout: float, fresh_for: float
    ) -> None:
        self.api_instance = client.CoordinationV1Api(api_client)
        self.name = name
        self.namespace = namespace
        self.identity = str(identity)
        self.lease_reference: Any = None
        self.timeout = timeout
        self.stopping = threading.Event()
        self.io = threading.Lock()  # one lease request at a time: after stop(), none is in flight or to come
        self.renewed_at: float | None = None  # monotonic time of our last successful write holding the lease
        self.fresh_for = fresh_for  # a renewal older than this no longer lets us write
        self.on_fresh: Callable[[], None] = lambda: None  # a renewal after a stale spell: writing may resume

    def _check(self) -> None:
        if self.stopping.is_set():
            raise _Stopped

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        with self.io:
            return self._get(name, namespace)

    def _get(self, name: str, namespace: str) -> tuple[bool, Any]:
        self._check()
        try:
            lease = self.api_instance.read_namespaced_lease(name, namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            return False, exc
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts
            return False, ApiException(status=0, reason=f"{type(exc).__name__}")
        self.lease_reference = lease
        return True, self.get_lock_object(lease)

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        with self.io:
            return self._create(name, namespace, election_record)

    def _create(self, name: str, namespace: str, election_record: Any) -> bool:
        self._check()
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=name), spec=self.get_lease_spec(election_record))
        try:
            self.lease_reference = self.api_instance.create_namespaced_lease(namespace, body, _request_timeout=self.timeout)
        except Exception:  # noqa: BLE001 - 409 (someone else created it) or the API is away: not ours now
            return False
        self._renewed(election_record)
        return True

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        with self.io:
            return self._update(name, namespace, updated_record)

    def _update(self, name: str, namespace: str, updated_record: Any) -> bool:
        self._check()
        if self.lease_reference is None:
            return False
        try:
            self.lease_reference.spec = self.get_lease_spec(updated_record, self.lease_reference.spec)
            self.lease_reference = self.api_instance.replace_namespaced_lease(
                name, namespace, self.lease_reference, _request_timeout=self.timeout
            )
        except Exception:  # noqa: BLE001 - 409 means another candidate wrote first: not ours
            return False
        self._renewed(updated_record)
        return True

    def _renewed(self, record: Any) -> None:
        if record.holder_identity != self.identity:
            return
        now = time.monotonic()
        stale = self.renewed_at is not None and now - self.renewed_at >= self.fresh_for
        self.renewed_at = now
        if stale:
            self.on_fresh()

    def release(self) -> None:
        """Give the lease up (empty holder) so another candidate takes over at once, not at expiry."""
        try:
            lease = self.api_instance.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.timeout)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            self.api_instance.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.timeout)
            log.info("leader_lease_released", lease=self.name)
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            log.warning("leader_lease_not_released", lease=self.name, error=type(exc).__name__)


class Elector(Protocol):
    @property
    def leading(self) -> bool: ...

    def start(self, on_change: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...


class AlwaysLeader:
    """No election (a single controller, or tests): always allowed to write."""

    leading = True

    def start(self, on_change: Callable[[], None]) -> None:
        on_change()

    def stop(self) -> None:
        pass


class LeaseElector:
    """Leader election with the client's LeaderElection + a Lease, run in a daemon thread.

    `leading` is True between onstarted_leading and onstopped_leading *and* while the last renewal
    is younger than the renew deadline: if the API goes away, we stop writing at the deadline even
    though the client only notices later. After losing the lease the thread campaigns again.
    """

    def __init__(
        self,
        api_client: ApiClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),
    ) -> None:
        problems = timings.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.identity = identity
        self.timings = timings
        self.lock = _FencedLeaseLock(
            api_client, name, namespace, identity, timeout=float(timings.retry_period), fresh_for=timings.renew_deadline
        )
        self._elected = False
        self._on_change: Callable[[], None] = lambda: None
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        renewed = self.lock.renewed_at
        return (
            self._elected
            and not self.lock.stopping.is_set()
            and renewed is not None
            and time.monotonic() - renewed < self.lock.fresh_for
        )

    def start(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self.lock.on_fresh = on_change
        self._thread = threading.Thread(target=self._campaign, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop campaigning; a leader releases the lease so another candidate need not wait for expiry.

        The election thread may be asleep inside the client (up to a retry period); it is not waited
        for: every lease request it could still make raises at once, so it can never renew again.
        """
        was_leading = self._elected
        with self.lock.io:  # waits for a request in flight (bounded by its timeout)
            self.lock.stopping.set()
        self._elected = False
        if was_leading:
            self.lock.release()
        if self._thread is not None:
            self._thread.join(timeout=0.2)

    def _campaign(self) -> None:
        while not self.lock.stopping.is_set():
            config = electionconfig.Config(
                self.lock,
                lease_duration=self.timings.lease_duration,
                renew_deadline=self.timings.renew_deadline,
                retry_period=self.timings.retry_period,
                onstarted_leading=self._started,
                onstopped_leading=self._stopped,
            )
            try:
                leaderelection.LeaderElection(config).run()  # returns when a lease we held is lost
            except _Stopped:
                break
            except Exception as exc:  # noqa: BLE001 - a client bug must not end the campaign
                log.error("leader_election_failed", error=f"{type(exc).__name__}: {exc}")
                self._stopped()
                self.lock.stopping.wait(self.timings.retry_period)
        self._elected = False

    def _started(self) -> None:
        self._elected = True
        log.info("leader_elected", identity=self.identity, lease=self.lock.name)
        self._on_change()

    def _stopped(self) -> None:
        if self._elected:
            log.warning("leader_lost", identity=self.identity, lease=self.lock.name)
        self._elected = False
        self._on_change()


