//! Locally generated IPv4 packets: ICMP errors, echo replies and TCP resets,
//! built as the kernel builds them (checked against captures of Linux 6.18,
//! see `tests/fixtures/kernel-ref-*.pcap`):
//!
//! | packet | TOS | TTL | DF | IP ID |
//! |---|---|---|---|---|
//! | ICMP error (`icmp_send`) | `(tos & 0x1e) \| 0xc0` | 64 | no | counter (kernel: hashed) |
//! | echo reply (`icmp_reply`) | request's TOS | 64 | no | counter (kernel: hashed) |
//! | RST of the stack (`tcp_v4_send_reset`) | original TOS | 64 | yes | 0 |
//! | RST of `REJECT --reject-with tcp-reset` (`nf_send_reset`) | 0 | 64 | yes | 0 |
//!
//! ICMP errors quote the offending datagram from its IP header, as much as fits
//! in 576 bytes (548 bytes of quote), and are never sent for ICMP errors, for
//! non-first fragments, or for packets that came to a broadcast/multicast
//! address or in a non-unicast frame ([`icmp_error_allowed`] plus the caller's
//! checks). IP options of the original are not echoed (the kernel echoes some).

use std::net::Ipv4Addr;

use ahash::AHashMap;
use fastables_packet::icmp::{self as picmp, types, unreach, IcmpRepr};
use fastables_packet::ipv4::{Ipv4Repr, PROTO_ICMP, PROTO_TCP};
use fastables_packet::parse::{Ipv4Info, L4};
use fastables_packet::tcp::flags;
use fastables_packet::{read_be16, read_be32};

/// The TTL of locally generated packets (net.ipv4.ip_default_ttl).
pub const DEFAULT_TTL: u8 = 64;
/// Most bytes an ICMP error may have (IP header included), as `icmp_send`.
pub const ICMP_ERROR_MAX: usize = 576;
/// Most bytes of the offending datagram an ICMP error quotes.
pub const ICMP_QUOTE_MAX: usize = ICMP_ERROR_MAX - 20 - 8;

/// `__icmp_send`'s checks on the offending datagram: not a non-first fragment,
/// and if it is ICMP, not an error and not an unknown type (> 18).
pub fn icmp_error_allowed(info: &Ipv4Info) -> bool {
    if info.frag_offset != 0 {
        return false;
    }
    if info.protocol == PROTO_ICMP {
        return match info.l4 {
            L4::Icmp { icmp_type, .. } => {
                icmp_type <= types::ADDRESS_MASK_REPLY && !picmp::is_error(icmp_type)
            }
            // The type byte could not be read: the kernel gives up too.
            _ => false,
        };
    }
    true
}

/// The fields of a generated packet's IP header that are not the
/// kernel's defaults (TTL 64, no options, not a fragment).
struct Head {
    src: u32,
    dst: u32,
    protocol: u8,
    tos: u8,
    ident: u16,
    dont_frag: bool,
}

fn ip_header(out: &mut [u8], h: Head, payload_len: usize) -> Option<usize> {
    let repr = Ipv4Repr {
        src: Ipv4Addr::from(h.src),
        dst: Ipv4Addr::from(h.dst),
        protocol: h.protocol,
        ttl: DEFAULT_TTL,
        tos: h.tos,
        ident: h.ident,
        dont_frag: h.dont_frag,
        more_frags: false,
        frag_offset: 0,
        options: &[],
        payload_len,
    };
    repr.emit(out).ok()
}

/// An ICMP error's type, code and second word (the next-hop MTU for
/// fragmentation needed, else 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// Type.
    pub ty: u8,
    /// Code.
    pub code: u8,
    /// The second word.
    pub rest: u32,
}

