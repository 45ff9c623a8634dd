#!/usr/bin/env bash
# The side-by-side comparison with the kernel: the same offered load and the
# same rules through four setups, measured with `fastables gen` (generator)
# and `fastables gen --sink` (receiver, delivered rate, loss, one-way latency).
#
# Topology (crates/cli/lab/lab.sh, LAB_PREFIX=cmp-, no servers): generator
# namespace cmp-ctr (eth0, 172.18.0.2) -> router cmp-rtr (docker0 | eth0) ->
# sink namespace cmp-net (up0), over veth; the seed's rules (rules.v4: the
# MASQUERADE of 172.18.0.0/16 out of eth0, TCP to ports 55666-55680).
# Setups (SETUPS, default all four, in this order):
#   iptables   the kernel as the router (lab.sh KERNEL_ROUTER=1) with the
#              seed's rules loaded by iptables-restore (Debian's iptables is
#              iptables-nft: the rules run as nf_tables expressions)
#   nft        the kernel with the NAT done in nftables (masquerade, the
#              same two rules) and a flowtable (`flowtable ft { hook ingress;
#              devices = { docker0, eth0 } }`, `meta l4proto { tcp, udp } flow
#              add @ft` in forward: the kernel's fastest NAT path; a one-way
#              UDP flow never becomes ct state established, so the rule takes
#              every confirmed flow, from its second packet; SYNs are never
#              offloaded). If the kernel has no flowtable (CONFIG_NF_FLOW_TABLE
#              unset: `nft` says "No such file or directory"), the same
#              nftables NAT runs without it, and the table says so
#   fastables  `fastables run` (release build, lab.sh, its worker pinned to
#              CPU 1 with LAB_CORE=1; generic XDP, copy mode on veth)
#   direct     no router: the generator's veth straight to the sink's (cmp-d1
#              eth0 -- cmp-d2 up0): the ceiling of this machine
# Workloads (QUICK=1: udp64 and syn only), DURATION seconds each:
#   lat64      60-byte UDP (64 with the FCS), 64 established flows
#              (172.18.0.2:33894-33957 -> 8.8.8.8:9), paced at RATE (default
#              20000) frames/s: latency below saturation
#   udp64      the same flows as fast as the generator's TX ring takes frames
#   udp1500    the same with 1514-byte frames (1500-byte datagrams)
#   flows1m    FLOWS (default 1000000) concurrent UDP flows, a fixed set cycled
#              (172.18.0.2:1024-65535 -> 8.8.8.8:9-24, the first FLOWS tuples),
#              at the maximum rate, after a fill pass (FLOWS frames at FILL_RATE,
#              default 100000/s) that creates their connections; the table
#              gives the router's connection count after the fill
#   syn        new connections: TCP SYNs with unique tuples (172.18.0.2:1024-1033
#              -> 8.8.8.1-8.8.8.16:1-65535, every SYN another tuple and, after
#              the MASQUERADE to 55666-55680, another connection), at the
#              maximum rate; delivered pps = connections per second set up
# The router's conntrack holds CT_MAX (default 4194304) entries in CT_BUCKETS
# (default 1048576) buckets in every router setup: fastables through lab.sh's
# LAB_CT_MAX / LAB_CT_BUCKETS; the kernel's nf_conntrack_max and
# nf_conntrack_buckets are global (read-only inside a namespace), so they are
# set in the initial namespace for the run and restored on exit. The router's
# connections are flushed before flows1m and syn.
#
# CPU placement: the generator is pinned to CPU 0 (taskset), fastables' worker
# to CPU 1; the sink is not pinned unless SINK_CPU=N. The kernel forwards in
# softirq wherever the packets arrive: a veth's transmit queues the frame on
# the sending CPU's backlog, so the kernel router runs on CPU 0 in the
# generator's own transmit (unless KERNEL_RPS=1, which sets the router's
# docker0 rps_cpus to CPU 1 and moves the forwarding there, like fastables).
# CPU columns, over the generator's run (wall clock from its start to its
# exit; /proc values in clock ticks):
#   rtr cpu %  the router's CPU time as % of one core: fastables: utime+stime
#              of its process (/proc/PID/stat; the generic-XDP receive copy
#              runs in softirq, outside it); kernel: system+softirq of all
#              CPUs (/proc/stat), which also holds the generator's and the
#              sink's own kernel time (the direct row shows that part alone)
#              and whatever else the machine did meanwhile
#   sys+si %   system+softirq of all CPUs (/proc/stat), every setup
#   ns/pkt     rtr cpu time / frames delivered
# Where frames were lost (over the phase):
#   rtr drops  fastables: its drops by reason plus its AF_XDP sockets' kernel
#              drops (fill ring empty, RX ring full); the kernel: backlog drops
#              (/proc/net/softnet_stat, all CPUs) plus conntrack -S drop and
#              insert_failed
#   sink drops the sink socket's kernel drops (its fill ring was empty: the
#              sink fell behind)
# The rest of the loss is frames the kernel never put on an AF_XDP ring
# (e.g. generic XDP's receive on a busy backlog) or still in flight at the end.
# Ratios: delivered pps of fastables over each kernel setup and over the
# direct link; p99 of fastables over each kernel setup.
#
# NICE=N (default 0: unchanged) runs the generator, the sink, every thread of
# `fastables run` and the kernel's ksoftirqd threads at nice N (ksoftirqd set
# back to 0 on exit): on a machine shared with other work, the kernel's
# softirq forwarding preempts every task while fastables' worker is a task
# that waits for its turn on CPU 1 like any other; a negative NICE gives our
# processes the cores first (the softirq runs at the top anyway).
#
# RUNS (default 1) alternating runs of every setup; the table gives the median
# of each column. Prints the table and appends it to perf/RESULTS.md (a new
# dated section: date, commit, machine, load before and after, the command);
# RESULTS=0 only prints; KEEP=1 keeps the work directory (every generator's
# and sink's JSON and log). Root; .ci/setup's packages (iproute2, ethtool,
# iptables, conntrack, nftables, python3) and bpffs (mounted if missing).
#
# Usage: [RUNS=N] [QUICK=1] [SETUPS="iptables nft fastables direct"] [RATE=PPS]
#        [FLOWS=N] [FILL_RATE=PPS] [CT_MAX=N] [CT_BUCKETS=N] [SINK_CPU=N]
#        [KERNEL_RPS=1] [NICE=N] [RESULTS=0] [KEEP=1] perf/compare.sh [DURATION]      (default 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=perf/lib.sh
. perf/lib.sh

