"""IPAM: which LoadBalancer service gets which IP, from which pool, and why not.

`allocate` (the reference, in `allocate`) and its incremental twin (`incremental.IncrementalAllocation`,
held to it by a property test) sit side by side; `intent` reads what a service asks for, `book` is the
address book of one call, `results` what comes out, `usage` the pool status counters.
"""
