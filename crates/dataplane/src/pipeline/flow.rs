//! The flow cache: a forwarding decision cached per connection and
//! direction (DESIGN.md: "filter runs on every packet unless the ruleset is
//! proven flow-invariant (then a verdict may be cached per connection; an
//! optimisation, never a change in meaning)").
//!
//! When every chain a forwarded packet crosses is flow-invariant
//! ([`fastables_rules::compile::CompiledRuleset::flow_invariant`]), the first
//! packet of a confirmed connection in each direction and conntrack state
//! (NEW until the first reply, then ESTABLISHED) goes the slow way while
//! its rule counters are recorded; the [`Decision`] (the counted entries,
//! the input interface, the state, the route) is kept, and the
//! connection's [`Tag`] for that direction points at it. Later packets of
//! that direction that conntrack finds in the same state replay the
//! counters and take the route without running the chains. Conntrack itself (the tracker, the
//! timeouts, the checksum check), the NAT rewrite, the TTL, the MTU and the
//! neighbour are still done for every packet.
//!
//! Decisions are shared by every connection that takes the same way (most
//! do), interned in a bounded table. A ruleset change or a full table
//! starts a new generation: every tag becomes stale, and each connection
//! records again on its next packet.

use std::collections::HashMap;

use fastables_conntrack::{CtState, Dir, EntryId};
use fastables_rules::compile::Path;
use fastables_rules::ctx::IfIndex;

/// Decisions kept per generation.
pub(crate) const DECISIONS_MAX: usize = 4096;

/// How packets of one direction of a connection are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Decision {
    /// The entries the chains counted.
    pub path: Path,
    /// How many of them PREROUTING counted, and whether a `-j TTL` is
    /// among those (applied again; TTL targets later on the way are not
    /// kept: [`fastables_rules::compile::CompiledRuleset::replayable`]).
    pub pre_len: u8,
    pub ttl: bool,
    /// The interface the packets arrive on (another one goes the slow way).
    pub in_if: IfIndex,
    /// Their conntrack state: NEW until the first reply, then ESTABLISHED
    /// (a packet in another state goes the slow way).
    pub state: CtState,
    /// The route's output device, next hop and MTU.
    pub out_dev: IfIndex,
    pub next_hop: u32,
    pub mtu: u16,
}

/// A connection's decisions: `[u32; 3]` = the entry's generation (its slot
/// is reused under another), the cache generation, and the decision of each
/// direction (index + 1; 0 = none) in two halves.
type Tag = [u32; 3];

/// Decisions and the tags of the connections, by conntrack slot.
pub(crate) struct FlowCache {
    gen: u32,
    decisions: Vec<Decision>,
    index: HashMap<Decision, u32, ahash::RandomState>,
    tags: Vec<Tag>,
}

impl FlowCache {
    /// A cache for a table of at most `slots` entries. The tags are zeroed
    /// memory the system provides as it is touched.
    pub(crate) fn new(slots: usize) -> FlowCache {
        FlowCache {
            gen: 1,
            decisions: Vec::with_capacity(DECISIONS_MAX),
            index: HashMap::with_capacity_and_hasher(
                DECISIONS_MAX,
                ahash::RandomState::with_seeds(1, 2, 3, 4),
            ),
            tags: vec![[0; 3]; slots],
        }
    }

    /// The tags' allocation as (address, bytes) (see
    /// [`fastables_conntrack::Table::regions`]).
    pub(crate) fn region(&self) -> (usize, usize) {
        (
            self.tags.as_ptr() as usize,
            self.tags.capacity() * std::mem::size_of::<Tag>(),
        )
    }

    /// A new generation: every tag is stale.
    pub(crate) fn invalidate(&mut self) {
        self.gen = self.gen.wrapping_add(1).max(1);
        self.decisions.clear();
        self.index.clear();
    }

    /// The decision of `dir` of connection `id`, if it has a current one,
    /// and its number ([`FlowCache::decision`]).
    #[inline]
    pub(crate) fn get(&self, id: EntryId, dir: Dir) -> Option<(usize, &Decision)> {
        let t = self.tags.get(id.index() as usize)?;
        if t[0] != id.generation() || t[1] != self.gen {
            return None;
        }
        let d = match dir {
            Dir::Original => t[2] & 0xffff,
            Dir::Reply => t[2] >> 16,
        };
        let n = (d as usize).checked_sub(1)?;
        Some((n, self.decisions.get(n)?))
    }

    /// Starts loading the tag of `id` (a cache miss in a large table), so
    /// that a batch's misses overlap ([`crate::pipeline::Pipeline`]'s
    /// lookups ahead).
    #[inline]
    pub(crate) fn warm(&self, id: EntryId) {
        if let Some(t) = self.tags.get(id.index() as usize) {
            fastables_conntrack::prefetch(t);
        }
    }

    /// Decision number `n` of the current generation.
    #[inline]
    pub(crate) fn decision(&self, n: usize) -> Option<&Decision> {
        self.decisions.get(n)
    }

    /// Records `d` as the decision of `dir` of connection `id`.
    pub(crate) fn set(&mut self, id: EntryId, dir: Dir, d: Decision) {
        let n = match self.index.get(&d) {
            Some(&n) => n,
            None => {
                if self.decisions.len() >= DECISIONS_MAX {
                    self.invalidate();
                }
                let n = self.decisions.len() as u32 + 1;
                self.decisions.push(d);
                self.index.insert(d, n);
                n
            }
        };
        let gen = self.gen;
        let Some(t) = self.tags.get_mut(id.index() as usize) else {
            return;
        };
        if t[0] != id.generation() || t[1] != gen {
            *t = [id.generation(), gen, 0];
        }
        t[2] = match dir {
            Dir::Original => (t[2] & 0xffff_0000) | n,
            Dir::Reply => (t[2] & 0xffff) | (n << 16),
        };
    }
}
