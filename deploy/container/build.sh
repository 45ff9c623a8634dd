#!/usr/bin/env bash
# Builds the container image localhost/fastables:<version> with buildah:
#
#   deploy/container/build.sh [DEB]     (root; default: what deploy/deb/build.sh builds)
#
# The base is $BASE when set (e.g. docker.io/library/debian:12-slim, when a
# registry can be reached); otherwise a Debian 12 minbase root made by
# debootstrap (deploy/rootfs.sh) and committed as localhost/debian:12-minbase.
# Builds with chroot isolation (no OCI runtime needed), then runs
# `fastables --version` in the image and prints the image's name.
# Debian packages: buildah, debootstrap.
set -euo pipefail

cd "$(dirname "$0")/../.."
export BUILDAH_ISOLATION=chroot
deb="${1:-}"
if [[ -z "$deb" ]]; then
    deb="$(deploy/deb/build.sh)"
fi
context="$(dirname "$(realpath "$deb")")"
version="$(dpkg-deb -f "$deb" Version)"
image="localhost/fastables:$version"

# untag_old NAME: removes the image NAME named before it is made again.
untag_old() {
    buildah rmi "$1" >/dev/null 2>&1 || true
}

base="${BASE:-}"
if [[ -z "$base" ]]; then
    base=localhost/debian:12-minbase
    untag_old "$base"
    tar="$(deploy/rootfs.sh)"
    ctr="$(buildah from scratch)"
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    buildah add --quiet "$ctr" "$tar" / >/dev/null
    buildah config --cmd /bin/bash "$ctr"
    buildah commit --quiet --rm "$ctr" "$base" >/dev/null
    trap - EXIT
fi

untag_old "$image"
buildah build --quiet --layers=false --build-arg BASE="$base" \
    --build-arg DEB="$(basename "$deb")" -f deploy/container/Containerfile \
    -t "$image" "$context" >&2

ctr="$(buildah from "$image")"
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
got="$(buildah run "$ctr" -- fastables --version)"
if [[ "$got" != "fastables $version" ]]; then
    echo "fastables --version in $image printed '$got', not 'fastables $version'" >&2
    exit 1
fi
echo "$image"
