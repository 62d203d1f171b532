"""Desired routes for one node: `desired.desired_routes` (the reference: MetalLB's BGP-mode rules, listed
there) and its incremental twin `incremental.IncrementalRouteTable`; `node` is the per-node part computed
once (peers, exclusions, advertisements by pool), `service` one service's contribution, and `table`
the table and the minimal diff between two tables (all the ExaBGP engine needs).
"""
