# shellcheck shell=bash disable=SC2154
# Shell functions shared by the perf/ scripts (sourced,
# not run): one measured phase of `fastables gen` against `fastables gen
# --sink`, and its summary.
#
# The caller sets: bin (the fastables binary), work (a scratch directory),
# duration (seconds the generator runs) and the array sink_pin (a command
# prefix for the sink, e.g. (env) or (taskset -c 1)).

# sink_start NAME NS DEV: starts the sink on DEV in NS (files
# $work/sink-NAME.json and .log, fresh: a previous run's "ready" must not be
# read for this one) and waits until it says it is ready (10 s at most; exits
# the script otherwise). Sets SINK_PID.
sink_start() {
    local name="$1" ns="$2" dev="$3" i
    rm -f "$work/sink-$name.json" "$work/sink-$name.log" "$work/gen-$name.json"
    : >"$work/sink-$name.log"
    ip netns exec "$ns" "${sink_pin[@]}" "$bin" gen --sink --dev "$dev" --idle 1 \
        --duration $((duration + 30)) --json \
        >"$work/sink-$name.json" 2>"$work/sink-$name.log" &
    SINK_PID=$!
    for ((i = 0; i < 100; i++)); do
        grep -qs 'sink: ready' "$work/sink-$name.log" && return 0
        sleep 0.1
    done
    kill "$SINK_PID" 2>/dev/null || true
    cat "$work/sink-$name.log" >&2
    echo "${0##*/}: the sink did not start within 10 s" >&2
    exit 1
}

# phase_summary NAME: from $work/gen-NAME.json and $work/sink-NAME.json,
# prints "offered delivered loss% p50 p99 p99.9 sink_ring_full sent unique
# sink_rx_dropped" (pps, %, us, frames; the last: the sink socket's kernel
# drops, e.g. its fill ring empty). Offered: the generator's frames per second;
# delivered: the sink's distinct frames over its first-to-last time; loss:
# (sent - received distinct) / sent.
phase_summary() {
    python3 - "$work/gen-$1.json" "$work/sink-$1.json" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))
s = json.load(open(sys.argv[2]))
sent, got, lat = g["sent"], s["unique"], s["latency"]
loss = 100.0 * (sent - got) / sent if sent else 0.0
print("%.0f %.0f %.3f %.1f %.1f %.1f %d %d %d %d" % (
    g["pps"], s["pps"], loss, lat["p50_ns"] / 1e3, lat["p99_ns"] / 1e3,
    lat["p999_ns"] / 1e3, s["kernel"]["rx_ring_full"], sent, got,
    s["kernel"]["rx_dropped"]))
PY
}

# lab_setup PREFIX: builds the release binary and sets bin, work (a fresh
# scratch directory), lab (lab.sh) and LAB_PREFIX; on exit the lab is taken
# down and work removed. For the trafgen-driven scripts (live-forward.sh,
# overhead.sh).
lab_setup() {
    cargo build -q --release -p fastables-cli --bin fastables
    bin="${CARGO_TARGET_DIR:-$PWD/target}/release/fastables"
    work="$(mktemp -d /tmp/fastables-perf.XXXXXX)"
    lab=crates/cli/lab/lab.sh
    export LAB_PREFIX="$1"
    trap 'LAB_DIR="$work/lab" bash "$lab" down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
    # trafgen's frame: 64-byte UDP (60 + FCS), one flow, from the container
    # (172.18.0.2:33894) to 8.8.8.8:9, to docker0's MAC.
    cat >"$work/udp.cfg" <<'CFG'
{
  eth(da=02:42:ac:12:00:01, sa=02:42:ac:12:00:02),
  ipv4(saddr=172.18.0.2, daddr=8.8.8.8, ttl=64),
  udp(sp=33894, dp=9),
  fill(0x00, 18)
}
CFG
}

# median N...: the median of the numbers given.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
