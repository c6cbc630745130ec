"""Where the test cluster's binaries are: ``$SCHEDSEARCH_K8S_BIN``, else the folder that
``scripts/build-k8s-tools.sh --print-dir`` names (the build script alone owns that path)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-k8s-tools.sh"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")


@dataclasses.dataclass(frozen=True)
class Binaries:
    """The executables of the test cluster, all in ``bin_dir``."""

    bin_dir: Path

    def path(self, name: str) -> Path:
        if name not in NAMES:
            raise ValueError(f"unknown cluster binary {name!r}; allowed: {', '.join(NAMES)}")
        return self.bin_dir / name

    @property
    def etcd(self) -> Path:
        return self.path("etcd")

    @property
    def kube_apiserver(self) -> Path:
        return self.path("kube-apiserver")

    @property
    def kube_controller_manager(self) -> Path:
        return self.path("kube-controller-manager")

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")

    @property
    def helm(self) -> Path:
        return self.path("helm")

    def missing(self) -> list[str]:
        return [name for name in NAMES if not os.access(self.bin_dir / name, os.X_OK)]


def bin_dir() -> Path:
    """The folder the binaries are expected in (it may not exist yet)."""
    override = os.environ.get("SCHEDSEARCH_K8S_BIN")
    if override:
        return Path(override)
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def locate() -> tuple[Binaries, str | None]:
    """The binaries and, when some are missing, a message saying what is missing and what to run."""
    binaries = Binaries(bin_dir())
    missing = binaries.missing()
    if not missing:
        return binaries, None
    return binaries, (
        f"test cluster binaries missing from {binaries.bin_dir}: {', '.join(missing)}; "
        f"build them with `scripts/build-k8s-tools.sh` (or set SCHEDSEARCH_K8S_BIN)"
    )
