//! TCP segments (RFC 9293): header view, options iterator, MSS clamping.

use std::net::Ipv4Addr;

use crate::checksum;
use crate::ipv4::PROTO_TCP;
use crate::parse::ParseError;
use crate::{need, rd16, rd32, rd8, wr16, wr32, EmitError};

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Length of a TCP header with the maximum 40 bytes of options.
pub const MAX_HEADER_LEN: usize = 60;

/// TCP flag bits, as in the 14th header byte (and `iptables --tcp-flags`).
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// TCP option kinds used here.
pub mod option {
    /// End of option list.
    pub const EOL: u8 = 0;
    /// No operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size (length 4).
    pub const MSS: u8 = 2;
    /// Window scale (length 3).
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted (length 2).
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks.
    pub const SACK: u8 = 5;
    /// Timestamps (length 10).
    pub const TIMESTAMPS: u8 = 8;
}

/// Field offsets of the TCP header.
pub mod field {
    use crate::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Sequence number.
    pub const SEQ: Field = 4..8;
    /// Acknowledgment number.
    pub const ACK: Field = 8..12;
    /// Data offset (high nibble, 32-bit words) and reserved bits.
    pub const DATA_OFFSET: usize = 12;
    /// Flags (CWR ECE URG ACK PSH RST SYN FIN).
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WINDOW: Field = 14..16;
    /// Checksum.
    pub const CHECKSUM: Field = 16..18;
    /// Urgent pointer.
    pub const URGENT: Field = 18..20;
    /// Options start.
    pub const OPTIONS_START: usize = 20;
}

/// One TCP option: its kind and its data (without the kind and length bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOption<'a> {
    /// Option kind.
    pub kind: u8,
    /// Option data (empty for NOP and for kinds without data).
    pub data: &'a [u8],
}

/// Non-allocating iterator over TCP options. Yields NOPs; stops at EOL, at
/// the end, or at the first malformed option (length < 2 or running past the
/// end) without panicking. Each step consumes at least one byte, so at most
/// 40 steps for a valid header.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> TcpOptions<'a> {
    /// Iterate over an options area (the header bytes after the first 20).
    pub fn new(options: &'a [u8]) -> Self {
        TcpOptions { rest: options }
    }

    /// Like [`Iterator::next`], also returning the option's offset in the
    /// options area; used to locate options for in-place updates.
    fn next_with_offset(&mut self, base: &'a [u8]) -> Option<(usize, TcpOption<'a>)> {
        let off = base.len() - self.rest.len();
        self.next().map(|o| (off, o))
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = TcpOption<'a>;

    fn next(&mut self) -> Option<TcpOption<'a>> {
        let (&kind, tail) = self.rest.split_first()?;
        match kind {
            option::EOL => {
                self.rest = &[];
                None
            }
            option::NOP => {
                self.rest = tail;
                Some(TcpOption { kind, data: &[] })
            }
            _ => {
                let len = usize::from(*tail.first().unwrap_or(&0));
                if len < 2 || len > self.rest.len() {
                    self.rest = &[];
                    return None;
                }
                let data = &self.rest[2..len];
                self.rest = &self.rest[len..];
                Some(TcpOption { kind, data })
            }
        }
    }
}

