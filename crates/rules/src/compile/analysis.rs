//! What the data plane may know of a ruleset in advance, to skip running
//! it: chains that are absent or have no rules (`shortcut`), chains every
//! packet of a flow takes the same way through (`flow_invariant`), and
//! recorded ways whose counting stands for running them (`replayable`).

use super::program::Act;
use super::{CompiledRuleset, Path};
use crate::ctx::Verdict;
use crate::model::{Hook, Table, TtlTarget};
use crate::targets::Action;

/// A table run known in advance ([`CompiledRuleset::shortcut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// The ruleset has no such chain: the packet goes on (ACCEPT), nothing is counted.
    Absent,
    /// A built-in chain without rules: `verdict` is its policy; count the
    /// packet on `entry` ([`RuleState::count`](super::RuleState::count)),
    /// which is also the deciding entry (`Effects::last`).
    Policy { entry: u32, verdict: Verdict },
}

impl CompiledRuleset {
    /// What [`CompiledRuleset::run`] does for `table`/`hook` whatever the
    /// packet, when that is known from the ruleset alone: the chain is not
    /// there ([`Shortcut::Absent`]: ACCEPT, nothing counted) or it is a
    /// built-in chain without rules ([`Shortcut::Policy`]: its policy,
    /// counted). `None` when its rules must run. The data plane computes
    /// this once per ruleset and then skips the call for such chains.
    pub fn shortcut(&self, table: Table, hook: Hook) -> Option<Shortcut> {
        let Some((start, policy)) = self.hooks[table as usize][hook as usize] else {
            return Some(Shortcut::Absent);
        };
        if start != policy {
            return None;
        }
        match self.cold.get(policy as usize)?.act {
            Act::Accept => Some(Shortcut::Policy {
                entry: policy,
                verdict: Verdict::Accept,
            }),
            Act::Drop => Some(Shortcut::Policy {
                entry: policy,
                verdict: Verdict::Drop,
            }),
            _ => None,
        }
    }

    /// Whether `table`/`hook` takes the same way for every TCP or UDP
    /// packet (not a fragment) of one direction of one connection in the
    /// same conntrack state, given the same interfaces: every entry it can
    /// reach (through jumps and gotos) matches only on what such packets
    /// share (addresses, protocol, ports, interfaces, conntrack state,
    /// tuples and direction, the packet mark as earlier entries set it,
    /// address types). Then the entries one packet counted
    /// ([`RuleState::record`](super::RuleState::record)) are the ones every later such packet would
    /// count, with the same verdict; if none of them has a target that acts
    /// on the packet or the connection ([`CompiledRuleset::replayable`]),
    /// the data plane may count them again ([`RuleState::replay`](super::RuleState::replay)) instead
    /// of running the chain (DESIGN.md: "a verdict may be cached per
    /// connection"). Not invariant: TCP flags and options, `-m length`,
    /// `-m ttl`, `-m limit`, `--ctstatus` (ASSURED comes later).
    pub fn flow_invariant(&self, table: Table, hook: Hook) -> bool {
        let Some((start, _)) = self.hooks[table as usize][hook as usize] else {
            return true;
        };
        let mut seen = vec![false; self.cold.len()];
        let mut todo = vec![start];
        while let Some(first) = todo.pop() {
            if std::mem::replace(seen.get_mut(first as usize).unwrap_or(&mut true), true) {
                continue;
            }
            let mut pc = first;
            loop {
                let (Some(h), Some(c), Some(info)) = (
                    self.hot.get(pc as usize),
                    self.cold.get(pc as usize),
                    self.infos.get(pc as usize),
                ) else {
                    return false;
                };
                let exts = self
                    .exts
                    .get(c.ext_start as usize..c.ext_end as usize)
                    .unwrap_or(&[]);
                if h.tfl_mask != 0 || !exts.iter().all(|x| x.flow_invariant()) {
                    return false;
                }
                if let Act::Jump(t) | Act::Goto(t) = c.act {
                    todo.push(t);
                }
                // The policy, or the implicit RETURN, ends the chain.
                if info.index == 0 {
                    break;
                }
                pc += 1;
            }
        }
        true
    }

