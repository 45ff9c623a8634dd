#!/usr/bin/env bash
# Runs the lab demo with `fastables run` inside the image, started as
# deploy/README.md says (host network, the capabilities, /sys/fs/bpf, the
# configuration's directory), so that the image is shown to forward, NAT
# and answer its control socket with no more than that:
#
#   deploy/container/test-lab.sh [IMAGE]   (root; default: what build.sh builds)
#
# The lab (`fastables lab demo`, namespaces prefixed flctr-) starts the
# router's `fastables run` through a wrapper that runs the image with
# podman in the router's network namespace (--network host there); the
# other commands (list, trace, conntrack) are the host's binary
# (target/release/fastables, which deploy/deb/build.sh builds), talking to
# the container over the control socket in the shared lab directory. Run it
# under the namespace lock of the tests: `flock /tmp/fastables-ns.lock`.
#
# Two flags serve this machine, not the image: `--runtime runc` (crun
# refuses a host with cgroup v1 and v2 mounted side by side) and lower
# ulimits (podman's default of 1048576 open files needs CAP_SYS_RESOURCE).
# Debian packages: podman, runc, and the lab's (crates/cli/lab/lab.sh).
set -euo pipefail

cd "$(dirname "$0")/../.."
image="${1:-}"
if [[ -z "$image" ]]; then
    image="$(deploy/container/build.sh)"
fi
dir="$PWD/target/container/lab"
mkdir -p "$dir"

# The capabilities as the Containerfile's run command grants them.
caps="$(sed -n 's/.*--cap-add \([A-Z_,]*\).*/\1/p' deploy/container/Containerfile)"
[[ -n "$caps" ]] || { echo "no --cap-add in deploy/container/Containerfile" >&2; exit 1; }

# The router's fastables: `ip netns exec` gave it a mount namespace whose
# /sys has neither cgroups nor bpffs; podman runs from the host's.
wrapper="$dir/fastables"
cat >"$wrapper" <<EOS
#!/bin/sh
if [ "\$1" = run ]; then
    exec nsenter --mount=/proc/$$/ns/mnt -- podman run --rm --name fastables-lab \\
        --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \\
        --network host --cap-drop all --cap-add $caps \\
        -v /sys/fs/bpf:/sys/fs/bpf -v "$dir:$dir" "$image" "\$@"
fi
exec "$PWD/target/release/fastables" "\$@"
EOS
chmod +x "$wrapper"

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
podman rm -f fastables-lab >/dev/null 2>&1 || true
echo "run: fastables lab demo, with \`fastables run\` in $image"
FASTABLES="$wrapper" LAB_PREFIX=flctr- LAB_DIR="$dir" LAB_TIMEOUT=30 \
    bash crates/cli/lab/lab.sh demo
