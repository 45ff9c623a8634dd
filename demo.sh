#!/usr/bin/env bash
# The offline seed demo: builds fastables, writes the demo's input pcaps
# (target/demo/in/*.pcap), checks demo/fastables.toml and demo/rules.v4, runs
# `fastables sim` over the inputs and shows what came in, what went out
# (target/demo/<iface>.pcap, decoded with tcpdump), the connection table in
# `conntrack -L` format (the container's DNS query MASQUERADEd out of eth0 and
# its answer translated back) and the rule counters.
#
# This is the offline data path only. The live demo (`fastables lab demo`,
# real hosts in network namespaces) needs the AF_XDP data plane, which is not
# implemented yet.
set -euo pipefail
cd "$(dirname "$0")"

.ci/setup
if [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
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
