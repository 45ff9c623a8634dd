//! UDP datagrams (RFC 768).

use std::net::Ipv4Addr;

use crate::checksum;
use crate::ipv4::PROTO_UDP;
use crate::parse::ParseError;
use crate::{need, rd16, wr16, EmitError};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// Field offsets of the UDP header.
pub mod field {
    use crate::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Length of header plus payload.
    pub const LENGTH: Field = 4..6;
    /// Checksum (zero: none).
    pub const CHECKSUM: Field = 6..8;
}

/// A view of a UDP datagram (the IPv4 payload, bounded by the total length).
///
/// After [`UdpPacket::new_checked`] succeeds, no accessor or setter panics.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap a UDP datagram. Errors: [`ParseError::Truncated`] (fewer than 8
    /// bytes), [`ParseError::BadUdpLength`] (length field below 8 or beyond the
    /// buffer). Bytes beyond the length field are ignored, as by the kernel.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let len = usize::from(rd16(b, field::LENGTH.start));
        if len < HEADER_LEN || len > b.len() {
            return Err(ParseError::BadUdpLength);
        }
        Ok(UdpPacket { buffer })
    }

    /// The UDP header at the start of a datagram's first fragment: only the
    /// 8 header bytes must be there (the length field counts the whole
    /// datagram). Header accessors and setters work; what reads the payload
    /// sees only this fragment's part.
    pub fn new_first_fragment(buffer: T) -> Result<Self, ParseError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        rd16(self.b(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        rd16(self.b(), field::DST_PORT.start)
    }

    /// Length field (header plus payload).
    pub fn len(&self) -> u16 {
        rd16(self.b(), field::LENGTH.start)
    }

    /// True when the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field (zero: none).
    pub fn checksum(&self) -> u16 {
        rd16(self.b(), field::CHECKSUM.start)
    }

    fn datagram(&self) -> &[u8] {
        let b = self.b();
        let end = usize::from(self.len()).clamp(HEADER_LEN.min(b.len()), b.len());
        b.get(..end).unwrap_or(&[])
    }

    /// The payload, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// True when the checksum is zero (none) or correct for `src` -> `dst`.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let d = self.datagram();
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, PROTO_UDP, d.len() as u32),
            checksum::sum(d),
        );
        checksum::fold(s) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    fn set_checksum(&mut self, c: u16) {
        wr16(self.bm(), field::CHECKSUM.start, c);
    }

    /// Set the source port, updating the checksum incrementally (zero stays zero).
    pub fn set_src_port(&mut self, port: u16) {
        let c = checksum::udp_update_port(self.checksum(), self.src_port(), port);
        wr16(self.bm(), field::SRC_PORT.start, port);
        self.set_checksum(c);
    }

    /// Set the destination port, updating the checksum incrementally (zero stays zero).
    pub fn set_dst_port(&mut self, port: u16) {
        let c = checksum::udp_update_port(self.checksum(), self.dst_port(), port);
        wr16(self.bm(), field::DST_PORT.start, port);
        self.set_checksum(c);
    }

    /// Update the checksum for a pseudo-header address change (zero stays zero).
    pub fn update_pseudo_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let c = checksum::udp_update_addr(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Recompute the checksum from scratch (a computed zero is sent as 0xffff).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let d = self.datagram();
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, PROTO_UDP, d.len() as u32),
            checksum::sum(d),
        );
        self.set_checksum(checksum::udp_finish(checksum::finish(s)));
    }

    /// The payload, mutable, bounded by the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.b().len();
        let end = usize::from(self.len()).clamp(HEADER_LEN.min(len), len);
        self.bm().get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }
}

/// The parsed form of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> UdpRepr<'a> {
    /// Parse a checked view (the checksum is not verified).
    pub fn parse<T: AsRef<[u8]>>(p: &'a UdpPacket<T>) -> Self {
        UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload: p.payload(),
        }
    }

    /// Header plus payload length.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// True when the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Write header and payload at the start of `buf`, with the checksum for
    /// `src` -> `dst`; returns the datagram length.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<usize, EmitError> {
        let len = self.len();
        if len > usize::from(u16::MAX) {
            return Err(EmitError::TooLong(len));
        }
        need(buf, len)?;
        let d = &mut buf[..len];
        wr16(d, field::SRC_PORT.start, self.src_port);
        wr16(d, field::DST_PORT.start, self.dst_port);
        wr16(d, field::LENGTH.start, len as u16);
        wr16(d, field::CHECKSUM.start, 0);
        d[HEADER_LEN..].copy_from_slice(self.payload);
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, PROTO_UDP, len as u32),
            checksum::sum(d),
        );
        wr16(
            d,
            field::CHECKSUM.start,
            checksum::udp_finish(checksum::finish(s)),
        );
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    #[test]
    fn roundtrip_and_setters() {
        let r = UdpRepr {
            src_port: 33894,
            dst_port: 53,
            payload: b"\x12\x34\x01\x00",
        };
        let mut buf = [0u8; 16];
        assert_eq!(r.emit(&mut buf, SRC, DST), Ok(12));
        // Extra bytes after the length field are ignored.
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(p.len(), 12);
        assert_eq!(p.payload(), b"\x12\x34\x01\x00");
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!(UdpRepr::parse(&p), r);
        p.set_src_port(55555);
        p.set_dst_port(5353);
        let nsrc = Ipv4Addr::new(10, 0, 2, 15);
        p.update_pseudo_addr(SRC, nsrc);
        assert!(p.verify_checksum(nsrc, DST));
        let c = p.checksum();
        p.fill_checksum(nsrc, DST);
        assert_eq!(c, p.checksum());
    }

    #[test]
    fn zero_checksum_stays_zero() {
        let mut buf = [0u8; 8];
        wr16(&mut buf, 4, 8);
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        p.set_src_port(1);
        p.update_pseudo_addr(SRC, DST);
        assert_eq!(p.checksum(), 0);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn computed_zero_sent_as_ffff() {
        // Choose a payload word that makes the sum 0xffff: checksum computes to 0.
        let r = UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload: &[0, 0],
        };
        let mut buf = [0u8; 10];
        r.emit(&mut buf, SRC, DST).unwrap();
        let c = rd16(&buf, 6);
        // Payload word w adds w to the sum, which lowers the checksum by w.
        let w = c;
        let r2 = UdpRepr {
            payload: &w.to_be_bytes(),
            ..r
        };
        r2.emit(&mut buf, SRC, DST).unwrap();
        assert_eq!(rd16(&buf, 6), 0xffff);
        assert!(UdpPacket::new_checked(&buf[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn errors() {
        assert_eq!(
            UdpPacket::new_checked(&[0u8; 7][..]).unwrap_err(),
            ParseError::Truncated
        );
        let mut b = [0u8; 8];
        wr16(&mut b, 4, 7);
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            ParseError::BadUdpLength
        );
        wr16(&mut b, 4, 9);
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            ParseError::BadUdpLength
        );
    }
}
