#!/usr/bin/env bash
# The measurement of perf/live-forward.sh (the lab topology: container ->
# router -> internet over veth, the seed's MASQUERADE on the router, the
# kernel against `fastables run`), with `fastables gen` on both ends instead
# of trafgen and the rx counter: the generator on the container's eth0 (one
# flow, 60-byte UDP frames 172.18.0.2:33894 -> 8.8.8.8:9, pinned to CPU 0 as
# trafgen was), the sink on the internet side's up0 (AF_XDP takes every
# frame there, so nothing needs dropping and no ICMP comes back; not pinned
# unless SINK_CPU=N). On two cores the three busy pollers (generator,
# fastables' worker, sink) share them: the sink takes CPU from whichever it
# runs next to, which trafgen's rx counter did not. Per router and run, two
# phases of DURATION seconds:
#   paced  at RATE frames/s (default 20000): loss and one-way latency below
#          saturation;
#   max    as fast as the generator's TX ring takes frames: the delivered
#          rate (sink frames over its first-to-last time), the loss (sent -
#          received distinct) and the latency under overload (queues full).
# The routers are (a) the kernel with the same rules (lab.sh KERNEL_ROUTER=1),
# forwarding in the sender's softirq; (b) `fastables run` (release build),
# its worker pinned to CPU 1, generic XDP in copy mode. Latency is receipt
# time minus the stamp written by the generator (CLOCK_MONOTONIC, shared by
# the namespaces); it includes the generator's and the sink's own AF_XDP
# paths, which are the same for both routers.
# RUNS (default 3) alternating runs of each; prints every run and the median
# of each column. Root; the lab's packages (.ci/setup) and python3.
#
# Usage: [RUNS=N] [RATE=PPS] [SINK_CPU=N] perf/gen-forward.sh [DURATION]      (default 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=perf/lib.sh
. perf/lib.sh

duration="${1:-5}"
rate="${RATE:-20000}"
runs="${RUNS:-3}"
sink_pin=(env)
[[ -n "${SINK_CPU:-}" ]] && sink_pin=(taskset -c "$SINK_CPU")
cargo build -q --release -p fastables-cli --bin fastables
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/fastables"
work="$(mktemp -d /tmp/fastables-genperf.XXXXXX)"
lab=crates/cli/lab/lab.sh
export LAB_PREFIX=fg-
cleanup() {
    LAB_DIR="$work/lab" bash "$lab" down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# phase NAME PPS: one sink and one generator run; prints
# "offered delivered loss% p50 p99 p99.9 sink_ring_full sent unique" (pps, %, us).
phase() {
    local name="$1" pps="$2"
    sink_start "$name" fg-net up0
    ip netns exec fg-ctr taskset -c 0 "$bin" gen --dev eth0 --src 172.18.0.2 --dst 8.8.8.8 \
        --sport 33894 --dport 9 --dst-mac 02:42:ac:12:00:01 --size 60 --rate "$pps" \
        --duration "$duration" --json >"$work/gen-$name.json" 2>"$work/gen-$name.log"
    wait "$SINK_PID"
    phase_summary "$name"
}

measure() {
    local mode="$1"
    if [[ "$mode" == kernel ]]; then
        KERNEL_ROUTER=1 LAB_DIR="$work/lab" LAB_SERVERS="" bash "$lab" up >"$work/up.log" 2>&1
    else
        FASTABLES="$bin" LAB_DIR="$work/lab" LAB_SERVERS="" LAB_CORE=1 bash "$lab" up >"$work/up.log" 2>&1
    fi
    local paced max
    paced="$(phase "$mode-paced" "$rate")" || exit 1
    max="$(phase "$mode-max" 0)" || exit 1
    echo "paced $paced"
    echo "max $max"
    LAB_DIR="$work/lab" bash "$lab" down >/dev/null 2>&1
}

: >"$work/all"
for r in $(seq "$runs"); do
    for mode in kernel fastables; do
        measure "$mode" | while read -r phase_name rest; do
            echo "$mode $phase_name $r $rest" | tee -a "$work/all"
        done
    done
done

echo "machine: nproc $(nproc), $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-30s %-10s %12s %14s %8s %9s %9s %9s\n' router phase "offered pps" "delivered pps" "loss %" "p50 us" "p99 us" "p99.9 us"
for mode in kernel fastables; do
    for ph in paced max; do
        label="fastables run (generic XDP)"
        [[ "$mode" == kernel ]] && label="kernel (iptables, seed nat)"
        what="$rate pps"
        [[ "$ph" == max ]] && what="max"
        awk -v m="$mode" -v p="$ph" -v label="$label" -v what="$what" '
            $1 == m && $2 == p { n++; for (c = 4; c <= 9; c++) v[c, n] = $c }
            function median(c,   i, j, t, a) {
                for (i = 1; i <= n; i++) a[i] = v[c, i]
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
                return a[int((n + 1) / 2)]
            }
            END { printf "%-30s %-10s %12d %14d %8.3f %9.1f %9.1f %9.1f\n", label, what,
                  median(4), median(5), median(6), median(7), median(8), median(9) }
        ' "$work/all"
    done
done
