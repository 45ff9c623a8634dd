//! End-to-end tests of the live data plane: `fastables run` as the router of
//! the reference lab (`lab/lab.sh`, the seed topology in network namespaces:
//! a container, the router, the internet with servers on 8.8.8.8 and 1.1.1.1),
//! with real hosts, sockets and tools on both sides.
//!
//! Each test builds its own lab (namespaces named `fl<pid><tag>-ctr|rtr|net`,
//! so that the parallel tests, and a user's `fastables lab`, never collide)
//! and takes it down on drop, also when it fails. Every network operation has
//! a timeout, so a broken data plane fails fast; a failure message carries the
//! fastables log and the servers' logs.
//!
//! Needs root and ip, ss, ethtool, python3, curl, ping, timeout, and a
//! `fastables run`; skipped with a note otherwise, except under CI (env `CI`
//! set), where that is a failure. `FASTABLES_LIVE_KERNEL=1` runs the same
//! tests with the Linux kernel as the router (lab.sh's `KERNEL_ROUTER=1`;
//! also needs iptables and conntrack): the reference they were written
//! against. What the tests ask of the router's control plane goes to the
//! control socket (`fastables restore|save|conntrack --socket`), or to
//! `iptables-restore|iptables-save|conntrack` in the router's namespace.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::describe;
use common::lab::{kernel_router, short, skip, Lab, FASTABLES};

/// The seed's MASQUERADE port range for TCP.
const TCP_PORTS: std::ops::RangeInclusive<u16> = 55666..=55680;

