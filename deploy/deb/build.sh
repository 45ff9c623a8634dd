#!/usr/bin/env bash
# Builds the Debian package of fastables:
#
#   deploy/deb/build.sh        ->  target/deb/fastables_<version>_<arch>.deb
#
# from this checkout, with no network but crates.io (cargo). The binary is
# `cargo build --release`; libbpf and libxdp are linked in statically (the
# libbpf-sys and libxdp-sys crates build them), so it needs only libc6,
# libelf1, zlib1g and libgcc-s1, which dpkg-shlibdeps turns into Depends.
#
# Contents:
#   /usr/sbin/fastables                       stripped
#   /usr/share/man/man8/fastables*.8.gz       `fastables generate man`
#   /usr/share/bash-completion/completions/fastables, zsh and fish
#                                             `fastables generate completions`
#   /etc/fastables/fastables.toml, rules.v4   deploy/etc/ (conffiles)
#   /usr/share/doc/fastables/                 copyright, changelog.gz and the
#                                             host tuning guide (deploy/README.md)
#   /lib/systemd/system/fastables.service     deploy/fastables.service, and the
#   /usr/lib/sysusers.d/fastables.conf        sysusers file of deploy/, when
#                                             they exist; the unit is registered
#                                             but neither enabled nor started
#                                             (it takes over the configured
#                                             interfaces: edit the config first)
#
# Lintian, when installed, checks the result (`LINTIAN=0` skips it).
# Debian packages: dpkg-dev (dpkg-shlibdeps), binutils (strip), gzip.
set -euo pipefail

cd "$(dirname "$0")/../.."
src=deploy/deb
pkg=fastables
version="$(cargo pkgid -p fastables-cli)"
version="${version##*@}"
arch="$(dpkg --print-architecture)"
changelog_version="$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$src/changelog")"
if [[ "$changelog_version" != "$version" ]]; then
    echo "deploy/deb/changelog is at $changelog_version, Cargo.toml at $version: add an entry" >&2
    exit 1
fi

cargo build --release --locked -p fastables-cli --bin fastables

out=target/deb
work="$out/work"
root="$work/debian/$pkg"
rm -rf "$work"
mkdir -p "$root/DEBIAN"

install -D -m 0755 target/release/fastables "$root/usr/sbin/fastables"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$root/usr/sbin/fastables"

# Man pages and completions, from the binary's own clap definition.
"$root/usr/sbin/fastables" generate man "$work/man"
install -d "$root/usr/share/man/man8"
for page in "$work"/man/*.8; do
    gzip -9n <"$page" >"$root/usr/share/man/man8/$(basename "$page").gz"
done
"$root/usr/sbin/fastables" generate completions "$work/completions"
install -D -m 0644 "$work/completions/fastables.bash" \
    "$root/usr/share/bash-completion/completions/fastables"
install -D -m 0644 "$work/completions/_fastables" \
    "$root/usr/share/zsh/vendor-completions/_fastables"
install -D -m 0644 "$work/completions/fastables.fish" \
    "$root/usr/share/fish/vendor_completions.d/fastables.fish"

install -D -m 0644 deploy/etc/fastables.toml "$root/etc/fastables/fastables.toml"
install -D -m 0644 deploy/etc/rules.v4 "$root/etc/fastables/rules.v4"

doc="$root/usr/share/doc/$pkg"
install -D -m 0644 "$src/copyright" "$doc/copyright"
gzip -9n <"$src/changelog" >"$doc/changelog.gz"
install -D -m 0644 deploy/README.md "$doc/README.md"

# The service: the unit and the sysusers file, when deploy/ has them.
unit=deploy/fastables.service
sysusers=""
for f in deploy/fastables.sysusers deploy/sysusers.d/fastables.conf deploy/fastables-sysusers.conf; do
    if [[ -f "$f" ]]; then
        sysusers="$f"
        break
    fi
done
scripts=()
if [[ -f "$unit" ]]; then
    exec_start="$(sed -n 's/^ExecStart=[-@:+!]*\([^ ]*\).*/\1/p' "$unit")"
    if [[ "$exec_start" != /usr/sbin/fastables ]]; then
        echo "$unit starts '$exec_start'; the package installs /usr/sbin/fastables" >&2
        exit 1
    fi
    install -D -m 0644 "$unit" "$root/lib/systemd/system/fastables.service"
    scripts=(postinst prerm postrm)
fi
if [[ -n "$sysusers" ]]; then
    install -D -m 0644 "$sysusers" "$root/usr/lib/sysusers.d/fastables.conf"
    scripts=(postinst prerm postrm)
fi
for s in "${scripts[@]}"; do
    install -m 0755 "$src/$s" "$root/DEBIAN/$s"
done

find "$root/etc" -type f -printf '/etc/%P\n' | sort >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"

# Depends: what the binary links to, as dpkg-shlibdeps reads it off the
# installed libraries' symbols files.
mkdir -p "$work/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$work/debian/control"
depends="$(cd "$work" && dpkg-shlibdeps -O -e"debian/$pkg/usr/sbin/fastables")"
depends="${depends#shlibs:Depends=}"

installed_size="$(du -k -s --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: fastables maintainers <maintainers@users.noreply.r-seed-18bdc08d.example>
Installed-Size: $installed_size
Depends: $depends
Recommends: ethtool
Section: net
Priority: optional
Description: poll-mode IPv4 forwarder with Linux netfilter semantics
 fastables forwards IPv4 over AF_XDP with the semantics of Linux's
 netfilter: iptables' raw, mangle, nat and filter tables (rules in
 iptables-save format), connection tracking and NAT, in run-to-completion
 workers, one per core. Its commands imitate iptables-save, iptables -L,
 iptables-restore and conntrack on the running instance.
EOF

deb="$out/${pkg}_${version}_${arch}.deb"
# File dates: the last commit's (set after cargo, whose C builds would see it).
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
if [[ "${LINTIAN:-1}" != 0 ]] && command -v lintian >/dev/null; then
    lintian --fail-on error,warning "$deb" >&2
fi
echo "$deb"
