//! SNAT port blocks in the pipeline (`-j SNAT ... --deterministic` or
//! `--block-size`, `fastables_rules::blocks`): the dynamic pools of the
//! ruleset, which the conntrack table holds this worker's share of, and the
//! range of a new connection. A deterministic block is computed from the
//! connection's source alone; a dynamic one is the table's to choose.
//!
//! With several workers a deterministic block is shared by all: each
//! takes the ports of it whose replies RSS brings back to itself (the
//! table's reply filter), so two workers never pick the same reply tuple
//! and nothing is shared. Dynamic blocks are shared out between the
//! workers instead (the conntrack crate's `blocks`).

use fastables_conntrack::{BlockPoolSpec, NatRange};
use fastables_rules::blocks::{Layout, Mode};
use fastables_rules::compile::CompiledRuleset;
use fastables_rules::model::{NatFlags, NatRange as RuleRange, Target};

use super::conntrack::Conntrack;
use super::nat::flag_bits;
use super::Pipeline;

/// The dynamic block pools of `rules`, each once (rules with the same
/// options share one), in rules order.
pub(super) fn dynamic_pools(rules: &CompiledRuleset) -> Vec<Layout> {
    let mut pools: Vec<Layout> = Vec::new();
    for id in 0..rules.entry_count() as u32 {
        if let Target::Snat { range, .. } = rules.target(id) {
            if let Ok(Some(l)) = Layout::of(range) {
                if matches!(l.mode, Mode::Dynamic { .. }) && !pools.contains(&l) {
                    pools.push(l);
                }
            }
        }
    }
    pools
}

/// The conntrack crate's spec of dynamic pool `l`, numbered `id`.
fn spec(l: &Layout, id: u32) -> BlockPoolSpec {
    BlockPoolSpec {
        id,
        pool: l.pool,
        ports: l.ports,
        size: l.size,
        max_blocks: match l.mode {
            Mode::Dynamic { max_blocks } => max_blocks,
            Mode::Deterministic { .. } => 1,
        },
    }
}

impl Conntrack {
    /// The table's pools become `pools` (this worker's share).
    pub(super) fn install_pools(&mut self) {
        let (worker, workers) = self.worker();
        let specs: Vec<BlockPoolSpec> = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, l)| spec(l, i as u32 + 1))
            .collect();
        if let Some(t) = self.table.as_mut() {
            if !specs.is_empty() || !t.blocks_in_use().is_empty() {
                t.set_block_pools(&specs, worker, workers);
            }
        }
    }

    /// The NAT range of a new connection from `src` under SNAT `range`
    /// with port blocks: its deterministic block, or the dynamic pool.
    /// `None` for a source outside the deterministic inside range.
    pub(super) fn block_range(
        &self,
        range: &RuleRange,
        flags: NatFlags,
        src: u32,
    ) -> Option<NatRange> {
        let l = Layout::of(range).ok()??;
        match l.mode {
            Mode::Deterministic { .. } => {
                let b = l.map(src)?;
                Some(
                    NatRange::addrs(b.addr, b.addr)
                        .with_ports(b.lo, b.hi)
                        .with_flags(flag_bits(flags) | NatRange::DETERMINISTIC),
                )
            }
            Mode::Dynamic { .. } => {
                let i = self.pools.iter().position(|p| *p == l)?;
                let mut r = NatRange::default().with_flags(flag_bits(flags) | NatRange::BLOCKS);
                r.pool = i as u16;
                Some(r)
            }
        }
    }
}

impl Pipeline {
    /// Record NAT events in the connection table (session create/delete
    /// too with `sessions`), at most `capacity` between two drains
    /// (`CtTable::drain_nat_events`); applies to a table loaded later too.
    pub fn set_nat_log(&mut self, on: bool, sessions: bool, capacity: usize) {
        self.ct.nat_log = on.then_some((sessions, capacity));
        if let Some(t) = self.ct.table.as_mut() {
            t.set_nat_log(on, sessions, capacity);
        }
    }
}