    /// Whether counting `path` again stands for the run that recorded it:
    /// none of its entries has a target that acts on the packet or the
    /// connection (LOG, CONNMARK, TTL, NOTRACK, TRACE, TCPMSS) — deciding,
    /// jumping, returning and setting the packet mark are what the way
    /// itself is — except TTL among its first `ttl_until` entries, which the
    /// caller applies again ([`CompiledRuleset::ttl_target`]).
    pub fn replayable(&self, path: &Path, ttl_until: usize) -> bool {
        path.entries().iter().enumerate().all(|(i, &e)| {
            match self.cold.get(e as usize).map(|c| c.act) {
                Some(Act::Apply(Action::Ttl(_))) => i < ttl_until,
                Some(Act::Apply(a)) => a.replayable(),
                Some(
                    Act::Continue
                    | Act::Accept
                    | Act::Drop
                    | Act::Reject(_)
                    | Act::Return
                    | Act::Jump(_)
                    | Act::Goto(_)
                    | Act::Nat,
                ) => true,
                None => false,
            }
        })
    }

    /// The `-j TTL` of entry `entry`, if that is its target.
    pub fn ttl_target(&self, entry: u32) -> Option<TtlTarget> {
        match self.cold.get(entry as usize)?.act {
            Act::Apply(Action::Ttl(t)) => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn shortcut_agrees_with_run() {
        let text = "*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD DROP [0:0]\n\
            -A PREROUTING -i eth0 -j ACCEPT\nCOMMIT\n\
            *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        let rs = crate::parse::parse_restore(text, "t.rules").unwrap();
        let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
        assert_eq!(c.shortcut(Table::Mangle, Hook::Prerouting), None);
        assert_eq!(
            c.shortcut(Table::Filter, Hook::Forward),
            Some(Shortcut::Policy {
                entry: c.hooks[Table::Filter as usize][Hook::Forward as usize]
                    .unwrap()
                    .1,
                verdict: Verdict::Drop
            })
        );
        let mut ctx = PacketCtx::new();
        ctx.len = 100;
        let mut absent = 0;
        for table in Table::ALL {
            for hook in Hook::ALL {
                let mut by_run = RuleState::new(&c);
                let mut by_shortcut = RuleState::new(&c);
                let mut x = ctx;
                let v = c.run(table, hook, &mut x, &mut by_run, 0);
                match c.shortcut(table, hook) {
                    None => continue,
                    Some(Shortcut::Absent) => {
                        absent += 1;
                        assert_eq!(v, Verdict::Accept);
                    }
                    Some(Shortcut::Policy { entry, verdict }) => {
                        assert_eq!(v, verdict, "{table:?} {hook:?}");
                        assert_eq!(x.effects.last, entry);
                        by_shortcut.count(entry, ctx.len);
                    }
                }
                // The same counters either way.
                let a = c.counters_into(&rs, &[&by_run]);
                let b = c.counters_into(&rs, &[&by_shortcut]);
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "{table:?} {hook:?}");
            }
        }
        assert!(absent > 0, "the nat table is not in the ruleset");
    }

    /// A filter table with `rules` in FORWARD (and `chain` as a user
    /// chain), compiled.
    fn forward(rules: &str) -> CompiledRuleset {
        CompiledRuleset::compile(&forward_rules(rules), IFACES).unwrap()
    }

    fn forward_rules(rules: &str) -> Ruleset {
        let text = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:side - [0:0]\n{rules}COMMIT\n"
        );
        crate::parse::parse_restore(&text, "t.rules").unwrap()
    }

