//! Pipeline behaviour on frames built with the packet builders: forwarding,
//! rule effects, generated packets, neighbors, the worker loop over an
//! in-memory port, and robustness on arbitrary bytes.

use std::net::Ipv4Addr;
use std::sync::Arc;

use fastables_config::Config;
use fastables_dataplane::drop::DropReason;
use fastables_dataplane::pipeline::Pipeline;
use fastables_dataplane::worker::{Action, Batch, Worker};
use fastables_packet::builder::{self, EthSpec, IpSpec, TcpSpec, UdpSpec};
use fastables_packet::checksum;
use fastables_packet::MacAddr;
use fastables_port::{Frame, FrameAddr, FRAME_SIZE};
use fastables_rules::compile::CompiledRuleset;
use fastables_rules::ctx::IfIndex;
use proptest::prelude::*;

mod common;
use common::{run_spares, MemPort, Out};

const HOST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]); // 172.18.0.2 on docker0
const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x35, 0x02]); // 10.0.2.2 on eth0
const DOCKER0: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x01]);
const ETH0: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xc2, 0xbe, 0x11]);

/// The routes of [`common::LAN`].
const ROUTES: &str = r#"
[[route]]
to = "0.0.0.0/0"
via = "10.0.2.2"
dev = "eth0"

[[route]]
to = "1.1.1.1/32"
via = "1.2.3.4"
dev = "eth0"
"#;

const ETH0_IF: IfIndex = 0;
const DOCKER0_IF: IfIndex = 1;

fn compile(rules: &str) -> Arc<CompiledRuleset> {
    let rs = fastables_rules::parse::parse_restore(rules, "test.rules").unwrap();
    Arc::new(CompiledRuleset::compile(&rs, &["eth0", "docker0", "lan2"]).unwrap())
}

fn pipeline(rules: &str) -> Pipeline {
    let cfg = Config::parse(&format!("{}{ROUTES}", common::LAN), "/t/fastables.toml").unwrap();
    Pipeline::new(&cfg, compile(rules)).unwrap()
}

fn run(p: &mut Pipeline, port: IfIndex, frame: &[u8]) -> Out {
    run_spares(p, port, frame, 2, 0)
}

fn from_host() -> EthSpec {
    EthSpec {
        src: HOST_MAC,
        dst: DOCKER0,
        ..Default::default()
    }
}

fn ip(src: &str, dst: &str) -> IpSpec {
    IpSpec {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        ident: 0x1234,
        ..Default::default()
    }
}

fn udp_out(ttl: u8) -> Vec<u8> {
    builder::udp_frame(
        &from_host(),
        &IpSpec {
            ttl,
            ..ip("172.18.0.2", "8.8.8.8")
        },
        &UdpSpec::default(),
        b"query",
    )
}

fn ip_ok(frame: &[u8]) -> bool {
    let hl = usize::from(frame[14] & 0x0f) * 4;
    checksum::verify(&frame[14..14 + hl])
}

const ACCEPT_ALL: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

