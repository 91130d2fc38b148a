#!/usr/bin/env bash
# Builds the Dockerfile's image. With a working Docker engine: `docker build`. Without one
# (CI, this VM): Debian's podman with `--isolation chroot` (no OCI runtime needed to build),
# from debian:bookworm / debian:bookworm-slim bases made locally with debootstrap, since no
# image registry is reachable here (Debian's package mirror is).
#
#   scripts/image.sh                    build; prints the image's name and size
#   scripts/image.sh rootfs DIR         build, then unpack the image's filesystem into DIR
#                                       (run it with `chroot --userspec=10001:10001 DIR ...`:
#                                       the OCI runtime cannot start containers in every VM)
#   scripts/image.sh size               the built image's size in bytes
#   scripts/image.sh inspect            the built image's config (user, entrypoint, ...) as JSON
#
# Environment:
#   MEMZONE_IMAGE           image name (default localhost/memzone:dev)
#   MEMZONE_IMAGE_CACHE     cache directory, outside the source tree (default
#                           /var/cache/memzone-image): the debootstrap'd base as a tarball,
#                           the .debs it fetched, podman's storage with its layer cache and the
#                           build stage's ccache, so a second build only redoes what changed
#   MEMZONE_IMAGE_STORAGE_DRIVER  podman storage driver (default overlay; vfs where overlay
#                           cannot mount, e.g. inside a container)
#   MEMZONE_IMAGE_BASE_DAYS rebuild the base when its tarball is older (default 7: security updates)
#   MEMZONE_IMAGE_ENGINE    docker | podman (default: docker when `docker info` works)
#   DEBIAN_MIRROR           default http://deb.debian.org/debian
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image=${MEMZONE_IMAGE:-localhost/memzone:dev}
cache=${MEMZONE_IMAGE_CACHE:-/var/cache/memzone-image}
base_days=${MEMZONE_IMAGE_BASE_DAYS:-7}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

say() { echo "image.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

engine=${MEMZONE_IMAGE_ENGINE:-}
if [[ -z $engine ]]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker; else engine=podman; fi
fi

# podman keeps its images and layer cache in our cache directory, away from any other user of
# podman on the machine; the run root (locks, mounts) is on /run, cleared at boot.
podman_() {
  # TMPDIR: where buildah keeps RUN --mount=type=cache directories (the build stage's ccache).
  TMPDIR="$cache/tmp" podman --root "$cache/storage" --runroot /run/memzone-image \
    --storage-driver "${MEMZONE_IMAGE_STORAGE_DRIVER:-overlay}" "$@"
}

# The two bases, made the way Debian's official images are (debuerreotype): minbase, deb822
# sources with updates and security, apt told not to keep caches or translations; -slim also
# drops documentation, manuals and locales, and tells dpkg to never install them again.
apt_config() {
  local dir=$1
  rm -f "$dir/etc/apt/sources.list"
  cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${mirror}
Suites: ${suite} ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: ${suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
// Images keep no package cache: downloaded .debs and apt's binary caches go after each run.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$dir/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$dir/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$dir/etc/apt/apt.conf.d/docker-autoremove-suggests"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
  rm -f "$dir"/var/log/*.log "$dir"/var/log/apt/* "$dir/etc/hostname" "$dir/etc/resolv.conf"
  : >"$dir/etc/machine-id"
}

slim() {
  local dir=$1
  cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# Documentation, manuals and translations are not installed (licences are kept).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$dir"/usr/share/{man,groff,info,lintian,linda}/*
  find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
}

make_bases() {
  local tarball=$cache/debian-$suite-minbase.tar
  if [[ -f $tarball && -n $(find "$tarball" -mtime -"$base_days") ]] &&
    podman_ image exists "docker.io/library/debian:$suite" &&
    podman_ image exists "docker.io/library/debian:$suite-slim"; then
    return
  fi
  if [[ ! -f $tarball || -z $(find "$tarball" -mtime -"$base_days") ]]; then
    command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/install-deps.sh installs it)"
    local dir=$cache/rootfs.tmp
    rm -rf "$dir"
    mkdir -p "$cache/debs"
    say "debootstrap --variant=minbase $suite from $mirror"
    debootstrap --variant=minbase --cache-dir="$cache/debs" "$suite" "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      die "debootstrap failed; see $cache/debootstrap.log"
    apt_config "$dir"
    tar -C "$dir" --numeric-owner --xattrs -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$dir"
  fi
  local dir=$cache/slim.tmp
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -C "$dir" --numeric-owner -xf "$tarball"
  slim "$dir"
  say "importing debian:$suite and debian:$suite-slim"
  podman_ import --change 'CMD ["bash"]' "$tarball" "docker.io/library/debian:$suite" >/dev/null
  tar -C "$dir" --numeric-owner -cf - . |
    podman_ import --change 'CMD ["bash"]' - "docker.io/library/debian:$suite-slim" >/dev/null
  rm -rf "$dir"
}

build() {
  if [[ $engine == docker ]]; then
    docker build -t "$image" "$root"
    return
  fi
  make_bases
  say "building $image (podman, --isolation chroot)"
  # --pull=never: the bases are local; --layers: reuse every step whose inputs did not change.
  # The build stage is tagged too, so that pruning the images earlier builds left behind
  # (they would pile up in the cache) keeps its layers: the package install is reused until
  # scripts/install-deps.sh changes, the compile until the sources do.
  local args=(--isolation chroot --pull=never --layers -f "$root/Dockerfile")
  podman_ build "${args[@]}" --target build -t "$image-build" "$root" >&2
  podman_ build "${args[@]}" -t "$image" "$root" >&2
  podman_ image prune -f >/dev/null
}

inspect_() {
  if [[ $engine == docker ]]; then
    docker image inspect --format "$1" "$image"
  else
    podman_ image inspect --format "$1" "$image"
  fi
}
size() { inspect_ '{{.Size}}'; }

rootfs() {
  local dir=$1 cli=podman_ container
  [[ $engine == docker ]] && cli=docker
  mkdir -p "$dir"
  container=$($cli create "$image")
  trap '$cli rm -f "$container" >/dev/null' RETURN
  $cli export "$container" | tar -C "$dir" --numeric-owner -xf -
}

if [[ $engine == podman ]]; then
  command -v podman >/dev/null || die "no Docker engine and no podman (scripts/install-deps.sh installs podman)"
  [[ $(id -u) -eq 0 ]] || die "without a Docker engine this needs root (debootstrap, chroot isolation, the cache)"
  # One build at a time per cache: builds share the bases, the layer cache and the image name.
  mkdir -p "$cache/tmp"
  exec 9>"$cache/lock"
  flock 9
fi

case "${1:-build}" in
  build)
    build
    bytes=$(size)
    echo "$image $((bytes / 1000000)) MB"
    ;;
  rootfs)
    [[ $# -eq 2 ]] || die "usage: $0 rootfs DIR"
    build
    rootfs "$2"
    ;;
  size) size ;;
  inspect) inspect_ '{{json .Config}}' ;;
  *) die "usage: $0 [build | rootfs DIR | size | inspect]" ;;
esac
