//! ICMP for IPv4 (RFC 792): echo, errors with their quoted datagram,
//! "fragmentation needed" next-hop MTU (RFC 1191).

use std::net::Ipv4Addr;

use crate::checksum;
use crate::ipv4::{Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::parse::ParseError;
use crate::{need, rd16, rd32, rd8, wr16, wr32, EmitError};

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// ICMP types.
pub mod types {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (error).
    pub const DEST_UNREACH: u8 = 3;
    /// Source quench (error, deprecated).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect (error).
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (error).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem (error).
    pub const PARAM_PROBLEM: u8 = 12;
    /// Timestamp request.
    pub const TIMESTAMP: u8 = 13;
    /// Timestamp reply.
    pub const TIMESTAMP_REPLY: u8 = 14;
    /// Information request.
    pub const INFO_REQUEST: u8 = 15;
    /// Information reply.
    pub const INFO_REPLY: u8 = 16;
    /// Address mask request.
    pub const ADDRESS_MASK: u8 = 17;
    /// Address mask reply.
    pub const ADDRESS_MASK_REPLY: u8 = 18;
}

/// Destination-unreachable codes.
pub mod unreach {
    /// Network unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set (carries the next-hop MTU).
    pub const FRAG_NEEDED: u8 = 4;
    /// Network administratively prohibited.
    pub const NET_PROHIBITED: u8 = 9;
    /// Host administratively prohibited.
    pub const HOST_PROHIBITED: u8 = 10;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Time-exceeded codes.
pub mod time_exceeded {
    /// TTL exceeded in transit.
    pub const TTL: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

/// Field offsets of the ICMP header.
pub mod field {
    use crate::Field;
    /// Type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum over the whole ICMP message.
    pub const CHECKSUM: Field = 2..4;
    /// Echo / timestamp / info identifier.
    pub const IDENT: Field = 4..6;
    /// Echo / timestamp / info sequence number.
    pub const SEQ: Field = 6..8;
    /// Rest of header as one word (unused / pointer / gateway / MTU).
    pub const REST: Field = 4..8;
    /// Next-hop MTU in "fragmentation needed" (type 3 code 4).
    pub const NEXT_HOP_MTU: Field = 6..8;
    /// Start of the data (echo payload or quoted datagram).
    pub const DATA: usize = 8;
}

/// True for the ICMP error types (3, 4, 5, 11, 12), which quote the
/// offending datagram and are RELATED to its connection.
pub fn is_error(ty: u8) -> bool {
    matches!(
        ty,
        types::DEST_UNREACH
            | types::SOURCE_QUENCH
            | types::REDIRECT
            | types::TIME_EXCEEDED
            | types::PARAM_PROBLEM
    )
}

/// The answer's type of a query type (echo, timestamp, information,
/// address mask; in both directions), as conntrack's `invmap` pairs them;
/// `None` for the other types.
pub fn inverse_type(ty: u8) -> Option<u8> {
    use types::*;
    match ty {
        ECHO_REQUEST => Some(ECHO_REPLY),
        ECHO_REPLY => Some(ECHO_REQUEST),
        TIMESTAMP => Some(TIMESTAMP_REPLY),
        TIMESTAMP_REPLY => Some(TIMESTAMP),
        INFO_REQUEST => Some(INFO_REPLY),
        INFO_REPLY => Some(INFO_REQUEST),
        ADDRESS_MASK => Some(ADDRESS_MASK_REPLY),
        ADDRESS_MASK_REPLY => Some(ADDRESS_MASK),
        _ => None,
    }
}

/// True for query types that carry an identifier (echo, timestamp, info,
/// address mask: requests and replies) — conntrack keys them on the id.
pub fn has_ident(ty: u8) -> bool {
    matches!(
        ty,
        types::ECHO_REPLY
            | types::ECHO_REQUEST
            | types::TIMESTAMP
            | types::TIMESTAMP_REPLY
            | types::INFO_REQUEST
            | types::INFO_REPLY
            | types::ADDRESS_MASK
            | types::ADDRESS_MASK_REPLY
    )
}

/// A view of an ICMP message (the IPv4 payload, bounded by the total length).
///
/// After [`IcmpPacket::new_checked`] succeeds, no accessor or setter panics.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wrap an ICMP message. Errors: [`ParseError::Truncated`] (fewer than 8 bytes).
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(IcmpPacket { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Type.
    pub fn icmp_type(&self) -> u8 {
        rd8(self.b(), field::TYPE)
    }

    /// Code.
    pub fn code(&self) -> u8 {
        rd8(self.b(), field::CODE)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        rd16(self.b(), field::CHECKSUM.start)
    }

    /// The identifier field (bytes 4..6; meaningful for [`has_ident`] types).
    pub fn echo_ident(&self) -> u16 {
        rd16(self.b(), field::IDENT.start)
    }

    /// The sequence number field (bytes 6..8; meaningful for [`has_ident`] types).
    pub fn echo_seq(&self) -> u16 {
        rd16(self.b(), field::SEQ.start)
    }

    /// The rest-of-header word (bytes 4..8).
    pub fn rest_of_header(&self) -> u32 {
        rd32(self.b(), field::REST.start)
    }

    /// Next-hop MTU of a "fragmentation needed" (type 3 code 4); `None` for other messages.
    pub fn next_hop_mtu(&self) -> Option<u16> {
        (self.icmp_type() == types::DEST_UNREACH && self.code() == unreach::FRAG_NEEDED)
            .then(|| rd16(self.b(), field::NEXT_HOP_MTU.start))
    }

    /// True for error types (see [`is_error`]).
    pub fn is_error(&self) -> bool {
        is_error(self.icmp_type())
    }

    /// The data after the 8-byte header (echo payload or quoted datagram).
    pub fn data(&self) -> &[u8] {
        self.b().get(field::DATA..).unwrap_or(&[])
    }

    /// For an error message: a lenient view of the quoted IPv4 header (see
    /// [`Ipv4Packet::new_quoted`]); its `quoted_l4_head()` gives the first 8
    /// bytes of the quoted payload. Errors: [`ParseError::NotIcmpError`] for
    /// non-error types, or the quoted header's own error.
    pub fn quoted(&self) -> Result<Ipv4Packet<&[u8]>, ParseError> {
        if !self.is_error() {
            return Err(ParseError::NotIcmpError);
        }
        Ipv4Packet::new_quoted(self.data())
    }

    /// True when the checksum over the whole message is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.b())
    }
}

/// Ports of a quoted TCP/UDP header (`l4_head` from
/// [`Ipv4Packet::quoted_l4_head`]): (source, destination).
pub fn quoted_ports(l4_head: &[u8]) -> (u16, u16) {
    (rd16(l4_head, 0), rd16(l4_head, 2))
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Set the echo identifier, updating the checksum incrementally (ICMP NAT).
    pub fn set_echo_ident(&mut self, id: u16) {
        let c = checksum::icmp_update_id(self.checksum(), self.echo_ident(), id);
        wr16(self.bm(), field::IDENT.start, id);
        wr16(self.bm(), field::CHECKSUM.start, c);
    }

    /// Set type and code, updating the checksum incrementally (e.g. echo request -> reply).
    pub fn set_type_code(&mut self, ty: u8, code: u8) {
        let old = rd16(self.b(), field::TYPE);
        let new = u16::from_be_bytes([ty, code]);
        let c = checksum::update16(self.checksum(), old, new);
        wr16(self.bm(), field::TYPE, new);
        wr16(self.bm(), field::CHECKSUM.start, c);
    }

    /// For an error message: the quoted IPv4 header, mutable (for NAT of the
    /// embedded datagram). After changing it call [`IcmpPacket::fill_checksum`],
    /// as the kernel recomputes the outer checksum in full.
    pub fn quoted_mut(&mut self) -> Result<Ipv4Packet<&mut [u8]>, ParseError> {
        if !self.is_error() {
            return Err(ParseError::NotIcmpError);
        }
        Ipv4Packet::new_quoted(self.bm().get_mut(field::DATA..).unwrap_or(&mut []))
    }

    /// NAT of the datagram quoted by an ICMP error, as the kernel's
    /// `nf_nat_icmp_reply_translation` does it: rewrite one end (`end`) of
    /// the quoted datagram to `addr` (inner IP header checksum updated) and
    /// its port — or, for a quoted ICMP query, its identifier — to `port_or_id`;
    /// update the quoted L4 checksum where the kernel does (TCP only when the
    /// whole 20-byte header is quoted; UDP unless zero; ICMP queries always);
    /// then recompute the outer ICMP checksum in full. A quoted non-first
    /// fragment gets only its address rewritten.
    ///
    /// The kernel first verifies the ICMP checksum and drops the packet when
    /// it is wrong; call [`IcmpPacket::verify_checksum`] before to mirror that.
    ///
    /// Errors: [`ParseError::NotIcmpError`], or the quoted header's error
    /// (nothing is changed then).
    pub fn nat_quoted(
        &mut self,
        end: QuotedEnd,
        addr: Ipv4Addr,
        port_or_id: u16,
    ) -> Result<(), ParseError> {
        let (hl, proto, first, old_addr) = {
            let mut inner = self.quoted_mut()?;
            let old_addr = match end {
                QuotedEnd::Src => inner.src(),
                QuotedEnd::Dst => inner.dst(),
            };
            match end {
                QuotedEnd::Src => inner.set_src(addr),
                QuotedEnd::Dst => inner.set_dst(addr),
            }
            (
                inner.header_len(),
                inner.protocol(),
                inner.frag_offset() == 0,
                old_addr,
            )
        };
        if first {
            // As the kernel: the quoted L4 header as far as bytes are present
            // (not bounded by the quoted total length).
            let l4 = self.bm().get_mut(field::DATA + hl..).unwrap_or(&mut []);
            nat_quoted_l4(l4, proto, end, old_addr, addr, port_or_id);
        }
        self.fill_checksum();
        Ok(())
    }

    /// Recompute the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        wr16(self.bm(), field::CHECKSUM.start, 0);
        let c = checksum::checksum(self.b());
        wr16(self.bm(), field::CHECKSUM.start, c);
    }

    /// The data after the header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.bm().get_mut(field::DATA..).unwrap_or(&mut [])
    }
}

/// Which end of a quoted datagram [`IcmpPacket::nat_quoted`] rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotedEnd {
    /// The quoted source address and source port.
    Src,
    /// The quoted destination address and destination port.
    Dst,
}