/// Write an ICMP error (IP header + ICMP) into `out`; returns the IP datagram
/// length. `quoted` is the offending datagram (IP header first, trimmed to its
/// total length); `orig_tos` its TOS.
pub fn build_icmp_error(
    out: &mut [u8],
    src: u32,
    dst: u32,
    ident: u16,
    orig_tos: u8,
    error: IcmpError,
    quoted: &[u8],
) -> Option<usize> {
    let q = quoted.get(..quoted.len().min(ICMP_QUOTE_MAX))?;
    let icmp = IcmpRepr::error(error.ty, error.code, error.rest, q);
    let h = Head {
        src,
        dst,
        protocol: PROTO_ICMP,
        tos: (orig_tos & 0x1e) | 0xc0,
        ident,
        dont_frag: false,
    };
    let hl = ip_header(out, h, icmp.len())?;
    let n = icmp.emit(out.get_mut(hl..)?).ok()?;
    Some(hl + n)
}

/// Write an echo reply to the echo request `request` (its ICMP message: header
/// and data) into `out`; returns the IP datagram length.
pub fn build_echo_reply(
    out: &mut [u8],
    src: u32,
    dst: u32,
    tos: u8,
    ident: u16,
    request: &[u8],
) -> Option<usize> {
    let id = read_be16(request, picmp::field::IDENT.start)?;
    let seq = read_be16(request, picmp::field::SEQ.start)?;
    let icmp = IcmpRepr::echo_reply(id, seq, request.get(8..)?);
    let h = Head {
        src,
        dst,
        protocol: PROTO_ICMP,
        tos,
        ident,
        dont_frag: false,
    };
    let hl = ip_header(out, h, icmp.len())?;
    let n = icmp.emit(out.get_mut(hl..)?).ok()?;
    Some(hl + n)
}