duration="${1:-5}"
runs="${RUNS:-1}"
rate="${RATE:-20000}"
flows="${FLOWS:-1000000}"
fill_rate="${FILL_RATE:-100000}"
ct_max="${CT_MAX:-4194304}"
ct_buckets="${CT_BUCKETS:-1048576}"
setups="${SETUPS:-iptables nft fastables direct}"
kernel_rps="${KERNEL_RPS:-0}"
workloads="lat64 udp64 udp1500 flows1m syn"
[[ "${QUICK:-0}" == 1 ]] && workloads="udp64 syn"
nice_n="${NICE:-0}"
[[ "$nice_n" =~ ^-?[0-9]+$ ]] || {
    echo "compare: NICE must be a number (-20 to 19): '$nice_n'" >&2
    exit 2
}
prio=(env)
((nice_n != 0)) && prio=(nice -n "$nice_n")
sink_pin=("${prio[@]}")
[[ -n "${SINK_CPU:-}" ]] && sink_pin=("${prio[@]}" taskset -c "$SINK_CPU")
command_line="$(
    for v in RUNS QUICK SETUPS RATE FLOWS FILL_RATE CT_MAX CT_BUCKETS SINK_CPU KERNEL_RPS NICE CARGO_TARGET_DIR; do
        [[ -n "${!v:-}" ]] && printf '%s=%q ' "$v" "${!v}"
    done
    printf 'perf/compare.sh'
    (($# > 0)) && printf ' %q' "$@"
    true
)"

((EUID == 0)) || {
    echo "compare: needs root (network namespaces, AF_XDP)" >&2
    exit 1
}
[[ "$duration" =~ ^[0-9]+$ && "$duration" -gt 0 ]] || {
    echo "compare: DURATION must be a whole number of seconds: '$duration'" >&2
    exit 2
}
for s in $setups; do
    [[ " iptables nft fastables direct " == *" $s "* ]] || {
        echo "compare: SETUPS: unknown setup '$s' (iptables nft fastables direct)" >&2
        exit 2
    }
done
for t in ip ethtool taskset sysctl renice python3 iptables-restore nft conntrack; do
    command -v "$t" >/dev/null 2>&1 || {
        echo "compare: missing tool $t (run .ci/setup as root)" >&2
        exit 1
    }
done
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

cargo build -q --release -p fastables-cli --bin fastables
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/fastables"
work="$(mktemp -d /tmp/fastables-compare.XXXXXX)"
lab=crates/cli/lab/lab.sh
# LAB_SERVERS=" ": no servers (an empty value means the default, both).
export LAB_PREFIX=cmp- LAB_DIR="$work/lab" LAB_SERVERS=" "
D1=cmp-d1
D2=cmp-d2
ct_saved=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ -n "${SINK_PID:-}" ]] && kill "$SINK_PID" 2>/dev/null
    bash "$lab" down >/dev/null 2>&1
    local ns pids
    for ns in "$D1" "$D2"; do
        pids="$(ip netns pids "$ns" 2>/dev/null)"
        # shellcheck disable=SC2086
        [[ -n "$pids" ]] && kill $pids 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    for p in ${ksoftirqd:-}; do renice -n 0 -p "$p" >/dev/null; done
    if [[ -n "$ct_saved" ]]; then
        # shellcheck disable=SC2086
        set -- $ct_saved
        sysctl -qw net.netfilter.nf_conntrack_buckets="$2" net.netfilter.nf_conntrack_max="$1"
    fi
    if ((rc != 0)); then
        echo "compare: failed (exit $rc); the last lines of its logs:" >&2
        tail -n 20 "$work"/*.log "$work"/lab/*.log >&2 2>/dev/null
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "compare: logs and JSON kept in $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# NICE applies to the kernel's deferred softirq work too: ksoftirqd/N, where
# softirq processing goes when it runs long, get the same nice for the run.
ksoftirqd=""
if ((nice_n != 0)); then
    for f in /proc/[0-9]*/comm; do
        [[ "$(cat "$f" 2>/dev/null)" =~ ^ksoftirqd/[0-9]+$ ]] && p="${f#/proc/}" && ksoftirqd+="${p%/comm} "
    done
    for p in $ksoftirqd; do renice -n "$nice_n" -p "$p" >/dev/null; done
