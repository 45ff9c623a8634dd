#!/usr/bin/env bash
# Installs the package on a clean Debian 12 and uses it there:
#
#   deploy/deb/test-install.sh [DEB]     (root; default: what build.sh builds)
#
# 1. A fresh bookworm minbase root (deploy/rootfs.sh's cached archive,
#    unpacked anew into target/deb/clean-root each run).
# 2. In a chroot: `dpkg -i DEB`, which stops at the missing dependencies
#    (libelf1 is not in minbase), `apt-get -f install` from Debian's mirror,
#    then man-db.
# 3. There: `fastables --version`, `man fastables`, `man fastables-run`,
#    `fastables check -c /etc/fastables/fastables.toml` and the bash
#    completion.
# 4. With LAB_DEMO=1: the installed binary runs `fastables lab demo` from the
#    host (the lab needs the host's network namespaces and tools), in
#    namespaces prefixed flpkg- (LAB_PREFIX) so that it leaves the default
#    lab alone. Run it under the namespace lock of the tests:
#    `flock /tmp/fastables-ns.lock`.
#
# Prints one line per step, the whole output of a step that fails.
# Debian packages: debootstrap (deploy/rootfs.sh), util-linux (unshare).
set -euo pipefail

cd "$(dirname "$0")/../.."
deb="${1:-}"
if [[ -z "$deb" ]]; then
    deb="$(deploy/deb/build.sh)"
fi
deb="$(realpath "$deb")"
tar="$(deploy/rootfs.sh)"
root="$PWD/target/deb/clean-root"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# step NAME CMD...: runs CMD with its output captured; shows it only on failure.
step() {
    local name="$1"
    shift
    if "$@" >"$log" 2>&1 </dev/null; then
        echo "ok: $name"
    else
        local rc=$?
        echo "FAILED: $name (exit $rc)" >&2
        cat "$log" >&2
        exit "$rc"
    fi
}

# in_root CMD: runs the shell command CMD in the chroot, with its own /proc
# in a private mount namespace (nothing stays mounted under the root).
in_root() {
    unshare --mount --fork sh -c '
        mount --make-rprivate / && mount -t proc proc "$1/proc" &&
        exec chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 HOME=/root sh -ec "$2"' \
        in_root "$root" "$1"
}

fresh_root() {
    if grep -q " $root[/ ]" /proc/self/mountinfo; then
        echo "$root has something mounted; not removing it" >&2
        return 1
    fi
    rm -rf "$root"
    mkdir -p "$root"
    tar -C "$root" -xf "$tar"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    cp "$deb" "$root/tmp/"
}

step "a clean Debian $(tar -xOf "$tar" ./etc/debian_version) in $root" fresh_root
step "apt-get update" in_root 'apt-get update -q'
name="$(basename "$deb")"
# With a sysusers file, postinst needs systemd-sysusers, as on a systemd host.
sysusers=""
contents="$(dpkg-deb -c "$deb")"
if grep -q ' ./usr/lib/sysusers.d/fastables.conf$' <<<"$contents"; then
    sysusers="apt-get install -y -q --no-install-recommends systemd-standalone-sysusers && "
fi
step "dpkg -i $name stops at the missing dependencies" \
    in_root "$sysusers! dpkg -i /tmp/$name && dpkg-query -W -f='\${db:Status-Abbrev}' fastables | grep -q '^iU'"
step "apt-get -f install (brings $(dpkg-deb -f "$deb" Depends))" \
    in_root 'apt-get -f install -y -q --no-install-recommends && dpkg-query -W fastables libelf1'
step "apt-get install man-db" in_root 'apt-get install -y -q --no-install-recommends man-db'
if [[ -n "$sysusers" ]]; then
    step "the package's sysusers file made the fastables user" in_root 'getent passwd fastables'
fi

check() {
    local name="$1" cmd="$2" want="$3"
    if in_root "$cmd" >"$log" 2>&1 && grep -q -e "$want" "$log"; then
        echo "ok: $name: $(grep -m1 -e "$want" "$log" | sed 's/^ *//')"
    else
        echo "FAILED: $name: \`$cmd\` does not print \`$want\`:" >&2
        cat "$log" >&2
        exit 1
    fi
}
version="$(dpkg-deb -f "$deb" Version)"
check "fastables --version" 'fastables --version' "^fastables $version\$"
check "man fastables" 'MANWIDTH=80 man fastables 2>&1' 'Poll-mode IPv4 forwarder with Linux netfilter semantics'
check "man fastables-run" 'MANWIDTH=80 man fastables-run 2>&1' 'fastables run .*--config'
check "fastables check" 'fastables check -c /etc/fastables/fastables.toml' '^ok: '
# shellcheck disable=SC2016
complete_con='. /usr/share/bash-completion/completions/fastables
COMP_WORDS=(fastables con); COMP_CWORD=1; _fastables fastables con fastables
echo "${COMPREPLY[@]}"'
check "bash completion of \`fastables con\`" "bash -c '$complete_con'" '^conntrack$'

if [[ "${LAB_DEMO:-0}" == 1 ]]; then
    dir="$PWD/target/deb/lab"
    echo "run: $root/usr/sbin/fastables lab demo --dir $dir (LAB_PREFIX=flpkg-)"
    LAB_PREFIX=flpkg- "$root/usr/sbin/fastables" lab demo --dir "$dir"
fi
