"""Names of the built-in workloads, importable without torch.

The CLI validates specs (and the CRD lists the allowed names) without paying for a torch import;
the registry in ``workloads`` checks at import that it implements exactly these names.
"""

BUILTIN_WORKLOAD_NAMES: tuple[str, ...] = ("digits-cnn", "digits-mlp", "charlm", "regression")
