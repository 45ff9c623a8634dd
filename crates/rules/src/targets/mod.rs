//! The target extensions (`-j NAME`), one file each: everything about one
//! target in one place, as iptables keeps it in `libxt_NAME.c` and the kernel
//! in `xt_NAME.c`. A target's file holds
//!
//! - `OPTIONS`, its option table, and `parse_option`/`finish`: its options
//!   into the model's value (`crate::model::Target`), checked as iptables and
//!   the kernel check them;
//! - `save` and `list`: that value as `iptables-save` and `iptables -L` print
//!   it;
//! - `apply`: what a non-terminating target does to the packet when its rule
//!   matches (on the hot path: never allocating, never panicking);
//! - its unit tests.
//!
//! The standard targets (ACCEPT, DROP, RETURN, a chain) are the evaluator's
//! own control flow. This file is the registry: each dispatch below has one
//! line per target, so that adding a target is its model variant
//! (`model.rs`), its file, and a line in each dispatch here (the compiler
//! lists the ones missing). NAT targets are decided by the data plane's NAT
//! stage (`Verdict::Nat`), not here.

use std::fmt::Write;

use crate::compile::{Act, CompileError};
use crate::ctx::{Needs, PacketCtx};
use crate::error::{PResult, Problem};
use crate::model::*;
use crate::parse::{conflict, Opt, OptSpec};
use crate::validate::{FWD, IN, OUT, POST, PRE};

mod connmark;
mod ct;
mod log;
mod mark;
mod nat;
mod reject;
mod tcpmss;
mod trace;
mod ttl;

/// The targets fastables implements, for messages.
pub const SUPPORTED: &str = "ACCEPT, DROP, RETURN, REJECT, LOG, MARK, CONNMARK, TTL, NOTRACK, CT --notrack, TCPMSS, SNAT, DNAT, MASQUERADE, REDIRECT, or a user chain";

/// A `-j NAME` or `-g CHAIN` being parsed: what its options have built so far.
#[derive(Debug, Clone)]
pub(crate) enum Builder {
    /// ACCEPT, DROP or RETURN.
    Standard,
    /// A user chain (`-j CHAIN`, `-g CHAIN`).
    Chain,
    Reject(RejectWith),
    Log(LogTarget),
    Mark(mark::Builder),
    Connmark(mark::Builder),
    Ttl(Option<TtlTarget>),
    Notrack,
    Trace,
    /// CT: whether `--notrack` was given.
    Ct(bool),
    Tcpmss(Option<TcpmssTarget>),
    Snat(nat::Builder),
    Dnat(nat::Builder),
    Masquerade(nat::Builder),
    Redirect(nat::Builder),
}

impl Builder {
    /// A fresh builder for `-j name`; `None` for a name that is not a target
    /// fastables implements (a chain, or a target it refuses).
    pub(crate) fn by_name(name: &str) -> Option<Builder> {
        Some(match name {
            "ACCEPT" | "DROP" | "RETURN" => Builder::Standard,
            "REJECT" => Builder::Reject(RejectWith::IcmpPortUnreachable),
            "LOG" => Builder::Log(LogTarget::default()),
            "MARK" => Builder::Mark(mark::Builder::default()),
            "CONNMARK" => Builder::Connmark(mark::Builder::default()),
            "TTL" => Builder::Ttl(None),
            "NOTRACK" => Builder::Notrack,
            "TRACE" => Builder::Trace,
            "CT" => Builder::Ct(false),
            "TCPMSS" => Builder::Tcpmss(None),
            "SNAT" => Builder::Snat(nat::Builder::default()),
            "DNAT" => Builder::Dnat(nat::Builder::default()),
            "MASQUERADE" => Builder::Masquerade(nat::Builder::default()),
            "REDIRECT" => Builder::Redirect(nat::Builder::default()),
            _ => return None,
        })
    }

