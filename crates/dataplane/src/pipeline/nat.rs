//! NAT in the pipeline: the nat table for a connection's first packet (the
//! binding of its NAT target, else the null binding), and the packet
//! rewrites of `nf_nat_manip_pkt` and `nf_nat_icmp_reply_translation`
//! (incremental checksums) for every packet of a connection with a
//! binding: the destination before routing (PREROUTING, OUTPUT), the
//! source as the packet leaves (POSTROUTING, INPUT). No allocation.

use std::net::Ipv4Addr;

use fastables_conntrack::{status, CtState, Dir, Entry, Manip, NatRange, TableConfig, Tuple};
use fastables_packet::icmp::{self as picmp, IcmpPacket, QuotedEnd};
use fastables_packet::ipv4::{self, Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use fastables_packet::tcp::TcpPacket;
use fastables_packet::udp::UdpPacket;
use fastables_packet::IfIndex;
use fastables_packet::{read_be16, read_be32};
use fastables_rules::model::{Hook, NatFlags, PortRange, RejectWith, Table, Target};

use super::conntrack::{ct_ctx, Ct};
use super::pkt::Pkt;
use super::tables::Outcome;
use super::Pipeline;
use crate::drop::DropReason;
use fastables_config::ConntrackConfig;

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
        PROTO_TCP => {
            if let Ok(mut t) = TcpPacket::new_checked(l4) {
                t.update_pseudo_addr(old, new);
                match manip {
                    Manip::Src => t.set_src_port(port),
                    Manip::Dst => t.set_dst_port(port),
                }
            }
        }
        PROTO_UDP => {
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
        PROTO_ICMP => {
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
    use fastables_packet::{tcp, udp};
    use ipv4::field;
    let rd16 = |b: &[u8], at: usize| read_be16(b, at).unwrap_or(0);
    let rd32 = |b: &[u8], at: usize| read_be32(b, at).unwrap_or(0);
    #[inline(always)]
    fn wr<const N: usize>(b: &mut [u8; N], at: usize, v: u16) {
        let [hi, lo] = v.to_be_bytes();
        b[at] = hi;
        b[at + 1] = lo;
    }
    let len = ip.len();
    let (head, l4) = ip.split_at_mut(ipv4::MIN_HEADER_LEN.min(len));
    let Some(h) = head.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>() else {
        return false;
    };
    let total = usize::from(rd16(h, field::TOTAL_LEN.start));
    // Version 4, IHL 5; neither MF nor a fragment offset.
    if h[field::VER_IHL] != 0x45
        || rd16(h, field::FLAGS_FRAG.start) & (ipv4::FLAG_MF | ipv4::FRAG_OFFSET_MASK) != 0
        || total > len
    {
        return false;
    }
    let proto = h[field::PROTOCOL];
    let (at, new, port, port_at) = match manip {
        Manip::Src => (field::SRC.start, target.src, target.sport, 0),
        Manip::Dst => (field::DST.start, target.dst, target.dport, 2),
    };
    let old = rd32(h, at);
    let ip_csum = cs::update32(rd16(h, field::CHECKSUM.start), old, new);
    wr(h, at, (new >> 16) as u16);
    wr(h, at + 2, new as u16);
    wr(h, field::CHECKSUM.start, ip_csum);
    let l4_len = total - ipv4::MIN_HEADER_LEN;
    match proto {
        PROTO_TCP => {
            // TcpPacket::new_checked: the base header, a data offset inside.
            let Some(t) = l4.first_chunk_mut::<{ tcp::MIN_HEADER_LEN }>() else {
                return true;
            };
            let hl = usize::from(t[tcp::field::DATA_OFFSET] >> 4) * 4;
            if l4_len < tcp::MIN_HEADER_LEN || hl < tcp::MIN_HEADER_LEN || hl > l4_len {
                return true;
            }
            let sum = tcp::field::CHECKSUM.start;
            let c = cs::update32(rd16(t, sum), old, new);
            let c = cs::update16(c, rd16(t, port_at), port);
            wr(t, port_at, port);
            wr(t, sum, c);
        }
        PROTO_UDP => {
            // UdpPacket::new_checked: the header, a length field inside.
            let Some(u) = l4.first_chunk_mut::<{ udp::HEADER_LEN }>() else {
                return true;
            };
            let ulen = usize::from(rd16(u, udp::field::LENGTH.start));
            if l4_len < udp::HEADER_LEN || ulen < udp::HEADER_LEN || ulen > l4_len {
                return true;
            }
            let sum = udp::field::CHECKSUM.start;
            let c = cs::udp_update32(rd16(u, sum), old, new);
            let c = cs::udp_update16(c, rd16(u, port_at), port);
            wr(u, port_at, port);
            wr(u, sum, c);
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
    let (hl, total) = match Ipv4Packet::new_checked(&*ip) {
        Ok(p) => {
            if p.frag_offset() != 0 {
                return true;
            }
            (p.header_len(), usize::from(p.total_len()))
        }
        Err(_) => return false,
    };
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
        let port = if other.proto == PROTO_ICMP {
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

impl Pipeline {
    /// The nat table of `hook` for a NEW connection: the range of the NAT
    /// target that fired, else the null binding (`None` for a packet that
    /// is not NEW). `route`: the output device, next hop and MTU, for
    /// MASQUERADE; REDIRECT uses the input device. The error carries a
    /// REJECT's kind.
    #[inline(always)]
    pub(super) fn nat_rules(
        &mut self,
        now_ns: u64,
        hook: Hook,
        pkt: &mut Pkt,
        route: Option<(IfIndex, u32, u16)>,
        manip: Manip,
    ) -> Result<Option<NatRange>, (DropReason, Option<RejectWith>)> {
        if !matches!(pkt.ct, Ct::New(_)) {
            return Ok(None);
        }
        self.nat_rules_new(now_ns, hook, pkt, route, manip)
    }

    /// [`Pipeline::nat_rules`] for a NEW connection.
    #[inline(never)]
    fn nat_rules_new(
        &mut self,
        now_ns: u64,
        hook: Hook,
        pkt: &mut Pkt,
        route: Option<(IfIndex, u32, u16)>,
        manip: Manip,
    ) -> Result<Option<NatRange>, (DropReason, Option<RejectWith>)> {
        let Ct::New(nc) = &pkt.ct else {
            return Ok(None);
        };
        let orig_src = nc.entry.orig().src;
        let null = match manip {
            Manip::Src => NatRange::null_binding(nc.entry.reply().dst),
            Manip::Dst => NatRange::null_binding(nc.entry.reply().src),
        };
        let mtu = route.map(|r| r.2);
        let range = match self.run_table(now_ns, Table::Nat, hook, pkt, mtu) {
            Outcome::Continue => null,
            Outcome::Drop(r) => return Err((r, None)),
            Outcome::Reject(rw) => return Err((DropReason::Rejected, Some(rw))),
            Outcome::Nat(id) => {
                let target = self.tables.rules.target(id);
                let addr = match target {
                    Target::Masquerade { .. } => {
                        route.and_then(|(dev, nh, _)| self.ifs.select_addr(dev, nh))
                    }
                    Target::Redirect { .. } => {
                        let in_if = pkt.ctx.in_if;
                        in_if
                            .and_then(|i| self.ifs.get(i))
                            .and_then(|i| i.primaries().next().map(|a| a.addr))
                            // OUTPUT: the loopback address.
                            .or(in_if.is_none().then_some(0x7f00_0001))
                    }
                    _ => None,
                };
                match range_of(target, addr) {
                    Some(r) => r,
                    None => return Err((DropReason::NatNoAddress, None)),
                }
            }
        };
        if manip == Manip::Src {
            // For the next bursts' lookups ahead (`CtTable::prefetch_new`).
            self.ct.last_snat = (range.flags & NatRange::MAP_IPS != 0
                && range.min_addr != orig_src)
                .then_some(range.min_addr);
        }
        Ok(Some(range))
    }

    /// NAT of the destination for a NEW connection in PREROUTING/OUTPUT
    /// (`range` from [`Pipeline::nat_rules`]), then the packet rewrite of
    /// the destination for any tracked packet. Refreshes `pkt.ctx`.
    #[inline(always)]
    pub(super) fn nat_dst(&mut self, now_ns: u64, pkt: &mut Pkt, range: Option<NatRange>) {
        if let (Ct::New(_), Some(r)) = (&pkt.ct, range) {
            self.dnat_setup(now_ns, pkt, &r);
        }
        self.nat_packet(pkt, Manip::Dst);
    }

    /// The destination NAT binding of a NEW connection.
    #[inline(never)]
    fn dnat_setup(&mut self, now_ns: u64, pkt: &mut Pkt, r: &NatRange) {
        if let Ct::New(nc) = &mut pkt.ct {
            if let Some(t) = self.ct.table.as_mut() {
                t.nat_setup(nc, r, Manip::Dst, now_ns);
            }
            pkt.ctx.ct = ct_ctx(&nc.entry, CtState::New);
        }
    }

    /// Confirms a NEW connection (with its source binding `snat`) as the
    /// packet leaves (POSTROUTING, INPUT), then rewrites the packet's
    /// source.
    #[inline(always)]
    pub(super) fn confirm_and_snat(
        &mut self,
        now_ns: u64,
        pkt: &mut Pkt,
        snat: Option<NatRange>,
    ) -> Result<(), DropReason> {
        if let Ct::New(_) = pkt.ct {
            if !self.confirm(now_ns, &mut pkt.ct, snat)? {
                return Ok(());
            }
        }
        self.nat_packet(pkt, Manip::Src);
        Ok(())
    }

    /// `nf_nat_packet` / `nf_nat_icmp_reply_translation` for `manip` on
    /// the datagram; the context follows the rewrite. Untracked packets
    /// and connections without this manip return here.
    #[inline(always)]
    fn nat_packet(&mut self, pkt: &mut Pkt, manip: Manip) {
        match pkt.ct {
            Ct::None => return,
            Ct::Conn { id, dir } => match self.ct.table.as_ref().and_then(|t| t.entry(id)) {
                Some(e) if needs_manip(e, dir, manip) => {}
                _ => return,
            },
            _ => {}
        }
        self.nat_rewrite(pkt, manip);
    }

    /// [`Pipeline::nat_packet`] past its early returns.
    #[inline(never)]
    fn nat_rewrite(&mut self, pkt: &mut Pkt, manip: Manip) {
        let ip_len = pkt.ip_len();
        let Some(ip) = pkt
            .buf
            .get_mut(super::pkt::ETH_LEN..super::pkt::ETH_LEN + ip_len)
        else {
            return;
        };
        let changed = match pkt.ct {
            Ct::None => false,
            Ct::Related { id, dir } => match self.ct.table.as_ref().and_then(|t| t.entry(id)) {
                Some(e) if needs_manip(e, dir, manip) => icmp_reply_translation(ip, e, dir, manip),
                _ => false,
            },
            _ => {
                let Some((e, dir, _)) = self.ct.entry(&pkt.ct) else {
                    return;
                };
                if needs_manip(e, dir, manip) {
                    let target = e.nat_target(dir);
                    manip_pkt(ip, manip, &target);
                    true
                } else {
                    false
                }
            }
        };
        if changed {
            let ctx = &mut pkt.ctx;
            let Ok(p) = Ipv4Packet::new_checked(&*ip) else {
                return;
            };
            ctx.src = u32::from(p.src());
            ctx.dst = u32::from(p.dst());
            if matches!(ctx.proto, PROTO_TCP | PROTO_UDP) && ctx.has_l4 && !ctx.fragment {
                // TCP and UDP alike: the ports are the first two fields.
                let l4 = p.payload();
                ctx.sport = read_be16(l4, 0).unwrap_or(0);
                ctx.dport = read_be16(l4, 2).unwrap_or(0);
            }
            if self.tables.needs.addrtype {
                ctx.src_type = self.ifs.addr_type(ctx.src);
                ctx.dst_type = self.ifs.addr_type(ctx.dst);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
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
            ip[9] = if tcp { PROTO_TCP } else { PROTO_UDP };
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
    use fastables_packet::parse::{ipv4_l4_checksum_ok, Ipv4Info, L3};
    use fastables_packet::{parse_frame, MacAddr};

    pub(in crate::pipeline) fn ip4(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a))
    }

    /// A UDP datagram (from its IP header) carrying a DNS-like query.
    pub(in crate::pipeline) fn udp_dgram(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
    ) -> Vec<u8> {
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

    /// The parse of the datagram `ip`.
    pub(in crate::pipeline) fn info_of(ip: &[u8]) -> Ipv4Info {
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
        let t = Tuple::new(PROTO_UDP, ip4([10, 0, 2, 15]), 1024, ip4([8, 8, 8, 8]), 53);
        manip_pkt(&mut d, Manip::Src, &t);
        let i = info_of(&d);
        assert_eq!(i.src, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(read_be16(&d, 20), Some(1024));
        assert!(ipv4_l4_checksum_ok(&d, &i));
        assert!(Ipv4Packet::new_checked(&d[..]).unwrap().verify_checksum());
    }

    #[test]
    fn zero_udp_checksum_stays_zero() {
        let mut d = udp_dgram([172, 18, 0, 2], 33894, [8, 8, 8, 8], 53);
        d[26] = 0;
        d[27] = 0;
        let t = Tuple::new(PROTO_UDP, 0, 0, ip4([192, 168, 0, 2]), 80);
        manip_pkt(&mut d, Manip::Dst, &t);
        assert_eq!((d[26], d[27]), (0, 0));
        assert_eq!(read_be16(&d, 22), Some(80));
        assert_eq!(&d[16..20], &[192, 168, 0, 2]);
    }
}
