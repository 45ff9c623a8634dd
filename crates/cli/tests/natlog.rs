//! Deterministic NAT, port blocks and the NAT event log through `fastables
//! sim`: a hundred subscribers behind the seed's docker0.
//!
//! - A real IPFIX collector (nfdump's `nfcapd` on loopback) receives the
//!   run's events; `nfdump` decodes the session records and their fields
//!   equal `conntrack -L` of the same run. nfdump 1.7 does not decode RFC
//!   8158's port block elements (361-364) from IPFIX: the same run, sent
//!   to a socket of this test, is decoded with `fastables_natlog::ipfix`.
//! - `fastables nat owner` answers for every session of a run, checked
//!   against the recorded events (deterministic from the rules alone,
//!   dynamic blocks from the syslog lines, with their time spans), and
//!   `nat map` gives each subscriber the block its sessions used.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::seed::*;
use common::{describe, fastables, have, Scenario};
use fastables_conntrack::{NatEvent, NatEventKind};
use fastables_natlog::ipfix::{event_of, Decoder};

const SUBSCRIBERS: u8 = 100;
const DET: &str = "-A POSTROUTING -s 172.18.0.0/24 -o eth0 -j SNAT --to-source 203.0.113.0/28 \
                   --deterministic 172.18.0.0/24 --block-size 2016\n";
const DYN: &str = "-A POSTROUTING -s 172.18.0.0/24 -o eth0 -j SNAT --to-source 198.51.100.0/30 \
                   --block-size 64 --max-blocks 2\n";

fn nat_rules(rule: &str) -> String {
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n{rule}COMMIT\n"
    )
}

fn sub(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 18, 0, 10 + i)
}

/// The scenario: every subscriber opens three TCP connections and sends a
/// DNS query, 1 ms apart; with `late`, one more subscriber's packet 10
/// minutes later lets every earlier connection expire first.
fn scenario(tag: &str, rule: &str, nat_log: &str, late: bool) -> Scenario {
    scenario_with(tag, rule, "", nat_log, late)
}

/// [`scenario`] with more configuration (`extra`, whole sections).
fn scenario_with(tag: &str, rule: &str, extra: &str, nat_log: &str, late: bool) -> Scenario {
    let mut s = Scenario::new(tag, &nat_rules(rule));
    let cfg = format!("{CONFIG}\n{extra}\n[nat_log]\n{nat_log}");
    std::fs::write(s.dir.path("fastables.toml"), cfg).unwrap();
    let mut frames = Vec::new();
    let mut t = T0_US;
    for i in 0..SUBSCRIBERS {
        for k in 0..3u16 {
            frames.push((
                t,
                syn(&eth_from_container(), sub(i), 40000 + k, REMOTE_IP, 80),
            ));
            t += 1000;
        }
        frames.push((
            t,
            udp(
                &eth_from_container(),
                sub(i),
                5353,
                Ipv4Addr::new(8, 8, 8, 8),
                53,
                64,
            ),
        ));
        t += 1000;
    }
    if late {
        frames.push((
            t + 600_000_000,
            udp(
                &eth_from_container(),
                sub(SUBSCRIBERS),
                5353,
                Ipv4Addr::new(8, 8, 8, 8),
                53,
                64,
            ),
        ));
    }
    s.input("docker0", &frames);
    s
}

/// One connection as `conntrack -L` and the session records see it:
/// (proto, src, sport, dst, dport, public src, public port).
type Conn = (u8, Ipv4Addr, u16, Ipv4Addr, u16, Ipv4Addr, u16);

