//! ARP for Ethernet and IPv4 (RFC 826).

use std::net::Ipv4Addr;

use crate::ethernet::{EthernetRepr, MacAddr, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::parse::ParseError;
use crate::{need, rd16, rd8, wr16, wr8, EmitError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// ARP request opcode.
pub const OP_REQUEST: u16 = 1;
/// ARP reply opcode.
pub const OP_REPLY: u16 = 2;

/// Field offsets of an Ethernet/IPv4 ARP packet.
pub mod field {
    use crate::Field;
    /// Hardware type (1 = Ethernet).
    pub const HTYPE: Field = 0..2;
    /// Protocol type (0x0800 = IPv4).
    pub const PTYPE: Field = 2..4;
    /// Hardware address length (6).
    pub const HLEN: usize = 4;
    /// Protocol address length (4).
    pub const PLEN: usize = 5;
    /// Operation (1 request, 2 reply).
    pub const OPER: Field = 6..8;
    /// Sender hardware address.
    pub const SHA: Field = 8..14;
    /// Sender protocol address.
    pub const SPA: Field = 14..18;
    /// Target hardware address.
    pub const THA: Field = 18..24;
    /// Target protocol address.
    pub const TPA: Field = 24..28;
}

/// A view of an Ethernet/IPv4 ARP packet.
///
/// After [`ArpPacket::new_checked`] succeeds, no accessor or setter panics.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

fn ip_at(b: &[u8], f: crate::Field) -> Ipv4Addr {
    match b.get(f) {
        Some(s) => Ipv4Addr::new(s[0], s[1], s[2], s[3]),
        None => Ipv4Addr::UNSPECIFIED,
    }
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap an ARP packet (the Ethernet payload), checking its length
    /// ([`ParseError::Truncated`]) and that it is Ethernet/IPv4: htype 1, ptype
    /// 0x0800, hlen 6, plen 4 ([`ParseError::BadArp`]). The opcode is not checked.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(ParseError::Truncated);
        }
        if rd16(b, field::HTYPE.start) != HTYPE_ETHERNET
            || rd16(b, field::PTYPE.start) != ETHERTYPE_IPV4
            || rd8(b, field::HLEN) != 6
            || rd8(b, field::PLEN) != 4
        {
            return Err(ParseError::BadArp);
        }
        Ok(ArpPacket { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Operation: [`OP_REQUEST`], [`OP_REPLY`] or another value.
    pub fn op(&self) -> u16 {
        rd16(self.buffer.as_ref(), field::OPER.start)
    }

    /// Sender hardware address.
    pub fn sha(&self) -> MacAddr {
        MacAddr::from_slice(self.buffer.as_ref().get(field::SHA).unwrap_or(&[]))
    }

    /// Sender protocol address.
    pub fn spa(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::SPA)
    }

    /// Target hardware address.
    pub fn tha(&self) -> MacAddr {
        MacAddr::from_slice(self.buffer.as_ref().get(field::THA).unwrap_or(&[]))
    }

    /// Target protocol address.
    pub fn tpa(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Set the operation.
    pub fn set_op(&mut self, op: u16) {
        wr16(self.buffer.as_mut(), field::OPER.start, op);
    }

    /// Set the sender hardware address.
    pub fn set_sha(&mut self, mac: MacAddr) {
        if let Some(s) = self.buffer.as_mut().get_mut(field::SHA) {
            s.copy_from_slice(&mac.0);
        }
    }

    /// Set the sender protocol address.
    pub fn set_spa(&mut self, ip: Ipv4Addr) {
        if let Some(s) = self.buffer.as_mut().get_mut(field::SPA) {
            s.copy_from_slice(&ip.octets());
        }
    }

    /// Set the target hardware address.
    pub fn set_tha(&mut self, mac: MacAddr) {
        if let Some(s) = self.buffer.as_mut().get_mut(field::THA) {
            s.copy_from_slice(&mac.0);
        }
    }

    /// Set the target protocol address.
    pub fn set_tpa(&mut self, ip: Ipv4Addr) {
        if let Some(s) = self.buffer.as_mut().get_mut(field::TPA) {
            s.copy_from_slice(&ip.octets());
        }
    }
}

/// The parsed form of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// Operation ([`OP_REQUEST`] / [`OP_REPLY`]).
    pub op: u16,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address (zero in requests).
    pub tha: MacAddr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl ArpRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Self {
        ArpRepr {
            op: p.op(),
            sha: p.sha(),
            spa: p.spa(),
            tha: p.tha(),
            tpa: p.tpa(),
        }
    }

    /// A request "who has `tpa`? tell `spa`" (target hardware address zero).
    pub fn request(sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Self {
        ArpRepr {
            op: OP_REQUEST,
            sha,
            spa,
            tha: MacAddr::ZERO,
            tpa,
        }
    }

    /// The reply to `req` from the owner of `req.tpa`, whose MAC is `mac`.
    pub fn reply_to(req: &ArpRepr, mac: MacAddr) -> Self {
        ArpRepr {
            op: OP_REPLY,
            sha: mac,
            spa: req.tpa,
            tha: req.sha,
            tpa: req.spa,
        }
    }

    /// Write the 28-byte ARP packet at the start of `buf`; returns 28.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        need(buf, PACKET_LEN)?;
        wr16(buf, field::HTYPE.start, HTYPE_ETHERNET);
        wr16(buf, field::PTYPE.start, ETHERTYPE_IPV4);
        wr8(buf, field::HLEN, 6);
        wr8(buf, field::PLEN, 4);
        wr16(buf, field::OPER.start, self.op);
        buf[field::SHA].copy_from_slice(&self.sha.0);
        buf[field::SPA].copy_from_slice(&self.spa.octets());
        buf[field::THA].copy_from_slice(&self.tha.0);
        buf[field::TPA].copy_from_slice(&self.tpa.octets());
        Ok(PACKET_LEN)
    }
}

/// Write an untagged Ethernet frame from `eth_src` to `eth_dst` carrying
/// `arp` at the start of `out`; returns its length (42). Never allocates
/// (the data plane and the traffic generator write into their frame buffers).
pub fn emit_frame(
    out: &mut [u8],
    eth_src: MacAddr,
    eth_dst: MacAddr,
    arp: &ArpRepr,
) -> Result<usize, EmitError> {
    let eth = EthernetRepr {
        src: eth_src,
        dst: eth_dst,
        vlan: None,
        ethertype: ETHERTYPE_ARP,
    };
    need(out, eth.header_len() + PACKET_LEN)?;
    let n = eth.emit(out)?;
    let m = arp.emit(out.get_mut(n..).unwrap_or_default())?;
    Ok(n + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-made ARP request (Ethernet header stripped), laid out per RFC 826:
    /// who-has 10.0.2.15 tell 10.0.2.2 from 52:54:00:12:35:02.
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x35, 0x02, 0x0a,
        0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x02, 0x0f,
    ];

    #[test]
    fn parse_request() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        let r = ArpRepr::parse(&p);
        assert_eq!(r.op, OP_REQUEST);
        assert_eq!(r.sha.to_string(), "52:54:00:12:35:02");
        assert_eq!(r.spa, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(r.tha, MacAddr::ZERO);
        assert_eq!(r.tpa, Ipv4Addr::new(10, 0, 2, 15));
        let mut out = [0u8; 28];
        ArpRepr::request(r.sha, r.spa, r.tpa)
            .emit(&mut out)
            .unwrap();
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn reply_and_setters() {
        let req = ArpRepr::parse(&ArpPacket::new_checked(&REQUEST[..]).unwrap());
        let me = MacAddr([0x52, 0x54, 0, 0xc2, 0xbe, 0x11]);
        let rep = ArpRepr::reply_to(&req, me);
        let mut out = [0u8; 30];
        assert_eq!(rep.emit(&mut out), Ok(28));
        let p = ArpPacket::new_checked(&out[..]).unwrap();
        assert_eq!(p.op(), OP_REPLY);
        assert_eq!(p.sha(), me);
        assert_eq!(p.spa(), Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(p.tha(), req.sha);
        assert_eq!(p.tpa(), req.spa);

        let mut buf = REQUEST;
        let mut p = ArpPacket::new_checked(&mut buf[..]).unwrap();
        p.set_op(OP_REPLY);
        p.set_sha(me);
        p.set_spa(Ipv4Addr::new(1, 2, 3, 4));
        p.set_tha(MacAddr::BROADCAST);
        p.set_tpa(Ipv4Addr::new(5, 6, 7, 8));
        assert_eq!(
            ArpRepr::parse(&p),
            ArpRepr {
                op: OP_REPLY,
                sha: me,
                spa: Ipv4Addr::new(1, 2, 3, 4),
                tha: MacAddr::BROADCAST,
                tpa: Ipv4Addr::new(5, 6, 7, 8)
            }
        );
    }

    #[test]
    fn captured_frames() {
        use crate::fixtures::{ARP_REPLY, ARP_REQUEST};
        let req = ArpRepr::parse(&ArpPacket::new_checked(&ARP_REQUEST[14..]).unwrap());
        let rep = ArpRepr::parse(&ArpPacket::new_checked(&ARP_REPLY[14..]).unwrap());
        assert_eq!(req.op, OP_REQUEST);
        assert_eq!(req.spa, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(req.tpa, Ipv4Addr::new(10, 0, 0, 2));
        // The kernel's reply is exactly what reply_to builds.
        assert_eq!(ArpRepr::reply_to(&req, MacAddr([2, 0, 0, 0, 0, 2])), rep);
        let mut out = [0u8; 28];
        rep.emit(&mut out).unwrap();
        assert_eq!(&out[..], &ARP_REPLY[14..]);
    }

    #[test]
    fn rejects() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(),
            ParseError::Truncated
        );
        for (i, v) in [(1usize, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[i] = v;
            assert_eq!(
                ArpPacket::new_checked(&b[..]).unwrap_err(),
                ParseError::BadArp
            );
        }
        assert_eq!(
            ArpRepr::request(MacAddr::ZERO, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
                .emit(&mut [0u8; 27]),
            Err(EmitError::BufferTooSmall {
                needed: 28,
                available: 27
            })
        );
    }
}
