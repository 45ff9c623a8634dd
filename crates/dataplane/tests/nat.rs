//! Conntrack and NAT in the pipeline: DNAT, hairpin NAT, ICMP through NAT,
//! RELATED errors, router-generated errors, NOTRACK, stateful filtering, the
//! conntrack mark and a full table. Frames are built with the packet builders;
//! every checksum of what leaves is verified.

use std::net::Ipv4Addr;
use std::sync::Arc;

use fastables_config::Config;
use fastables_conntrack::format_entry;
use fastables_dataplane::drop::DropReason;
use fastables_dataplane::pipeline::Pipeline;
use fastables_dataplane::worker::{Action, Batch};
use fastables_packet::builder::{self, EthSpec, IpSpec, TcpSpec, UdpSpec};
use fastables_packet::parse::{l4_checksum_ok, L3};
use fastables_packet::{checksum, parse_frame, MacAddr};
use fastables_port::{Frame, FrameAddr, FRAME_SIZE};
use fastables_rules::compile::CompiledRuleset;
use fastables_rules::ctx::IfIndex;

mod common;
use common::Out;

const ETH0_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xc2, 0xbe, 0x11]);
const DOCKER0_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x01]);
const SRV0_MAC: MacAddr = MacAddr([0x02, 0x42, 0xc0, 0xa8, 0x00, 0x01]);
const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x35, 0x02]);
const CTR_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x02]);
const CTR3_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x03]);
const SRV_MAC: MacAddr = MacAddr([0x02, 0x42, 0xc0, 0xa8, 0x00, 0x02]);

const ETH0: IfIndex = 0;
const DOCKER0: IfIndex = 1;
const SRV0: IfIndex = 2;

const CONFIG: &str = r#"
[[interface]]
name = "eth0"
mac = "52:54:00:c2:be:11"
addresses = ["10.0.2.15/24", "1.2.3.56/24"]

[[interface]]
name = "docker0"
mac = "02:42:ac:12:00:01"
addresses = ["172.18.0.1/16"]

[[interface]]
name = "srv0"
mac = "02:42:c0:a8:00:01"
addresses = ["192.168.0.1/24"]

[[route]]
to = "0.0.0.0/0"
via = "10.0.2.2"
dev = "eth0"

[[neighbor]]
ip = "10.0.2.2"
mac = "52:54:00:12:35:02"
dev = "eth0"

[[neighbor]]
ip = "172.18.0.2"
mac = "02:42:ac:12:00:02"
dev = "docker0"

[[neighbor]]
ip = "172.18.0.3"
mac = "02:42:ac:12:00:03"
dev = "docker0"

[[neighbor]]
ip = "192.168.0.2"
mac = "02:42:c0:a8:00:02"
dev = "srv0"
"#;

const NAT_HEAD: &str =
    "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n";
const MASQ: &str = "-A POSTROUTING -s 172.18.0.0/16 -o eth0 -j MASQUERADE\n";
const DNAT: &str =
    "-A PREROUTING -p tcp -m tcp --dport 8088 -j DNAT --to-destination 192.168.0.2:80\n";

const CTR: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const CTR3: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);
const ETH0_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const DOCKER0_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
const DNS: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
const REMOTE: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

fn nat(body: &str) -> String {
    format!("{NAT_HEAD}{body}COMMIT\n")
}

fn pipeline_with(rules: &str, extra_config: &str) -> Pipeline {
    let rs = fastables_rules::parse::parse_restore(rules, "test.rules").unwrap();
    let c = Arc::new(CompiledRuleset::compile(&rs, &["eth0", "docker0", "srv0"]).unwrap());
    let cfg = Config::parse(&format!("{CONFIG}{extra_config}"), "/t/fastables.toml").unwrap();
    Pipeline::new(&cfg, c).unwrap()
}

fn pipeline(rules: &str) -> Pipeline {
    pipeline_with(rules, "")
}

fn run_at(p: &mut Pipeline, port: IfIndex, frame: &[u8], now: u64) -> Out {
    common::run_spares(p, port, frame, 2, now)
}

fn run(p: &mut Pipeline, port: IfIndex, frame: &[u8]) -> Out {
    run_at(p, port, frame, 1_000_000_000)
}