/// The connections of `conntrack -L` lines.
fn ct_conns(text: &str) -> BTreeSet<Conn> {
    text.lines()
        .filter(|l| l.starts_with("tcp") || l.starts_with("udp"))
        .map(|l| {
            let kv: Vec<(&str, &str)> = l
                .split_whitespace()
                .filter_map(|w| w.split_once('='))
                .collect();
            let get = |k: &str, n: usize| kv.iter().filter(|x| x.0 == k).nth(n).unwrap().1;
            let ip = |k, n| get(k, n).parse::<Ipv4Addr>().unwrap();
            let port = |k, n| get(k, n).parse::<u16>().unwrap();
            let proto = if l.starts_with("tcp") { 6 } else { 17 };
            // The reply tuple's destination is the public end.
            (
                proto,
                ip("src", 0),
                port("sport", 0),
                ip("dst", 0),
                port("dport", 0),
                ip("dst", 1),
                port("dport", 1),
            )
        })
        .collect()
}

fn session_conn(e: &NatEvent) -> Conn {
    (
        e.proto,
        Ipv4Addr::from(e.src),
        e.sport,
        Ipv4Addr::from(e.dst),
        e.dport,
        Ipv4Addr::from(e.xsrc),
        e.xsport,
    )
}

/// The events of the run's syslog file.
fn logged(s: &Scenario) -> Vec<NatEvent> {
    let text = std::fs::read_to_string(s.dir.path("nat.log")).unwrap();
    text.lines()
        .map(|l| fastables_natlog::syslog::parse(l).unwrap_or_else(|| panic!("{l}")))
        .collect()
}

/// nfcapd on loopback, writing into `dir`; stopped (and its file closed)
/// by [`Collector::stop`].
struct Collector(Child);

