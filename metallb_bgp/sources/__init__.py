"""Where cluster state comes from: a folder of manifests (embedded mode) or the Kubernetes API."""
