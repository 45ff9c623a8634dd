//! The Internet checksum (RFC 1071): ones' complement sums, folding, the IPv4
//! pseudo-header, and incremental updates (RFC 1624, eqn. 3).
//!
//! Conventions: a *sum* (`u32`) is an unfolded ones' complement accumulator; a
//! *checksum* (`u16`) is the value stored in a header, `!fold(sum)`.
//!
//! Incremental updates use RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, which
//! never produces the spurious `0x0000`/`0xffff` confusion of eqn. 2 for
//! headers that are not all zero. UDP differs: a stored checksum of zero means
//! "no checksum" and stays zero on update, and a computed zero is sent as
//! `0xffff` ([`udp_update16`], [`udp_update32`], [`udp_finish`]).

use std::net::Ipv4Addr;

/// Ones' complement sum of `data` as big-endian 16-bit words (an odd trailing
/// byte is padded with zero), returned unfolded. Combine several with
/// [`combine`]; finish with [`fold`] or [`finish`].
///
/// Only the first byte of a region can be at an odd offset inside the whole
/// checksummed area if the caller accounts for it; for regions starting at an
/// odd offset use [`sum_at`].
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // Big-endian 32-bit words are summed into a u64 accumulator: since
    // 2^16 ≡ 1 (mod 0xffff), a 32-bit word contributes the same as its two
    // 16-bit halves. No realistic length can overflow the u64.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let rem = chunks.remainder();
    let mut pairs = rem.chunks_exact(2);
    for c in &mut pairs {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold64(acc)
}

/// Ones' complement sum of `data` placed at byte offset `offset` of the
/// checksummed area: at an odd offset the bytes pair up shifted by one, which
/// byte-swaps their contribution (RFC 1071 §2(B)).
#[inline]
pub fn sum_at(data: &[u8], offset: usize) -> u32 {
    let s = u32::from(fold(sum(data)));
    if offset % 2 == 1 {
        u32::from((s as u16).swap_bytes())
    } else {
        s
    }
}

#[inline]
fn fold64(mut acc: u64) -> u32 {
    // Two folds bring any u64 below 2^17; the result fits in u32.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc as u32
}

/// Fold an unfolded sum to 16 bits with end-around carry.
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Add two unfolded sums (ones' complement addition, no overflow).
#[inline]
pub fn combine(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    // Re-inject the carry out of bit 31 (2^32 ≡ 1 mod 0xffff).
    s.wrapping_add(u32::from(carry))
}

/// The checksum field value for an unfolded sum: `!fold(sum)`.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// The Internet checksum of `data` (e.g. an IPv4 header with its checksum
/// field zeroed, or an ICMP message).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// True when `data`, including its stored checksum field, sums to `0xffff`
/// (the receiver's check).
#[inline]
pub fn verify(data: &[u8]) -> bool {
    fold(sum(data)) == 0xffff
}

/// Unfolded sum of the IPv4 pseudo-header used by TCP and UDP:
/// source, destination, zero + protocol, and the L4 length.
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u32) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16)
        + (s & 0xffff)
        + (d >> 16)
        + (d & 0xffff)
        + u32::from(protocol)
        + (l4_len >> 16)
        + (l4_len & 0xffff)
}

/// RFC 1624 eqn. 3 for a 16-bit field (aligned on an even offset) changing
/// from `old` to `new`: returns the new checksum.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!hc) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// RFC 1624 eqn. 3 for a 32-bit field (e.g. an IPv4 address, aligned on an
/// even offset) changing from `old` to `new`.
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!hc)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

/// RFC 1624 eqn. 3 for an arbitrary byte region at byte offset `offset` of
/// the checksummed area whose contents change from `old` to `new` (same
/// length; odd offsets handled). Used e.g. for a TCP MSS option at an odd offset.
#[inline]
pub fn update_bytes(hc: u16, offset: usize, old: &[u8], new: &[u8]) -> u16 {
    let o = sum_at(old, offset) as u16;
    let n = sum_at(new, offset) as u16;
    update16(hc, o, n)
}

/// Turn a freshly computed UDP checksum into its wire form: a computed zero
/// is sent as `0xffff` (RFC 768), since zero means "no checksum".
#[inline]
pub fn udp_finish(csum: u16) -> u16 {
    if csum == 0 {
        0xffff
    } else {
        csum
    }
}

/// [`update16`] for a UDP checksum: zero (no checksum) stays zero, and a
/// result of zero is sent as `0xffff`.
#[inline]
pub fn udp_update16(hc: u16, old: u16, new: u16) -> u16 {
    if hc == 0 {
        0
    } else {
        udp_finish(update16(hc, old, new))
    }
}

/// [`update32`] for a UDP checksum: zero (no checksum) stays zero, and a
/// result of zero is sent as `0xffff`.
#[inline]
pub fn udp_update32(hc: u16, old: u32, new: u32) -> u16 {
    if hc == 0 {
        0
    } else {
        udp_finish(update32(hc, old, new))
    }
}

/// The new TCP checksum after an IPv4 address in the pseudo-header changed
/// (SNAT/DNAT rewrite of the IP source or destination).
#[inline]
pub fn tcp_update_addr(hc: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update32(hc, u32::from(old), u32::from(new))
}

/// The new UDP checksum after an IPv4 address in the pseudo-header changed;
/// a zero checksum (none) stays zero.
#[inline]
pub fn udp_update_addr(hc: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    udp_update32(hc, u32::from(old), u32::from(new))
}

/// The new TCP checksum after a port changed.
#[inline]
pub fn tcp_update_port(hc: u16, old: u16, new: u16) -> u16 {
    update16(hc, old, new)
}

