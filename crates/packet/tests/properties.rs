//! Property tests: no input makes parsing or a checked view panic, and
//! incremental checksum updates through the views equal full recomputation.

use std::net::Ipv4Addr;

use fastables_packet::arp::ArpPacket;
use fastables_packet::builder::{self, EthSpec, IpSpec, TcpSpec, UdpSpec};
use fastables_packet::ethernet::EthernetFrame;
use fastables_packet::icmp::{IcmpPacket, QuotedEnd};
use fastables_packet::ipv4::Ipv4Packet;
use fastables_packet::parse::{l4_checksum_ok, parse_frame, parse_icmp_quoted, L4};
use fastables_packet::tcp::{TcpOptions, TcpPacket};
use fastables_packet::udp::UdpPacket;
use fastables_packet::{fixtures, MacAddr};
use proptest::prelude::*;

fn exercise_ipv4(b: &mut [u8]) {
    if let Ok(p) = Ipv4Packet::new_checked(&*b) {
        let _ = (
            p.version(),
            p.header_len(),
            p.tos(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
            p.ttl(),
        );
        let _ = (
            p.protocol(),
            p.checksum(),
            p.src(),
            p.dst(),
            p.options(),
            p.payload(),
        );
        let _ = (p.verify_checksum(), p.header(), p.quoted_l4_head());
        let mut m = Ipv4Packet::new_checked(&mut *b).expect("checked above");
        m.set_ttl(1);
        m.set_tos(2);
        m.set_src(Ipv4Addr::new(1, 2, 3, 4));
        m.set_dst(Ipv4Addr::new(5, 6, 7, 8));
        m.fill_checksum();
        let _ = m.payload_mut().len();
        let _ = m.quoted_l4_head_mut().len();
    }
    if let Ok(p) = Ipv4Packet::new_quoted(&*b) {
        let _ = (p.payload(), p.quoted_l4_head(), p.options(), p.src());
    }
}

fn exercise_l4(b: &mut [u8]) {
    let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    if let Ok(mut t) = TcpPacket::new_checked(&mut *b) {
        let _ = (
            t.src_port(),
            t.dst_port(),
            t.seq(),
            t.ack(),
            t.header_len(),
            t.flags(),
        );
        let _ = (
            t.window(),
            t.checksum(),
            t.urgent(),
            t.options(),
            t.payload(),
        );
        let _ = (t.options_iter().count(), t.option_kinds(), t.mss());
        let _ = t.verify_checksum(s, d);
        t.set_src_port(1);
        t.set_dst_port(2);
        t.update_pseudo_addr(s, d);
        let _ = t.set_mss(536);
        let _ = t.clamp_mss(500);
        t.fill_checksum(s, d);
        let _ = t.payload_mut().len();
    }
    if let Ok(mut u) = UdpPacket::new_checked(&mut *b) {
        let _ = (
            u.src_port(),
            u.dst_port(),
            u.len(),
            u.checksum(),
            u.payload(),
        );
        let _ = u.verify_checksum(s, d);
        u.set_src_port(1);
        u.set_dst_port(2);
        u.update_pseudo_addr(s, d);
        u.fill_checksum(s, d);
        let _ = u.payload_mut().len();
    }
    if let Ok(mut i) = IcmpPacket::new_checked(&mut *b) {
        let _ = (
            i.icmp_type(),
            i.code(),
            i.checksum(),
            i.echo_ident(),
            i.echo_seq(),
        );
        let _ = (
            i.rest_of_header(),
            i.next_hop_mtu(),
            i.data(),
            i.verify_checksum(),
        );
        if let Ok(q) = i.quoted() {
            let _ = (q.src(), q.payload(), q.quoted_l4_head());
        }
        i.set_echo_ident(7);
        i.set_type_code(0, 0);
        if let Ok(mut q) = i.quoted_mut() {
            q.set_src(Ipv4Addr::new(9, 9, 9, 9));
        }
        let _ = i.nat_quoted(QuotedEnd::Src, Ipv4Addr::new(1, 1, 1, 1), 9);
        let _ = i.nat_quoted(QuotedEnd::Dst, Ipv4Addr::new(2, 2, 2, 2), 10);
        i.fill_checksum();
    }
    let _ = TcpOptions::new(b).count();
}

fn exercise_frame(frame: &[u8]) {
    if let Ok(p) = parse_frame(frame) {
        let _ = l4_checksum_ok(frame, &p);
        let _ = parse_icmp_quoted(frame, &p);
        if let Some(r) = p.ipv4_range() {
            assert!(r.end <= frame.len());
        }
        if let Some(r) = p.l4_range() {
            assert!(r.start <= r.end && r.end <= frame.len());
        }
    }
    let mut b = frame.to_vec();
    if let Ok(mut e) = EthernetFrame::new_checked(&mut b[..]) {
        let _ = (
            e.dst(),
            e.src(),
            e.vlan_id(),
            e.ethertype(),
            e.header_len(),
            e.payload(),
        );
        e.set_src(MacAddr::ZERO);
        e.set_dst(MacAddr::BROADCAST);
        e.set_vlan_id(5);
        let hl = e.header_len();
        let l3 = &mut b[hl..];
        if let Ok(mut a) = ArpPacket::new_checked(&mut *l3) {
            let _ = (a.op(), a.sha(), a.spa(), a.tha(), a.tpa());
            a.set_op(2);
        }
        exercise_ipv4(l3);
        if let Ok(p) = Ipv4Packet::new_checked(&*l3) {
            let (hl, end) = (p.header_len(), usize::from(p.total_len()));
            exercise_l4(&mut l3[hl..end]);
        }
    }
}

/// A valid frame of each kind, to mutate from.
fn seeds() -> Vec<Vec<u8>> {
    let tcp = builder::tcp_frame(
        &EthSpec::default(),
        &IpSpec {
            options: vec![0x94, 4, 0, 0],
            ..IpSpec::default()
        },
        &TcpSpec {
            options: vec![1, 2, 4, 5, 0xb4, 1, 3, 3, 7],
            ..TcpSpec::default()
        },
        b"data",
    );
    let udp = builder::udp_frame(
        &EthSpec {
            vlan: Some(3),
            pad: true,
            ..EthSpec::default()
        },
        &IpSpec::default(),
        &UdpSpec::default(),
        b"x",
    );
    vec![
        tcp,
        udp,
        fixtures::TCP_SYN.to_vec(),
        fixtures::UDP_DNS.to_vec(),
        fixtures::ICMP_PORT_UNREACH.to_vec(),
        fixtures::ICMP_ECHO_REQUEST.to_vec(),
        fixtures::ARP_REQUEST.to_vec(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        exercise_frame(&frame);
        let mut b = frame.clone();
        exercise_ipv4(&mut b);
        let mut b = frame;
        exercise_l4(&mut b);
    }

    #[test]
    fn mutated_frames_never_panic(seed in 0usize..7, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut f = seeds()[seed].clone();
        for (i, v) in edits {
            let n = f.len();
            f[i % n] = v;
        }
        let n = f.len();
        f.truncate(n - cut % (n / 4 + 1));
        exercise_frame(&f);
    }

    /// NAT-style rewrite through the views (IP addresses + ports, TTL) keeps every
    /// checksum equal to a fresh full computation.
    #[test]
    fn view_rewrites_equal_full_recompute(
        src in any::<u32>(), dst in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
        ttl in 1u8.., nsrc in any::<u32>(), nsport in any::<u16>(), udp in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let ip = IpSpec { src: Ipv4Addr::from(src), dst: Ipv4Addr::from(dst), ttl, ..IpSpec::default() };
        let mut f = if udp {
            builder::udp_frame(&EthSpec::default(), &ip, &UdpSpec { src_port: sport, dst_port: dport }, &payload)
        } else {
            builder::tcp_frame(&EthSpec::default(), &ip, &TcpSpec { src_port: sport, dst_port: dport, ..TcpSpec::default() }, &payload)
        };
        let nsrc = Ipv4Addr::from(nsrc);
        {
            let mut p = Ipv4Packet::new_checked(&mut f[14..]).unwrap();
            p.set_src(nsrc);
            p.set_ttl(ttl - 1);
            let old = Ipv4Addr::from(src);
            let l4 = p.payload_mut();
            if udp {
                let mut u = UdpPacket::new_checked(l4).unwrap();
                u.update_pseudo_addr(old, nsrc);
                u.set_src_port(nsport);
            } else {
                let mut t = TcpPacket::new_checked(l4).unwrap();
                t.update_pseudo_addr(old, nsrc);
                t.set_src_port(nsport);
            }
        }
        let ip2 = IpSpec { src: nsrc, ttl: ttl - 1, ..ip };
        let expect = if udp {
            builder::udp_frame(&EthSpec::default(), &ip2, &UdpSpec { src_port: nsport, dst_port: dport }, &payload)
        } else {
            builder::tcp_frame(&EthSpec::default(), &ip2, &TcpSpec { src_port: nsport, dst_port: dport, ..TcpSpec::default() }, &payload)
        };
        prop_assert_eq!(&f, &expect);
        let p = parse_frame(&f).unwrap();
        prop_assert!(l4_checksum_ok(&f, &p));
        let complete = matches!(p.ipv4().unwrap().l4, L4::Tcp { .. } | L4::Udp { .. });
        prop_assert!(complete);
    }

    /// MSS clamping at any option position keeps the checksum valid.
    #[test]
    fn mss_clamp_any_alignment(nops in 0usize..8, mss in any::<u16>(), max in any::<u16>()) {
        let mut opts = vec![1u8; nops];
        opts.extend_from_slice(&[2, 4]);
        opts.extend_from_slice(&mss.to_be_bytes());
        let ip = IpSpec::default();
        let mut f = builder::tcp_frame(&EthSpec::default(), &ip, &TcpSpec { options: opts, ..TcpSpec::default() }, b"");
        {
            let mut t = TcpPacket::new_checked(&mut f[34..]).unwrap();
            let now = t.clamp_mss(max);
            prop_assert_eq!(now, Some(mss.min(max)));
            prop_assert!(t.verify_checksum(ip.src, ip.dst));
        }
    }
}

/// A valid frame of one of three kinds (UDP, TCP, ICMP echo), with
/// `payload` bytes of payload, DF as given.
fn valid_frame(kind: u8, payload: usize, df: bool, frag: u16) -> Vec<u8> {
    let eth = EthSpec::default();
    let ip = IpSpec {
        src: Ipv4Addr::new(172, 18, 0, 2),
        dst: Ipv4Addr::new(8, 8, 8, 8),
        dont_frag: df,
        frag_offset: frag,
        ..IpSpec::default()
    };
    let data = vec![0x5a; payload];
    match kind % 3 {
        0 => builder::udp_frame(&eth, &ip, &UdpSpec::default(), &data),
        1 => builder::tcp_frame(&eth, &ip, &TcpSpec::default(), &data),
        _ => builder::icmp_echo_request(&eth, &ip, 7, 1, &data),
    }
}

proptest! {
    /// `parse_ipv4_simple` answers exactly for the frames `parse_frame`
    /// parses as untagged IPv4 with a 20-byte header, with the same result.
    #[test]
    fn parse_ipv4_simple_is_parse_frame_for_plain_ipv4(
        kind in 0u8..3,
        payload in 0usize..64,
        df in any::<bool>(),
        frag in prop_oneof![Just(0u16), 0u16..0x2000],
        flips in proptest::collection::vec((0usize..70, any::<u8>()), 0..4),
        cut in 0usize..8,
    ) {
        let mut f = valid_frame(kind, payload, df, frag);
        for (at, x) in flips {
            if let Some(b) = f.get_mut(at) {
                *b ^= x;
            }
        }
        f.truncate(f.len().saturating_sub(cut));
        let full = parse_frame(&f);
        let plain = match &full {
            Ok(p) if p.vlan_id.is_none() => match p.l3 {
                fastables_packet::parse::L3::Ipv4(i) if i.header_len == 20 => Some(i),
                _ => None,
            },
            _ => None,
        };
        prop_assert_eq!(fastables_packet::parse::parse_ipv4_simple(&f), plain, "{:?}", full);
    }
}
