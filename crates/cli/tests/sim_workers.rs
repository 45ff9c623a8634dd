//! `fastables sim` with two workers (`[workers] cores = [0, 1]`): frames are
//! spread over them by an emulated NIC's RSS (symmetric Toeplitz key), each
//! worker with its own connection table. Source NAT must pick ports whose
//! replies land on the worker that owns the connection; DNATed replies, whose
//! tuple NAT cannot choose, are handed to the owner.

mod common;

use std::net::Ipv4Addr;

use common::seed::*;
use common::{decode_all, Scenario};
use fastables_packet::builder::{tcp_frame, TcpSpec};
use fastables_port::rss::{Rss, SYMMETRIC_KEY};

const DNS: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

fn us(ms: u64) -> u64 {
    T0_US + ms * 1000
}

fn nat(body: &str) -> String {
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n{body}COMMIT\n"
    )
}

fn two_workers(s: &Scenario) {
    std::fs::write(
        s.dir.path("fastables.toml"),
        format!("{CONFIG}\n[workers]\ncores = [0, 1]\n"),
    )
    .unwrap();
}

fn q(r: &Rss, proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> u16 {
    r.queue(proto, u32::from(src), u32::from(dst), sport, dport)
}

#[test]
fn masquerade_picks_ports_whose_replies_come_back_to_the_owner() {
    let rules = nat("-A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -j MASQUERADE\n");
    let ctr = eth_from_container();
    let queries: Vec<(u64, Vec<u8>)> = (0..40u16)
        .map(|i| {
            (
                us(u64::from(i)),
                udp(&ctr, CONTAINER_IP, 20000 + i, DNS, 53, 64),
            )
        })
        .collect();
    // First pass: where do the queries go out?
    let mut s = Scenario::new("workers-masq", &rules);
    two_workers(&s);
    s.input("docker0", &queries);
    let r = s.run_into("pass1", &["--seed", "3"]);
    r.assert_ok();
    let out = decode_all(&r.sent("eth0"));
    assert_eq!(out.len(), 40, "every query leaves");
    let rss = Rss::new(SYMMETRIC_KEY, 2);
    let mut changed = 0;
    for (i, d) in out.iter().enumerate() {
        let (sport, dport) = d.ports();
        assert_eq!((d.src, d.dst, dport), (ETH0_IP, DNS, 53));
        let orig = 20000 + i as u16;
        // The reply (8.8.8.8:53 -> 10.0.2.15:sport) lands where the query did.
        assert_eq!(
            q(&rss, 17, DNS, 53, ETH0_IP, sport),
            q(&rss, 17, CONTAINER_IP, orig, DNS, 53),
            "query {i}: port {sport}"
        );
        changed += usize::from(sport != orig);
    }
    // The symmetric key's hash is linear in the XOR of the tuple's 16-bit
    // words: whether a kept port's reply would land on the other worker
    // depends on the address pair only, so here every port moves (or none).
    let delta = q(&rss, 17, DNS, 53, ETH0_IP, 20000) != q(&rss, 17, CONTAINER_IP, 20000, DNS, 53);
    assert_eq!(
        changed,
        if delta { 40 } else { 0 },
        "ports moved: {changed}"
    );
    // Second pass: the answers come back, each to its owner, translated back.
    let gw = eth_from_gw();
    let answers: Vec<(u64, Vec<u8>)> = out
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                us(100 + i as u64),
                udp(&gw, DNS, 53, ETH0_IP, d.ports().0, 64),
            )
        })
        .collect();
    let mut s = Scenario::new("workers-masq2", &rules);
    two_workers(&s);
    s.input("docker0", &queries);
    s.input("eth0", &answers);
    let r = s.run_into("pass2", &["--seed", "3", "--conntrack"]);
    r.assert_ok();
    let back = decode_all(&r.sent("docker0"));
    assert_eq!(back.len(), 40, "every answer comes back: {}", r.stdout());
    for (i, d) in back.iter().enumerate() {
        assert_eq!(
            (d.src, d.dst, d.ports()),
            (DNS, CONTAINER_IP, (53, 20000 + i as u16))
        );
    }
    let stdout = r.stdout();
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("udp ")).collect();
    assert_eq!(lines.len(), 40, "{}", r.stdout());
    assert!(
        lines.iter().all(|l| !l.contains("[UNREPLIED]")),
        "{lines:#?}"
    );
}

#[test]
fn dnat_replies_are_handed_to_the_owner() {
    let rss = Rss::new(SYMMETRIC_KEY, 2);
    let remote = REMOTE_IP;
    // A backend port whose replies RSS sends to the other worker (for the
    // symmetric key that holds for every client port or for none).
    let backend = (80u16..100)
        .find(|&b| {
            q(&rss, 6, remote, 30000, ETH0_IP, 8088) != q(&rss, 6, CONTAINER_IP, b, remote, 30000)
        })
        .expect("a backend port whose replies land elsewhere");
    let rules = nat(&format!(
        "-A PREROUTING -i eth0 -p tcp -m tcp --dport 8088 -j DNAT --to-destination 172.18.0.2:{backend}\n"
    ));
    let gw = eth_from_gw();
    let ctr = eth_from_container();
    let mut syns = Vec::new();
    let mut synacks = Vec::new();
    for i in 0..30u16 {
        syns.push((us(u64::from(i)), syn(&gw, remote, 30000 + i, ETH0_IP, 8088)));
        let f = tcp_frame(
            &ctr,
            &ip(CONTAINER_IP, remote, 64, i),
            &TcpSpec {
                src_port: backend,
                dst_port: 30000 + i,
                seq: 5000,
                ack: 0x1000_0000 + u32::from(30000 + i) + 1,
                flags: 0x12,
                window: 64240,
                ..TcpSpec::default()
            },
            b"",
        );
        synacks.push((us(100 + u64::from(i)), f));
    }
    let elsewhere = (0..30u16)
        .filter(|i| {
            q(&rss, 6, remote, 30000 + i, ETH0_IP, 8088)
                != q(&rss, 6, CONTAINER_IP, backend, remote, 30000 + i)
        })
        .count();
    assert_eq!(elsewhere, 30, "every reply lands on the other worker");
    let mut s = Scenario::new("workers-dnat", &rules);
    two_workers(&s);
    s.input("eth0", &syns);
    s.input("docker0", &synacks);
    let r = s.run_into("out", &["--conntrack"]);
    r.assert_ok();
    let fwd = decode_all(&r.sent("docker0"));
    assert_eq!(fwd.len(), 30, "every SYN reaches the container");
    let back = decode_all(&r.sent("eth0"));
    assert_eq!(
        back.len(),
        30,
        "every SYN-ACK leaves, translated: {}",
        r.stdout()
    );
    for (i, d) in back.iter().enumerate() {
        assert_eq!(
            (d.src, d.dst, d.ports(), d.tcp_flags()),
            (ETH0_IP, remote, (8088, 30000 + i as u16), 0x12)
        );
    }
    let syn_recv = r
        .stdout()
        .lines()
        .filter(|l| l.starts_with("tcp ") && l.contains(" SYN_RECV "))
        .count();
    assert_eq!(syn_recv, 30, "{}", r.stdout());
}
