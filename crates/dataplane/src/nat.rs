//! Conntrack and NAT glue of the pipeline: packet facts for the conntrack
//! crate, the conntrack part of the rules' context, NAT ranges from targets,
//! and the packet rewrites of `nf_nat_manip_pkt` and
//! `nf_nat_icmp_reply_translation` (incremental checksums). No allocation.

use std::net::Ipv4Addr;

use fastables_conntrack::{
    status, CtState, Dir, Entry, IcmpFacts, Manip, NatRange, PacketFacts, TableConfig, TcpSeg,
    Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};
use fastables_packet::icmp::{self as picmp, IcmpPacket, QuotedEnd};
use fastables_packet::ipv4::Ipv4Packet;
use fastables_packet::parse::{Ipv4Info, L4};
use fastables_packet::tcp::TcpPacket;
use fastables_packet::udp::UdpPacket;
use fastables_rules::ctx::CtCtx;
use fastables_rules::model::{CtStateSet, NatFlags, PortRange, Target};

use crate::config::ConntrackConfig;

/// The conntrack table settings of a `[conntrack]` section, keyed by `seed`.
pub fn table_config(c: &ConntrackConfig, seed: u64) -> TableConfig {
    TableConfig {
        max: c.max,
        buckets: c.buckets,
        seed,
        timeouts: c.timeouts,
        tcp_loose: c.tcp_loose,
        tcp_be_liberal: c.tcp_be_liberal,
        reserved_ports: c.reserved_ports.clone(),
        ..TableConfig::default()
    }
}

fn rd16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

fn rd32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// The tuple of the datagram quoted by an ICMP error (`icmp_payload` is the
/// ICMP message after its 8-byte header), as `nf_ct_get_tuplepr` reads it:
/// `None` when the inner header is short, or a fragment.
fn quoted_tuple(quoted: &[u8]) -> Option<Tuple> {
    let first = *quoted.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let hl = usize::from(first & 0x0f) * 4;
    if hl < 20 || quoted.len() < hl {
        return None;
    }
    if rd16(quoted, 6) & 0x1fff != 0 {
        return None;
    }
    let proto = quoted[9];
    let (src, dst) = (rd32(quoted, 12), rd32(quoted, 16));
    let l4 = quoted.get(hl..)?;
    match proto {
        IPPROTO_ICMP => {
            let h = l4.get(..8)?;
            Some(Tuple::icmp(src, dst, rd16(h, 4), h[0], h[1]))
        }
        IPPROTO_TCP | IPPROTO_UDP | 132 | 136 => {
            let h = l4.get(..8)?;
            Some(Tuple::new(proto, src, rd16(h, 0), dst, rd16(h, 2)))
        }
        _ => Some(Tuple::new(proto, src, 0, dst, 0)),
    }
}

/// What conntrack needs of the datagram `ip` (from the IP header), parsed as `info`.
/// `csum_bad`: the transport checksum was verified and is wrong (PREROUTING only).
pub fn facts<'a>(info: &Ipv4Info, ip: &'a [u8], l4_off: usize, csum_bad: bool) -> PacketFacts<'a> {
    let total = usize::from(info.total_len).min(ip.len());
    let l4 = ip.get(l4_off..total).unwrap_or(&[]);
    let mut f = PacketFacts {
        src: u32::from(info.src),
        dst: u32::from(info.dst),
        proto: info.protocol,
        fragment: info.frag_offset != 0,
        csum_bad,
        l4_len: l4.len() as u32,
        ..Default::default()
    };
    match info.l4 {
        L4::Tcp {
            src_port,
            dst_port,
            flags,
            header_len,
        } => {
            f.l4_ok = true;
            f.sport = src_port;
            f.dport = dst_port;
            let hl = usize::from(header_len);
            let options = if hl >= 20 { l4.get(20..hl) } else { None };
            f.tcp = TcpSeg {
                flags,
                seq: rd32(l4, 4),
                ack: rd32(l4, 8),
                window: rd16(l4, 14),
                hdr_len: u16::from(header_len),
                l4_len: l4.len() as u32,
                options: options.unwrap_or(&[]),
            };
        }
        L4::Udp {
            src_port,
            dst_port,
            len,
        } => {
            f.l4_ok = true;
            f.sport = src_port;
            f.dport = dst_port;
            f.udp_len = len;
        }
        L4::Icmp {
            icmp_type,
            code,
            ident,
            ..
        } => {
            f.l4_ok = true;
            f.icmp = IcmpFacts {
                icmp_type,
                code,
                id: ident,
                inner: if picmp::is_error(icmp_type) {
                    l4.get(8..).and_then(quoted_tuple)
                } else {
                    None
                },
            };
        }
        L4::Fragment | L4::Other => f.l4_ok = true,
        L4::Truncated => {}
    }
    f
}

