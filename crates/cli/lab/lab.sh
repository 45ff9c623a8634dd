#!/usr/bin/env bash
# The reference lab: the seed topology of DESIGN.md in three network
# namespaces, with real hosts on both sides of a router that runs fastables.
#
#   <P>ctr  the container   eth0 172.18.0.2/16 02:42:ac:12:00:02, default via 172.18.0.1
#              | veth
#   <P>rtr  the router      docker0 02:42:ac:12:00:01 | eth0 52:54:00:c2:be:11
#              | veth          (no kernel addresses: `fastables run` owns both over AF_XDP)
#   <P>net  the internet    up0 10.0.2.2/24 + 1.2.3.4/24 52:54:00:12:35:02;
#                           lo 8.8.8.8/32 (HTTP :80, DNS :53), 1.1.1.1/32 (HTTP :80)
#
# The container's traffic leaves MASQUERADEd (the seed's nat table): as
# 10.0.2.15 (TCP source ports 55666-55680), and as 1.2.3.56 towards 1.1.1.1
# (routed via 1.2.3.4), so the internet side needs only its connected subnets.
#
# Usage: bash lab.sh up|demo|down      (as root; `fastables lab up|demo|down`)
#
#   up    builds the lab and starts `fastables run -c $LAB_DIR/fastables.toml`
#         in the router (log: $LAB_DIR/fastables.log); removes a previous lab
#         with the same prefix first
#   demo  up, then from the container: HTTP to 8.8.8.8 and 1.1.1.1, DNS, ping;
#         prints what each returned, what the servers saw as the client
#         address and the fastables log; then down (also on failure, Ctrl-C)
#   down  stops what up started (fastables first) and deletes the namespaces;
#         idempotent
#
# Environment:
#   FASTABLES     the fastables binary (default: `fastables` on PATH)
#   LAB_DIR       work directory: config, rules, logs, pid files (default /tmp/fastables-lab)
#   LAB_PREFIX    namespace name prefix (default fl-), so that several labs can coexist
#   LAB_SERVERS   servers up starts in <P>net: any of "http dns" (default both)
#   LAB_TIMEOUT   seconds up waits for fastables to say `running` (default 5)
#   LAB_CORE      the core the fastables worker is pinned to (default 0)
#   LAB_CORES     several workers: their cores, comma-separated (e.g. 0,1;
#                 default LAB_CORE); the veths then get one RX and TX queue
#                 per worker
#   LAB_STATS     off: no metrics listener and no latency recording (for
#                 perf/overhead.sh; default on)
#   LAB_CT_MAX, LAB_CT_BUCKETS
#                 fastables' [conntrack] max and buckets (default: its defaults,
#                 262144 each). Not applied with KERNEL_ROUTER=1: the kernel's
#                 nf_conntrack_max and nf_conntrack_buckets are global (read-only
#                 in a namespace); set them in the initial namespace with sysctl,
#                 as perf/compare.sh does
#   LAB_EXTRA_NAT, LAB_EXTRA_FILTER
#                 extra lines for the nat / filter table of rules.v4, after the
#                 seed's (iptables-save syntax, one per line; default none)
#   KERNEL_ROUTER=1  the same topology with the Linux kernel as the router
#                 (addresses on the router's veths, forwarding, the same rules
#                 loaded with iptables-restore) instead of fastables: the reference
#
# Servers: python3 (HTTP; the log names each client as ADDRESS:PORT, `/` and
# `/whoami` answer with the client's address, other paths are files of
# $LAB_DIR/www), dnsmasq (DNS: example.test A 93.184.216.34, queries logged).
# Debian packages: iproute2 ethtool python3 dnsmasq-base, for demo also curl
# dnsutils iputils-ping, for KERNEL_ROUTER=1 also iptables (and conntrack).
set -euo pipefail

