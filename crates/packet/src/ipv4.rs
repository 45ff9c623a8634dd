//! IPv4 headers (RFC 791), with options.

use std::net::Ipv4Addr;

use crate::checksum;
use crate::parse::ParseError;
use crate::{need, rd16, rd8, wr16, wr8, EmitError};

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Length of an IPv4 header with the maximum 40 bytes of options.
pub const MAX_HEADER_LEN: usize = 60;
/// Bytes of the quoted datagram's payload that an ICMP error must carry (RFC 792).
pub const QUOTED_PAYLOAD_MIN: usize = 8;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of SCTP (ports where TCP and UDP have them).
pub const PROTO_SCTP: u8 = 132;
/// IP protocol number of UDP-Lite (ports where UDP has them).
pub const PROTO_UDPLITE: u8 = 136;

/// "Don't fragment" bit in the flags/fragment-offset word.
pub const FLAG_DF: u16 = 0x4000;
/// "More fragments" bit in the flags/fragment-offset word.
pub const FLAG_MF: u16 = 0x2000;
/// Mask of the fragment offset (in 8-byte units) in the flags/fragment-offset word.
pub const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// The netmask of a prefix length as a host-order u32 (`/24` is
/// `0xffff_ff00`); lengths above 32 count as 32.
#[inline]
pub const fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else if len >= 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - len as u32)
    }
}

/// Field offsets of the IPv4 header.
pub mod field {
    use crate::Field;
    /// Version (high nibble) and IHL (low nibble, in 32-bit words).
    pub const VER_IHL: usize = 0;
    /// Type of service (DSCP + ECN).
    pub const TOS: usize = 1;
    /// Total length of the datagram.
    pub const TOTAL_LEN: Field = 2..4;
    /// Identification.
    pub const IDENT: Field = 4..6;
    /// Flags (reserved, DF, MF) and fragment offset.
    pub const FLAGS_FRAG: Field = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Field = 10..12;
    /// Source address.
    pub const SRC: Field = 12..16;
    /// Destination address.
    pub const DST: Field = 16..20;
    /// Options, up to the IHL.
    pub const OPTIONS_START: usize = 20;
}

/// A view of an IPv4 header and its datagram.
///
/// After [`Ipv4Packet::new_checked`] (or [`Ipv4Packet::new_quoted`]) succeeds,
/// no accessor or setter panics.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr_at(b: &[u8], f: crate::Field) -> Ipv4Addr {
    match b.get(f) {
        Some(s) => Ipv4Addr::new(s[0], s[1], s[2], s[3]),
        None => Ipv4Addr::UNSPECIFIED,
    }
}

