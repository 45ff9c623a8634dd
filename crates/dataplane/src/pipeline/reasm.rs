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

use std::sync::atomic::Ordering;

use fastables_packet::ethernet;
use fastables_packet::ipv4::Ipv4Packet;
use fastables_packet::IfIndex;

use super::output::frame_pair;
use super::pkt::{Fate, ETH_LEN};
use super::Pipeline;
use crate::drop::DropReason;
use crate::neigh;
use crate::worker::Batch;
use fastables_port::{Frame, FrameAddr};

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

/// What became of a fragment given to [`Reassembly::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Held, waiting for the rest.
    Held,
    /// The datagram is complete: its pieces are in slot `n`
    /// ([`Reassembly::pieces`]), first fragment first; [`Reassembly::release`] it.
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
pub struct Reassembly {
    slots: Vec<Slot>,
    held: usize,
    /// Scratch for the pieces of a datagram made whole.
    scratch: Vec<Piece>,
}

impl Default for Reassembly {
    fn default() -> Self {
        Self::new()
    }
}

impl Reassembly {
    /// An empty table; its memory is allocated here, once.
    pub fn new() -> Reassembly {
        Reassembly {
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
            scratch: Vec::with_capacity(MAX_FRAGS),
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
    /// `now_ns`. Call [`Reassembly::must_evict`] first.
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

impl Pipeline {
    /// Fragments waiting for the rest of their datagram
    /// ([`crate::worker::Action::Held`]).
    pub fn reassembling(&self) -> usize {
        self.reasm.held()
    }

    /// Drops the datagram of slot `n` (its buffers back with the spares),
    /// counting each of its frames.
    fn defrag_drop(&mut self, n: usize, batch: &mut Batch, r: DropReason) {
        let pieces = self.reasm.pieces(n);
        for p in pieces {
            batch.spare.push(p.addr);
        }
        self.count_drops(r, pieces.len());
        self.reasm.release(n);
    }

    /// Datagrams that waited too long for their fragments (no ICMP: the
    /// kernel sends none for conntrack's reassembly, `frag_expire_skip_icmp`).
    pub(super) fn defrag_expire(&mut self, now_ns: u64, batch: &mut Batch) {
        for _ in 0..MAX_DATAGRAMS {
            match self.reasm.expired(now_ns) {
                Some(n) => self.defrag_drop(n, batch, DropReason::FragmentTimeout),
                None => break,
            }
        }
    }

    /// Holds the fragment `piece` of datagram `key`, received on `in_if`;
    /// when it completes its datagram, the datagram goes on
    /// ([`Pipeline::reassembled`]).
    pub(super) fn defrag_add(
        &mut self,
        now_ns: u64,
        mem: &mut [u8],
        batch: &mut Batch,
        (key, piece): (Key, Piece),
        in_if: IfIndex,
    ) {
        if let Some(n) = self.reasm.must_evict(&key) {
            self.defrag_drop(n, batch, DropReason::FragmentEvicted);
        }
        match self.reasm.add(key, in_if, now_ns, piece) {
            Added::Held => {}
            Added::Rejected(why) => {
                batch.spare.push(piece.addr);
                let r = match why {
                    DefragDrop::Duplicate => DropReason::FragmentDuplicate,
                    DefragDrop::TooLong => DropReason::FragmentTooLong,
                };
                self.count_drops(r, 1);
            }
            Added::Overlap(n) => {
                batch.spare.push(piece.addr);
                self.count_drops(DropReason::FragmentOverlap, 1);
                self.defrag_drop(n, batch, DropReason::FragmentOverlap);
            }
            Added::Complete(n) => self.reassembled(now_ns, mem, batch, n),
        }
    }

    /// A complete datagram: its first fragment through the pipeline for the
    /// whole datagram, then every fragment the way the first went.
    fn reassembled(&mut self, now_ns: u64, mem: &mut [u8], batch: &mut Batch, n: usize) {
        let mut pieces = std::mem::take(&mut self.reasm.scratch);
        pieces.clear();
        pieces.extend_from_slice(self.reasm.pieces(n));
        let in_if = self.reasm.in_if(n);
        self.reasm.release(n);
        let Some(first) = pieces.first().copied() else {
            self.reasm.scratch = pieces;
            return;
        };
        let at = usize::try_from(first.addr).unwrap_or(usize::MAX);
        let hl = mem
            .get(at.saturating_add(ETH_LEN)..at.saturating_add(usize::from(first.len)))
            .and_then(|ip| Ipv4Packet::new_checked(ip).ok())
            .map_or(20, |ip| ip.header_len() as u32);
        let total = hl + pieces.iter().map(|p| u32::from(p.plen)).sum::<u32>();
        let mut f = Frame::rx(first.addr, first.len, in_if);
        let reasm = Some(u16::try_from(total).unwrap_or(u16::MAX));
        let (mut fate, generate) = self.process_rx(now_ns, mem, &mut f, None, reasm);
        if let Fate::Forward { port, fragment } = fate {
            if let Err(r) = self.fragment_if_asked(mem, &mut f, port, fragment, batch) {
                fate = Fate::Drop(r);
            }
        }
        let rest = pieces.get(1..).unwrap_or(&[]);
        // Every fragment is a received frame, counted with the first one's fate.
        let frames = pieces.len() as u64;
        let give_back = |batch: &mut Batch| {
            batch.spare.push(f.addr);
            batch.spare.extend(rest.iter().map(|p| p.addr));
        };
        match fate {
            Fate::Forward { port, .. } => {
                self.counters.forwarded.fetch_add(frames, Ordering::Relaxed);
                batch.generated.push(Frame { port, ..f });
                for p in rest {
                    copy_rewritten_header(mem, first.addr, p.addr);
                    batch.generated.push(Frame {
                        addr: p.addr,
                        len: p.len,
                        port,
                    });
                }
            }
            Fate::HoldNeighbor { dev, next_hop } => {
                // Waiting for the next hop's MAC, all of them.
                for (k, (addr, len)) in std::iter::once((f.addr, f.len))
                    .chain(rest.iter().map(|p| (p.addr, p.len)))
                    .enumerate()
                {
                    if k > 0 {
                        copy_rewritten_header(mem, first.addr, addr);
                    }
                    let h = neigh::Held {
                        dev,
                        ip: next_hop,
                        addr,
                        len,
                    };
                    if let Some(old) = self.neigh.hold(h) {
                        batch.spare.push(old.addr);
                        self.count_drops(DropReason::NeighborHoldFull, 1);
                    }
                }
            }
            // A datagram made whole is not held again.
            Fate::HoldFragment { .. } => {
                self.count_drops(DropReason::InvalidFrame, pieces.len());
                give_back(batch);
            }
            Fate::Drop(r) => {
                self.count_drops(r, pieces.len());
                give_back(batch);
            }
            Fate::Consumed => {
                self.counters.consumed.fetch_add(frames, Ordering::Relaxed);
                give_back(batch);
            }
        }
        if let Some(g) = generate {
            self.generate(now_ns, mem, &f, g, batch);
        }
        self.reasm.scratch = pieces;
    }
}

/// Gives the fragment at `to` the header fields the pipeline rewrote in the
/// first fragment at `from`: the Ethernet addresses, TOS, TTL, IP addresses;
/// then its header checksum.
fn copy_rewritten_header(mem: &mut [u8], from: FrameAddr, to: FrameAddr) {
    let (Ok(a), Ok(b)) = (usize::try_from(from), usize::try_from(to)) else {
        return;
    };
    let Some((src, dst)) = frame_pair(mem, a, b) else {
        return;
    };
    let macs = ..ethernet::field::SRC.end;
    dst[macs].copy_from_slice(&src[macs]);
    let (Some(Ok(si)), Some(Ok(mut di))) = (
        src.get(ETH_LEN..).map(Ipv4Packet::new_checked),
        dst.get_mut(ETH_LEN..).map(Ipv4Packet::new_checked),
    ) else {
        return;
    };
    di.set_tos(si.tos());
    di.set_ttl(si.ttl());
    di.set_src(si.src());
    di.set_dst(si.dst());
    di.fill_checksum();
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
        let mut d = Reassembly::new();
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
        let mut d = Reassembly::new();
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
        let mut d = Reassembly::new();
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