    /// The target's options.
    pub(crate) fn options(&self) -> &'static [OptSpec] {
        match self {
            Builder::Standard | Builder::Chain | Builder::Notrack | Builder::Trace => &[],
            Builder::Reject(_) => reject::OPTIONS,
            Builder::Log(_) => log::OPTIONS,
            Builder::Mark(_) => mark::OPTIONS,
            Builder::Connmark(_) => connmark::OPTIONS,
            Builder::Ttl(_) => ttl::OPTIONS,
            Builder::Ct(_) => ct::OPTIONS,
            Builder::Tcpmss(_) => tcpmss::OPTIONS,
            Builder::Snat(_) => nat::SNAT_OPTIONS,
            Builder::Dnat(_) => nat::DNAT_OPTIONS,
            Builder::Masquerade(_) => nat::MASQUERADE_OPTIONS,
            Builder::Redirect(_) => nat::REDIRECT_OPTIONS,
        }
    }
}

/// The target of a rule line: its name as written, its builder and the
/// option ids given so far.
#[derive(Debug, Clone)]
pub(crate) struct TargetParse {
    name: String,
    builder: Builder,
    seen: Vec<u8>,
}

impl TargetParse {
    pub(crate) fn new(name: &str, builder: Builder) -> TargetParse {
        TargetParse {
            name: name.to_string(),
            builder,
            seen: Vec::new(),
        }
    }

    /// The name as written (`ACCEPT`, a chain name).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn options(&self) -> &'static [OptSpec] {
        self.builder.options()
    }

    /// One of the target's options; `proto` is the rule's `-p` so far.
    pub(crate) fn apply(&mut self, opt: &Opt<'_>, proto: Option<Neg<u8>>) -> PResult<()> {
        let (tname, tok) = (self.name.as_str(), opt.tok);
        // TCPMSS takes its last --set-mss / --clamp-mss-to-pmtu.
        if self.seen.contains(&opt.id) && !matches!(self.builder, Builder::Tcpmss(_)) {
            return Err(conflict(
                tok,
                format!("{tname}: option `{tok}` can only be used once"),
            ));
        }
        self.seen.push(opt.id);
        let seen = &self.seen;
        match &mut self.builder {
            Builder::Standard | Builder::Chain | Builder::Notrack | Builder::Trace => Ok(()),
            Builder::Reject(r) => reject::parse_option(r, opt),
            Builder::Log(l) => log::parse_option(l, opt),
            Builder::Mark(m) => mark::parse_option(m, opt, seen, tname, false),
            Builder::Connmark(m) => mark::parse_option(m, opt, seen, tname, true),
            Builder::Ttl(t) => ttl::parse_option(t, opt),
            Builder::Ct(notrack) => ct::parse_option(notrack, opt),
            Builder::Tcpmss(t) => tcpmss::parse_option(t, opt),
            Builder::Snat(b) | Builder::Dnat(b) => nat::parse_range_option(b, opt, proto),
            Builder::Masquerade(b) | Builder::Redirect(b) => nat::parse_ports_option(b, opt, proto),
        }
    }

    /// The finished target, checked against the rule's `-p`.
    pub(crate) fn finish(self, proto: Option<Neg<u8>>) -> PResult<Target> {
        let tok = format!("-j {}", self.name);
        let name = self.name.as_str();
        Ok(match self.builder {
            Builder::Standard => match name {
                "ACCEPT" => Target::Accept,
                "DROP" => Target::Drop,
                _ => Target::Return,
            },
            Builder::Chain => Target::Jump(self.name),
            Builder::Reject(r) => Target::Reject(reject::finish(r, proto)?),
            Builder::Log(l) => Target::Log(l),
            Builder::Mark(m) => Target::Mark(mark::finish(m, &tok)?),
            Builder::Connmark(m) => Target::Connmark(connmark::finish(m, &tok)?),
            Builder::Ttl(t) => Target::Ttl(ttl::finish(t, &tok)?),
            Builder::Notrack => Target::Notrack,
            Builder::Trace => Target::Trace,
            Builder::Ct(notrack) => ct::finish(notrack, &tok)?,
            Builder::Tcpmss(t) => Target::Tcpmss(tcpmss::finish(t, proto, &tok)?),
            Builder::Snat(b) => {
                let (range, flags) = nat::finish_range(b, proto, name, &tok, "--to-source")?;
                Target::Snat { range, flags }
            }
            Builder::Dnat(b) => {
                let (range, flags) = nat::finish_range(b, proto, name, &tok, "--to-destination")?;
                Target::Dnat { range, flags }
            }
            Builder::Masquerade(b) => {
                let (ports, flags) = nat::finish_ports(b, proto)?;
                Target::Masquerade { ports, flags }
            }
            Builder::Redirect(b) => {
                let (ports, flags) = nat::finish_ports(b, proto)?;
                Target::Redirect { ports, flags }
            }
        })
    }
}

