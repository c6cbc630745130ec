"""A real Kubernetes control plane for the tests: etcd, kube-apiserver and kube-controller-manager
on loopback, in a temporary folder, started and torn down by ``Cluster``.

No kubelet and no scheduler run here; ``tests.cluster.kubelet`` stands in for both.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import kubernetes

from tests.cluster import processes, rest
from tests.cluster.binaries import Binaries

ADMIN_USER = "schedsearch-test-admin"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Controllers the operator's tests rely on: owner-reference GC, namespace deletion, service accounts
# and their tokens, the kube-root-ca.crt ConfigMap, the RBAC role aggregation that Helm charts use,
# Deployments (the operator itself), Jobs, and the PVC finalizer (else a PVC deletion hangs).
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "persistentvolumeclaim-protection-controller",
)


class ClusterStartError(RuntimeError):
    """The control plane did not come up; the message carries the tail of each component's log."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One running control plane. Build it with ``Cluster.start``; always ``stop`` it."""

    def __init__(self, binaries: Binaries, workdir: Path, *, keep_workdir: bool = False) -> None:
        self.binaries = binaries
        self.workdir = workdir
        self.keep_workdir = keep_workdir
        self.server = f"https://127.0.0.1:{free_port()}"
        # --cert-dir writes the self-signed serving certificate followed by its CA here.
        self.ca_file = workdir / "serving" / "apiserver.crt"
        self.credentials = rest.Credentials(self.server, self.ca_file, secrets.token_hex(24))
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.processes: dict[str, processes.ManagedProcess] = {}
        # Seconds from the start of etcd to: the API server's /readyz, then the controllers working.
        self.timings: dict[str, float] = {}
        self.version = ""
        self.etcd_url = ""
        self._rest: rest.RestClient | None = None

    @classmethod
    def start(
        cls,
        binaries: Binaries,
        *,
        workdir: Path | None = None,
        timeout: float = 120.0,
        keep_workdir: bool = False,
    ) -> Cluster:
        """Start etcd, kube-apiserver and kube-controller-manager; wait until they serve."""
        workdir = workdir or Path(tempfile.mkdtemp(prefix="schedsearch-k8s-"))
        cluster = cls(binaries, workdir, keep_workdir=keep_workdir)
        try:
            cluster._boot(deadline=time.monotonic() + timeout)
        except BaseException as exc:
            report = cluster.log_report()
            cluster.stop()
            if not isinstance(exc, Exception):  # an interrupt: stop quietly
                raise
            raise ClusterStartError(f"test cluster did not start: {exc}\n{report}") from exc
        return cluster

    # -- clients ---------------------------------------------------------------------------------

    @property
    def rest(self) -> rest.RestClient:
        """A JSON client with the admin identity."""
        if self._rest is None:
            self._rest = rest.RestClient(self.credentials)
        return self._rest

    def api_client(self, kubeconfig: Path | None = None) -> kubernetes.client.ApiClient:
        """An official-client ``ApiClient`` for the admin (or for ``kubeconfig``)."""
        path = kubeconfig or self.kubeconfig
        return kubernetes.config.new_client_from_config(config_file=str(path))

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """This process's environment with KUBECONFIG set and the cluster's binaries on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env["PATH"] = f"{self.binaries.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        kubeconfig: Path | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; with ``check`` a non-zero exit raises with stderr."""
        result = subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(kubeconfig),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def wait_crds_established(self, *names: str, timeout: float = 60.0) -> None:
        """Wait until the API server serves each named CRD (condition Established=True).

        Polled from the CRD objects rather than ``kubectl wait``: right after an apply a CRD can
        have no ``status.conditions`` yet, which ``kubectl wait`` reports as an error.
        """
        deadline = time.monotonic() + timeout
        for name in names:
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            self._wait(
                f"CRD {name} to be established",
                functools.partial(_established, self.rest, path),
                deadline,
            )

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, create: bool = True, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` with a bound token
        from the TokenRequest API; the account is created first unless ``create`` is false."""
        base = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        if create:
            with contextlib.suppress(rest.ApiError):  # already there: fine
                self.rest.post(base, {"metadata": {"name": name}})
        answer = self.rest.post(
            f"{base}/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        credentials = rest.Credentials(self.server, self.ca_file, answer["status"]["token"])
        path = self.workdir / "kubeconfigs" / f"{namespace}.{name}.kubeconfig"
        user = f"system:serviceaccount:{namespace}:{name}"
        return rest.write_kubeconfig(path, credentials, user=user, namespace=namespace)

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every component (controllers first, etcd last) and remove the temporary folder."""
        for name in reversed(list(self.processes)):
            self.processes[name].stop(grace=10.0)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_report(self, lines: int = 30) -> str:
        """The tail of each component's log, for failure messages."""
        parts = []
        for name, proc in self.processes.items():
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            parts.append(f"--- {name} ({state}), {proc.log_path}:\n{proc.log_tail(lines)}")
        return "\n".join(parts)

    def _boot(self, *, deadline: float) -> None:
        started = time.monotonic()
        self._write_identities()
        self._start_etcd(deadline)
        self._start_apiserver(deadline)
        self.timings["readyz"] = time.monotonic() - started
        rest.write_kubeconfig(self.kubeconfig, self.credentials, user=ADMIN_USER)
        self.version = str(self.rest.get("/version")["gitVersion"])
        self._start_controller_manager(deadline)
        self.timings["controllers"] = time.monotonic() - started

    def _write_identities(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True)
        # A static token in system:masters is the admin; no client certificates to manage.
        token_line = f'{self.credentials.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        (pki / "tokens.csv").write_text(token_line)
        # The key pair that signs (and verifies) ServiceAccount tokens.
        key, pub = pki / "sa.key", pki / "sa.pub"
        openssl = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        subprocess.run([*openssl, "-out", str(key)], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)],
            check=True,
            capture_output=True,
        )

    def _spawn(self, name: str, argv: list[str]) -> processes.ManagedProcess:
        proc = processes.spawn(
            name, argv, log_path=self.workdir / "logs" / f"{name}.log", die_with_parent=True
        )
        self.processes[name] = proc
        return proc

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        """Poll ``ready`` until true; fail early when any component has exited."""
        while not ready():
            dead = [name for name, proc in self.processes.items() if not proc.alive()]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def _start_etcd(self, deadline: float) -> None:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self.etcd_url = client_url
        self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}",
                # Test data is thrown away: skipping fsync makes every API write much cheaper.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd /health", lambda: _etcd_healthy(client_url), deadline)

    def _start_apiserver(self, deadline: float) -> None:
        pki = self.workdir / "pki"
        port = self.server.rsplit(":", 1)[1]
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.ca_file.parent}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # No real endpoints exist for the API server's own Service on loopback.
                "--endpoint-reconciler-type=none",
                # Fairness queuing guards shared clusters; here it only costs CPU.
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ],
        )
        self._wait("kube-apiserver /readyz", self._apiserver_ready, deadline)

    def _apiserver_ready(self) -> bool:
        if not self.ca_file.exists():
            return False
        try:
            status, _ = self.rest.send("GET", "/readyz")
        except Exception:  # still starting: refused, TLS not ready, ...
            self._rest = None  # the CA file may have been read half-written
            return False
        return status == 200

    def _start_controller_manager(self, deadline: float) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={self.workdir / 'pki' / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
            ],
        )
        # The "default" ServiceAccount appearing proves the controllers are syncing.
        self._wait(
            "the default ServiceAccount (kube-controller-manager)",
            lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
            deadline,
        )

    def _exists(self, path: str) -> bool:
        status, _ = self.rest.send("GET", path)
        return status == 200


def _established(api: rest.RestClient, path: str) -> bool:
    try:
        crd = api.get(path)
    except rest.ApiError:
        return False  # not visible yet
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return bool(json.load(resp).get("health") == "true")
    except (OSError, urllib.error.URLError, ValueError):
        return False