/// Rewrite the port (or ICMP id) of a quoted L4 header and fix its checksum
/// where present; `l4` is the quoted payload as far as it is present.
fn nat_quoted_l4(
    l4: &mut [u8],
    proto: u8,
    end: QuotedEnd,
    old_addr: Ipv4Addr,
    addr: Ipv4Addr,
    port_or_id: u16,
) {
    let port_off = match end {
        QuotedEnd::Src => 0,
        QuotedEnd::Dst => 2,
    };
    match proto {
        PROTO_TCP => {
            let old_port = rd16(l4, port_off);
            // As tcp_manip_pkt: the checksum only when the whole header is quoted.
            if l4.len() >= crate::tcp::MIN_HEADER_LEN {
                let at = crate::tcp::field::CHECKSUM.start;
                let c = checksum::tcp_update_addr(rd16(l4, at), old_addr, addr);
                let c = checksum::tcp_update_port(c, old_port, port_or_id);
                wr16(l4, at, c);
            }
            wr16(l4, port_off, port_or_id);
        }
        PROTO_UDP => {
            let old_port = rd16(l4, port_off);
            let at = crate::udp::field::CHECKSUM.start;
            let c = checksum::udp_update_addr(rd16(l4, at), old_addr, addr);
            let c = checksum::udp_update_port(c, old_port, port_or_id);
            wr16(l4, at, c);
            wr16(l4, port_off, port_or_id);
        }
        PROTO_ICMP if has_ident(rd8(l4, field::TYPE)) => {
            let old = rd16(l4, field::IDENT.start);
            let c = checksum::icmp_update_id(rd16(l4, field::CHECKSUM.start), old, port_or_id);
            wr16(l4, field::CHECKSUM.start, c);
            wr16(l4, field::IDENT.start, port_or_id);
        }
        _ => {}
    }
}