/// The new UDP checksum after a port changed; a zero checksum stays zero.
#[inline]
pub fn udp_update_port(hc: u16, old: u16, new: u16) -> u16 {
    udp_update16(hc, old, new)
}

/// The new ICMP checksum after the echo identifier changed (ICMP has no
/// pseudo-header, so address changes do not affect it).
#[inline]
pub fn icmp_update_id(hc: u16, old: u16, new: u16) -> u16 {
    update16(hc, old, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// IPv4 header from RFC 1071-style worked example (Wikipedia "IPv4 header checksum").
    const IP_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn known_ipv4_header_checksum() {
        let mut h = IP_HDR;
        assert!(verify(&h));
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn rfc1071_example_sum() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (folded).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d)), 0xddf2);
        // Odd length: trailing byte is padded with zero.
        assert_eq!(fold(sum(&[0x01])), 0x0100);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285, HC' = 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn udp_zero_rules() {
        assert_eq!(udp_update16(0, 1, 2), 0);
        assert_eq!(udp_update32(0, 1, 2), 0);
        assert_eq!(udp_finish(0), 0xffff);
        // RFC 1624 example result is zero: UDP must send 0xffff instead.
        assert_eq!(udp_update16(0xdd2f, 0x5555, 0x3285), 0xffff);
    }

    #[test]
    fn sum_at_odd_offset_matches_full() {
        let data = [0x12u8, 0x34, 0x56, 0x78, 0x9a];
        let whole = fold(sum(&data));
        let part = fold(combine(sum_at(&data[..1], 0), sum_at(&data[1..], 1)));
        assert_eq!(whole, part);
    }

    #[test]
    fn combine_carries() {
        // 2^32 ≡ 1 (mod 0xffff): the carry out of bit 31 comes back as 1.
        assert_eq!(combine(0xffff_ffff, 1), 1);
        assert_eq!(combine(u32::MAX, 2), 2);
    }

    fn full(data: &[u8]) -> u16 {
        checksum(data)
    }

    /// Reference: RFC 1071 sum, one 16-bit word at a time.
    fn naive_sum(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for (i, b) in data.iter().enumerate() {
            acc += if i % 2 == 0 {
                u64::from(*b) << 8
            } else {
                u64::from(*b)
            };
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    proptest! {
        #[test]
        fn sum_equals_naive(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(fold(sum(&data)), naive_sum(&data));
        }

        /// An even-aligned 16-bit change updated incrementally equals a full recompute.
        #[test]
        fn incr16_equals_full(mut data in proptest::collection::vec(any::<u8>(), 4..64),
                              idx in 0usize..32, new in any::<u16>()) {
            // Keep the data non-zero somewhere constant so the ±0 ambiguity cannot arise
            // (a real header always has a non-zero byte: version, protocol...).
            data[0] = 0x45;
            let words = data.len() / 2;
            let i = 1 + idx % (words - 1);
            let hc = full(&data);
            let old = u16::from_be_bytes([data[2 * i], data[2 * i + 1]]);
            data[2 * i..2 * i + 2].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update16(hc, old, new), full(&data));
        }

        #[test]
        fn incr32_equals_full(mut data in proptest::collection::vec(any::<u8>(), 8..64),
                              idx in 0usize..32, new in any::<u32>()) {
            data[0] = 0x45;
            let words = data.len() / 2;
            let i = 1 + idx % (words - 2);
            let hc = full(&data);
            let old = u32::from_be_bytes([data[2*i], data[2*i+1], data[2*i+2], data[2*i+3]]);
            data[2 * i..2 * i + 4].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update32(hc, old, new), full(&data));
        }

        #[test]
        fn incr_bytes_any_offset_equals_full(mut data in proptest::collection::vec(any::<u8>(), 8..64),
                                             off in 1usize..60, new in proptest::collection::vec(any::<u8>(), 1..5)) {
            data[0] = 0x45;
            let off = 1 + off % (data.len() - new.len());
            let hc = full(&data);
            let old = data[off..off + new.len()].to_vec();
            data[off..off + new.len()].copy_from_slice(&new);
            prop_assert_eq!(update_bytes(hc, off, &old, &new), full(&data));
        }

        /// UDP: incremental result always verifies like a full recompute (modulo the
        /// 0 -> 0xffff transmission rule).
        #[test]
        fn udp_incr_equals_full(mut data in proptest::collection::vec(any::<u8>(), 8..64),
                                new in any::<u32>()) {
            data[0] = 0x11;
            data[6] = 0; data[7] = 0;
            let c = udp_finish(full(&data));
            data[6..8].copy_from_slice(&c.to_be_bytes());
            let old = u32::from_be_bytes([data[2], data[3], data[4], data[5]]);
            data[2..6].copy_from_slice(&new.to_be_bytes());
            let inc = udp_update32(c, old, new);
            data[6..8].copy_from_slice(&[0, 0]);
            let fresh = udp_finish(full(&data));
            prop_assert_eq!(inc, fresh);
        }

        #[test]
        fn pseudo_header_matches_bytes(s in any::<u32>(), d in any::<u32>(), p in any::<u8>(), l in any::<u16>()) {
            let mut b = Vec::new();
            b.extend_from_slice(&s.to_be_bytes());
            b.extend_from_slice(&d.to_be_bytes());
            b.push(0); b.push(p);
            b.extend_from_slice(&l.to_be_bytes());
            prop_assert_eq!(fold(pseudo_header_sum(Ipv4Addr::from(s), Ipv4Addr::from(d), p, u32::from(l))), fold(sum(&b)));
        }
    }
}
