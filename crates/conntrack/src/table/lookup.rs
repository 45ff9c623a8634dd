//! Finding a tuple in the table: one lookup, a burst of them with their
//! cache misses overlapped ([`Table::lookup_batch`]), the hint a burst hands
//! to tracking, prefetching a new connection's buckets, and the removal of
//! expired entries met on the way (`nf_ct_gc_expired`).

use crate::entry::{status, NIL};
use crate::tuple::{Dir, Tuple};

use super::{node, EntryId, Hint, Table, LOOKUP_BATCH};

/// Hard cap on expired copies of one tuple collected in one go.
const CHAIN_WALK_CAP: usize = 1024;

impl Table {
    /// Live entries carrying `t` (either direction).
    pub(crate) fn find(&self, t: &Tuple, now: u64) -> Option<(usize, Dir)> {
        self.find_h(self.hash(t), t, now)
    }

    #[inline]
    fn find_h(&self, h: u64, t: &Tuple, now: u64) -> Option<(usize, Dir)> {
        self.index
            .find(h, |l| {
                let (i, d) = node(l);
                self.entries
                    .get(i)
                    .is_some_and(|e| e.tuple[d.idx()] == *t && !e.is_expired(now))
            })
            .map(node)
    }

    /// The index nodes of tuple `t` (hash `h`): (a live match, an expired match).
    pub(crate) fn scan(
        &self,
        h: u64,
        t: &Tuple,
        now: u64,
    ) -> (Option<(usize, Dir)>, Option<usize>) {
        let mut live = None;
        let mut dead = None;
        self.index.find(h, |l| {
            let (i, d) = node(l);
            if let Some(e) = self.entries.get(i) {
                if e.tuple[d.idx()] == *t {
                    if e.is_expired(now) {
                        dead = Some(i);
                    } else if live.is_none() {
                        live = Some((i, d));
                    }
                }
            }
            false
        });
        (live, dead)
    }

    /// Remove expired entries carrying `t` (the kernel's `nf_ct_gc_expired` on lookup).
    pub(crate) fn gc_tuple(&mut self, t: &Tuple, now: u64) {
        let h = self.hash(t);
        for _ in 0..CHAIN_WALK_CAP {
            let hit = self
                .index
                .find(h, |l| {
                    let (i, d) = node(l);
                    self.entries
                        .get(i)
                        .is_some_and(|e| e.tuple[d.idx()] == *t && e.is_expired(now))
                })
                .map(node);
            match hit {
                Some((i, _)) => {
                    self.remove_idx(i);
                    self.stats.expired += 1;
                }
                None => return,
            }
        }
    }

    /// Find the live entry carrying `t` in either direction.
    pub fn lookup(&self, t: &Tuple, now_ns: u64) -> Option<(EntryId, Dir)> {
        self.find(t, now_ns).map(|(i, d)| (self.id_of(i), d))
    }

    /// [`Table::lookup`] for a batch of tuples (`out[i]` for `tuples[i]`;
    /// `out` at least as long). In a large table every lookup is a cache
    /// miss on the bucket and one on the entry; here the buckets of up to
    /// [`LOOKUP_BATCH`] tuples are read first and then the entries their
    /// tags point to, loads that do not depend on each other, so the misses
    /// overlap (what a prefetch buys) instead of following one another.
    pub fn lookup_batch(&self, tuples: &[Tuple], now_ns: u64, out: &mut [Option<(EntryId, Dir)>]) {
        for (tc, oc) in tuples
            .chunks(LOOKUP_BATCH)
            .zip(out.chunks_mut(LOOKUP_BATCH))
        {
            // The hashes first, then the bucket prefetches in a tight loop:
            // the loads (cache misses in a large table) are not spread over
            // the hashing's instructions, so more of them are in flight.
            let mut hashes = [0u64; LOOKUP_BATCH];
            for (h, t) in hashes.iter_mut().zip(tc) {
                *h = self.hash(t);
            }
            let hashes = &hashes[..tc.len()];
            for &h in hashes {
                self.index.prefetch(h);
            }
            // Then the first entry each tag points to (the one compared).
            let mut first = [NIL; LOOKUP_BATCH];
            for (f, &h) in first.iter_mut().zip(hashes) {
                *f = self.index.find(h, |_| true).unwrap_or(NIL);
                if let Some(e) = self.entries.get((*f >> 1) as usize) {
                    crate::prefetch(e);
                }
            }
            for (((o, t), &h), &f) in oc.iter_mut().zip(tc).zip(hashes).zip(&first) {
                let (i, d) = node(f);
                let hit = self
                    .entries
                    .get(i)
                    .is_some_and(|e| e.tuple[d.idx()] == *t && !e.is_expired(now_ns));
                *o = if hit {
                    Some((i, d))
                } else if f == NIL {
                    // The probe found no tag: nothing to walk.
                    None
                } else {
                    self.find_h(h, t, now_ns)
                }
                .map(|(i, d)| (self.id_of(i), d));
            }
        }
    }

    /// Loads what a new connection of `orig` reads before it is inserted,
    /// as far as it can be guessed: the index bucket of its reply tuple as
    /// it is (the probe of a null binding, or the insertion without NAT),
    /// and with `snat` (the address source NAT gave the last new
    /// connection) the bucket of the reply with the source rewritten to it,
    /// the port kept (the uniqueness probe and the insertion), and the NAT
    /// source bucket. After the burst's [`Table::lookup_batch`] (which
    /// loads the original tuple's bucket), the cache misses of a burst of
    /// new connections overlap. A wrong guess costs a prefetch.
    #[inline]
    pub fn prefetch_new(&self, orig: &Tuple, snat: Option<u32>) {
        let Some(reply) = orig.invert() else {
            return;
        };
        self.index.prefetch(self.hash(&reply));
        if let Some(a) = snat {
            self.src_index.prefetch(self.src_hash(orig));
            let mut t = *orig;
            t.src = a;
            if let Some(reply) = t.invert() {
                self.index.prefetch(self.hash(&reply));
            }
        }
    }

    /// The live entry of `h` when it still is what a walk of the chain of
    /// `t` would find first at `now`: nothing was linked or unlinked since
    /// the hint was taken, and the entry still carries `t` and is live.
    #[inline]
    pub(super) fn hinted(&self, h: Hint, t: &Tuple, now: u64) -> Option<(usize, Dir)> {
        if h.changes != self.changes {
            return None;
        }
        let (id, d) = h.found;
        let e = self.entries.get(id.idx as usize)?;
        (e.gen == id.gen
            && e.status & status::CONFIRMED != 0
            && e.tuple[d.idx()] == *t
            && !e.is_expired(now))
        .then_some((id.idx as usize, d))
    }
}
