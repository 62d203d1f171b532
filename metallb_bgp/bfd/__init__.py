"""BFD (RFC 5880, single hop RFC 5881) beside ExaBGP, which has none: a node killed silently leaves the
routers' ECMP set in under a second instead of after the BGP hold time.

Why our own, in its own process: a BFD session at 300 ms x 3 fails when its sender pauses for 0.9 s,
and the speaker's own interpreter pauses (a full collection, a 10,000-service reconcile, a cold start).
So the sessions run in a child process (`python -m metallb_bgp.bfd`) that does nothing else: a few
sockets, a timer wheel, a few kilobytes of state. FRR's bfdd does the same job but needs its zebra and
mgmt daemons and their configuration language; this is ~400 lines, pure where it can be (`packet`,
`session`), and tested against BIRD's `protocol bfd` (tests/e2e/test_multinode.py).
"""
