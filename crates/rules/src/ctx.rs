//! What rule evaluation sees of a packet, and what it decides.
//!
//! The data plane fills a [`PacketCtx`] once per packet from the parsed headers
//! (plain values, no borrowing of the frame), then runs one table of one hook
//! at a time with `CompiledRuleset::run`. Non-terminating targets write their
//! effects back into the context (mark, TTL, conntrack mark, notrack, MSS, log
//! requests); the data plane applies the byte-level ones to the frame after the
//! call. Nothing here allocates.

use crate::model::{CtStateSet, RejectWith};

pub use fastables_packet::IfIndex;

/// Conntrack information for `-m conntrack` / `-m state` / `CONNMARK`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCtx {
    /// One of `CtStateSet::{INVALID, NEW, ESTABLISHED, RELATED, UNTRACKED}`, plus
    /// `SNAT`/`DNAT` bits when the connection is source/destination translated.
    pub state: u8,
    /// `CtStatusSet` bits.
    pub status: u32,
    /// The connection mark (`ctmark`).
    pub mark: u32,
    /// ORIGINAL and REPLY tuple addresses and ORIGINAL ports (host order).
    pub orig_src: u32,
    pub orig_dst: u32,
    pub repl_src: u32,
    pub repl_dst: u32,
    pub orig_sport: u16,
    pub orig_dport: u16,
    /// Whether the connection has ports (TCP/UDP/...); port matches fail otherwise.
    pub has_ports: bool,
}

impl CtCtx {
    /// The context of a packet that conntrack does not track (or before conntrack runs).
    pub fn untracked() -> Self {
        CtCtx {
            state: CtStateSet::UNTRACKED,
            ..Default::default()
        }
    }
}

/// Everything a match may test, in host byte order.
#[derive(Debug, Clone, Copy)]
pub struct PacketCtx {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    /// A non-first fragment (fragment offset != 0): `-f` matches, port matches do not.
    pub fragment: bool,
    /// The IP fragment offset in 8-byte units (0 when not a non-first fragment).
    /// Only the value 1 is consulted: like the kernel, a `-m tcp` match drops a
    /// TCP fragment at offset 8 (a TCP flag overwrite attempt). Set it together
    /// with `fragment` ([`PacketCtx::set_frag_offset`]).
    pub frag_off: u16,
    pub ttl: u8,
    /// IP total length (`-m length`).
    pub len: u16,
    /// The transport header was present and long enough to read ports / type / flags:
    /// the whole fixed header as the kernel's matches read it (TCP 20 bytes, UDP 8,
    /// ICMP 8). On a packet that is not a fragment, a `-m tcp/udp/icmp/multiport`
    /// match that finds `has_l4` false drops the packet, as in the kernel.
    pub has_l4: bool,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// Bit N set when TCP option kind N is present (filled only when the ruleset
    /// `needs().tcp_options`).
    pub tcp_options: [u64; 4],
    /// The TCP data offset is below 5 or the options run past the end of the
    /// packet: a `--tcp-option` match then drops the packet (kernel hotdrop).
    /// Filled only when the ruleset `needs().tcp_options`.
    pub tcp_options_bad: bool,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Ingress interface (`None` for locally generated packets).
    pub in_if: Option<IfIndex>,
    /// Egress interface (`None` before routing, on PREROUTING and INPUT).
    pub out_if: Option<IfIndex>,
    /// Address types of source and destination (`AddrTypeSet` bits), filled only
    /// when the ruleset `needs().addrtype`.
    pub src_type: u16,
    pub dst_type: u16,
    /// The packet mark (`skb->mark`), read and written by `-m mark` / `MARK`.
    pub mark: u32,
    pub ct: CtCtx,
    /// Effects of non-terminating targets, applied by the data plane.
    pub effects: Effects,
}

impl PacketCtx {
    /// A context with every field zero / absent and conntrack state UNTRACKED.
    pub fn new() -> Self {
        PacketCtx {
            src: 0,
            dst: 0,
            proto: 0,
            fragment: false,
            frag_off: 0,
            ttl: 0,
            len: 0,
            has_l4: false,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            tcp_options: [0; 4],
            tcp_options_bad: false,
            icmp_type: 0,
            icmp_code: 0,
            in_if: None,
            out_if: None,
            src_type: 0,
            dst_type: 0,
            mark: 0,
            ct: CtCtx::untracked(),
            effects: Effects::default(),
        }
    }
}

impl PacketCtx {
    /// Set `frag_off` and `fragment` from the IP header's fragment offset field
    /// (in 8-byte units, flags masked off).
    pub fn set_frag_offset(&mut self, off: u16) {
        self.frag_off = off & 0x1fff;
        self.fragment = self.frag_off != 0;
    }
}

/// The TCP option kinds present in `options` (the bytes after the fixed 20-byte
/// TCP header, `doff * 4 - 20` of them), as the bitset of
/// [`PacketCtx::tcp_options`]: bit `k % 64` of word `k / 64` for kind `k`.
///
/// Walks the options exactly as the kernel's `tcp_find_option` does: kinds 0
/// (EOL) and 1 (NOP) are one byte long and the walk continues past EOL; any
/// other kind is followed by its length byte (a length of 0 advances by 1).
pub fn tcp_option_kinds(options: &[u8]) -> [u64; 4] {
    let mut bits = [0u64; 4];
    let mut i = 0usize;
    while let Some(&kind) = options.get(i) {
        bits[usize::from(kind >> 6)] |= 1u64 << (kind & 63);
        if kind < 2 {
            i += 1;
        } else {
            match options.get(i + 1) {
                Some(&0) => i += 1,
                Some(&l) => i += usize::from(l),
                None => break,
            }
        }
    }
    bits
}

impl Default for PacketCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// Maximum LOG targets recorded per packet per table run; further ones are counted in `log_overflow`.
pub const MAX_LOGS: usize = 4;

/// Side effects of non-terminating targets. `ttl` and `mark` are applied to the
/// context directly (so later matches see them); the data plane writes the TTL
/// to the header and performs the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// The TTL was changed by `-j TTL` (new value in `PacketCtx::ttl`).
    pub ttl_changed: bool,
    /// `NOTRACK` / `CT --notrack` fired (raw table): the packet is UNTRACKED.
    pub notrack: bool,
    /// `TRACE` fired: trace the packet from here on.
    pub trace: bool,
    /// `CONNMARK` changed `ct.mark`; conntrack must store it.
    pub ctmark_changed: bool,
    /// `TCPMSS` requested: `Some(mss)` to set the MSS option to at most this value
    /// (for `--clamp-mss-to-pmtu` the data plane computes it from the route MTU:
    /// the value is `0` then).
    pub tcpmss: Option<u16>,
    /// Rule ids (see `CompiledRuleset::rule_info`) of LOG targets that fired.
    pub logs: [u32; MAX_LOGS],
    pub log_count: u8,
    pub log_overflow: u8,
    /// The entry whose verdict ended the last `CompiledRuleset::run` (a rule
    /// id for [`crate::compile::CompiledRuleset::rule_info`], the policy's
    /// entry when the policy decided): for tracing.
    pub last: u32,
}

/// The outcome of running one table's built-in chain on one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// Drop and answer (filter table only).
    Reject(RejectWith),
    /// A NAT target fired (nat table only): the rule id whose target holds the range;
    /// the packet continues as with ACCEPT.
    Nat(u32),
}

/// What the data plane must compute per packet for this ruleset. When a flag is
/// false the corresponding `PacketCtx` fields may be left zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub tcp_options: bool,
    pub addrtype: bool,
    pub conntrack: bool,
}