impl Collector {
    fn start(port: u16, dir: &std::path::Path) -> Collector {
        std::fs::create_dir_all(dir).unwrap();
        let c = Command::new("nfcapd")
            .args([
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "3600",
                "-w",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nfcapd starts");
        // Until it listens: its port is taken.
        let deadline = Instant::now() + Duration::from_secs(5);
        while UdpSocket::bind(("127.0.0.1", port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Collector(c)
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nfdump -R dir -o raw` as records of `key = value` fields.
fn nfdump(dir: &std::path::Path) -> Vec<Vec<(String, String)>> {
    let out = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .args(["-o", "raw"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("Flow Record:")
        .skip(1)
        .map(|r| {
            r.lines()
                .filter_map(|l| l.split_once(" = "))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

fn field<'a>(r: &'a [(String, String)], k: &str) -> &'a str {
    r.iter().find(|x| x.0 == k).map_or("", |x| x.1.as_str())
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn nfcapd_receives_and_decodes_the_nat_events_of_a_run() {
    if !(have("nfcapd") && have("nfdump")) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs nfdump (.ci/setup installs it)"
        );
        eprintln!("skipped: nfcapd/nfdump not installed (apt-get install nfdump)");
        return;
    }
    let port = free_udp_port();
    let s = scenario(
        "natlog-nfcapd",
        DYN,
        &format!("ipfix = \"127.0.0.1:{port}\"\nsyslog = \"file:nat.log\"\n"),
        false,
    );
    let flows = s.dir.path("flows");
    let collector = Collector::start(port, &flows);
    let r = s.run_into("out", &["--conntrack"]);
    r.assert_ok();
    // nfcapd writes its file when it stops.
    std::thread::sleep(Duration::from_millis(300));
    collector.stop();
    let ct = ct_conns(&r.stdout());
    assert_eq!(ct.len(), usize::from(SUBSCRIBERS) * 4, "{}", r.stdout());
    assert!(r.stderr().contains("0 dropped"), "{}", r.stderr());

    let recs = nfdump(&flows);
    // Session creates (natEvent 4; nfdump names only 1 and 2): the
    // translation fields equal conntrack -L's.
    let sessions: BTreeSet<Conn> = recs
        .iter()
        .filter(|r| field(r, "nat event").starts_with("4:"))
        .map(|r| {
            let ip = |k| field(r, k).parse::<Ipv4Addr>().unwrap();
            let port = |k| field(r, k).parse::<u16>().unwrap();
            (
                field(r, "proto")
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap(),
                ip("src addr"),
                port("src port"),
                ip("dst addr"),
                port("dst port"),
                ip("src xlt ip"),
                port("src xlt port"),
            )
        })
        .collect();
    assert_eq!(sessions, ct, "nfdump's sessions against conntrack -L");
    // The event time is the connection's (the pcap's time, in ms).
    let first = recs
        .iter()
        .find(|r| field(r, "nat event").starts_with("4:"))
        .unwrap();
    assert!(
        field(first, "Event time").starts_with(&(T0_US / 1000).to_string()),
        "{first:?}"
    );
    // Block allocations (natEvent 16): nfdump shows who and which address,
    // not the ports of the block.
    let blocks: Vec<_> = recs
        .iter()
        .filter(|r| field(r, "nat event").starts_with("16:"))
        .collect();
    assert_eq!(blocks.len(), usize::from(SUBSCRIBERS), "one block each");
    assert!(blocks
        .iter()
        .all(|b| field(b, "src xlt ip").starts_with("198.51.100.")));

    // The same run again (same seed, same choices) to this test's socket:
    // the block records decoded in full, and every session's public port
    // inside its subscriber's block.
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let s2 = scenario(
        "natlog-own",
        DYN,
        &format!("ipfix = \"{}\"\n", rx.local_addr().unwrap()),
        false,
    );
    s2.run_into("out", &[]).assert_ok();
    let mut dec = Decoder::default();
    let mut events = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = rx.recv(&mut buf) {
        let d = dec.message(&buf[..n]).unwrap();
        events.extend(d.records.iter().filter_map(|r| event_of(&r.1)));
    }
    let allocs: Vec<&NatEvent> = events
        .iter()
        .filter(|e| e.kind == NatEventKind::BlockAlloc)
        .collect();
    assert_eq!(allocs.len(), usize::from(SUBSCRIBERS));
    for e in events
        .iter()
        .filter(|e| e.kind == NatEventKind::SessionCreate)
    {
        assert!(ct.contains(&session_conn(e)));
        let b = allocs.iter().find(|b| b.src == e.src).expect("its block");
        assert_eq!(b.xsrc, e.xsrc, "the block's address");
        assert!(
            b.block.0 <= e.xsport && e.xsport <= b.block.1,
            "{e:?} in {b:?}"
        );
        assert_eq!(b.block.1 - b.block.0 + 1, 64);
    }
}

/// `fastables nat owner` of public endpoints: its answer lines.
fn owner(s: &Scenario, extra: &[&str], targets: &[String]) -> (bool, String) {
    let out = fastables()
        .args(["nat", "owner", "-c"])
        .arg(s.dir.path("fastables.toml"))
        .args(extra)
        .args(targets)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn nat_owner_answers_for_every_session_deterministic() {
    let s = scenario(
        "natlog-owner-det",
        DET,
        "syslog = \"file:nat.log\"\n",
        false,
    );
    s.run_into("out", &[]).assert_ok();
    owner_and_map_agree_with_the_log(&s);
}

/// With two workers (RSS emulated), each takes the ports of a
/// subscriber's block whose replies come back to it: the same answers.
#[test]
fn deterministic_blocks_with_two_workers() {
    let s = scenario_with(
        "natlog-owner-det2",
        DET,
        "[workers]\ncores = [0, 1]\n",
        "syslog = \"file:nat.log\"\n",
        false,
    );
    let r = s.run_into("out", &["--conntrack"]);
    r.assert_ok();
    assert_eq!(
        ct_conns(&r.stdout()).len(),
        usize::from(SUBSCRIBERS) * 4,
        "{}",
        r.stderr()
    );
    owner_and_map_agree_with_the_log(&s);
}

/// Every session of the log has its subscriber as the owner of its public
/// end, from the rules alone, and lies in the block `nat map` gives.
fn owner_and_map_agree_with_the_log(s: &Scenario) {
    let sessions: Vec<NatEvent> = logged(s)
        .into_iter()
        .filter(|e| e.kind == NatEventKind::SessionCreate)
        .collect();
    assert_eq!(sessions.len(), usize::from(SUBSCRIBERS) * 4);
    let targets: Vec<String> = sessions
        .iter()
        .map(|e| format!("{}:{}", Ipv4Addr::from(e.xsrc), e.xsport))
        .collect();
    // From the rules alone: no log.
    let (ok, out) = owner(s, &[], &targets);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), sessions.len());
    for (e, l) in sessions.iter().zip(&lines) {
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w[1], Ipv4Addr::from(e.src).to_string(), "{l}");
        assert_eq!(w[2], "deterministic");
    }
    // nat map gives each subscriber the block its sessions used.
    let subs: Vec<String> = (0..SUBSCRIBERS).map(|i| sub(i).to_string()).collect();
    let out = fastables()
        .args(["nat", "map", "-c"])
        .arg(s.dir.path("fastables.toml"))
        .args(&subs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for (i, l) in text.lines().enumerate() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let (a, ports) = w[1].split_once(':').unwrap();
        let (lo, hi) = ports.split_once('-').unwrap();
        let (lo, hi): (u16, u16) = (lo.parse().unwrap(), hi.parse().unwrap());
        for e in sessions
            .iter()
            .filter(|e| Ipv4Addr::from(e.src) == sub(i as u8))
        {
            assert_eq!(Ipv4Addr::from(e.xsrc).to_string(), a);
            assert!(lo <= e.xsport && e.xsport <= hi, "{l}: {e:?}");
        }
    }
}

#[test]
fn nat_owner_answers_for_every_session_dynamic_with_time_spans() {
    let s = scenario("natlog-owner-dyn", DYN, "syslog = \"file:nat.log\"\n", true);
    s.run_into("out", &[]).assert_ok();
    let ev = logged(&s);
    let sessions: Vec<&NatEvent> = ev
        .iter()
        .filter(|e| e.kind == NatEventKind::SessionCreate)
        .collect();
    assert_eq!(sessions.len(), usize::from(SUBSCRIBERS) * 4 + 1);
    // Every early session expired, and with the last of them its block.
    let deletes = ev
        .iter()
        .filter(|e| e.kind == NatEventKind::SessionDelete)
        .count();
    let releases = ev
        .iter()
        .filter(|e| e.kind == NatEventKind::BlockRelease)
        .count();
    assert_eq!(
        (deletes, releases),
        (usize::from(SUBSCRIBERS) * 4, usize::from(SUBSCRIBERS))
    );
    let log = s.dir.path("nat.log");
    let log = log.to_str().unwrap();
    for e in &sessions {
        let t = format!("{}:{}", Ipv4Addr::from(e.xsrc), e.xsport);
        // At the session's time, its block's owner is its subscriber.
        let at = format!(
            "{}.{:09}",
            e.time_ns / 1_000_000_000,
            e.time_ns % 1_000_000_000
        );
        let (ok, out) = owner(&s, &["--log", log, "--at", &at], std::slice::from_ref(&t));
        assert!(ok, "{t}: {out}");
        let blocks: Vec<&str> = out.lines().filter(|l| l.contains(" block ")).collect();
        assert_eq!(blocks.len(), 1, "{out}");
        assert_eq!(
            blocks[0].split_whitespace().nth(1).unwrap(),
            Ipv4Addr::from(e.src).to_string()
        );
        assert!(
            out.lines().any(|l| l.contains(" session ")
                && l.contains(&format!("{}:{}", Ipv4Addr::from(e.src), e.sport))),
            "{out}"
        );
    }
    // Before the run nobody held them.
    let t = format!(
        "{}:{}",
        Ipv4Addr::from(sessions[0].xsrc),
        sessions[0].xsport
    );
    let (ok, out) = owner(&s, &["--log", log, "--at", "1000"], &[t]);
    assert!(!ok, "{out}");
}
