"""Cluster state from the Kubernetes API: list + watch per resource, kept whole.

(Interface fixed first so the controller and speaker can be built against it; filled in by the
Kubernetes-source work.)

Contract:
- `KubernetesSource(api_client, namespace=..., on_change=callback)`; `start()` starts one list+watch
  per resource (threads; the official client is synchronous) and returns at once.
- `on_change()` is called from watch threads after any cache changes; it must only enqueue/wake (the
  daemon passes `lambda: loop.call_soon_threadsafe(event.set)`).
- `synced` is True once every resource completed its first list; `wait_synced(timeout)` blocks for it.
  Callers must not announce, withdraw or allocate before that.
- `snapshot()` returns a whole, consistent `ClusterSnapshot` of the caches (cheap enough per reconcile).
- A lost or restarting watch never empties a cache; 410 Gone relists and swaps that cache atomically.
- `stop()` ends every watch thread.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes.client import ApiClient

from metallb_bgp.snapshot import DEFAULT_NAMESPACE, ClusterSnapshot


class KubernetesSource:
    def __init__(
        self, api_client: ApiClient, *, namespace: str = DEFAULT_NAMESPACE, on_change: Callable[[], None] = lambda: None
    ) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    @property
    def synced(self) -> bool:
        raise NotImplementedError

    def wait_synced(self, timeout: float | None = None) -> bool:
        raise NotImplementedError

    def snapshot(self) -> ClusterSnapshot:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError
