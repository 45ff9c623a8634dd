//! Receive-side scaling as a NIC does it: the Toeplitz hash of a packet's
//! addresses (and ports, for TCP and UDP) with a 40-byte key, and an
//! indirection table from the hash's low bits to a queue (`ethtool -x`).
//!
//! With one worker per queue, a NAT reply carries the translated tuple and so
//! hashes differently from the original; SNAT picks a port whose reply tuple
//! lands on the worker that owns the connection ([`Rss::queue`] as the
//! conntrack table's reply filter), so both directions meet on one worker.
//! The default key is symmetric (`6d5a` repeated): a tuple and its inverse
//! hash alike, which keeps un-NATed flows on one queue in both directions.

use fastables_packet::ipv4::{self, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use fastables_packet::{ethernet, read_be16, read_be32};

/// Whether the hash covers the ports of this protocol (TCP, UDP and SCTP, as
/// NICs hash them).
fn hashes_ports(proto: u8) -> bool {
    matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
}

/// The symmetric key (`6d:5a` twenty times): hash(a→b) == hash(b→a).
pub const SYMMETRIC_KEY: [u8; 40] = {
    let mut k = [0u8; 40];
    let mut i = 0;
    while i < 40 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

/// Microsoft's verification key (the RSS specification's test vectors).
pub const MICROSOFT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Entries of the indirection table (a common NIC size; `ethtool -x` shows it).
pub const INDIR_LEN: usize = 128;

/// The Toeplitz hash of `input` under `key` (at most 36 input bytes).
pub fn toeplitz(key: &[u8; 40], input: &[u8]) -> u32 {
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let mut hash = 0u32;
    for (i, &byte) in input.iter().take(36).enumerate() {
        let next = key[i + 4];
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | u32::from((next >> (7 - bit)) & 1);
        }
    }
    hash
}

/// A NIC's RSS configuration: key and indirection table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rss {
    key: [u8; 40],
    indir: Box<[u16]>,
    queues: u16,
    /// `lut[i][v]`: the hash of an input whose only non-zero byte is `v` at
    /// position `i`. The hash is linear (XOR) in its input, so a 12-byte
    /// input hashes in 12 loads instead of 96 bit steps.
    lut: Box<[[u32; 256]; 12]>,
}

impl Rss {
    /// `queues` queues spread round-robin over the table (ethtool's default).
    pub fn new(key: [u8; 40], queues: u16) -> Rss {
        let queues = queues.max(1);
        let indir = (0..INDIR_LEN)
            .map(|i| (i % usize::from(queues)) as u16)
            .collect::<Vec<_>>();
        Rss::with_table(key, indir)
    }

    /// `key` and a device's indirection table (`ethtool -x`: entry ->
    /// queue); an empty table means one queue.
    pub fn with_table(key: [u8; 40], indir: Vec<u16>) -> Rss {
        let indir = if indir.is_empty() { vec![0] } else { indir };
        let queues = indir.iter().max().map_or(1, |m| m + 1);
        let mut lut = Box::new([[0u32; 256]; 12]);
        for (i, row) in lut.iter_mut().enumerate() {
            for (v, slot) in row.iter_mut().enumerate() {
                let mut b = [0u8; 12];
                b[i] = v as u8;
                *slot = toeplitz(&key, &b);
            }
        }
        Rss {
            key,
            indir: indir.into_boxed_slice(),
            queues,
            lut,
        }
    }

