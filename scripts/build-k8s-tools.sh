#!/usr/bin/env bash
# Builds (once per machine) the binaries of the test Kubernetes cluster and prints their folder.
#
#   scripts/build-k8s-tools.sh               build if needed, print the bin dir
#   scripts/build-k8s-tools.sh --print-dir   print the bin dir without building
#   scripts/build-k8s-tools.sh --pin v1.X.Y  move tools/k8s to another Kubernetes release (then build)
#
# kube-apiserver, kube-controller-manager and kubectl come from the k8s.io/kubernetes module pinned
# in tools/k8s/go.mod; etcd from tools/etcd (the etcd release that Kubernetes tests against); helm
# from tools/helm. No prebuilt binary can be fetched on our machines, so everything is compiled
# from the Go module proxy. The result lives outside the work tree, in
# ${SCHEDSEARCH_CACHE:-$HOME/.cache/schedsearch}/k8s-<version>/bin, so fresh clones (CI) reuse it;
# a stamp keyed on the tools/ module files makes a change of pin (and only that) rebuild.
# Progress goes to stderr; stdout carries only the bin dir.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
tools="$here/tools"
cache="${SCHEDSEARCH_CACHE:-$HOME/.cache/schedsearch}"

die() { echo "build-k8s-tools: $*" >&2; exit 1; }

k8s_version() {
  # The one pin: the k8s.io/kubernetes requirement of tools/k8s/go.mod.
  awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ { print $2 } $1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' \
    "$tools/k8s/go.mod" | head -n1
}

staging_version() {
  # k8s.io/kubernetes v1.Y.Z publishes its staging modules (k8s.io/api, ...) as v0.Y.Z.
  echo "v0.${1#v1.}"
}

go_env() {
  # A module and build cache of our own: the download size is measurable and the machine-wide caches
  # of other projects are left alone. GOTOOLCHAIN=local: never fetch another Go toolchain.
  export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOTOOLCHAIN=local CGO_ENABLED=0
  export GOFLAGS="-mod=readonly -buildvcs=false"
}

check_replaces() {
  local version="$1" want bad
  want="$(staging_version "$version")"
  bad="$(awk -v want="$want" '$2 == "=>" && $1 ~ /^k8s\.io\// && $4 != want { print $1 " " $4 }' "$tools/k8s/go.mod")"
  [ -z "$bad" ] || die "tools/k8s/go.mod: k8s.io/kubernetes $version needs every staging replace at $want; found: $bad (run: $0 --pin $version)"
}

pin() {
  local version="$1" staging
  [[ "$version" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || die "--pin: expected a release such as v1.37.2, got '$version'"
  staging="$(staging_version "$version")"
  go_env
  (
    export GOFLAGS="-mod=mod -buildvcs=false"
    cd "$tools/k8s"
    go mod edit -require="k8s.io/kubernetes@$version"
    awk '$2 == "=>" && $1 ~ /^k8s\.io\// { print $1 }' go.mod | while read -r mod; do
      go mod edit -replace="$mod=$mod@$staging"
    done
    go mod tidy
  )
  echo "build-k8s-tools: pinned k8s.io/kubernetes $version; check the etcd version in tools/etcd/go.mod" \
    "against hack/lib/etcd.sh of that release" >&2
}

ldflags() {
  # The same -X flags as Kubernetes' hack/lib/version.sh, so discovery and `kubectl version` report
  # the real release. The build date is the release's commit time: reproducible across machines.
  local version="$1" date minor flags=() pkg
  date="$(cd "$tools/k8s" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"
  minor="${version#v1.}"
  minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=("-X '$pkg.gitVersion=$version'" "-X '$pkg.gitMajor=1'" "-X '$pkg.gitMinor=$minor'"
      "-X '$pkg.gitTreeState=clean'" "-X '$pkg.buildDate=$date'")
  done
  echo "-s -w ${flags[*]}"
}

helm_ldflags() {
  # `helm version` reports the pinned release rather than its source tree's "vX.Y" default. As in
  # helm's own release build, the Kubernetes version `helm template`/`lint` assume without
  # --kube-version is that of the client-go helm is built with; the source default (v1.20) fails
  # the chart's kubeVersion.
  local version client_go minor pkg flags
  version="$(cd "$tools/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
  client_go="$(cd "$tools/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)"
  minor="${client_go#v0.}"
  minor="${minor%%.*}"
  flags="-s -w -X 'helm.sh/helm/v3/internal/version.version=$version'"
  flags+=" -X 'helm.sh/helm/v3/internal/version.gitTreeState=clean'"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags+=" -X '$pkg.k8sVersionMajor=1' -X '$pkg.k8sVersionMinor=$minor'"
  done
  echo "$flags"
}

build_one() {
  # build_one MODULE_DIR PACKAGE OUTPUT [LDFLAGS]
  local start=$SECONDS
  (cd "$1" && go build -trimpath -ldflags "${4:--s -w}" -o "$3.tmp" "$2")
  mv "$3.tmp" "$3"
  echo "build-k8s-tools: built $(basename "$3") in $((SECONDS - start))s" >&2
}

stamp_key() {
  cat "$here/scripts/build-k8s-tools.sh" "$tools"/k8s/go.mod "$tools"/k8s/go.sum "$tools"/etcd/go.mod "$tools"/etcd/go.sum \
    "$tools"/etcd/main.go "$tools"/helm/go.mod "$tools"/helm/go.sum | sha256sum | cut -c1-16
}

build_all() {
  local version="$1" dir="$2" bin="$2/bin" start=$SECONDS flags
  check_replaces "$version"
  go_env
  mkdir -p "$bin"
  echo "build-k8s-tools: building Kubernetes $version, etcd and helm into $bin" >&2
  echo "build-k8s-tools: (first run on this machine: about 30 CPU-minutes, 15+ minutes on 2 idle cores)" >&2
  (cd "$tools/k8s" && go mod download) >&2
  flags="$(ldflags "$version")"
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    build_one "$tools/k8s" "k8s.io/kubernetes/cmd/$cmd" "$bin/$cmd" "$flags"
  done
  build_one "$tools/etcd" . "$bin/etcd"
  build_one "$tools/helm" helm.sh/helm/v3/cmd/helm "$bin/helm" "$(helm_ldflags)"
  echo "build-k8s-tools: done in $((SECONDS - start))s; module downloads:" \
    "$(du -sh "$GOMODCACHE/cache/download" | cut -f1)" >&2
}

main() {
  local version dir key
  case "${1:-}" in
    --pin) [ $# -eq 2 ] || die "usage: $0 --pin v1.X.Y"; pin "$2"; shift 2 ;;
    --print-dir | "") ;;
    *) die "unknown argument '$1' (allowed: --print-dir, --pin v1.X.Y)" ;;
  esac
  version="$(k8s_version)"
  [ -n "$version" ] || die "tools/k8s/go.mod has no k8s.io/kubernetes v1.X.Y requirement"
  dir="$cache/k8s-$version"
  if [ "${1:-}" = "--print-dir" ]; then
    echo "$dir/bin"
    return
  fi
  key="$(stamp_key)"
  mkdir -p "$cache"
  # One build at a time per machine: a second caller waits, then finds the stamp and returns.
  exec 9>"$cache/k8s-build.lock"
  flock 9
  if [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$key" ]; then
    rm -f "$dir/.stamp"
    build_all "$version" "$dir"
    echo "$key" >"$dir/.stamp"
  fi
  echo "$dir/bin"
}

main "$@"
