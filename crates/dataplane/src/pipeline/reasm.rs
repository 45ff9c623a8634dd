//! IPv4 reassembly for conntrack (the kernel's nf_defrag_ipv4), by holding
//! the fragments rather than copying them into one buffer.
//!
//! While conntrack is loaded the kernel reassembles every fragmented datagram
//! before raw PREROUTING, so that conntrack and NAT see it whole, and
//! fragments it again on output. Here the fragments of a datagram stay in
//! their frame buffers ([`crate::worker::Action::Held`]) until all of it has
//! arrived; then the first fragment goes through the pipeline standing for
//! the whole datagram (its length for the rules and counters is the
//! datagram's), and the other fragments follow its fate: the header fields
//! the pipeline rewrote (addresses, TTL, TOS; MACs) are copied into them.
//! What leaves is the fragments as they came (the kernel cuts the datagram
//! again at the largest fragment size it received: the same frames when the
//! fragments were cut that way, which is how senders cut them).
//!
//! As the kernel: overlapping fragments discard the whole datagram (RFC 5722
//! for IPv6, and Linux since 4.19 for IPv4), an exact duplicate is dropped,
//! a datagram not complete after 30 s (ipfrag_time) is discarded (without an
//! ICMP time exceeded: the kernel sends none for conntrack's reassembly,
//! `frag_expire_skip_icmp`).
//! Bounds: [`MAX_DATAGRAMS`] datagrams, [`MAX_FRAGS`] fragments each and
//! [`MAX_HELD`] frames in all; beyond them the oldest datagram goes.

use crate::port::FrameAddr;
use fastables_rules::ctx::IfIndex;

/// Datagrams being reassembled at once.
pub const MAX_DATAGRAMS: usize = 64;
/// Fragments of one datagram (a 64 KiB datagram in 1500-byte fragments is 45).
pub const MAX_FRAGS: usize = 64;
/// Frames held in all.
pub const MAX_HELD: usize = 512;
/// How long a datagram may take to arrive (the kernel's ipfrag_time, 30 s).
pub const TIMEOUT_NS: u64 = 30_000_000_000;

/// Identifies a datagram (RFC 791): addresses, protocol, identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Source address (host order).
    pub src: u32,
    /// Destination address (host order).
    pub dst: u32,
    /// Protocol.
    pub proto: u8,
    /// Identification.
    pub id: u16,
}

/// One held fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Its frame buffer.
    pub addr: FrameAddr,
    /// Frame length (Ethernet header included).
    pub len: u16,
    /// Payload offset in the datagram, bytes.
    pub off: u16,
    /// Payload bytes.
    pub plen: u16,
    /// More fragments follow.
    pub mf: bool,
}

struct Slot {
    used: bool,
    key: Key,
    in_if: IfIndex,
    first_ns: u64,
    /// By offset.
    pieces: Vec<Piece>,
}

/// What became of a fragment given to [`Defrag::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Held, waiting for the rest.
    Held,
    /// The datagram is complete: its pieces are in slot `n`
    /// ([`Defrag::pieces`]), first fragment first; [`Defrag::release`] it.
    Complete(usize),
    /// The fragment is dropped (a duplicate, or its datagram is too long);
    /// nothing else changes.
    Rejected(DefragDrop),
    /// The fragment overlaps another of its datagram: the whole datagram is
    /// dropped; its other pieces are in slot `n`, to release.
    Overlap(usize),
}

/// Why a fragment or a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefragDrop {
    /// The same fragment again.
    Duplicate,
    /// Beyond 65535 bytes, or too many fragments.
    TooLong,
}

/// Datagrams under reassembly.
pub struct Defrag {
    slots: Vec<Slot>,
    held: usize,
}

impl Default for Defrag {
    fn default() -> Self {
        Self::new()
    }
}

impl Defrag {
    /// An empty table; its memory is allocated here, once.
    pub fn new() -> Defrag {
        Defrag {
            slots: (0..MAX_DATAGRAMS)
                .map(|_| Slot {
                    used: false,
                    key: Key {
                        src: 0,
                        dst: 0,
                        proto: 0,
                        id: 0,
                    },
                    in_if: 0,
                    first_ns: 0,
                    pieces: Vec::with_capacity(MAX_FRAGS),
                })
                .collect(),
            held: 0,
        }
    }

    /// Frames held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The pieces of slot `n`, by offset.
    pub fn pieces(&self, n: usize) -> &[Piece] {
        self.slots.get(n).map_or(&[], |s| &s.pieces[..])
    }

    /// The interface the datagram of slot `n` came in on.
    pub fn in_if(&self, n: usize) -> IfIndex {
        self.slots.get(n).map_or(0, |s| s.in_if)
    }

    /// Frees slot `n` (its frames belong to the caller again).
    pub fn release(&mut self, n: usize) {
        if let Some(s) = self.slots.get_mut(n) {
            if s.used {
                self.held -= s.pieces.len();
                s.pieces.clear();
                s.used = false;
            }
        }
    }

