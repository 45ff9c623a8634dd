//! Why a packet was dropped: one enum value and one counter per reason.
//!
//! Every frame the pipeline does not forward or consume gets a [`DropReason`];
//! generated packets (ICMP errors, echo replies, RSTs, ARP) that cannot be sent
//! are counted too ([`DropReason::NoBuffer`]). Counters are per worker,
//! `AtomicU64` with `Relaxed` ordering, summed by the stats side.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $name:ident => $s:literal, )*) => {
        /// Why a frame was dropped (or a generated packet not sent).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $name, )*
        }

        impl DropReason {
            /// Every reason, in counter order (`ALL[r as usize] == r`).
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// The number of reasons.
            pub const COUNT: usize = DropReason::ALL.len();

            /// The counter name (snake_case, stable: used in stats and metrics).
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$name => $s,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// The frame descriptor points outside the port's memory or is longer than a frame
    /// (a bug in the port, not in the packet).
    InvalidFrame => "invalid_frame",
    /// Shorter than an Ethernet header, or truncated inside a header the pipeline must read.
    Truncated => "truncated",
    /// Neither IPv4 nor ARP (IPv6, LLDP, VLAN-tagged, ...): not supported.
    NotIpv4 => "not_ipv4",
    /// The destination MAC is neither ours, broadcast nor multicast (the kernel's
    /// PACKET_OTHERHOST), or a packet to forward came in a broadcast/multicast
    /// frame (`ip_forward` drops what is not PACKET_HOST).
    OtherHost => "other_host",
    /// IPv4 header invalid: version != 4, IHL < 5, total length shorter than the header
    /// or longer than the frame (the kernel's ip_rcv "inhdr errors").
    BadIpHeader => "bad_ip_header",
    /// IPv4 header checksum wrong.
    BadIpChecksum => "bad_ip_checksum",
    /// ARP packet that is not Ethernet/IPv4, or malformed.
    BadArp => "bad_arp",
    /// ARP request for an address that is not ours, or an ARP reply not from a neighbor we care about.
    ArpNotForUs => "arp_not_for_us",
    /// Source address is martian: multicast, limited broadcast, 0.0.0.0/8, 127.0.0.0/8,
    /// or one of our own addresses (the kernel's "martian source").
    MartianSource => "martian_source",
    /// Destination is martian: 0.0.0.0/8 or 127.0.0.0/8 (the kernel's "martian destination").
    MartianDestination => "martian_destination",
    /// Multicast destination: multicast routing is not supported.
    Multicast => "multicast",
    /// No route to the destination (an ICMP net unreachable was sent, as the kernel's ip_error does).
    NoRoute => "no_route",
    /// TTL would reach 0 when forwarding (an ICMP time exceeded was sent).
    TtlExpired => "ttl_expired",
    /// A rule or a chain policy said DROP.
    FilterDrop => "filter_drop",
    /// A REJECT rule fired (the reply was generated).
    Rejected => "rejected",
    /// A NAT target could not run: MASQUERADE or REDIRECT found no address on the
    /// device (the kernel drops the packet too).
    NatNoAddress => "nat_no_address",
    /// The conntrack table is full and no entry could be evicted ("nf_conntrack:
    /// table full, dropping packet"): raise `[conntrack] max`.
    ConntrackFull => "conntrack_full",
    /// A new connection could not be inserted: its (NAT-chosen) tuple clashes with
    /// another connection (NAT range exhausted) or a hash chain is too long
    /// (the kernel's `insert_failed`).
    ConntrackInsertFailed => "conntrack_insert_failed",
    /// DF set and the packet is larger than the egress MTU (an ICMP fragmentation needed was sent).
    FragNeeded => "frag_needed",
    /// Too large for the egress MTU and cannot be fragmented: a locally generated
    /// packet (not fragmented), or an MTU too small for the header.
    FragmentationUnsupported => "fragmentation_unsupported",
    /// A fragment addressed to us: reassembly is not implemented.
    LocalFragment => "local_fragment",
    /// A datagram whose fragments did not all arrive within 30 s
    /// (ipfrag_time): its fragments are dropped.
    FragmentTimeout => "fragment_timeout",
    /// Overlapping fragments: the whole datagram is dropped (as Linux does).
    FragmentOverlap => "fragment_overlap",
    /// A fragment received twice: the copy is dropped.
    FragmentDuplicate => "fragment_duplicate",
    /// A fragment beyond 65535 bytes or past 64 fragments.
    FragmentTooLong => "fragment_too_long",
    /// A datagram under reassembly dropped to make room for a newer one.
    FragmentEvicted => "fragment_evicted",
    /// Addressed to us with a wrong TCP/UDP/ICMP checksum (the kernel's csum_error: no answer).
    BadL4Checksum => "bad_l4_checksum",
    /// Addressed to us, but nothing listens (TCP: RST sent, UDP: port unreachable sent,
    /// other protocols: protocol unreachable sent), as the kernel stack answers.
    NoSocket => "no_socket",
    /// The next hop did not answer ARP: a held packet given up after the last
    /// request (an ICMP host unreachable was sent), or a packet the router
    /// generated itself, which is not held.
    NeighborUnresolved => "neighbor_unresolved",
    /// The hold queue of an unresolved neighbor was full: its oldest packet
    /// was dropped to make room.
    NeighborHoldFull => "neighbor_hold_full",
    /// An ARP request for an unresolved neighbor was not sent: one went out less
    /// than a second ago (the kernel's retrans_time).
    ArpSolicitLimited => "arp_solicit_limited",
    /// No spare frame for a generated packet (ICMP error, echo reply, RST, ARP).
    NoBuffer => "no_buffer",
    /// The port's TX ring had no room.
    TxRingFull => "tx_ring_full",
    /// Locally generated ICMP error suppressed by the ICMP rate limit.
    IcmpRateLimited => "icmp_rate_limited",
}

/// One counter per [`DropReason`], per worker.
#[derive(Debug)]
pub struct DropCounters {
    counts: [AtomicU64; DropReason::COUNT],
}

impl Default for DropCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl DropCounters {
    /// All counters zero.
    pub fn new() -> Self {
        DropCounters {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Count one drop.
    #[inline]
    pub fn inc(&self, r: DropReason) {
        self.add(r, 1);
    }

    /// Count `n` drops.
    #[inline]
    pub fn add(&self, r: DropReason, n: u64) {
        if let Some(c) = self.counts.get(r as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The current count of one reason.
    pub fn get(&self, r: DropReason) -> u64 {
        self.counts
            .get(r as usize)
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Every (reason, count), in [`DropReason::ALL`] order.
    pub fn snapshot(&self) -> [(DropReason, u64); DropReason::COUNT] {
        std::array::from_fn(|i| (DropReason::ALL[i], self.counts[i].load(Ordering::Relaxed)))
    }

    /// The sum over all reasons.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order_and_names_unique() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn counters_count_per_reason() {
        let c = DropCounters::new();
        c.inc(DropReason::NoRoute);
        c.add(DropReason::TtlExpired, 3);
        assert_eq!(c.get(DropReason::NoRoute), 1);
        assert_eq!(c.get(DropReason::TtlExpired), 3);
        assert_eq!(c.get(DropReason::FilterDrop), 0);
        assert_eq!(c.total(), 4);
        assert_eq!(
            c.snapshot()[DropReason::TtlExpired as usize],
            (DropReason::TtlExpired, 3)
        );
    }
}