fi
if [[ " $setups " == *" iptables "* || " $setups " == *" nft "* ]]; then
    ct_saved="$(sysctl -n net.netfilter.nf_conntrack_max) $(sysctl -n net.netfilter.nf_conntrack_buckets)"
    sysctl -qw net.netfilter.nf_conntrack_buckets="$ct_buckets" net.netfilter.nf_conntrack_max="$ct_max"
fi

# The nftables ruleset of the nft setup: the seed's MASQUERADE, and the
# flowtable unless $1 is "plain".
nft_rules() {
    echo "flush ruleset"
    echo "table ip compare {"
    if [[ "$1" != plain ]]; then
        echo "  flowtable ft { hook ingress priority 0; devices = { docker0, eth0 }; }"
        echo "  chain forward { type filter hook forward priority 0; policy accept; meta l4proto { tcp, udp } flow add @ft; }"
    fi
    echo "  chain postrouting {"
    echo "    type nat hook postrouting priority 100; policy accept;"
    echo "    ip saddr 172.18.0.0/16 oifname != \"docker0\" meta l4proto tcp masquerade to :55666-55680"
    echo "    ip saddr 172.18.0.0/16 oifname != \"docker0\" masquerade"
    echo "  }"
    echo "}"
}

# The label of each setup in the table (nft's is set when it is built).
declare -A label=(
    [iptables]="kernel, iptables (seed rules.v4)"
    [nft]="kernel, nftables flowtable + masquerade"
    [fastables]="fastables run (generic XDP, worker CPU 1)"
    [direct]="direct veth, no router (ceiling)"
)