/// Write the TCP reset answering the segment `orig_tcp` (its TCP header and
/// data, `payload_len` bytes of data) from `src` to `dst`; returns the IP
/// datagram length. Sequence numbers as `nf_send_reset` / `tcp_v4_send_reset`:
/// if the segment has ACK, `seq = its ack`, flags RST; otherwise `seq = 0`,
/// `ack = its seq + SYN + FIN + data length`, flags RST|ACK. Window 0, no
/// options, DF, IP ID 0, TTL 64.
pub fn build_tcp_reset(
    out: &mut [u8],
    src: u32,
    dst: u32,
    tos: u8,
    orig_tcp: &[u8],
    payload_len: usize,
) -> Option<usize> {
    use fastables_packet::tcp::field;
    let h = orig_tcp.get(..fastables_packet::tcp::MIN_HEADER_LEN)?;
    let sport = read_be16(h, field::SRC_PORT.start)?;
    let dport = read_be16(h, field::DST_PORT.start)?;
    let seq = read_be32(h, field::SEQ.start)?;
    let ack = read_be32(h, field::ACK.start)?;
    let fl = h[field::FLAGS];
    let (rseq, rack, rflags) = if fl & flags::ACK != 0 {
        (ack, 0, flags::RST)
    } else {
        let syn = u32::from(fl & flags::SYN != 0);
        let fin = u32::from(fl & flags::FIN != 0);
        (
            0,
            seq.wrapping_add(syn + fin + payload_len as u32),
            flags::RST | flags::ACK,
        )
    };
    let h = Head {
        src,
        dst,
        protocol: PROTO_TCP,
        tos,
        ident: 0,
        dont_frag: true,
    };
    let hl = ip_header(out, h, 20)?;
    let t = out.get_mut(hl..hl + 20)?;
    t[0..2].copy_from_slice(&dport.to_be_bytes());
    t[2..4].copy_from_slice(&sport.to_be_bytes());
    t[4..8].copy_from_slice(&rseq.to_be_bytes());
    t[8..12].copy_from_slice(&rack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = rflags;
    t[14..20].fill(0);
    let sum = fastables_packet::checksum::combine(
        fastables_packet::checksum::pseudo_header_sum(
            Ipv4Addr::from(src),
            Ipv4Addr::from(dst),
            PROTO_TCP,
            20,
        ),
        fastables_packet::checksum::sum(t),
    );
    let c = fastables_packet::checksum::finish(sum);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Some(hl + 20)
}

/// The kernel's ICMP error rate limits with the default sysctls: the types of
/// `icmp_ratemask` (destination unreachable, source quench, time exceeded,
/// parameter problem) except fragmentation-needed are limited by a global
/// bucket (`icmp_msgs_per_sec` 1000, `icmp_msgs_burst` 50) and per destination
/// (`icmp_ratelimit` 1000 ms, burst 6, as `inet_peer_xrlim_allow`). The per
/// destination table holds at most [`IcmpRateLimiter::MAX_PEERS`] addresses and
/// is cleared when full (the kernel expires inet_peer entries instead). The
/// kernel's random jitter of the global bucket is not reproduced.
#[derive(Debug, Clone)]
pub struct IcmpRateLimiter {
    per_sec: u32,
    burst: u32,
    /// Global tokens, in millitokens.
    tokens: u64,
    last_ns: u64,
    /// Per destination: (tokens in ns of credit, last update).
    peers: AHashMap<u32, (u64, u64)>,
}

impl IcmpRateLimiter {
    /// Destinations remembered for the per-destination limit.
    pub const MAX_PEERS: usize = 4096;
    /// `icmp_ratelimit`: one message per destination per second.
    pub const PEER_INTERVAL_NS: u64 = 1_000_000_000;
    /// `XRLIM_BURST_FACTOR`.
    pub const PEER_BURST: u64 = 6;

    /// A limiter with `per_sec` messages per second and a burst of `burst` globally.
    pub fn new(per_sec: u32, burst: u32) -> IcmpRateLimiter {
        IcmpRateLimiter {
            per_sec,
            burst,
            tokens: u64::from(burst) * 1000,
            last_ns: 0,
            peers: AHashMap::with_capacity(Self::MAX_PEERS),
        }
    }

    /// Whether an ICMP error of `ty`/`code` to `dst` may be sent at `now_ns`;
    /// takes the tokens when it may.
    pub fn allow(&mut self, now_ns: u64, dst: u32, ty: u8, code: u8) -> bool {
        let limited = matches!(ty, 3 | 4 | 11 | 12)
            && !(ty == types::DEST_UNREACH && code == unreach::FRAG_NEEDED);
        if !limited {
            return true;
        }
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let refill = (u128::from(elapsed) * u128::from(self.per_sec) / 1_000_000) as u64;
        self.tokens = self
            .tokens
            .saturating_add(refill)
            .min(u64::from(self.burst) * 1000);
        if self.tokens < 1000 {
            return false;
        }
        let cap = Self::PEER_BURST * Self::PEER_INTERVAL_NS;
        if !self.peers.contains_key(&dst) && self.peers.len() >= Self::MAX_PEERS {
            self.peers.clear();
        }
        let e = self.peers.entry(dst).or_insert((cap, now_ns));
        let token = e.0.saturating_add(now_ns.saturating_sub(e.1)).min(cap);
        e.1 = e.1.max(now_ns);
        if token < Self::PEER_INTERVAL_NS {
            e.0 = token;
            return false;
        }
        e.0 = token - Self::PEER_INTERVAL_NS;
        self.tokens -= 1000;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastables_packet::checksum;

    #[test]
    fn rate_limits_as_the_kernel() {
        let mut rl = IcmpRateLimiter::new(1000, 50);
        // Per destination: a burst of 6, then one per second.
        for _ in 0..6 {
            assert!(rl.allow(0, 1, 11, 0));
        }
        assert!(!rl.allow(0, 1, 3, 3));
        assert!(rl.allow(0, 1, 3, 4), "frag needed is never limited");
        assert!(rl.allow(0, 1, 0, 0), "echo replies are not limited");
        assert!(
            rl.allow(0, 2, 3, 1),
            "another destination has its own burst"
        );
        assert!(!rl.allow(999_999_999, 1, 11, 0));
        assert!(rl.allow(1_000_000_000, 1, 11, 0));
        // Globally: 50, then 1000 per second.
        let mut rl = IcmpRateLimiter::new(1000, 50);
        for d in 0..50 {
            assert!(rl.allow(0, 100 + d, 11, 0));
        }
        assert!(!rl.allow(0, 7, 11, 0));
        assert!(rl.allow(1_000_000, 7, 11, 0));
    }

    #[test]
    fn rst_for_syn_acks_seq_plus_one() {
        let mut syn = [0u8; 24];
        syn[0..2].copy_from_slice(&40001u16.to_be_bytes());
        syn[2..4].copy_from_slice(&81u16.to_be_bytes());
        syn[4..8].copy_from_slice(&1000u32.to_be_bytes());
        syn[12] = 6 << 4;
        syn[13] = flags::SYN;
        let mut out = [0u8; 64];
        let n = build_tcp_reset(&mut out, 0x0808_0808, 0xac12_0002, 0, &syn, 0).unwrap();
        assert_eq!(n, 40);
        // Kernel capture (REJECT --reject-with tcp-reset in FORWARD): 8.8.8.8.81 >
        // 172.18.0.2.40001: Flags [R.], seq 0, ack 1001, win 0; tos 0, ttl 64, id 0, DF.
        let expect: [u8; 40] = [
            0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 8, 8, 8, 8,
            172, 18, 0, 2, //
            0x00, 0x51, 0x9c, 0x41, 0, 0, 0, 0, 0, 0, 0x03, 0xe9, 0x50, 0x14, 0, 0, 0x53, 0x31, 0,
            0,
        ];
        let mut got = out[..40].to_vec();
        assert!(checksum::verify(&got[..20]));
        got[10] = 0;
        got[11] = 0;
        assert_eq!(got, expect.to_vec());
    }

    #[test]
    fn rst_for_ack_takes_its_ack_as_seq() {
        let mut seg = [0u8; 24];
        seg[4..8].copy_from_slice(&6000u32.to_be_bytes());
        seg[8..12].copy_from_slice(&123_456u32.to_be_bytes());
        seg[12] = 5 << 4;
        seg[13] = flags::ACK;
        let mut out = [0u8; 64];
        build_tcp_reset(&mut out, 1, 2, 0, &seg, 4).unwrap();
        assert_eq!(&out[24..28], &123_456u32.to_be_bytes());
        assert_eq!(&out[28..32], &[0, 0, 0, 0]);
        assert_eq!(out[33], flags::RST);
    }

    #[test]
    fn icmp_error_quotes_at_most_548_bytes() {
        let big = [0x45u8; 1500];
        let mut out = [0u8; 2048];
        let e = IcmpError {
            ty: 3,
            code: 4,
            rest: 1400,
        };
        let n = build_icmp_error(&mut out, 1, 2, 7, 0x10, e, &big).unwrap();
        assert_eq!(n, 576);
        assert_eq!(out[1], 0xd0);
        assert_eq!(&out[24..28], &1400u32.to_be_bytes());
        assert!(checksum::verify(&out[20..576]));
    }

    #[test]
    fn error_not_for_errors_or_fragments() {
        let mut info = Ipv4Info {
            header_len: 20,
            total_len: 56,
            protocol: PROTO_ICMP,
            tos: 0,
            ttl: 1,
            ident: 0,
            src: Ipv4Addr::new(1, 1, 1, 1),
            dst: Ipv4Addr::new(2, 2, 2, 2),
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            l4_offset: 34,
            l4: L4::Icmp {
                icmp_type: 3,
                code: 1,
                ident: 0,
                seq: 0,
            },
        };
        assert!(!icmp_error_allowed(&info));
        info.l4 = L4::Icmp {
            icmp_type: 8,
            code: 0,
            ident: 0,
            seq: 0,
        };
        assert!(icmp_error_allowed(&info));
        info.frag_offset = 8;
        assert!(!icmp_error_allowed(&info));
    }
}
