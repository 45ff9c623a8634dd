//! The stamp every generated frame carries at the start of its L4 payload:
//! a magic, the sequence number of the frame in its generator run, and the
//! `CLOCK_MONOTONIC` time it was written at.
//!
//! Layout (18 bytes, big-endian), so that a 60-byte UDP frame (the Ethernet
//! minimum without FCS: 14 + 20 + 8 + 18) carries it whole:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..2 | [`MAGIC`] |
//! | 2..10 | sequence number |
//! | 10..18 | timestamp, ns |
//!
//! Two magic bytes are few: the sink also requires a correct L4 checksum
//! before it trusts a stamp (see [`crate::sink`]): a frame from elsewhere
//! that happens to start with the magic rarely has one, and a router that
//! rewrites the frame (NAT) must keep it correct.

use fastables_packet::Field;

/// The first two payload bytes of a generated frame.
pub const MAGIC: [u8; 2] = [0xfa, 0x57];

/// Bytes of the stamp.
pub const LEN: usize = 18;

/// Field offsets in the stamp.
pub mod field {
    use super::Field;
    /// The magic.
    pub const MAGIC: Field = 0..2;
    /// The sequence number.
    pub const SEQ: Field = 2..10;
    /// The timestamp.
    pub const TS: Field = 10..18;
}

/// What a stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number in the generator run, from 0.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` when the frame was written, ns.
    pub ts_ns: u64,
}

impl Stamp {
    /// Writes the stamp at the start of `buf`; false (nothing written) when
    /// `buf` is shorter than [`LEN`].
    pub fn encode(&self, buf: &mut [u8]) -> bool {
        let Some(b) = buf.first_chunk_mut::<LEN>() else {
            return false;
        };
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        b[field::TS].copy_from_slice(&self.ts_ns.to_be_bytes());
        true
    }

    /// The stamp at the start of `buf`: None when it is too short or does
    /// not start with the magic. Never panics.
    pub fn decode(buf: &[u8]) -> Option<Stamp> {
        let b = buf.first_chunk::<LEN>()?;
        if b[field::MAGIC] != MAGIC {
            return None;
        }
        let word = |f: Field| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[f]);
            u64::from_be_bytes(w)
        };
        Some(Stamp {
            seq: word(field::SEQ),
            ts_ns: word(field::TS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// seq 0x0102030405060708, ts 0x1112131415161718, hand-laid.
    static STAMP: [u8; LEN] = [
        0xfa, 0x57, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x11, 0x12, 0x13, 0x14, 0x15,
        0x16, 0x17, 0x18,
    ];

    #[test]
    fn encodes_the_documented_layout() {
        let s = Stamp {
            seq: 0x0102_0304_0506_0708,
            ts_ns: 0x1112_1314_1516_1718,
        };
        let mut b = [0u8; 20];
        assert!(s.encode(&mut b));
        assert_eq!(b[..LEN], STAMP);
        assert_eq!(b[LEN..], [0, 0]);
        assert_eq!(Stamp::decode(&b), Some(s));
    }

    #[test]
    fn round_trips_extreme_values() {
        for (seq, ts_ns) in [(0, 0), (u64::MAX, u64::MAX), (1, u64::MAX - 1)] {
            let s = Stamp { seq, ts_ns };
            let mut b = [0u8; LEN];
            assert!(s.encode(&mut b));
            assert_eq!(Stamp::decode(&b), Some(s));
        }
    }

    #[test]
    fn short_or_foreign_payloads_are_not_stamps() {
        assert_eq!(Stamp::decode(&STAMP[..LEN - 1]), None);
        assert_eq!(Stamp::decode(&[]), None);
        let mut other = STAMP;
        other[1] ^= 1;
        assert_eq!(Stamp::decode(&other), None);
        let mut short = [0u8; LEN - 1];
        assert!(!Stamp { seq: 1, ts_ns: 1 }.encode(&mut short));
        assert_eq!(short, [0u8; LEN - 1]);
    }
}