# renice_tasks PID N: every thread of PID to nice N (renice -p sets one thread).
renice_tasks() {
    local t
    for t in /proc/"$1"/task/*; do
        renice -n "$2" -p "${t##*/}" >/dev/null
    done
}

# setup_up SETUP: builds the topology; sets GEN_NS GEN_DST_MAC SINK_NS.
setup_up() {
    case "$1" in
        iptables | nft)
            KERNEL_ROUTER=1 bash "$lab" up >"$work/up.log" 2>&1
            if [[ "$1" == nft ]]; then
                ip netns exec cmp-rtr iptables-save >"$work/iptables-before-nft.txt"
                if nft_rules flowtable | ip netns exec cmp-rtr nft -f - 2>"$work/nft.log"; then
                    label[nft]="kernel, nftables flowtable + masquerade"
                else
                    nft_rules plain | ip netns exec cmp-rtr nft -f -
                    label[nft]="kernel, nftables masquerade (NO flowtable: kernel lacks it)"
                fi
            fi
            if [[ "$kernel_rps" == 1 ]]; then
                ip netns exec cmp-rtr sh -c 'echo 2 >/sys/class/net/docker0/queues/rx-0/rps_cpus'
            fi
            GEN_NS=cmp-ctr GEN_DST_MAC=02:42:ac:12:00:01 SINK_NS=cmp-net
            ;;
        fastables)
            FASTABLES="$bin" LAB_CORE=1 LAB_CT_MAX="$ct_max" LAB_CT_BUCKETS="$ct_buckets" \
                bash "$lab" up >"$work/up.log" 2>&1
            ((nice_n == 0)) || renice_tasks "$(cat "$LAB_DIR/fastables.pid")" "$nice_n"
            GEN_NS=cmp-ctr GEN_DST_MAC=02:42:ac:12:00:01 SINK_NS=cmp-net
            ;;
        direct)
            local ns
            for ns in "$D1" "$D2"; do
                ip netns add "$ns"
                ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
                ip netns exec "$ns" ip link set lo up
            done
            ip link add eth0 netns "$D1" address 02:42:ac:12:00:02 type veth \
                peer name up0 netns "$D2" address 52:54:00:12:35:02
            # As lab.sh's veth_end: no offloads (finished checksums, no GSO/GRO).
            ip netns exec "$D1" ethtool -K eth0 tx off tso off gso off gro off >/dev/null
            ip netns exec "$D2" ethtool -K up0 tx off tso off gso off gro off >/dev/null
            ip netns exec "$D1" ip link set eth0 up
            ip netns exec "$D2" ip link set up0 up
            GEN_NS="$D1" GEN_DST_MAC=52:54:00:12:35:02 SINK_NS="$D2"
            ;;
    esac
}

setup_down() {
    if [[ "$1" == direct ]]; then
        ip netns del "$D1"
        ip netns del "$D2"
    else
        bash "$lab" down >/dev/null 2>&1
    fi
}

# ct_count SETUP: the router's connections now ("-" without a router).
ct_count() {
    case "$1" in
        iptables | nft) ip netns exec cmp-rtr cat /proc/sys/net/netfilter/nf_conntrack_count ;;
        fastables) "$bin" conntrack --socket "$LAB_DIR/fastables.sock" -C ;;
        *) echo - ;;
    esac
}

ct_flush() {
    case "$1" in
        iptables | nft) ip netns exec cmp-rtr conntrack -F >/dev/null 2>&1 ;;
        fastables) "$bin" conntrack --socket "$LAB_DIR/fastables.sock" -F >/dev/null 2>&1 ;;
    esac
    true
}