/// The conntrack part of the rules' context for a packet of `e` with `state`.
pub fn ct_ctx(e: &Entry, state: CtState) -> CtCtx {
    let mut s = match state {
        CtState::New => CtStateSet::NEW,
        CtState::Established => CtStateSet::ESTABLISHED,
        CtState::Related => CtStateSet::RELATED,
        CtState::Invalid => CtStateSet::INVALID,
    };
    if e.status & status::SRC_NAT != 0 {
        s |= CtStateSet::SNAT;
    }
    if e.status & status::DST_NAT != 0 {
        s |= CtStateSet::DNAT;
    }
    let (o, r) = (e.orig(), e.reply());
    CtCtx {
        state: s,
        status: e.status,
        mark: e.mark,
        orig_src: o.src,
        orig_dst: o.dst,
        repl_src: r.src,
        repl_dst: r.dst,
        orig_sport: o.sport,
        orig_dport: o.dport,
        has_ports: fastables_conntrack::tuple::proto_has_ports(o.proto),
    }
}

/// The context of a packet conntrack knows nothing of (INVALID): also what
/// the raw table sees, which runs before conntrack (`nf_ct_get` is NULL there).
pub fn invalid_ctx() -> CtCtx {
    CtCtx {
        state: CtStateSet::INVALID,
        ..CtCtx::default()
    }
}

fn flag_bits(f: NatFlags) -> u32 {
    let mut b = 0;
    if f.random {
        b |= NatRange::PROTO_RANDOM;
    }
    if f.random_fully {
        b |= NatRange::PROTO_RANDOM_FULLY;
    }
    if f.persistent {
        b |= NatRange::PERSISTENT;
    }
    b
}

fn with_ports(r: NatRange, p: Option<PortRange>) -> NatRange {
    match p {
        Some(p) => r.with_ports(p.lo, p.hi),
        None => r,
    }
}

/// The range of a NAT target. `addr` is the address chosen at run time for
/// MASQUERADE (`inet_select_addr` towards the next hop) and REDIRECT (the
/// ingress device's first address); `None` when there is none (the kernel
/// drops the packet then). `None` as well for a target that is not NAT.
pub fn range_of(t: &Target, addr: Option<u32>) -> Option<NatRange> {
    match t {
        Target::Snat { range, flags } | Target::Dnat { range, flags } => {
            let r = match range.addr {
                Some((a, b)) => NatRange::addrs(u32::from(a), u32::from(b)),
                None => NatRange::default(),
            };
            Some(with_ports(r, range.ports).with_flags(flag_bits(*flags)))
        }
        Target::Masquerade { ports, flags } | Target::Redirect { ports, flags } => {
            let a = addr?;
            Some(with_ports(NatRange::addrs(a, a), *ports).with_flags(flag_bits(*flags)))
        }
        _ => None,
    }
}

/// Whether a packet in `dir` of `e` is rewritten by `manip`
/// (`nf_nat_packet`: the status bit, swapped for the reply direction).
pub fn needs_manip(e: &Entry, dir: Dir, manip: Manip) -> bool {
    let mut bit = match manip {
        Manip::Src => status::SRC_NAT,
        Manip::Dst => status::DST_NAT,
    };
    if dir == Dir::Reply {
        bit ^= status::NAT_MASK;
    }
    e.status & bit != 0
}

