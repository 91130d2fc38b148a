#!/usr/bin/env bash
# Configures and builds memzone.
#   scripts/build.sh                 release build in build/
#   scripts/build.sh sanitize        clang ASan+UBSan build with the libFuzzer targets in build-sanitize/
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)

case "${1:-release}" in
  release)
    cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$root/build" -j "$jobs"
    ;;
  sanitize)
    CC=clang CXX=clang++ cmake -S "$root" -B "$root/build-sanitize" \
      -DCMAKE_BUILD_TYPE=Debug -DMEMZONE_SANITIZE=ON -DMEMZONE_FUZZ=ON >/dev/null
    cmake --build "$root/build-sanitize" -j "$jobs"
    ;;
  *)
    echo "usage: $0 [release|sanitize]" >&2
    exit 2
    ;;
esac
