"""How the test kubelet turns a pod's first container into a local process: its volumes as folders,
its environment, its argv and working directory, with every volumeMount path rewritten to the folder
that stands in for it.

Volume folders: emptyDir and other pod-scoped volumes under ``<root>/pods/<uid>/volumes/<name>``;
a persistentVolumeClaim under ``<root>/pvc/<namespace>/<claim>`` so it outlives the pod; secret,
configMap, downwardAPI and projected volumes are written as files from the API objects.

Cluster DNS: every pod runs on this machine, so a Service or pod DNS name in an environment
value (``<name>.<namespace>.svc``, ``<host>.<service>.<namespace>.svc.cluster.local``, alone or
inside a URL) is rewritten to ``POD_IP``, as a cluster's DNS would resolve it to a pod here.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.cluster import rest

JsonObj = rest.JsonObj
POD_IP = "127.0.0.1"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ConfigError(Exception):
    """The container cannot be configured yet (missing Secret, key, ...); the pod stays Pending."""


class StartError(Exception):
    """The container cannot start at all (no command, executable not found)."""


@dataclasses.dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


class Resolver:
    """Reads the Secrets, ConfigMaps and tokens a pod refers to and lays out its volumes."""

    def __init__(self, api: rest.RestClient, root: Path, *, node_name: str) -> None:
        self.api = api
        self.root = root
        self.node_name = node_name

    # -- API lookups -----------------------------------------------------------------------------

    def _object_data(self, kind: str, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            obj = self.api.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        except rest.ApiError as exc:
            if exc.status == 404:
                return None
            raise
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def source_data(self, kind: str, namespace: str, ref: JsonObj) -> dict[str, bytes]:
        """The keys of Secret/ConfigMap ``ref`` ({name, optional}); missing and optional -> {}."""
        data = self._object_data(kind, namespace, ref["name"])
        if data is None:
            if ref.get("optional"):
                return {}
            raise ConfigError(f'{kind[:-1]} "{ref["name"]}" not found')
        return data

    def source_key(self, kind: str, namespace: str, ref: JsonObj) -> str | None:
        """One key of a Secret/ConfigMap ({name, key, optional}); missing and optional -> None."""
        data = self.source_data(kind, namespace, ref)
        if ref["key"] in data:
            return data[ref["key"]].decode()
        if ref.get("optional"):
            return None
        raise ConfigError(
            f"couldn't find key {ref['key']} in {kind[:-1]} {namespace}/{ref['name']}"
        )

    def token(self, pod: JsonObj, source: JsonObj) -> str:
        """A token for the pod's ServiceAccount, bound to the pod (TokenRequest API)."""
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        spec: JsonObj = {
            "expirationSeconds": source.get("expirationSeconds", 3600),
            "boundObjectRef": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
        answer = self.api.post(
            path, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        )
        return str(answer["status"]["token"])

    # -- volumes ---------------------------------------------------------------------------------

    def volume_dir(self, pod: JsonObj, volume: JsonObj) -> Path:
        meta = pod["metadata"]
        claim = volume.get("persistentVolumeClaim")
        if claim:
            return self.root / "pvc" / meta["namespace"] / claim["claimName"]
        return self.root / "pods" / meta["uid"] / "volumes" / volume["name"]

    def materialize(self, pod: JsonObj) -> dict[str, Path]:
        """Create every volume's folder (and files); return volume name -> folder."""
        folders = {}
        for volume in pod["spec"].get("volumes") or []:
            folder = self.volume_dir(pod, volume)
            folder.mkdir(parents=True, exist_ok=True)
            for relpath, content in self._volume_files(pod, volume).items():
                _write_file(folder, relpath, content)
            folders[volume["name"]] = folder
        return folders

    def _volume_files(self, pod: JsonObj, volume: JsonObj) -> dict[str, bytes]:
        namespace = pod["metadata"]["namespace"]
        if "secret" in volume:
            ref = {"name": volume["secret"]["secretName"], **volume["secret"]}
            return _project(self.source_data("secrets", namespace, ref), ref)
        if "configMap" in volume:
            ref = volume["configMap"]
            return _project(self.source_data("configmaps", namespace, ref), ref)
        if "downwardAPI" in volume:
            return self._downward_files(pod, volume["downwardAPI"])
        if "projected" in volume:
            files: dict[str, bytes] = {}
            for source in volume["projected"].get("sources") or []:
                files.update(self._projected_files(pod, source))
            return files
        return {}

    def _projected_files(self, pod: JsonObj, source: JsonObj) -> dict[str, bytes]:
        namespace = pod["metadata"]["namespace"]
        if "serviceAccountToken" in source:
            token_source = source["serviceAccountToken"]
            return {token_source["path"]: self.token(pod, token_source).encode()}
        if "secret" in source:
            return _project(
                self.source_data("secrets", namespace, source["secret"]), source["secret"]
            )
        if "configMap" in source:
            return _project(
                self.source_data("configmaps", namespace, source["configMap"]), source["configMap"]
            )
        if "downwardAPI" in source:
            return self._downward_files(pod, source["downwardAPI"])
        return {}

    def _downward_files(self, pod: JsonObj, source: JsonObj) -> dict[str, bytes]:
        files = {}
        for item in source.get("items") or []:
            if "fieldRef" not in item:
                raise ConfigError(f"downwardAPI item {item['path']}: only fieldRef is supported")
            files[item["path"]] = field_value(pod, item["fieldRef"]["fieldPath"]).encode()
        return files

    # -- environment and argv --------------------------------------------------------------------

    def container_env(
        self, pod: JsonObj, container: JsonObj, rewrite: Callable[[str], str]
    ) -> dict[str, str]:
        """The container's variables in declaration order, with $(VAR) references expanded."""
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("secrets", "secretRef"), ("configmaps", "configMapRef")):
                if key in source:
                    data = self.source_data(kind, namespace, source[key])
                    env.update({prefix + k: v.decode() for k, v in data.items()})
        for item in container.get("env") or []:
            value = self._env_value(pod, item, rewrite, env)
            if value is not None:
                env[item["name"]] = value
        return env

    def _env_value(
        self, pod: JsonObj, item: JsonObj, rewrite: Callable[[str], str], env: Mapping[str, str]
    ) -> str | None:
        namespace = pod["metadata"]["namespace"]
        source = item.get("valueFrom")
        if not source:
            return cluster_dns(expand(rewrite(item.get("value", "")), env))
        if "secretKeyRef" in source:
            return self.source_key("secrets", namespace, source["secretKeyRef"])
        if "configMapKeyRef" in source:
            return self.source_key("configmaps", namespace, source["configMapKeyRef"])
        if "fieldRef" in source:
            return field_value(pod, source["fieldRef"]["fieldPath"])
        raise ConfigError(
            f"env {item['name']}: only value, secretKeyRef, configMapKeyRef and "
            "fieldRef are supported by the test kubelet"
        )

    def launch(self, pod: JsonObj, *, base_env: Mapping[str, str], path_prefix: Path) -> Launch:
        """Everything needed to start the pod's first container; raises ConfigError/StartError."""
        container = pod["spec"]["containers"][0]
        if not container.get("command"):
            raise StartError(
                "the test kubelet runs only containers that set `command` "
                "(there is no image to take an entrypoint from)"
            )
        folders = self.materialize(pod)
        rewrite = mount_rewriter(container, folders)
        env = self.container_env(pod, container, rewrite)
        command = [*container["command"], *container.get("args", [])]
        argv = [expand(rewrite(arg), env) for arg in command]
        search_path = f"{path_prefix}{os.pathsep}{env.get('PATH', base_env.get('PATH', ''))}"
        executable = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=search_path)
        if executable is None:
            raise StartError(f'exec: "{argv[0]}": executable file not found in $PATH')
        process_env = {**base_env, **self._api_access(pod, container, folders), **env}
        process_env["PATH"] = search_path
        return Launch(
            [executable, *argv[1:]], process_env, self._working_dir(pod, container, rewrite)
        )

    def _api_access(
        self, pod: JsonObj, container: JsonObj, folders: Mapping[str, Path]
    ) -> dict[str, str]:
        """KUBECONFIG for the pod's ServiceAccount token, when one is mounted.

        In-cluster clients read the token from the fixed path SERVICE_ACCOUNT_DIR, which no
        rewriting can reach; they fall back to KUBECONFIG, so the pod still calls the API as its
        own ServiceAccount (and its RBAC is what decides).
        """
        for mount in container.get("volumeMounts") or []:
            if mount["mountPath"].rstrip("/") != SERVICE_ACCOUNT_DIR:
                continue
            folder = folders[mount["name"]]
            if not (folder / "token").exists() or not (folder / "ca.crt").exists():
                return {}
            meta = pod["metadata"]
            account = pod["spec"].get("serviceAccountName") or "default"
            credentials = rest.Credentials(
                self.api.credentials.server, folder / "ca.crt", (folder / "token").read_text()
            )
            path = self.root / "pods" / meta["uid"] / "kubeconfig"
            user = f"system:serviceaccount:{meta['namespace']}:{account}"
            rest.write_kubeconfig(path, credentials, user=user, namespace=meta["namespace"])
            return {"KUBECONFIG": str(path)}
        return {}

    def _working_dir(self, pod: JsonObj, container: JsonObj, rewrite: Callable[[str], str]) -> Path:
        wanted = container.get("workingDir")
        folder = Path(rewrite(wanted)) if wanted else None
        if folder is None or not folder.is_dir():
            # No image filesystem here: a private folder per pod stands in for the container's.
            folder = self.root / "pods" / pod["metadata"]["uid"] / "workdir"
            folder.mkdir(parents=True, exist_ok=True)
        return folder