#[test]
fn forward_decrements_ttl_and_rewrites_macs() {
    let mut p = pipeline(ACCEPT_ALL);
    let f = udp_out(64);
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!(o.action, Action::Forward { port: ETH0_IF });
    assert!(o.generated.is_empty());
    assert_eq!(&o.frame[0..6], &GW_MAC.0);
    assert_eq!(&o.frame[6..12], &ETH0.0);
    assert_eq!(o.frame[22], 63);
    assert!(ip_ok(&o.frame));
    // Only TTL and checksum changed.
    let mut a = f.clone();
    let mut b = o.frame.clone();
    for x in [&mut a, &mut b] {
        x[0..12].fill(0);
        x[22] = 0;
        x[24] = 0;
        x[25] = 0;
    }
    assert_eq!(a, b);
    assert_eq!(
        p.counters()
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn ethernet_padding_is_trimmed() {
    let mut p = pipeline(ACCEPT_ALL);
    let f = builder::udp_frame(
        &EthSpec {
            pad: true,
            ..from_host()
        },
        &ip("172.18.0.2", "8.8.8.8"),
        &UdpSpec::default(),
        b"",
    );
    assert_eq!(f.len(), 60);
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!(o.frame.len(), 14 + 28);
}

#[test]
fn filter_drop_is_counted_and_silent() {
    let mut p = pipeline("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -d 8.8.8.8/32 -j DROP\nCOMMIT\n");
    let o = run(&mut p, DOCKER0_IF, &udp_out(64));
    assert_eq!(o.action, Action::Drop(DropReason::FilterDrop));
    assert!(o.generated.is_empty());
    assert_eq!(p.drops().get(DropReason::FilterDrop), 1);
    // The rule counter is readable for `save -c`.
    let rs = fastables_rules::parse::parse_restore(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -d 8.8.8.8/32 -j DROP\nCOMMIT\n",
        "t",
    )
    .unwrap();
    let with = p.ruleset().counters_into(&rs, &[p.rule_state()]);
    let rule = &with
        .table(fastables_rules::model::Table::Filter)
        .unwrap()
        .chains[1]
        .rules[0];
    assert_eq!(rule.counters.packets, 1);
    assert_eq!(rule.counters.bytes, 33);
}

#[test]
fn policy_drop_in_input() {
    let mut p = pipeline(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
    );
    let f =
        builder::icmp_echo_request(&from_host(), &ip("172.18.0.2", "172.18.0.1"), 1, 1, b"ping");
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!(o.action, Action::Drop(DropReason::FilterDrop));
    assert!(o.generated.is_empty());
}

#[test]
fn mangle_ttl_inc_cancels_the_decrement() {
    let mut p = pipeline("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A FORWARD -j TTL --ttl-inc 1\nCOMMIT\n");
    let o = run(&mut p, DOCKER0_IF, &udp_out(64));
    assert_eq!(o.action, Action::Forward { port: ETH0_IF });
    assert_eq!(o.frame[22], 64);
    assert!(ip_ok(&o.frame));
    // In FORWARD it comes too late for a TTL of 1: ip_forward answers first.
    let o = run(&mut p, DOCKER0_IF, &udp_out(1));
    assert_eq!(o.action, Action::Drop(DropReason::TtlExpired));
}

#[test]
fn mangle_prerouting_ttl_inc_saves_ttl_1() {
    let mut p = pipeline("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A PREROUTING -j TTL --ttl-inc 1\nCOMMIT\n");
    let o = run(&mut p, DOCKER0_IF, &udp_out(1));
    assert_eq!(o.action, Action::Forward { port: ETH0_IF });
    assert_eq!(o.frame[22], 1);
    assert!(ip_ok(&o.frame));
}

#[test]
fn ttl_expired_sends_time_exceeded_from_ingress_address() {
    let mut p = pipeline(ACCEPT_ALL);
    let f = udp_out(1);
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!(o.action, Action::Drop(DropReason::TtlExpired));
    assert_eq!(o.generated.len(), 1);
    let (port, g) = &o.generated[0];
    assert_eq!(*port, DOCKER0_IF);
    assert_eq!(&g[0..6], &HOST_MAC.0);
    assert_eq!(&g[6..12], &DOCKER0.0);
    assert_eq!(&g[26..30], &[172, 18, 0, 1]);
    assert_eq!(&g[30..34], &[172, 18, 0, 2]);
    assert_eq!((g[15], g[22], g[34], g[35]), (0xc0, 64, 11, 0));
    assert!(ip_ok(g));
    assert!(checksum::verify(&g[34..]));
    // The whole original datagram is quoted (it is short).
    assert_eq!(&g[42..], &f[14..]);
}

#[test]
fn reject_tcp_reset_and_port_unreachable() {
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -p tcp -j REJECT --reject-with tcp-reset\n-A FORWARD -p udp -j REJECT\nCOMMIT\n";
    let mut p = pipeline(rules);
    let syn = builder::tcp_frame(
        &from_host(),
        &ip("172.18.0.2", "8.8.8.8"),
        &TcpSpec::default(),
        b"",
    );
    let o = run(&mut p, DOCKER0_IF, &syn);
    assert_eq!(o.action, Action::Drop(DropReason::Rejected));
    let (port, r) = &o.generated[0];
    assert_eq!(*port, DOCKER0_IF);
    assert_eq!(
        &r[26..30],
        &[8, 8, 8, 8],
        "RST from the original destination"
    );
    assert_eq!(
        u32::from_be_bytes([r[42], r[43], r[44], r[45]]),
        1001,
        "ack = seq + 1"
    );
    assert_eq!(r[47], 0x14);
    let seg = &r[34..54];
    assert_eq!(
        checksum::fold(checksum::combine(
            checksum::pseudo_header_sum(
                Ipv4Addr::new(8, 8, 8, 8),
                Ipv4Addr::new(172, 18, 0, 2),
                6,
                20
            ),
            checksum::sum(seg)
        )),
        0xffff
    );
    let o = run(&mut p, DOCKER0_IF, &udp_out(64));
    assert_eq!(o.action, Action::Drop(DropReason::Rejected));
    let (_, u) = &o.generated[0];
    assert_eq!((u[34], u[35]), (3, 3));
    assert_eq!(&u[26..30], &[172, 18, 0, 1]);
    assert_eq!(u[42 + 8], 63, "the quoted header has the decremented TTL");
    assert!(checksum::verify(&u[34..]));
    assert!(ip_ok(u));
}

#[test]
fn no_reset_for_a_reset() {
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -p tcp -j REJECT --reject-with tcp-reset\nCOMMIT\n";
    let mut p = pipeline(rules);
    let rst = builder::tcp_frame(
        &from_host(),
        &ip("172.18.0.2", "8.8.8.8"),
        &TcpSpec {
            flags: 0x04,
            ..Default::default()
        },
        b"",
    );
    let o = run(&mut p, DOCKER0_IF, &rst);
    assert_eq!(o.action, Action::Drop(DropReason::Rejected));
    assert!(o.generated.is_empty());
}

#[test]
fn frag_needed_with_df_fragments_without() {
    let mut p = pipeline(ACCEPT_ALL);
    let big = builder::udp_frame(
        &from_host(),
        &ip("172.18.0.2", "8.8.8.8"),
        &UdpSpec::default(),
        &[7u8; 1472],
    );
    let o = run(&mut p, DOCKER0_IF, &big);
    assert_eq!(o.action, Action::Drop(DropReason::FragNeeded));
    let (_, g) = &o.generated[0];
    assert_eq!(g.len(), 14 + 576);
    assert_eq!((g[34], g[35]), (3, 4));
    assert_eq!(&g[38..42], &[0, 0, 0x05, 0x78]);
    assert_eq!(g[42 + 8], 64, "quoted before the decrement");
    // Without DF: fragmented after POSTROUTING, as ip_fragment does.
    let f = builder::udp_frame(
        &from_host(),
        &IpSpec {
            dont_frag: false,
            ..ip("172.18.0.2", "8.8.8.8")
        },
        &UdpSpec::default(),
        &[7u8; 1472],
    );
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!(o.action, Action::Forward { port: ETH0_IF });
    assert_eq!(o.frame.len(), 14 + 1396);
    assert_eq!(&o.frame[16..18], &1396u16.to_be_bytes());
    assert_eq!(&o.frame[20..22], &[0x20, 0x00], "MF, offset 0");
    assert!(ip_ok(&o.frame));
    assert_eq!(o.generated.len(), 1);
    let (port, g) = &o.generated[0];
    assert_eq!(*port, ETH0_IF);
    assert_eq!(g.len(), 14 + 124);
    assert_eq!(&g[0..12], &o.frame[0..12]);
    assert_eq!(
        &g[20..22],
        &(1376u16 / 8).to_be_bytes(),
        "no MF, offset 1376"
    );
    assert_eq!(g[22], 63);
    assert!(ip_ok(g));
    assert_eq!(&g[34..], &f[34 + 1376..]);
    // Without a spare buffer for the second fragment nothing is sent.
    let o = run_spares(&mut p, DOCKER0_IF, &f, 0, 0);
    assert_eq!(o.action, Action::Drop(DropReason::NoBuffer));
}

#[test]
fn no_route_sends_net_unreachable() {
    let cfg = Config::parse(
        "[[interface]]\nname = \"a\"\nmac = \"02:00:00:00:00:0a\"\naddresses = [\"10.1.0.1/16\"]\n[[neighbor]]\nip = \"10.1.0.2\"\nmac = \"02:00:00:00:00:0b\"\ndev = \"a\"\n",
        "t.toml",
    )
    .unwrap();
    let rs = fastables_rules::parse::parse_restore(ACCEPT_ALL, "t").unwrap();
    let mut p = Pipeline::new(
        &cfg,
        Arc::new(CompiledRuleset::compile(&rs, &["a"]).unwrap()),
    )
    .unwrap();
    let f = builder::udp_frame(
        &EthSpec {
            src: MacAddr([2, 0, 0, 0, 0, 0x0b]),
            dst: MacAddr([2, 0, 0, 0, 0, 0x0a]),
            ..Default::default()
        },
        &ip("10.1.0.2", "8.8.8.8"),
        &UdpSpec::default(),
        b"x",
    );
    let o = run(&mut p, 0, &f);
    assert_eq!(o.action, Action::Drop(DropReason::NoRoute));
    let (_, g) = &o.generated[0];
    assert_eq!((g[34], g[35]), (3, 0));
    assert_eq!(&g[26..30], &[10, 1, 0, 1]);
}

/// Frame memory that lives across batches (held frames stay in it).
struct Mem {
    mem: Vec<u8>,
}

impl Mem {
    fn new() -> Mem {
        Mem {
            mem: vec![0u8; FRAME_SIZE * 16],
        }
    }

    /// One batch: `frame` (if any) in slot `slot`, spares in slots 8..16.
    fn batch(&mut self, p: &mut Pipeline, now: u64, rx: Option<(IfIndex, usize, &[u8])>) -> Batch {
        let mut b = Batch::with_capacity(4);
        if let Some((port, slot, f)) = rx {
            let a = slot * FRAME_SIZE;
            self.mem[a..a + f.len()].copy_from_slice(f);
            b.frames
                .push(Frame::rx(a as FrameAddr, f.len() as u16, port));
        }
        for i in 8..16 {
            b.spare.push((i * FRAME_SIZE) as FrameAddr);
        }
        if rx.is_some() {
            p.process_batch(now, &mut self.mem, &mut b);
        } else {
            p.service_held(now, &mut self.mem, &mut b);
        }
        b
    }

    fn bytes(&self, f: &Frame) -> &[u8] {
        &self.mem[f.addr as usize..f.addr as usize + f.len as usize]
    }
}

const SEC: u64 = 1_000_000_000;

#[test]
fn unresolved_neighbor_holds_the_packet_until_arp_answers() {
    let mut p = pipeline(ACCEPT_ALL);
    let mut m = Mem::new();
    let f = builder::udp_frame(
        &from_host(),
        &ip("172.18.0.2", "192.168.5.9"),
        &UdpSpec::default(),
        b"x",
    );
    let b = m.batch(&mut p, 0, Some((DOCKER0_IF, 0, &f)));
    assert_eq!(b.verdicts[0], Action::Held);
    assert_eq!(p.held(), 1);
    let a = m.bytes(&b.generated[0]).to_vec();
    assert_eq!(b.generated[0].port, 2);
    assert_eq!(a.len(), 42);
    assert_eq!(&a[0..6], &[0xff; 6]);
    assert_eq!(&a[28..32], &[192, 168, 5, 1], "sender: our address on lan2");
    assert_eq!(&a[38..42], &[192, 168, 5, 9]);
    // Half a second on: no second request yet.
    let b = m.batch(&mut p, SEC / 2, None);
    assert!(b.generated.is_empty());
    // The neighbor answers: the held packet goes out to it, TTL decremented.
    let peer = MacAddr([2, 0, 0, 0, 5, 9]);
    let reply = builder::arp_reply(
        peer,
        Ipv4Addr::new(192, 168, 5, 9),
        MacAddr([0x02, 0x42, 0xac, 0x13, 0x00, 0x01]),
        Ipv4Addr::new(192, 168, 5, 1),
    );
    let b = m.batch(&mut p, SEC * 6 / 10, Some((2, 1, &reply)));
    assert_eq!(b.verdicts[0], Action::Consumed);
    assert_eq!(p.held(), 0);
    let out = b.generated[0];
    assert_eq!((out.addr, out.port), (0, 2));
    let o = m.bytes(&out);
    assert_eq!(&o[0..6], &peer.0);
    assert_eq!(&o[6..12], &[0x02, 0x42, 0xac, 0x13, 0x00, 0x01]);
    assert_eq!(o[22], 63);
    // And the next one is forwarded at once.
    let b = m.batch(&mut p, SEC, Some((DOCKER0_IF, 0, &f)));
    assert_eq!(b.verdicts[0], Action::Forward { port: 2 });
}

#[test]
fn unanswered_arp_gives_up_after_three_requests_with_host_unreachable() {
    let mut p = pipeline(ACCEPT_ALL);
    let mut m = Mem::new();
    let f = builder::udp_frame(
        &from_host(),
        &ip("172.18.0.2", "192.168.5.9"),
        &UdpSpec::default(),
        b"x",
    );
    let b = m.batch(&mut p, 0, Some((DOCKER0_IF, 0, &f)));
    assert_eq!(b.verdicts[0], Action::Held);
    // Requests two and three, a second apart.
    for t in [1, 2] {
        let b = m.batch(&mut p, t * SEC, None);
        assert_eq!(b.generated.len(), 1, "ARP request at {t} s");
        assert_eq!(m.bytes(&b.generated[0])[12..14], [0x08, 0x06]);
        assert_eq!(p.held(), 1);
    }
    // A second after the third: given up.
    let b = m.batch(&mut p, 3 * SEC, None);
    assert_eq!(p.held(), 0);
    assert_eq!(p.drops().get(DropReason::NeighborUnresolved), 1);
    assert!(b.spare.contains(&0), "the held buffer is given back");
    let g = b.generated[0];
    assert_eq!(g.port, DOCKER0_IF);
    let icmp = m.bytes(&g);
    assert_eq!(&icmp[30..34], &[172, 18, 0, 2]);
    assert_eq!((icmp[34], icmp[35]), (3, 1), "host unreachable");
}

#[test]
fn the_hold_queue_is_bounded_per_neighbor() {
    let mut p = pipeline(ACCEPT_ALL);
    let mut m = Mem::new();
    let f = builder::udp_frame(
        &from_host(),
        &ip("172.18.0.2", "192.168.5.9"),
        &UdpSpec::default(),
        b"x",
    );
    for k in 0..40 {
        // Each in its own buffer address (slots 0..8 reused: the address is
        // what the queue keeps, the bytes do not matter here).
        let mut b = Batch::with_capacity(4);
        let a = (k % 8) * FRAME_SIZE;
        m.mem[a..a + f.len()].copy_from_slice(&f);
        b.frames
            .push(Frame::rx(a as FrameAddr, f.len() as u16, DOCKER0_IF));
        p.process_batch(k as u64, &mut m.mem, &mut b);
        assert_eq!(b.verdicts[0], Action::Held);
    }
    assert_eq!(p.held(), fastables_dataplane::neigh::HOLD_PER_NEIGHBOR);
    assert_eq!(p.drops().get(DropReason::NeighborHoldFull), 8);
}

#[test]
fn echo_reply_and_arp_reply() {
    let mut p = pipeline(ACCEPT_ALL);
    let f = builder::icmp_echo_request(
        &from_host(),
        &IpSpec {
            tos: 0x10,
            ..ip("172.18.0.2", "10.0.2.15")
        },
        0x1234,
        7,
        b"abcdefgh",
    );
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!(o.action, Action::Consumed);
    let (port, g) = &o.generated[0];
    assert_eq!(*port, DOCKER0_IF);
    assert_eq!(&g[26..30], &[10, 0, 2, 15], "from the address pinged");
    assert_eq!(
        (g[15], g[22], g[20] & 0x40),
        (0x10, 64, 0),
        "TOS copied, TTL 64, no DF"
    );
    assert_eq!(&g[34..36], &[0, 0]);
    assert_eq!(&g[38..], &f[38..], "same id, seq and data");
    assert!(checksum::verify(&g[34..]));
    let req = builder::arp_request(
        HOST_MAC,
        Ipv4Addr::new(172, 18, 0, 2),
        Ipv4Addr::new(172, 18, 0, 1),
    );
    let o = run(&mut p, DOCKER0_IF, &req);
    assert_eq!(o.action, Action::Consumed);
    let (port, a) = &o.generated[0];
    assert_eq!(*port, DOCKER0_IF);
    assert_eq!(&a[0..6], &HOST_MAC.0);
    assert_eq!(&a[20..22], &[0, 2]);
    assert_eq!(&a[22..28], &DOCKER0.0);
}

#[test]
fn echo_to_broadcast_is_ignored() {
    let mut p = pipeline(ACCEPT_ALL);
    let f = builder::icmp_echo_request(
        &EthSpec {
            src: HOST_MAC,
            dst: MacAddr::BROADCAST,
            ..Default::default()
        },
        &ip("172.18.0.2", "172.18.255.255"),
        1,
        1,
        b"x",
    );
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!(o.action, Action::Consumed);
    assert!(o.generated.is_empty());
}

#[test]
fn martians_and_other_hosts() {
    let mut p = pipeline(ACCEPT_ALL);
    let f = builder::udp_frame(
        &from_host(),
        &ip("10.0.2.15", "8.8.8.8"),
        &UdpSpec::default(),
        b"x",
    );
    assert_eq!(
        run(&mut p, DOCKER0_IF, &f).action,
        Action::Drop(DropReason::MartianSource)
    );
    let f = builder::udp_frame(
        &EthSpec {
            src: HOST_MAC,
            dst: MacAddr([2, 9, 9, 9, 9, 9]),
            ..Default::default()
        },
        &ip("172.18.0.2", "8.8.8.8"),
        &UdpSpec::default(),
        b"x",
    );
    assert_eq!(
        run(&mut p, DOCKER0_IF, &f).action,
        Action::Drop(DropReason::OtherHost)
    );
}

#[test]
fn local_udp_and_tcp_get_the_stack_answers() {
    let mut p = pipeline(ACCEPT_ALL);
    let f = builder::udp_frame(
        &from_host(),
        &ip("172.18.0.2", "172.18.0.1"),
        &UdpSpec::default(),
        b"x",
    );
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!(o.action, Action::Drop(DropReason::NoSocket));
    assert_eq!((o.generated[0].1[34], o.generated[0].1[35]), (3, 3));
    let f = builder::tcp_frame(
        &from_host(),
        &ip("172.18.0.2", "172.18.0.1"),
        &TcpSpec::default(),
        b"",
    );
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!(o.action, Action::Drop(DropReason::NoSocket));
    assert_eq!(o.generated[0].1[47], 0x14);
    // A bad TCP checksum gets no answer.
    let mut bad = f.clone();
    bad[50] ^= 0xff;
    let o = run(&mut p, DOCKER0_IF, &bad);
    assert_eq!(o.action, Action::Drop(DropReason::BadL4Checksum));
    assert!(o.generated.is_empty());
    // Unknown protocol: protocol unreachable.
    let f = builder::ipv4_frame(
        &from_host(),
        &ip("172.18.0.2", "172.18.0.1"),
        99,
        b"abcdefgh",
    );
    let o = run(&mut p, DOCKER0_IF, &f);
    assert_eq!((o.generated[0].1[34], o.generated[0].1[35]), (3, 2));
}

#[test]
fn tcpmss_clamp_to_pmtu() {
    let rules = "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu\nCOMMIT\n";
    let mut p = pipeline(rules);
    let syn = builder::tcp_frame(
        &from_host(),
        &ip("172.18.0.2", "8.8.8.8"),
        &TcpSpec {
            options: vec![2, 4, 0x05, 0xb4],
            ..Default::default()
        },
        b"",
    );
    let o = run(&mut p, DOCKER0_IF, &syn);
    assert_eq!(o.action, Action::Forward { port: ETH0_IF });
    assert_eq!(
        &o.frame[56..58],
        &1360u16.to_be_bytes(),
        "eth0 MTU 1400 - 40"
    );
    let seg = &o.frame[34..];
    assert_eq!(
        checksum::fold(checksum::combine(
            checksum::pseudo_header_sum(
                Ipv4Addr::new(172, 18, 0, 2),
                Ipv4Addr::new(8, 8, 8, 8),
                6,
                seg.len() as u32
            ),
            checksum::sum(seg)
        )),
        0xffff
    );
}

#[test]
fn masquerade_translates_and_notrack_skips_nat() {
    let nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT\n";
    let mut p = pipeline(nat);
    let o = run(&mut p, DOCKER0_IF, &udp_out(64));
    assert_eq!(o.action, Action::Forward { port: ETH0_IF });
    assert_eq!(
        &o.frame[26..30],
        &[10, 0, 2, 15],
        "source is eth0's address"
    );
    assert!(ip_ok(&o.frame));
    let with_notrack = format!("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -j NOTRACK\nCOMMIT\n{nat}");
    let mut p = pipeline(&with_notrack);
    let o = run(&mut p, DOCKER0_IF, &udp_out(64));
    assert_eq!(o.action, Action::Forward { port: ETH0_IF });
    assert_eq!(
        &o.frame[26..30],
        &[172, 18, 0, 2],
        "untracked: not translated"
    );
    assert_eq!(p.conntrack().map(|t| t.len()), Some(0));
}

#[test]
fn raw_sees_invalid_and_notrack_gives_untracked() {
    // In raw PREROUTING conntrack has not run: `-m state` sees INVALID (the
    // kernel's xt_state with no ct attached); after NOTRACK, UNTRACKED.
    let rules = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -m state --state INVALID -j NOTRACK\nCOMMIT\n\
                 *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -m state --state UNTRACKED -j ACCEPT\nCOMMIT\n";
    let mut p = pipeline(rules);
    assert_eq!(
        run(&mut p, DOCKER0_IF, &udp_out(64)).action,
        Action::Forward { port: ETH0_IF }
    );
    // Without the NOTRACK the packet is NEW in FORWARD: the policy drops it.
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -m state --state UNTRACKED -j ACCEPT\nCOMMIT\n";
    let mut p = pipeline(rules);
    assert_eq!(
        run(&mut p, DOCKER0_IF, &udp_out(64)).action,
        Action::Drop(DropReason::FilterDrop)
    );
}

#[test]
fn no_spare_frame_counts_no_buffer() {
    let mut p = pipeline(ACCEPT_ALL);
    let o = run_spares(&mut p, DOCKER0_IF, &udp_out(1), 0, 0);
    assert_eq!(o.action, Action::Drop(DropReason::TtlExpired));
    assert!(o.generated.is_empty());
    assert_eq!(p.drops().get(DropReason::NoBuffer), 1);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut p = pipeline(ACCEPT_ALL);
    // Per destination: a burst of 6, then one per second (icmp_ratelimit).
    for _ in 0..6 {
        assert_eq!(run(&mut p, DOCKER0_IF, &udp_out(1)).generated.len(), 1);
    }
    assert!(run(&mut p, DOCKER0_IF, &udp_out(1)).generated.is_empty());
    assert_eq!(p.drops().get(DropReason::IcmpRateLimited), 1);
    let later = run_spares(&mut p, DOCKER0_IF, &udp_out(1), 2, 1_000_000_000);
    assert_eq!(later.generated.len(), 1);
}

#[test]
fn log_lines_are_queued_and_ruleset_swaps() {
    let mut p = pipeline("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -j LOG --log-prefix \"F \"\nCOMMIT\n");
    run(&mut p, DOCKER0_IF, &udp_out(64));
    let mut lines = vec![];
    p.drain_logs(|l| lines.push(l.to_string()));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].starts_with("F IN=docker0 OUT=eth0 MAC=02:42:ac:12:00:01:02:00:00:00:00:02:08:00 SRC=172.18.0.2 DST=8.8.8.8 LEN=33 TOS=0x00 PREC=0x00 TTL=63 ID=4660 DF PROTO=UDP SPT=33894 DPT=53 LEN=13 "), "{}", lines[0]);
    p.set_ruleset(compile(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
    ));
    assert_eq!(
        run(&mut p, DOCKER0_IF, &udp_out(64)).action,
        Action::Drop(DropReason::FilterDrop)
    );
    p.drain_logs(|_| panic!("no LOG rule any more"));
}