# cpu_ticks SETUP: "router_ticks sys_si_ticks" now (clock ticks since boot).
cpu_ticks() {
    local sysi proc=0 f
    sysi="$(awk '$1 == "cpu" { print $4 + $8 }' /proc/stat)"
    if [[ "$1" == fastables ]]; then
        f="$(cat "/proc/$(cat "$LAB_DIR/fastables.pid")/stat")"
        f="${f##*) }"
        # Fields after the command: state is 3, utime 14, stime 15.
        proc="$(awk '{ print $12 + $13 }' <<<"$f")"
    fi
    echo "$proc $sysi"
}

# rtr_drops SETUP: frames the router dropped so far: fastables: its drops by
# reason plus its sockets' kernel drops (rx_dropped: the fill ring was empty
# or the RX ring full); the kernel: the backlog drops of /proc/net/softnet_stat
# (all CPUs) plus conntrack's drop and insert_failed counters; "-" without a
# router.
rtr_drops() {
    case "$1" in
        fastables)
            "$bin" stats --json --socket "$LAB_DIR/fastables.sock" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(d["drops"].values()) + sum(x["rx_dropped"] for x in d["xdp"].values()))'
            ;;
        iptables | nft)
            local b c
            b="$(python3 -c 'print(sum(int(l.split()[1], 16) for l in open("/proc/net/softnet_stat")))')"
            c="$(ip netns exec cmp-rtr conntrack -S 2>/dev/null | grep -o -E '(^| )(drop|insert_failed)=[0-9]+' |
                awk -F= '{ s += $2 } END { print s + 0 }')"
            echo $((b + c))
            ;;
        *) echo - ;;
    esac
}

# gen_args WORKLOAD: the generator's arguments (besides --dev, --dst-mac).
gen_args() {
    local udp=(--src 172.18.0.2 --dst 8.8.8.8 --sport 33894-33957 --dport 9 --flows 64)
    case "$1" in
        lat64) echo "${udp[@]}" --size 60 --rate "$rate" ;;
        udp64) echo "${udp[@]}" --size 60 --rate 0 ;;
        udp1500) echo "${udp[@]}" --size 1514 --rate 0 ;;
        fill) echo --src 172.18.0.2 --dst 8.8.8.8 --sport 1024-65535 --dport 9-24 --flows "$flows" \
            --size 60 --rate "$fill_rate" --count "$flows" ;;
        flows1m) echo --src 172.18.0.2 --dst 8.8.8.8 --sport 1024-65535 --dport 9-24 --flows "$flows" \
            --size 60 --rate 0 ;;
        syn) echo --proto syn --src 172.18.0.2 --dst 8.8.8.1-8.8.8.16 --sport 1024-1033 \
            --dport 1-65535 --rate 0 ;;
    esac
}

# phase SETUP WORKLOAD NAME SECS: one sink and one generator run of SECS
# seconds (or until --count); prints
# "offered delivered loss% p50 p99 p99.9 ring_full sent unique sink_drop
#  rtr_ticks sysi_ticks wall_s rtr_drop".
phase() {
    local setup="$1" wl="$2" name="$3" secs="$4" t0 t1 c0 c1 d0 d1 args
    # sink_start reads $duration: the sink's limit is this phase's + 30 s.
    local duration="$secs"
    sink_start "$name" "$SINK_NS" up0
    read -r -a args <<<"$(gen_args "$wl")"
    d0="$(rtr_drops "$setup")"
    c0="$(cpu_ticks "$setup")"
    t0="$(date +%s%N)"
    ip netns exec "$GEN_NS" "${prio[@]}" taskset -c 0 "$bin" gen --dev eth0 --dst-mac "$GEN_DST_MAC" \
        "${args[@]}" --duration "$secs" --json >"$work/gen-$name.json" 2>"$work/gen-$name.log"
    t1="$(date +%s%N)"
    c1="$(cpu_ticks "$setup")"
    wait "$SINK_PID"
    SINK_PID=""
    d1="$(rtr_drops "$setup")"
    echo "$(phase_summary "$name") $c0 $c1 $t0 $t1 $d0 $d1" |
        awk '{ printf "%s %s %s %s %s %s %s %s %s %s %d %d %.3f %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
               $13 - $11, $14 - $12, ($16 - $15) / 1e9, $17 == "-" ? "-" : $18 - $17 }'
}

