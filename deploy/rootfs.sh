#!/usr/bin/env bash
# Prints the path of a clean Debian 12 (bookworm) root file system, as a tar
# archive: `debootstrap --variant=minbase` the first time, then cached as
# target/debootstrap/bookworm-minbase.tar (remove it to make it again; the
# package test reinstalls from the archive each run, so the root it tests
# on is always clean). Used by deploy/deb/test-install.sh (the clean Debian
# 12 the package is installed on) and deploy/container/build.sh (the
# image's base when no container registry can be reached).
#
# Usage: deploy/rootfs.sh     (root; Debian packages: debootstrap)
# Environment: DEBIAN_MIRROR  (default http://deb.debian.org/debian)
set -euo pipefail

cd "$(dirname "$0")/.."
cache=target/debootstrap
tar="$cache/bookworm-minbase.tar"
mkdir -p "$cache"
# One debootstrap at a time (the package and image tests may both ask).
exec 9>"$cache/.lock"
flock 9
if [[ ! -f "$tar" ]]; then
    work="$(mktemp -d "$cache/root.XXXXXX")"
    trap 'rm -rf "$work" "$tar.tmp"' EXIT
    debootstrap --variant=minbase bookworm "$work" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 ||
        { cat "$cache/debootstrap.log" >&2; exit 1; }
    # debootstrap leaves its downloads behind; the root is what is wanted.
    rm -f "$work"/var/cache/apt/archives/*.deb
    tar -C "$work" --numeric-owner -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
fi
echo "$PWD/$tar"