/// Checks shared by both constructors: base header present, version, IHL,
/// header within the buffer, total length not below the header length.
/// Order as in the kernel's `ip_rcv_core`.
fn check_header(b: &[u8]) -> Result<usize, ParseError> {
    if b.len() < MIN_HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let vi = b[field::VER_IHL];
    if vi >> 4 != 4 {
        return Err(ParseError::BadVersion);
    }
    let hl = usize::from(vi & 0x0f) * 4;
    if hl < MIN_HEADER_LEN {
        return Err(ParseError::BadIhl);
    }
    if hl > b.len() {
        return Err(ParseError::Truncated);
    }
    if usize::from(rd16(b, field::TOTAL_LEN.start)) < hl {
        return Err(ParseError::BadTotalLen);
    }
    Ok(hl)
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap an IPv4 datagram (the Ethernet payload, trailing padding allowed).
    ///
    /// Errors, in the kernel's order: [`ParseError::Truncated`] (fewer than 20
    /// bytes, or fewer than IHL*4), [`ParseError::BadVersion`] (version != 4),
    /// [`ParseError::BadIhl`] (IHL < 5), [`ParseError::BadTotalLen`] (total
    /// length below the header length or beyond the buffer). The header
    /// checksum is not verified here: see [`Ipv4Packet::verify_checksum`].
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        check_header(b)?;
        if usize::from(rd16(b, field::TOTAL_LEN.start)) > b.len() {
            return Err(ParseError::BadTotalLen);
        }
        Ok(Ipv4Packet { buffer })
    }

    /// Wrap the IPv4 header quoted inside an ICMP error. The quoted datagram
    /// is usually truncated: the header and at least 8 bytes of its payload
    /// must be present ([`ParseError::Truncated`] otherwise), the total length
    /// may exceed what is present. Version, IHL and total length >= header
    /// length are checked as in [`Ipv4Packet::new_checked`].
    pub fn new_quoted(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        let hl = check_header(b)?;
        if b.len() < hl + QUOTED_PAYLOAD_MIN {
            return Err(ParseError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// IP version (4 after a successful check).
    pub fn version(&self) -> u8 {
        rd8(self.b(), field::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL * 4), 20..=60.
    pub fn header_len(&self) -> usize {
        usize::from(rd8(self.b(), field::VER_IHL) & 0x0f) * 4
    }

    /// Type of service byte (DSCP << 2 | ECN).
    pub fn tos(&self) -> u8 {
        rd8(self.b(), field::TOS)
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        rd16(self.b(), field::TOTAL_LEN.start)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        rd16(self.b(), field::IDENT.start)
    }

    /// The raw flags/fragment-offset word.
    pub fn flags_frag(&self) -> u16 {
        rd16(self.b(), field::FLAGS_FRAG.start)
    }

    /// "Don't fragment" flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// "More fragments" flag.
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the 13-bit field times 8).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET_MASK) << 3
    }

    /// True for any fragment (offset != 0 or MF set).
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        rd8(self.b(), field::TTL)
    }

    /// Protocol.
    pub fn protocol(&self) -> u8 {
        rd8(self.b(), field::PROTOCOL)
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        rd16(self.b(), field::CHECKSUM.start)
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        addr_at(self.b(), field::SRC)
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        addr_at(self.b(), field::DST)
    }

    /// The header bytes (IHL * 4).
    pub fn header(&self) -> &[u8] {
        let hl = self.header_len();
        self.b().get(..hl).unwrap_or(&[])
    }

    /// IPv4 options (header bytes after the first 20), possibly empty.
    pub fn options(&self) -> &[u8] {
        let hl = self.header_len();
        self.b().get(field::OPTIONS_START..hl).unwrap_or(&[])
    }

    /// True when the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.header())
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.b().len();
        let hl = self.header_len().min(len);
        let end = usize::from(self.total_len()).min(len).max(hl);
        hl..end
    }

    /// The datagram payload, bounded by the total length (trailing Ethernet
    /// padding excluded) and, for a quoted header, by the bytes present.
    pub fn payload(&self) -> &[u8] {
        let r = self.payload_range();
        self.b().get(r).unwrap_or(&[])
    }

    /// For a quoted header ([`Ipv4Packet::new_quoted`]): the first 8 bytes of
    /// the quoted payload (ports, or the ICMP header), whatever the total length says.
    pub fn quoted_l4_head(&self) -> &[u8] {
        let hl = self.header_len();
        self.b().get(hl..hl + QUOTED_PAYLOAD_MIN).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    fn set_checksum(&mut self, c: u16) {
        wr16(self.bm(), field::CHECKSUM.start, c);
    }

    /// Set the TTL, updating the header checksum incrementally (RFC 1624).
    pub fn set_ttl(&mut self, ttl: u8) {
        let old = rd16(self.b(), field::TTL);
        let new = (u16::from(ttl) << 8) | (old & 0xff);
        let c = checksum::update16(self.checksum(), old, new);
        wr8(self.bm(), field::TTL, ttl);
        self.set_checksum(c);
    }

    /// Set the TOS byte, updating the header checksum incrementally.
    pub fn set_tos(&mut self, tos: u8) {
        let old = rd16(self.b(), field::VER_IHL);
        let new = (old & 0xff00) | u16::from(tos);
        let c = checksum::update16(self.checksum(), old, new);
        wr8(self.bm(), field::TOS, tos);
        self.set_checksum(c);
    }

    /// Set the source address, updating the header checksum incrementally.
    /// The L4 checksum (pseudo-header) is the caller's: see e.g.
    /// [`crate::tcp::TcpPacket::update_pseudo_addr`].
    pub fn set_src(&mut self, addr: Ipv4Addr) {
        let c = checksum::update32(self.checksum(), u32::from(self.src()), u32::from(addr));
        if let Some(s) = self.bm().get_mut(field::SRC) {
            s.copy_from_slice(&addr.octets());
        }
        self.set_checksum(c);
    }

    /// Set the destination address, updating the header checksum incrementally.
    pub fn set_dst(&mut self, addr: Ipv4Addr) {
        let c = checksum::update32(self.checksum(), u32::from(self.dst()), u32::from(addr));
        if let Some(s) = self.bm().get_mut(field::DST) {
            s.copy_from_slice(&addr.octets());
        }
        self.set_checksum(c);
    }

    /// Recompute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// The payload, mutable (same bounds as [`Ipv4Packet::payload`]).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        self.bm().get_mut(r).unwrap_or(&mut [])
    }

    /// For a quoted header: the first 8 bytes of the quoted payload, mutable.
    pub fn quoted_l4_head_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        self.bm()
            .get_mut(hl..hl + QUOTED_PAYLOAD_MIN)
            .unwrap_or(&mut [])
    }
}