/// `nf_nat_ipv4_manip_pkt`: rewrite one end of the datagram `ip` (from the IP
/// header) to `target`'s: the address, and the port (TCP/UDP) or echo id
/// (ICMP queries) unless the packet is a non-first fragment. Checksums are
/// updated incrementally; a zero UDP checksum stays zero.
pub fn manip_pkt(ip: &mut [u8], manip: Manip, target: &Tuple) {
    let Ok(mut p) = Ipv4Packet::new_checked(&mut *ip) else {
        return;
    };
    let (old, new) = match manip {
        Manip::Src => (p.src(), Ipv4Addr::from(target.src)),
        Manip::Dst => (p.dst(), Ipv4Addr::from(target.dst)),
    };
    let port = match manip {
        Manip::Src => target.sport,
        Manip::Dst => target.dport,
    };
    let proto = p.protocol();
    let first = p.frag_offset() == 0;
    // The first fragment of a reassembled datagram: its L4 header is whole,
    // its payload is not.
    let more_frags = p.more_frags();
    let (hl, total) = (p.header_len(), usize::from(p.total_len()));
    match manip {
        Manip::Src => p.set_src(new),
        Manip::Dst => p.set_dst(new),
    }
    if !first {
        return;
    }
    let Some(l4) = ip.get_mut(hl..total) else {
        return;
    };
    match proto {
        IPPROTO_TCP => {
            if let Ok(mut t) = TcpPacket::new_checked(l4) {
                t.update_pseudo_addr(old, new);
                match manip {
                    Manip::Src => t.set_src_port(port),
                    Manip::Dst => t.set_dst_port(port),
                }
            }
        }
        IPPROTO_UDP => {
            let u = if more_frags {
                UdpPacket::new_first_fragment(l4)
            } else {
                UdpPacket::new_checked(l4)
            };
            if let Ok(mut u) = u {
                u.update_pseudo_addr(old, new);
                match manip {
                    Manip::Src => u.set_src_port(port),
                    Manip::Dst => u.set_dst_port(port),
                }
            }
        }
        IPPROTO_ICMP => {
            if let Ok(mut c) = IcmpPacket::new_checked(l4) {
                // icmp_manip_pkt: queries only; the id is the tuple's src id.
                if picmp::has_ident(c.icmp_type()) {
                    c.set_echo_ident(target.sport);
                }
            }
        }
        _ => {}
    }
}

/// [`manip_pkt`] for the datagrams of the flow cache: TCP or UDP, a 20-byte
/// header, not a fragment (the caller checked; otherwise it returns false
/// and changes nothing). The same bytes as `manip_pkt`, the same checksum
/// updates in the same order, without the views' general checks.
#[inline]
pub fn manip_simple(ip: &mut [u8], manip: Manip, target: &Tuple) -> bool {
    use fastables_packet::checksum as cs;
    #[inline(always)]
    fn rd<const N: usize>(b: &[u8; N], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }
    #[inline(always)]
    fn wr<const N: usize>(b: &mut [u8; N], at: usize, v: u16) {
        let [hi, lo] = v.to_be_bytes();
        b[at] = hi;
        b[at + 1] = lo;
    }
    let len = ip.len();
    let (head, l4) = ip.split_at_mut(20.min(len));
    let Some(h) = head.first_chunk_mut::<20>() else {
        return false;
    };
    let total = usize::from(rd(h, 2));
    if h[0] != 0x45 || rd(h, 6) & 0x3fff != 0 || total > len {
        return false;
    }
    let proto = h[9];
    let (at, new, port, port_at) = match manip {
        Manip::Src => (12, target.src, target.sport, 0),
        Manip::Dst => (16, target.dst, target.dport, 2),
    };
    let old = (u32::from(rd(h, at)) << 16) | u32::from(rd(h, at + 2));
    let ip_csum = cs::update32(rd(h, 10), old, new);
    wr(h, at, (new >> 16) as u16);
    wr(h, at + 2, new as u16);
    wr(h, 10, ip_csum);
    let l4_len = total - 20;
    match proto {
        IPPROTO_TCP => {
            // TcpPacket::new_checked: the base header, a data offset inside.
            let Some(t) = l4.first_chunk_mut::<20>() else {
                return true;
            };
            let hl = usize::from(t[12] >> 4) * 4;
            if l4_len < 20 || hl < 20 || hl > l4_len {
                return true;
            }
            let c = cs::update32(rd(t, 16), old, new);
            let c = cs::update16(c, rd(t, port_at), port);
            wr(t, port_at, port);
            wr(t, 16, c);
        }
        IPPROTO_UDP => {
            // UdpPacket::new_checked: the header, a length field inside.
            let Some(u) = l4.first_chunk_mut::<8>() else {
                return true;
            };
            let ulen = usize::from(rd(u, 4));
            if l4_len < 8 || ulen < 8 || ulen > l4_len {
                return true;
            }
            let c = cs::udp_update32(rd(u, 6), old, new);
            let c = cs::udp_update16(c, rd(u, port_at), port);
            wr(u, port_at, port);
            wr(u, 6, c);
        }
        _ => {}
    }
    true
}