/// A forwarded frame's decoded header fields, with every checksum verified.
#[derive(Debug, PartialEq, Eq)]
struct Hdr {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
}

fn hdr(frame: &[u8]) -> Hdr {
    let p = parse_frame(frame).unwrap();
    let L3::Ipv4(i) = p.l3 else {
        panic!("not IPv4")
    };
    let hl = usize::from(i.header_len);
    assert!(checksum::verify(&frame[14..14 + hl]), "IP header checksum");
    assert!(l4_checksum_ok(frame, &p), "L4 checksum");
    let l4 = &frame[14 + hl..];
    Hdr {
        src: i.src,
        dst: i.dst,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
    }
}

fn eth(src: MacAddr, dst: MacAddr) -> EthSpec {
    EthSpec {
        src,
        dst,
        vlan: None,
        pad: false,
    }
}

fn ip(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> IpSpec {
    IpSpec {
        src,
        dst,
        ttl,
        ident: 0x4321,
        ..IpSpec::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    e: EthSpec,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    builder::tcp_frame(
        &e,
        &ip(src, dst, 64),
        &TcpSpec {
            src_port: sport,
            dst_port: dport,
            seq,
            ack,
            flags,
            ..TcpSpec::default()
        },
        b"",
    )
}

fn udp(e: EthSpec, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, ttl: u8) -> Vec<u8> {
    builder::udp_frame(
        &e,
        &ip(src, dst, ttl),
        &UdpSpec {
            src_port: sport,
            dst_port: dport,
        },
        b"query",
    )
}

fn from_ctr() -> EthSpec {
    eth(CTR_MAC, DOCKER0_MAC)
}
fn from_gw() -> EthSpec {
    eth(GW_MAC, ETH0_MAC)
}
fn from_srv() -> EthSpec {
    eth(SRV_MAC, SRV0_MAC)
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn ct_lines(p: &Pipeline, now: u64) -> Vec<String> {
    let mut v: Vec<String> = p
        .conntrack()
        .map(|t| t.iter().map(|(_, e)| format_entry(e, now)).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn dnat_rewrites_before_routing_and_replies_are_translated_back() {
    let mut p = pipeline(&nat(DNAT));
    let syn = tcp(from_gw(), REMOTE, 40000, ETH0_IP, 8088, 1000, 0, SYN);
    let o = run(&mut p, ETH0, &syn);
    // Routed by the new destination: out of srv0.
    assert_eq!(o.action, Action::Forward { port: SRV0 });
    assert_eq!(
        hdr(&o.frame),
        Hdr {
            src: REMOTE,
            dst: SERVER,
            sport: 40000,
            dport: 80
        }
    );
    assert_eq!(&o.frame[0..6], &SRV_MAC.0);
    let synack = tcp(from_srv(), SERVER, 80, REMOTE, 40000, 5000, 1001, SYN | ACK);
    let o = run(&mut p, SRV0, &synack);
    assert_eq!(o.action, Action::Forward { port: ETH0 });
    assert_eq!(
        hdr(&o.frame),
        Hdr {
            src: ETH0_IP,
            dst: REMOTE,
            sport: 8088,
            dport: 40000
        }
    );
    // As the kernel lists it (Linux 6.18, kernel-reference.sh).
    assert_eq!(
        ct_lines(&p, 1_000_000_000),
        ["tcp      6 60 SYN_RECV src=93.184.216.34 dst=10.0.2.15 sport=40000 dport=8088 src=192.168.0.2 dst=93.184.216.34 sport=80 dport=40000 mark=0 use=1"]
    );
}

#[test]
fn hairpin_nat_works() {
    // A container reaches another through the host's public address.
    let rules = nat(
        "-A PREROUTING -d 10.0.2.15/32 -p tcp -m tcp --dport 8088 -j DNAT --to-destination 172.18.0.2:80\n\
         -A POSTROUTING -s 172.18.0.0/16 -d 172.18.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE\n",
    );
    let mut p = pipeline(&rules);
    let syn = tcp(
        eth(CTR3_MAC, DOCKER0_MAC),
        CTR3,
        41000,
        ETH0_IP,
        8088,
        1000,
        0,
        SYN,
    );
    let o = run(&mut p, DOCKER0, &syn);
    assert_eq!(o.action, Action::Forward { port: DOCKER0 });
    let h = hdr(&o.frame);
    assert_eq!((h.src, h.dst, h.dport), (DOCKER0_IP, CTR, 80));
    assert_eq!(&o.frame[0..6], &CTR_MAC.0);
    // The answer goes back to .3 as from 10.0.2.15:8088.
    let synack = tcp(
        from_ctr(),
        CTR,
        80,
        DOCKER0_IP,
        h.sport,
        5000,
        1001,
        SYN | ACK,
    );
    let o = run(&mut p, DOCKER0, &synack);
    assert_eq!(o.action, Action::Forward { port: DOCKER0 });
    assert_eq!(
        hdr(&o.frame),
        Hdr {
            src: ETH0_IP,
            dst: CTR3,
            sport: 8088,
            dport: 41000
        }
    );
    assert_eq!(&o.frame[0..6], &CTR3_MAC.0);
}

#[test]
fn icmp_echo_through_masquerade_keeps_its_id() {
    let mut p = pipeline(&nat(MASQ));
    let req = builder::icmp_echo_request(&from_ctr(), &ip(CTR, DNS, 64), 0x4242, 1, b"ping");
    let o = run(&mut p, DOCKER0, &req);
    assert_eq!(o.action, Action::Forward { port: ETH0 });
    let h = hdr(&o.frame);
    assert_eq!((h.src, h.dst, h.sport), (ETH0_IP, DNS, 0x0800));
    assert_eq!(&o.frame[38..40], &0x4242u16.to_be_bytes(), "id kept");
    let rep = builder::icmp_echo_reply(&from_gw(), &ip(DNS, ETH0_IP, 60), 0x4242, 1, b"ping");
    let o = run(&mut p, ETH0, &rep);
    assert_eq!(o.action, Action::Forward { port: DOCKER0 });
    let h = hdr(&o.frame);
    assert_eq!((h.src, h.dst), (DNS, CTR));
    assert_eq!(&o.frame[38..40], &0x4242u16.to_be_bytes());
    assert_eq!(
        ct_lines(&p, 1_000_000_000),
        ["icmp     1 30 src=172.18.0.2 dst=8.8.8.8 type=8 code=0 id=16962 src=8.8.8.8 dst=10.0.2.15 type=0 code=0 id=16962 mark=0 use=1"]
    );
}

#[test]
fn port_unreachable_for_a_nated_flow_is_translated_back() {
    // A port range makes the inner port change too.
    let mut p = pipeline(&nat(
        "-A POSTROUTING -s 172.18.0.0/16 -o eth0 -p udp -j MASQUERADE --to-ports 20000-20010\n",
    ));
    let q = udp(from_ctr(), CTR, 33894, DNS, 53, 64);
    let o = run(&mut p, DOCKER0, &q);
    assert_eq!(o.action, Action::Forward { port: ETH0 });
    let h = hdr(&o.frame);
    assert_eq!(h.src, ETH0_IP);
    assert!((20000..=20010).contains(&h.sport), "{h:?}");
    // The server answers with a port unreachable quoting what it received.
    let err = builder::icmp_error(&from_gw(), &ip(DNS, ETH0_IP, 60), 3, 3, 0, &o.frame);
    let o = run(&mut p, ETH0, &err);
    assert_eq!(o.action, Action::Forward { port: DOCKER0 });
    let f = &o.frame;
    let outer = hdr(f);
    assert_eq!((outer.src, outer.dst), (DNS, CTR));
    // The quoted datagram is what the container sent (inner checksums valid).
    let inner = &f[14 + 20 + 8..];
    assert!(checksum::verify(&inner[..20]), "inner IP checksum");
    assert_eq!(&inner[12..16], &CTR.octets());
    assert_eq!(&inner[20..22], &33894u16.to_be_bytes());
    let orig = udp(from_ctr(), CTR, 33894, DNS, 53, 63);
    // Same as the original datagram but the TTL (decremented on the way out).
    let mut want = orig[14..].to_vec();
    want[8] = 63;
    let hc = checksum::checksum(&{
        let mut h = want[..20].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    want[10..12].copy_from_slice(&hc.to_be_bytes());
    assert_eq!(&inner[20..], &want[20..], "inner UDP header and data");
}

#[test]
fn router_errors_quote_the_packet_as_it_arrived() {
    // TTL 1 on a packet that would be SNATed: POSTROUTING never ran, the
    // error quotes the original and no connection is confirmed.
    let mut p = pipeline(&nat(MASQ));
    let o = run(&mut p, DOCKER0, &udp(from_ctr(), CTR, 33894, DNS, 53, 1));
    assert_eq!(o.action, Action::Drop(DropReason::TtlExpired));
    assert_eq!(o.generated.len(), 1);
    let (port, g) = &o.generated[0];
    assert_eq!(*port, DOCKER0);
    let h = hdr(g);
    assert_eq!((h.src, h.dst), (DOCKER0_IP, CTR));
    let inner = &g[14 + 28..];
    assert_eq!(&inner[12..16], &CTR.octets());
    assert_eq!(&inner[20..22], &33894u16.to_be_bytes());
    assert_eq!(p.conntrack().unwrap().len(), 0);
}

#[test]
fn notrack_packets_are_untracked_and_not_translated() {
    let rules = format!(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p udp -m udp --dport 53 -j NOTRACK\n-A PREROUTING -p udp -m udp --sport 53 -j NOTRACK\nCOMMIT\n\
         *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -m state --state UNTRACKED -j ACCEPT\nCOMMIT\n{}",
        nat(MASQ)
    );
    let mut p = pipeline(&rules);
    let o = run(&mut p, DOCKER0, &udp(from_ctr(), CTR, 33894, DNS, 53, 64));
    assert_eq!(o.action, Action::Forward { port: ETH0 });
    assert_eq!(hdr(&o.frame).src, CTR, "not translated");
    // Not NOTRACKed: NEW, dropped by the policy.
    let o = run(&mut p, DOCKER0, &udp(from_ctr(), CTR, 33894, DNS, 54, 64));
    assert_eq!(o.action, Action::Drop(DropReason::FilterDrop));
    assert_eq!(p.conntrack().unwrap().len(), 0);
}

#[test]
fn stateful_forwarding_policy() {
    let rules = format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -i docker0 -m conntrack --ctstate NEW -j ACCEPT\n\
         -A FORWARD -m conntrack --ctstate DNAT -j ACCEPT\nCOMMIT\n{}",
        nat(&format!("{MASQ}{DNAT}"))
    );
    let mut p = pipeline(&rules);
    // Out and back.
    let o = run(&mut p, DOCKER0, &udp(from_ctr(), CTR, 33894, DNS, 53, 64));
    assert_eq!(o.action, Action::Forward { port: ETH0 });
    let o = run(&mut p, ETH0, &udp(from_gw(), DNS, 53, ETH0_IP, 33894, 60));
    assert_eq!(o.action, Action::Forward { port: DOCKER0 });
    assert_eq!(hdr(&o.frame).dst, CTR);
    // An ICMP error about it is RELATED.
    let sent = udp(from_ctr(), CTR, 33894, DNS, 53, 63);
    let mut quoted = sent.clone();
    quoted[26..30].copy_from_slice(&ETH0_IP.octets());
    let err = builder::icmp_error(&from_gw(), &ip(DNS, ETH0_IP, 60), 3, 3, 0, &quoted);
    assert_eq!(
        run(&mut p, ETH0, &err).action,
        Action::Forward { port: DOCKER0 }
    );
    // Unsolicited from outside: NEW on eth0, dropped.
    let o = run(&mut p, ETH0, &udp(from_gw(), DNS, 53, CTR, 33000, 60));
    assert_eq!(o.action, Action::Drop(DropReason::FilterDrop));
    // Unless DNATed (the virtual DNAT state).
    let o = run(
        &mut p,
        ETH0,
        &tcp(from_gw(), REMOTE, 40000, ETH0_IP, 8088, 1, 0, SYN),
    );
    assert_eq!(o.action, Action::Forward { port: SRV0 });
}

#[test]
fn connmark_is_stored_in_the_connection() {
    let rules = "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
                 -A PREROUTING -i docker0 -j CONNMARK --set-xmark 0x7/0xffffffff\n\
                 -A PREROUTING -i eth0 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff\nCOMMIT\n\
                 *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A FORWARD -i eth0 -m mark ! --mark 0x7 -j DROP\nCOMMIT\n";
    let mut p = pipeline(rules);
    assert_eq!(
        run(&mut p, DOCKER0, &udp(from_ctr(), CTR, 33894, DNS, 53, 64)).action,
        Action::Forward { port: ETH0 }
    );
    let e = p.conntrack().unwrap().iter().next().unwrap().1;
    assert_eq!(e.mark, 7);
    // The reply gets the mark back; a stranger does not.
    assert_eq!(
        run(&mut p, ETH0, &udp(from_gw(), DNS, 53, CTR, 33894, 60)).action,
        Action::Forward { port: DOCKER0 }
    );
    assert_eq!(
        run(&mut p, ETH0, &udp(from_gw(), DNS, 53, CTR, 33895, 60)).action,
        Action::Drop(DropReason::FilterDrop)
    );
}

#[test]
fn full_table_drops_new_connections_and_keeps_established_ones() {
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A FORWARD -m state --state INVALID -j DROP\nCOMMIT\n";
    let mut p = pipeline_with(rules, "\n[conntrack]\nmax = 4\nbuckets = 16\n");
    let now = 1_000_000_000;
    // Four established (ASSURED, not evictable) connections.
    for i in 0..4u16 {
        let sport = 40000 + i;
        let o = run_at(
            &mut p,
            DOCKER0,
            &tcp(from_ctr(), CTR, sport, DNS, 80, 100, 0, SYN),
            now,
        );
        assert_eq!(o.action, Action::Forward { port: ETH0 });
        let o = run_at(
            &mut p,
            ETH0,
            &tcp(from_gw(), DNS, 80, CTR, sport, 900, 101, SYN | ACK),
            now,
        );
        assert_eq!(o.action, Action::Forward { port: DOCKER0 });
        let o = run_at(
            &mut p,
            DOCKER0,
            &tcp(from_ctr(), CTR, sport, DNS, 80, 101, 901, ACK),
            now,
        );
        assert_eq!(o.action, Action::Forward { port: ETH0 });
    }
    assert_eq!(p.conntrack().unwrap().len(), 4);
    // A fifth: dropped, counted, logged once.
    for sport in [41000, 41001] {
        let o = run_at(
            &mut p,
            DOCKER0,
            &tcp(from_ctr(), CTR, sport, DNS, 80, 100, 0, SYN),
            now,
        );
        assert_eq!(o.action, Action::Drop(DropReason::ConntrackFull));
    }
    assert_eq!(p.drops().get(DropReason::ConntrackFull), 2);
    let mut logs = vec![];
    p.drain_logs(|l| logs.push(l.to_string()));
    assert_eq!(logs, ["nf_conntrack: table full, dropping packet"]);
    // Established connections go on.
    let o = run_at(
        &mut p,
        ETH0,
        &tcp(from_gw(), DNS, 80, CTR, 40002, 901, 101, ACK),
        now,
    );
    assert_eq!(o.action, Action::Forward { port: DOCKER0 });
}

#[test]
fn fragments_are_reassembled_tracked_and_translated() {
    // As nf_defrag_ipv4: the fragments wait until the datagram is whole, the
    // datagram is tracked and NATed once, every fragment leaves translated.
    let mut p = pipeline(&nat(MASQ));
    let mut mem = vec![0u8; FRAME_SIZE * 12];
    // A UDP datagram of 8 + 72 bytes, cut after 40 bytes of IP payload.
    let whole = builder::udp_frame(
        &from_ctr(),
        &IpSpec {
            dont_frag: false,
            ..ip(CTR, DNS, 64)
        },
        &UdpSpec {
            src_port: 35000,
            dst_port: 53,
        },
        &[0x42; 72],
    );
    let l4 = whole[34..].to_vec();
    let frag = |off: usize, end: usize, more: bool| {
        builder::ipv4_frame(
            &from_ctr(),
            &IpSpec {
                dont_frag: false,
                more_frags: more,
                frag_offset: off as u16,
                ..ip(CTR, DNS, 64)
            },
            17,
            &l4[off..end],
        )
    };
    let batch = |p: &mut Pipeline, mem: &mut Vec<u8>, slot: usize, f: &[u8], now: u64| {
        let a = slot * FRAME_SIZE;
        mem[a..a + f.len()].copy_from_slice(f);
        let mut b = Batch::with_capacity(4);
        b.frames
            .push(Frame::rx(a as FrameAddr, f.len() as u16, DOCKER0));
        for i in 8..12 {
            b.spare.push((i * FRAME_SIZE) as FrameAddr);
        }
        p.process_batch(now, mem, &mut b);
        b
    };
    // The last fragment first: held.
    let b = batch(&mut p, &mut mem, 1, &frag(40, l4.len(), false), 1_000);
    assert_eq!(b.verdicts[0], Action::Held);
    assert!(b.generated.is_empty());
    assert_eq!(p.conntrack().unwrap().len(), 0);
    // The first completes it: both leave, the first as itself, translated.
    let b = batch(&mut p, &mut mem, 0, &frag(0, 40, true), 2_000);
    assert_eq!(b.verdicts[0], Action::Held);
    let out: Vec<(u64, Vec<u8>)> = b
        .generated
        .iter()
        .map(|g| {
            assert_eq!(g.port, ETH0);
            (
                g.addr,
                mem[g.addr as usize..g.addr as usize + g.len as usize].to_vec(),
            )
        })
        .collect();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, 0, "the first fragment");
    assert_eq!(out[1].0, FRAME_SIZE as u64, "then the last");
    for (_, f) in &out {
        assert!(checksum::verify(&f[14..34]), "IP header checksum");
        assert_eq!(&f[26..30], &[10, 0, 2, 15], "MASQUERADEd source");
        assert_eq!(&f[30..34], &[8, 8, 8, 8]);
        assert_eq!(f[22], 63, "TTL decremented");
        assert_eq!(&f[0..6], &GW_MAC.0);
    }
    // The UDP checksum over the reassembled payload is still right.
    let mut dg = out[0].1[34..].to_vec();
    dg.extend_from_slice(&out[1].1[34..]);
    let ph = checksum::pseudo_header_sum(ETH0_IP, DNS, 17, dg.len() as u32);
    assert_eq!(
        checksum::finish(checksum::combine(ph, checksum::sum(&dg))),
        0
    );
    assert_eq!(p.conntrack().unwrap().len(), 1);
    // A lone fragment of another datagram waits, then times out after 30 s.
    let lone = builder::ipv4_frame(
        &from_ctr(),
        &IpSpec {
            dont_frag: false,
            more_frags: true,
            ident: 0x4322,
            ..ip(CTR, DNS, 64)
        },
        17,
        &l4[..40],
    );
    let b = batch(&mut p, &mut mem, 2, &lone, 3_000);
    assert_eq!(b.verdicts[0], Action::Held);
    let mut later = Batch::with_capacity(1);
    p.process_batch(3_000 + 30_000_000_000, &mut mem, &mut later);
    assert!(
        later.spare.contains(&(2 * FRAME_SIZE as u64)),
        "buffer given back"
    );
    assert_eq!(p.drops().get(DropReason::FragmentTimeout), 1);
}

#[test]
fn masquerade_never_hands_out_reserved_ports() {
    let rules = nat(
        "-A POSTROUTING -s 172.18.0.0/16 -o eth0 -p udp -j MASQUERADE --to-ports 55666-55669\n",
    );
    let mut p = pipeline_with(
        &rules,
        "[conntrack]\nreserved_ports = [55667, \"55668-55669\"]\n",
    );
    // Port 55666 is the only one left: the first flow gets it, the second
    // finds the range exhausted (insert_failed), whatever its source port.
    let o = run(&mut p, DOCKER0, &udp(from_ctr(), CTR, 55667, DNS, 53, 64));
    assert_eq!(o.action, Action::Forward { port: ETH0 });
    assert_eq!(
        hdr(&o.frame),
        Hdr {
            src: ETH0_IP,
            dst: DNS,
            sport: 55666,
            dport: 53
        }
    );
    let o = run(&mut p, DOCKER0, &udp(from_ctr(), CTR, 40001, DNS, 53, 64));
    assert_eq!(o.action, Action::Drop(DropReason::ConntrackInsertFailed));
    assert_eq!(p.conntrack().unwrap().len(), 1);
}

#[test]
fn conntrack_events_while_someone_listens() {
    use fastables_conntrack::{format_event, EventKind};
    let mut p = pipeline(&nat(MASQ));
    // Nobody listens: nothing is collected.
    let o = run(&mut p, DOCKER0, &udp(from_ctr(), CTR, 33000, DNS, 53, 64));
    assert_eq!(o.action, Action::Forward { port: ETH0 });
    let mut n = 0;
    p.drain_ct_events(|_, _, _| n += 1);
    assert_eq!(n, 0);

    p.set_ct_events(true);
    let t0 = 2_000_000_000;
    let o = run_at(
        &mut p,
        DOCKER0,
        &udp(from_ctr(), CTR, 33894, DNS, 53, 64),
        t0,
    );
    assert_eq!(o.action, Action::Forward { port: ETH0 });
    let o = run_at(
        &mut p,
        ETH0,
        &udp(from_gw(), DNS, 53, ETH0_IP, 33894, 64),
        t0 + 1000,
    );
    assert_eq!(o.action, Action::Forward { port: DOCKER0 });
    // Both flows expire (30 s unreplied / replied, no stream).
    let mut later = Batch::with_capacity(1);
    let mut mem = vec![0u8; FRAME_SIZE];
    p.process_batch(t0 + 40_000_000_000, &mut mem, &mut later);
    let mut lines = vec![];
    p.drain_ct_events(|k, e, at| lines.push((k, format_event(k, e, at))));
    let kinds: Vec<EventKind> = lines.iter().map(|l| l.0).collect();
    assert_eq!(
        kinds,
        [
            EventKind::New,
            EventKind::Update,
            EventKind::Destroy,
            EventKind::Destroy
        ],
        "{lines:#?}"
    );
    assert_eq!(
        lines[0].1,
        "    [NEW] udp      17 30 src=172.18.0.2 dst=8.8.8.8 sport=33894 dport=53 [UNREPLIED] src=8.8.8.8 dst=10.0.2.15 sport=53 dport=33894"
    );
    assert_eq!(
        lines[1].1,
        " [UPDATE] udp      17 30 src=172.18.0.2 dst=8.8.8.8 sport=33894 dport=53 src=8.8.8.8 dst=10.0.2.15 sport=53 dport=33894"
    );
    assert!(
        lines[2].1.starts_with("[DESTROY] udp      17 src="),
        "{}",
        lines[2].1
    );
    p.set_ct_events(false);
    assert_eq!(p.ct_events_lost(), 0);
}

#[test]
fn reject_reset_of_a_dnated_connection_leaves_from_the_public_address() {
    // The kernel attaches the rejected connection to the reset and NATs it
    // in the reply direction: the client sees 10.0.2.15:8088 refuse, as a
    // kernel router's `curl` gets "connection refused" (checked in the lab).
    let rules = format!(
        "{}*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A FORWARD -d 192.168.0.2/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\n\
         COMMIT\n",
        nat(DNAT)
    );
    let mut p = pipeline(&rules);
    let syn = tcp(from_gw(), REMOTE, 40000, ETH0_IP, 8088, 1000, 0, SYN);
    let o = run(&mut p, ETH0, &syn);
    assert_eq!(o.action, Action::Drop(DropReason::Rejected));
    let (port, rst) = &o.generated[0];
    assert_eq!(*port, ETH0);
    assert_eq!(
        hdr(rst),
        Hdr {
            src: ETH0_IP,
            dst: REMOTE,
            sport: 8088,
            dport: 40000
        }
    );
    assert_eq!(rst[47] & 0x04, 0x04, "RST");
}

/// The batch's conntrack lookups done ahead (`conntrack_lookup_ahead: 0`)
/// or one frame at a time give the same frames, actions, generated packets
/// and connections, also when a frame of the batch creates or deletes the
/// connection of a later one.
#[test]
fn lookups_ahead_change_nothing() {
    use fastables_dataplane::pipeline::PipelineOptions;
    let rules = nat(&format!("{MASQ}{DNAT}"));
    let make = |ahead: usize| {
        let rs = fastables_rules::parse::parse_restore(&rules, "test.rules").unwrap();
        let c = Arc::new(CompiledRuleset::compile(&rs, &["eth0", "docker0", "srv0"]).unwrap());
        let cfg = Config::parse(CONFIG, "/t/fastables.toml").unwrap();
        let opts = PipelineOptions {
            conntrack_lookup_ahead: ahead,
            ..PipelineOptions::default()
        };
        Pipeline::with_options(&cfg, c, opts).unwrap()
    };
    let (mut a, mut b) = (make(0), make(usize::MAX));
    const RST: u8 = 0x04;
    let mut batches: Vec<Vec<(IfIndex, Vec<u8>)>> = Vec::new();
    for round in 0..6u16 {
        let mut v = Vec::new();
        for f in 0..6u16 {
            let port = 40000 + f;
            // A new UDP flow and its second packet in the same batch, the
            // reply to last round's, and TCP opened, answered, reset.
            v.push((
                DOCKER0,
                udp(from_ctr(), CTR, port + 100 * round, DNS, 53, 64),
            ));
            v.push((
                DOCKER0,
                udp(from_ctr(), CTR, port + 100 * round, DNS, 53, 64),
            ));
            if round > 0 {
                let back = port + 100 * (round - 1);
                v.push((ETH0, udp(from_gw(), DNS, 53, ETH0_IP, back, 64)));
            }
            let flags = [SYN, SYN | ACK, ACK, RST, ACK, SYN][usize::from(round)];
            v.push((
                DOCKER0,
                tcp(from_ctr(), CTR, port, REMOTE, 443, 7, 9, flags),
            ));
            v.push((
                ETH0,
                tcp(from_gw(), REMOTE, 443, ETH0_IP, port, 9, 8, flags | ACK),
            ));
            v.push((
                ETH0,
                tcp(from_gw(), REMOTE, 1000 + f, ETH0_IP, 8088, 3, 0, flags),
            ));
        }
        batches.push(v);
    }
    for (i, frames) in batches.iter().enumerate() {
        let now = 1_000_000_000 + i as u64 * 10_000_000;
        let mut outs = Vec::new();
        for p in [&mut a, &mut b] {
            let n = frames.len() + 8;
            let mut mem = vec![0u8; FRAME_SIZE * n * 2];
            let mut batch = Batch::with_capacity(n);
            for (k, (port, f)) in frames.iter().enumerate() {
                mem[k * FRAME_SIZE..k * FRAME_SIZE + f.len()].copy_from_slice(f);
                batch.frames.push(Frame::rx(
                    (k * FRAME_SIZE) as FrameAddr,
                    f.len() as u16,
                    *port,
                ));
            }
            for k in n..2 * n {
                batch.spare.push((k * FRAME_SIZE) as FrameAddr);
            }
            p.process_batch(now, &mut mem, &mut batch);
            let bytes = |f: &Frame| mem[f.addr as usize..f.addr as usize + f.len as usize].to_vec();
            assert_eq!(batch.verdicts.len(), batch.frames.len());
            let out: Vec<_> = batch
                .frames
                .iter()
                .zip(batch.verdicts.iter().copied())
                .chain(
                    batch
                        .generated
                        .iter()
                        .map(|g| (g, Action::Forward { port: g.port })),
                )
                .map(|(f, a)| (a, f.port, bytes(f)))
                .collect();
            outs.push((out, ct_lines(p, now)));
        }
        assert_eq!(outs[0], outs[1], "batch {i}");
        assert!(
            outs[0]
                .0
                .iter()
                .any(|(a, _, _)| matches!(a, Action::Forward { .. })),
            "batch {i} forwards"
        );
    }
}
