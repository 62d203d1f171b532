"""A small, faithful fake Kubernetes API server for testing with the official `kubernetes` client.

Why: no real kube-apiserver can run on our machines, and mocking the client would hide what matters
(urllib3 retries, chunked watches, 409/410/422 answers). Use the `fake_kube` fixture:

    from fakekube import fake_kube  # noqa: F401  (tests/ is on sys.path; this makes the fixture visible)

    def test_x(fake_kube):
        core = kubernetes.client.CoreV1Api(fake_kube.client)
        fake_kube.fail_next(2, method="GET", path=r"/services")   # 500 twice
        fake_kube.throttle_next(1, retry_after=0)                   # 429 + Retry-After
        fake_kube.drop_next(1)                                      # close without answering
        fake_kube.compact()                                         # older resourceVersions -> 410
        fake_kube.restart(keep_state=False)                         # same port, state lost
        fake_kube.requests                                          # [Request(method, path, query, status)]

The fixture also makes the server the client's default Configuration for the test (LeaseLock and
Watch build their own ApiClient from it). Namespaces default, kube-system, kube-public,
kube-node-lease and metallb-system exist, and the metallb.io kinds are served without a schema;
`FakeKube(crds=())` gives a bare cluster, `register_crd()` or a POST of a CRD serves a kind with
its schema. Semantics and simplifications are listed in the docstrings of store.py and server.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from .resources import METALLB_CRDS, schemaless_crd
from .server import DEFAULT_NAMESPACES, FakeKube, Request

__all__ = ["DEFAULT_NAMESPACES", "METALLB_CRDS", "FakeKube", "Request", "core", "custom", "fake_kube", "schemaless_crd"]


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    """A started FakeKube; `fake_kube.client` is an ApiClient pointing at it."""
    with FakeKube() as fake, fake.as_default_configuration():
        yield fake


@pytest.fixture
def core(fake_kube: FakeKube) -> client.CoreV1Api:
    """The official client's core/v1 API on the fake server."""
    return client.CoreV1Api(fake_kube.client)


@pytest.fixture
def custom(fake_kube: FakeKube) -> client.CustomObjectsApi:
    """The official client's custom objects API on the fake server."""
    return client.CustomObjectsApi(fake_kube.client)