    /// The oldest used slot.
    fn oldest(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.used)
            .min_by_key(|(_, s)| s.first_ns)
            .map(|(i, _)| i)
    }

    /// A slot to evict to make room, if one must go before `add` (the caller
    /// drops its frames and releases it first).
    pub fn must_evict(&self, key: &Key) -> Option<usize> {
        let exists = self.slots.iter().any(|s| s.used && s.key == *key);
        let full = !exists && self.slots.iter().all(|s| s.used);
        if full || self.held >= MAX_HELD {
            self.oldest()
        } else {
            None
        }
    }

    /// Adds a fragment of the datagram `key` that came in on `in_if` at
    /// `now_ns`. Call [`Defrag::must_evict`] first.
    pub fn add(&mut self, key: Key, in_if: IfIndex, now_ns: u64, p: Piece) -> Added {
        if usize::from(p.off) + usize::from(p.plen) > 65535 - 20 {
            return Added::Rejected(DefragDrop::TooLong);
        }
        let n = match self.slots.iter().position(|s| s.used && s.key == key) {
            Some(n) => n,
            None => match self.slots.iter().position(|s| !s.used) {
                Some(n) => {
                    let s = &mut self.slots[n];
                    s.used = true;
                    s.key = key;
                    s.in_if = in_if;
                    s.first_ns = now_ns;
                    s.pieces.clear();
                    n
                }
                None => return Added::Rejected(DefragDrop::TooLong),
            },
        };
        let s = &mut self.slots[n];
        if s.pieces.len() >= MAX_FRAGS {
            return Added::Rejected(DefragDrop::TooLong);
        }
        let end = u32::from(p.off) + u32::from(p.plen);
        let at = s.pieces.partition_point(|x| x.off < p.off);
        // Neighbors in offset order: the one before must end by our start,
        // the one at our place must start at or after our end.
        let prev = at.checked_sub(1).and_then(|i| s.pieces.get(i)).copied();
        let next = s.pieces.get(at).copied();
        if next.is_some_and(|x| x.off == p.off && x.plen == p.plen && x.mf == p.mf) {
            return Added::Rejected(DefragDrop::Duplicate);
        }
        let overlaps = prev.is_some_and(|x| u32::from(x.off) + u32::from(x.plen) > u32::from(p.off))
            || next.is_some_and(|x| u32::from(x.off) < end)
            // Data after the last fragment, or a second "last".
            || (!p.mf && s.pieces.iter().any(|x| u32::from(x.off) + u32::from(x.plen) > end))
            || s.pieces.iter().any(|x| !x.mf && u32::from(x.off) + u32::from(x.plen) < end);
        if overlaps {
            return Added::Overlap(n);
        }
        s.pieces.insert(at, p);
        self.held += 1;
        // Complete: from 0, without holes, up to a last fragment.
        let mut expect = 0u32;
        for x in &s.pieces {
            if u32::from(x.off) != expect {
                return Added::Held;
            }
            expect += u32::from(x.plen);
            if !x.mf {
                return Added::Complete(n);
            }
        }
        Added::Held
    }

    /// A datagram that has waited [`TIMEOUT_NS`] at `now_ns`, if any: its
    /// slot, to drop and release (at most one per call).
    pub fn expired(&self, now_ns: u64) -> Option<usize> {
        if self.held == 0 {
            return None;
        }
        self.slots
            .iter()
            .position(|s| s.used && now_ns.saturating_sub(s.first_ns) >= TIMEOUT_NS)
    }

    /// Whether slot `n` holds the datagram's first fragment.
    pub fn has_first(&self, n: usize) -> bool {
        self.pieces(n).first().is_some_and(|p| p.off == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: Key = Key {
        src: 1,
        dst: 2,
        proto: 17,
        id: 7,
    };

    fn piece(addr: u64, off: u16, plen: u16, mf: bool) -> Piece {
        Piece {
            addr,
            len: plen + 34,
            off,
            plen,
            mf,
        }
    }

    #[test]
    fn in_any_order_until_complete() {
        let mut d = Defrag::new();
        assert_eq!(d.add(K, 0, 0, piece(3, 1200, 8, false)), Added::Held);
        assert_eq!(d.add(K, 0, 1, piece(1, 0, 600, true)), Added::Held);
        let Added::Complete(n) = d.add(K, 0, 2, piece(2, 600, 600, true)) else {
            panic!("not complete")
        };
        let addrs: Vec<u64> = d.pieces(n).iter().map(|p| p.addr).collect();
        assert_eq!(addrs, [1, 2, 3]);
        assert_eq!(d.held(), 3);
        d.release(n);
        assert_eq!(d.held(), 0);
    }

    #[test]
    fn duplicates_overlaps_and_timeouts() {
        let mut d = Defrag::new();
        assert_eq!(d.add(K, 0, 0, piece(1, 0, 600, true)), Added::Held);
        assert_eq!(
            d.add(K, 0, 0, piece(9, 0, 600, true)),
            Added::Rejected(DefragDrop::Duplicate)
        );
        let Added::Overlap(n) = d.add(K, 0, 0, piece(2, 592, 600, false)) else {
            panic!("no overlap")
        };
        d.release(n);
        assert_eq!(d.held(), 0);
        // Another datagram waits; it expires after 30 s.
        assert_eq!(d.add(K, 0, 5, piece(1, 0, 600, true)), Added::Held);
        assert_eq!(d.expired(5 + TIMEOUT_NS - 1), None);
        let n = d.expired(5 + TIMEOUT_NS).unwrap();
        assert!(d.has_first(n));
        d.release(n);
        assert_eq!(d.expired(u64::MAX), None);
    }

    #[test]
    fn a_full_table_makes_room_from_the_oldest() {
        let mut d = Defrag::new();
        for i in 0..MAX_DATAGRAMS {
            let k = Key { id: i as u16, ..K };
            assert_eq!(d.must_evict(&k), None);
            assert_eq!(
                d.add(k, 0, i as u64, piece(i as u64, 0, 8, true)),
                Added::Held
            );
        }
        let k = Key { id: 999, ..K };
        let n = d.must_evict(&k).unwrap();
        assert_eq!(d.pieces(n)[0].addr, 0, "the oldest");
    }
}
