#!/usr/bin/env bash
# The cost of observability on the forwarding rate: the lab (container ->
# fastables -> internet over veth), trafgen in the container sending 64-byte
# UDP frames (one flow, 172.18.0.2:33894 -> 8.8.8.8:9) as fast as it can on
# CPU 0 for DURATION seconds, fastables' worker on CPU 1; delivered = what
# up0 in the internet namespace receives (dropped there in raw PREROUTING).
# Three configurations of fastables, alternated RUNS times (default 3):
#   base     no metrics listener, no latency recording ([stats] latency = false;
#            the trace hooks are compiled in and idle: one branch per packet and table)
#   stats    the lab's [stats] (listen, interval 200 ms, latency recorded per
#            batch), /metrics scraped every 100 ms and `fastables stats` every
#            second during the run
#   trace    stats, plus a `fastables trace` set whose filter matches nothing
#            (-p tcp --dport 1): the filter is evaluated per packet
# Prints every run, the medians and the ratios to base.
# Root; the lab's packages (.ci/setup) and netsniff-ng.
#
# Usage: [RUNS=N] perf/overhead.sh [DURATION]      (default 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${1:-5}"
# shellcheck source=perf/lib.sh
. perf/lib.sh
lab_setup fo-

rx() { ip netns exec fo-net cat /sys/class/net/up0/statistics/rx_packets; }

measure() {
    local mode="$1" stats=on sock="$work/lab/fastables.sock"
    [[ "$mode" == base ]] && stats=off
    FASTABLES="$bin" LAB_DIR="$work/lab" LAB_SERVERS=http LAB_CORE=1 LAB_STATS="$stats" \
        bash "$lab" up >"$work/up.log" 2>&1
    ip netns exec fo-net iptables -t raw -A PREROUTING -p udp --dport 9 -j DROP
    local pids=()
    if [[ "$mode" != base ]]; then
        ( while :; do
            ip netns exec fo-rtr curl -s -o /dev/null http://127.0.0.1:9464/metrics || true
            sleep 0.1
        done ) &
        pids+=($!)
        ( while :; do
            ip netns exec fo-rtr "$bin" stats --socket "$sock" >/dev/null 2>&1 || true
            sleep 1
        done ) &
        pids+=($!)
    fi
    if [[ "$mode" == trace ]]; then
        ip netns exec fo-rtr "$bin" trace --socket "$sock" -p tcp --dport 1 >/dev/null 2>&1 &
        pids+=($!)
        sleep 0.3
    fi
    local before after
    before="$(rx)"
    ip netns exec fo-ctr timeout "$duration" \
        trafgen --dev eth0 --conf "$work/udp.cfg" --cpus 1 >/dev/null 2>&1 || true
    sleep 0.5
    after="$(rx)"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    LAB_DIR="$work/lab" bash "$lab" down >/dev/null 2>&1
    echo $(( (after - before) / duration ))
}

runs="${RUNS:-3}"
bs=() ss=() ts=()
for _ in $(seq "$runs"); do
    bs+=("$(measure base)")
    ss+=("$(measure stats)")
    ts+=("$(measure trace)")
done
b="$(median "${bs[@]}")"
s="$(median "${ss[@]}")"
t="$(median "${ts[@]}")"
echo "runs: base ${bs[*]}; stats ${ss[*]}; trace ${ts[*]} (median of each below)"
echo "machine: nproc $(nproc), $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %12s %8s\n' "fastables run (generic XDP, 1 worker)" "delivered pps" "/ base"
printf '%-44s %12d %8s\n' "base (no exporter, no latency)" "$b" "1.000"
awk -v x="$s" -v b="$b" 'BEGIN { printf "%-44s %12d %8.3f\n", "stats (exporter scraped, latency recorded)", x, x / b }'
awk -v x="$t" -v b="$b" 'BEGIN { printf "%-44s %12d %8.3f\n", "stats + trace set, matching nothing", x, x / b }'
