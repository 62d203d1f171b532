"""Which Services this load balancer answers for: one rule, read by the allocator and the routes.

A Service is ours when it is type LoadBalancer and its `loadBalancerClass` is ours (None: no class, as
MetalLB without `--lb-class`). The routes also announce a LoadBalancer Service that already has an
assignment whatever its class (`assigned`): an address we gave out stays announced until the
allocator takes it back, so a class edit cannot black-hole it in between.
"""

from __future__ import annotations

from metallb_bgp.api.core import Service


def is_ours(service: Service, *, load_balancer_class: str | None, assigned: bool = False) -> bool:
    spec = service.spec
    return spec.type == "LoadBalancer" and (assigned or spec.load_balancer_class == load_balancer_class)