/// `nf_nat_icmp_reply_translation` for an ICMP error in `dir` RELATED to `e`,
/// at a hook doing `manip`: the quoted datagram is rewritten to look like the
/// other direction's tuple (the opposite manip), then the outer header like an
/// answer to it. Returns false when the quoted header cannot be rewritten.
pub fn icmp_reply_translation(ip: &mut [u8], e: &Entry, dir: Dir, manip: Manip) -> bool {
    if !needs_manip(e, dir, manip) {
        return true;
    }
    let other = e.tuple[dir.flip().idx()];
    let hl = match Ipv4Packet::new_checked(&*ip) {
        Ok(p) => {
            if p.frag_offset() != 0 {
                return true;
            }
            p.header_len()
        }
        Err(_) => return false,
    };
    let total = usize::from(rd16(ip, 2));
    {
        let Some(l4) = ip.get_mut(hl..total) else {
            return false;
        };
        let Ok(mut c) = IcmpPacket::new_checked(l4) else {
            return false;
        };
        // The inner packet travels in `!dir`: rewrite its `!manip` end.
        let (end, addr, port) = match manip {
            Manip::Dst => (QuotedEnd::Src, other.src, other.sport),
            Manip::Src => (QuotedEnd::Dst, other.dst, other.dport),
        };
        let port = if other.proto == IPPROTO_ICMP {
            other.sport
        } else {
            port
        };
        if c.nat_quoted(end, Ipv4Addr::from(addr), port).is_err() {
            return false;
        }
    }
    // The outer header: as the reply to `other`.
    let Some(target) = other.invert() else {
        return true;
    };
    if let Ok(mut p) = Ipv4Packet::new_checked(&mut *ip) {
        match manip {
            Manip::Src => p.set_src(Ipv4Addr::from(target.src)),
            Manip::Dst => p.set_dst(Ipv4Addr::from(target.dst)),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `manip_simple` writes what `manip_pkt` writes, checksums and
        /// malformed transport headers included.
        #[test]
        fn manip_simple_is_manip_pkt(
            tcp in any::<bool>(),
            payload in 0usize..40,
            header in proptest::collection::vec(any::<u8>(), 20),
            l4 in proptest::collection::vec(any::<u8>(), 20),
            csum in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            len_field in prop_oneof![Just(None), any::<u16>().prop_map(Some)],
            target in (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()),
            dst in any::<bool>(),
        ) {
            let mut ip = header.clone();
            ip[0] = 0x45;
            ip[6] &= 0x40; // DF at most: not a fragment
            ip[7] = 0;
            ip[9] = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
            let l4_len = if tcp { 20 } else { 8 } + payload;
            let total = 20 + l4_len;
            ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip.extend_from_slice(&l4);
            ip.resize(total, 0x77);
            if tcp {
                ip[36..38].copy_from_slice(&csum.to_be_bytes());
                if len_field.is_some() {
                    ip[32] = 0x50;
                }
            } else {
                ip[26..28].copy_from_slice(&csum.to_be_bytes());
                let ulen = len_field.unwrap_or(l4_len as u16);
                ip[24..26].copy_from_slice(&ulen.to_be_bytes());
            }
            let t = Tuple::new(ip[9], target.0, target.2, target.1, target.3);
            let manip = if dst { Manip::Dst } else { Manip::Src };
            let mut a = ip.clone();
            let mut b = ip.clone();
            manip_pkt(&mut a, manip, &t);
            prop_assert!(manip_simple(&mut b, manip, &t));
            prop_assert_eq!(a, b);
        }
    }
    use fastables_packet::builder::{udp_frame, EthSpec, IpSpec, UdpSpec};
    use fastables_packet::parse::{ipv4_l4_checksum_ok, L3};
    use fastables_packet::{parse_frame, MacAddr};

    fn ip4(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a))
    }

    fn udp_dgram(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let f = udp_frame(
            &EthSpec {
                src: MacAddr([2, 0, 0, 0, 0, 1]),
                dst: MacAddr([2, 0, 0, 0, 0, 2]),
                vlan: None,
                pad: false,
            },
            &IpSpec {
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::from(dst),
                ttl: 64,
                ident: 1,
                ..IpSpec::default()
            },
            &UdpSpec {
                src_port: sport,
                dst_port: dport,
            },
            b"query",
        );
        f[14..].to_vec()
    }

    fn info_of(ip: &[u8]) -> Ipv4Info {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(ip);
        match parse_frame(&f).unwrap().l3 {
            L3::Ipv4(i) => i,
            _ => panic!("not ipv4"),
        }
    }

    #[test]
    fn snat_rewrite_keeps_checksums_valid() {
        let mut d = udp_dgram([172, 18, 0, 2], 33894, [8, 8, 8, 8], 53);
        let t = Tuple::new(
            IPPROTO_UDP,
            ip4([10, 0, 2, 15]),
            1024,
            ip4([8, 8, 8, 8]),
            53,
        );
        manip_pkt(&mut d, Manip::Src, &t);
        let i = info_of(&d);
        assert_eq!(i.src, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(rd16(&d, 20), 1024);
        assert!(ipv4_l4_checksum_ok(&d, &i));
        assert!(Ipv4Packet::new_checked(&d[..]).unwrap().verify_checksum());
    }

    #[test]
    fn zero_udp_checksum_stays_zero() {
        let mut d = udp_dgram([172, 18, 0, 2], 33894, [8, 8, 8, 8], 53);
        d[26] = 0;
        d[27] = 0;
        let t = Tuple::new(IPPROTO_UDP, 0, 0, ip4([192, 168, 0, 2]), 80);
        manip_pkt(&mut d, Manip::Dst, &t);
        assert_eq!((d[26], d[27]), (0, 0));
        assert_eq!(rd16(&d, 22), 80);
        assert_eq!(&d[16..20], &[192, 168, 0, 2]);
    }

    #[test]
    fn facts_read_the_quoted_tuple_of_an_icmp_error() {
        let inner = udp_dgram([10, 0, 2, 15], 33894, [8, 8, 8, 8], 53);
        let mut d = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 8, 8, 8, 8, 10, 0, 2, 15, 3, 3, 0, 0, 0, 0, 0,
            0,
        ];
        d.extend_from_slice(&inner[..28]);
        let n = d.len() as u16;
        d[2..4].copy_from_slice(&n.to_be_bytes());
        let c = fastables_packet::checksum::checksum(&d[..20]);
        d[10..12].copy_from_slice(&c.to_be_bytes());
        let i = info_of(&d);
        let f = facts(&i, &d, 20, false);
        assert_eq!(
            f.icmp.inner,
            Some(Tuple::new(
                IPPROTO_UDP,
                ip4([10, 0, 2, 15]),
                33894,
                ip4([8, 8, 8, 8]),
                53
            ))
        );
    }
}
