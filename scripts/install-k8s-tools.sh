#!/usr/bin/env bash
# Builds the real Kubernetes tools the k8s-real tests and the Helm chart tests use —
# etcd, kube-apiserver, kubectl and helm — from the Go module proxy, at the versions pinned in
# scripts/k8s-tools/*/go.mod and go.sum, and installs them into /usr/local/bin (or $K8S_TOOLS_BIN).
# Idempotent: a stamp beside the binaries records a hash of the pinned module files, and a
# second run with the same pins and all four binaries present does nothing. Go's module and
# build caches are reused, so a rebuild after a pin change only compiles what changed.
# On a fresh 2-core machine the first build takes about 15-20 minutes (kube-apiserver is most of it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/scripts/k8s-tools"
bin=${K8S_TOOLS_BIN:-/usr/local/bin}
stamp="$bin/.memzone-k8s-tools.stamp"

# Go 1.26 from /usr/local/go: Debian's golang-go is too old for these modules. The toolchain
# stays local, so a go.mod can never make this script fetch another one; no VCS stamp, so a
# checkout without git metadata builds the same binaries.
export PATH="/usr/local/go/bin:$PATH" GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
if ! go version 2>/dev/null | grep -q 'go1\.2[6-9]'; then
  echo "install-k8s-tools: needs Go >= 1.26 at /usr/local/go/bin/go (found: $(go version 2>&1))" >&2
  exit 1
fi

self="$root/scripts/$(basename "$0")"
want=$(cd "$tools" && cat "$self" */go.mod */go.sum */*.go | sha256sum | cut -d' ' -f1)
have_all=1
for b in etcd kube-apiserver kubectl helm; do [[ -x "$bin/$b" ]] || have_all=0; done
if ((have_all)) && [[ -f "$stamp" ]] && [[ $(cat "$stamp") == "$want" ]]; then
  echo "install-k8s-tools: pinned etcd, kube-apiserver, kubectl and helm already in $bin"
  exit 0
fi

# The version a module is pinned at, read from the go.mod that pins it.
pinned() { go -C "$tools/$1" list -m -f '{{.Version}}' "$2"; }
k8s_version=$(pinned kubernetes k8s.io/kubernetes)
helm_version=$(pinned kubernetes helm.sh/helm/v4)
etcd_version=$(pinned etcd go.etcd.io/etcd/server/v3)

# What the upstream Makefiles stamp in with -X, so `kubectl version`, the API server's /version
# and `helm version` report the pinned releases rather than v0.0.0-master.
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
helm_ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version"
helm_ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
jobs=${K8S_TOOLS_JOBS:-2}
build() { # dir ldflags package...
  local dir=$1 ldflags=$2
  shift 2
  echo "install-k8s-tools: building $* ($(date -u +%H:%M:%S))"
  go -C "$tools/$dir" build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$out/" "$@"
}
SECONDS=0
build etcd "-s -w" .
build kubernetes "$helm_ldflags" helm.sh/helm/v4/cmd/helm
build kubernetes "$k8s_ldflags" k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-apiserver

for b in etcd kube-apiserver kubectl helm; do install -m 0755 "$out/$b" "$bin/$b"; done
echo "$want" >"$stamp"
echo "install-k8s-tools: etcd $etcd_version, kube-apiserver and kubectl $k8s_version," \
  "helm $helm_version in $bin (built in ${SECONDS}s)"
