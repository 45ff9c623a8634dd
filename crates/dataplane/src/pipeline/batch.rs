//! The batch loop: every received frame of a [`Batch`] through the
//! pipeline ([`Pipeline::process_rx`]), then its verdict carried out: sent
//! (cut into fragments first when its route asks), dropped and counted,
//! consumed, held for its neighbour or for the rest of its datagram; and
//! what it asked to generate. Before the frames: the neighbour clock,
//! reassembly's and conntrack's expiry; conntrack lookups ahead of runs of
//! frames once the table is large; after them: the hold queue.

use std::sync::atomic::{AtomicU64, Ordering};

use fastables_conntrack::LOOKUP_BATCH;

use super::pkt::Fate;
use super::{Pipeline, PipelineCounters};
use crate::drop::DropReason;
use crate::neigh;
use crate::worker::{Action, Batch};
use fastables_port::Frame;

/// [`PipelineCounters`] of one batch's received frames, kept in plain
/// integers while the batch runs, added to the shared counters once at the
/// end (one atomic add per counter and batch, not per frame).
#[derive(Default)]
struct BatchTotals {
    rx: u64,
    forwarded: u64,
    consumed: u64,
    dropped: u64,
}

impl BatchTotals {
    fn add_to(&self, c: &PipelineCounters) {
        for (n, c) in [
            (self.rx, &c.rx),
            (self.forwarded, &c.forwarded),
            (self.consumed, &c.consumed),
            (self.dropped, &c.dropped),
        ] {
            if n != 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

impl PipelineCounters {
    pub(super) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Pipeline {
    /// Run every frame of `batch` through the pipeline. Each frame's verdict
    /// is set in `batch.verdicts` (frames are rewritten in place, `len` may
    /// shrink: Ethernet padding is removed); generated packets are written
    /// into buffers popped from `batch.spare` and appended to
    /// `batch.generated`. `mem` is the port's frame memory. Never
    /// allocates, never panics.
    pub fn process_batch(&mut self, now_ns: u64, mem: &mut [u8], batch: &mut Batch) {
        self.neigh.set_now(now_ns);
        self.defrag_expire(now_ns, batch);
        self.ct.expire(now_ns, self.opts.conntrack_expire_budget);
        let mut n = BatchTotals::default();
        let mut ahead = false;
        batch.verdicts.clear();
        for i in 0..batch.frames.len() {
            if i % LOOKUP_BATCH == 0 && self.ct.table.is_some() {
                let end = batch.frames.len().min(i + LOOKUP_BATCH);
                let frames = batch.frames.get(i..end).unwrap_or(&[]);
                let flow = self.fast.usable.then_some(&self.fast);
                let min = self.opts.conntrack_lookup_ahead;
                ahead = self.ct.lookup_ahead(now_ns, mem, frames, min, flow);
            }
            let Some(mut f) = batch.frames.get(i).copied() else {
                break;
            };
            n.rx += 1;
            let hint = if ahead {
                self.ct.hint_at(i % LOOKUP_BATCH)
            } else {
                None
            };
            let (fate, generate) = self.process_rx(now_ns, mem, &mut f, hint, None);
            let action = match fate {
                Fate::Forward { port, fragment } => {
                    match self.fragment_if_asked(mem, &mut f, port, fragment, batch) {
                        Ok(()) => {
                            n.forwarded += 1;
                            Action::Forward { port }
                        }
                        Err(r) => {
                            n.dropped += 1;
                            self.drops.inc(r);
                            Action::Drop(r)
                        }
                    }
                }
                Fate::Consumed => {
                    n.consumed += 1;
                    Action::Consumed
                }
                Fate::Drop(r) => {
                    n.dropped += 1;
                    self.drops.inc(r);
                    Action::Drop(r)
                }
                Fate::HoldNeighbor { dev, next_hop } => {
                    let h = neigh::Held {
                        dev,
                        ip: next_hop,
                        addr: f.addr,
                        len: f.len,
                    };
                    if let Some(old) = self.neigh.hold(h) {
                        // Its buffer is given back with the spares.
                        batch.spare.push(old.addr);
                        n.dropped += 1;
                        self.drops.inc(DropReason::NeighborHoldFull);
                    }
                    Action::Held
                }
                Fate::HoldFragment { key, piece } => {
                    // Counted when its datagram is whole, or dropped.
                    if let Some(slot) = batch.frames.get_mut(i) {
                        *slot = f;
                    }
                    batch.verdicts.push(Action::Held);
                    self.defrag_add(now_ns, mem, batch, (key, piece), f.port);
                    continue;
                }
            };
            if let Some(slot) = batch.frames.get_mut(i) {
                *slot = f;
            }
            batch.verdicts.push(action);
            if let Some(g) = generate {
                self.generate(now_ns, mem, &f, g, batch);
            }
        }
        n.add_to(&self.counters);
        self.service_held(now_ns, mem, batch);
    }

    /// A forwarded frame cut into fragments for `fragment`, the MTU of its
    /// route, when it asks (see [`Fate::Forward`]); an error when it
    /// cannot be cut.
    #[inline(always)]
    pub(super) fn fragment_if_asked(
        &mut self,
        mem: &mut [u8],
        f: &mut Frame,
        port: fastables_rules::ctx::IfIndex,
        fragment: Option<u16>,
        batch: &mut Batch,
    ) -> Result<(), DropReason> {
        match fragment {
            None => Ok(()),
            Some(mtu) => self.fragment(mem, f, mtu, port, batch),
        }
    }

    /// `frames` received frames dropped for `r`.
    pub(super) fn count_drops(&self, r: DropReason, frames: usize) {
        let n = frames as u64;
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        self.drops.add(r, n);
    }
}
