//! Differential test: the seed demo through the Linux kernel and through
//! `fastables sim`, compared frame by frame.
//!
//! The kernel side is the seed topology in network namespaces: a router
//! namespace with `eth0` and `docker0` (the configuration's MACs, addresses,
//! routes and permanent neighbors, IPv6 off, forwarding on, the demo rules
//! loaded with iptables-restore), whose veth peers sit in a "wire" namespace.
//! The demo's input frames are injected on the peers one at a time, in the
//! order `sim` processes them (netsniff-ng replays a one-frame pcap), and what
//! the router sends is captured on the peers with tcpdump. The frames must be
//! equal to `sim`'s, MACs and IP datagrams byte for byte, except the IP
//! identification of locally generated packets (and so the header checksum).
//!
//! Needs root and ip, iptables-restore, netsniff-ng, tcpdump, ethtool; skipped with a
//! note otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::seed::*;
use common::{decode, fastables, write_pcap, Scenario, TmpDir};
use fastables_offline::pcap::read_file;

use common::{have, is_root};

fn sh(ns: Option<&str>, args: &[&str]) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{ns:?} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two namespaces, deleted on drop (with the veths in them).
struct Netns {
    router: String,
    wire: String,
    captures: Vec<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.captures {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.router, &self.wire] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Netns {
    fn new() -> Netns {
        // Tests run in parallel threads of one process: number the pairs.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "fsk{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let n = Netns {
            router: format!("{id}r"),
            wire: format!("{id}w"),
            captures: Vec::new(),
        };
        for ns in [&n.router, &n.wire] {
            sh(None, &["ip", "netns", "add", ns]);
        }
        let (r, w) = (n.router.as_str(), n.wire.as_str());
        for ns in [r, w] {
            sh(
                Some(ns),
                &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
            );
            sh(
                Some(ns),
                &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            );
        }
        sh(Some(r), &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for (dev, peer, mac) in [
            ("eth0", "e0p", "52:54:00:c2:be:11"),
            ("docker0", "d0p", "02:42:ac:12:00:01"),
        ] {
            sh(
                None,
                &[
                    "ip", "link", "add", dev, "netns", r, "address", mac, "type", "veth", "peer",
                    "name", peer, "netns", w,
                ],
            );
            sh(Some(w), &["ip", "link", "set", peer, "up"]);
            sh(Some(r), &["ip", "link", "set", dev, "up"]);
            // Complete checksums on the wire, not left to (virtual) offload.
            sh(Some(r), &["ethtool", "-K", dev, "tx", "off"]);
        }
        sh(Some(r), &["ip", "link", "set", "lo", "up"]);
        for (a, dev) in [
            ("10.0.2.15/24", "eth0"),
            ("1.2.3.56/24", "eth0"),
            ("172.18.0.1/16", "docker0"),
        ] {
            sh(Some(r), &["ip", "addr", "add", a, "dev", dev]);
        }
        sh(
            Some(r),
            &[
                "ip", "route", "add", "default", "via", "10.0.2.2", "dev", "eth0",
            ],
        );
        sh(
            Some(r),
            &[
                "ip",
                "route",
                "add",
                "1.1.1.1/32",
                "via",
                "1.2.3.4",
                "dev",
                "eth0",
            ],
        );
        for (ip, mac, dev) in [
            ("10.0.2.2", "52:54:00:12:35:02", "eth0"),
            ("1.2.3.4", "52:54:00:12:34:04", "eth0"),
            ("172.18.0.2", "02:42:ac:12:00:02", "docker0"),
        ] {
            sh(
                Some(r),
                &[
                    "ip",
                    "neigh",
                    "replace",
                    ip,
                    "lladdr",
                    mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ],
            );
        }
        n
    }

    /// Starts tcpdump on `peer` (frames the router sent) into `file`; returns
    /// once it listens.
    fn capture(&mut self, peer: &str, file: &Path) {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.wire,
                "tcpdump",
                "-n",
                "-U",
                "--immediate-mode",
                // A small snaplen and a large buffer: with the default
                // snaplen (262144) the 2 MiB ring holds 8 frames, and a
                // burst loses the rest.
                "-s",
                "4096",
                "-B",
                "16384",
            ])
            .args(["-Q", "in", "-i", peer, "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        self.captures.push(child);
        let mut line = String::new();
        BufReader::new(stderr).read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "tcpdump: {line}");
    }
}

