//! Table runs: the chain of one table at one hook for a packet, then the
//! effects of the rules that ran applied to the frame right away: `-j TTL`
//! (the header rewritten, incremental checksum), `-j TCPMSS` (the MSS option
//! lowered on SYNs, never raised or added; `--clamp-mss-to-pmtu` uses
//! min(egress MTU, MTU towards the source) - 40), `-j LOG` (a line into the
//! [`LogQueue`](crate::log::LogQueue)), CONNMARK (into the connection);
//! `MARK` stays in the context across hooks.
//!
//! A chain that is absent or has no rules is decided without the packet
//! ([`Shortcut`]): its policy counted, no call into the rules.

use std::sync::Arc;

use fastables_packet::ipv4::{Ipv4Packet, PROTO_TCP};
use fastables_packet::tcp::{flags as tcpf, TcpPacket};
use fastables_rules::compile::{CompiledRuleset, RuleState, Shortcut};
use fastables_rules::ctx::{Needs, Verdict};
use fastables_rules::model::{Hook, RejectWith, Table, Target};

use super::pkt::{Pkt, ETH_LEN};
use super::Pipeline;
use crate::drop::DropReason;
use crate::log::format_ipv4;

/// The ruleset and what runs it: the rule counters and limits, and the
/// chains decided without the packet.
pub(super) struct Tables {
    pub rules: Arc<CompiledRuleset>,
    /// Rule counters and limit state.
    pub state: RuleState,
    /// What the pipeline must provide the rules (conntrack, TCP options,
    /// address types).
    pub needs: Needs,
    /// raw PREROUTING is absent or a policy ACCEPT without rules: it lets
    /// every packet reach conntrack unseen.
    pub raw_continues: bool,
    /// `rules.shortcut(table, hook)` for every table and hook.
    shortcuts: Shortcuts,
}

/// [`CompiledRuleset::shortcut`] of every (table, hook).
type Shortcuts = [[Option<Shortcut>; 5]; 4];

impl Tables {
    /// The tables of `rules`, counters at zero.
    pub(super) fn new(rules: Arc<CompiledRuleset>) -> Tables {
        let mut shortcuts = [[None; 5]; 4];
        for t in Table::ALL {
            for h in Hook::ALL {
                shortcuts[t as usize][h as usize] = rules.shortcut(t, h);
            }
        }
        let raw_continues = matches!(
            shortcuts[Table::Raw as usize][Hook::Prerouting as usize],
            Some(Shortcut::Absent)
                | Some(Shortcut::Policy {
                    verdict: Verdict::Accept,
                    ..
                })
        );
        Tables {
            state: RuleState::new(&rules),
            needs: rules.needs(),
            raw_continues,
            shortcuts,
            rules,
        }
    }

    /// How the chain of `table` at `hook` is decided without the packet,
    /// if it is.
    #[inline(always)]
    pub(super) fn shortcut(&self, table: Table, hook: Hook) -> Option<Shortcut> {
        self.shortcuts[table as usize][hook as usize]
    }
}

/// How a table run ended for the packet.
pub(super) enum Outcome {
    Continue,
    Drop(DropReason),
    Reject(RejectWith),
    /// A NAT target fired (nat table): the rule id holding the range.
    Nat(u32),
}

impl Pipeline {
    /// Runs one table, applies its effects to the frame, and says how it
    /// ended. A chain decided without the packet ([`Shortcut`]) is decided
    /// here without the call (no rule ran, so there are no effects); while
    /// tracing, every table takes the full way for its trace line. `mtu`:
    /// the route's, once there is one (for TCPMSS).
    #[inline(always)]
    pub(super) fn run_table(
        &mut self,
        now_ns: u64,
        table: Table,
        hook: Hook,
        pkt: &mut Pkt,
        mtu: Option<u16>,
    ) -> Outcome {
        if !pkt.traced {
            match self.tables.shortcut(table, hook) {
                Some(Shortcut::Absent) => return Outcome::Continue,
                Some(Shortcut::Policy { entry, verdict }) => {
                    self.tables.state.count(entry, pkt.ctx.len);
                    pkt.ctx.effects.last = entry;
                    return match verdict {
                        Verdict::Drop => Outcome::Drop(DropReason::FilterDrop),
                        _ => Outcome::Continue,
                    };
                }
                None => {}
            }
        }
        self.run_rules(now_ns, table, hook, pkt, mtu)
    }