/// The parsed form of an ICMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpRepr<'a> {
    /// Type.
    pub icmp_type: u8,
    /// Code.
    pub code: u8,
    /// Rest of header (id << 16 | seq for echo, MTU for frag-needed, 0 for most errors).
    pub rest: u32,
    /// Data: echo payload, or the quoted datagram (IP header + at least 8 bytes) for errors.
    pub data: &'a [u8],
}

impl<'a> IcmpRepr<'a> {
    /// Parse a checked view (the checksum is not verified).
    pub fn parse<T: AsRef<[u8]>>(p: &'a IcmpPacket<T>) -> Self {
        IcmpRepr {
            icmp_type: p.icmp_type(),
            code: p.code(),
            rest: p.rest_of_header(),
            data: p.data(),
        }
    }

    /// An echo request.
    pub fn echo_request(ident: u16, seq: u16, data: &'a [u8]) -> Self {
        IcmpRepr {
            icmp_type: types::ECHO_REQUEST,
            code: 0,
            rest: (u32::from(ident) << 16) | u32::from(seq),
            data,
        }
    }

    /// An echo reply.
    pub fn echo_reply(ident: u16, seq: u16, data: &'a [u8]) -> Self {
        IcmpRepr {
            icmp_type: types::ECHO_REPLY,
            ..Self::echo_request(ident, seq, data)
        }
    }