def field_value(pod: JsonObj, field_path: str) -> str:
    """The downward-API value of ``field_path`` for ``pod``."""
    meta, spec = pod["metadata"], pod["spec"]
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": POD_IP,
        "status.hostIP": POD_IP,
    }
    if field_path in simple:
        return str(simple[field_path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"fieldRef {field_path!r} is not supported by the test kubelet")


_CLUSTER_NAME = re.compile(
    # Not inside a word or a file path: after a '/' only when it is a URL's '//'.
    r"(?<![A-Za-z0-9._-])(?<![^/]/)(?<!^/)"
    r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.svc(\.cluster\.local)?(?![A-Za-z0-9.-])"
)


def cluster_dns(text: str) -> str:
    """``text`` with cluster DNS names (``*.svc``, ``*.svc.cluster.local``) resolved to POD_IP."""
    return _CLUSTER_NAME.sub(POD_IP, text)


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones kept, $$ escapes $."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def mount_rewriter(container: JsonObj, folders: Mapping[str, Path]) -> Callable[[str], str]:
    """A function that replaces each volumeMount path (as a path prefix) with its folder.

    A mount path only matches where a path starts (not inside ``/mnt/data`` for ``/data``) and
    only up to a component boundary; the longest mount path wins for nested mounts.
    """
    targets = {}
    for mount in container.get("volumeMounts") or []:
        folder = folders.get(mount["name"])
        if folder is None:
            raise ConfigError(f"volumeMount {mount['name']!r} names no volume of the pod")
        if mount.get("subPath"):
            folder = folder / mount["subPath"]
            folder.mkdir(parents=True, exist_ok=True)
        targets[mount["mountPath"].rstrip("/") or "/"] = str(folder)
    if not targets:
        return lambda text: text
    alternatives = "|".join(re.escape(p) for p in sorted(targets, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.\-/])({alternatives})(?=/|$|[^\w.\-])")
    return lambda text: pattern.sub(lambda m: targets[m.group(1)], text)


def _project(data: Mapping[str, bytes], ref: JsonObj) -> dict[str, bytes]:
    """Secret/ConfigMap keys as files: all keys, or only ``items`` (key -> path) when given."""
    items = ref.get("items")
    if not items:
        return dict(data)
    files = {}
    for item in items:
        if item["key"] not in data:
            if ref.get("optional"):
                continue
            raise ConfigError(f"couldn't find key {item['key']} in {ref.get('name', '')}")
        files[item["path"]] = data[item["key"]]
    return files


def _write_file(folder: Path, relpath: str, content: bytes) -> None:
    target = (folder / relpath).resolve()
    if folder.resolve() not in target.parents:
        raise ConfigError(f"volume item path {relpath!r} leaves its volume")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
