//! fastables-packet: zero-copy header views over byte slices, Internet
//! checksums (full and RFC 1624 incremental), whole-frame parsing, flow keys
//! ([`flow::Tuple`]), and frame builders for tests. It is also the one home of
//! the wire facts the other crates share: protocol numbers
//! ([`ipv4::PROTO_TCP`], ...), ICMP types ([`icmp::types`]), big-endian reads
//! ([`read_be16`], [`read_be32`]) and the interface index ([`IfIndex`]).
//!
//! What it is for: the data plane parses every received frame with
//! [`parse::parse_frame`] (one call, no allocation, no panics) and rewrites
//! headers in place through the views ([`ipv4::Ipv4Packet`], [`tcp::TcpPacket`],
//! ...) whose setters keep checksums correct incrementally.
//!
//! The views follow smoltcp: a view wraps any `T: AsRef<[u8]>` (read) or
//! `T: AsRef<[u8]> + AsMut<[u8]>` (write). `new_checked` validates lengths and
//! structural fields once; afterwards no accessor or setter panics, whatever
//! the bytes are. `*Repr` structs are the parsed form, with `emit` into a
//! caller-provided `&mut [u8]` (never allocating).
//!
//! What it is not: no I/O, no reassembly, no L4 checksum verification inside
//! [`parse::parse_frame`] (use [`parse::l4_checksum_ok`]). Only the
//! [`builder`] module allocates; it exists for tests and tools.
//!
//! Not supported, plainly:
//! - IPv6, 802.1ad (0x88a8) and stacked VLAN tags: reported as
//!   [`parse::L3::Other`] with their EtherType.
//! - IPv4 options are exposed as bytes but **not validated or processed**
//!   (the kernel's `ip_options_compile` drops malformed options and honours
//!   source routing; we do neither).
//! - Incremental L4 updates on a first fragment are correct (the checksum
//!   delta does not depend on the unseen data); full L4 checksum verification
//!   of fragments is not possible without reassembly and is skipped.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use fastables_packet::builder::{self, EthSpec, IpSpec, TcpSpec};
//! use fastables_packet::ipv4::Ipv4Packet;
//! use fastables_packet::parse::{l4_checksum_ok, parse_frame, L4};
//! use fastables_packet::tcp::TcpPacket;
//!
//! let mut frame = builder::tcp_frame(&EthSpec::default(), &IpSpec::default(), &TcpSpec::default(), b"");
//! let parsed = parse_frame(&frame).expect("valid frame");
//! let ip = parsed.ipv4().expect("IPv4");
//! assert!(matches!(ip.l4, L4::Tcp { dst_port: 80, .. }));
//!
//! // SNAT in place: IP source + TCP source port, checksums updated incrementally.
//! let new_src = Ipv4Addr::new(192, 0, 2, 1);
//! let mut ipv = Ipv4Packet::new_checked(&mut frame[parsed.l3_offset..]).expect("checked by parse_frame");
//! let old_src = ipv.src();
//! ipv.set_src(new_src);
//! ipv.set_ttl(ipv.ttl() - 1);
//! let mut tcp = TcpPacket::new_checked(ipv.payload_mut()).expect("complete TCP header");
//! tcp.update_pseudo_addr(old_src, new_src);
//! tcp.set_src_port(55666);
//! let again = parse_frame(&frame).expect("still valid");
//! assert!(l4_checksum_ok(&frame, &again));
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod arp;
pub mod builder;
pub mod checksum;
pub mod ethernet;
pub mod fixtures;
pub mod flow;
pub mod icmp;
pub mod ipv4;
pub mod parse;
pub mod tcp;
pub mod udp;

pub use ethernet::MacAddr;
pub use flow::Tuple;
pub use parse::{parse_frame, ParseError, ParsedFrame};

/// Interface index inside one fastables instance: 0..64 (the position in the
/// config's `[[interface]]` list). Interface matches compile to 64-bit masks.
pub type IfIndex = u8;

/// A byte range of a header field, as used by the `field` constants of each module.
pub type Field = core::ops::Range<usize>;

/// Why a `Repr::emit` could not write its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The output buffer is too short: give `emit` a buffer of at least `needed` bytes.
    #[error("buffer of {available} bytes is too small, {needed} bytes are needed")]
    BufferTooSmall {
        /// Bytes the header (plus payload, where the Repr carries one) needs.
        needed: usize,
        /// Bytes the caller provided.
        available: usize,
    },
    /// IPv4 or TCP options longer than 40 bytes (the header length field cannot express more).
    #[error("options of {0} bytes exceed the 40-byte maximum")]
    OptionsTooLong(usize),
    /// The datagram would exceed 65535 bytes (the IPv4 total length / UDP length limit).
    #[error("datagram of {0} bytes exceeds 65535 bytes")]
    TooLong(usize),
}

/// Check that `buf` has room for `needed` bytes.
#[inline]
pub(crate) fn need(buf: &[u8], needed: usize) -> Result<(), EmitError> {
    if buf.len() < needed {
        Err(EmitError::BufferTooSmall {
            needed,
            available: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// The big-endian (network order) u16 at `at`; `None` when `b` is too short
/// (never panics).
#[inline]
pub fn read_be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// The big-endian (network order) u32 at `at`; `None` when `b` is too short
/// (never panics).
#[inline]
pub fn read_be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// [`read_be16`], 0 when out of range: the views' accessors, whose length was
/// checked once by `new_checked`.
#[inline]
pub(crate) fn rd16(b: &[u8], off: usize) -> u16 {
    read_be16(b, off).unwrap_or(0)
}

/// [`read_be32`], 0 when out of range.
#[inline]
pub(crate) fn rd32(b: &[u8], off: usize) -> u32 {
    read_be32(b, off).unwrap_or(0)
}

/// Read the byte at `off`; 0 when out of range (never panics).
#[inline]
pub(crate) fn rd8(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

/// Write a big-endian u16 at `off`; does nothing when out of range.
#[inline]
pub(crate) fn wr16(b: &mut [u8], off: usize, v: u16) {
    if let Some(s) = b.get_mut(off..off + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Write a big-endian u32 at `off`; does nothing when out of range.
#[inline]
pub(crate) fn wr32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Write the byte at `off`; does nothing when out of range.
#[inline]
pub(crate) fn wr8(b: &mut [u8], off: usize, v: u8) {
    if let Some(x) = b.get_mut(off) {
        *x = v;
    }
}