measure() {
    local setup="$1" r="$2" wl res ct
    setup_up "$setup"
    for wl in $workloads; do
        ct=-
        if [[ "$wl" == flows1m || "$wl" == syn ]]; then
            ct_flush "$setup"
        fi
        if [[ "$wl" == flows1m && "$setup" != direct ]]; then
            # The fill: every flow's connection, paced; at most 60 s.
            res="$(phase "$setup" fill "$setup-fill-$r" 60)" || exit 1
            ct="$(ct_count "$setup")"
            echo "fill $setup $r $res $ct" >>"$work/fills"
        fi
        res="$(phase "$setup" "$wl" "$setup-$wl-$r" "$duration")" || exit 1
        [[ "$wl" == syn || "$wl" == flows1m ]] && [[ "$ct" == - ]] && ct="$(ct_count "$setup")"
        echo "$setup $wl $r $res $ct" | tee -a "$work/all" >&2
    done
    setup_down "$setup"
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
: >"$work/all"
: >"$work/fills"
for r in $(seq "$runs"); do
    for s in $setups; do
        echo "compare: run $r, $s ($workloads)" >&2
        measure "$s" "$r"
    done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

labels="$work/labels"
for s in $setups; do echo "$s ${label[$s]}"; done >"$labels"
commit="$(git rev-parse --short HEAD)"
dirty=""
git diff --quiet HEAD -- crates perf Cargo.toml Cargo.lock ':!perf/RESULTS.md' || dirty=" (with uncommitted changes)"
machine="nproc $(nproc), $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
table="$(python3 - "$work/all" "$work/fills" "$labels" "$workloads" "$(getconf CLK_TCK)" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
fills = [l.split() for l in open(sys.argv[2]) if l.strip()]
labels = dict(l.rstrip("\n").split(" ", 1) for l in open(sys.argv[3]))
workloads = sys.argv[4].split()
setups = list(labels)
TCK = float(sys.argv[5])
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
cell = {}
for s in setups:
    for w in workloads:
        rs = [r for r in rows if r[0] == s and r[1] == w]
        if not rs:
            continue
        col = lambda i: [float(r[i]) for r in rs]
        wall = col(15)
        rtr = [float(r[13]) / TCK for r in rs]
        sysi = [float(r[14]) / TCK for r in rs]
        delivered = col(4)
        unique = col(11)
        if s == "fastables":
            rcpu = rtr
        elif s in ("iptables", "nft"):
            rcpu = sysi
        else:
            rcpu = [None] * len(rs)
        cell[s, w] = dict(
            offered=med(col(3)), delivered=med(delivered), loss=med(col(5)),
            p50=med(col(6)), p99=med(col(7)), p999=med(col(8)),
            rcpu=med([None if c is None else 100.0 * c / t for c, t in zip(rcpu, wall)]),
            sysi=med([100.0 * c / t for c, t in zip(sysi, wall)]),
            nspp=med([None if c is None or u == 0 else 1e9 * c / u for c, u in zip(rcpu, unique)]),
            sinkdrop=med(col(12)),
            rtrdrop=med([None if r[16] == "-" else float(r[16]) for r in rs]),
            ct=med([None if r[17] == "-" else float(r[17]) for r in rs]),
            n=len(rs))
def f(v, fmt):
    return "-" if v is None else fmt % v
out = []
out.append("| workload | setup | offered pps | delivered pps | loss % | p50 us | p99 us | p99.9 us | rtr cpu % | sys+si % | rtr ns/pkt | rtr drops | sink drops | conntrack |")
out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for w in workloads:
    for s in setups:
        c = cell.get((s, w))
        if c is None:
            continue
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            w, labels[s], f(c["offered"], "%.0f"), f(c["delivered"], "%.0f"), f(c["loss"], "%.2f"),
            f(c["p50"], "%.1f"), f(c["p99"], "%.1f"), f(c["p999"], "%.1f"), f(c["rcpu"], "%.0f"),
            f(c["sysi"], "%.0f"), f(c["nspp"], "%.0f"), f(c["rtrdrop"], "%.0f"), f(c["sinkdrop"], "%.0f"),
            f(c["ct"], "%.0f")))
