#!/usr/bin/env bash
# The seed demo. As root on a fresh Debian machine: installs what is missing
# (.ci/setup), builds fastables, then
#
#   ./demo.sh           the live demo: `fastables lab demo` builds the seed
#                       topology in network namespaces (a container, the
#                       router running `fastables run` on AF_XDP, an internet
#                       with HTTP and DNS servers), runs curl, a DNS query and
#                       ping from the container, shows what the servers saw
#                       (the NATed source), the ruleset counters and the
#                       conntrack table of the running instance, and removes
#                       the lab again (also on failure or Ctrl-C);
#   ./demo.sh offline   the offline demo: builds the demo's input pcaps
#                       (target/demo/in/*.pcap), runs `fastables sim` over them
#                       and shows what came in, what went out
#                       (target/demo/<iface>.pcap, decoded with tcpdump), the
#                       connection table in `conntrack -L` format and the rule
#                       counters.
set -euo pipefail
cd "$(dirname "$0")"

.ci/setup
if [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

if [[ "${1:-live}" == live ]]; then
    cargo build -q --release -p fastables-cli --bin fastables
    exec target/release/fastables lab demo
elif [[ "$1" != offline ]]; then
    echo "usage: $0 [live|offline]" >&2
    exit 2
fi

out=target/demo
rm -rf "$out"
mkdir -p "$out/in"

cargo build -q -p fastables-cli --bin fastables --example seed_pcaps
cargo run -q -p fastables-cli --example seed_pcaps -- "$out/in"
fastables() { cargo run -q -p fastables-cli --bin fastables -- "$@"; }

show() {
    echo
    echo "== $1"
    tcpdump -n -v -r "$2" 2>/dev/null | sed 's/^/   /'
}

echo "== fastables check -c demo/fastables.toml"
fastables check -c demo/fastables.toml
show "in on eth0 ($out/in/eth0.pcap)" "$out/in/eth0.pcap"
show "in on docker0 ($out/in/docker0.pcap)" "$out/in/docker0.pcap"
echo
echo "== fastables sim -c demo/fastables.toml --in eth0=... --in docker0=... --out-dir $out"
fastables sim -c demo/fastables.toml \
    --in "eth0=$out/in/eth0.pcap" --in "docker0=$out/in/docker0.pcap" \
    --out-dir "$out" --save-counters "$out/counters.v4" --conntrack
show "out of eth0 ($out/eth0.pcap)" "$out/eth0.pcap"
show "out of docker0 ($out/docker0.pcap)" "$out/docker0.pcap"
echo
echo "== rule counters after the run ($out/counters.v4, iptables-save -c format)"
cat "$out/counters.v4"
