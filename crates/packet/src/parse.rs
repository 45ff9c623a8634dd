//! Whole-frame parsing: the one call the data plane makes per received frame.
//!
//! [`parse_frame`] reads Ethernet (one optional 802.1Q tag), then IPv4 or ARP,
//! then the first bytes of TCP/UDP/ICMP, into a small `Copy` struct. It
//! validates what the kernel validates in `ip_rcv` (version, IHL, header
//! checksum, total length) and nothing more: L4 checksums are left to
//! [`l4_checksum_ok`], L4 sanity (TCP data offset, UDP length) to conntrack and
//! the matches, which see the raw values here.

use std::net::Ipv4Addr;

use crate::arp::{ArpPacket, ArpRepr};
use crate::checksum;
use crate::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_VLAN};
use crate::icmp;
use crate::ipv4::{self, FLAG_DF, FLAG_MF, FRAG_OFFSET_MASK, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::rd16;

/// Why a frame (or a header inside it) was rejected. One variant per reason;
/// the data plane keeps one drop counter per variant (see [`ParseError::ALL`]
/// and [`ParseError::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    /// The buffer ends before a header does: Ethernet (14 bytes, 18 with an
    /// 802.1Q tag), ARP (28), IPv4 (20, or IHL*4), or the L4 header a view
    /// was asked for. The kernel counts the IPv4 cases as InHdrErrors/InTruncatedPkts.
    #[error("truncated header: the frame ends before the header does")]
    Truncated,
    /// The IPv4 version field is not 4 (kernel: IP_INHDR drop).
    #[error("IPv4 version field is not 4")]
    BadVersion,
    /// The IPv4 IHL is below 5 words (kernel: IP_INHDR drop).
    #[error("IPv4 header length (IHL) below 20 bytes")]
    BadIhl,
    /// The IPv4 total length is below the header length or beyond the frame
    /// (kernel: IP_INHDR resp. PKT_TOO_SMALL drop).
    #[error("IPv4 total length below the header length or beyond the frame")]
    BadTotalLen,
    /// The IPv4 header checksum is wrong (kernel: IP_CSUM drop, InCsumErrors).
    #[error("IPv4 header checksum mismatch")]
    BadHeaderChecksum,
    /// An ARP packet that is not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
    #[error("ARP packet is not Ethernet/IPv4")]
    BadArp,
    /// A TCP data offset below 5 words or beyond the segment.
    #[error("TCP data offset below 20 bytes or beyond the segment")]
    BadDataOffset,
    /// A UDP length field below 8 or beyond the IP payload.
    #[error("UDP length field below 8 or beyond the IP payload")]
    BadUdpLength,
    /// The quoted datagram was asked of an ICMP message that is not an error.
    #[error("ICMP message is not an error type (3, 4, 5, 11, 12)")]
    NotIcmpError,
}

impl ParseError {
    /// Every variant, in declaration order (index = [`ParseError::index`]).
    pub const ALL: [ParseError; 9] = [
        ParseError::Truncated,
        ParseError::BadVersion,
        ParseError::BadIhl,
        ParseError::BadTotalLen,
        ParseError::BadHeaderChecksum,
        ParseError::BadArp,
        ParseError::BadDataOffset,
        ParseError::BadUdpLength,
        ParseError::NotIcmpError,
    ];

    /// Dense index 0..ALL.len(), for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name, for counter and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            ParseError::Truncated => "truncated",
            ParseError::BadVersion => "bad_version",
            ParseError::BadIhl => "bad_ihl",
            ParseError::BadTotalLen => "bad_total_len",
            ParseError::BadHeaderChecksum => "bad_header_checksum",
            ParseError::BadArp => "bad_arp",
            ParseError::BadDataOffset => "bad_data_offset",
            ParseError::BadUdpLength => "bad_udp_length",
            ParseError::NotIcmpError => "not_icmp_error",
        }
    }
}