/// Number of records in a pcap that tcpdump may still be writing (0 if unreadable yet).
fn records(path: &Path) -> usize {
    read_file(path).map(|(_, r)| r.len()).unwrap_or(0)
}

/// MACs and the IP datagram (no Ethernet padding), with the IP ID and header
/// checksum of generated packets zeroed.
fn normalize(frame: &[u8], generated: bool) -> Vec<u8> {
    let d = decode(frame);
    let mut v = frame[..12].to_vec();
    let mut ip = d.ip.clone();
    if generated {
        ip[4..6].fill(0);
        ip[10..12].fill(0);
    }
    v.extend(ip);
    v
}

fn can_run() -> bool {
    for tool in [
        "ip",
        "iptables-restore",
        "iptables-save",
        "netsniff-ng",
        "tcpdump",
        "ethtool",
    ] {
        if !have(tool) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the kernel tests: {tool} not installed"
            );
            eprintln!("note: {tool} not installed; skipping the kernel differential test");
            return false;
        }
    }
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the kernel tests: not root"
        );
        eprintln!("note: not root; skipping the kernel differential test");
        return false;
    }
    true
}

/// The rule lines and chain lines of `iptables-save -c` output (no comments).
fn ruleset_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Runs `eth0` and `docker0` frames (time in µs) through fastables and through
/// the kernel with `rules`, and asserts that both send the same frames and end
/// with the same rule counters.
fn compare(tag: &str, rules: &str, eth0: &[(u64, Vec<u8>)], docker0: &[(u64, Vec<u8>)]) {
    // fastables.
    let mut s = Scenario::new(tag, rules);
    s.input("eth0", eth0);
    s.input("docker0", docker0);
    let counters = s.dir.path("counters.v4");
    let sim = s.run_into("out", &["--save-counters", counters.to_str().unwrap()]);
    sim.assert_ok();

    // The kernel.
    let dir = TmpDir::new(&format!("{tag}-ns"));
    let mut ns = Netns::new();
    let rules_file = dir.path("rules.v4");
    std::fs::write(&rules_file, rules).unwrap();
    sh(
        Some(&ns.router),
        &["iptables-restore", rules_file.to_str().unwrap()],
    );
    let cap: Vec<(&str, &str, PathBuf)> = vec![
        ("eth0", "e0p", dir.path("k-eth0.pcap")),
        ("docker0", "d0p", dir.path("k-docker0.pcap")),
    ];
    for (_, peer, file) in &cap {
        ns.capture(peer, file);
    }
    // Inject in sim's order: by time, then interface order, then file order.
    let mut all: Vec<(u64, usize, &str, &Vec<u8>)> = Vec::new();
    for (k, (peer, frames)) in [("e0p", eth0), ("d0p", docker0)].into_iter().enumerate() {
        for (t, f) in frames.iter() {
            all.push((*t, k, peer, f));
        }
    }
    all.sort_by_key(|(t, k, _, _)| (*t, *k));
    for (i, (t, _, peer, f)) in all.iter().enumerate() {
        let one = dir.path(&format!("inject-{i}.pcap"));
        write_pcap(&one, &[(*t, (*f).clone())]);
        // -S: a small ring, as the container may not let netsniff-ng raise wmem_max.
        sh(
            Some(&ns.wire),
            &[
                "netsniff-ng",
                "--in",
                one.to_str().unwrap(),
                "--out",
                peer,
                "--silent",
                "-S",
                "64KiB",
            ],
        );
    }
    // Wait (bounded) until the kernel has sent at least as much as sim did.
    let want: Vec<usize> = cap.iter().map(|(i, _, _)| sim.sent(i).len()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && cap.iter().zip(&want).any(|((_, _, f), w)| records(f) < *w) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Anything extra the kernel would send has had time to show up too.
    std::thread::sleep(Duration::from_millis(300));
    let saved = Command::new("ip")
        .args(["netns", "exec", &ns.router, "iptables-save", "-c"])
        .output()
        .unwrap();
    // `iptables -L -v -n -x` of each table of the rules, for `fastables list`.
    let tables: Vec<&str> = rules.lines().filter_map(|l| l.strip_prefix('*')).collect();
    let listed: Vec<(String, String)> = tables
        .iter()
        .map(|t| {
            let o = Command::new("ip")
                .args([
                    "netns", "exec", &ns.router, "iptables", "-t", t, "-L", "-v", "-n", "-x",
                ])
                .output()
                .unwrap();
            (
                t.to_string(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            )
        })
        .collect();
    assert!(!listed.is_empty(), "{tag}: the rules name no table");
    drop(ns);

    let mut total = 0;
    for (iface, _, file) in &cap {
        let kernel = read_file(file).unwrap().1;
        let ours = sim.sent(iface);
        total += ours.len();
        let norm = |recs: &[fastables_offline::pcap::PcapRecord]| -> Vec<Vec<u8>> {
            recs.iter()
                .map(|r| {
                    // Packets the router generated (from its addresses, or TCP resets
                    // on behalf of the original destination) carry an IP ID of the
                    // stack's choosing; forwarded ones keep the sender's.
                    let d = decode(&r.data);
                    let generated = [ETH0_IP, ETH0_IP2, DOCKER0_IP].contains(&d.src)
                        || d.proto == 6 && d.tcp_flags() & 0x04 != 0;
                    normalize(&r.data, generated)
                })
                .collect()
        };
        let (k, o) = (norm(&kernel), norm(&ours));
        assert_eq!(
            k.len(),
            o.len(),
            "{tag}: {iface}: the kernel sent {} frames, fastables {}",
            k.len(),
            o.len()
        );
        for (i, (a, b)) in k.iter().zip(&o).enumerate() {
            assert_eq!(
                a, b,
                "{tag}: {iface}: frame {i} differs (left: kernel, right: fastables)"
            );
        }
    }
    assert!(
        total > 0,
        "{tag}: nothing was sent; the comparison says nothing"
    );

    let kernel_counters = ruleset_lines(&String::from_utf8_lossy(&saved.stdout));
    let our_counters = ruleset_lines(&std::fs::read_to_string(&counters).unwrap());
    assert_eq!(
        kernel_counters, our_counters,
        "{tag}: rule counters differ (left: kernel `iptables-save -c`, right: fastables --save-counters)"
    );
    for (t, kernel) in &listed {
        let ours = fastables()
            .args([
                "list",
                "-r",
                counters.to_str().unwrap(),
                "-t",
                t,
                "-v",
                "-n",
                "-x",
            ])
            .output()
            .unwrap();
        assert!(
            ours.status.success(),
            "{tag}: fastables list failed: {ours:?}"
        );
        assert_eq!(
            kernel,
            &String::from_utf8_lossy(&ours.stdout),
            "{tag}: `iptables -t {t} -L -v -n -x` differs (left: kernel, right: fastables list)"
        );
    }
}

#[test]
fn the_demo_matches_the_kernel() {
    if !can_run() {
        return;
    }
    let input = demo_input();
    compare("k-demo", DEMO_RULES, &input.eth0, &input.docker0);
}

fn us(ms: u64) -> u64 {
    T0_US + ms * 1000
}

#[test]
fn the_seed_filter_rules_match_the_kernel() {
    if !can_run() {
        return;
    }
    // The seed's rules as written: `-I INPUT -s 1.2.3.4 -j DROP` and SSH only from 1.2.3.4.
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A INPUT -p tcp --dport 22 -s 1.2.3.4 -j ACCEPT\n\
                 -A INPUT -p tcp --dport 22 -j DROP\n\
                 -I INPUT -s 1.2.3.4 -j DROP\n\
                 COMMIT\n";
    let (gw, peer, ctr) = (eth_from_gw(), eth_from_peer(), eth_from_container());
    let eth0 = vec![
        (us(0), syn(&peer, PEER_IP, 40001, ETH0_IP2, 22)),
        (us(1), syn(&gw, REMOTE_IP, 40002, ETH0_IP, 22)),
        (us(2), syn(&gw, REMOTE_IP, 40003, ETH0_IP, 2222)),
        (us(3), udp(&peer, PEER_IP, 5000, ETH0_IP2, 9, 64)),
        (us(4), udp(&gw, REMOTE_IP, 5001, ETH0_IP, 9, 64)),
        (us(5), udp(&peer, PEER_IP, 5002, CONTAINER_IP, 9, 64)),
        (us(6), udp(&gw, REMOTE_IP, 5003, CONTAINER_IP, 9, 64)),
    ];
    let docker0 = vec![
        (us(7), syn(&ctr, CONTAINER_IP, 40004, DOCKER0_IP, 22)),
        (
            us(8),
            udp(&ctr, CONTAINER_IP, 5004, Ipv4Addr::new(1, 1, 1, 1), 53, 64),
        ),
        (us(9), udp(&ctr, CONTAINER_IP, 5005, REMOTE_IP, 53, 1)),
    ];
    compare("k-seed", rules, &eth0, &docker0);
}

#[test]
fn forward_chains_and_rejects_match_the_kernel() {
    if !can_run() {
        return;
    }
    let rules = "*filter\n\
                 :INPUT ACCEPT [0:0]\n\
                 :FORWARD DROP [0:0]\n\
                 :OUTPUT ACCEPT [0:0]\n\
                 :allow - [0:0]\n\
                 :deny_some - [0:0]\n\
                 -A FORWARD -p tcp -m tcp --dport 25 -j REJECT --reject-with tcp-reset\n\
                 -A FORWARD -p tcp -m tcp --dport 26 -j REJECT --reject-with icmp-host-prohibited\n\
                 -A FORWARD -p udp -j deny_some\n\
                 -A FORWARD -p udp -m udp --dport 53 -j ACCEPT\n\
                 -A FORWARD -p udp -g allow\n\
                 -A FORWARD -p udp -m udp --dport 999 -j ACCEPT\n\
                 -A allow -p udp -m udp --dport 123 -j ACCEPT\n\
                 -A allow -p udp -m udp --dport 124 -j REJECT\n\
                 -A deny_some -p udp -m udp --dport 5353 -j DROP\n\
                 -A deny_some -j RETURN\n\
                 -A deny_some -j DROP\n\
                 COMMIT\n";
    let ctr = eth_from_container();
    let gw = eth_from_gw();
    let mut docker0 = Vec::new();
    for (i, p) in [53u16, 5353, 123, 124, 999].into_iter().enumerate() {
        docker0.push((
            us(i as u64),
            udp(&ctr, CONTAINER_IP, 2000 + i as u16, REMOTE_IP, p, 64),
        ));
    }
    docker0.push((us(10), syn(&ctr, CONTAINER_IP, 3000, REMOTE_IP, 25)));
    docker0.push((us(11), syn(&ctr, CONTAINER_IP, 3001, REMOTE_IP, 26)));
    docker0.push((us(12), syn(&ctr, CONTAINER_IP, 3002, REMOTE_IP, 80)));
    let eth0 = vec![
        (us(13), syn(&gw, REMOTE_IP, 80, CONTAINER_IP, 25)),
        (us(14), udp(&gw, REMOTE_IP, 53, CONTAINER_IP, 123, 64)),
    ];
    compare("k-chains", rules, &eth0, &docker0);
}
