//! Incremental expiry: a sweep over the slots a budget at a time, and the
//! kernel's gc worker runs within it (their interval derived from the
//! entries' timeouts, and the eviction of unassured entries after a failed
//! early drop).

use crate::entry::{status, Entry};
use crate::tcp;

use super::{EntryId, Table, NS};

/// `GC_SCAN_INTERVAL_MIN`, `GC_SCAN_INTERVAL_MAX`, `GC_SCAN_INTERVAL_CLAMP`,
/// `GC_SCAN_INITIAL_COUNT` of nf_conntrack_core.c, and one jiffy (250 Hz).
const GC_INTERVAL_MIN_NS: u64 = NS;
const GC_INTERVAL_MAX_NS: u64 = 60 * NS;
const GC_TIMEOUT_CLAMP_NS: u64 = 300 * NS;
const GC_INITIAL_COUNT: u64 = 100;
const GC_JIFFY_NS: u64 = 4_000_000;

/// One run of the kernel's gc worker: when it started, the running average
/// of the entries' timeouts it computes for its next run (biased as if 100
/// entries had the maximum), and whether it evicts unassured entries (the
/// table was full when it started).
#[derive(Debug, Clone, Copy)]
pub(super) struct GcRun {
    start: u64,
    avg: u64,
    count: u64,
    early: bool,
}

impl GcRun {
    /// `expires = clamp(...); expires = (expires - next_run) / ++count;
    /// next_run += expires;`
    fn add(&mut self, expires_in: u64) {
        let e = expires_in.clamp(GC_INTERVAL_MIN_NS, GC_TIMEOUT_CLAMP_NS) as i128;
        self.count += 1;
        let d = (e - self.avg as i128) / self.count as i128;
        self.avg = (self.avg as i128 + d).max(0) as u64;
    }
}

impl Table {
    /// Incremental expiry: examine at most `budget` slots from where the last
    /// call stopped, removing expired entries. Returns the number removed.
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        self.expire_with(now_ns, budget, |_, _| {})
    }

    /// `expire`, calling `on_destroy` with each removed entry (DESTROY events).
    /// After a failed early drop, the next run of the gc worker (see below)
    /// also evicts non-assured and closing TCP entries while the table is at
    /// least 95% full (`gc_worker`).
    pub fn expire_with(
        &mut self,
        now_ns: u64,
        budget: usize,
        mut on_destroy: impl FnMut(EntryId, &Entry),
    ) -> usize {
        let n = self.entries.len();
        if n == 0 {
            return 0;
        }
        let max95 = u64::from(self.max) / 100 * 95;
        let mut removed = 0;
        let mut left = budget.min(n);
        // Slot by slot as the kernel's gc worker, but the slots up to the next
        // one to remove are tested in one tight pass over the slice. Expired
        // entries go whenever the sweep passes them (the kernel also reaps
        // them on lookup); the eviction of unassured entries after a failed
        // early_drop happens only in a gc worker run: a pass that starts at
        // the worker's next run time, which the pass before derived from the
        // entries' timeouts (`gc_worker`'s `next_run`, 1 to 60 s).
        while left > 0 {
            if self.sweep >= n {
                self.sweep = 0;
                if let Some(run) = self.gc_run.take() {
                    let next = run.avg.clamp(GC_INTERVAL_MIN_NS, GC_INTERVAL_MAX_NS);
                    let took = now_ns.saturating_sub(run.start).max(1);
                    let next = if next > took {
                        next - took
                    } else {
                        GC_JIFFY_NS
                    };
                    self.gc_next_run_ns = now_ns.saturating_add(next);
                    if run.early {
                        self.gc_early_drop = false;
                    }
                }
            }
            if self.sweep == 0 && self.gc_run.is_none() && now_ns >= self.gc_next_run_ns {
                self.gc_run = Some(GcRun {
                    start: now_ns,
                    avg: GC_INTERVAL_MAX_NS,
                    count: GC_INITIAL_COUNT,
                    early: self.gc_early_drop,
                });
            }
            // The worker reads the flag at each of its invocations (a run
            // is cut into slices of at most 10 ms): a table that fills
            // during a run is seen by it.
            if let Some(run) = self.gc_run.as_mut() {
                run.early |= self.gc_early_drop;
            }
            let start = self.sweep;
            let end = n.min(start + left);
            // Holds until an entry is removed (`len` changes).
            let early =
                self.gc_run.as_ref().is_some_and(|r| r.early) && u64::from(self.len) >= max95;
            let slice = self.entries.get(start..end).unwrap_or(&[]);
            let hit = match self.gc_run.as_mut() {
                // A run also averages the entries' timeouts for the next.
                Some(run) => slice.iter().position(|e| {
                    let gone = e.status & status::CONFIRMED != 0
                        && (e.is_expired(now_ns)
                            || (early
                                && (e.status & status::ASSURED == 0
                                    || e.tcp_state().is_some_and(tcp::tcp_can_early_drop))));
                    if !gone && e.status & status::CONFIRMED != 0 {
                        run.add(e.expires_in(now_ns));
                    }
                    gone
                }),
                None => slice
                    .iter()
                    .position(|e| e.status & status::CONFIRMED != 0 && e.is_expired(now_ns)),
            };
            let Some(k) = hit else {
                left -= end - start;
                self.sweep = end;
                continue;
            };
            let i = start + k;
            left -= k + 1;
            self.sweep = i + 1;
            let Some(e) = self.entries.get(i) else {
                continue;
            };
            let id = EntryId {
                idx: i as u32,
                gen: e.gen,
            };
            if e.is_expired(now_ns) {
                self.stats.expired += 1;
            }
            let old = self.remove_idx(i);
            on_destroy(id, &old);
            removed += 1;
        }
        removed
    }
}
