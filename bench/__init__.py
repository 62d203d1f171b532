"""`make bench`: how fast and how big `metallb-bgp run` is against a real BIRD, next to raw ExaBGP.

Run with `python -m bench` (see `bench/__main__.py` for the flags and docs/performance.md for the
figures). Everything runs on loopback; every process the bench starts is stopped by its PID.
"""
