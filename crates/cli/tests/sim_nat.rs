//! The seed scenario's NAT through `fastables sim --conntrack`: the seed's
//! MASQUERADE rules, a DNS query and two HTTP connections (one leaving by the
//! 1.2.3.4 next hop), every frame decoded with its checksums verified, and the
//! final `conntrack -L` compared with the kernel's lines for the same flows
//! (tests/fixtures/seed_conntrack_kernel.txt, recorded on Linux 6.18 with
//! /work/shared/kernel-reference.sh and real sockets; timeouts masked, and the
//! ports MASQUERADE picks at random from 55666-55680 masked to the range).

mod common;

use std::net::Ipv4Addr;

use common::seed::*;
use common::{decode_all, Decoded, Scenario, SimRun};
use fastables_packet::builder::{tcp_frame, EthSpec, TcpSpec};

const SEED_NAT: &str =
    "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
     :POSTROUTING ACCEPT [0:0]\n\
     -A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -p tcp -j MASQUERADE --to-ports 55666-55680\n\
     -A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -j MASQUERADE\n\
     COMMIT\n";

const KERNEL_CT: &str = include_str!("fixtures/seed_conntrack_kernel.txt");

const DNS: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
const ONE: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

fn us(ms: u64) -> u64 {
    T0_US + ms * 1000
}

#[allow(clippy::too_many_arguments)]
fn seg(
    eth: &EthSpec,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    tcp_frame(
        eth,
        &ip(src, dst, 64, 7),
        &TcpSpec {
            src_port: sport,
            dst_port: dport,
            seq,
            ack,
            flags,
            ..TcpSpec::default()
        },
        data,
    )
}

const C: u32 = 0x1000; // client ISN
const S: u32 = 0x9000; // server ISN
const REQ: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.0 200 OK\r\n\r\n";

/// The three flows' first packets (a DNS query, a SYN to 8.8.8.8, a SYN to 1.1.1.1).
fn openers() -> Vec<(u64, Vec<u8>)> {
    let ctr = eth_from_container();
    vec![
        (us(0), udp(&ctr, CONTAINER_IP, 33894, DNS, 53, 64)),
        (
            us(1),
            seg(&ctr, CONTAINER_IP, 37622, DNS, 80, C, 0, SYN, b""),
        ),
        (
            us(2),
            seg(&ctr, CONTAINER_IP, 37623, ONE, 80, C, 0, SYN, b""),
        ),
    ]
}

/// Timestamped frames (ms, bytes).
type Frames = Vec<(u64, Vec<u8>)>;

/// The rest of one HTTP exchange as the kernel run had it (the server closes
/// first), from `t` ms on. `port`: the translated client port; `server_eth`:
/// frames from the server side.
fn exchange(
    t: u64,
    server: Ipv4Addr,
    nat_src: Ipv4Addr,
    sport: u16,
    port: u16,
    server_eth: &EthSpec,
) -> (Frames, Frames) {
    let ctr = eth_from_container();
    let r = REQ.len() as u32;
    let a = RESP.len() as u32;
    let from_srv = |seq, ack, flags, data: &[u8]| {
        seg(server_eth, server, 80, nat_src, port, seq, ack, flags, data)
    };
    let from_ctr = |seq, ack, flags, data: &[u8]| {
        seg(&ctr, CONTAINER_IP, sport, server, 80, seq, ack, flags, data)
    };
    let eth0 = vec![
        (us(t), from_srv(S, C + 1, SYN | ACK, b"")),
        (us(t + 3), from_srv(S + 1, C + 1 + r, PSH | ACK, RESP)),
        (us(t + 4), from_srv(S + 1 + a, C + 1 + r, FIN | ACK, b"")),
        (us(t + 7), from_srv(S + 2 + a, C + 2 + r, ACK, b"")),
    ];
    let docker0 = vec![
        (us(t + 1), from_ctr(C + 1, S + 1, ACK, b"")),
        (us(t + 2), from_ctr(C + 1, S + 1, PSH | ACK, REQ)),
        (us(t + 5), from_ctr(C + 1 + r, S + 2 + a, ACK, b"")),
        (us(t + 6), from_ctr(C + 1 + r, S + 2 + a, FIN | ACK, b"")),
    ];
    (eth0, docker0)
}

fn run(s: &mut Scenario, docker0: Vec<(u64, Vec<u8>)>, eth0: Vec<(u64, Vec<u8>)>) -> SimRun {
    s.input("docker0", &docker0);
    s.input("eth0", &eth0);
    let r = s.run_into("out", &["--conntrack", "--seed", "7"]);
    r.assert_ok();
    r
}

