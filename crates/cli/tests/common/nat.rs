//! The NAT differential harness: a script of frames (some built from what the
//! router has sent so far, e.g. a reply to the port NAT chose), run through
//! `fastables sim --conntrack` and through a Linux router in network
//! namespaces, then compared: the frames the router sends (MACs and IP
//! datagram; IP ID and header checksum of router-generated ICMP errors
//! ignored), `conntrack -L` at every snapshot (timeout column ignored; ports
//! the kernel chooses at random only checked against their range) and the
//! final rule counters (`iptables-save -c`).
//!
//! Used by `tests/kernel_nat.rs` (included there with `#[path]`).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fastables_offline::pcap::read_file;
use fastables_packet::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use fastables_packet::{read_be16, read_be32};

use crate::common::{fastables, write_pcap, TmpDir};

// ---------------------------------------------------------------------------
// Topology.

/// One router interface and its peer in the wire namespace.
#[derive(Clone, Debug)]
pub struct IfaceSpec {
    pub name: &'static str,
    pub peer: &'static str,
    pub mac: &'static str,
    pub addrs: Vec<&'static str>,
    pub mtu: Option<u16>,
}

/// The router: interfaces, routes `(to, via, dev)`, permanent neighbors `(ip, mac, dev)`.
#[derive(Clone, Debug)]
pub struct Topo {
    pub ifaces: Vec<IfaceSpec>,
    pub routes: Vec<(&'static str, &'static str, &'static str)>,
    pub neighbors: Vec<(&'static str, &'static str, &'static str)>,
}

/// MAC of the third interface, `srv0` (192.168.0.1/24).
pub const SRV0_MAC_STR: &str = "02:00:c0:a8:00:01";
/// MAC of the server 192.168.0.2 behind `srv0`.
pub const SERVER_MAC_STR: &str = "02:00:c0:a8:00:02";

impl Topo {
    /// The seed topology (demo/fastables.toml).
    pub fn seed() -> Topo {
        Topo {
            ifaces: vec![
                IfaceSpec {
                    name: "eth0",
                    peer: "e0p",
                    mac: "52:54:00:c2:be:11",
                    addrs: vec!["10.0.2.15/24", "1.2.3.56/24"],
                    mtu: None,
                },
                IfaceSpec {
                    name: "docker0",
                    peer: "d0p",
                    mac: "02:42:ac:12:00:01",
                    addrs: vec!["172.18.0.1/16"],
                    mtu: None,
                },
            ],
            routes: vec![
                ("0.0.0.0/0", "10.0.2.2", "eth0"),
                ("1.1.1.1/32", "1.2.3.4", "eth0"),
            ],
            neighbors: vec![
                ("10.0.2.2", "52:54:00:12:35:02", "eth0"),
                ("1.2.3.4", "52:54:00:12:34:04", "eth0"),
                ("172.18.0.2", "02:42:ac:12:00:02", "docker0"),
            ],
        }
    }

    /// The seed topology plus `srv0` (192.168.0.1/24, MTU `mtu`) with the
    /// server 192.168.0.2 as a permanent neighbor, for DNAT.
    pub fn with_server(mtu: Option<u16>) -> Topo {
        let mut t = Topo::seed();
        t.ifaces.push(IfaceSpec {
            name: "srv0",
            peer: "s0p",
            mac: SRV0_MAC_STR,
            addrs: vec!["192.168.0.1/24"],
            mtu,
        });
        t.neighbors.push(("192.168.0.2", SERVER_MAC_STR, "srv0"));
        t
    }

    /// Adds permanent neighbors.
    pub fn neighbor(mut self, ip: &'static str, mac: &'static str, dev: &'static str) -> Topo {
        self.neighbors.push((ip, mac, dev));
        self
    }

    /// The router's own addresses.
    pub fn own_addrs(&self) -> Vec<Ipv4Addr> {
        self.ifaces
            .iter()
            .flat_map(|i| i.addrs.iter())
            .map(|a| a.split('/').next().unwrap().parse().unwrap())
            .collect()
    }

    /// The fastables configuration (rules in `rules.v4` beside it).
    pub fn toml(&self) -> String {
        let mut s = String::from("rules = \"rules.v4\"\n");
        for i in &self.ifaces {
            let addrs: Vec<String> = i.addrs.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = write!(
                s,
                "\n[[interface]]\nname = \"{}\"\nmac = \"{}\"\naddresses = [{}]\n",
                i.name,
                i.mac,
                addrs.join(", ")
            );
            if let Some(m) = i.mtu {
                let _ = writeln!(s, "mtu = {m}");
            }
        }
        for (to, via, dev) in &self.routes {
            let _ = write!(
                s,
                "\n[[route]]\nto = \"{to}\"\nvia = \"{via}\"\ndev = \"{dev}\"\n"
            );
        }
        for (ip, mac, dev) in &self.neighbors {
            let _ = write!(
                s,
                "\n[[neighbor]]\nip = \"{ip}\"\nmac = \"{mac}\"\ndev = \"{dev}\"\n"
            );
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Scripts.

/// What the router has sent so far, per interface (in order).
pub struct Sent(pub BTreeMap<String, Vec<Vec<u8>>>);

impl Sent {
    pub fn on(&self, iface: &str) -> &[Vec<u8>] {
        self.0.get(iface).map(Vec::as_slice).unwrap_or(&[])
    }
    /// The last frame sent on `iface` that satisfies `pred`.
    pub fn last(&self, iface: &str, pred: impl Fn(&Pkt) -> bool) -> Option<Pkt> {
        self.on(iface)
            .iter()
            .rev()
            .filter_map(|f| Pkt::parse(f))
            .find(|p| pred(p))
    }
}

/// A lenient view of an Ethernet/IPv4 frame (no checksum checks).
#[derive(Clone, Debug)]
pub struct Pkt {
    pub frame: Vec<u8>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

impl Pkt {
    pub fn parse(f: &[u8]) -> Option<Pkt> {
        if f.len() < 34 || f[12..14] != [8, 0] {
            return None;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 15) * 4;
        let l4 = ip.get(ihl..)?;
        let g16 = |b: &[u8], o: usize| read_be16(b, o).unwrap_or(0);
        let g32 = |b: &[u8], o: usize| read_be32(b, o).unwrap_or(0);
        Some(Pkt {
            frame: f.to_vec(),
            src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            proto: ip[9],
            sport: g16(l4, 0),
            dport: g16(l4, 2),
            seq: g32(l4, 4),
            ack: g32(l4, 8),
            flags: l4.get(13).copied().unwrap_or(0),
        })
    }
    /// The source port, or for ICMP echo requests/replies the id.
    pub fn key(&self) -> u16 {
        if self.proto == PROTO_ICMP {
            let dg = self.datagram();
            let ihl = usize::from(dg[0] & 15) * 4;
            match dg.get(ihl..ihl + 6) {
                Some(b) if b[0] == 8 || b[0] == 0 => u16::from_be_bytes([b[4], b[5]]),
                _ => 0,
            }
        } else {
            self.sport
        }
    }
    /// The IP datagram (no Ethernet header or padding).
    pub fn datagram(&self) -> &[u8] {
        fastables_packet::builder::datagram_of(&self.frame)
    }
}

type Builder = Box<dyn Fn(&Sent) -> Option<Vec<u8>>>;

pub enum Step {
    /// A frame received on the interface.
    In(&'static str, Vec<u8>),
    /// A frame received on the interface, built from what the router sent so
    /// far (`None`: it did not send what the frame answers).
    Dyn(&'static str, &'static str, Builder),
    /// `conntrack -L` at this point, with a label.
    Snap(&'static str),
    /// Time passes (milliseconds): the kernel run sleeps, sim's clock moves on.
    Wait(u64),
}

#[derive(Default)]
pub struct Script(pub Vec<Step>);

impl Script {
    pub fn new() -> Script {
        Script(Vec::new())
    }
    pub fn frame(&mut self, iface: &'static str, f: Vec<u8>) -> &mut Self {
        self.0.push(Step::In(iface, f));
        self
    }
    /// `what` names the frame for error messages.
    pub fn reply(
        &mut self,
        iface: &'static str,
        what: &'static str,
        b: impl Fn(&Sent) -> Option<Vec<u8>> + 'static,
    ) -> &mut Self {
        self.0.push(Step::Dyn(iface, what, Box::new(b)));
        self
    }
    pub fn snap(&mut self, label: &'static str) -> &mut Self {
        self.0.push(Step::Snap(label));
        self
    }
    /// `ms` milliseconds pass before the next step (for timeouts that the
    /// kernel counts in real time).
    pub fn wait(&mut self, ms: u64) -> &mut Self {
        self.0.push(Step::Wait(ms));
        self
    }
}

/// What one side did.
#[derive(Default, Debug)]
pub struct Outcome {
    /// Frames sent per interface.
    pub sent: BTreeMap<String, Vec<Vec<u8>>>,
    /// `conntrack -L` lines per snapshot (the last one is "end").
    pub snaps: Vec<(String, Vec<String>)>,
    /// `iptables-save -c` (rules and chain lines only).
    pub counters: Vec<String>,
    /// Frames sent per interface at each sync point (step index), for the kernel to wait on.
    pub counts_at: HashMap<usize, BTreeMap<String, usize>>,
    /// Problems running the side (sim failed, a reply could not be built).
    pub errors: Vec<String>,
}

fn t_us(i: usize) -> u64 {
    crate::common::seed::T0_US + (i as u64) * 1000
}

/// The lines of `iptables-save -c` output without comments, tables in name
/// order (the order of tables is not what is compared here).
fn ruleset_lines(text: &str) -> Vec<String> {
    let mut tables: Vec<Vec<String>> = Vec::new();
    for l in text.lines() {
        if l.starts_with('#') || l.trim().is_empty() {
            continue;
        }
        if l.starts_with('*') || tables.is_empty() {
            tables.push(Vec::new());
        }
        tables.last_mut().unwrap().push(l.to_string());
    }
    tables.sort();
    tables.concat()
}

/// Conntrack lines in a command's output (`tcp      6 ...`, `udp ...`, `icmp ...`).
pub fn ct_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            let mut t = l.split_whitespace();
            matches!(
                t.next(),
                Some("tcp" | "udp" | "icmp" | "unknown" | "udplite" | "sctp")
            ) && t.next().is_some_and(|n| n.parse::<u8>().is_ok())
                && l.contains(" src=")
        })
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// fastables sim.

struct SimDir {
    dir: TmpDir,
}

impl SimDir {
    fn new(tag: &str, topo: &Topo, rules: &str) -> SimDir {
        let dir = TmpDir::new(&format!("{tag}-sim"));
        std::fs::write(dir.path("fastables.toml"), topo.toml()).unwrap();
        std::fs::write(dir.path("rules.v4"), rules).unwrap();
        SimDir { dir }
    }

    /// Runs sim over `inputs` (iface, time, frame); returns the sent frames,
    /// the conntrack lines and the counters, or the failure.
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        n: usize,
        topo: &Topo,
        inputs: &[(&'static str, u64, Vec<u8>)],
    ) -> Result<(BTreeMap<String, Vec<Vec<u8>>>, Vec<String>, Vec<String>), String> {
        let out = self.dir.path(&format!("out-{n}"));
        let mut cmd = fastables();
        cmd.arg("sim")
            .arg("-c")
            .arg(self.dir.path("fastables.toml"));
        for i in &topo.ifaces {
            let frames: Vec<(u64, Vec<u8>)> = inputs
                .iter()
                .filter(|(f, _, _)| *f == i.name)
                .map(|(_, t, f)| (*t, f.clone()))
                .collect();
            if frames.is_empty() {
                continue;
            }
            let p = self.dir.path(&format!("in-{n}-{}.pcap", i.name));
            write_pcap(&p, &frames);
            cmd.arg("--in").arg(format!("{}={}", i.name, p.display()));
        }
        let counters = self.dir.path(&format!("counters-{n}.v4"));
        cmd.arg("--out-dir")
            .arg(&out)
            .arg("--conntrack")
            .arg("--save-counters")
            .arg(&counters);
        let o = cmd.output().unwrap();
        if !o.status.success() {
            return Err(format!(
                "fastables sim failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        let mut sent = BTreeMap::new();
        for i in &topo.ifaces {
            let recs = read_file(&out.join(format!("{}.pcap", i.name)))
                .map(|(_, r)| r)
                .unwrap_or_default();
            sent.insert(
                i.name.to_string(),
                recs.into_iter().map(|r| r.data).collect(),
            );
        }
        let ct = ct_lines(&String::from_utf8_lossy(&o.stdout));
        let c = std::fs::read_to_string(&counters)
            .map(|t| ruleset_lines(&t))
            .unwrap_or_default();
        Ok((sent, ct, c))
    }
}

fn counts(sent: &BTreeMap<String, Vec<Vec<u8>>>) -> BTreeMap<String, usize> {
    sent.iter().map(|(k, v)| (k.clone(), v.len())).collect()
}

/// Runs the script through `fastables sim` (the prefix up to every reply and
/// snapshot, then all of it).
pub fn run_sim(tag: &str, topo: &Topo, rules: &str, script: &Script) -> Outcome {
    let d = SimDir::new(tag, topo, rules);
    let mut o = Outcome::default();
    let mut inputs: Vec<(&'static str, u64, Vec<u8>)> = Vec::new();
    let mut sent = BTreeMap::new();
    let mut runs = 0;
    let mut waited_us = 0;
    for (i, step) in script.0.iter().enumerate() {
        let t_us = |i: usize| t_us(i) + waited_us;
        match step {
            Step::Wait(ms) => waited_us += ms * 1000,
            Step::In(iface, f) => inputs.push((iface, t_us(i), f.clone())),
            Step::Dyn(iface, what, b) => {
                if !inputs.is_empty() {
                    runs += 1;
                    match d.run(runs, topo, &inputs) {
                        Ok((s, _, _)) => sent = s,
                        Err(e) => {
                            o.errors.push(e);
                            return o;
                        }
                    }
                }
                o.counts_at.insert(i, counts(&sent));
                match b(&Sent(sent.clone())) {
                    Some(f) => inputs.push((iface, t_us(i), f)),
                    None => o.errors.push(format!(
                        "step {i}: cannot build {what}: fastables did not send what it answers"
                    )),
                }
            }
            Step::Snap(label) => {
                runs += 1;
                match d.run(runs, topo, &inputs) {
                    Ok((s, ct, _)) => {
                        o.counts_at.insert(i, counts(&s));
                        o.snaps.push((label.to_string(), ct));
                    }
                    Err(e) => {
                        o.errors.push(e);
                        return o;
                    }
                }
            }
        }
    }
    runs += 1;
    match d.run(runs, topo, &inputs) {
        Ok((s, ct, c)) => {
            o.counts_at.insert(script.0.len(), counts(&s));
            o.sent = s;
            o.snaps.push(("end".to_string(), ct));
            o.counters = c;
        }
        Err(e) => o.errors.push(e),
    }
    o
}

// ---------------------------------------------------------------------------
// The kernel.

use crate::common::{have, is_root};

/// Whether the kernel side can run; prints a note when not.
pub fn can_run() -> bool {
    for tool in [
        "ip",
        "iptables-restore",
        "iptables-save",
        "python3",
        "tcpdump",
        "ethtool",
        "conntrack",
    ] {
        if !have(tool) {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the kernel tests: {tool} not installed"
            );
            eprintln!("note: {tool} not installed; skipping the kernel NAT differential test");
            return false;
        }
    }
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the kernel tests: not root"
        );
        eprintln!("note: not root; skipping the kernel NAT differential test");
        return false;
    }
    true
}

fn run_in(ns: Option<&str>, args: &[&str]) -> std::process::Output {
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
    cmd.output().unwrap()
}

fn sh(ns: Option<&str>, args: &[&str]) {
    let out = run_in(ns, args);
    assert!(
        out.status.success(),
        "{ns:?} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The router and wire namespaces, deleted on drop (with their veths).
pub struct Netns {
    pub router: String,
    pub wire: String,
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
    pub fn new(topo: &Topo) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "fsn{}-{}",
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
        // CLOSE entries live 10 s in the kernel; keep them for the length of a
        // test (timeouts are not compared; sim's clock is the pcap's).
        let _ = run_in(
            Some(r),
            &[
                "sysctl",
                "-qw",
                "net.netfilter.nf_conntrack_tcp_timeout_close=120",
            ],
        );
        for i in &topo.ifaces {
            sh(
                None,
                &[
                    "ip", "link", "add", i.name, "netns", r, "address", i.mac, "type", "veth",
                    "peer", "name", i.peer, "netns", w,
                ],
            );
            if let Some(m) = i.mtu {
                let m = m.to_string();
                sh(Some(r), &["ip", "link", "set", i.name, "mtu", &m]);
            }
            sh(Some(w), &["ip", "link", "set", i.peer, "up"]);
            sh(Some(r), &["ip", "link", "set", i.name, "up"]);
            sh(Some(r), &["ethtool", "-K", i.name, "tx", "off"]);
        }
        sh(Some(r), &["ip", "link", "set", "lo", "up"]);
        for i in &topo.ifaces {
            for a in &i.addrs {
                sh(Some(r), &["ip", "addr", "add", a, "dev", i.name]);
            }
        }
        for (to, via, dev) in &topo.routes {
            let to = if *to == "0.0.0.0/0" { "default" } else { to };
            sh(Some(r), &["ip", "route", "add", to, "via", via, "dev", dev]);
        }
        for (ip, mac, dev) in &topo.neighbors {
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

    /// tcpdump on `peer` (frames the router sent) into `file`; returns once it listens.
    pub fn capture(&mut self, peer: &str, file: &Path) {
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

    fn inject(&self, dir: &TmpDir, n: usize, peer: &str, frames: &[Vec<u8>]) {
        let p = dir.path(&format!("inject-{n}.pcap"));
        let recs: Vec<(u64, Vec<u8>)> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| (t_us(i), f.clone()))
            .collect();
        write_pcap(&p, &recs);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/inject.py");
        sh(
            Some(&self.wire),
            &["python3", script, peer, p.to_str().unwrap()],
        );
    }
}

fn records(path: &Path) -> Vec<Vec<u8>> {
    read_file(path)
        .map(|(_, r)| r.into_iter().map(|r| r.data).collect())
        .unwrap_or_default()
}

/// Runs the script through the Linux router. `expect` (from sim) says how many
/// frames to wait for at each sync point.
pub fn run_kernel(
    tag: &str,
    topo: &Topo,
    rules: &str,
    script: &Script,
    expect: &Outcome,
) -> Outcome {
    let dir = TmpDir::new(&format!("{tag}-ns"));
    let mut ns = Netns::new(topo);
    let rules_file = dir.path("rules.v4");
    std::fs::write(&rules_file, rules).unwrap();
    sh(
        Some(&ns.router),
        &["iptables-restore", rules_file.to_str().unwrap()],
    );
    let caps: Vec<(String, &str, std::path::PathBuf)> = topo
        .ifaces
        .iter()
        .map(|i| {
            (
                i.name.to_string(),
                i.peer,
                dir.path(&format!("k-{}.pcap", i.name)),
            )
        })
        .collect();
    for (_, peer, f) in &caps {
        ns.capture(peer, f);
    }
    let peer_of = |iface: &str| topo.ifaces.iter().find(|i| i.name == iface).unwrap().peer;
    let mut o = Outcome::default();
    let sent_now = |caps: &[(String, &str, std::path::PathBuf)]| -> BTreeMap<String, Vec<Vec<u8>>> {
        caps.iter()
            .map(|(i, _, f)| (i.clone(), records(f)))
            .collect()
    };
    // Wait (bounded) until the captures hold at least what sim sent and have
    // stopped growing.
    let settle = |caps: &[(String, &str, std::path::PathBuf)],
                  want: Option<&BTreeMap<String, usize>>| {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last: Vec<usize> = Vec::new();
        let mut stable = 0;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now: Vec<usize> = caps.iter().map(|(_, _, f)| records(f).len()).collect();
            let enough = caps
                .iter()
                .zip(&now)
                .all(|((i, _, _), n)| *n >= want.and_then(|w| w.get(i)).copied().unwrap_or(0));
            stable = if now == last { stable + 1 } else { 0 };
            last = now;
            if enough && stable >= 2 {
                break;
            }
        }
    };
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut pending_peer = "";
    let mut injections = 0;
    let mut flush = |pending: &mut Vec<Vec<u8>>, peer: &str, ns: &Netns| {
        if !pending.is_empty() {
            injections += 1;
            ns.inject(&dir, injections, peer, pending);
            pending.clear();
        }
    };
    for (i, step) in script.0.iter().enumerate() {
        match step {
            Step::In(iface, f) => {
                let peer = peer_of(iface);
                if peer != pending_peer {
                    flush(&mut pending, pending_peer, &ns);
                    pending_peer = peer;
                }
                pending.push(f.clone());
            }
            Step::Dyn(iface, what, b) => {
                flush(&mut pending, pending_peer, &ns);
                settle(&caps, expect.counts_at.get(&i));
                match b(&Sent(sent_now(&caps))) {
                    Some(f) => {
                        pending_peer = peer_of(iface);
                        pending.push(f);
                    }
                    None => o.errors.push(format!(
                        "step {i}: cannot build {what}: the kernel did not send what it answers"
                    )),
                }
            }
            Step::Snap(label) => {
                flush(&mut pending, pending_peer, &ns);
                settle(&caps, expect.counts_at.get(&i));
                o.snaps.push((label.to_string(), conntrack_l(&ns)));
            }
            Step::Wait(ms) => {
                flush(&mut pending, pending_peer, &ns);
                settle(&caps, expect.counts_at.get(&i));
                std::thread::sleep(Duration::from_millis(*ms));
            }
        }
    }
    flush(&mut pending, pending_peer, &ns);
    settle(&caps, expect.counts_at.get(&script.0.len()));
    o.snaps.push(("end".to_string(), conntrack_l(&ns)));
    if std::env::var_os("FASTABLES_NAT_SHOW").is_some() {
        let st = run_in(Some(&ns.router), &["nstat", "-a"]);
        eprintln!(
            "{tag}: router nstat -a:\n{}",
            String::from_utf8_lossy(&st.stdout)
        );
        for n in [&ns.router, &ns.wire] {
            let st = run_in(Some(n), &["ip", "-s", "link"]);
            eprintln!(
                "{tag}: {n}: ip -s link:\n{}",
                String::from_utf8_lossy(&st.stdout)
            );
        }
    }
    let saved = run_in(Some(&ns.router), &["iptables-save", "-c"]);
    o.counters = ruleset_lines(&String::from_utf8_lossy(&saved.stdout));
    drop(ns);
    o.sent = caps
        .iter()
        .map(|(i, _, f)| (i.clone(), records(f)))
        .collect();
    o
}

fn conntrack_l(ns: &Netns) -> Vec<String> {
    let out = run_in(Some(&ns.router), &["conntrack", "-L"]);
    ct_lines(&String::from_utf8_lossy(&out.stdout))
}

// ---------------------------------------------------------------------------
// Comparison.

/// A parsed `conntrack -L` line.
#[derive(Clone, Debug)]
pub struct Ct {
    pub line: String,
    pub proto: String,
    /// ORIGINAL then REPLY: `key=value` pairs of each tuple.
    pub tuples: [Vec<(String, String)>; 2],
}

impl Ct {
    pub fn parse(line: &str) -> Ct {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let mut tuples: [Vec<(String, String)>; 2] = [Vec::new(), Vec::new()];
        let mut k = 0usize;
        let mut seen = 0;
        for t in &toks {
            if let Some((a, b)) = t.split_once('=') {
                if a == "src" {
                    seen += 1;
                    k = seen - 1;
                }
                if seen > 0
                    && seen <= 2
                    && ["src", "dst", "sport", "dport", "type", "code", "id"].contains(&a)
                {
                    tuples[k].push((a.to_string(), b.to_string()));
                }
            }
        }
        Ct {
            line: line.to_string(),
            proto: toks.first().copied().unwrap_or("").to_string(),
            tuples,
        }
    }
    pub fn get(&self, dir: usize, key: &str) -> Option<&str> {
        self.tuples[dir]
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn port(&self, dir: usize, key: &str) -> Option<u16> {
        self.get(dir, key).and_then(|v| v.parse().ok())
    }
}

/// Ports the kernel chooses at random: `(proto, REPLY dst or None for any, lo, hi)`;
/// a REPLY `dport` that differs from the ORIGINAL `sport` must lie in `lo..=hi`
/// (the first entry that applies) and is then masked.
#[derive(Clone, Debug, Default)]
pub struct Masks(pub Vec<(&'static str, Option<&'static str>, u16, u16)>);

/// A line with the timeout masked and a random port replaced by its range;
/// `(masked line, random port if any)`.
pub fn mask_line(
    l: &str,
    masks: &Masks,
    errors: &mut Vec<String>,
    side: &str,
) -> (String, Option<u16>) {
    let ct = Ct::parse(l);
    let mut toks: Vec<String> = l.split_whitespace().map(str::to_string).collect();
    if toks.len() > 2 && toks[2].parse::<u64>().is_ok() {
        toks[2] = "<timeout>".to_string();
    }
    let mut random = None;
    // TCP/UDP: ORIGINAL sport vs REPLY dport; ICMP: the echo id of both.
    let (okey, rkey) = if ct.proto == "icmp" {
        ("id", "id")
    } else {
        ("sport", "dport")
    };
    if let (Some(osp), Some(rdp)) = (ct.port(0, okey), ct.port(1, rkey)) {
        if osp != rdp {
            let rdst = ct.get(1, "dst");
            if let Some((_, _, lo, hi)) = masks
                .0
                .iter()
                .find(|(p, a, _, _)| *p == ct.proto && a.is_none_or(|a| Some(a) == rdst))
            {
                if rdp < *lo || rdp > *hi {
                    errors.push(format!("{side}: port {rdp} outside {lo}-{hi}: {l}"));
                }
                random = Some(rdp);
                // The REPLY's is the second such token.
                let prefix = format!("{rkey}=");
                let mut n = 0;
                for t in toks.iter_mut() {
                    if t.starts_with(&prefix) {
                        n += 1;
                        if n == 2 {
                            *t = format!("{rkey}=<{lo}-{hi}>");
                        }
                    }
                }
            }
        }
    }
    (toks.join(" "), random)
}

/// Human-readable one-line summary of a frame.
pub fn describe(f: &[u8]) -> String {
    let Some(p) = Pkt::parse(f) else {
        return format!("non-IPv4 frame {:02x?}", &f[..f.len().min(42)]);
    };
    let ip = p.datagram();
    let id = read_be16(ip, 4).unwrap_or(0);
    let ttl = ip.get(8).copied().unwrap_or(0);
    let head = format!("len={} id={id:#06x} ttl={ttl}", ip.len());
    match p.proto {
        PROTO_TCP => {
            let fl: String = [
                (0x02, 'S'),
                (0x10, '.'),
                (0x01, 'F'),
                (0x04, 'R'),
                (0x08, 'P'),
            ]
            .iter()
            .filter(|(b, _)| p.flags & b != 0)
            .map(|(_, c)| *c)
            .collect();
            format!(
                "tcp {}:{} > {}:{} [{fl}] seq={} ack={} {head}",
                p.src, p.sport, p.dst, p.dport, p.seq, p.ack
            )
        }
        PROTO_UDP => format!("udp {}:{} > {}:{} {head}", p.src, p.sport, p.dst, p.dport),
        PROTO_ICMP => {
            let ihl = usize::from(ip[0] & 15) * 4;
            let l4 = &ip[ihl..];
            let mut s = format!(
                "icmp {} > {} type={} code={} {head}",
                p.src,
                p.dst,
                l4.first().copied().unwrap_or(0),
                l4.get(1).copied().unwrap_or(0)
            );
            if matches!(l4.first(), Some(3 | 11 | 12)) && l4.len() >= 28 {
                let q = &l4[8..];
                let qihl = usize::from(q[0] & 15) * 4;
                let qs = Ipv4Addr::new(q[12], q[13], q[14], q[15]);
                let qd = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
                let ports = read_be16(q, qihl)
                    .zip(read_be16(q, qihl + 2))
                    .unwrap_or_default();
                let _ = write!(
                    s,
                    " quoting proto={} {qs}:{} > {qd}:{}",
                    q[9], ports.0, ports.1
                );
            } else if l4.len() >= 8 {
                let _ = write!(s, " id={}", u16::from_be_bytes([l4[4], l4[5]]));
            }
            s
        }
        n => format!("proto {n} {} > {} {head}", p.src, p.dst),
    }
}

/// RFC 1071 sum, folded.
fn sum16(parts: &[&[u8]]) -> u16 {
    let mut s: u32 = 0;
    for p in parts {
        for c in p.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Checks the IP and transport checksums; `None` when correct.
fn checksum_problem(f: &[u8]) -> Option<String> {
    let p = Pkt::parse(f)?;
    let ip = p.datagram();
    let ihl = usize::from(ip[0] & 15) * 4;
    if sum16(&[&ip[..ihl]]) != 0xffff {
        return Some("bad IP header checksum".into());
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if frag {
        return None;
    }
    let l4 = &ip[ihl..];
    let pseudo = [
        &ip[12..20],
        &[0, p.proto][..],
        &(l4.len() as u16).to_be_bytes()[..],
    ]
    .concat();
    let ok = match p.proto {
        6 => sum16(&[&pseudo, l4]) == 0xffff,
        17 if l4.len() >= 8 && l4[6..8] != [0, 0] => sum16(&[&pseudo, l4]) == 0xffff,
        1 => sum16(&[l4]) == 0xffff,
        _ => true,
    };
    (!ok).then(|| format!("bad proto {} checksum", p.proto))
}

/// MACs + IP datagram; IP ID and header checksum zeroed for ICMP messages the
/// router generated (their ID is the stack's choice).
fn normalize(f: &[u8], own: &[Ipv4Addr]) -> Vec<u8> {
    let Some(p) = Pkt::parse(f) else {
        return f.to_vec();
    };
    let mut v = f[..12].to_vec();
    let mut ip = p.datagram().to_vec();
    let ihl = usize::from(ip[0] & 15) * 4;
    // ICMP errors and echo replies the router generates (a NATed echo
    // request leaving from the router's address keeps the client's ID).
    let generated_icmp = p.proto == PROTO_ICMP && !matches!(ip.get(ihl), Some(8));
    if generated_icmp && own.contains(&p.src) {
        ip[4..6].fill(0);
        ip[10..12].fill(0);
    }
    v.extend(ip);
    v
}

/// Replaces the TCP/UDP source port, or the ICMP echo id, of a frame (fixing
/// the checksum).
pub fn set_sport(f: &mut [u8], port: u16) {
    let Some(p) = Pkt::parse(f) else { return };
    let ihl = usize::from(f[14] & 15) * 4;
    let l4 = 14 + ihl;
    let (at, ck) = match p.proto {
        PROTO_TCP => (l4, l4 + 16),
        PROTO_UDP => (l4, l4 + 6),
        PROTO_ICMP => (l4 + 4, l4 + 2),
        _ => return,
    };
    let old = u16::from_be_bytes([f[at], f[at + 1]]);
    f[at..at + 2].copy_from_slice(&port.to_be_bytes());
    if p.proto == PROTO_UDP && f[ck..ck + 2] == [0, 0] {
        return;
    }
    // RFC 1624: HC' = ~(~HC + ~m + m').
    let hc = u16::from_be_bytes([f[ck], f[ck + 1]]);
    let mut s = u32::from(!hc) + u32::from(!old) + u32::from(port);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    let mut n = !(s as u16);
    if p.proto == PROTO_UDP && n == 0 {
        n = 0xffff;
    }
    f[ck..ck + 2].copy_from_slice(&n.to_be_bytes());
}

/// Compares the kernel's outcome with sim's; returns the differences.
pub fn differences(topo: &Topo, masks: &Masks, kernel: &Outcome, sim: &Outcome) -> Vec<String> {
    let mut d: Vec<String> = Vec::new();
    for e in &kernel.errors {
        d.push(format!("kernel run: {e}"));
    }
    for e in &sim.errors {
        d.push(format!("sim run: {e}"));
    }
    // conntrack, snapshot by snapshot; learn sim port -> kernel port.
    let mut port_map: HashMap<(u8, Ipv4Addr, u16), u16> = HashMap::new();
    for (k, s) in kernel.snaps.iter().zip(&sim.snaps) {
        let label = &k.0;
        let km: Vec<(String, Option<u16>, String)> =
            k.1.iter()
                .map(|l| {
                    let (m, r) = mask_line(l, masks, &mut d, "kernel");
                    (m, r, l.clone())
                })
                .collect();
        let sm: Vec<(String, Option<u16>, String)> =
            s.1.iter()
                .map(|l| {
                    let (m, r) = mask_line(l, masks, &mut d, "sim");
                    (m, r, l.clone())
                })
                .collect();
        for (m, r, l) in &sm {
            if let Some((_, kr, _)) = km.iter().find(|(km, _, _)| km == m) {
                if let (Some(sp), Some(kp)) = (r, kr) {
                    let ct = Ct::parse(l);
                    let proto = ct
                        .line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    if let Some(a) = ct.get(1, "dst").and_then(|a| a.parse().ok()) {
                        port_map.insert((proto, a, *sp), *kp);
                    }
                }
            }
        }
        let mut ks: Vec<&String> = km.iter().map(|x| &x.0).collect();
        let mut ss: Vec<&String> = sm.iter().map(|x| &x.0).collect();
        ks.sort();
        ss.sort();
        if ks != ss {
            let mut msg = format!("conntrack -L at \"{label}\" differs (timeouts masked):\n");
            for l in &ks {
                if !ss.contains(l) {
                    let _ = writeln!(msg, "    kernel only: {l}");
                }
            }
            for l in &ss {
                if !ks.contains(l) {
                    let _ = writeln!(msg, "    sim only:    {l}");
                }
            }
            d.push(msg);
        }
    }
    if kernel.snaps.len() != sim.snaps.len() && sim.errors.is_empty() {
        d.push(format!(
            "snapshots: kernel {}, sim {}",
            kernel.snaps.len(),
            sim.snaps.len()
        ));
    }
    // Frames.
    if kernel.sent.values().all(Vec::is_empty) {
        d.push("the kernel sent nothing: the comparison says nothing".to_string());
    }
    let own = topo.own_addrs();
    for i in &topo.ifaces {
        let kf = kernel.sent.get(i.name).cloned().unwrap_or_default();
        let mut sf = sim.sent.get(i.name).cloned().unwrap_or_default();
        for f in &mut sf {
            if let Some(p) = Pkt::parse(f) {
                let echo_or_ports = p.proto != PROTO_ICMP || p.key() != 0;
                if let Some(kp) = port_map
                    .get(&(p.proto, p.src, p.key()))
                    .filter(|_| echo_or_ports)
                {
                    set_sport(f, *kp);
                }
            }
        }
        for (n, f) in sf.iter().enumerate() {
            if let Some(e) = checksum_problem(f) {
                d.push(format!("{}: sim frame {n}: {e}: {}", i.name, describe(f)));
            }
        }
        let kn: Vec<Vec<u8>> = kf.iter().map(|f| normalize(f, &own)).collect();
        let sn: Vec<Vec<u8>> = sf.iter().map(|f| normalize(f, &own)).collect();
        if kn != sn {
            let mut msg = format!(
                "{}: frames differ (kernel sent {}, sim {}; sim ports mapped to the kernel's):\n",
                i.name,
                kn.len(),
                sn.len()
            );
            for n in 0..kn.len().max(sn.len()) {
                let same = kn.get(n) == sn.get(n);
                let mark = if same { "  " } else { "!=" };
                let _ = writeln!(
                    msg,
                    "  {mark} #{n} kernel: {}",
                    kf.get(n).map_or("-".to_string(), |f| describe(f))
                );
                if !same {
                    let _ = writeln!(
                        msg,
                        "        sim:    {}",
                        sf.get(n).map_or("-".to_string(), |f| describe(f))
                    );
                    if let (Some(a), Some(b)) = (kn.get(n), sn.get(n)) {
                        if a.len() == b.len() {
                            let offs: Vec<usize> =
                                (0..a.len()).filter(|&x| a[x] != b[x]).take(8).collect();
                            let _ = writeln!(msg, "        differing bytes at {offs:?}");
                        }
                    }
                }
            }
            d.push(msg);
        }
    }
    if kernel.counters != sim.counters && sim.errors.is_empty() {
        let mut msg = String::from("rule counters differ (iptables-save -c vs --save-counters):\n");
        for l in &kernel.counters {
            if !sim.counters.contains(l) {
                let _ = writeln!(msg, "    kernel only: {l}");
            }
        }
        for l in &sim.counters {
            if !kernel.counters.contains(l) {
                let _ = writeln!(msg, "    sim only:    {l}");
            }
        }
        d.push(msg);
    }
    d
}

/// Prints one side's outcome (debugging aid; `FASTABLES_NAT_SHOW=1`).
pub fn show(side: &str, o: &Outcome) {
    eprintln!("=== {side}");
    for (i, fs) in &o.sent {
        for f in fs {
            eprintln!("  {i}: {}", describe(f));
        }
    }
    for (l, ct) in &o.snaps {
        eprintln!("  conntrack at {l}:");
        for c in ct {
            eprintln!("    {c}");
        }
    }
    eprintln!("  counters:");
    for c in &o.counters {
        eprintln!("    {c}");
    }
    for e in &o.errors {
        eprintln!("  error: {e}");
    }
}

/// Runs `script` through both and returns the differences (empty: equal).
/// `None` when the kernel side cannot run here.
pub fn compare(
    tag: &str,
    topo: &Topo,
    rules: &str,
    script: &Script,
    masks: &Masks,
) -> Option<(Outcome, Outcome, Vec<String>)> {
    if !can_run() {
        return None;
    }
    // FASTABLES_NAT_SELFTEST=1: the kernel against itself (random ports differ
    // between the runs), to check the harness's masking and port mapping.
    let sim = if std::env::var_os("FASTABLES_NAT_SELFTEST").is_some() {
        run_kernel(
            &format!("{tag}-self"),
            topo,
            rules,
            script,
            &Outcome::default(),
        )
    } else {
        run_sim(tag, topo, rules, script)
    };
    let kernel = run_kernel(tag, topo, rules, script, &sim);
    if std::env::var_os("FASTABLES_NAT_SHOW").is_some() {
        show(&format!("{tag} kernel"), &kernel);
        show(&format!("{tag} sim"), &sim);
    }
    let d = differences(topo, masks, &kernel, &sim);
    Some((kernel, sim, d))
}

/// Asserts that there are no differences, listing all of them otherwise.
pub fn assert_same(tag: &str, d: &[String]) {
    assert!(
        d.is_empty(),
        "{tag}: fastables differs from the kernel:\n{}",
        d.join("\n")
    );
}