/// What a frame carries, after the Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// An IPv4 datagram with a valid header.
    Ipv4(Ipv4Info),
    /// An Ethernet/IPv4 ARP packet.
    Arp(ArpRepr),
    /// Any other EtherType (IPv6, a second VLAN tag, ...); see [`ParsedFrame::ethertype`].
    Other,
}

/// The transport header as far as it could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP with at least the 20-byte base header present.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags byte (see [`crate::tcp::flags`]).
        flags: u8,
        /// Data offset * 4 as found, NOT validated (may be < 20 or beyond the segment).
        header_len: u8,
    },
    /// UDP with the 8-byte header present.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Length field as found, NOT validated against the IP payload.
        len: u16,
    },
    /// ICMP with the 8-byte header present.
    Icmp {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
        /// Identifier (bytes 4..6; meaningful for [`icmp::has_ident`] types).
        ident: u16,
        /// Sequence (bytes 6..8; meaningful for [`icmp::has_ident`] types).
        seq: u16,
    },
    /// A non-first fragment (offset != 0): no transport header.
    Fragment,
    /// TCP/UDP/ICMP whose header is cut short by the IP total length.
    Truncated,
    /// Another protocol; its header is not read.
    Other,
}

/// The IPv4 header fields and transport summary of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Header length in bytes (IHL * 4).
    pub header_len: u8,
    /// Total length field (validated: header length ..= bytes present).
    pub total_len: u16,
    /// Protocol.
    pub protocol: u8,
    /// Type of service.
    pub tos: u8,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// "Don't fragment".
    pub dont_frag: bool,
    /// "More fragments".
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    /// Offset of the L4 header from the start of the frame.
    pub l4_offset: usize,
    /// The transport header summary.
    pub l4: L4,
}

impl Ipv4Info {
    /// True for any fragment (offset != 0 or MF).
    pub fn is_fragment(&self) -> bool {
        self.frag_offset != 0 || self.more_frags
    }

    /// True for a non-first fragment (`iptables -f`).
    pub fn is_non_first_fragment(&self) -> bool {
        self.frag_offset != 0
    }

    /// True when the TCP/UDP/ICMP header could be read completely (ports,
    /// type/code, flags): `PacketCtx::has_l4`.
    pub fn l4_complete(&self) -> bool {
        matches!(self.l4, L4::Tcp { .. } | L4::Udp { .. } | L4::Icmp { .. })
    }

    /// Source and destination ports for TCP/UDP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp {
                src_port, dst_port, ..
            } => Some((src_port, dst_port)),
            _ => None,
        }
    }

    /// The IP payload length (total length minus header length).
    pub fn payload_len(&self) -> usize {
        usize::from(self.total_len).saturating_sub(usize::from(self.header_len))
    }
}

/// A parsed frame: plain values, no borrow of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFrame {
    /// The 802.1Q VLAN id when tagged.
    pub vlan_id: Option<u16>,
    /// EtherType of the payload (after the VLAN tag when tagged).
    pub ethertype: u16,
    /// Offset of the L3 header: 14, or 18 when tagged.
    pub l3_offset: usize,
    /// The L3 content.
    pub l3: L3,
}

impl ParsedFrame {
    /// The IPv4 part, if the frame is IPv4.
    pub fn ipv4(&self) -> Option<&Ipv4Info> {
        match &self.l3 {
            L3::Ipv4(i) => Some(i),
            _ => None,
        }
    }

    /// Byte range of the IPv4 datagram in the frame (Ethernet padding excluded).
    pub fn ipv4_range(&self) -> Option<core::ops::Range<usize>> {
        self.ipv4()
            .map(|i| self.l3_offset..self.l3_offset + usize::from(i.total_len))
    }

    /// Byte range of the IP payload (L4 header and data) in the frame.
    pub fn l4_range(&self) -> Option<core::ops::Range<usize>> {
        self.ipv4()
            .map(|i| i.l4_offset..self.l3_offset + usize::from(i.total_len))
    }
}

