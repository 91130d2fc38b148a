#!/usr/bin/env bash
# Installs every Debian bookworm package that building, testing, benchmarking
# and the demo need, then (all only) the pinned Kubernetes tools the tests use:
# etcd, kube-apiserver, kubectl and helm, built from source by
# scripts/install-k8s-tools.sh. Idempotent: packages already present are not
# touched, `apt-get update` runs at most once per invocation, only when
# something is missing, and tools already built at the pinned versions are kept.
#   scripts/install-deps.sh          everything
#   scripts/install-deps.sh packages every Debian package, not the Kubernetes tools (the demo)
#   scripts/install-deps.sh build    only what building the binaries needs (the image's build stage)
set -euo pipefail

build_packages=(
  build-essential cmake pkg-config
  libevent-dev libyaml-cpp-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  prometheus-cpp-dev libcurl4-openssl-dev nlohmann-json3-dev libssl-dev
  ccache   # the image's build stage keeps its compiles in a cache mount
)
packages=(
  "${build_packages[@]}"
  # unit tests (libmemcached is the ketama reference)
  libgtest-dev libgmock-dev libmemcached-dev
  # fuzzing (libFuzzer ships with clang's runtime)
  clang libclang-rt-14-dev clang-format
  # integration tests, demo and benchmark
  memcached libmemcached-tools python3 python3-pymemcache python3-yaml python3-jsonschema python3-protobuf
  nutcracker prometheus iproute2 procps
  # benchmark plots (bench/run.py --hostile draws the RSS curve)
  python3-matplotlib
  # the image test: build the Dockerfile without a Docker engine (scripts/image.sh)
  podman debootstrap
)
case "${1:-all}" in
  all | packages) ;;
  build) packages=("${build_packages[@]}") ;;
  *)
    echo "usage: $0 [all|packages|build]" >&2
    exit 2
    ;;
esac

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The k8s-real and chart tests' tools (Go 1.26 from /usr/local/go; see the script).
if [[ "${1:-all}" == all ]]; then
  "${sudo_cmd[@]}" "$(dirname "$0")/install-k8s-tools.sh"
fi
