//! Ethernet II frames, with at most one 802.1Q VLAN tag, and MAC addresses.

use core::fmt;
use core::str::FromStr;

use crate::parse::ParseError;
use crate::{need, rd16, wr16, EmitError};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType (TPID) of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of IPv6 (recognised only to be counted as "other").
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet II header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;
/// Minimum Ethernet frame length without FCS; shorter frames are padded on transmit.
pub const MIN_FRAME_LEN: usize = 60;

/// Field offsets of the Ethernet II header.
pub mod field {
    use crate::Field;
    /// Destination MAC.
    pub const DST: Field = 0..6;
    /// Source MAC.
    pub const SRC: Field = 6..12;
    /// EtherType, or the 802.1Q TPID (0x8100) when tagged.
    pub const ETHERTYPE: Field = 12..14;
    /// 802.1Q tag control information (PCP, DEI, VLAN id), when tagged.
    pub const VLAN_TCI: Field = 14..16;
    /// EtherType following the 802.1Q tag, when tagged.
    pub const VLAN_ETHERTYPE: Field = 16..18;
}

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// True for `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// True when the group bit is set (multicast or broadcast).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// True for an individual (unicast) address.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    pub(crate) fn from_slice(b: &[u8]) -> MacAddr {
        let mut m = [0u8; 6];
        if let Some(s) = b.get(..6) {
            m.copy_from_slice(s);
        }
        MacAddr(m)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