/// Parse one received frame. Never panics, never allocates, constant work
/// apart from the IPv4 header checksum (at most 60 bytes).
///
/// Errors: [`ParseError::Truncated`] (Ethernet, VLAN tag, ARP or IPv4 header
/// cut short), [`ParseError::BadArp`], and for IPv4, in the kernel's order
/// (`ip_rcv_core`): Truncated (< 20 bytes), [`ParseError::BadVersion`] /
/// [`ParseError::BadIhl`], Truncated (< IHL*4), [`ParseError::BadHeaderChecksum`],
/// [`ParseError::BadTotalLen`]. Other EtherTypes are not errors ([`L3::Other`]);
/// neither are short or odd transport headers ([`L4::Truncated`], raw fields).
pub fn parse_frame(frame: &[u8]) -> Result<ParsedFrame, ParseError> {
    // Fixed-size views (`first_chunk`) let every field read below compile
    // without bounds checks.
    let Some(eth) = frame.first_chunk::<{ ethernet::HEADER_LEN }>() else {
        return Err(ParseError::Truncated);
    };
    let mut ethertype = rd16(eth, 12);
    let mut vlan_id = None;
    let mut l3_offset = ethernet::HEADER_LEN;
    if ethertype == ETHERTYPE_VLAN {
        let Some(tag) = frame.first_chunk::<{ ethernet::VLAN_HEADER_LEN }>() else {
            return Err(ParseError::Truncated);
        };
        vlan_id = Some(rd16(tag, 14) & 0x0fff);
        ethertype = rd16(tag, 16);
        l3_offset = ethernet::VLAN_HEADER_LEN;
    }
    let l3_bytes = frame.get(l3_offset..).unwrap_or(&[]);
    let l3 = match ethertype {
        ETHERTYPE_IPV4 => L3::Ipv4(parse_ipv4(l3_bytes, l3_offset)?),
        ETHERTYPE_ARP => L3::Arp(ArpRepr::parse(&ArpPacket::new_checked(l3_bytes)?)),
        _ => L3::Other,
    };
    Ok(ParsedFrame {
        vlan_id,
        ethertype,
        l3_offset,
        l3,
    })
}

/// [`parse_frame`] for the frames a router sees most: untagged IPv4 with
/// a 20-byte header. `Some` exactly when `parse_frame` would return
/// `Ok` with `L3::Ipv4` for such a frame, with the same [`Ipv4Info`];
/// `None` for every other frame (tagged, not IPv4, with options, or one
/// `parse_frame` rejects), which then needs `parse_frame`. Cheaper: no
/// VLAN or ARP branches, no `ParsedFrame` to build, the header checksum
/// summed as five words.
#[inline]
pub fn parse_ipv4_simple(frame: &[u8]) -> Option<Ipv4Info> {
    let f = frame.first_chunk::<34>()?;
    if f[12] != 0x08 || f[13] != 0x00 || f[14] != 0x45 {
        return None;
    }
    let h = f.last_chunk::<20>()?;
    let w = |i: usize| u32::from(rd16(h, i));
    let sum = w(0) + w(2) + w(4) + w(6) + w(8) + w(10) + w(12) + w(14) + w(16) + w(18);
    if checksum::fold(sum) != 0xffff {
        return None;
    }
    let total = usize::from(rd16(h, 2));
    let b = frame.get(ethernet::HEADER_LEN..)?;
    if total > b.len() || total < ipv4::MIN_HEADER_LEN {
        return None;
    }
    let ff = rd16(h, 6);
    let frag_offset = (ff & FRAG_OFFSET_MASK) << 3;
    let protocol = h[9];
    let l4 = if frag_offset != 0 {
        L4::Fragment
    } else {
        parse_l4(protocol, b.get(ipv4::MIN_HEADER_LEN..total).unwrap_or(&[]))
    };
    Some(ipv4_info(
        h,
        ipv4::MIN_HEADER_LEN,
        total,
        ethernet::HEADER_LEN,
        l4,
    ))
}

