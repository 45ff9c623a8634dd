//! The kernel's hash chains (`nf_conntrack_buckets` of them) over the
//! table's own index, and what uses them: early drop when the table is full
//! (`early_drop()`: evict a non-assured entry near the new tuple), the chain
//! length limit, and the rate-limited "table full" message.

use crate::entry::{status, Entry};
use crate::tuple::Dir;

use super::{node, Table, TableFullLog, NS};

/// `NF_CT_EVICTION_RANGE`: hash chains scanned by early drop.
const EVICTION_RANGE: usize = 8;

/// Index buckets a kernel chain may span before its nodes are counted.
pub(super) const CHAIN_RUN_MAX: usize = 16;

impl Table {
    /// The kernel's hash chain of hash `h`: `reciprocal_scale(hash,
    /// nf_conntrack_buckets)`.
    #[inline]
    fn kernel_chain(&self, h: u64) -> usize {
        (((h >> 32) * self.chains as u64) >> 32) as usize
    }

    /// The index buckets that hold the nodes of the kernel's chain `c`:
    /// the nodes of one chain have neighbouring hashes, so their home
    /// buckets are a run (first, and how many after it), and the buckets
    /// their overflow reached follow it. A chain is a bucket or two unless
    /// `buckets` is set far below `max`; then early drop looks at the
    /// first 64 buckets of the run only.
    fn chain_run(&self, c: usize) -> (usize, usize) {
        let n = self.chains as u64;
        let c = c as u64;
        // The 32-bit hash values x with c = (x * n) >> 32.
        let lo = (c << 32).div_ceil(n);
        let hi = ((c + 1) << 32)
            .div_ceil(n)
            .saturating_sub(1)
            .min(u64::from(u32::MAX));
        let first = self.index.home(lo << 32);
        let last = self.index.home(hi << 32);
        (first, (last - first).min(64))
    }

    /// Calls `f` with each node of the kernel's chain `c` (slot, direction)
    /// until it returns false.
    fn chain_nodes(&self, c: usize, mut f: impl FnMut(usize, Dir, &Entry) -> bool) {
        let (first, span) = self.chain_run(c);
        for d in 0..=span + self.max_probe {
            if d > span && self.index.overflow_at(first, d - 1) == 0 {
                return;
            }
            for l in self.index.links_at(first, d) {
                let (i, dir) = node(l);
                let Some(e) = self.entries.get(i) else {
                    continue;
                };
                if self.kernel_chain(self.hash(&e.tuple[dir.idx()])) == c && !f(i, dir, e) {
                    return;
                }
            }
        }
    }

    /// A node of hash `h` was linked (`add`) or unlinked: the count of its
    /// kernel chain, when kept.
    #[inline]
    pub(super) fn count_chain(&mut self, h: u64, add: bool) {
        if self.chain_count.is_empty() {
            return;
        }
        let c = self.kernel_chain(h);
        if let Some(n) = self.chain_count.get_mut(c) {
            *n = if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            };
        }
    }

    /// Whether the kernel's chain of hash `h` holds more than
    /// `max_chainlen` nodes, when chains are counted (`buckets` far below
    /// `max`). Otherwise a chain is a bucket or two of the index, far
    /// shorter than `max_chainlen`, and what stands for it is the index's
    /// own bound: an insert that finds no free slot within `max_probe`
    /// buckets (`max_chainlen` links) of its home fails as too long.
    #[inline]
    pub(super) fn chain_too_long_at(&self, h: u64) -> bool {
        !self.chain_count.is_empty()
            && self
                .chain_count
                .get(self.kernel_chain(h))
                .is_some_and(|&n| usize::from(n) > self.cfg.max_chainlen)
    }

    /// `early_drop_list()` of the kernel's chain `c`: evict every
    /// non-assured entry with a tuple in that chain (expired ones are
    /// collected without counting). Returns the drops.
    fn early_drop_list(&mut self, c: usize, now: u64) -> u64 {
        let mut victims = [0u32; 64];
        let mut k = 0;
        self.chain_nodes(c, |i, _, e| {
            let gone = e.is_expired(now) || e.status & (status::ASSURED | status::DYING) == 0;
            if gone && !victims[..k].contains(&(i as u32)) {
                let Some(v) = victims.get_mut(k) else {
                    return false;
                };
                *v = i as u32;
                k += 1;
            }
            true
        });
        let mut drops = 0;
        for &v in &victims[..k] {
            let i = v as usize;
            let expired = self.entries.get(i).is_some_and(|e| e.is_expired(now));
            self.remove_idx(i);
            if expired {
                self.stats.expired += 1;
            } else {
                drops += 1;
            }
        }
        drops
    }

    /// `early_drop()`: scan `NF_CT_EVICTION_RANGE` kernel chains from the
    /// new tuple's.
    fn early_drop(&mut self, h: u64, now: u64) -> bool {
        let mut c = self.kernel_chain(h);
        for i in 0..EVICTION_RANGE {
            if i > 0 {
                c = (c + 1) % self.chains;
            }
            let drops = self.early_drop_list(c, now);
            if drops > 0 {
                self.stats.early_drop += drops;
                return true;
            }
        }
        false
    }

    fn full_log(&mut self, now: u64) -> Option<TableFullLog> {
        match self.full_log_at {
            Some(t) if now < t.saturating_add(NS) => {
                self.full_suppressed += 1;
                None
            }
            _ => {
                let suppressed = self.full_suppressed;
                self.full_suppressed = 0;
                self.full_log_at = Some(now);
                Some(TableFullLog { suppressed })
            }
        }
    }

    /// `__nf_conntrack_alloc()`'s limit: make room for one more entry near `h`.
    pub(super) fn make_room(&mut self, h: u64, now: u64) -> Result<(), Option<TableFullLog>> {
        if self.len < self.max {
            return Ok(());
        }
        if self.early_drop(h, now) {
            return Ok(());
        }
        self.gc_early_drop = true;
        self.stats.drop += 1;
        Err(self.full_log(now))
    }
}