/// What the live tests ask of the router beside the lab's basics
/// (`common::lab`): each through fastables, or the kernel's own tools
/// with `FASTABLES_LIVE_KERNEL=1`.
impl Lab {
    /// The router's connection table: `conntrack -L` lines.
    fn conntrack_list(&self) -> String {
        let out = if kernel_router() {
            self.exec("rtr", 10, &["conntrack", "-L"])
        } else {
            self.control("conntrack", &["-L"])
        };
        assert!(
            out.status.success(),
            "conntrack -L on the router failed: {}{}",
            describe(&out),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The lab's HTTP server in the container, on 172.18.0.2:80 (the DNAT
    /// tests' target; `/whoami` answers with the client's address).
    fn container_httpd(&mut self) {
        let httpd = self.dir.join("httpd.py");
        let www = self.dir.join("www");
        self.server(
            "ctr",
            "http-172.18.0.2",
            &[
                "python3",
                "-u",
                "-c",
                HTTPD_NO_FQDN,
                httpd.to_str().unwrap(),
                "172.18.0.2",
                "80",
                www.to_str().unwrap(),
            ],
        );
    }

    /// The router's `iptables -t TABLE -L -v -n -x`.
    fn list(&self, table: &str) -> String {
        let args = ["-t", table, "-L", "-v", "-n", "-x"];
        let out = if kernel_router() {
            self.exec("rtr", 10, &[&["iptables"][..], &args].concat())
        } else {
            self.control(
                "list",
                &args[..2]
                    .iter()
                    .chain(&args[3..])
                    .copied()
                    .collect::<Vec<_>>(),
            )
        };
        assert!(
            out.status.success(),
            "iptables -L on the router failed: {}{}",
            describe(&out),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `iptables-restore FILE` on the router: the tables of FILE replace the
    /// running ones.
    fn restore(&self, file: &Path) -> Output {
        self.restore_with(file, &[])
    }

    /// `iptables-restore OPTS FILE` on the router (`-n`: on top of the
    /// running tables).
    fn restore_with(&self, file: &Path, opts: &[&str]) -> Output {
        let file = file.to_str().unwrap();
        if kernel_router() {
            let mut args = vec!["iptables-restore", "-w", "5"];
            args.extend_from_slice(opts);
            args.push(file);
            self.exec("rtr", 10, &args)
        } else {
            let mut args = opts.to_vec();
            args.push(file);
            self.control("restore", &args)
        }
    }

    /// The router's `iptables-save`, by table.
    fn save(&self) -> Tables {
        let out = if kernel_router() {
            self.exec("rtr", 10, &["iptables-save"])
        } else {
            self.control("save", &[])
        };
        assert!(
            out.status.success(),
            "iptables-save on the router failed: {}{}",
            describe(&out),
            self.logs()
        );
        tables(&String::from_utf8_lossy(&out.stdout))
    }
}

/// `ADDRESS:PORT` as the HTTP server `/whoami` at `url` saw the container.
fn whoami(lab: &Lab, url: &str) -> (String, u16) {
    let body = lab.ctr_ok(10, &["curl", "-sS", "-m", "5", url]);
    let parsed = body
        .trim()
        .rsplit_once(':')
        .and_then(|(a, p)| Some((a.to_string(), p.parse::<u16>().ok()?)));
    parsed.unwrap_or_else(|| panic!("{url} answered {body:?}{}", lab.logs()))
}

/// A UDP echo server that answers with the address it saw.
const UDP_WHOAMI: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("8.8.8.8", 53))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    sys.stderr.write("udp from %s:%d\n" % peer)
    s.sendto(("%s:%d" % peer).encode(), peer)
"#;

/// The container's client: from port 33894, up to 3 tries of 2 s; prints the
/// answer and the address it came from.
const UDP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 33894))
s.settimeout(2)
for _ in range(3):
    s.sendto(b"who am i", ("8.8.8.8", 53))
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        print("timeout", file=sys.stderr)
        continue
    print("%s from %s:%d" % (data.decode(), peer[0], peer[1]))
    sys.exit(0)
sys.exit(1)
"#;

#[test]
fn udp_through_masquerade_keeps_its_source_port() {
    let Some(mut lab) = Lab::start("u") else {
        return;
    };
    lab.python_server("udp-8.8.8.8", UDP_WHOAMI);
    let got = lab.ctr_ok(15, &["python3", "-c", UDP_CLIENT]);
    assert_eq!(
        got.trim(),
        "10.0.2.15:33894 from 8.8.8.8:53",
        "the server saw the container as (answer from): {got:?}{}",
        lab.logs()
    );
}

#[test]
fn tcp_through_masquerade_gets_a_port_of_the_range() {
    let Some(lab) = Lab::start("t") else {
        return;
    };
    let (addr, port) = whoami(&lab, "http://8.8.8.8/whoami");
    assert!(
        addr == "10.0.2.15" && TCP_PORTS.contains(&port),
        "8.8.8.8 saw the container as {addr}:{port}, not 10.0.2.15:{TCP_PORTS:?}{}",
        lab.logs()
    );
}

#[test]
fn masquerade_takes_the_address_of_the_next_hops_subnet() {
    let Some(lab) = Lab::start("m") else {
        return;
    };
    let (addr, port) = whoami(&lab, "http://1.1.1.1/whoami");
    assert!(
        addr == "1.2.3.56" && TCP_PORTS.contains(&port),
        "1.1.1.1 (via 1.2.3.4) saw the container as {addr}:{port}, not 1.2.3.56:{TCP_PORTS:?}{}",
        lab.logs()
    );
    // And the default route's address for the others, in the same instance.
    let (addr, _) = whoami(&lab, "http://8.8.8.8/whoami");
    assert_eq!(addr, "10.0.2.15", "{}", lab.logs());
}

#[test]
fn ping_through_nat() {
    let Some(lab) = Lab::start("p") else {
        return;
    };
    let out = lab.ctr_ok(
        15,
        &["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "8.8.8.8"],
    );
    assert!(
        out.contains("3 received") && out.contains("from 8.8.8.8"),
        "ping 8.8.8.8 from the container:\n{out}{}",
        lab.logs()
    );
}

/// `len` pseudo-random bytes (xorshift64), the same on every run.
fn big_file(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

#[test]
fn download_20mb_over_http_through_nat() {
    let Some(lab) = Lab::start("d") else {
        return;
    };
    let data = big_file(20 << 20);
    std::fs::write(lab.dir.join("www/big.bin"), &data).unwrap();
    let got_path = lab.dir.join("got.bin");
    let speed = lab.ctr_ok(
        70,
        &[
            "curl",
            "-sS",
            "-m",
            "60",
            "-o",
            got_path.to_str().unwrap(),
            "-w",
            "%{size_download} bytes, %{speed_download} bytes/s",
            "http://8.8.8.8/big.bin",
        ],
    );
    eprintln!("download through the router: {speed}");
    let got = std::fs::read(&got_path).unwrap();
    if got != data {
        let first = got.iter().zip(&data).position(|(a, b)| a != b);
        panic!(
            "the download differs: {} bytes received of {}, first difference at {first:?}{}",
            got.len(),
            data.len(),
            lab.logs()
        );
    }
    if !kernel_router() {
        // The seed's rules are flow-invariant: the download's segments and
        // the client's ACKs take their connection's decision.
        let st = lab.control("stats", &[]);
        let text = String::from_utf8_lossy(&st.stdout).into_owned();
        let hits: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("flow cache: on, "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no flow cache line: {text}"));
        assert!(hits > 10_000, "flow cache hits: {text}");
    }
}

/// An `iptables-save` listing by table: its chain lines (without counters)
/// and rules in order; comments left out.
type Tables = BTreeMap<String, Vec<String>>;

fn tables(text: &str) -> Tables {
    let mut t = Tables::new();
    let mut cur: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            cur = Some(name.to_string());
            t.entry(name.to_string()).or_default();
        } else if line == "COMMIT" {
            cur = None;
        } else {
            let table = cur.clone().unwrap_or_default();
            let line = match line.strip_prefix(':') {
                // `:CHAIN POLICY [packets:bytes]`
                Some(_) => line
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
                None => line.to_string(),
            };
            t.entry(table).or_default().push(line);
        }
    }
    t
}

/// The lab's HTTP server (lab.sh's httpd.py) without the reverse lookup of
/// its own address that http.server makes when it binds: in the container,
/// that query would leave through the router for a resolver that is not there.
const HTTPD_NO_FQDN: &str = "import runpy, socket, sys; \
    socket.getfqdn = lambda name='': name; \
    sys.argv = sys.argv[1:]; \
    runpy.run_path(sys.argv[0], run_name='__main__')";

/// The `src=`, `dst=`, `sport=`, `dport=` fields of a `conntrack -L` line:
/// the ORIGINAL tuple's, then the REPLY's.
fn ct_tuples(line: &str) -> String {
    line.split_whitespace()
        .filter(|w| {
            ["src=", "dst=", "sport=", "dport="]
                .iter()
                .any(|k| w.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn dnat_forwards_a_port_from_outside_to_the_container() {
    let dnat = "-A PREROUTING -i eth0 -p tcp -m tcp --dport 8088 \
                -j DNAT --to-destination 172.18.0.2:80";
    let Some(mut lab) = Lab::start_with("n", &[("LAB_EXTRA_NAT", dnat)]) else {
        return;
    };
    lab.container_httpd();
    // From the internet as 10.0.2.2: the page (the client address the server
    // saw), then curl's own port.
    let out = lab.exec(
        "net",
        10,
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "--interface",
            "10.0.2.2",
            "-w",
            "%{local_port}\n",
            "http://10.0.2.15:8088/whoami",
        ],
    );
    assert!(
        out.status.success(),
        "curl http://10.0.2.15:8088/whoami from 10.0.2.2 failed: {}{}",
        describe(&out),
        lab.logs()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let [seen, port] = lines[..] else {
        panic!("unexpected answer {text:?}{}", lab.logs());
    };
    assert_eq!(
        seen,
        format!("10.0.2.2:{port}"),
        "the server in the container saw the client (10.0.2.2:{port}) as {seen}: no SNAT expected{}",
        lab.logs()
    );
    let table = lab.conntrack_list();
    let entry = table
        .lines()
        .find(|l| l.starts_with("tcp ") && l.contains(&format!(" sport={port} dport=8088 ")))
        .unwrap_or_else(|| {
            panic!(
                "no conntrack entry for 10.0.2.2:{port} -> :8088:\n{table}{}",
                lab.logs()
            )
        });
    assert_eq!(
        ct_tuples(entry),
        format!(
            "src=10.0.2.2 dst=10.0.2.15 sport={port} dport=8088 \
             src=172.18.0.2 dst=10.0.2.2 sport=80 dport={port}"
        ),
        "the DNAT connection's tuples (ORIGINAL, REPLY) in `{entry}`{}",
        lab.logs()
    );
}

/// Servers in the internet namespace: TCP on 1.1.1.1:81-83 (an HTTP answer
/// `ok`), UDP echo on 8.8.8.8:5353-5354; each connection and datagram logged.
const LISTENERS: &str = r#"
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in (81, 82, 83):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("1.1.1.1", port))
    t.listen(16)
    sel.register(t, selectors.EVENT_READ, ("tcp", port))
for port in (5353, 5354):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("8.8.8.8", port))
    sel.register(u, selectors.EVENT_READ, ("udp", port))
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        proto, port = key.data
        if proto == "tcp":
            c, peer = key.fileobj.accept()
            sys.stderr.write("tcp %d from %s:%d\n" % (port, peer[0], peer[1]))
            sys.stderr.flush()
            c.settimeout(2)
            try:
                c.recv(4096)
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            except OSError:
                pass
            c.close()
        else:
            data, peer = key.fileobj.recvfrom(2048)
            sys.stderr.write("udp %d from %s:%d\n" % (port, peer[0], peer[1]))
            sys.stderr.flush()
            key.fileobj.sendto(data, peer)
"#;

/// One datagram to 8.8.8.8:PORT on a connected UDP socket; prints the answer,
/// `timeout` (2 s), or the ICMP error that came back (ECONNREFUSED, and from
/// the socket's error queue who sent it).
const UDP_CONNECTED: &str = r#"
import socket, struct, sys
IP_RECVERR = 11
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
s.settimeout(2)
s.connect(("8.8.8.8", int(sys.argv[1])))
s.send(b"hello")
try:
    print("answer %s" % s.recv(2048).decode())
except ConnectionRefusedError:
    _, anc, _, _ = s.recvmsg(2048, 512, socket.MSG_ERRQUEUE)
    _, _, d = anc[0]
    errno, origin, itype, icode = struct.unpack("=IBBB", d[:7])
    print("ECONNREFUSED from %s (icmp type %d code %d)" % (socket.inet_ntoa(d[20:24]), itype, icode))
except socket.timeout:
    print("timeout")
"#;

#[test]
fn filter_reject_and_drop_as_the_client_sees_them() {
    let rules = "-A FORWARD -d 1.1.1.1/32 -p tcp -m tcp --dport 81 -j REJECT --reject-with tcp-reset\n\
                 -A FORWARD -d 1.1.1.1/32 -p tcp -m tcp --dport 82 -j DROP\n\
                 -A FORWARD -d 8.8.8.8/32 -p udp -m udp --dport 5353 -j REJECT --reject-with icmp-port-unreachable";
    let Some(mut lab) = Lab::start_with("f", &[("LAB_EXTRA_FILTER", rules)]) else {
        return;
    };
    lab.python_server("listen", LISTENERS);
    // The ports next to them are open: only the rules stand in the way.
    let body = lab.ctr_ok(10, &["curl", "-sS", "-m", "5", "http://1.1.1.1:83/"]);
    assert_eq!(body, "ok\n", "{}", lab.logs());
    let got = lab.ctr_ok(10, &["python3", "-c", UDP_CONNECTED, "5354"]);
    assert_eq!(got.trim(), "answer hello", "{}", lab.logs());

    // REJECT --reject-with tcp-reset: refused at once.
    let t = Instant::now();
    let out = lab.exec(
        "ctr",
        10,
        &["curl", "-sS", "-v", "-m", "5", "http://1.1.1.1:81/"],
    );
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(7)
            && err.contains("Connection refused")
            && took < Duration::from_secs(3),
        "curl to 1.1.1.1:81 (REJECT tcp-reset) after {took:?}: {}{}",
        describe(&out),
        lab.logs()
    );

    // DROP: nothing comes back, curl gives up.
    let out = lab.exec("ctr", 10, &["curl", "-sS", "-m", "2", "http://1.1.1.1:82/"]);
    assert_eq!(
        out.status.code(),
        Some(28),
        "curl -m 2 to 1.1.1.1:82 (DROP): {}{}",
        describe(&out),
        lab.logs()
    );

    // REJECT --reject-with icmp-port-unreachable, from the router.
    let got = lab.ctr_ok(10, &["python3", "-c", UDP_CONNECTED, "5353"]);
    assert_eq!(
        got.trim(),
        "ECONNREFUSED from 172.18.0.1 (icmp type 3 code 3)",
        "UDP to 8.8.8.8:5353 (REJECT icmp-port-unreachable){}",
        lab.logs()
    );

    // The rule counters, as `iptables -L -v -n -x` shows them: one SYN for the
    // reset, one datagram for the port unreachable, the SYN and its
    // retransmissions for the DROP.
    let listing = lab.list("filter");
    let counted = |needle: &str| -> (u64, u64) {
        let line = listing
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no rule with `{needle}` in\n{listing}"));
        let mut w = line.split_whitespace().map(|x| x.parse::<u64>().unwrap());
        (w.next().unwrap(), w.next().unwrap())
    };
    assert_eq!(
        counted("tcp dpt:81 reject-with tcp-reset"),
        (1, 60),
        "{listing}"
    );
    let (n, bytes) = counted("tcp dpt:82");
    assert!((1..=3).contains(&n) && bytes == 60 * n, "{listing}");
    let (n, bytes) = counted("udp dpt:5353 reject-with icmp-port-unreachable");
    assert!(n == 1 && bytes > 28, "{listing}");
    assert!(
        listing.starts_with("Chain INPUT (policy ACCEPT "),
        "{listing}"
    );

    let log = std::fs::read_to_string(lab.dir.join("listen.log")).unwrap_or_default();
    for what in ["tcp 81 ", "tcp 82 ", "udp 5353 "] {
        assert!(
            !log.contains(what),
            "the server got what the rules stop ({what}):\n{log}{}",
            lab.logs()
        );
    }
}

#[test]
fn icmp_time_exceeded_comes_back_through_nat() {
    let Some(lab) = Lab::start("x") else {
        return;
    };
    // 10.0.2.2 forwards towards a next hop that is not there; with TTL 2 the
    // ping reaches it with TTL 1 (the router took one), and it answers with
    // time exceeded to 10.0.2.15, which the router must translate back.
    for args in [
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"][..],
        &[
            "ip",
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "10.0.2.99",
            "dev",
            "up0",
            "onlink",
        ],
    ] {
        let out = lab.exec("net", 10, args);
        assert!(out.status.success(), "{}: {}", short(args), describe(&out));
    }
    let out = lab.exec(
        "ctr",
        10,
        &["ping", "-n", "-c", "1", "-t", "2", "-W", "2", "203.0.113.1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From 10.0.2.2 icmp_seq=1 Time to live exceeded"),
        "ping -t 2 203.0.113.1 from the container: {}{}",
        describe(&out),
        lab.logs()
    );
}

/// The lab's rules (lab.sh's rules.v4) with `filter` appended to the filter
/// table.
fn seed_rules(filter: &str) -> String {
    format!(
        "*nat\n\
         :PREROUTING ACCEPT [0:0]\n\
         :INPUT ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         -A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -p tcp -j MASQUERADE --to-ports 55666-55680\n\
         -A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -j MASQUERADE\n\
         COMMIT\n\
         *filter\n\
         :INPUT ACCEPT [0:0]\n\
         :FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         {filter}\
         COMMIT\n"
    )
}

#[test]
fn rule_reloads_during_a_transfer_lose_no_connection() {
    let Some(lab) = Lab::start("r") else {
        return;
    };
    // Two valid rulesets (the seed's, and with a filter rule that matches
    // nothing of the transfer), and an invalid one.
    let extra = "-A FORWARD -d 192.0.2.1/32 -p tcp -m tcp --dport 9 -j DROP\n";
    let rules = [seed_rules(""), seed_rules(extra)];
    let paths = [lab.dir.join("a.v4"), lab.dir.join("b.v4")];
    for (p, r) in paths.iter().zip(&rules) {
        std::fs::write(p, r).unwrap();
    }
    let bad = lab.dir.join("bad.v4");
    std::fs::write(
        &bad,
        format!(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             {extra}-A NOSUCHCHAIN -j DROP\nCOMMIT\n"
        ),
    )
    .unwrap();
    assert_eq!(
        lab.save(),
        tables(&rules[0]),
        "the lab's rules are the seed's"
    );

    let data = big_file(30 << 20);
    std::fs::write(lab.dir.join("www/big30.bin"), &data).unwrap();
    let got_path = lab.dir.join("got30.bin");
    let _ = std::fs::remove_file(&got_path);
    // About 5 s at 6 MiB/s.
    let mut curl = Command::new("timeout")
        .args(["-k", "2", "40", "ip", "netns", "exec"])
        .arg(lab.ns("ctr"))
        .args(["curl", "-sS", "-m", "30", "--limit-rate", "6M", "-o"])
        .arg(&got_path)
        .args([
            "-w",
            "%{size_download} bytes, %{speed_download} bytes/s",
            "http://8.8.8.8/big30.bin",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let received = || std::fs::metadata(&got_path).map_or(0, |m| m.len());
    // The connection is established and data flows before the first reload.
    let t = Instant::now();
    while received() == 0 && curl.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no byte of the download within 10 s{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // 50 reloads, alternating (the last one is b.v4), spread over the first
    // half of the transfer (by the bytes received: curl keeps its rate limit
    // only on average, in bursts); halfway, the invalid file.
    let t0 = Instant::now();
    let mut done = 0;
    'reloads: for i in 0..50u64 {
        while received() < data.len() as u64 / 2 * i / 50 {
            if curl.try_wait().unwrap().is_some() {
                break 'reloads;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if curl.try_wait().unwrap().is_some() {
            break;
        }
        let path = &paths[i as usize % 2];
        let out = lab.restore(path);
        assert!(
            out.status.success(),
            "reload {i} ({}) failed: {}{}",
            path.display(),
            describe(&out),
            lab.logs()
        );
        if i == 24 {
            let before = lab.save();
            let out = lab.restore(&bad);
            assert_eq!(
                out.status.code(),
                Some(1),
                "restoring the invalid file: {}",
                describe(&out)
            );
            assert_eq!(lab.save(), before, "the invalid file changed the rules");
        }
        done += 1;
    }
    let reloads = t0.elapsed();
    let at = received();
    let out = curl.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the download failed ({done} reloads in {reloads:?}): {}{}",
        describe(&out),
        lab.logs()
    );
    assert_eq!(
        done,
        50,
        "the download was over after {done} reloads ({reloads:?}): {}",
        describe(&out)
    );
    eprintln!(
        "download during 50 reloads ({reloads:?}, {at} bytes received by then): {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got = std::fs::read(&got_path).unwrap();
    if got != data {
        let first = got.iter().zip(&data).position(|(a, b)| a != b);
        panic!(
            "the download differs: {} bytes received of {}, first difference at {first:?}{}",
            got.len(),
            data.len(),
            lab.logs()
        );
    }
    assert_eq!(
        lab.save(),
        tables(&rules[1]),
        "the running rules are not the last valid ruleset (b.v4)"
    );
}

/// The running instance's `/metrics` (the lab's `[stats] listen` on the
/// router's loopback), read back by Debian's prometheus_client parser.
#[test]
fn metrics_count_the_traffic_and_parse() {
    if kernel_router() {
        return; // fastables' own exporter
    }
    let parser_ok = Command::new("/usr/bin/python3")
        .args(["-c", "import prometheus_client.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !parser_ok {
        skip("python3-prometheus-client not installed");
        return;
    }
    let Some(lab) = Lab::start("mx") else {
        return;
    };
    lab.ctr_ok(
        15,
        &["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "8.8.8.8"],
    );
    // The snapshot is published every 200 ms.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let script = "import sys, urllib.request\n\
        from prometheus_client.parser import text_string_to_metric_families as f\n\
        text = urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=5).read().decode()\n\
        v = {}\n\
        for fam in f(text):\n\
        \x20   for s in fam.samples:\n\
        \x20       v[(s.name, tuple(sorted(s.labels.items())))] = s.value\n\
        rx = v[('fastables_rx_packets_total', (('interface', 'docker0'), ('queue', '0')))]\n\
        tx = v[('fastables_tx_packets_total', (('interface', 'eth0'), ('queue', '0')))]\n\
        n = v[('fastables_batch_latency_seconds_count', ())]\n\
        ct = v[('fastables_conntrack_entries', ())]\n\
        print(int(rx), int(tx), int(n), int(ct))\n";
    let out = lab.exec("rtr", 15, &["/usr/bin/python3", "-c", script]);
    assert!(
        out.status.success(),
        "reading /metrics: {}{}",
        describe(&out),
        lab.logs()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(v[0] >= 3 && v[1] >= 3, "rx/tx counters: {text}");
    if !kernel_router() {
        // The stats table's rates over the last interval (200 ms in the lab).
        let st = lab.control("stats", &[]);
        let table = String::from_utf8_lossy(&st.stdout).into_owned();
        for dev in ["eth0", "docker0"] {
            assert!(
                table.contains(&format!("rate {dev} (last 0.")) && table.contains(" pps "),
                "{table}"
            );
        }
        let js = lab.control("stats", &["--json"]);
        assert!(
            String::from_utf8_lossy(&js.stdout).contains("\"rx_pps\":"),
            "{js:?}"
        );
    }
    assert!(v[2] >= 3, "batch latency samples: {text}");
    assert_eq!(v[3], 1, "one ICMP connection: {text}");
}

/// `fastables trace` on the running instance: the picture of the seed
/// write-up, the REPLY tuple before NAT (`dst=172.18.0.2`) and after
/// (`dst=10.0.2.15 dport=<55666-55680>`), with the rule that decided.
#[test]
fn trace_shows_the_tuples_before_and_after_nat() {
    if kernel_router() {
        return; // fastables' own tracer
    }
    let Some(lab) = Lab::start("tr") else {
        return;
    };
    let tracer = Command::new("timeout")
        .args(["-k", "2", "15", FASTABLES, "trace", "--socket"])
        .arg(lab.dir.join("fastables.sock"))
        .args(["-p", "tcp", "--dport", "80", "--count", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The trace is set once the instance has answered; give it a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let page = lab.ctr_ok(15, &["curl", "-sS", "-m", "5", "http://8.8.8.8/whoami"]);
    let out = tracer.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "trace: {}{}",
        describe(&out),
        lab.logs()
    );
    assert!(
        text.starts_with("trace 1: in docker0: 172.18.0.2:"),
        "{text}"
    );
    assert!(
        text.contains("conntrack: NEW ORIGINAL src=172.18.0.2 dst=8.8.8.8")
            && text.contains("REPLY src=8.8.8.8 dst=172.18.0.2 sport=80"),
        "before NAT:\n{text}"
    );
    assert!(
        text.contains("nat POSTROUTING: MASQUERADE by POSTROUTING rule 1"),
        "{text}"
    );
    let after = text
        .lines()
        .find(|l| l.contains("conntrack after NAT"))
        .unwrap_or_default();
    let port: u16 = after
        .rsplit("dport=")
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        after.contains("REPLY src=8.8.8.8 dst=10.0.2.15 sport=80") && TCP_PORTS.contains(&port),
        "after NAT: {after}\n{text}"
    );
    assert!(page.contains("10.0.2.15"), "{page}");
}

/// SIGHUP reloads the rules file: a good file replaces the ruleset, a bad
/// one is reported and changes nothing, and traffic keeps flowing.
#[test]
fn sighup_reloads_the_rules_file_all_or_nothing() {
    if kernel_router() {
        return; // fastables' own reload
    }
    let Some(lab) = Lab::start("h") else {
        return;
    };
    let pid = std::fs::read_to_string(lab.dir.join("fastables.pid"))
        .unwrap()
        .trim()
        .to_string();
    let rules = lab.dir.join("rules.v4");
    let extra = "-A FORWARD -d 192.0.2.1/32 -j DROP";
    std::fs::write(&rules, seed_rules(&format!("{extra}\n"))).unwrap();
    let hup = || {
        let st = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(st.success());
        // The worker looks at the signal every few milliseconds.
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    hup();
    let saved = String::from_utf8_lossy(&lab.control("save", &[]).stdout).into_owned();
    assert!(
        saved.contains(extra),
        "after a good reload:\n{saved}{}",
        lab.logs()
    );
    // A bad file: reported, nothing changes.
    std::fs::write(&rules, "*filter\n-A NOSUCHCHAIN -j DROP\nCOMMIT\n").unwrap();
    hup();
    let again = String::from_utf8_lossy(&lab.control("save", &[]).stdout).into_owned();
    assert_eq!(
        again
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        saved
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
    );
    let log = std::fs::read_to_string(lab.dir.join("fastables.log")).unwrap_or_default();
    assert!(
        log.contains("reload: the running ruleset is unchanged"),
        "{log}"
    );
    // Traffic still flows through the (still loaded) MASQUERADE.
    let out = lab.ctr_ok(10, &["ping", "-n", "-c", "1", "-W", "2", "8.8.8.8"]);
    assert!(out.contains("1 received"), "{out}");
}

/// Two workers (veths with two queues each): connections out through
/// MASQUERADE and in through DNAT all work, each connection is in exactly one
/// worker's shard, and frames a veth put on the wrong worker's queue were
/// handed to their owner.
#[test]
fn two_workers_share_the_connections() {
    let dnat = "-A PREROUTING -i eth0 -p tcp -m tcp --dport 8088 \
                -j DNAT --to-destination 172.18.0.2:80\n\
                -A PREROUTING -i eth0 -p tcp -m tcp --dport 8089 \
                -j DNAT --to-destination 172.18.0.2:80";
    let Some(mut lab) = Lab::start_with("w", &[("LAB_CORES", "0,1"), ("LAB_EXTRA_NAT", dnat)])
    else {
        return;
    };
    lab.container_httpd();
    // MASQUERADE --to-ports 55666-55680 towards 8.8.8.8:80: each worker
    // picks the ports whose replies land on it, 7 and 8 of the 15 (the
    // symmetric key); more connections than that on one worker in TIME_WAIT
    // would make it reuse a port as the kernel's nf_nat_used_tuple_harder
    // does.
    const OUT: usize = 6;
    for _ in 0..OUT {
        let (addr, port) = whoami(&lab, "http://8.8.8.8/whoami");
        assert_eq!(addr, "10.0.2.15", "{}", lab.logs());
        assert!((55666..=55680).contains(&port), "port {port}{}", lab.logs());
    }
    // DNAT from outside, on two public ports. Under the symmetric key a
    // DNAT rule moves every reply to the same queue as its first packet or
    // every reply to the other one (the key folds the tuple into 16 bits):
    // for 8089 the replies land on the other worker, whose owner then
    // announces their tuples; for 8088 both directions agree.
    let rss = fastables_port::rss::Rss::new(fastables_port::rss::SYMMETRIC_KEY, 2);
    let (c, pub_ip, srv) = (0x0a00_0202u32, 0x0a00_020fu32, 0xac12_0002u32);
    let split =
        |p: u16, dport: u16| rss.queue(6, c, pub_ip, p, dport) != rss.queue(6, srv, c, 80, p);
    let tries: Vec<(u16, u16)> = [8088u16, 8089]
        .iter()
        .flat_map(|&d| (40000u16..40003).map(move |p| (p + (d - 8088) * 10, d)))
        .collect();
    let apart = tries.iter().filter(|(p, d)| split(*p, *d)).count();
    assert_eq!(apart, 3, "the cases no longer exercise the announcements");
    const IN: usize = 6;
    for (port, dport) in &tries {
        let (port, url) = (port.to_string(), format!("http://10.0.2.15:{dport}/whoami"));
        let out = lab.exec(
            "net",
            10,
            &[
                "curl",
                "-sS",
                "-m",
                "5",
                "--interface",
                "10.0.2.2",
                "--local-port",
                &port,
                &url,
            ],
        );
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("10.0.2.2:"),
            "DNAT through two workers: {}{}",
            describe(&out),
            lab.logs()
        );
    }
    // Every DNATed connection is listed once; the MASQUERADEd ones may
    // have given their port to a later connection while in TIME_WAIT
    // (nf_nat_used_tuple_harder: a range smaller than 32 ports is always
    // searched "harder"), so at most OUT of them are left.
    let table = lab.conntrack_list();
    let tcp = table.lines().filter(|l| l.starts_with("tcp ")).count();
    for (port, dport) in &tries {
        let n = table
            .lines()
            .filter(|l| l.contains(&format!(" sport={port} dport={dport} ")))
            .count();
        assert_eq!(
            n,
            1,
            "10.0.2.2:{port} -> :{dport} in\n{table}{}",
            lab.logs()
        );
    }
    assert!(
        (IN + 1..=IN + OUT).contains(&tcp),
        "conntrack -L:\n{table}{}",
        lab.logs()
    );
    if kernel_router() {
        return;
    }
    // veth has no RSS to program: fastables says so and steers.
    let log = std::fs::read_to_string(lab.dir.join("fastables.log")).unwrap_or_default();
    for dev in ["eth0", "docker0"] {
        assert!(
            log.contains(&format!(
                "{dev}: RSS not programmable (Operation not supported"
            )),
            "{log}"
        );
        assert!(
            log.contains(&format!("{dev}: XDP generic, copy mode, queue 1 of 2")),
            "{log}"
        );
    }
    // NAT ports in use: the MASQUERADEd connections, by address and range.
    let masq = tcp - IN;
    let st = lab.control("stats", &[]);
    let text = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(
        text.contains(&format!("nat: 10.0.2.15 tcp: {masq} in use\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "nat range 55666-55680 (nat POSTROUTING rule 1): {masq} of 15 ports in use\n"
        )),
        "{text}"
    );
    // One `conntrack -S` line per worker; the inserts add up.
    let st = lab.control("conntrack", &["-S"]);
    let text = String::from_utf8_lossy(&st.stdout).into_owned();
    let inserts: Vec<u64> = text
        .lines()
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("insert="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no insert= in `{l}`"))
        })
        .collect();
    assert_eq!(inserts.len(), 2, "{text}");
    assert!(
        text.starts_with("cpu=0 ") && text.contains("\ncpu=1 "),
        "{text}"
    );
    assert!(inserts.iter().sum::<u64>() >= (OUT + IN) as u64, "{text}");
    assert!(
        inserts.iter().all(|n| *n > 0),
        "both workers own connections: {text}"
    );
    // Per-worker counters in `stats --json`; what one handed out the other
    // took in (nothing was dropped on the way).
    let js = lab.control("stats", &["--json"]);
    let js = String::from_utf8_lossy(&js.stdout).into_owned();
    let field = |w: usize, k: &str| -> u64 {
        let at = js
            .find(&format!("{{\"worker\":{w},"))
            .unwrap_or_else(|| panic!("no worker {w} in {js}"));
        let rest = &js[at..];
        let v = rest[rest.find(&format!("\"{k}\":")).unwrap() + k.len() + 3..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .to_string();
        v.parse().unwrap()
    };
    let out: u64 = (0..2).map(|w| field(w, "handed_out")).sum();
    let inn: u64 = (0..2).map(|w| field(w, "handed_in")).sum();
    assert_eq!(out, inn, "{js}");
    assert_eq!(
        (0..2).map(|w| field(w, "handoff_dropped")).sum::<u64>(),
        0,
        "{js}"
    );
    let sent: u64 = (0..2).map(|w| field(w, "redirects_sent")).sum();
    assert_eq!(sent, apart as u64, "{js}");
    let entries: u64 = (0..2).map(|w| field(w, "conntrack_entries")).sum();
    assert_eq!(entries, tcp as u64, "{js}");
}

/// `iptables-restore -n`: the file's rules go on top of the running ones,
/// which keep working (and counting); a bad file changes nothing.
#[test]
fn restore_noflush_adds_to_the_running_rules() {
    let Some(mut lab) = Lab::start("nf") else {
        return;
    };
    lab.python_server("listen", LISTENERS);
    let body = lab.ctr_ok(10, &["curl", "-sS", "-m", "5", "http://1.1.1.1:81/"]);
    assert_eq!(body, "ok\n", "{}", lab.logs());
    let before = lab.save();
    let add = lab.dir.join("add.v4");
    std::fs::write(
        &add,
        "*filter\n-A FORWARD -d 1.1.1.1/32 -p tcp -m tcp --dport 81 \
         -j REJECT --reject-with tcp-reset\nCOMMIT\n",
    )
    .unwrap();
    let out = lab.restore_with(&add, &["-n"]);
    assert!(
        out.status.success(),
        "restore -n: {}{}",
        describe(&out),
        lab.logs()
    );
    let after = lab.save();
    assert_eq!(
        after.get("nat"),
        before.get("nat"),
        "the nat table is untouched"
    );
    let fwd: Vec<&String> = after["filter"]
        .iter()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    assert_eq!(
        fwd,
        [
            &"-A FORWARD -d 1.1.1.1/32 -p tcp -m tcp --dport 81 -j REJECT --reject-with tcp-reset"
                .to_string()
        ],
        "{after:#?}"
    );
    let out = lab.exec("ctr", 10, &["curl", "-sS", "-m", "5", "http://1.1.1.1:81/"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "refused now: {}{}",
        describe(&out),
        lab.logs()
    );
    let body = lab.ctr_ok(10, &["curl", "-sS", "-m", "5", "http://1.1.1.1:83/"]);
    assert_eq!(body, "ok\n", "{}", lab.logs());
    // A bad file (a jump to a chain that does not exist) changes nothing.
    std::fs::write(&add, "*filter\n-A FORWARD -j nowhere\nCOMMIT\n").unwrap();
    let out = lab.restore_with(&add, &["-n"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert_eq!(lab.save(), after);
}