LAB_DIR="${LAB_DIR:-/tmp/fastables-lab}"
LAB_PREFIX="${LAB_PREFIX:-fl-}"
LAB_SERVERS="${LAB_SERVERS:-http dns}"
LAB_TIMEOUT="${LAB_TIMEOUT:-5}"
LAB_EXTRA_NAT="${LAB_EXTRA_NAT:-}"
LAB_EXTRA_FILTER="${LAB_EXTRA_FILTER:-}"
LAB_CORE="${LAB_CORE:-0}"
LAB_CORES="${LAB_CORES:-$LAB_CORE}"
LAB_STATS="${LAB_STATS:-on}"
LAB_QUEUES=$(($(tr -cd , <<<"$LAB_CORES" | wc -c) + 1))
LAB_CT_MAX="${LAB_CT_MAX:-}"
LAB_CT_BUCKETS="${LAB_CT_BUCKETS:-}"
KERNEL_ROUTER="${KERNEL_ROUTER:-0}"
FASTABLES="${FASTABLES:-fastables}"

CTR="${LAB_PREFIX}ctr"
RTR="${LAB_PREFIX}rtr"
NET="${LAB_PREFIX}net"

# The seed topology's MACs.
MAC_CTR=02:42:ac:12:00:02
MAC_DOCKER0=02:42:ac:12:00:01
MAC_ETH0=52:54:00:c2:be:11
MAC_UP0=52:54:00:12:35:02

say() { printf '%s\n' "$*"; }
die() {
    printf 'lab: %s\n' "$*" >&2
    exit 1
}
in_ns() {
    local ns="$1"
    shift
    ip netns exec "$ns" "$@"
}