/// `conntrack -L` lines with the timeout masked and a reply `dport` in
/// 55666-55680 replaced by the range (asserted to be in it).
fn masked(lines: &str) -> Vec<String> {
    let mut v: Vec<String> = lines
        .lines()
        .filter(|l| l.starts_with("tcp ") || l.starts_with("udp ") || l.starts_with("icmp "))
        .map(|l| {
            let mut toks: Vec<String> = l.split(' ').map(str::to_string).collect();
            // "tcp      6 119 ..." : the timeout is the first number after the protocol number.
            let i = toks.iter().position(|t| t.parse::<u32>().is_ok()).unwrap() + 1;
            assert!(toks[i].parse::<u64>().is_ok(), "{l}");
            toks[i] = "<t>".into();
            let dports: Vec<usize> = (0..toks.len())
                .filter(|&k| toks[k].starts_with("dport="))
                .collect();
            if let Some(&k) = dports.get(1) {
                let p: u16 = toks[k]["dport=".len()..].parse().unwrap();
                if toks[0] == "tcp" {
                    assert!((55666..=55680).contains(&p), "{l}");
                    toks[k] = "dport=<55666-55680>".into();
                }
            }
            toks.join(" ")
        })
        .collect();
    v.sort();
    v
}

fn only(d: &[Decoded], pred: impl Fn(&Decoded) -> bool) -> Vec<Decoded> {
    d.iter().filter(|x| pred(x)).cloned().collect()
}

#[test]
fn seed_scenario_matches_the_kernel() {
    // Pass 1: the first packets only, to learn the ports MASQUERADE picks
    // (sim is deterministic for a seed: pass 2 picks the same).
    let mut s1 = Scenario::new("seednat1", SEED_NAT);
    let r1 = run(&mut s1, openers(), vec![]);
    let out1 = decode_all(&r1.sent("eth0"));
    assert_eq!(out1.len(), 3, "{out1:?}");
    // The DNS query keeps its port and leaves from 10.0.2.15.
    assert_eq!(
        (out1[0].src, out1[0].dst, out1[0].ports()),
        (ETH0_IP, DNS, (33894, 53))
    );
    // TCP to 8.8.8.8: 10.0.2.15 with a port from --to-ports.
    assert_eq!((out1[1].src, out1[1].dst), (ETH0_IP, DNS));
    let p1 = out1[1].ports().0;
    assert!((55666..=55680).contains(&p1), "{p1}");
    // TCP to 1.1.1.1 (via 1.2.3.4): from 1.2.3.56, the address on the next hop's subnet.
    assert_eq!((out1[2].src, out1[2].dst), (ETH0_IP2, ONE));
    assert_eq!(out1[2].dst_mac, PEER_MAC.0);
    let p2 = out1[2].ports().0;
    assert!((55666..=55680).contains(&p2), "{p2}");

    // Pass 2: the whole exchange.
    let mut docker0 = openers();
    let mut eth0 = vec![(us(10), udp(&eth_from_gw(), DNS, 53, ETH0_IP, 33894, 60))];
    let (e, d) = exchange(20, DNS, ETH0_IP, 37622, p1, &eth_from_gw());
    eth0.extend(e);
    docker0.extend(d);
    let (e, d) = exchange(40, ONE, ETH0_IP2, 37623, p2, &eth_from_peer());
    eth0.extend(e);
    docker0.extend(d);
    let mut s2 = Scenario::new("seednat2", SEED_NAT);
    let r = run(&mut s2, docker0, eth0);
    let out = decode_all(&r.sent("eth0"));
    let back = decode_all(&r.sent("docker0"));
    assert_eq!(out.len(), 1 + 2 * 5, "{out:?}");
    assert_eq!(back.len(), 1 + 2 * 4, "{back:?}");
    // Everything towards the servers is translated; ports stay those of pass 1.
    for o in &out {
        match o.dst {
            x if x == DNS && o.proto == 17 => assert_eq!((o.src, o.ports().0), (ETH0_IP, 33894)),
            x if x == DNS => assert_eq!((o.src, o.ports().0), (ETH0_IP, p1)),
            _ => assert_eq!((o.src, o.ports().0), (ETH0_IP2, p2)),
        }
    }
    // Everything back reaches the container at its own ports.
    assert!(back
        .iter()
        .all(|b| b.dst == CONTAINER_IP && b.dst_mac == CONTAINER_MAC.0));
    let udp_back = only(&back, |b| b.proto == 17);
    assert_eq!(udp_back.len(), 1);
    assert_eq!((udp_back[0].src, udp_back[0].ports()), (DNS, (53, 33894)));
    assert_eq!(
        only(&back, |b| b.src == DNS
            && b.proto == 6
            && b.ports() == (80, 37622))
        .len(),
        4
    );
    assert_eq!(
        only(&back, |b| b.src == ONE && b.ports() == (80, 37623)).len(),
        4
    );

    // `conntrack -L`: the kernel's lines.
    assert_eq!(
        r.stderr(),
        "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.\n"
    );
    assert_eq!(masked(&r.stdout()), masked(KERNEL_CT), "{}", r.stdout());
    // The listing keeps conntrack-tools' column layout.
    assert!(r.stdout().contains("\nudp      17 "), "{}", r.stdout());
}
