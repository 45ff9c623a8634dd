//! Frame builders for tests and tools: complete Ethernet + IPv4 + TCP/UDP/ICMP
//! frames with correct checksums, ARP requests/replies, ICMP errors quoting a
//! given packet. These allocate (`Vec<u8>`) and panic on impossible specs
//! (e.g. more than 40 bytes of options); never use them on the data path.

use std::net::Ipv4Addr;

use crate::arp::ArpRepr;
use crate::ethernet::{
    EthernetFrame, EthernetRepr, MacAddr, ETHERTYPE_ARP, ETHERTYPE_IPV4, MIN_FRAME_LEN,
};
use crate::icmp::{types, IcmpRepr};
use crate::ipv4::{Ipv4Packet, Ipv4Repr, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::tcp::{flags, TcpRepr};
use crate::udp::UdpRepr;

/// Most bytes of the offending datagram an ICMP error quotes, as the kernel's
/// `icmp_send` (576 - 20-byte IP header - 8-byte ICMP header).
pub const ICMP_ERROR_QUOTE_MAX: usize = 576 - 20 - 8;

/// Ethernet part of a frame spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthSpec {
    /// Source MAC.
    pub src: MacAddr,
    /// Destination MAC.
    pub dst: MacAddr,
    /// One 802.1Q tag with this VLAN id.
    pub vlan: Option<u16>,
    /// Pad the frame with zeros to the 60-byte Ethernet minimum, as on the wire.
    pub pad: bool,
}

impl Default for EthSpec {
    /// `02:00:00:00:00:01` -> `02:00:00:00:00:02`, untagged, unpadded.
    fn default() -> Self {
        EthSpec {
            src: MacAddr([2, 0, 0, 0, 0, 1]),
            dst: MacAddr([2, 0, 0, 0, 0, 2]),
            vlan: None,
            pad: false,
        }
    }
}

/// IPv4 part of a frame spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSpec {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// Type of service.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// "Don't fragment".
    pub dont_frag: bool,
    /// "More fragments".
    pub more_frags: bool,
    /// Fragment offset in bytes (multiple of 8).
    pub frag_offset: u16,
    /// Options (padded to a multiple of 4 bytes, at most 40).
    pub options: Vec<u8>,
}

impl Default for IpSpec {
    /// 10.0.0.1 -> 10.0.0.2, TTL 64, DF set, id 0, no options.
    fn default() -> Self {
        IpSpec {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            options: Vec::new(),
        }
    }
}

/// TCP part of a frame spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSpec {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags (see [`crate::tcp::flags`]).
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Options (padded to a multiple of 4 bytes, at most 40).
    pub options: Vec<u8>,
}

impl Default for TcpSpec {
    /// 40000 -> 80, SYN, seq 1000, window 64240, no options.
    fn default() -> Self {
        TcpSpec {
            src_port: 40000,
            dst_port: 80,
            seq: 1000,
            ack: 0,
            flags: flags::SYN,
            window: 64240,
            urgent: 0,
            options: Vec::new(),
        }
    }
}

/// UDP part of a frame spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSpec {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl Default for UdpSpec {
    /// 33894 -> 53.
    fn default() -> Self {
        UdpSpec {
            src_port: 33894,
            dst_port: 53,
        }
    }
}

fn finish_eth(eth: &EthSpec, ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let er = EthernetRepr {
        src: eth.src,
        dst: eth.dst,
        vlan: eth.vlan,
        ethertype,
    };
    let mut f = vec![0u8; er.header_len() + l3.len()];
    let hl = er.emit(&mut f).expect("buffer sized for the header");
    f[hl..].copy_from_slice(l3);
    if eth.pad && f.len() < MIN_FRAME_LEN {
        f.resize(MIN_FRAME_LEN, 0);
    }
    f
}

/// An IPv4 datagram (header with checksum + `payload` as given) in Ethernet.
/// Use it for non-first fragments or hand-made transport bytes.
pub fn ipv4_frame(eth: &EthSpec, ip: &IpSpec, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let dg = ipv4_datagram(ip, protocol, payload);
    finish_eth(eth, ETHERTYPE_IPV4, &dg)
}

/// An IPv4 datagram without Ethernet header.
pub fn ipv4_datagram(ip: &IpSpec, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src: ip.src,
        dst: ip.dst,
        protocol,
        ttl: ip.ttl,
        tos: ip.tos,
        ident: ip.ident,
        dont_frag: ip.dont_frag,
        more_frags: ip.more_frags,
        frag_offset: ip.frag_offset,
        options: &ip.options,
        payload_len: payload.len(),
    };
    let mut dg = vec![0u8; repr.header_len() + payload.len()];
    let hl = repr.emit(&mut dg).expect("valid IPv4 spec");
    dg[hl..].copy_from_slice(payload);
    dg
}