    /// An error of type `ty`/`code` quoting `quoted` (the offending IP
    /// header and the start of its payload); `rest` is the MTU for
    /// frag-needed, the pointer << 24 for parameter problem, else 0.
    pub fn error(ty: u8, code: u8, rest: u32, quoted: &'a [u8]) -> Self {
        IcmpRepr {
            icmp_type: ty,
            code,
            rest,
            data: quoted,
        }
    }

    /// Message length (header plus data).
    pub fn len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// True when there is no data after the header.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Write the message with its checksum at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let len = self.len();
        if len > usize::from(u16::MAX) {
            return Err(EmitError::TooLong(len));
        }
        need(buf, len)?;
        let m = &mut buf[..len];
        m[field::TYPE] = self.icmp_type;
        m[field::CODE] = self.code;
        wr16(m, field::CHECKSUM.start, 0);
        wr32(m, field::REST.start, self.rest);
        m[field::DATA..].copy_from_slice(self.data);
        let c = checksum::checksum(m);
        wr16(m, field::CHECKSUM.start, c);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_roundtrip_and_setters() {
        let r = IcmpRepr::echo_request(0x1a2b, 7, b"abcdefgh");
        let mut buf = [0u8; 16];
        assert_eq!(r.emit(&mut buf), Ok(16));
        let mut p = IcmpPacket::new_checked(&mut buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.icmp_type(), types::ECHO_REQUEST);
        assert_eq!(p.echo_ident(), 0x1a2b);
        assert_eq!(p.echo_seq(), 7);
        assert_eq!(p.next_hop_mtu(), None);
        assert!(p.quoted().is_err());
        assert_eq!(IcmpRepr::parse(&p), r);
        p.set_echo_ident(0xffff);
        p.set_type_code(types::ECHO_REPLY, 0);
        assert!(p.verify_checksum());
        assert_eq!(p.echo_ident(), 0xffff);
        assert_eq!(p.icmp_type(), types::ECHO_REPLY);
        assert_eq!(p.quoted_mut().unwrap_err(), ParseError::NotIcmpError);
    }