/// `t` as `iptables-save` writes it (` -j NAME --option value ...`; nothing
/// for no target).
pub(crate) fn save(s: &mut String, t: &Target) {
    match t {
        Target::None => {}
        Target::Accept => s.push_str(" -j ACCEPT"),
        Target::Drop => s.push_str(" -j DROP"),
        Target::Return => s.push_str(" -j RETURN"),
        Target::Jump(c) => {
            let _ = write!(s, " -j {c}");
        }
        Target::Goto(c) => {
            let _ = write!(s, " -g {c}");
        }
        Target::Reject(r) => reject::save(s, *r),
        Target::Log(l) => log::save(s, l),
        Target::Mark(x) => mark::save(s, x),
        Target::Connmark(c) => connmark::save(s, c),
        Target::Ttl(t) => ttl::save(s, t),
        Target::Notrack => s.push_str(" -j NOTRACK"),
        Target::Trace => s.push_str(" -j TRACE"),
        Target::CtNotrack => s.push_str(" -j CT --notrack"),
        Target::Tcpmss(t) => tcpmss::save(s, t),
        Target::Snat { range, flags } => nat::save_snat(s, range, flags),
        Target::Dnat { range, flags } => nat::save_dnat(s, range, flags),
        Target::Masquerade { ports, flags } => nat::save_masquerade(s, ports, flags),
        Target::Redirect { ports, flags } => nat::save_redirect(s, ports, flags),
    }
}

/// The `target` column of `iptables -L`.
pub(crate) fn list_name(t: &Target) -> &str {
    match t {
        Target::None => "",
        Target::Accept => "ACCEPT",
        Target::Drop => "DROP",
        Target::Return => "RETURN",
        Target::Jump(c) | Target::Goto(c) => c,
        Target::Reject(_) => "REJECT",
        Target::Log(_) => "LOG",
        Target::Mark(_) => "MARK",
        Target::Connmark(_) => "CONNMARK",
        Target::Ttl(_) => "TTL",
        // iptables-nft installs NOTRACK as CT.
        Target::Notrack => "CT",
        Target::Trace => "TRACE",
        Target::CtNotrack => "CT",
        Target::Tcpmss(_) => "TCPMSS",
        Target::Snat { .. } => "SNAT",
        Target::Dnat { .. } => "DNAT",
        Target::Masquerade { .. } => "MASQUERADE",
        Target::Redirect { .. } => "REDIRECT",
    }
}

/// `t`'s options as `iptables -L` shows them at the end of the line (its
/// extension's `print`).
pub(crate) fn list(out: &mut String, t: &Target) {
    match t {
        Target::None
        | Target::Accept
        | Target::Drop
        | Target::Return
        | Target::Jump(_)
        | Target::Goto(_)
        | Target::Trace => {}
        Target::Reject(r) => reject::list(out, *r),
        Target::Log(l) => log::list(out, l),
        Target::Mark(x) => mark::list(out, x),
        Target::Connmark(c) => connmark::list(out, c),
        Target::Ttl(t) => ttl::list(out, t),
        Target::Notrack => out.push_str(" NOTRACK"),
        Target::CtNotrack => out.push_str(" CT notrack"),
        Target::Tcpmss(t) => tcpmss::list(out, t),
        Target::Snat { range, flags } | Target::Dnat { range, flags } => {
            nat::list_range(out, range, flags)
        }
        Target::Masquerade { ports, flags } => nat::list_masquerade(out, ports, flags),
        Target::Redirect { ports, flags } => nat::list_redirect(out, ports, flags),
    }
}

