#!/usr/bin/env bash
# Criterion medians per element (per packet / per parse / per rule run) from
# the last `cargo bench` run, read from criterion's estimates.json files.
#
# Usage: perf/medians.sh [GROUP...]      e.g. perf/medians.sh pipeline rules_eval
#   (all groups when none is given). Reads $CARGO_TARGET_DIR/criterion, else
#   target/criterion.
#
# Columns: bench id; median time per element in ns; median absolute deviation
# per element (the spread of the samples: large on a loaded machine); the
# fastest sample per element (what the code does when nothing else runs: noise
# on a shared machine only ever adds time); and the ratio of the median to the
# first case of the same bench function (e.g. 1000 rules vs the empty ruleset,
# both measured in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${CARGO_TARGET_DIR:-target}/criterion
[[ -d $DIR ]] || { echo "no criterion results in $DIR: run cargo bench first" >&2; exit 1; }

python3 - "$DIR" "$@" <<'EOF'
import json, os, sys

root, groups = sys.argv[1], sys.argv[2:]
rows = []
for dirpath, _, files in os.walk(root):
    if not dirpath.endswith(os.sep + "new") or "estimates.json" not in files:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        b = json.load(f)
    if groups and b["group_id"] not in groups:
        continue
    with open(os.path.join(dirpath, "estimates.json")) as f:
        e = json.load(f)
    with open(os.path.join(dirpath, "sample.json")) as f:
        smp = json.load(f)
    best = min(t / i for t, i in zip(smp["times"], smp["iters"]))
    n = (b.get("throughput") or {}).get("Elements", 1)
    rows.append((b["group_id"], b["function_id"] or "", b["value_str"] or "",
                 b["full_id"], e["median"]["point_estimate"] / n,
                 e["median_abs_dev"]["point_estimate"] / n, best / n))

def order(r):
    v = r[2]
    rank = {"empty": -2, "seed": -1}.get(v)
    return (r[0], r[1], rank if rank is not None else (int(v) if v.isdigit() else 10**9), v)

rows.sort(key=order)
base = {}
print(f"{'bench':<32} {'median ns':>10} {'MAD ns':>8} {'min ns':>8} {'ratio':>7}")
for g, fn, v, full, med, mad, best in rows:
    first = base.setdefault((g, fn), med)
    print(f"{full:<32} {med:>10.1f} {mad:>8.1f} {best:>8.1f} {med / first:>7.2f}")
EOF