/// A TCP segment (header, options, payload, checksum) for `ip`'s addresses.
pub fn tcp_segment(ip: &IpSpec, tcp: &TcpSpec, payload: &[u8]) -> Vec<u8> {
    let r = TcpRepr {
        src_port: tcp.src_port,
        dst_port: tcp.dst_port,
        seq: tcp.seq,
        ack: tcp.ack,
        flags: tcp.flags,
        window: tcp.window,
        urgent: tcp.urgent,
        options: &tcp.options,
        payload,
    };
    let mut seg = vec![0u8; r.segment_len()];
    r.emit(&mut seg, ip.src, ip.dst).expect("valid TCP spec");
    seg
}

/// Ethernet + IPv4 + TCP with correct checksums.
pub fn tcp_frame(eth: &EthSpec, ip: &IpSpec, tcp: &TcpSpec, payload: &[u8]) -> Vec<u8> {
    ipv4_frame(eth, ip, PROTO_TCP, &tcp_segment(ip, tcp, payload))
}

/// Ethernet + IPv4 + UDP with correct checksums.
pub fn udp_frame(eth: &EthSpec, ip: &IpSpec, udp: &UdpSpec, payload: &[u8]) -> Vec<u8> {
    let r = UdpRepr {
        src_port: udp.src_port,
        dst_port: udp.dst_port,
        payload,
    };
    let mut d = vec![0u8; r.len()];
    r.emit(&mut d, ip.src, ip.dst).expect("valid UDP spec");
    ipv4_frame(eth, ip, PROTO_UDP, &d)
}

/// Ethernet + IPv4 + the ICMP message `icmp` with correct checksums.
pub fn icmp_frame(eth: &EthSpec, ip: &IpSpec, icmp: &IcmpRepr<'_>) -> Vec<u8> {
    let mut m = vec![0u8; icmp.len()];
    icmp.emit(&mut m).expect("valid ICMP spec");
    ipv4_frame(eth, ip, PROTO_ICMP, &m)
}

/// An ICMP echo request frame.
pub fn icmp_echo_request(eth: &EthSpec, ip: &IpSpec, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    icmp_frame(eth, ip, &IcmpRepr::echo_request(ident, seq, data))
}

/// An ICMP echo reply frame.
pub fn icmp_echo_reply(eth: &EthSpec, ip: &IpSpec, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    icmp_frame(eth, ip, &IcmpRepr::echo_reply(ident, seq, data))
}

/// The IPv4 datagram inside an Ethernet frame, bounded by its total length
/// (whole payload when it does not parse as IPv4).
pub fn datagram_of(frame: &[u8]) -> &[u8] {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return &[];
    };
    let hl = eth.header_len();
    let payload = &frame[hl..];
    match Ipv4Packet::new_checked(payload) {
        Ok(p) => &payload[..usize::from(p.total_len())],
        Err(_) => payload,
    }
}

/// An ICMP error (`ty`/`code`, rest-of-header `rest`: the MTU for
/// frag-needed, else usually 0) sent with `eth`/`ip`, quoting the IPv4
/// datagram of the Ethernet frame `offending`, cut to
/// [`ICMP_ERROR_QUOTE_MAX`] bytes as the kernel does.
pub fn icmp_error(
    eth: &EthSpec,
    ip: &IpSpec,
    ty: u8,
    code: u8,
    rest: u32,
    offending: &[u8],
) -> Vec<u8> {
    let dg = datagram_of(offending);
    let quoted = &dg[..dg.len().min(ICMP_ERROR_QUOTE_MAX)];
    icmp_frame(eth, ip, &IcmpRepr::error(ty, code, rest, quoted))
}

/// A "time exceeded in transit" error from `router` about `offending`, sent
/// back to the offending source with the MACs swapped.
pub fn icmp_time_exceeded(router: Ipv4Addr, offending: &[u8]) -> Vec<u8> {
    let eth = swapped_eth(offending);
    let src = Ipv4Packet::new_checked(datagram_of(offending))
        .map(|p| p.src())
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let ip = IpSpec {
        src: router,
        dst: src,
        dont_frag: false,
        ..IpSpec::default()
    };
    icmp_error(&eth, &ip, types::TIME_EXCEEDED, 0, 0, offending)
}

fn swapped_eth(frame: &[u8]) -> EthSpec {
    match EthernetFrame::new_checked(frame) {
        Ok(e) => EthSpec {
            src: e.dst(),
            dst: e.src(),
            vlan: e.vlan_id(),
            pad: false,
        },
        Err(_) => EthSpec::default(),
    }
}

/// A broadcast ARP request "who has `target_ip`? tell `src_ip`".
pub fn arp_request(src_mac: MacAddr, src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        &EthSpec {
            src: src_mac,
            dst: MacAddr::BROADCAST,
            vlan: None,
            pad: false,
        },
        &ArpRepr::request(src_mac, src_ip, target_ip),
    )
}

/// A unicast ARP reply "`src_ip` is at `src_mac`" to `dst_mac`/`dst_ip`.
pub fn arp_reply(
    src_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_mac: MacAddr,
    dst_ip: Ipv4Addr,
) -> Vec<u8> {
    arp_frame(
        &EthSpec {
            src: src_mac,
            dst: dst_mac,
            vlan: None,
            pad: false,
        },
        &ArpRepr {
            op: crate::arp::OP_REPLY,
            sha: src_mac,
            spa: src_ip,
            tha: dst_mac,
            tpa: dst_ip,
        },
    )
}