# need TOOL...: fails naming the Debian packages of the tools that are missing.
need() {
    local t missing=()
    for t in "$@"; do
        if ! command -v "$t" >/dev/null 2>&1; then
            case "$t" in
                ip | ss) missing+=("$t (iproute2)") ;;
                dnsmasq) missing+=("$t (dnsmasq-base)") ;;
                dig) missing+=("$t (dnsutils)") ;;
                ping) missing+=("$t (iputils-ping)") ;;
                iptables-restore | iptables-save) missing+=("$t (iptables)") ;;
                *) missing+=("$t ($t)") ;;
            esac
        fi
    done
    if ((${#missing[@]} > 0)); then
        die "missing tools (Debian package): ${missing[*]}"
    fi
}

check_env() {
    ((EUID == 0)) || die "the lab needs root (network namespaces)"
    [[ "$LAB_PREFIX" =~ ^[A-Za-z0-9_.-]{1,20}$ ]] ||
        die "LAB_PREFIX must be 1-20 characters of [A-Za-z0-9_.-]: '$LAB_PREFIX'"
    [[ "$LAB_TIMEOUT" =~ ^[0-9]+$ ]] || die "LAB_TIMEOUT must be a number of seconds: '$LAB_TIMEOUT'"
    [[ "$LAB_CT_MAX" =~ ^[0-9]*$ ]] || die "LAB_CT_MAX must be a number of entries: '$LAB_CT_MAX'"
    [[ "$LAB_CT_BUCKETS" =~ ^[0-9]*$ ]] || die "LAB_CT_BUCKETS must be a number of buckets: '$LAB_CT_BUCKETS'"
    local s
    for s in $LAB_SERVERS; do
        [[ "$s" == http || "$s" == dns ]] || die "LAB_SERVERS: unknown server '$s' (http, dns)"
    done
    mkdir -p "$LAB_DIR"
    LAB_DIR="$(cd "$LAB_DIR" && pwd)"
}

has_server() { [[ " $LAB_SERVERS " == *" $1 "* ]]; }

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF -- "$1"; }

# alive PID: the process exists and is not a zombie.
alive() {
    local s
    s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    s="${s##*) }"
    [[ "${s%% *}" != Z ]]
}

# stop_pidfile FILE NS SECONDS: SIGTERM to the recorded process if it still
# runs in NS (never to a recycled pid elsewhere), SIGKILL after SECONDS.
stop_pidfile() {
    local file="$1" ns="$2" secs="$3" pid i
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file" 2>/dev/null || true)"
    rm -f "$file"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    alive "$pid" || return 0
    ip netns identify "$pid" 2>/dev/null | grep -qxF -- "$ns" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        say "lab: pid $pid ($(basename "$file" .pid)) ignored SIGTERM for ${secs}s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Reap it if it is our child (demo runs up and down in one shell).
    wait "$pid" 2>/dev/null || true
}

# Background processes are started with `ip netns exec` itself (which execs
# the program), not through in_ns (a subshell), so that $! is the program's pid.

# ---------------------------------------------------------------------------

write_config() {
    cat >"$LAB_DIR/fastables.toml" <<EOF
# The lab's router (written by lab.sh): the seed topology, run in $RTR.
rules = "rules.v4"

[[interface]]
name = "eth0"
mac = "$MAC_ETH0"
addresses = ["10.0.2.15/24", "1.2.3.56/24"]
xdp_mode = "generic"

[[interface]]
name = "docker0"
mac = "$MAC_DOCKER0"
addresses = ["172.18.0.1/16"]
xdp_mode = "generic"

[[route]]
to = "0.0.0.0/0"
via = "10.0.2.2"
dev = "eth0"

[[route]]
to = "1.1.1.1/32"
via = "1.2.3.4"
dev = "eth0"

# Static neighbors, so that the lab does not depend on ARP resolution (the
# hosts still resolve the router's addresses by ARP).
[[neighbor]]
ip = "10.0.2.2"
mac = "$MAC_UP0"
dev = "eth0"

[[neighbor]]
ip = "1.2.3.4"
mac = "$MAC_UP0"
dev = "eth0"

[[neighbor]]
ip = "172.18.0.2"
mac = "$MAC_CTR"
dev = "docker0"

[workers]
cores = [$LAB_CORES]

$(stats_section)

[control]
socket = "$LAB_DIR/fastables.sock"
EOF
    if [[ -n "$LAB_CT_MAX$LAB_CT_BUCKETS" ]]; then
        {
            say ""
            say "[conntrack]"
            [[ -z "$LAB_CT_MAX" ]] || say "max = $LAB_CT_MAX"
            [[ -z "$LAB_CT_BUCKETS" ]] || say "buckets = $LAB_CT_BUCKETS"
        } >>"$LAB_DIR/fastables.toml"
    fi
    {
        cat <<'EOF'
# The seed's nat table: the container network MASQUERADEd out of eth0.
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -p tcp -j MASQUERADE --to-ports 55666-55680
-A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -j MASQUERADE
EOF
        extra_lines "$LAB_EXTRA_NAT"
        cat <<'EOF'
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
EOF
        extra_lines "$LAB_EXTRA_FILTER"
        say COMMIT
    } >"$LAB_DIR/rules.v4"
}

# extra_lines TEXT: the non-empty lines of TEXT (LAB_EXTRA_*), each ended.
extra_lines() {
    local line
    while IFS= read -r line; do
        [[ -n "$line" ]] && say "$line"
    done <<<"$1"
    return 0
}

# stats_section: the [stats] table of fastables.toml (LAB_STATS).
stats_section() {
    if [[ "$LAB_STATS" == off ]]; then
        printf '[stats]\nlatency = false\n'
    else
        printf '[stats]\nlisten = "127.0.0.1:9464"           # the router namespace'"'"'s own loopback\ninterval_ms = 200\n'
    fi
}

# veth_end NS DEV: brings DEV up with IPv6 and the offloads off: a veth leaves
# checksums unfinished (CHECKSUM_PARTIAL) and passes GSO/GRO super-frames,
# neither of which a forwarder on the wire sees.
veth_end() {
    local ns="$1" dev="$2"
    in_ns "$ns" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1"
    in_ns "$ns" ethtool -K "$dev" tx off tso off gso off gro off >/dev/null
    in_ns "$ns" ip link set "$dev" up
}

make_topology() {
    local ns
    for ns in "$CTR" "$RTR" "$NET"; do
        ip netns add "$ns"
        # Before the veths exist, so that they never send router solicitations.
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        in_ns "$ns" ip link set lo up
    done
    local q="numtxqueues $LAB_QUEUES numrxqueues $LAB_QUEUES"
    # shellcheck disable=SC2086
    ip link add docker0 netns "$RTR" address "$MAC_DOCKER0" $q type veth \
        peer name eth0 netns "$CTR" address "$MAC_CTR" $q
    # shellcheck disable=SC2086
    ip link add eth0 netns "$RTR" address "$MAC_ETH0" $q type veth \
        peer name up0 netns "$NET" address "$MAC_UP0" $q
    veth_end "$CTR" eth0
    veth_end "$RTR" docker0
    veth_end "$RTR" eth0
    veth_end "$NET" up0

    in_ns "$CTR" ip addr add 172.18.0.2/16 dev eth0
    in_ns "$CTR" ip route add default via 172.18.0.1 dev eth0

    in_ns "$NET" ip addr add 10.0.2.2/24 dev up0
    in_ns "$NET" ip addr add 1.2.3.4/24 dev up0
    in_ns "$NET" ip addr add 8.8.8.8/32 dev lo
    in_ns "$NET" ip addr add 1.1.1.1/32 dev lo
    # ARP requests from up0 name up0's address of the target's subnet (as a
    # gateway's do), not the reply's source (8.8.8.8, 1.1.1.1 on lo).
    in_ns "$NET" sysctl -qw net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.up0.arp_announce=2
}

# The HTTP server: files of a directory, `/` and `/whoami` answer with the
# client's address, the log names each client ADDRESS:PORT.
write_httpd() {
    cat >"$LAB_DIR/httpd.py" <<'EOF'
import functools
import http.server
import sys

addr, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]


class Handler(http.server.SimpleHTTPRequestHandler):
    def address_string(self):
        return "%s:%d" % self.client_address[:2]

    def do_GET(self):
        if self.path not in ("/", "/whoami"):
            return super().do_GET()
        peer = "%s:%d" % self.client_address[:2]
        text = peer if self.path == "/whoami" else "hello from %s, you are %s" % (addr, peer)
        body = (text + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s - - [%s] %s\n" % (self.address_string(), self.log_date_time_string(), fmt % args))
        sys.stderr.flush()


server = http.server.ThreadingHTTPServer((addr, port), functools.partial(Handler, directory=root))
print("listening on %s:%d" % (addr, port), flush=True)
server.serve_forever()
EOF
}

# wait_listen PIDFILE PROTO ADDR:PORT: until the server listens (bounded).
wait_listen() {
    local pidfile="$1" proto="$2" at="$3" pid i
    pid="$(cat "$pidfile")"
    for ((i = 0; i < 50; i++)); do
        if in_ns "$NET" ss -Hln"$proto" 2>/dev/null | awk '{print $4}' | grep -qxF -- "$at"; then
            return 0
        fi
        alive "$pid" || break
        sleep 0.1
    done
    local log="${pidfile%.pid}.log"
    [[ -f "$log" ]] && sed 's/^/  | /' "$log" >&2
    die "the server for $at ($proto) in $NET did not start (log: $log)"
}

start_servers() {
    local a
    if has_server http; then
        write_httpd
        for a in 8.8.8.8 1.1.1.1; do
            ip netns exec "$NET" python3 -u "$LAB_DIR/httpd.py" "$a" 80 "$LAB_DIR/www" \
                </dev/null >"$LAB_DIR/http-$a.log" 2>&1 &
            echo $! >"$LAB_DIR/http-$a.pid"
        done
        for a in 8.8.8.8 1.1.1.1; do
            wait_listen "$LAB_DIR/http-$a.pid" t "$a:80"
        done
    fi
    if has_server dns; then
        : >"$LAB_DIR/dns-8.8.8.8.log"
        ip netns exec "$NET" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
            --address=/example.test/93.184.216.34 --listen-address=8.8.8.8 --bind-interfaces \
            --port=53 --user=root --group=root --pid-file="$LAB_DIR/dnsmasq.pid" \
            --log-queries --log-facility="$LAB_DIR/dns-8.8.8.8.log" \
            </dev/null >>"$LAB_DIR/dns-8.8.8.8.log" 2>&1 &
        echo $! >"$LAB_DIR/dns-8.8.8.8.pid"
        wait_listen "$LAB_DIR/dns-8.8.8.8.pid" u "8.8.8.8:53"
    fi
}

# The reference: the Linux kernel routes and NATs with the same configuration.
start_kernel_router() {
    in_ns "$RTR" ip addr add 10.0.2.15/24 dev eth0
    in_ns "$RTR" ip addr add 1.2.3.56/24 dev eth0
    in_ns "$RTR" ip addr add 172.18.0.1/16 dev docker0
    in_ns "$RTR" ip route add default via 10.0.2.2 dev eth0
    in_ns "$RTR" ip route add 1.1.1.1/32 via 1.2.3.4 dev eth0
    in_ns "$RTR" ip neigh replace 10.0.2.2 lladdr "$MAC_UP0" dev eth0 nud permanent
    in_ns "$RTR" ip neigh replace 1.2.3.4 lladdr "$MAC_UP0" dev eth0 nud permanent
    in_ns "$RTR" ip neigh replace 172.18.0.2 lladdr "$MAC_CTR" dev docker0 nud permanent
    in_ns "$RTR" iptables-restore "$LAB_DIR/rules.v4"
    in_ns "$RTR" sysctl -qw net.ipv4.ip_forward=1
    say "kernel router (KERNEL_ROUTER=1): fastables is not started" >"$LAB_DIR/fastables.log"
    say kernel >"$LAB_DIR/mode"
}

start_fastables() {
    local log="$LAB_DIR/fastables.log" pid i rc
    ip netns exec "$RTR" "$FASTABLES" run -c "$LAB_DIR/fastables.toml" </dev/null >"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$LAB_DIR/fastables.pid"
    say fastables >"$LAB_DIR/mode"
    for ((i = 0; i < LAB_TIMEOUT * 10; i++)); do
        if grep -qw running "$log"; then
            return 0
        fi
        if ! alive "$pid"; then
            rc=0
            wait "$pid" 2>/dev/null || rc=$?
            sed 's/^/  | /' "$log" >&2
            die "fastables run exited (status $rc) before it said 'running' (log: $log); \`down\` removes the lab"
        fi
        sleep 0.1
    done
    sed 's/^/  | /' "$log" >&2
    die "fastables run did not say 'running' within ${LAB_TIMEOUT}s (log: $log); \`down\` removes the lab"
}

lab_exists() {
    ns_exists "$CTR" || ns_exists "$RTR" || ns_exists "$NET" || [[ -f "$LAB_DIR/fastables.pid" ]]
}

lab_up() {
    check_env
    need ip ss ethtool
    has_server http && need python3
    has_server dns && need dnsmasq
    if [[ "$KERNEL_ROUTER" == 1 ]]; then
        need iptables-restore
    else
        local bin
        bin="$(command -v "$FASTABLES" 2>/dev/null)" ||
            die "FASTABLES=$FASTABLES: no such program (point FASTABLES at the fastables binary)"
        FASTABLES="$(realpath "$bin")"
    fi
    if lab_exists; then
        say "lab: removing the previous lab (${LAB_PREFIX}*)"
        lab_down >/dev/null
    fi
    rm -f "$LAB_DIR/fastables.log" "$LAB_DIR"/http-*.log "$LAB_DIR"/dns-*.log "$LAB_DIR/mode"
    mkdir -p "$LAB_DIR/www"
    write_config
    make_topology
    start_servers
    if [[ "$KERNEL_ROUTER" == 1 ]]; then
        start_kernel_router
        say "lab: up: $CTR (172.18.0.2) -- $RTR (the kernel, KERNEL_ROUTER=1) -- $NET (8.8.8.8, 1.1.1.1); dir $LAB_DIR"
    else
        start_fastables
        say "lab: up: $CTR (172.18.0.2) -- $RTR (fastables, pid $(cat "$LAB_DIR/fastables.pid")) -- $NET (8.8.8.8, 1.1.1.1); dir $LAB_DIR"
    fi
}

lab_down() {
    check_env
    local f ns pids
    stop_pidfile "$LAB_DIR/fastables.pid" "$RTR" 3
    for f in "$LAB_DIR"/http-*.pid "$LAB_DIR"/dns-*.pid; do
        [[ -e "$f" ]] && stop_pidfile "$f" "$NET" 1
    done
    # Whatever else still runs in the lab's namespaces (they are ours).
    for ns in "$CTR" "$RTR" "$NET"; do
        if ns_exists "$ns"; then
            pids="$(ip netns pids "$ns" 2>/dev/null || true)"
            if [[ -n "$pids" ]]; then
                # shellcheck disable=SC2086
                kill -KILL $pids 2>/dev/null || true
            fi
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    rm -f "$LAB_DIR/fastables.sock" "$LAB_DIR/dnsmasq.pid" "$LAB_DIR/mode"
    say "lab: down (${LAB_PREFIX}ctr, ${LAB_PREFIX}rtr, ${LAB_PREFIX}net removed)"
}

# ---------------------------------------------------------------------------

DEMO_FAILED=0

# demo_step CMD...: runs CMD in the container, prints its output and status.
demo_step() {
    say ""
    say "\$ $*"
    local rc
    set +e
    in_ns "$CTR" "$@" 2>&1 | sed 's/^/  /'
    rc="${PIPESTATUS[0]}"
    set -e
    if ((rc == 0)); then
        say "  -> ok"
    else
        say "  -> FAILED (exit $rc)"
        DEMO_FAILED=$((DEMO_FAILED + 1))
    fi
}

demo_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # Take the lab down even if whoever reads our output has gone (| head).
    trap '' PIPE
    set +e
    say ""
    say "== down"
    lab_down || true
    exit "$rc"
}

