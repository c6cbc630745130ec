"""The test cluster: a real control plane (etcd, kube-apiserver, kube-controller-manager) built from
source, a kubelet stand-in that runs pods as local processes, and the pytest fixtures over them.

Test-only code: it is not part of the installed package.
"""
