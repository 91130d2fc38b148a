#!/usr/bin/env bash
# The whole test suite, from a fresh Debian bookworm machine: installs what is missing,
# builds, and runs every CTest test twice — once on the release build, once on a clang
# ASan+UBSan build, which also runs the libFuzzer targets for a short, bounded time.
#   MEMZONE_SKIP_SANITIZE=1 scripts/test.sh   release build only (quicker local loop)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"

"$root/scripts/build.sh" release
ctest --test-dir "$root/build" --output-on-failure -j 2 --timeout 900

if [[ "${MEMZONE_SKIP_SANITIZE:-0}" != 1 ]]; then
  "$root/scripts/build.sh" sanitize
  # Leak checks on: the proxy must free everything on a clean exit. A small quarantine
  # keeps memory-bound tests meaningful under ASan.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=32 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$root/build-sanitize" --output-on-failure -j 2 --timeout 900
fi
echo "memzone: all tests passed"