/// The [`Ipv4Info`] of the header `h` (its first 20 bytes) of `hl` bytes,
/// `total` long, at `l3_offset` in the frame.
#[inline(always)]
fn ipv4_info(h: &[u8; 20], hl: usize, total: usize, l3_offset: usize, l4: L4) -> Ipv4Info {
    let ff = rd16(h, 6);
    Ipv4Info {
        header_len: hl as u8,
        total_len: total as u16,
        protocol: h[9],
        tos: h[1],
        ttl: h[8],
        ident: rd16(h, 4),
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        dont_frag: ff & FLAG_DF != 0,
        more_frags: ff & FLAG_MF != 0,
        frag_offset: (ff & FRAG_OFFSET_MASK) << 3,
        l4_offset: l3_offset + hl,
        l4,
    }
}

#[inline]
fn parse_ipv4(b: &[u8], l3_offset: usize) -> Result<Ipv4Info, ParseError> {
    let Some(h) = b.first_chunk::<{ ipv4::MIN_HEADER_LEN }>() else {
        return Err(ParseError::Truncated);
    };
    let vi = h[0];
    if vi >> 4 != 4 {
        return Err(ParseError::BadVersion);
    }
    let hl = usize::from(vi & 0x0f) * 4;
    if hl < ipv4::MIN_HEADER_LEN {
        return Err(ParseError::BadIhl);
    }
    let header = b.get(..hl).ok_or(ParseError::Truncated)?;
    if !checksum::verify(header) {
        return Err(ParseError::BadHeaderChecksum);
    }
    let total = usize::from(rd16(h, 2));
    if total > b.len() || total < hl {
        return Err(ParseError::BadTotalLen);
    }
    let ff = rd16(h, 6);
    let frag_offset = (ff & FRAG_OFFSET_MASK) << 3;
    let protocol = h[9];
    let seg = b.get(hl..total).unwrap_or(&[]);
    let l4 = if frag_offset != 0 {
        L4::Fragment
    } else {
        parse_l4(protocol, seg)
    };
    Ok(ipv4_info(h, hl, total, l3_offset, l4))
}

#[inline]
fn parse_l4(protocol: u8, seg: &[u8]) -> L4 {
    match protocol {
        PROTO_TCP => match seg.first_chunk::<{ crate::tcp::MIN_HEADER_LEN }>() {
            Some(t) => L4::Tcp {
                src_port: rd16(t, 0),
                dst_port: rd16(t, 2),
                flags: t[crate::tcp::field::FLAGS],
                header_len: (t[crate::tcp::field::DATA_OFFSET] >> 4) * 4,
            },
            None => L4::Truncated,
        },
        PROTO_UDP => match seg.first_chunk::<{ crate::udp::HEADER_LEN }>() {
            Some(u) => L4::Udp {
                src_port: rd16(u, 0),
                dst_port: rd16(u, 2),
                len: rd16(u, 4),
            },
            None => L4::Truncated,
        },
        PROTO_ICMP => match seg.first_chunk::<{ icmp::HEADER_LEN }>() {
            Some(i) => L4::Icmp {
                icmp_type: i[0],
                code: i[1],
                ident: rd16(i, 4),
                seq: rd16(i, 6),
            },
            None => L4::Truncated,
        },
        _ => L4::Other,
    }
}

/// The datagram quoted by an ICMP error, as far as it is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedIpv4 {
    /// Offset of the quoted IPv4 header from the start of the frame.
    pub offset: usize,
    /// Quoted header length (IHL * 4).
    pub header_len: u8,
    /// Quoted total length (may exceed what is present).
    pub total_len: u16,
    /// Quoted protocol.
    pub protocol: u8,
    /// Quoted source (the original sender: the reverse direction of this error).
    pub src: Ipv4Addr,
    /// Quoted destination.
    pub dst: Ipv4Addr,
    /// Quoted fragment offset in bytes (non-zero: no ports).
    pub frag_offset: u16,
    /// The first 8 bytes of the quoted payload.
    pub l4_head: [u8; 8],
}

