#!/usr/bin/env bash
# Instructions per packet of the data path, counted by callgrind (they do not
# move with machine load, unlike criterion's times).
#
# Usage: perf/callgrind.sh [N]        (N packets, default 6400; a multiple of 64)
#        CASES="pipeline:100 rules:10" perf/callgrind.sh   (only these cases)
#
# Cases (MODE of benches/examples/pipeline_count.rs; frames of 64-byte UDP
# unless ":tcp1500", 1514-byte TCP):
#   parse             parse_frame alone
#   rules:R           filter FORWARD evaluation alone, R = empty | number of rules
#                     (the packet matches rule R - 1, FORWARD policy DROP)
#   pipeline:R        the whole pipeline (batches of 64), R = empty | seed | number
#   pipeline:R:nocache  the same without the flow cache (every packet runs the chains)
#   pipeline:R:nocsum   the same with [conntrack] checksum = false (nf_conntrack_checksum 0)
#   conntrack:OP      a table of 4096 TCP connections: OP = lookup (one random
#                     flow), batch (64 at a time, lookup_batch), new (SYN, SNAT
#                     port choice, confirm, remove), masq (new with the nat
#                     table's rules run: a MASQUERADE), shared (masq with 16
#                     connections already from each new one's address and
#                     port); "packet" = one operation
#
# Builds benches/examples/pipeline_count.rs in the bench profile (the code criterion times) and, for
# each case, runs it under `valgrind --tool=callgrind` twice, on N and on 2N
# packets, collecting only inside its `measure_*` functions (set-up and the
# frame restore between batches are not counted). Prints
#   (Ir of the 2N run - Ir of the N run) / N
# so that any constant cost cancels. Hash maps (the FIB's AHashMap) are seeded
# at random, which moves a count by a few instructions per packet from one
# process to the next: each count is the smallest of REPS runs (default 3).
# The callgrind output files are kept in $OUT (default: a fresh temporary
# directory) for callgrind_annotate.
set -euo pipefail

N=${1:-6400}
if ! [[ $N =~ ^[0-9]+$ ]] || (( N == 0 || N % 64 != 0 )); then
    echo "N must be a positive multiple of 64 (the batch size), got '$N'" >&2
    exit 2
fi
command -v valgrind >/dev/null || {
    echo "valgrind is not installed: apt-get install -y valgrind" >&2
    exit 1
}

cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d /tmp/fastables-callgrind.XXXXXX)}
mkdir -p "$OUT"

echo "building pipeline_count (bench profile) ..." >&2
BIN=$(cargo build --profile bench -p fastables-benches --example pipeline_count \
        --message-format=json-render-diagnostics \
      | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[[ -x $BIN ]] || { echo "build produced no executable" >&2; exit 1; }

REPS=${REPS:-3}

# Ir collected in the measure_* functions of one run.
ir1() {
    local mode=$1 packets=$2 rep=$3 file
    file="$OUT/callgrind.$(echo "$mode" | tr ':' '_').$packets.$rep"
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measure_*' \
        --callgrind-out-file="$file" "$BIN" "$mode" "$packets" >/dev/null 2>"$file.log" || {
        echo "valgrind failed for $mode $packets, see $file.log" >&2
        exit 1
    }
    local n
    n=$(awk '/^(summary|totals):/ { print $2; exit }' "$file")
    if [[ -z $n || $n == 0 ]]; then
        echo "nothing collected for $mode (measure_* inlined away?), see $file" >&2
        exit 1
    fi
    echo "$n"
}

# The smallest Ir of REPS runs.
ir() {
    local best="" n rep
    for ((rep = 1; rep <= REPS; rep++)); do
        n=$(ir1 "$1" "$2" "$rep")
        if [[ -z $best ]] || (( n < best )); then best=$n; fi
    done
    echo "$best"
}

CASES=${CASES:-parse parse:tcp1500 rules:empty rules:10 rules:100 rules:1000 rules:1000:tcp1500
    pipeline:empty pipeline:seed pipeline:10 pipeline:100 pipeline:1000
    pipeline:empty:tcp1500 pipeline:100:tcp1500 pipeline:1000:tcp1500}

printf '%-28s %14s %14s %12s\n' case "Ir(N)" "Ir(2N)" "Ir/packet"
for mode in $CASES; do
    a=$(ir "$mode" "$N")
    b=$(ir "$mode" $((2 * N)))
    printf '%-28s %14s %14s %12s\n' "$mode" "$a" "$b" \
        "$(awk -v a="$a" -v b="$b" -v n="$N" 'BEGIN { printf "%.1f", (b - a) / n }')"
done
echo "N=$N packets, min of REPS=$REPS runs; callgrind files in $OUT" >&2