/// The table a target is restricted to (`xt_target.table`), with its name.
pub(crate) fn table_of(t: &Target) -> Option<(&'static str, Table)> {
    Some(match t {
        Target::Reject(_) => ("REJECT", Table::Filter),
        Target::Ttl(_) => ("TTL", Table::Mangle),
        Target::Notrack => ("NOTRACK", Table::Raw),
        Target::CtNotrack => ("CT", Table::Raw),
        Target::Snat { .. } => ("SNAT", Table::Nat),
        Target::Dnat { .. } => ("DNAT", Table::Nat),
        Target::Masquerade { .. } => ("MASQUERADE", Table::Nat),
        Target::Redirect { .. } => ("REDIRECT", Table::Nat),
        _ => return None,
    })
}

/// The hooks a target may run on (`xt_target.hooks`, a set of
/// [`crate::validate`]'s hook bits), with its name and theirs.
pub(crate) fn hooks_of(t: &Target) -> Option<(&'static str, u8, &'static str)> {
    Some(match t {
        Target::Reject(_) => ("REJECT", IN | FWD | OUT, "INPUT, FORWARD and OUTPUT"),
        Target::Masquerade { .. } => ("MASQUERADE", POST, "POSTROUTING"),
        Target::Snat { .. } => ("SNAT", POST | IN, "POSTROUTING and INPUT"),
        Target::Dnat { .. } => ("DNAT", PRE | OUT, "PREROUTING and OUTPUT"),
        Target::Redirect { .. } => ("REDIRECT", PRE | OUT, "PREROUTING and OUTPUT"),
        _ => return None,
    })
}

/// Problems with `t` in a built-in chain that the hooks `hooks` reach, where
/// the kernel checks an option's hooks (not only the target's).
pub(crate) fn hook_problems(t: &Target, hooks: u8, problems: &mut Vec<Problem>) {
    if let Target::Tcpmss(t) = t {
        tcpmss::hook_problems(t, hooks, problems);
    }
}

/// What a rule's entry does when the rule matches; `jump` gives the first
/// entry of a user chain (`line`: the rule's, for its error).
pub(crate) fn compile(
    t: &Target,
    line: u32,
    jump: &dyn Fn(&str, u32) -> Result<u32, CompileError>,
    needs: &mut Needs,
) -> Result<Act, CompileError> {
    Ok(match t {
        Target::None => Act::Continue,
        Target::Accept => Act::Accept,
        Target::Drop => Act::Drop,
        Target::Return => Act::Return,
        Target::Jump(n) => Act::Jump(jump(n, line)?),
        Target::Goto(n) => Act::Goto(jump(n, line)?),
        Target::Reject(w) => Act::Reject(*w),
        Target::Log(_) => Act::Apply(Action::Log),
        Target::Mark(x) => Act::Apply(Action::Mark(*x)),
        Target::Connmark(cm) => {
            needs.conntrack = true;
            Act::Apply(Action::Connmark(*cm))
        }
        Target::Ttl(t) => Act::Apply(Action::Ttl(*t)),
        Target::Notrack | Target::CtNotrack => {
            needs.conntrack = true;
            Act::Apply(Action::Notrack)
        }
        Target::Trace => Act::Apply(Action::Trace),
        Target::Tcpmss(t) => Act::Apply(Action::Tcpmss(tcpmss::compile(t))),
        Target::Snat { .. }
        | Target::Dnat { .. }
        | Target::Masquerade { .. }
        | Target::Redirect { .. } => {
            needs.conntrack = true;
            Act::Nat
        }
    })
}

