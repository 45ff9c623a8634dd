#!/usr/bin/env bash
# Regenerates the kernel's answers for the rules corpus (needs root, iptables 1.8.9 nft backend).
#
#   valid/NNN-name.expected       iptables-save output (comment lines removed) after iptables-restore
#                                 of valid/NNN-name.rules in a fresh network namespace. A file that
#                                 carries counters (a line starting with `[`, or a chain line whose
#                                 counters are not [0:0]) is restored with `iptables-restore -c` and
#                                 saved with `iptables-save -c`; the others without -c.
#   valid/NNN-name.list           `iptables -t T -L -v -n -x`, `-L -n --line-numbers` and `-L -v -n`
#                                 for each table T of the file, each after a `## iptables -t T OPTS`
#                                 line.
#   invalid/NNN-name.kernel-error the first non-empty line of iptables-restore's error, without its
#                                 `iptables-restore v1.8.9 (nf_tables): ` prefix (for the reader only).
#
# Exits non-zero if a valid file is rejected or an invalid one is accepted.
# Usage: record.sh [FILE...]   (default: every file of the corpus)
set -uo pipefail
cd "$(dirname "$0")"
ns="rcrec-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT

has_counters() {
  grep -qE '^[[:space:]]*\[' "$1" && return 0
  grep -E '^:.*\[' "$1" | grep -qvE '\[0+:0+\][[:space:]]*$'
}

fresh_ns() { cleanup; ip netns add "$ns"; }

files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then files=(valid/*.rules invalid/*.rules); fi
bad=0
for f in "${files[@]}"; do
  fresh_ns
  case "$f" in
  valid/*)
    if has_counters "$f"; then rflag=-c; else rflag=; fi
    if ! err=$(ip netns exec "$ns" iptables-restore $rflag <"$f" 2>&1 >/dev/null); then
      echo "VALID FILE REJECTED: $f: $err" >&2; bad=1; continue
    fi
    ip netns exec "$ns" iptables-save $rflag | grep -v '^#' >"${f%.rules}.expected"
    # The listing (`iptables -L`) of each table in the file, in three layouts.
    for t in $(sed -n 's/^\*\([a-z]*\).*/\1/p' "$f"); do
      for opts in "-L -v -n -x" "-L -n --line-numbers" "-L -v -n"; do
        echo "## iptables -t $t $opts"
        # shellcheck disable=SC2086
        ip netns exec "$ns" iptables -t "$t" $opts
      done
    done >"${f%.rules}.list"
    ;;
  invalid/*)
    if has_counters "$f"; then rflag=-c; else rflag=; fi
    if err=$(ip netns exec "$ns" iptables-restore $rflag <"$f" 2>&1 >/dev/null); then
      echo "INVALID FILE ACCEPTED: $f" >&2; bad=1; rm -f "${f%.rules}.kernel-error"; continue
    fi
    # The message proper; iptables-nft often puts it on the line after its name.
    printf '%s\n' "$err" | sed -E 's/^iptables-restore v[0-9.]+ \(nf_tables\): *//' | grep -v '^[[:space:]]*$' | head -n1 >"${f%.rules}.kernel-error"
    ;;
  esac
done
exit $bad