    #[test]
    fn frag_needed_quotes_udp() {
        // Quoted: IPv4 10.0.0.1 -> 10.0.0.2 UDP 33894 -> 53, header + 8 bytes.
        let ip = crate::ipv4::Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: crate::ipv4::PROTO_UDP,
            ttl: 1,
            tos: 0,
            ident: 1,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            options: &[],
            payload_len: 1472,
        };
        let mut q = [0u8; 28];
        ip.emit(&mut q).unwrap();
        q[20..28].copy_from_slice(&[0x84, 0x66, 0x00, 0x35, 0x05, 0xc8, 0x12, 0x34]);
        let r = IcmpRepr::error(types::DEST_UNREACH, unreach::FRAG_NEEDED, 1400, &q);
        let mut buf = [0u8; 36];
        r.emit(&mut buf).unwrap();
        let mut p = IcmpPacket::new_checked(&mut buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.next_hop_mtu(), Some(1400));
        let inner = p.quoted().unwrap();
        assert_eq!(inner.src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(inner.protocol(), crate::ipv4::PROTO_UDP);
        assert_eq!(quoted_ports(inner.quoted_l4_head()), (33894, 53));
        // NAT the quoted source, then fix the outer checksum.
        {
            let mut inner = p.quoted_mut().unwrap();
            inner.set_src(Ipv4Addr::new(192, 168, 0, 9));
            assert!(inner.verify_checksum());
            inner.quoted_l4_head_mut()[0..2].copy_from_slice(&1234u16.to_be_bytes());
        }
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(quoted_ports(p.quoted().unwrap().quoted_l4_head()).0, 1234);
    }

    /// Rewriting a quoted datagram gives the same bytes as quoting a datagram
    /// built with the new address and port from scratch.
    #[test]
    fn nat_quoted_equals_rebuilt() {
        use crate::builder::{self, EthSpec, IpSpec, TcpSpec, UdpSpec};
        let (a, b, n) = (
            Ipv4Addr::new(172, 18, 0, 2),
            Ipv4Addr::new(1, 1, 1, 1),
            Ipv4Addr::new(10, 0, 2, 15),
        );
        let router = IpSpec {
            src: Ipv4Addr::new(9, 9, 9, 9),
            dst: a,
            ..IpSpec::default()
        };
        let eth = EthSpec::default();
        let orig_ip = IpSpec {
            src: a,
            dst: b,
            ..IpSpec::default()
        };
        let nat_ip = IpSpec {
            src: n,
            ..orig_ip.clone()
        };
        let frames: [(Vec<u8>, Vec<u8>); 4] = [
            (
                builder::tcp_frame(
                    &eth,
                    &orig_ip,
                    &TcpSpec {
                        src_port: 37622,
                        ..TcpSpec::default()
                    },
                    b"GET /",
                ),
                builder::tcp_frame(
                    &eth,
                    &nat_ip,
                    &TcpSpec {
                        src_port: 55666,
                        ..TcpSpec::default()
                    },
                    b"GET /",
                ),
            ),
            (
                builder::udp_frame(
                    &eth,
                    &orig_ip,
                    &UdpSpec {
                        src_port: 33894,
                        dst_port: 53,
                    },
                    b"q",
                ),
                builder::udp_frame(
                    &eth,
                    &nat_ip,
                    &UdpSpec {
                        src_port: 55666,
                        dst_port: 53,
                    },
                    b"q",
                ),
            ),
            (
                builder::icmp_echo_request(&eth, &orig_ip, 7, 1, b"ping"),
                builder::icmp_echo_request(&eth, &nat_ip, 55666, 1, b"ping"),
            ),
            (
                // Only 8 bytes of TCP quoted: ports change, checksum cannot.
                builder::ipv4_frame(&eth, &orig_ip, PROTO_TCP, &[0x92, 0xf6, 0, 80, 0, 0, 0, 1]),
                builder::ipv4_frame(&eth, &nat_ip, PROTO_TCP, &[0xd9, 0x72, 0, 80, 0, 0, 0, 1]),
            ),
        ];
        for (orig, want) in frames {
            let mut err = builder::icmp_error(&eth, &router, types::DEST_UNREACH, 1, 0, &orig);
            let expect = builder::icmp_error(&eth, &router, types::DEST_UNREACH, 1, 0, &want);
            let mut p = IcmpPacket::new_checked(&mut err[34..]).unwrap();
            p.nat_quoted(QuotedEnd::Src, n, 55666).unwrap();
            assert_eq!(err, expect);
        }
        // Destination end, UDP with zero checksum stays zero.
        let mut q = builder::udp_frame(&eth, &orig_ip, &UdpSpec::default(), b"q");
        q[40..42].copy_from_slice(&[0, 0]);
        let mut err = builder::icmp_error(&eth, &router, types::DEST_UNREACH, 3, 0, &q);
        let mut p = IcmpPacket::new_checked(&mut err[34..]).unwrap();
        p.nat_quoted(QuotedEnd::Dst, n, 5353).unwrap();
        assert!(p.verify_checksum());
        let inner = p.quoted().unwrap();
        assert_eq!(inner.dst(), n);
        assert!(inner.verify_checksum());
        assert_eq!(quoted_ports(inner.quoted_l4_head()), (33894, 5353));
        assert_eq!(&inner.quoted_l4_head()[6..8], &[0, 0]);
        // Not an error: nothing changes.
        let mut echo = builder::icmp_echo_request(&eth, &orig_ip, 1, 1, b"");
        let before = echo.clone();
        let mut p = IcmpPacket::new_checked(&mut echo[34..]).unwrap();
        assert_eq!(
            p.nat_quoted(QuotedEnd::Src, n, 1),
            Err(ParseError::NotIcmpError)
        );
        assert_eq!(echo, before);
    }