/// Any ARP packet in an Ethernet frame.
pub fn arp_frame(eth: &EthSpec, arp: &ArpRepr) -> Vec<u8> {
    let mut a = [0u8; crate::arp::PACKET_LEN];
    arp.emit(&mut a).expect("28-byte buffer");
    finish_eth(eth, ETHERTYPE_ARP, &a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{l4_checksum_ok, parse_frame, parse_icmp_quoted, L3, L4};

    #[test]
    fn tcp_frame_parses() {
        let f = tcp_frame(
            &EthSpec::default(),
            &IpSpec {
                options: vec![1, 1, 1, 0],
                ..IpSpec::default()
            },
            &TcpSpec {
                options: vec![2, 4, 5, 0xb4],
                ..TcpSpec::default()
            },
            b"x",
        );
        assert_eq!(f.len(), 14 + 24 + 24 + 1);
        let p = parse_frame(&f).unwrap();
        let i = p.ipv4().unwrap();
        assert_eq!(i.header_len, 24);
        assert_eq!(
            i.l4,
            L4::Tcp {
                src_port: 40000,
                dst_port: 80,
                flags: flags::SYN,
                header_len: 24
            }
        );
        assert!(l4_checksum_ok(&f, &p));
    }

    #[test]
    fn udp_padded_vlan() {
        let f = udp_frame(
            &EthSpec {
                vlan: Some(42),
                pad: true,
                ..EthSpec::default()
            },
            &IpSpec::default(),
            &UdpSpec::default(),
            b"q",
        );
        assert_eq!(f.len(), 60);
        let p = parse_frame(&f).unwrap();
        assert_eq!(p.vlan_id, Some(42));
        assert_eq!(p.l3_offset, 18);
        assert_eq!(p.ipv4().unwrap().total_len, 29);
        assert!(l4_checksum_ok(&f, &p));
    }

    #[test]
    fn arp_frames() {
        let me = MacAddr([2, 0, 0, 0, 0, 1]);
        let f = arp_request(me, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(f.len(), 42);
        let p = parse_frame(&f).unwrap();
        match p.l3 {
            L3::Arp(a) => {
                assert_eq!(a.op, crate::arp::OP_REQUEST);
                assert_eq!(a.tpa, Ipv4Addr::new(10, 0, 0, 2));
            }
            other => panic!("{other:?}"),
        }
        let r = arp_reply(
            MacAddr([2, 0, 0, 0, 0, 2]),
            Ipv4Addr::new(10, 0, 0, 2),
            me,
            Ipv4Addr::new(10, 0, 0, 1),
        );
        assert_eq!(&r[0..6], &me.0);
    }

    /// The kernel's own ICMP messages, rebuilt byte for byte.
    #[test]
    fn matches_kernel_generated_icmp() {
        use crate::fixtures::{ICMP_ECHO_REPLY, ICMP_PORT_UNREACH, UDP_DNS};
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let eth = EthSpec {
            src: MacAddr([2, 0, 0, 0, 0, 2]),
            dst: MacAddr([2, 0, 0, 0, 0, 1]),
            ..EthSpec::default()
        };
        let reply_ip = IpSpec {
            src: b,
            dst: a,
            ident: 13347,
            dont_frag: false,
            ..IpSpec::default()
        };
        assert_eq!(
            icmp_echo_reply(&eth, &reply_ip, 0x1234, 1, b"abcdefgh"),
            ICMP_ECHO_REPLY.to_vec()
        );
        // The UDP datagram as it was sent (partial checksum from offload).
        let mut sent = UDP_DNS;
        sent[40..42].copy_from_slice(&[0x14, 0x20]);
        let err_ip = IpSpec {
            src: b,
            dst: a,
            tos: 0xc0,
            ident: 13340,
            dont_frag: false,
            ..IpSpec::default()
        };
        assert_eq!(
            icmp_error(&eth, &err_ip, types::DEST_UNREACH, 3, 0, &sent),
            ICMP_PORT_UNREACH.to_vec()
        );
    }

    #[test]
    fn icmp_error_quotes() {
        let orig = udp_frame(
            &EthSpec::default(),
            &IpSpec::default(),
            &UdpSpec::default(),
            &[7u8; 1000],
        );
        let err = icmp_time_exceeded(Ipv4Addr::new(10, 0, 0, 254), &orig);
        let p = parse_frame(&err).unwrap();
        let i = p.ipv4().unwrap();
        assert_eq!(i.dst, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(i.payload_len(), 8 + ICMP_ERROR_QUOTE_MAX);
        assert!(l4_checksum_ok(&err, &p));
        let q = parse_icmp_quoted(&err, &p).unwrap();
        assert_eq!(q.ports(), Some((33894, 53)));
        assert_eq!(q.src, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(q.total_len, 1028);
        let echo = icmp_echo_request(&EthSpec::default(), &IpSpec::default(), 9, 1, b"hi");
        let pe = parse_frame(&echo).unwrap();
        assert_eq!(
            parse_icmp_quoted(&echo, &pe).unwrap_err(),
            crate::ParseError::NotIcmpError
        );
    }
}
