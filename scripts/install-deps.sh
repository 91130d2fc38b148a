#!/usr/bin/env bash
# Installs every Debian bookworm package that building, testing, benchmarking
# and the demo need. Idempotent: packages already present are not touched and
# `apt-get update` runs at most once per invocation, only when something is
# missing.
#   scripts/install-deps.sh          everything
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
  # chart rendering test (Go text/template + sprig, Helm's engine)
  golang-go golang-github-masterminds-sprig-dev
  # the image test: build the Dockerfile without a Docker engine (scripts/image.sh)
  podman debootstrap
)
case "${1:-all}" in
  all) ;;
  build) packages=("${build_packages[@]}") ;;
  *)
    echo "usage: $0 [all|build]" >&2
    exit 2
    ;;
esac

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