    /// [`Pipeline::run_table`] for a chain whose rules must run.
    #[inline(never)]
    fn run_rules(
        &mut self,
        now_ns: u64,
        table: Table,
        hook: Hook,
        pkt: &mut Pkt,
        mtu: Option<u16>,
    ) -> Outcome {
        let t = &mut self.tables;
        let v = t.rules.run(table, hook, &mut pkt.ctx, &mut t.state, now_ns);
        if pkt.ctx.effects.trace && !pkt.traced {
            pkt.traced = self.trace_marked(&pkt.ctx);
        }
        if pkt.traced {
            self.trace_table(table, hook, v, pkt.ctx.effects.last);
        }
        self.apply_effects(now_ns, pkt, mtu);
        if pkt.ctx.effects.ctmark_changed {
            pkt.ctx.effects.ctmark_changed = false;
            self.ct.set_mark(&mut pkt.ct, pkt.ctx.ct.mark);
        }
        match v {
            Verdict::Accept => Outcome::Continue,
            Verdict::Drop => Outcome::Drop(DropReason::FilterDrop),
            Verdict::Reject(r) => Outcome::Reject(r),
            Verdict::Nat(id) => Outcome::Nat(id),
        }
    }

    /// The effects the rules left in `pkt.ctx.effects`, applied to the
    /// frame (and to the LOG queue), then cleared.
    fn apply_effects(&mut self, now_ns: u64, pkt: &mut Pkt, mtu: Option<u16>) {
        if pkt.ctx.effects.ttl_changed {
            pkt.ctx.effects.ttl_changed = false;
            let ttl = pkt.ctx.ttl;
            if let Some(Ok(mut p)) = pkt.ip_mut().map(Ipv4Packet::new_checked) {
                p.set_ttl(ttl);
            }
        }
        if let Some(mss) = pkt.ctx.effects.tcpmss.take() {
            self.clamp_mss(pkt, mss, mtu);
        }
        let e = &mut pkt.ctx.effects;
        if e.log_overflow > 0 {
            self.logs.add_dropped(u64::from(e.log_overflow));
            e.log_overflow = 0;
        }
        let n = usize::from(e.log_count).min(e.logs.len());
        let ids = e.logs;
        e.log_count = 0;
        for id in ids.iter().take(n) {
            let Target::Log(lt) = self.tables.rules.target(*id) else {
                continue;
            };
            let prefix = lt.prefix.as_deref().unwrap_or("");
            let ctx = &pkt.ctx;
            let name = |i: Option<_>| {
                i.and_then(|i| self.ifs.get(i))
                    .map_or("", |i| i.name.as_str())
            };
            let mac = if ctx.in_if.is_some() {
                pkt.buf.get(..ETH_LEN)
            } else {
                None
            };
            if let Some(line) = self.logs.slot(now_ns) {
                format_ipv4(
                    line,
                    prefix,
                    name(ctx.in_if),
                    name(ctx.out_if),
                    mac,
                    pkt.ip(),
                    ctx.mark,
                );
            }
        }
    }

    /// `-j TCPMSS`: the MSS option of a SYN lowered to `mss` (0:
    /// `--clamp-mss-to-pmtu`, min(egress MTU, MTU of the route back) - 40).
    fn clamp_mss(&self, pkt: &mut Pkt, mss: u16, mtu: Option<u16>) {
        let mss = if mss == 0 {
            let back = self.routes.output(&self.ifs, pkt.ctx.src).map(|r| r.mtu);
            match (mtu, back) {
                (Some(a), Some(b)) => a.min(b).saturating_sub(40),
                (Some(a), None) => a.saturating_sub(40),
                _ => return,
            }
        } else {
            mss
        };
        let ctx = &pkt.ctx;
        if ctx.proto != PROTO_TCP || ctx.fragment || ctx.tcp_flags & tcpf::SYN == 0 {
            return;
        }
        if let Some(Ok(mut ip)) = pkt.ip_mut().map(Ipv4Packet::new_checked) {
            if let Ok(mut t) = TcpPacket::new_checked(ip.payload_mut()) {
                t.clamp_mss(mss);
            }
        }
    }
}
