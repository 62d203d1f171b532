"""Manifest texts the tests and the bench both write: one LoadBalancer Service with its EndpointSlice.

The bench (bench/cluster.py) writes 10,000 of these and the `run` tests a few; one template keeps what
the bench measures the same as what the tests check.
"""

from __future__ import annotations


def service_manifest(
    name: str, *, local: bool = False, endpoint_node: str = "node-a", endpoint_nodes: tuple[str, ...] = ()
) -> str:
    """`endpoint_nodes`: one ready endpoint on each (default: one on `endpoint_node`)."""
    policy = "Local" if local else "Cluster"
    endpoints = "".join(
        f"- addresses: [10.0.0.{i + 1}]\n  conditions: {{ready: true}}\n  nodeName: {node}\n"
        for i, node in enumerate(endpoint_nodes or (endpoint_node,))
    )
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  selector: {{app: {name}}}
  ports: [{{port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints:
{endpoints}"""