impl QuotedIpv4 {
    /// Ports of a quoted TCP/UDP header (first fragment only).
    pub fn ports(&self) -> Option<(u16, u16)> {
        (matches!(self.protocol, PROTO_TCP | PROTO_UDP) && self.frag_offset == 0)
            .then(|| (rd16(&self.l4_head, 0), rd16(&self.l4_head, 2)))
    }

    /// Type, code and identifier of a quoted ICMP message (first fragment only).
    pub fn icmp(&self) -> Option<(u8, u8, u16)> {
        (self.protocol == PROTO_ICMP && self.frag_offset == 0)
            .then(|| (self.l4_head[0], self.l4_head[1], rd16(&self.l4_head, 4)))
    }
}

/// For a frame that [`parse_frame`] found to be an ICMP error: the quoted
/// datagram (header checked leniently, see [`ipv4::Ipv4Packet::new_quoted`];
/// its checksum is not verified, as in conntrack). Errors:
/// [`ParseError::NotIcmpError`] when the frame is not a complete ICMP error,
/// or the quoted header's error.
pub fn parse_icmp_quoted(frame: &[u8], parsed: &ParsedFrame) -> Result<QuotedIpv4, ParseError> {
    let info = parsed.ipv4().ok_or(ParseError::NotIcmpError)?;
    match info.l4 {
        L4::Icmp { icmp_type, .. } if icmp::is_error(icmp_type) => {}
        _ => return Err(ParseError::NotIcmpError),
    }
    let end = parsed.l3_offset + usize::from(info.total_len);
    let start = info.l4_offset + icmp::HEADER_LEN;
    let data = frame.get(start..end).ok_or(ParseError::Truncated)?;
    let q = ipv4::Ipv4Packet::new_quoted(data)?;
    let mut l4_head = [0u8; 8];
    let h = q.quoted_l4_head();
    if h.len() == 8 {
        l4_head.copy_from_slice(h);
    }
    Ok(QuotedIpv4 {
        offset: start,
        header_len: q.header_len() as u8,
        total_len: q.total_len(),
        protocol: q.protocol(),
        src: q.src(),
        dst: q.dst(),
        frag_offset: q.frag_offset(),
        l4_head,
    })
}

/// The set of TCP option kinds present (`PacketCtx::tcp_options`: bit N of
/// word N/64 for kind N), or `None` when the frame has no complete TCP header
/// or its data offset is below 5 words or beyond the segment (the kernel's
/// `tcp_find_option` then hot-drops). Malformed options end the scan.
pub fn tcp_option_kinds(frame: &[u8], parsed: &ParsedFrame) -> Option<[u64; 4]> {
    let info = parsed.ipv4()?;
    if !matches!(info.l4, L4::Tcp { .. }) {
        return None;
    }
    let seg = frame.get(parsed.l4_range()?)?;
    let tcp = crate::tcp::TcpPacket::new_checked(seg).ok()?;
    Some(tcp.option_kinds())
}

