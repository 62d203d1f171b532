"""metallb-bgp: a MetalLB-compatible BGP-mode load balancer for bare-metal Kubernetes, on ExaBGP."""

__version__ = "0.1.0"