    #[test]
    fn flow_invariance_of_matches_and_targets() {
        let yes = [
            "",
            "-A FORWARD -i eth0 -o eth1 -j ACCEPT\n",
            "-A FORWARD -s 10.0.0.0/8 -p tcp --dport 80 -j ACCEPT\n",
            "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n",
            "-A FORWARD -m state --state NEW -j DROP\n",
            "-A FORWARD -p udp -m multiport --dports 53,123 -j MARK --set-mark 1\n-A FORWARD -m mark --mark 1 -j ACCEPT\n",
            "-A FORWARD -m iprange --src-range 1.1.1.1-1.1.1.9 -j REJECT\n",
            "-A FORWARD -j side\n-A side -p tcp -j RETURN\n",
            "-A FORWARD -g side\n",
            // A variant rule in a chain FORWARD cannot reach does not count.
            "-A FORWARD -j ACCEPT\n-A INPUT -m length --length 0:100 -j LOG\n",
            // Targets do not make a chain variant (see `replayable`).
            "-A FORWARD -i eth0 -j LOG\n-A FORWARD -j CONNMARK --save-mark\n",
        ];
        for r in yes {
            let c = forward(r);
            assert!(c.flow_invariant(Table::Filter, Hook::Forward), "{r}");
            assert!(
                c.flow_invariant(Table::Mangle, Hook::Forward),
                "absent: {r}"
            );
        }
        let no = [
            "-A FORWARD -p tcp --tcp-flags SYN,ACK SYN -j DROP\n",
            "-A FORWARD -p tcp --syn -j DROP\n",
            "-A FORWARD -p tcp --tcp-option 2 -j DROP\n",
            "-A FORWARD -m length --length 0:100 -j ACCEPT\n",
            "-A FORWARD -m ttl --ttl-lt 5 -j DROP\n",
            "-A FORWARD -m limit --limit 1/s -j ACCEPT\n",
            "-A FORWARD -m conntrack --ctstatus ASSURED -j ACCEPT\n",
            // Reached through a jump.
            "-A FORWARD -p tcp -j side\n-A side -m length --length 0:64 -j DROP\n",
        ];
        for r in no {
            let c = forward(r);
            assert!(!c.flow_invariant(Table::Filter, Hook::Forward), "{r}");
            assert!(c.flow_invariant(Table::Filter, Hook::Input), "{r}");
        }
    }

    #[test]
    fn a_path_through_a_target_that_acts_is_not_replayable() {
        let text =
            "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
                    :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A FORWARD -i eth1 -j LOG\n\
                    -A FORWARD -p tcp --dport 80 -j TTL --ttl-inc 1\nCOMMIT\n";
        let rs = crate::parse::parse_restore(text, "t.rules").unwrap();
        let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
        assert!(c.flow_invariant(Table::Mangle, Hook::Forward));
        let mut s = RuleState::new(&c);
        for (in_if, dport, replayable) in [(0, 81, true), (1, 81, false), (0, 80, false)] {
            let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1000, dport);
            p.in_if = Some(in_if);
            s.record();
            c.run(Table::Mangle, Hook::Forward, &mut p, &mut s, 0);
            let path = s.take_path().unwrap();
            assert_eq!(
                c.replayable(&path, 0),
                replayable,
                "in {in_if} dport {dport}: {path:?}"
            );
            // The TTL rule's entry comes first: replayable when the caller
            // applies TTL targets that far; never through the LOG.
            assert_eq!(c.replayable(&path, 1), in_if == 0, "{path:?}");
            let ttl = path.entries().iter().find_map(|&e| c.ttl_target(e));
            assert_eq!(ttl, (dport == 80).then_some(TtlTarget::Inc(1)));
        }
    }

    #[test]
    fn a_recorded_path_replays_the_counters_of_its_run() {
        let rs = forward_rules(
            "-A FORWARD -i eth1 -j ACCEPT\n-A FORWARD -p tcp -j side\n-A FORWARD -j ACCEPT\n\
             -A side -p tcp --dport 81 -j DROP\n-A side -j MARK --set-mark 7\n-A side -m mark --mark 7 -j RETURN\n",
        );
        let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
        let mut s = RuleState::new(&c);
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1000, 80);
        s.record();
        assert!(s.recording());
        assert_eq!(
            c.run(Table::Filter, Hook::Forward, &mut p.clone(), &mut s, 0),
            Verdict::Accept
        );
        let path = s.take_path().expect("a short path");
        assert!(!s.recording());
        assert!(c.replayable(&path, 0));
        // The jump, the MARK, the RETURN, and the last ACCEPT of FORWARD.
        assert_eq!(path.entries().len(), 4, "{path:?}");
        let once = c.counters_into(&rs, &[&s]);
        // Replaying is counting the same entries again, bytes of this packet.
        p.len = 100;
        let mut by_run = s.clone();
        c.run(Table::Filter, Hook::Forward, &mut p.clone(), &mut by_run, 0);
        s.replay(&path, 100);
        let (a, b) = (
            c.counters_into(&rs, &[&s]),
            c.counters_into(&rs, &[&by_run]),
        );
        assert_eq!(a, b);
        assert_ne!(a, once);
        // A shortcut's count is not recorded; an overflow is.
        s.record();
        s.count(3, 60);
        assert_eq!(s.take_path().map(|p| p.entries().to_vec()), Some(vec![]));
        s.record();
        for _ in 0..=PATH_MAX / 4 {
            c.run(Table::Filter, Hook::Forward, &mut p.clone(), &mut s, 0);
        }
        assert_eq!(s.take_path(), None);
    }
}
