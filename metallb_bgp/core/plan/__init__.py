"""Plans: the whole pure pipeline (`pipeline`), kept up to date (`incremental`), and the two
Kubernetes daemons' pure halves (`speaker`, `controller`)."""