out.append("")
out.append("| workload | delivered: fastables / iptables | fastables / nft | fastables / ceiling | p99: fastables / iptables | fastables / nft | rtr ns/pkt: fastables / iptables |")
out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
def ratio(a, b, key):
    x, y = cell.get((a, key[0])), cell.get((b, key[0]))
    if x is None or y is None or x[key[1]] in (None, 0) or y[key[1]] in (None, 0):
        return "-"
    return "%.2f" % (x[key[1]] / y[key[1]])
for w in workloads:
    out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
        w, ratio("fastables", "iptables", (w, "delivered")), ratio("fastables", "nft", (w, "delivered")),
        ratio("fastables", "direct", (w, "delivered")), ratio("fastables", "iptables", (w, "p99")),
        ratio("fastables", "nft", (w, "p99")), ratio("fastables", "iptables", (w, "nspp"))))
if fills:
    out.append("")
    out.append("flows1m fill passes (FLOWS frames paced; offered pps, delivered pps, loss %, connections after):")
    for r in fills:
        out.append("- %s run %s: %s, %s, %s%%, %s" % (labels[r[1]], r[2], r[3], r[4], r[5], r[-1]))
runs = max((c["n"] for c in cell.values()), default=0)
if runs > 1:
    out.append("")
    out.append("Medians of %d runs, each column on its own." % runs)
print("\n".join(out))
PY
)"
{
    echo
    echo "## $(date -u +%Y-%m-%d), commit $commit$dirty: perf/compare.sh (kernel iptables, kernel nftables, fastables, direct veth)"
    echo
    echo "Machine: $machine. Started $started, ended $(date -u +%H:%M:%SZ); load average $load_before before, $load_after after."
    echo "Command: \`$command_line\` (DURATION $duration s per measurement, RUNS $runs, workloads: $workloads)."
    echo "Generator on CPU 0; fastables' worker on CPU 1; the kernel forwards in softirq $([[ "$kernel_rps" == 1 ]] && echo "on CPU 1 (KERNEL_RPS=1: rps_cpus of the router's docker0)" || echo "on the generator's CPU 0 (veth transmit queues on the sending CPU)"); sink $([[ -n "${SINK_CPU:-}" ]] && echo "on CPU $SINK_CPU" || echo "not pinned"); nice $nice_n (generator, sink, fastables' threads$( ((nice_n != 0)) && echo ", ksoftirqd"))."
    echo "Conntrack: $ct_max entries, $ct_buckets buckets (kernel: global sysctls for the run; fastables: [conntrack] max, buckets)."
    echo "rtr cpu %: fastables: its process's utime+stime; kernel: system+softirq of all CPUs (/proc/stat, includes the generator's and sink's kernel time); % of one core over the generator's run. sys+si %: system+softirq of all CPUs, every setup. rtr drops: fastables' drops and its sockets' kernel drops; kernel: softnet backlog drops + conntrack drop/insert_failed. sink drops: the sink socket's kernel drops (it fell behind). Latency: one-way, the generator's stamp to the sink's receipt."
    echo
    echo "$table"
} >"$work/section.md"
cat "$work/section.md"
if [[ "${RESULTS:-1}" != 0 ]]; then
    cat "$work/section.md" >>perf/RESULTS.md
    echo >&2
    echo "compare: appended to perf/RESULTS.md" >&2
fi