lab_demo() {
    check_env
    need curl dig ping
    LAB_SERVERS="http dns"
    trap demo_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    say "== up"
    lab_up
    say ""
    local tracer=""
    if [[ "$KERNEL_ROUTER" != 1 ]]; then
        # The first packet of the HTTP connection to 8.8.8.8, traced.
        timeout 10 "$FASTABLES" trace --socket "$LAB_DIR/fastables.sock" \
            -p tcp -d 8.8.8.8 --dport 80 --count 1 >"$LAB_DIR/trace.txt" 2>&1 &
        tracer=$!
        sleep 0.3
    fi
    say "== from the container ($CTR, 172.18.0.2)"
    demo_step curl -sS -m 5 http://8.8.8.8/
    demo_step curl -sS -m 5 http://1.1.1.1/
    demo_step dig +short +time=2 +tries=2 @8.8.8.8 example.test
    demo_step ping -c 2 -W 2 8.8.8.8
    # The servers log asynchronously; give them a moment.
    sleep 0.2
    say ""
    say "== what the servers saw (client address after NAT)"
    local a
    for a in 8.8.8.8 1.1.1.1; do
        say "http $a:80:"
        grep -E '"(GET|HEAD) ' "$LAB_DIR/http-$a.log" | sed 's/^/  /' || say "  (no request)"
    done
    say "dns 8.8.8.8:53:"
    grep -F 'query[' "$LAB_DIR/dns-8.8.8.8.log" | sed 's/^.*dnsmasq[^:]*: /  /' || say "  (no query)"
    say ""
    if [[ "$KERNEL_ROUTER" == 1 ]]; then
        say "== the kernel router ($RTR): iptables -t nat -L -v -n"
        in_ns "$RTR" iptables -t nat -L -v -n | sed 's/^/  /'
        if command -v conntrack >/dev/null 2>&1; then
            say "== conntrack -L"
            in_ns "$RTR" conntrack -L 2>&1 | sed 's/^/  /' || true
        fi
    else
        local sock="$LAB_DIR/fastables.sock"
        if [[ -n "$tracer" ]]; then
            wait "$tracer" || true
            say "== fastables trace -p tcp -d 8.8.8.8 --dport 80 --count 1 (the curl's SYN)"
            sed 's/^/  /' "$LAB_DIR/trace.txt"
        fi
        say "== the running instance ($RTR): fastables list -t nat -v -n"
        { "$FASTABLES" list --socket "$sock" -t nat -v -n 2>&1 || true; } | sed 's/^/  /' || true
        say "== fastables conntrack -L"
        { "$FASTABLES" conntrack --socket "$sock" -L 2>&1 || true; } | sed 's/^/  /'
        say "== fastables log ($LAB_DIR/fastables.log)"
        sed 's/^/  /' "$LAB_DIR/fastables.log"
    fi
    say ""
    if ((DEMO_FAILED > 0)); then
        say "demo: $DEMO_FAILED of 4 steps FAILED"
        return 1
    fi
    say "demo: all 4 steps ok"
}

case "${1:-}" in
    up) lab_up ;;
    demo) lab_demo ;;
    down) lab_down ;;
    *)
        say "usage: lab.sh up|demo|down   (env: FASTABLES, LAB_DIR, LAB_PREFIX, LAB_SERVERS, LAB_TIMEOUT, LAB_CORE, LAB_CORES, LAB_STATS, LAB_CT_MAX, LAB_CT_BUCKETS, LAB_EXTRA_NAT, LAB_EXTRA_FILTER, KERNEL_ROUTER)" >&2
        exit 2
        ;;
esac
