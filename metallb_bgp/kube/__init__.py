"""The Kubernetes API edge: the client for the daemons' requests, and the writes they make."""
