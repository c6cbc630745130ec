#!/usr/bin/env bash
# Renders operator/install.yaml, the plain `kubectl apply -f` install, from the Helm chart with its
# default values, so the two install paths are one source. Helm does not create the release
# namespace, so the manifest starts with it.
#
#   scripts/render-install-manifest.sh           rewrite operator/install.yaml
#   scripts/render-install-manifest.sh --check   exit 1 if operator/install.yaml has drifted
#
# helm is $HELM if set, else the one scripts/build-k8s-tools.sh builds.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/operator/install.yaml"
release=schedsearch
namespace=schedsearch-system
helm="${HELM:-$(bash "$here/scripts/build-k8s-tools.sh")/helm}"
# Render for the Kubernetes release the project pins and tests against (helm's built-in default
# is an old release the chart's kubeVersion refuses).
kube_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2 }' "$here/tools/k8s/go.mod" | head -n1)"

render() {
  cat <<HEADER
# schedsearch: the operator (namespace schedsearch-system), its CRDs, cluster-wide RBAC, Service
# and Grafana dashboard.
# GENERATED from charts/schedsearch with its default values by scripts/render-install-manifest.sh;
# edit the chart, not this file. Install: kubectl apply -f operator/install.yaml
---
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    app.kubernetes.io/part-of: schedsearch
    # The controller pod meets the "restricted" Pod Security Standard; keep it that way.
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
HEADER
  "$helm" template "$release" "$here/charts/schedsearch" --namespace "$namespace" --skip-tests \
    --kube-version "$kube_version"
}

case "${1:-}" in
  --check)
    if ! diff -u "$out" <(render) >&2; then
      echo "operator/install.yaml is out of date: run scripts/render-install-manifest.sh" >&2
      exit 1
    fi
    ;;
  "")
    render >"$out.tmp" && mv "$out.tmp" "$out"
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
