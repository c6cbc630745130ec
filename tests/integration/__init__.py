"""Integration tests: against a real API server (etcd + kube-apiserver built from source)."""
