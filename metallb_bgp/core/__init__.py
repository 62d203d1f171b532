"""The pure core: configuration compile, allocation, routes and plans, as functions of a cluster snapshot.

Nothing here does I/O; everything here is property-tested against a reference."""