/// A view of a TCP segment (the IPv4 payload, bounded by the total length).
///
/// After [`TcpPacket::new_checked`] succeeds, no accessor or setter panics.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap a TCP segment. Errors: [`ParseError::Truncated`] (fewer than 20
    /// bytes), [`ParseError::BadDataOffset`] (data offset < 5 words or beyond
    /// the segment).
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let hl = usize::from(b[field::DATA_OFFSET] >> 4) * 4;
        if hl < MIN_HEADER_LEN || hl > b.len() {
            return Err(ParseError::BadDataOffset);
        }
        Ok(TcpPacket { buffer })
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

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        rd32(self.b(), field::SEQ.start)
    }

    /// Acknowledgment number.
    pub fn ack(&self) -> u32 {
        rd32(self.b(), field::ACK.start)
    }

    /// Header length in bytes (data offset * 4), 20..=60.
    pub fn header_len(&self) -> usize {
        usize::from(rd8(self.b(), field::DATA_OFFSET) >> 4) * 4
    }

    /// Flags byte (see [`flags`]).
    pub fn flags(&self) -> u8 {
        rd8(self.b(), field::FLAGS)
    }

    /// Window.
    pub fn window(&self) -> u16 {
        rd16(self.b(), field::WINDOW.start)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        rd16(self.b(), field::CHECKSUM.start)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        rd16(self.b(), field::URGENT.start)
    }

    /// The options area (header bytes after the first 20), possibly empty.
    pub fn options(&self) -> &[u8] {
        let hl = self.header_len();
        self.b().get(field::OPTIONS_START..hl).unwrap_or(&[])
    }

    /// Iterate over the options.
    pub fn options_iter(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options())
    }

    /// Bit N of word N/64 set when option kind N is present (for
    /// `-m tcp --tcp-option N`; EOL and NOP are included when seen).
    pub fn option_kinds(&self) -> [u64; 4] {
        let mut set = [0u64; 4];
        for o in self.options_iter() {
            set[usize::from(o.kind >> 6)] |= 1u64 << (o.kind & 63);
        }
        set
    }

    /// The MSS option value, if present and well-formed (kind 2, length 4).
    pub fn mss(&self) -> Option<u16> {
        self.options_iter()
            .find(|o| o.kind == option::MSS && o.data.len() == 2)
            .map(|o| u16::from_be_bytes([o.data[0], o.data[1]]))
    }

    /// The payload after the header.
    pub fn payload(&self) -> &[u8] {
        let hl = self.header_len();
        self.b().get(hl..).unwrap_or(&[])
    }

    /// True when the checksum is correct for this segment between `src` and `dst`.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.b();
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, PROTO_TCP, b.len() as u32),
            checksum::sum(b),
        );
        checksum::fold(s) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    fn set_checksum(&mut self, c: u16) {
        wr16(self.bm(), field::CHECKSUM.start, c);
    }

    /// Set the source port, updating the checksum incrementally.
    pub fn set_src_port(&mut self, port: u16) {
        let c = checksum::tcp_update_port(self.checksum(), self.src_port(), port);
        wr16(self.bm(), field::SRC_PORT.start, port);
        self.set_checksum(c);
    }

    /// Set the destination port, updating the checksum incrementally.
    pub fn set_dst_port(&mut self, port: u16) {
        let c = checksum::tcp_update_port(self.checksum(), self.dst_port(), port);
        wr16(self.bm(), field::DST_PORT.start, port);
        self.set_checksum(c);
    }

    /// Update the checksum for a pseudo-header address change (the IPv4
    /// source or destination rewritten from `old` to `new`).
    pub fn update_pseudo_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let c = checksum::tcp_update_addr(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Set the MSS option value when present, updating the checksum
    /// incrementally (correct at odd offsets too). Returns the old value, or
    /// `None` (nothing changed) when the segment has no well-formed MSS option.
    pub fn set_mss(&mut self, mss: u16) -> Option<u16> {
        let (off, old) = {
            let opts = self.options();
            let mut it = TcpOptions::new(opts);
            let mut found = None;
            while let Some((off, o)) = it.next_with_offset(opts) {
                if o.kind == option::MSS && o.data.len() == 2 {
                    found = Some((off, u16::from_be_bytes([o.data[0], o.data[1]])));
                    break;
                }
            }
            found?
        };
        // Value offset in the segment: options start + kind + length bytes.
        let at = field::OPTIONS_START + off + 2;
        let c = checksum::update_bytes(self.checksum(), at, &old.to_be_bytes(), &mss.to_be_bytes());
        wr16(self.bm(), at, mss);
        self.set_checksum(c);
        Some(old)
    }

    /// Lower the MSS option to `max` when it is larger (`-j TCPMSS
    /// --set-mss`/`--clamp-mss-to-pmtu`); returns the MSS now in the segment
    /// (`None` when there is no MSS option). The caller restricts this to SYN segments.
    pub fn clamp_mss(&mut self, max: u16) -> Option<u16> {
        let cur = self.mss()?;
        if cur > max {
            self.set_mss(max);
            Some(max)
        } else {
            Some(cur)
        }
    }

    /// Recompute the checksum from scratch for a segment between `src` and `dst`.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.b();
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, PROTO_TCP, b.len() as u32),
            checksum::sum(b),
        );
        self.set_checksum(checksum::finish(s));
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        self.bm().get_mut(hl..).unwrap_or(&mut [])
    }
}