/// Verify the TCP/UDP/ICMP checksum of a parsed IPv4 frame (what conntrack
/// does on PREROUTING with `nf_conntrack_checksum=1`). Returns `true` when the
/// checksum is correct or cannot be checked: any fragment (conntrack sees
/// reassembled datagrams; we do not reassemble), a zero UDP checksum, other
/// protocols, non-IPv4 frames. Returns `false` on a mismatch or when the L4
/// header is cut short.
pub fn l4_checksum_ok(frame: &[u8], parsed: &ParsedFrame) -> bool {
    match (parsed.ipv4(), frame.get(parsed.l3_offset..)) {
        (Some(info), Some(datagram)) => ipv4_l4_checksum_ok(datagram, info),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// [`l4_checksum_ok`] for a datagram that starts at the IPv4 header (no
/// Ethernet header), described by `info` (from [`parse_frame`] or an
/// equivalent parse of the same bytes).
pub fn ipv4_l4_checksum_ok(datagram: &[u8], info: &Ipv4Info) -> bool {
    if info.is_fragment() {
        return true;
    }
    let (hl, total) = (usize::from(info.header_len), usize::from(info.total_len));
    let Some(seg) = datagram.get(hl..total) else {
        return false;
    };
    match info.l4 {
        L4::Tcp { .. } => {
            let s = checksum::combine(
                checksum::pseudo_header_sum(info.src, info.dst, PROTO_TCP, seg.len() as u32),
                checksum::sum(seg),
            );
            checksum::fold(s) == 0xffff
        }
        L4::Udp { .. } => {
            if rd16(seg, crate::udp::field::CHECKSUM.start) == 0 {
                return true;
            }
            // As conntrack's udp_error: the whole IP payload, pseudo-header length
            // = IP payload length (a length field mismatch is a separate check).
            let s = checksum::combine(
                checksum::pseudo_header_sum(info.src, info.dst, PROTO_UDP, seg.len() as u32),
                checksum::sum(seg),
            );
            checksum::fold(s) == 0xffff
        }
        L4::Icmp { .. } => checksum::verify(seg),
        L4::Truncated => false,
        L4::Fragment | L4::Other => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{self, EthSpec, IpSpec, TcpSpec, UdpSpec};
    use crate::fixtures::*;
    use crate::tcp::flags;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn captured_tcp_syn() {
        let p = parse_frame(&TCP_SYN).unwrap();
        assert_eq!(p.ethertype, ETHERTYPE_IPV4);
        assert_eq!(p.l3_offset, 14);
        assert_eq!(p.vlan_id, None);
        let i = p.ipv4().unwrap();
        assert_eq!((i.src, i.dst, i.protocol, i.ttl), (A, B, PROTO_TCP, 64));
        assert_eq!((i.header_len, i.total_len, i.ident), (20, 60, 21937));
        assert!(i.dont_frag && !i.is_fragment());
        assert_eq!(i.l4_offset, 34);
        assert_eq!(
            i.l4,
            L4::Tcp {
                src_port: 60358,
                dst_port: 8080,
                flags: flags::SYN,
                header_len: 40
            }
        );
        assert!(i.l4_complete());
        assert_eq!(i.ports(), Some((60358, 8080)));
        assert!(l4_checksum_ok(&TCP_SYN, &p));
        assert_eq!(p.l4_range(), Some(34..74));
    }

    #[test]
    fn captured_tcp_data_and_ack() {
        let p = parse_frame(&TCP_PSH_DATA).unwrap();
        assert!(matches!(p.ipv4().unwrap().l4, L4::Tcp { flags: 0x18, .. }));
        assert!(l4_checksum_ok(&TCP_PSH_DATA, &p));
        let p = parse_frame(&TCP_ACK).unwrap();
        assert!(l4_checksum_ok(&TCP_ACK, &p));
        let mut bad = TCP_ACK;
        bad[60] ^= 1;
        assert!(!l4_checksum_ok(&bad, &parse_frame(&bad).unwrap()));
    }

    #[test]
    fn captured_udp() {
        let p = parse_frame(&UDP_DNS).unwrap();
        let i = p.ipv4().unwrap();
        assert_eq!(
            i.l4,
            L4::Udp {
                src_port: 33894,
                dst_port: 53,
                len: 12
            }
        );
        assert!(l4_checksum_ok(&UDP_DNS, &p));
        let mut z = UDP_DNS;
        z[40] = 0;
        z[41] = 0;
        assert!(l4_checksum_ok(&z, &parse_frame(&z).unwrap()));
        z[41] = 1;
        assert!(!l4_checksum_ok(&z, &parse_frame(&z).unwrap()));
    }

    #[test]
    fn captured_icmp() {
        let p = parse_frame(&ICMP_ECHO_REQUEST).unwrap();
        assert_eq!(
            p.ipv4().unwrap().l4,
            L4::Icmp {
                icmp_type: 8,
                code: 0,
                ident: 0x1234,
                seq: 1
            }
        );
        assert!(l4_checksum_ok(&ICMP_ECHO_REQUEST, &p));
        let p = parse_frame(&ICMP_ECHO_REPLY).unwrap();
        assert!(l4_checksum_ok(&ICMP_ECHO_REPLY, &p));

        let p = parse_frame(&ICMP_PORT_UNREACH).unwrap();
        let i = p.ipv4().unwrap();
        assert_eq!(i.tos, 0xc0);
        assert!(matches!(
            i.l4,
            L4::Icmp {
                icmp_type: 3,
                code: 3,
                ..
            }
        ));
        assert!(l4_checksum_ok(&ICMP_PORT_UNREACH, &p));
        let q = parse_icmp_quoted(&ICMP_PORT_UNREACH, &p).unwrap();
        assert_eq!((q.src, q.dst, q.protocol), (A, B, PROTO_UDP));
        assert_eq!(q.offset, 42);
        assert_eq!(q.ports(), Some((33894, 53)));
        assert_eq!(q.icmp(), None);
        assert_eq!(q.total_len, 32);
    }

    #[test]
    fn captured_arp_and_other() {
        let p = parse_frame(&ARP_REQUEST).unwrap();
        assert!(matches!(p.l3, L3::Arp(a) if a.tpa == B && a.spa == A));
        assert!(l4_checksum_ok(&ARP_REQUEST, &p));
        let mut v6 = TCP_SYN;
        v6[12] = 0x86;
        v6[13] = 0xdd;
        let p = parse_frame(&v6).unwrap();
        assert_eq!(p.l3, L3::Other);
        assert_eq!(p.ethertype, 0x86dd);
        let mut bad = ARP_REQUEST;
        bad[19] = 16; // plen
        assert_eq!(parse_frame(&bad).unwrap_err(), ParseError::BadArp);
        assert_eq!(
            parse_frame(&ARP_REQUEST[..41]).unwrap_err(),
            ParseError::Truncated
        );
    }

    #[test]
    fn ipv4_errors_in_kernel_order() {
        let f = TCP_SYN;
        assert_eq!(parse_frame(&f[..13]).unwrap_err(), ParseError::Truncated);
        assert_eq!(parse_frame(&f[..33]).unwrap_err(), ParseError::Truncated);
        let mut b = f;
        b[14] = 0x55;
        assert_eq!(parse_frame(&b).unwrap_err(), ParseError::BadVersion);
        b[14] = 0x43;
        assert_eq!(parse_frame(&b).unwrap_err(), ParseError::BadIhl);
        let mut b = f;
        b[24] ^= 0xff;
        assert_eq!(parse_frame(&b).unwrap_err(), ParseError::BadHeaderChecksum);
        // Bad checksum wins over a bad total length, as in ip_rcv_core.
        b[17] = 0xff;
        assert_eq!(parse_frame(&b).unwrap_err(), ParseError::BadHeaderChecksum);
        // Total length beyond the frame.
        let too_long = builder::tcp_frame(
            &EthSpec::default(),
            &IpSpec::default(),
            &TcpSpec::default(),
            b"",
        );
        assert_eq!(
            parse_frame(&too_long[..too_long.len() - 1]).unwrap_err(),
            ParseError::BadTotalLen
        );
        // Total length below the header length, checksum fixed up.
        let mut short = too_long.clone();
        short[16] = 0;
        short[17] = 19;
        fix_ip_checksum(&mut short[14..34]);
        assert_eq!(parse_frame(&short).unwrap_err(), ParseError::BadTotalLen);
    }

    fn fix_ip_checksum(h: &mut [u8]) {
        h[10] = 0;
        h[11] = 0;
        let c = checksum::checksum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn padding_and_vlan() {
        let f = builder::udp_frame(
            &EthSpec {
                vlan: Some(100),
                pad: true,
                ..EthSpec::default()
            },
            &IpSpec::default(),
            &UdpSpec::default(),
            b"",
        );
        assert_eq!(f.len(), 60);
        let p = parse_frame(&f).unwrap();
        assert_eq!(p.vlan_id, Some(100));
        assert_eq!(p.l3_offset, 18);
        assert_eq!(p.ipv4().unwrap().l4_offset, 38);
        assert_eq!(p.ipv4_range(), Some(18..46));
        assert!(l4_checksum_ok(&f, &p));
        assert_eq!(parse_frame(&f[..17]).unwrap_err(), ParseError::Truncated);
    }

    #[test]
    fn fragments_and_truncated_l4() {
        let ip = IpSpec {
            frag_offset: 1480,
            more_frags: false,
            dont_frag: false,
            ..IpSpec::default()
        };
        let f = builder::ipv4_frame(
            &EthSpec::default(),
            &ip,
            PROTO_UDP,
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        let p = parse_frame(&f).unwrap();
        let i = p.ipv4().unwrap();
        assert_eq!(i.l4, L4::Fragment);
        assert!(i.is_non_first_fragment() && i.is_fragment() && !i.l4_complete());
        assert_eq!(i.ports(), None);
        assert!(l4_checksum_ok(&f, &p));

        // First fragment: ports are read.
        let ip = IpSpec {
            more_frags: true,
            dont_frag: false,
            ..IpSpec::default()
        };
        let f = builder::udp_frame(&EthSpec::default(), &ip, &UdpSpec::default(), &[0; 16]);
        let i = *parse_frame(&f).unwrap().ipv4().unwrap();
        assert!(i.is_fragment() && !i.is_non_first_fragment());
        assert_eq!(i.ports(), Some((33894, 53)));

        // TCP header cut by the total length (padding after it does not count).
        let f = builder::ipv4_frame(
            &EthSpec {
                pad: true,
                ..EthSpec::default()
            },
            &IpSpec::default(),
            PROTO_TCP,
            &[0; 19],
        );
        let p = parse_frame(&f).unwrap();
        assert_eq!(p.ipv4().unwrap().l4, L4::Truncated);
        assert!(!l4_checksum_ok(&f, &p));
        for proto in [PROTO_UDP, PROTO_ICMP] {
            let f = builder::ipv4_frame(&EthSpec::default(), &IpSpec::default(), proto, &[0; 7]);
            assert_eq!(parse_frame(&f).unwrap().ipv4().unwrap().l4, L4::Truncated);
        }
        let f = builder::ipv4_frame(&EthSpec::default(), &IpSpec::default(), 47, &[]);
        assert_eq!(parse_frame(&f).unwrap().ipv4().unwrap().l4, L4::Other);
    }

    #[test]
    fn option_kinds_of_captured_syn() {
        let p = parse_frame(&TCP_SYN).unwrap();
        let k = tcp_option_kinds(&TCP_SYN, &p).unwrap();
        assert_eq!(
            k,
            [
                (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 8),
                0,
                0,
                0
            ]
        );
        let p = parse_frame(&UDP_DNS).unwrap();
        assert_eq!(tcp_option_kinds(&UDP_DNS, &p), None);
    }

    #[test]
    fn tcp_header_len_reported_raw() {
        let mut f = builder::tcp_frame(
            &EthSpec::default(),
            &IpSpec::default(),
            &TcpSpec::default(),
            b"",
        );
        f[46] = 0x30; // data offset 3 words: invalid, but ports and flags are readable
        let p = parse_frame(&f).unwrap();
        assert!(matches!(
            p.ipv4().unwrap().l4,
            L4::Tcp { header_len: 12, .. }
        ));
    }

    #[test]
    fn datagram_checksum_variant() {
        let p = parse_frame(&TCP_SYN).unwrap();
        let i = p.ipv4().unwrap();
        assert!(ipv4_l4_checksum_ok(&TCP_SYN[14..], i));
        assert!(!ipv4_l4_checksum_ok(&TCP_SYN[14..40], i));
        let mut bad = TCP_SYN;
        bad[73] ^= 0x10;
        assert!(!ipv4_l4_checksum_ok(&bad[14..], i));
    }

    #[test]
    fn error_names_and_indexes() {
        for (i, e) in ParseError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert!(!e.name().is_empty());
            assert!(!e.to_string().is_empty());
        }
    }
}
