#!/usr/bin/env bash
# Prints the Debian packages that provide the shared libraries the built binaries load
# (ldd -> dpkg -S), one per line, sorted: what the runtime image must install.
#   scripts/runtime-packages.sh build/proxy/memzone-proxy build/controlplane/memzone-controller
set -euo pipefail
for binary in "$@"; do
  ldd "$binary" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  # usrmerge: /lib is /usr/lib, and dpkg knows each file under one of the two names.
  for candidate in "$lib" "/usr$lib" "$(readlink -f "$lib")" "/usr$(readlink -f "$lib")"; do
    if pkg=$(dpkg -S "$candidate" 2>/dev/null); then
      echo "${pkg%%:*}"
      break
    fi
  done
done | sed 's/, .*//' | sort -u