#[test]
fn invalid_descriptors_are_dropped() {
    let mut p = pipeline(ACCEPT_ALL);
    let mut mem = vec![0u8; FRAME_SIZE];
    let mut b = Batch::with_capacity(4);
    b.frames.push(Frame::rx(FRAME_SIZE as u64, 60, 1));
    b.frames.push(Frame::rx(0, 4000, 1));
    b.frames.push(Frame::rx(0, 60, 9));
    b.frames.push(Frame::rx(u64::MAX, 60, 1));
    p.process_batch(0, &mut mem, &mut b);
    assert_eq!(b.verdicts.len(), b.frames.len());
    for v in &b.verdicts {
        assert_eq!(*v, Action::Drop(DropReason::InvalidFrame));
    }
}

#[test]
fn worker_loop_forwards_answers_and_returns_every_buffer() {
    let mut port = MemPort::new(3, 16);
    for _ in 0..3 {
        port.rx[1].push_back(udp_out(64));
    }
    port.rx[1].push_back(udp_out(1));
    port.rx[1].push_back(vec![0u8; 5]);
    let mut w = Worker::new(pipeline(ACCEPT_ALL), 8);
    assert_eq!(w.poll(&mut port), 5);
    assert_eq!(port.tx.iter().filter(|(p, _)| *p == ETH0_IF).count(), 3);
    assert_eq!(port.tx.iter().filter(|(p, _)| *p == DOCKER0_IF).count(), 1);
    assert_eq!(port.free.len(), 16, "no buffer leaked");
    assert_eq!(w.pipeline().drops().get(DropReason::Truncated), 1);
    // A full TX ring drops and counts.
    port.tx_room = 1;
    port.rx[1].push_back(udp_out(64));
    port.rx[1].push_back(udp_out(64));
    w.poll(&mut port);
    assert_eq!(w.stats().tx_full, 1);
    assert_eq!(w.pipeline().drops().get(DropReason::TxRingFull), 1);
    assert_eq!(port.free.len(), 16);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1600),
        port in 0u8..4,
        ethertype in prop_oneof![Just(0x0800u16), Just(0x0806u16), any::<u16>()],
        to_us in any::<bool>(),
    ) {
        let mut p = pipeline("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -p tcp -j REJECT --reject-with tcp-reset\n-A FORWARD -j LOG\n-A INPUT -p udp -j REJECT\nCOMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A FORWARD -p tcp -j TCPMSS --clamp-mss-to-pmtu\n-A PREROUTING -j TTL --ttl-dec 1\nCOMMIT\n");
        let mut f = bytes.clone();
        if f.len() >= 14 {
            if to_us {
                f[0..6].copy_from_slice(&DOCKER0.0);
            }
            f[12..14].copy_from_slice(&ethertype.to_be_bytes());
            if f.len() >= 34 && ethertype == 0x0800 {
                // Mostly valid IPv4 headers, to get past the checksum.
                f[14] = 0x45;
                let tl = (f.len() - 14) as u16;
                f[16..18].copy_from_slice(&tl.to_be_bytes());
                f[24] = 0;
                f[25] = 0;
                let c = checksum::checksum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
            }
        }
        let o = run(&mut p, port, &f);
        if let Action::Forward { .. } = o.action {
            prop_assert!(o.frame.len() <= f.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Fragments (and whole datagrams) of random offsets, lengths and flags
    /// through a pipeline with conntrack and NAT loaded, batch after batch:
    /// nothing panics, and every buffer given to the pipeline is in exactly
    /// one place afterwards: sent, given back, or held.
    #[test]
    fn random_fragments_are_all_accounted_for(
        frags in proptest::collection::vec(
            (0u16..4, 0u16..200, 0usize..120, any::<bool>(), 0u8..3),
            1..40,
        ),
    ) {
        let rules = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                     :POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n";
        let mut p = pipeline(rules);
        let slots = 8 * frags.len() + 64;
        let mut mem = vec![0u8; FRAME_SIZE * slots];
        let mut next = 0usize;
        let mut given = std::collections::BTreeSet::new();
        let mut back = std::collections::BTreeSet::new();
        let mut sent = std::collections::BTreeSet::new();
        for (i, (id, off8, plen, mf, proto)) in frags.iter().copied().enumerate() {
            let payload = vec![0x5a; plen];
            let f = builder::ipv4_frame(
                &from_host(),
                &IpSpec {
                    dont_frag: false,
                    more_frags: mf,
                    frag_offset: off8 * 8,
                    ident: id,
                    ..ip("172.18.0.2", "8.8.8.8")
                },
                [17u8, 6, 1][usize::from(proto)],
                &payload,
            );
            let a = next * FRAME_SIZE;
            next += 1;
            mem[a..a + f.len()].copy_from_slice(&f);
            let mut b = Batch::with_capacity(4);
            b.frames.push(Frame::rx(a as FrameAddr, f.len() as u16, DOCKER0_IF));
            given.insert(a as FrameAddr);
            for _ in 0..6 {
                let s = next * FRAME_SIZE;
                next += 1;
                b.spare.push(s as FrameAddr);
                given.insert(s as FrameAddr);
            }
            p.process_batch(i as u64 * 1_000_000_000, &mut mem, &mut b);
            prop_assert_eq!(b.verdicts.len(), b.frames.len());
            for (f, v) in b.frames.iter().zip(&b.verdicts) {
                match *v {
                    Action::Forward { .. } => { prop_assert!(sent.insert(f.addr)); }
                    Action::Drop(_) | Action::Consumed => { prop_assert!(back.insert(f.addr)); }
                    Action::Held => {}
                }
            }
            for g in &b.generated {
                prop_assert!(sent.insert(g.addr), "sent twice: {}", g.addr);
            }
            for s in &b.spare {
                prop_assert!(back.insert(*s), "given back twice: {}", s);
            }
        }
        let held = p.held() + p.reassembling();
        prop_assert!(sent.is_disjoint(&back));
        prop_assert_eq!(sent.len() + back.len() + held, given.len());
    }
}

#[test]
fn learned_neighbors_age_probe_and_are_forgotten_when_silent() {
    let mut p = pipeline(ACCEPT_ALL);
    let mut m = Mem::new();
    let peer = MacAddr([2, 0, 0, 0, 5, 9]);
    let lan2 = MacAddr([0x02, 0x42, 0xac, 0x13, 0x00, 0x01]);
    // The neighbor asks for us: its entry is created (and confirmed) at t=0.
    let req = builder::arp_request(
        peer,
        Ipv4Addr::new(192, 168, 5, 9),
        Ipv4Addr::new(192, 168, 5, 1),
    );
    let b = m.batch(&mut p, 0, Some((2, 1, &req)));
    assert_eq!(b.verdicts[0], Action::Consumed);
    let f = builder::udp_frame(
        &from_host(),
        &ip("172.18.0.2", "192.168.5.9"),
        &UdpSpec::default(),
        b"x",
    );
    let fwd = |m: &mut Mem, p: &mut Pipeline, t: u64| {
        let b = m.batch(p, t, Some((DOCKER0_IF, 0, &f)));
        let probes: Vec<Vec<u8>> = b.generated.iter().map(|g| m.bytes(g).to_vec()).collect();
        (b.verdicts[0], probes)
    };
    // Fresh for 35 s: forwarded, nothing else.
    let (a, g) = fwd(&mut m, &mut p, SEC);
    assert_eq!((a, g.len()), (Action::Forward { port: 2 }, 0));
    let (a, g) = fwd(&mut m, &mut p, 34 * SEC);
    assert_eq!((a, g.len()), (Action::Forward { port: 2 }, 0));
    // Stale: still forwarded, and a unicast probe goes to the known MAC.
    let (a, g) = fwd(&mut m, &mut p, 36 * SEC);
    assert_eq!((a, g.len()), (Action::Forward { port: 2 }, 1));
    assert_eq!(&g[0][0..6], &peer.0, "unicast");
    assert_eq!(&g[0][12..14], &[0x08, 0x06]);
    assert_eq!(&g[0][38..42], &[192, 168, 5, 9]);
    // At most one probe a second.
    let (_, g) = fwd(&mut m, &mut p, 36 * SEC + SEC / 2);
    assert!(g.is_empty());
    // The neighbor answers: confirmed again, no more probes.
    let reply = builder::arp_reply(
        peer,
        Ipv4Addr::new(192, 168, 5, 9),
        lan2,
        Ipv4Addr::new(192, 168, 5, 1),
    );
    m.batch(&mut p, 37 * SEC, Some((2, 1, &reply)));
    let (a, g) = fwd(&mut m, &mut p, 38 * SEC);
    assert_eq!((a, g.len()), (Action::Forward { port: 2 }, 0));
    // Silent from now on: probes at 73, 74, 75 s, forgotten at 76 s (the
    // packet then waits for a broadcast request).
    for t in [73, 74, 75] {
        let (a, g) = fwd(&mut m, &mut p, t * SEC);
        assert_eq!((a, g.len()), (Action::Forward { port: 2 }, 1), "at {t} s");
        assert_eq!(&g[0][0..6], &peer.0);
    }
    let (a, g) = fwd(&mut m, &mut p, 76 * SEC);
    assert_eq!(a, Action::Held);
    assert_eq!(&g[0][0..6], &[0xff; 6], "broadcast request");
}

/// `-j TRACE` marks a packet; a `marked` tracer records only marked ones,
/// from the table whose rule marked them on.
#[test]
fn trace_target_marks_packets_for_a_marked_trace() {
    let rules = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A PREROUTING -p udp -m udp --dport 53 -j TRACE\nCOMMIT\n\
                 *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A FORWARD -p udp -j ACCEPT\nCOMMIT\n";
    let mut p = pipeline(rules);
    let filter = fastables_dataplane::pipeline::TraceFilter {
        marked: true,
        ..Default::default()
    };
    p.set_trace(Some((filter, None)));
    let dns = udp_out(64);
    let other = builder::udp_frame(
        &from_host(),
        &ip("172.18.0.2", "8.8.8.8"),
        &UdpSpec {
            src_port: 40000,
            dst_port: 54,
        },
        b"x",
    );
    for f in [&other, &dns, &other] {
        let o = run(&mut p, DOCKER0_IF, f);
        assert_eq!(o.action, Action::Forward { port: ETH0_IF });
    }
    let mut records = Vec::new();
    p.drain_trace(|r| records.push(r.to_string()));
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert!(
        r.contains("in docker0: 172.18.0.2:33894 > 8.8.8.8:53 proto 17"),
        "{r}"
    );
    assert!(
        r.contains("raw PREROUTING: ACCEPT by policy of PREROUTING"),
        "{r}"
    );
    assert!(
        r.contains("filter FORWARD: ACCEPT by FORWARD rule 1"),
        "{r}"
    );
    // An unmarked trace ignores the marks and follows its filter.
    p.set_trace(Some((
        fastables_dataplane::pipeline::TraceFilter {
            dport: Some(54),
            ..Default::default()
        },
        None,
    )));
    for f in [&dns, &other] {
        run(&mut p, DOCKER0_IF, f);
    }
    let mut records = Vec::new();
    p.drain_trace(|r| records.push(r.to_string()));
    assert_eq!(records.len(), 1, "{records:#?}");
    assert!(records[0].contains("> 8.8.8.8:54 "), "{records:#?}");
}