    /// Queues.
    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// The hash of a tuple (host-order addresses; ports count for TCP, UDP
    /// and SCTP, as NICs hash them; other protocols by addresses only).
    pub fn hash(&self, proto: u8, src: u32, dst: u32, sport: u16, dport: u16) -> u32 {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&src.to_be_bytes());
        b[4..8].copy_from_slice(&dst.to_be_bytes());
        let n = if hashes_ports(proto) {
            b[8..10].copy_from_slice(&sport.to_be_bytes());
            b[10..12].copy_from_slice(&dport.to_be_bytes());
            12
        } else {
            8
        };
        b[..n]
            .iter()
            .zip(self.lut.iter())
            .fold(0, |h, (&v, row)| h ^ row[usize::from(v)])
    }

    /// The queue a tuple lands on.
    pub fn queue(&self, proto: u8, src: u32, dst: u32, sport: u16, dport: u16) -> u16 {
        let h = self.hash(proto, src, dst, sport, dport);
        self.indir[(h as usize) % self.indir.len()]
    }

    /// The queue an Ethernet frame lands on: IPv4 by its addresses and,
    /// unless it is a fragment, TCP/UDP ports; anything else on queue 0.
    pub fn queue_of_frame(&self, frame: &[u8]) -> u16 {
        use ipv4::field;
        let Some(ip) = frame.get(ethernet::HEADER_LEN..) else {
            return 0;
        };
        let ethertype = read_be16(frame, ethernet::field::ETHERTYPE.start);
        if ethertype != Some(ethernet::ETHERTYPE_IPV4)
            || ip.len() < ipv4::MIN_HEADER_LEN
            || ip[field::VER_IHL] >> 4 != 4
        {
            return 0;
        }
        let hl = usize::from(ip[field::VER_IHL] & 0x0f) * 4;
        let rd32 = |o: usize| read_be32(ip, o).unwrap_or(0);
        let (src, dst, proto) = (
            rd32(field::SRC.start),
            rd32(field::DST.start),
            ip[field::PROTOCOL],
        );
        let fragment = read_be16(ip, field::FLAGS_FRAG.start).unwrap_or(0)
            & (ipv4::FLAG_MF | ipv4::FRAG_OFFSET_MASK)
            != 0;
        let ports = if fragment || !hashes_ports(proto) {
            None
        } else {
            read_be16(ip, hl).zip(read_be16(ip, hl + 2))
        };
        match ports {
            Some((s, d)) => self.queue(proto, src, dst, s, d),
            None => self.queue(0, src, dst, 0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_be_bytes([a, b, c, d])
    }

    #[test]
    fn microsoft_verification_vectors() {
        // "Verifying the RSS Hash Calculation": source 66.9.149.187:2794,
        // destination 161.142.100.80:1766, etc.
        let r = Rss::new(MICROSOFT_KEY, 1);
        let cases = [
            (
                ip(66, 9, 149, 187),
                2794,
                ip(161, 142, 100, 80),
                1766,
                0x323e_8fc2u32,
                0x51cc_c178u32,
            ),
            (
                ip(199, 92, 111, 2),
                14230,
                ip(65, 69, 140, 83),
                4739,
                0xd718_262a,
                0xc626_b0ea,
            ),
            (
                ip(24, 19, 198, 95),
                12898,
                ip(12, 22, 207, 184),
                38024,
                0xd2d0_a5de,
                0x5c2b_394a,
            ),
        ];
        for (s, sp, d, dp, v4, v4tcp) in cases {
            assert_eq!(r.hash(0, s, d, 0, 0), v4, "IPv4 {s:#x} -> {d:#x}");
            assert_eq!(r.hash(6, s, d, sp, dp), v4tcp, "IPv4/TCP {s:#x} -> {d:#x}");
        }
    }

    #[test]
    fn the_symmetric_key_hashes_both_directions_alike() {
        let r = Rss::new(SYMMETRIC_KEY, 4);
        for i in 0..200u32 {
            let (a, b) = (ip(10, 0, 0, 1) + i * 7919, ip(8, 8, 8, 8) ^ (i * 104_729));
            let (pa, pb) = (1024 + i as u16, 53 + (i as u16 % 7));
            assert_eq!(r.hash(17, a, b, pa, pb), r.hash(17, b, a, pb, pa));
            assert_eq!(r.queue(6, a, b, pa, pb), r.queue(6, b, a, pb, pa));
        }
    }

    #[test]
    fn queues_are_spread_and_frames_classified() {
        let r = Rss::new(SYMMETRIC_KEY, 2);
        let mut seen = [0u32; 2];
        for p in 0..1000u16 {
            seen[usize::from(r.queue(17, ip(172, 18, 0, 2), ip(8, 8, 8, 8), 30000 + p, 53))] += 1;
        }
        assert!(seen[0] > 300 && seen[1] > 300, "{seen:?}");
        // A frame: Ethernet + IPv4 + UDP ports.
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[172, 18, 0, 2]);
        f[30..34].copy_from_slice(&[8, 8, 8, 8]);
        f[34..36].copy_from_slice(&33894u16.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(
            r.queue_of_frame(&f),
            r.queue(17, ip(172, 18, 0, 2), ip(8, 8, 8, 8), 33894, 53)
        );
        assert_eq!(r.queue_of_frame(&f[..10]), 0);
    }
}