/// What a non-terminating target does when its rule matches; the rule scan
/// goes on after it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    /// LOG: the data plane logs the packet with the rule's options
    /// (`Effects::logs`).
    Log,
    Mark(XMark),
    Connmark(ConnmarkTarget),
    Ttl(TtlTarget),
    /// NOTRACK, CT --notrack.
    Notrack,
    /// TRACE: the packet is traced from here on.
    Trace,
    /// TCPMSS: the MSS to set, 0 to clamp to the path MTU.
    Tcpmss(u16),
}

impl Action {
    /// Applies it to the packet of entry `entry`'s match.
    #[inline(always)]
    pub(crate) fn apply(self, ctx: &mut PacketCtx, entry: u32) {
        match self {
            Action::Log => log::apply(ctx, entry),
            Action::Mark(x) => mark::apply(ctx, x),
            Action::Connmark(cm) => connmark::apply(ctx, cm),
            Action::Ttl(t) => ttl::apply(ctx, t),
            Action::Notrack => ct::apply_notrack(ctx),
            Action::Trace => trace::apply(ctx),
            Action::Tcpmss(v) => tcpmss::apply(ctx, v),
        }
    }

    /// Whether counting the entry again stands for running it: true for
    /// setting the packet mark, which later rules see as the flow's
    /// (`CompiledRuleset::replayable`); false for what acts on the packet or
    /// the connection beyond the rules.
    pub(crate) fn replayable(self) -> bool {
        match self {
            Action::Mark(_) => true,
            Action::Log
            | Action::Connmark(_)
            | Action::Ttl(_)
            | Action::Notrack
            | Action::Trace
            | Action::Tcpmss(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    /// [`SUPPORTED`] names only targets [`Builder::by_name`] knows.
    #[test]
    fn supported_lists_the_registry() {
        for name in SUPPORTED.split(", ") {
            let name = name.split(' ').next().unwrap_or(name);
            if name != "or" {
                assert!(Builder::by_name(name).is_some(), "{name}");
            }
        }
    }

    #[test]
    fn non_terminating_targets() {
        let rs = table(
            Table::Mangle,
            vec![(
                Hook::Prerouting,
                Policy::Accept,
                vec![
                    rule(Target::Log(LogTarget::default())),
                    rule(Target::Mark(XMark {
                        value: 0x5,
                        mask: 0xff,
                    })),
                    rule(Target::Connmark(ConnmarkTarget::Save {
                        nfmask: 0xf,
                        ctmask: 0xf,
                    })),
                    rule(Target::Ttl(TtlTarget::Inc(1))),
                    rule(Target::Tcpmss(TcpmssTarget::ClampToPmtu)),
                    with_matches(vec![Match::Mark(pos(MarkMask {
                        value: 5,
                        mask: 0xff,
                    }))]),
                ],
            )],
            vec![],
        );
        let mut t = Loaded::new(&rs);
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        p.mark = 0xab00;
        p.ct = tracked(CtStateSet::NEW);
        p.ct.mark = 0x30;
        assert_eq!(
            t.run(Table::Mangle, Hook::Prerouting, &mut p),
            Verdict::Accept
        );
        assert_eq!(p.mark, 0xab05);
        assert_eq!(p.ct.mark, 0x35);
        assert!(p.effects.ctmark_changed);
        assert_eq!(p.ttl, 65);
        assert!(p.effects.ttl_changed);
        assert_eq!(p.effects.tcpmss, Some(0));
        assert_eq!(p.effects.log_count, 1);
        let info = t.c.rule_info(p.effects.logs[0]);
        assert_eq!(
            (info.table, info.chain, info.index, info.line),
            (Table::Mangle, "PREROUTING", 1, 7)
        );
        assert!(matches!(t.c.target(p.effects.logs[0]), Target::Log(_)));
        // The last rule matched on the new mark: ACCEPT, not the policy.
        let out = t.counters(&rs);
        assert_eq!(out.tables[0].chains[0].rules[5].counters.packets, 1);
        assert_eq!(out.tables[0].chains[0].counters.packets, 0);
    }
}