/// The parsed form of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags (see [`flags`]).
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Options, emitted padded with zeros (EOL) to a multiple of 4 bytes.
    pub options: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// Parse a checked view (the checksum is not verified).
    pub fn parse<T: AsRef<[u8]>>(p: &'a TcpPacket<T>) -> Self {
        TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq: p.seq(),
            ack: p.ack(),
            flags: p.flags(),
            window: p.window(),
            urgent: p.urgent(),
            options: p.options(),
            payload: p.payload(),
        }
    }

    /// Header length this repr emits.
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.len().div_ceil(4) * 4
    }

    /// Header plus payload length.
    pub fn segment_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Write header, options and payload at the start of `buf`, with the
    /// checksum for `src` -> `dst`; returns the segment length.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<usize, EmitError> {
        if self.options.len() > MAX_HEADER_LEN - MIN_HEADER_LEN {
            return Err(EmitError::OptionsTooLong(self.options.len()));
        }
        let hl = self.header_len();
        let len = self.segment_len();
        if len > usize::from(u16::MAX) {
            return Err(EmitError::TooLong(len));
        }
        need(buf, len)?;
        let seg = &mut buf[..len];
        seg[..hl].fill(0);
        wr16(seg, field::SRC_PORT.start, self.src_port);
        wr16(seg, field::DST_PORT.start, self.dst_port);
        wr32(seg, field::SEQ.start, self.seq);
        wr32(seg, field::ACK.start, self.ack);
        seg[field::DATA_OFFSET] = ((hl / 4) as u8) << 4;
        seg[field::FLAGS] = self.flags;
        wr16(seg, field::WINDOW.start, self.window);
        wr16(seg, field::URGENT.start, self.urgent);
        seg[field::OPTIONS_START..field::OPTIONS_START + self.options.len()]
            .copy_from_slice(self.options);
        seg[hl..].copy_from_slice(self.payload);
        let s = checksum::combine(
            checksum::pseudo_header_sum(src, dst, PROTO_TCP, len as u32),
            checksum::sum(seg),
        );
        wr16(seg, field::CHECKSUM.start, checksum::finish(s));
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// TCP SYN 10.0.0.1:40000 -> 10.0.0.2:80 with Linux's usual options
    /// (MSS 1460, SACK-permitted, timestamps, NOP, window scale 7).
    static SYN: [u8; 40] = [
        0x9c, 0x40, 0x00, 0x50, 0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01,
        0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    fn syn() -> [u8; 40] {
        let mut b = SYN;
        TcpPacket::new_checked(&mut b[..])
            .unwrap()
            .fill_checksum(SRC, DST);
        b
    }

    #[test]
    fn fields_and_options() {
        let b = syn();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq(), 0x1122_3344);
        assert_eq!(p.ack(), 0);
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), flags::SYN);
        assert_eq!(p.window(), 64240);
        assert_eq!(p.mss(), Some(1460));
        let kinds: Vec<u8> = p.options_iter().map(|o| o.kind).collect();
        assert_eq!(kinds, vec![2, 4, 8, 1, 3]);
        let ws = p.options_iter().find(|o| o.kind == 3).unwrap();
        assert_eq!(ws.data, &[7]);
        let set = p.option_kinds();
        assert_eq!(set[0], (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 8));
        assert!(p.payload().is_empty());
    }

    #[test]
    fn malformed_options_stop() {
        let cases: [&[u8]; 6] = [
            &[2, 0, 5, 0xb4],    // length 0
            &[2, 1, 5, 0xb4],    // length 1
            &[2, 9, 5, 0xb4],    // runs past the end
            &[2],                // no length byte
            &[0, 2, 4, 5, 0xb4], // EOL first
            &[],
        ];
        for c in cases {
            assert_eq!(TcpOptions::new(c).count(), 0, "{c:?}");
        }
        let v: Vec<_> = TcpOptions::new(&[1, 1, 2, 4, 1, 0, 3]).collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].data, &[1, 0]);
    }

    #[test]
    fn port_setters_and_pseudo() {
        let mut b = syn();
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(55666);
        p.set_dst_port(8080);
        assert!(p.verify_checksum(SRC, DST));
        let nsrc = Ipv4Addr::new(192, 168, 1, 9);
        p.update_pseudo_addr(SRC, nsrc);
        assert!(p.verify_checksum(nsrc, DST));
        assert!(!p.verify_checksum(SRC, DST));
    }

    #[test]
    fn mss_even_and_odd_offsets() {
        let mut b = syn();
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.clamp_mss(1500), Some(1460));
        assert_eq!(p.clamp_mss(1400), Some(1400));
        assert_eq!(p.mss(), Some(1400));
        assert!(p.verify_checksum(SRC, DST));

        // NOP then MSS: the MSS value sits at odd offset 23.
        let mut b = [0u8; 28];
        b[12] = 0x70;
        b[13] = flags::SYN;
        b[20..25].copy_from_slice(&[1, 2, 4, 0x05, 0xb4]);
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(SRC, DST);
        assert_eq!(p.set_mss(1234), Some(1460));
        assert_eq!(p.mss(), Some(1234));
        assert!(p.verify_checksum(SRC, DST));

        let mut b = [0u8; 20];
        b[12] = 0x50;
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.set_mss(1), None);
        assert_eq!(p.clamp_mss(1), None);
    }

    #[test]
    fn captured_syn() {
        use crate::fixtures::TCP_SYN;
        let p = TcpPacket::new_checked(&TCP_SYN[34..]).unwrap();
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.verify_checksum(s, d));
        assert_eq!((p.src_port(), p.dst_port()), (60358, 8080));
        assert_eq!(p.seq(), 3684010667);
        assert_eq!(p.flags(), flags::SYN);
        assert_eq!(p.mss(), Some(1460));
        let ws = p
            .options_iter()
            .find(|o| o.kind == option::WINDOW_SCALE)
            .unwrap();
        assert_eq!(ws.data, &[10]);
        let mut b = TCP_SYN;
        let mut p = TcpPacket::new_checked(&mut b[34..]).unwrap();
        assert_eq!(p.clamp_mss(1452), Some(1452));
        assert!(p.verify_checksum(s, d));
        let c = p.checksum();
        p.fill_checksum(s, d);
        assert_eq!(p.checksum(), c);
    }

    #[test]
    fn errors() {
        let b = syn();
        assert_eq!(
            TcpPacket::new_checked(&b[..19]).unwrap_err(),
            ParseError::Truncated
        );
        assert_eq!(
            TcpPacket::new_checked(&b[..39]).unwrap_err(),
            ParseError::BadDataOffset
        );
        let mut c = b;
        c[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&c[..]).unwrap_err(),
            ParseError::BadDataOffset
        );
    }

    #[test]
    fn repr_roundtrip() {
        let b = syn();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        let r = TcpRepr::parse(&p);
        let mut out = [0u8; 64];
        assert_eq!(r.emit(&mut out, SRC, DST), Ok(40));
        assert_eq!(&out[..40], &b[..]);
        let with_payload = TcpRepr {
            payload: b"hello",
            options: &[2, 4, 5, 0xb4, 1],
            ..r
        };
        let n = with_payload.emit(&mut out, SRC, DST).unwrap();
        assert_eq!(n, 20 + 8 + 5);
        let q = TcpPacket::new_checked(&out[..n]).unwrap();
        assert!(q.verify_checksum(SRC, DST));
        assert_eq!(q.payload(), b"hello");
        assert_eq!(q.options(), &[2, 4, 5, 0xb4, 1, 0, 0, 0]);
        assert_eq!(
            r.emit(&mut [0u8; 39], SRC, DST),
            Err(EmitError::BufferTooSmall {
                needed: 40,
                available: 39
            })
        );
    }
}
