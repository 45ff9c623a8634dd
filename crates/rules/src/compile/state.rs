//! Per-worker state of a compiled ruleset: counters, `-m limit` buckets,
//! the jump stack, and the recording of the entries one packet counted (the
//! flow cache's `Path`).

use super::CompiledRuleset;
use crate::matches::limit::Bucket;
use crate::model::{Counters, Ruleset};

/// Per-worker mutable state of a [`CompiledRuleset`].
#[derive(Debug, Clone)]
pub struct RuleState {
    pub(super) counters: Vec<Counters>,
    pub(super) buckets: Vec<Bucket>,
    pub(super) stack: Vec<u32>,
    pub(super) id: u64,
    /// Whether counted entries are appended to `path` ([`RuleState::record`]).
    pub(super) recording: bool,
    pub(super) path: Path,
}

/// The most counted entries a [`Path`] holds.
pub const PATH_MAX: usize = 12;

/// The entries counted for one packet, in order, while a [`RuleState`]
/// records ([`RuleState::record`]): what [`RuleState::replay`] counts again
/// for a later packet that would take the same way through the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Path {
    len: u8,
    /// More than [`PATH_MAX`] entries were counted: the path is incomplete.
    overflow: bool,
    entries: [u32; PATH_MAX],
}

impl Path {
    /// The counted entries, in order.
    pub fn entries(&self) -> &[u32] {
        self.entries.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Appends `entry` (out of the rule loop's hot code: recording is rare).
    #[cold]
    #[inline(never)]
    pub(super) fn push(&mut self, entry: u32) {
        match self.entries.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = entry;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }
}

impl RuleState {
    /// Fresh state: zero counters, full limit buckets, a jump stack deep
    /// enough for the ruleset (user chains + 1).
    pub fn new(c: &CompiledRuleset) -> RuleState {
        RuleState {
            counters: vec![Counters::default(); c.hot.len()],
            buckets: c.buckets.clone(),
            stack: vec![0; c.stack_depth],
            id: c.id,
            recording: false,
            path: Path::default(),
        }
    }

    /// Counts one packet of `bytes` on entry `entry` (a policy from
    /// [`Shortcut::Policy`](super::Shortcut::Policy)), as [`CompiledRuleset::run`] would.
    /// Not recorded ([`RuleState::record`]): the caller knows these.
    #[inline]
    pub fn count(&mut self, entry: u32, bytes: u16) {
        if let Some(c) = self.counters.get_mut(entry as usize) {
            c.packets = c.packets.wrapping_add(1);
            c.bytes = c.bytes.wrapping_add(u64::from(bytes));
        }
    }

    /// From now on, every entry [`CompiledRuleset::run`] counts is also
    /// appended to a fresh [`Path`], until [`RuleState::take_path`].
    pub fn record(&mut self) {
        self.recording = true;
        self.path = Path::default();
    }

    /// Whether [`RuleState::record`] is on.
    pub fn recording(&self) -> bool {
        self.recording
    }

    /// The entries recorded so far.
    pub fn path_len(&self) -> usize {
        usize::from(self.path.len)
    }

    /// Stops recording; the path since [`RuleState::record`], unless it
    /// had more than [`PATH_MAX`] entries.
    pub fn take_path(&mut self) -> Option<Path> {
        self.recording = false;
        (!self.path.overflow).then_some(self.path)
    }

    /// Counts one packet of `bytes` on every entry of `path`, as the run
    /// that recorded it did.
    #[inline(always)]
    pub fn replay(&mut self, path: &Path, bytes: u16) {
        let n = usize::from(path.len).min(PATH_MAX);
        for &e in &path.entries[..n] {
            if let Some(c) = self.counters.get_mut(e as usize) {
                c.packets = c.packets.wrapping_add(1);
                c.bytes = c.bytes.wrapping_add(u64::from(bytes));
            }
        }
    }
}

impl CompiledRuleset {
    /// A copy of `rs` (the ruleset this was compiled from) whose rule and
    /// policy counters are those `rs` was loaded with plus the sum over the
    /// workers' `states`.
    pub fn counters_into(&self, rs: &Ruleset, states: &[&RuleState]) -> Ruleset {
        let mut out = rs.clone();
        let sum = |idx: u32| -> Counters {
            let mut c = Counters::default();
            for s in states {
                if let Some(x) = s.counters.get(idx as usize) {
                    c.packets += x.packets;
                    c.bytes += x.bytes;
                }
            }
            c
        };
        for (ti, t) in out.tables.iter_mut().enumerate() {
            let Some(lays) = self.layout.get(ti) else {
                continue;
            };
            for (ci, ch) in t.chains.iter_mut().enumerate() {
                let Some(lay) = lays.get(ci) else { continue };
                if lay.nrules as usize == ch.rules.len() {
                    for (ri, r) in ch.rules.iter_mut().enumerate() {
                        let c = sum(lay.rules_start + ri as u32);
                        r.counters.packets += c.packets;
                        r.counters.bytes += c.bytes;
                    }
                }
                if let Some(p) = lay.policy {
                    let c = sum(p);
                    ch.counters.packets += c.packets;
                    ch.counters.bytes += c.bytes;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn counters_sum_workers_and_loaded_values() {
        let mut rs = filter_input(vec![Rule {
            proto: Some(pos(17)),
            ..rule(Target::Accept)
        }]);
        rs.tables[0].chains[0].counters = Counters {
            packets: 100,
            bytes: 1000,
        };
        rs.tables[0].chains[0].rules[0].counters = Counters {
            packets: 5,
            bytes: 50,
        };
        let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
        let mut s1 = RuleState::new(&c);
        let mut s2 = RuleState::new(&c);
        let mut udp = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        udp.proto = 17;
        udp.len = 100;
        let mut tcp = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(
            c.run(Table::Filter, Hook::Input, &mut udp.clone(), &mut s1, 0),
            Verdict::Accept
        );
        assert_eq!(
            c.run(Table::Filter, Hook::Input, &mut udp, &mut s2, 0),
            Verdict::Accept
        );
        assert_eq!(
            c.run(Table::Filter, Hook::Input, &mut tcp, &mut s2, 0),
            Verdict::Drop
        );
        let out = c.counters_into(&rs, &[&s1, &s2]);
        assert_eq!(
            out.tables[0].chains[0].rules[0].counters,
            Counters {
                packets: 7,
                bytes: 250
            }
        );
        assert_eq!(
            out.tables[0].chains[0].counters,
            Counters {
                packets: 101,
                bytes: 1060
            }
        );
        // Other chains untouched.
        assert_eq!(out.tables[0].chains[1], rs.tables[0].chains[1]);
    }
}
