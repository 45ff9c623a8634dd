#!/usr/bin/env bash
# Forwarding rate of the live data plane against the kernel, on this
# machine's lab topology (fastables lab: container -> router -> internet over
# veth). trafgen in the container sends 64-byte UDP frames (one flow,
# 172.18.0.2:33894 -> 8.8.8.8:9) as fast as it can for DURATION seconds; it
# pins itself to CPU 0. The router NATs them with the seed rules
# (MASQUERADE); the internet side counts what arrives on up0 (and drops it in
# raw PREROUTING, so that no ICMP comes back). The router is
#   (a) the Linux kernel with the same rules (lab.sh KERNEL_ROUTER=1); over
#       veth it forwards in the sender's softirq, on CPU 0 with trafgen (RPS
#       to CPU 1 on the router's docker0 was tried: delivery collapsed to a
#       few hundred packets per second, so it is not used);
#   (b) `fastables run` (release build), its worker pinned to CPU 1, generic
#       XDP in copy mode (what veth offers: the generic XDP receive and the
#       copy into the UMEM still run in the sender's softirq on CPU 0).
# RUNS (default 3) alternating runs of each; prints every run, the medians
# and their ratio. Root; the lab's packages (.ci/setup) and netsniff-ng.
#
# Usage: [RUNS=N] perf/live-forward.sh [DURATION]      (default 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-5}"
# shellcheck source=perf/lib.sh
. perf/lib.sh
lab_setup fp-

rx() { ip netns exec fp-net cat /sys/class/net/up0/statistics/rx_packets; }

measure() {
    local mode="$1"
    if [[ "$mode" == kernel ]]; then
        KERNEL_ROUTER=1 LAB_DIR="$work/lab" LAB_SERVERS=http bash "$lab" up >"$work/up.log" 2>&1

    else
        FASTABLES="$bin" LAB_DIR="$work/lab" LAB_SERVERS=http LAB_CORE=1 bash "$lab" up >"$work/up.log" 2>&1
    fi
    ip netns exec fp-net iptables -t raw -A PREROUTING -p udp --dport 9 -j DROP
    local before after
    before="$(rx)"
    ip netns exec fp-ctr timeout "$duration" \
        trafgen --dev eth0 --conf "$work/udp.cfg" --cpus 1 >/dev/null 2>&1 || true
    sleep 0.5
    after="$(rx)"
    if [[ "$mode" != kernel ]]; then
        "$bin" stats --socket "$work/lab/fastables.sock" >"$work/stats-$mode.txt" 2>&1 || true
    fi
    LAB_DIR="$work/lab" bash "$lab" down >/dev/null 2>&1
    echo $(( (after - before) / duration ))
}

runs="${RUNS:-3}"
ks=() fs=()
for _ in $(seq "$runs"); do
    ks+=("$(measure kernel)")
    fs+=("$(measure fastables)")
done
k="$(median "${ks[@]}")"
f="$(median "${fs[@]}")"
echo "runs: kernel ${ks[*]}; fastables ${fs[*]} (median of each below)"
echo "machine: nproc $(nproc), $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
printf '%-28s %12s\n' "router" "delivered pps"
printf '%-28s %12d\n' "kernel (iptables, seed nat)" "$k"
printf '%-28s %12d\n' "fastables run (generic XDP)" "$f"
awk -v f="$f" -v k="$k" 'BEGIN { if (k > 0) printf "ratio fastables/kernel: %.2f\n", f / k }'
