//! The table's side of dynamic port blocks and of the NAT event log: the
//! pools of this worker, the choice of a new connection's tuple from its
//! subscriber's blocks, the block use counts kept as connections come and
//! go, and the events recorded on the way (`crate::natevent`).

use crate::blocks::{AllocError, BlockPool, BlockPoolSpec};
use crate::entry::{status, Entry, NIL};
use crate::nat::{Manip, NatRange};
use crate::natevent::{NatEvent, NatEventKind};
use crate::tuple::{Tuple, IPPROTO_ICMP};
use crate::InsertError;

use super::Table;

/// The public port of a source-NATed connection's reply tuple: the
/// destination port, or the echo id for ICMP.
fn public_port(reply: &Tuple) -> u16 {
    if reply.proto == IPPROTO_ICMP {
        reply.sport
    } else {
        reply.dport
    }
}

/// A session event of `e`: the original tuple before NAT, the reply
/// tuple's inverse after.
fn session(kind: NatEventKind, e: &Entry, now: u64) -> NatEvent {
    let (o, r) = (e.orig(), e.reply());
    let icmp = o.proto == IPPROTO_ICMP;
    NatEvent {
        kind,
        time_ns: now,
        proto: o.proto,
        src: o.src,
        sport: o.sport,
        dst: o.dst,
        dport: if icmp { 0 } else { o.dport },
        xsrc: r.dst,
        xsport: public_port(r),
        xdst: r.src,
        xdport: if icmp { 0 } else { r.sport },
        ..NatEvent::default()
    }
}

impl Table {
    /// The dynamic port-block pools of the ruleset, in its order (a range
    /// with [`NatRange::BLOCKS`] names one by its position), as worker
    /// `worker` of `workers` shares them. A pool already there with the
    /// same spec keeps its blocks; one no longer listed hands out nothing
    /// more and goes when its last block is released.
    pub fn set_block_pools(&mut self, specs: &[BlockPoolSpec], worker: u16, workers: u16) {
        let mut old = std::mem::take(&mut self.pools);
        let mut pools = Vec::with_capacity(specs.len() + old.len());
        for s in specs {
            match old
                .iter()
                .position(|p| p.spec == *s && p.share == (worker, workers) && !p.retired)
            {
                Some(i) => pools.push(old.swap_remove(i)),
                None => pools.push(BlockPool::new(*s, worker, workers)),
            }
        }
        for mut p in old {
            if p.in_use() > 0 {
                p.retired = true;
                pools.push(p);
            }
        }
        self.pools = pools;
    }

    /// Blocks in use per pool (its id), retired pools included.
    pub fn blocks_in_use(&self) -> Vec<(u32, usize)> {
        self.pools.iter().map(|p| (p.spec.id, p.in_use())).collect()
    }

    /// Record NAT events (`sessions`: session create/delete too, besides
    /// block and exhaustion events), at most `capacity` between two drains;
    /// `on == false` stops and empties the log.
    pub fn set_nat_log(&mut self, on: bool, sessions: bool, capacity: usize) {
        let l = &mut self.natlog;
        l.on = on;
        l.sessions = sessions;
        if on && l.buf.capacity() < capacity {
            l.buf.reserve_exact(capacity - l.buf.len());
        }
        if !on {
            l.buf.clear();
        }
    }

    /// Hands the recorded NAT events to `f`, oldest first, and empties the
    /// log; returns how many did not fit it since the last drain.
    pub fn drain_nat_events(&mut self, mut f: impl FnMut(&NatEvent)) -> u64 {
        let l = &mut self.natlog;
        for e in &l.buf {
            f(e);
        }
        l.buf.clear();
        let lost = l.lost - l.lost_drained;
        l.lost_drained = l.lost;
        lost
    }

    /// NAT events recorded and not drained yet.
    pub fn nat_events_pending(&self) -> usize {
        self.natlog.buf.len()
    }

    /// NAT events that did not fit the log between two drains, in all.
    pub fn nat_events_lost(&self) -> u64 {
        self.natlog.lost
    }

    /// A source tuple for `curr` from its subscriber's blocks of the pool
    /// `range` names, a new block when none has a free one; false when
    /// none can serve it (the quota, the address or the pool is full).
    pub(crate) fn block_tuple(
        &mut self,
        curr: &Tuple,
        range: &NatRange,
        e: &Entry,
        now: u64,
    ) -> (Tuple, bool) {
        let pi = usize::from(range.pool);
        let sub = curr.src;
        let mut k = match self.pools.get(pi) {
            Some(p) => p.first_of(sub),
            None => return (*curr, false),
        };
        // The subscriber's blocks, newest first.
        while k != NIL {
            let r = self.block_range(pi, k, range.flags);
            let (t, free) = self.unique_tuple(curr, &r, e, Manip::Src, now, true);
            if free {
                return (t, true);
            }
            k = self.pools.get(pi).map_or(NIL, |p| p.next_of(k));
        }
        let Some(pool) = self.pools.get_mut(pi) else {
            return (*curr, false);
        };
        let (id, size, max_blocks) = (pool.spec.id, pool.spec.size, pool.spec.max_blocks);
        match pool.alloc(sub) {
            Ok(k) => {
                let (addr, lo, hi) = pool.range(k);
                self.block_fresh = Some((pi, k));
                if self.natlog.on {
                    self.natlog.push(NatEvent {
                        kind: NatEventKind::BlockAlloc,
                        time_ns: now,
                        src: sub,
                        xsrc: addr,
                        block: (lo, hi),
                        pool: id,
                        ..NatEvent::default()
                    });
                }
                let r = self.block_range(pi, k, range.flags);
                self.unique_tuple(curr, &r, e, Manip::Src, now, true)
            }
            Err(err) => {
                if self.natlog.on {
                    let mut ev = NatEvent {
                        time_ns: now,
                        proto: curr.proto,
                        src: sub,
                        pool: id,
                        ..NatEvent::default()
                    };
                    match err {
                        AllocError::Quota => {
                            ev.kind = NatEventKind::QuotaExceeded;
                            ev.limit = u32::from(max_blocks) * u32::from(size);
                        }
                        AllocError::AddressFull(a) => {
                            ev.kind = NatEventKind::PortsExhausted;
                            ev.xsrc = a;
                        }
                        AllocError::PoolFull => ev.kind = NatEventKind::AddressesExhausted,
                    }
                    self.natlog.push_limited(ev);
                }
                (*curr, false)
            }
        }
    }