/// Why a MAC address string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {0:?}: expected six hex octets separated by ':', like 52:54:00:12:34:56"
)]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Parses `aa:bb:cc:dd:ee:ff` (also `-` separators, one or two hex digits per octet).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(sep) {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| err())?;
            n += 1;
        }
        if n != 6 {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// A view of an Ethernet II frame, possibly carrying one 802.1Q tag.
///
/// After [`EthernetFrame::new_checked`] succeeds, no accessor or setter panics.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
    tagged: bool,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap a frame, checking that the header (14 bytes, or 18 with an 802.1Q
    /// tag) is present. Errors: [`ParseError::Truncated`].
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let tagged = rd16(b, field::ETHERTYPE.start) == ETHERTYPE_VLAN;
        if tagged && b.len() < VLAN_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        Ok(EthernetFrame { buffer, tagged })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    pub fn dst(&self) -> MacAddr {
        MacAddr::from_slice(self.buffer.as_ref().get(field::DST).unwrap_or(&[]))
    }

    /// Source MAC.
    pub fn src(&self) -> MacAddr {
        let b = self.buffer.as_ref();
        MacAddr::from_slice(b.get(field::SRC).unwrap_or(&[]))
    }

    /// True when an 802.1Q tag is present.
    pub fn is_vlan_tagged(&self) -> bool {
        self.tagged
    }

    /// The 802.1Q tag control information, when tagged.
    pub fn vlan_tci(&self) -> Option<u16> {
        self.tagged
            .then(|| rd16(self.buffer.as_ref(), field::VLAN_TCI.start))
    }

    /// The 12-bit VLAN id, when tagged.
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|t| t & 0x0fff)
    }

    /// The EtherType of the payload (after the VLAN tag when tagged).
    pub fn ethertype(&self) -> u16 {
        rd16(self.buffer.as_ref(), self.header_len() - 2)
    }

    /// Header length and offset of the L3 header: 14, or 18 when tagged.
    pub fn header_len(&self) -> usize {
        if self.tagged {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The payload (L3 packet plus any trailing padding).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Set the destination MAC.
    pub fn set_dst(&mut self, mac: MacAddr) {
        if let Some(s) = self.buffer.as_mut().get_mut(field::DST) {
            s.copy_from_slice(&mac.0);
        }
    }

    /// Set the source MAC.
    pub fn set_src(&mut self, mac: MacAddr) {
        if let Some(s) = self.buffer.as_mut().get_mut(field::SRC) {
            s.copy_from_slice(&mac.0);
        }
    }

    /// Set the payload EtherType (after the VLAN tag when tagged).
    pub fn set_ethertype(&mut self, ethertype: u16) {
        let off = self.header_len() - 2;
        wr16(self.buffer.as_mut(), off, ethertype);
    }

    /// Set the 12-bit VLAN id, keeping PCP/DEI; does nothing when untagged.
    pub fn set_vlan_id(&mut self, vid: u16) {
        if let Some(tci) = self.vlan_tci() {
            wr16(
                self.buffer.as_mut(),
                field::VLAN_TCI.start,
                (tci & 0xf000) | (vid & 0x0fff),
            );
        }
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        self.buffer.as_mut().get_mut(hl..).unwrap_or(&mut [])
    }
}

/// The parsed form of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Source MAC.
    pub src: MacAddr,
    /// Destination MAC.
    pub dst: MacAddr,
    /// 802.1Q VLAN id (12 bits), when tagged (PCP and DEI are emitted as zero).
    pub vlan: Option<u16>,
    /// Payload EtherType.
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Parse a checked view.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Self {
        EthernetRepr {
            src: frame.src(),
            dst: frame.dst(),
            vlan: frame.vlan_id(),
            ethertype: frame.ethertype(),
        }
    }

    /// Header length this repr emits: 14, or 18 with a VLAN tag.
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Write the header at the start of `buf`; returns the header length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let hl = self.header_len();
        need(buf, hl)?;
        buf[field::DST].copy_from_slice(&self.dst.0);
        buf[field::SRC].copy_from_slice(&self.src.0);
        match self.vlan {
            Some(vid) => {
                wr16(buf, field::ETHERTYPE.start, ETHERTYPE_VLAN);
                wr16(buf, field::VLAN_TCI.start, vid & 0x0fff);
                wr16(buf, field::VLAN_ETHERTYPE.start, self.ethertype);
            }
            None => wr16(buf, field::ETHERTYPE.start, self.ethertype),
        }
        Ok(hl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured frame start: broadcast ARP from 52:54:00:12:35:02 (untagged).
    static UNTAGGED: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x35, 0x02, 0x08, 0x06, 0x00,
        0x01,
    ];
    /// Tagged frame: VLAN 100 (PCP 3), inner IPv4.
    static TAGGED: [u8; 20] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x81, 0x00, 0x60,
        0x64, 0x08, 0x00, 0x45, 0x00,
    ];

    #[test]
    fn untagged() {
        let f = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(f.src().to_string(), "52:54:00:12:35:02");
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.payload(), &[0x00, 0x01]);
    }

    #[test]
    fn tagged() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.vlan_tci(), Some(0x6064));
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0x45, 0x00]);
        let r = EthernetRepr::parse(&f);
        let mut out = [0u8; 18];
        assert_eq!(r.emit(&mut out), Ok(18));
        // PCP is not kept by the repr.
        assert_eq!(out[14], 0x00);
        assert_eq!(&out[15..], &TAGGED[15..18]);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&UNTAGGED[..13]).unwrap_err(),
            ParseError::Truncated
        );
        assert_eq!(
            EthernetFrame::new_checked(&TAGGED[..17]).unwrap_err(),
            ParseError::Truncated
        );
    }

    #[test]
    fn setters() {
        let mut buf = TAGGED;
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst("aa:bb:cc:dd:ee:ff".parse().unwrap());
        f.set_src(MacAddr([1, 2, 3, 4, 5, 6]));
        f.set_ethertype(ETHERTYPE_ARP);
        f.set_vlan_id(7);
        assert_eq!(f.dst().to_string(), "aa:bb:cc:dd:ee:ff");
        assert_eq!(f.src(), MacAddr([1, 2, 3, 4, 5, 6]));
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.vlan_tci(), Some(0x6007));
    }

    #[test]
    fn mac_parse() {
        assert_eq!(
            "52-54-00-c2-be-11".parse::<MacAddr>().unwrap(),
            MacAddr([0x52, 0x54, 0, 0xc2, 0xbe, 0x11])
        );
        assert_eq!(
            "2:42:ac:12:0:1".parse::<MacAddr>().unwrap().to_string(),
            "02:42:ac:12:00:01"
        );
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:fg",
            "aaa:bb:cc:dd:ee:f",
            "aa::cc:dd:ee:ff",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(MacAddr([1, 0, 0, 0, 0, 0]).is_multicast());
        assert!(MacAddr([2, 0, 0, 0, 0, 0]).is_unicast());
    }
}