/// The parsed form of an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol.
    pub protocol: u8,
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
    /// Fragment offset in bytes (a multiple of 8; the low 3 bits are dropped on emit).
    pub frag_offset: u16,
    /// Options, emitted padded with zeros (end of options) to a multiple of 4 bytes.
    pub options: &'a [u8],
    /// Payload length (total length minus header length).
    pub payload_len: usize,
}

impl<'a> Ipv4Repr<'a> {
    /// Parse a checked view (the checksum is not verified).
    pub fn parse<T: AsRef<[u8]>>(p: &'a Ipv4Packet<T>) -> Self {
        Ipv4Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
            options: p.options(),
            payload_len: usize::from(p.total_len()).saturating_sub(p.header_len()),
        }
    }

    /// Header length this repr emits (20 + options rounded up to 4).
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.len().div_ceil(4) * 4
    }

    /// Write the header (with checksum) at the start of `buf`; returns the
    /// header length. The payload is the caller's to write after it.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        if self.options.len() > MAX_HEADER_LEN - MIN_HEADER_LEN {
            return Err(EmitError::OptionsTooLong(self.options.len()));
        }
        let hl = self.header_len();
        let total = hl + self.payload_len;
        if total > usize::from(u16::MAX) {
            return Err(EmitError::TooLong(total));
        }
        need(buf, hl)?;
        let h = &mut buf[..hl];
        h.fill(0);
        h[field::VER_IHL] = 0x40 | (hl / 4) as u8;
        h[field::TOS] = self.tos;
        wr16(h, field::TOTAL_LEN.start, total as u16);
        wr16(h, field::IDENT.start, self.ident);
        let mut ff = (self.frag_offset >> 3) & FRAG_OFFSET_MASK;
        if self.dont_frag {
            ff |= FLAG_DF;
        }
        if self.more_frags {
            ff |= FLAG_MF;
        }
        wr16(h, field::FLAGS_FRAG.start, ff);
        h[field::TTL] = self.ttl;
        h[field::PROTOCOL] = self.protocol;
        h[field::SRC].copy_from_slice(&self.src.octets());
        h[field::DST].copy_from_slice(&self.dst.octets());
        h[field::OPTIONS_START..field::OPTIONS_START + self.options.len()]
            .copy_from_slice(self.options);
        let c = checksum::checksum(h);
        wr16(h, field::CHECKSUM.start, c);
        Ok(hl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-made IPv4 header of an 84-byte ICMP echo request 10.0.0.1 ->
    /// 10.0.0.2, DF, id 0x3c55; checksum 0xea51 computed with Python `struct`.
    static PING_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x54, 0x3c, 0x55, 0x40, 0x00, 0x40, 0x01, 0xea, 0x51, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02,
    ];

    fn datagram(hdr: &[u8], payload_len: usize, pad: usize) -> Vec<u8> {
        let mut v = hdr.to_vec();
        v.extend((0..payload_len).map(|i| i as u8));
        v.extend(std::iter::repeat_n(0, pad));
        v
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(1), 0x8000_0000);
        assert_eq!(prefix_mask(24), 0xffff_ff00);
        assert_eq!(prefix_mask(32), u32::MAX);
        assert_eq!(prefix_mask(33), u32::MAX);
    }

    #[test]
    fn fields() {
        let d = datagram(&PING_HDR, 64, 0);
        let p = Ipv4Packet::new_checked(&d[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 84);
        assert_eq!(p.ident(), 0x3c55);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTO_ICMP);
        assert_eq!(p.src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 64);
        assert!(p.options().is_empty());
    }

    #[test]
    fn padding_excluded_from_payload() {
        let mut h = PING_HDR;
        wr16(&mut h, 2, 28);
        let d = datagram(&h, 8, 18);
        let p = Ipv4Packet::new_checked(&d[..]).unwrap();
        assert_eq!(p.payload(), &[0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn errors() {
        let d = datagram(&PING_HDR, 64, 0);
        assert_eq!(
            Ipv4Packet::new_checked(&d[..19]).unwrap_err(),
            ParseError::Truncated
        );
        assert_eq!(
            Ipv4Packet::new_checked(&d[..83]).unwrap_err(),
            ParseError::BadTotalLen
        );
        let mut b = d.clone();
        b[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            ParseError::BadVersion
        );
        b[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            ParseError::BadIhl
        );
        b[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&b[..40]).unwrap_err(),
            ParseError::Truncated
        );
        let mut b = d.clone();
        wr16(&mut b, 2, 19);
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            ParseError::BadTotalLen
        );
    }

    #[test]
    fn setters_keep_checksum() {
        let mut d = datagram(&PING_HDR, 64, 0);
        let mut p = Ipv4Packet::new_checked(&mut d[..]).unwrap();
        p.set_ttl(63);
        assert!(p.verify_checksum());
        p.set_src(Ipv4Addr::new(192, 168, 200, 7));
        p.set_dst(Ipv4Addr::new(172, 18, 0, 2));
        p.set_tos(0xb8);
        assert!(p.verify_checksum());
        let c = p.checksum();
        p.fill_checksum();
        assert_eq!(c, p.checksum());
        assert_eq!(p.ttl(), 63);
        assert_eq!(p.tos(), 0xb8);
        assert_eq!(p.src(), Ipv4Addr::new(192, 168, 200, 7));
        assert_eq!(p.dst(), Ipv4Addr::new(172, 18, 0, 2));
    }

    #[test]
    fn options_and_repr_roundtrip() {
        // Record-route option (7), length 7, pointer 4, one empty slot, then padding.
        let opts = [7u8, 7, 4, 0, 0, 0, 0];
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(1, 2, 3, 4),
            dst: Ipv4Addr::new(5, 6, 7, 8),
            protocol: PROTO_UDP,
            ttl: 17,
            tos: 0,
            ident: 0x1234,
            dont_frag: false,
            more_frags: true,
            frag_offset: 1480,
            options: &opts,
            payload_len: 10,
        };
        assert_eq!(repr.header_len(), 28);
        let mut buf = [0u8; 38];
        assert_eq!(repr.emit(&mut buf), Ok(28));
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.options(), &[7, 7, 4, 0, 0, 0, 0, 0]);
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.more_frags() && p.is_fragment());
        let back = Ipv4Repr::parse(&p);
        assert_eq!(back.options.len(), 8);
        assert_eq!(back.payload_len, 10);
        assert_eq!(back.frag_offset, 1480);
        assert_eq!(back.src, repr.src);
        assert_eq!(
            repr.emit(&mut [0u8; 27]),
            Err(EmitError::BufferTooSmall {
                needed: 28,
                available: 27
            })
        );
        let long = [1u8; 41];
        assert_eq!(
            Ipv4Repr {
                options: &long,
                ..repr
            }
            .emit(&mut buf),
            Err(EmitError::OptionsTooLong(41))
        );
    }

    #[test]
    fn quoted() {
        // Header says 84 bytes, only header + 8 present.
        let d = datagram(&PING_HDR, 8, 0);
        assert_eq!(
            Ipv4Packet::new_checked(&d[..]).unwrap_err(),
            ParseError::BadTotalLen
        );
        let p = Ipv4Packet::new_quoted(&d[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
        assert_eq!(p.quoted_l4_head(), &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            Ipv4Packet::new_quoted(&d[..27]).unwrap_err(),
            ParseError::Truncated
        );
    }
}