    /// The NAT range of block `k` of pool `pi`: its address and ports.
    fn block_range(&self, pi: usize, k: u32, flags: u32) -> NatRange {
        let (addr, lo, hi) = self.pools.get(pi).map_or((0, 0, 0), |p| p.range(k));
        NatRange::addrs(addr, addr)
            .with_ports(lo, hi)
            .with_flags(flags & !NatRange::BLOCKS)
    }

    /// The dynamic block holding the public end of source-NATed `e`.
    fn block_of(&self, e: &Entry) -> Option<(usize, u32)> {
        let r = e.reply();
        let (addr, port) = (r.dst, public_port(r));
        self.pools
            .iter()
            .enumerate()
            .find_map(|(pi, p)| p.block_at(addr, port).map(|k| (pi, k)))
    }

    /// Entry `i` was just confirmed: its block counts it, a block given for
    /// it that it does not use goes back, and its session is logged.
    pub(crate) fn nat_inserted(&mut self, i: usize) {
        let Some(&e) = self.entries.get(i) else {
            return;
        };
        if e.status & status::SRC_NAT != 0 && !self.pools.is_empty() {
            if let Some((pi, k)) = self.block_of(&e) {
                if let Some(p) = self.pools.get_mut(pi) {
                    p.add_ref(k);
                }
            }
        }
        self.settle_fresh_block();
        if self.natlog.on && self.natlog.sessions && e.status & status::NAT_MASK != 0 {
            let ev = session(NatEventKind::SessionCreate, &e, self.clock);
            self.natlog.push(ev);
        }
    }

    /// Entry `i` is being removed: its session is logged and its block
    /// goes back to the pool when it was the block's last connection.
    pub(crate) fn nat_removed(&mut self, i: usize) {
        let Some(&e) = self.entries.get(i) else {
            return;
        };
        if self.natlog.on && self.natlog.sessions && e.status & status::NAT_MASK != 0 {
            let ev = session(NatEventKind::SessionDelete, &e, self.clock);
            self.natlog.push(ev);
        }
        if e.status & status::SRC_NAT != 0 && !self.pools.is_empty() {
            if let Some((pi, k)) = self.block_of(&e) {
                if self.pools.get_mut(pi).is_some_and(|p| p.drop_ref(k)) {
                    self.release_block(pi, k);
                }
            }
        }
    }

    /// Block `k` of pool `pi` goes back (logged); a retired pool whose last
    /// block it was goes.
    fn release_block(&mut self, pi: usize, k: u32) {
        let Some(p) = self.pools.get_mut(pi) else {
            return;
        };
        let (addr, lo, hi) = p.range(k);
        let ev = NatEvent {
            kind: NatEventKind::BlockRelease,
            time_ns: self.clock,
            src: p.owner_of(k),
            xsrc: addr,
            block: (lo, hi),
            pool: p.spec.id,
            ..NatEvent::default()
        };
        p.release(k);
        if p.retired && p.in_use() == 0 {
            self.pools.remove(pi);
        }
        if self.natlog.on {
            self.natlog.push(ev);
        }
    }

    /// A block handed out for the connection being confirmed and not used
    /// by it (the insert failed, or its protocol has no ports) goes back.
    fn settle_fresh_block(&mut self) {
        if let Some((pi, k)) = self.block_fresh.take() {
            if self.pools.get(pi).is_some_and(|p| p.refs(k) == 0) {
                self.release_block(pi, k);
            }
        }
    }

    /// The source NAT of `e` (with range `snat`) could not be confirmed:
    /// an unused fresh block goes back, and a clash of its reply tuple is
    /// logged as the exhaustion it is (the subscriber's deterministic
    /// block, or the range's address).
    pub(crate) fn nat_refused(&mut self, e: &Entry, snat: &NatRange, err: Option<InsertError>) {
        self.settle_fresh_block();
        if !self.natlog.on || !matches!(err, Some(InsertError::Clash(_))) {
            return;
        }
        let (o, r) = (e.orig(), e.reply());
        let mut ev = NatEvent {
            time_ns: self.clock,
            proto: o.proto,
            src: o.src,
            xsrc: r.dst,
            ..NatEvent::default()
        };
        if snat.flags & NatRange::DETERMINISTIC != 0 {
            ev.kind = NatEventKind::QuotaExceeded;
            ev.limit = u32::from(snat.max_proto.wrapping_sub(snat.min_proto)) + 1;
        } else if snat.flags & NatRange::MAP_IPS != 0 && r.dst != o.src {
            ev.kind = NatEventKind::PortsExhausted;
        } else {
            return;
        }
        self.natlog.push_limited(ev);
    }
}