    /// Differential against the kernel: R's `nf_nat_icmp_reply_translation`
    /// of three ICMP errors (quoting UDP, a full TCP header, an ICMP echo),
    /// reproduced byte for byte with the views.
    #[test]
    fn nat_quoted_matches_kernel() {
        use crate::ethernet::{EthernetFrame, MacAddr};
        use crate::fixtures::*;
        let a = Ipv4Addr::new(172, 18, 0, 2);
        let cases: [(&[u8], &[u8], u16); 3] = [
            (&KNAT_UDP_BEFORE, &KNAT_UDP_AFTER, 33894),
            (&KNAT_TCP_BEFORE, &KNAT_TCP_AFTER, 34402),
            (&KNAT_ICMP_BEFORE, &KNAT_ICMP_AFTER, 17185),
        ];
        for (before, after, port) in cases {
            let mut f = before.to_vec();
            let mut eth = EthernetFrame::new_checked(&mut f[..]).unwrap();
            eth.set_src(MacAddr([2, 0, 0, 0, 0x0a, 2]));
            eth.set_dst(MacAddr([2, 0, 0, 0, 0x0a, 1]));
            let mut ip = Ipv4Packet::new_checked(&mut f[14..]).unwrap();
            let mut icmp = IcmpPacket::new_checked(ip.payload_mut()).unwrap();
            assert!(icmp.verify_checksum());
            icmp.nat_quoted(QuotedEnd::Src, a, port).unwrap();
            ip.set_dst(a);
            ip.set_ttl(ip.ttl() - 1);
            assert_eq!(f, after.to_vec());
        }
    }

    #[test]
    fn quoted_too_short() {
        let mut buf = [0u8; 8 + 27];
        buf[0] = types::TIME_EXCEEDED;
        buf[8] = 0x45;
        buf[11] = 40;
        let p = IcmpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.quoted().unwrap_err(), ParseError::Truncated);
        assert_eq!(
            IcmpPacket::new_checked(&buf[..7]).unwrap_err(),
            ParseError::Truncated
        );
        assert!(is_error(12) && is_error(4) && is_error(5) && !is_error(8));
        assert!(has_ident(0) && has_ident(8) && !has_ident(3));
    }
}
