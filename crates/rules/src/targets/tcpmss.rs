//! `-j TCPMSS` (`xt_TCPMSS.c`): set the MSS option of a SYN, or clamp it to
//! the path MTU (the data plane rewrites the option, from `Effects::tcpmss`).

use std::fmt::Write;

use crate::ctx::PacketCtx;
use crate::error::{PResult, Problem};
use crate::model::{Neg, TcpmssTarget};
use crate::parse::{conflict, not_allowed, parse_num_range, Opt, OptSpec};
use crate::validate::{FWD, OUT, POST};

const SET_MSS: u8 = 0;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("set-mss", SET_MSS),
    OptSpec::flag("clamp-mss-to-pmtu", 1),
];

/// The last of `--set-mss` and `--clamp-mss-to-pmtu` wins.
pub(super) fn parse_option(t: &mut Option<TcpmssTarget>, opt: &Opt<'_>) -> PResult<()> {
    *t = Some(if opt.id == SET_MSS {
        TcpmssTarget::SetMss(parse_num_range(opt.arg(), 0, 65515, "--set-mss")? as u16)
    } else {
        TcpmssTarget::ClampToPmtu
    });
    Ok(())
}

pub(super) fn finish(
    t: Option<TcpmssTarget>,
    proto: Option<Neg<u8>>,
    tok: &str,
) -> PResult<TcpmssTarget> {
    if !matches!(proto, Some(Neg { inv: false, val: 6 })) {
        return Err(not_allowed(tok, "TCPMSS requires `-p tcp`"));
    }
    t.ok_or_else(|| conflict(tok, "TCPMSS: --set-mss or --clamp-mss-to-pmtu is required"))
}

/// `--clamp-mss-to-pmtu` needs the route: FORWARD, OUTPUT and POSTROUTING.
pub(super) fn hook_problems(t: &TcpmssTarget, hooks: u8, problems: &mut Vec<Problem>) {
    if *t == TcpmssTarget::ClampToPmtu && hooks & !(FWD | OUT | POST) != 0 {
        problems.push(not_allowed(
            "--clamp-mss-to-pmtu",
            "TCPMSS --clamp-mss-to-pmtu is only valid in FORWARD, OUTPUT and POSTROUTING",
        ));
    }
}

pub(super) fn save(s: &mut String, t: &TcpmssTarget) {
    let _ = match t {
        TcpmssTarget::SetMss(v) => write!(s, " -j TCPMSS --set-mss {v}"),
        TcpmssTarget::ClampToPmtu => write!(s, " -j TCPMSS --clamp-mss-to-pmtu"),
    };
}

pub(super) fn list(out: &mut String, t: &TcpmssTarget) {
    let _ = match t {
        TcpmssTarget::SetMss(v) => write!(out, " TCPMSS set {v}"),
        TcpmssTarget::ClampToPmtu => write!(out, " TCPMSS clamp to PMTU"),
    };
}

/// The MSS to set, 0 to clamp to the path MTU.
pub(super) fn compile(t: &TcpmssTarget) -> u16 {
    match t {
        TcpmssTarget::SetMss(m) => *m,
        TcpmssTarget::ClampToPmtu => 0,
    }
}

#[inline(always)]
pub(super) fn apply(ctx: &mut PacketCtx, mss: u16) {
    ctx.effects.tcpmss = Some(mss);
}
