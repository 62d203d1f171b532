"""The core/v1 requests the daemons make, sent by the official client's `ApiClient`.

Why not the client's generated `CoreV1Api`: in kubernetes 37 its class body declares ~400 methods
with pydantic-annotated parameters, and importing it took 385 ms (`kubernetes.client.CoreV1Api`
resolved alone, this VM), the largest single piece of a speaker's start before its first list. The
daemons use eight of its methods. Each request here is what the generated method sends: the same
method, path, query parameters and headers, serialized, authenticated and sent by the same
`ApiClient` (`param_serialize`, `call_api`), and a status outside 2xx raises the client's
`ApiException` (`ApiException.from_response`, as the generated methods do when asked for the raw
response). What comes back is the raw response (lists and watches, read by `sources.kubernetes`) or
its decoded JSON (writes): never the client's model objects, which nobody here read and which cost
~0.1 ms of CPU per write to build.

Also here: `api_client_from`, the ApiClient itself (in-cluster config or a kubeconfig file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import config
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

MERGE_PATCH = "application/merge-patch+json"
Timeout = float | tuple[float, float] | None

# the generated list methods' keyword arguments that the daemons pass, and their query parameters
_LIST_QUERY = {
    "watch": "watch",
    "resource_version": "resourceVersion",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "timeout_seconds": "timeoutSeconds",
    "limit": "limit",
    "_continue": "continue",
}

# urllib3 keeps this many connections per host: the 11 list+watch streams, the Lease and WRITE_WORKERS
# writers, with room. Fewer and each concurrent write beyond it opens (and drops) a connection of its own.
CONNECTION_POOL_SIZE = 32


class CoreV1:
    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client

    # --- lists and watches: the raw urllib3 response, as `list_*(..., _preload_content=False)` ---------

    def list_service_for_all_namespaces(self, **options: Any) -> Any:
        return self._list("/api/v1/services", {}, options)

    def list_node(self, **options: Any) -> Any:
        return self._list("/api/v1/nodes", {}, options)

    def list_namespace(self, **options: Any) -> Any:
        return self._list("/api/v1/namespaces", {}, options)

    def list_namespaced_secret(self, namespace: str, **options: Any) -> Any:
        return self._list("/api/v1/namespaces/{namespace}/secrets", {"namespace": namespace}, options)

    # --- writes: the decoded object the API server answered with --------------------------------------

    def patch_namespaced_service_status(self, name: str, namespace: str, patch: Any, *, timeout: Timeout) -> Any:
        path = "/api/v1/namespaces/{namespace}/services/{name}/status"
        return self._json("PATCH", path, {"namespace": namespace, "name": name}, patch, MERGE_PATCH, timeout)

    def patch_namespaced_service(self, name: str, namespace: str, patch: Any, *, timeout: Timeout) -> Any:
        path = "/api/v1/namespaces/{namespace}/services/{name}"
        return self._json("PATCH", path, {"namespace": namespace, "name": name}, patch, MERGE_PATCH, timeout)

    def patch_namespaced_event(self, name: str, namespace: str, patch: Any, *, timeout: Timeout) -> Any:
        path = "/api/v1/namespaces/{namespace}/events/{name}"
        return self._json("PATCH", path, {"namespace": namespace, "name": name}, patch, MERGE_PATCH, timeout)

    def create_namespaced_event(self, namespace: str, body: Any, *, timeout: Timeout) -> Any:
        path = "/api/v1/namespaces/{namespace}/events"
        return self._json("POST", path, {"namespace": namespace}, body, "application/json", timeout)

    # --- the request ------------------------------------------------------------------------------------

    def _list(self, path: str, path_params: dict[str, str], options: dict[str, Any]) -> Any:
        options = dict(options)
        options.pop("_preload_content", None)  # always raw here
        timeout = options.pop("_request_timeout", None)
        unknown = set(options) - set(_LIST_QUERY)
        if unknown:
            raise TypeError(f"unsupported list options: {sorted(unknown)}")
        query = [(_LIST_QUERY[key], value) for key, value in options.items() if value is not None]
        return self._send("GET", path, path_params, query, None, None, timeout).response

    def _json(self, method: str, path: str, path_params: dict[str, str], body: Any, content_type: str, timeout: Timeout) -> Any:
        response = self._send(method, path, path_params, [], body, content_type, timeout)
        return json.loads(response.data)

    def _send(self, method: str, path: str, path_params: dict[str, str], query: list[tuple[str, Any]], body: Any,
              content_type: str | None, timeout: Timeout) -> Any:  # fmt: skip
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        request = self.api_client.param_serialize(
            method=method, resource_path=path, path_params=path_params, query_params=query,
            header_params=headers, body=body, auth_settings=["BearerToken"],
        )  # fmt: skip
        response = self.api_client.call_api(*request, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        if method != "GET":
            response.read()
        return response


def api_client_from(kubeconfig: Path | None, component: str = "cli") -> ApiClient:
    """An ApiClient from `kubeconfig`, else the in-cluster service account, else ~/.kube/config / $KUBECONFIG.

    The configuration also becomes the client's default, because parts of the official client
    (`Watch`, `LeaseLock`) build their own ApiClient from it. Requests carry the User-Agent
    `metallb-bgp-<component>/<version>`, so the API server's audit log, its request metrics and API
    Priority and Fairness rules can tell the speakers' load from the controller's.
    """
    configuration = Configuration()
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    # a dozen watch threads and the writers share one pool: room for all of them, no discarded connections
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, CONNECTION_POOL_SIZE)
    Configuration.set_default(configuration)
    api = ApiClient(configuration)
    api.user_agent = user_agent(component)
    return api


def user_agent(component: str) -> str:
    from metallb_bgp import __version__

    return f"metallb-bgp-{component}/{__version__}"
