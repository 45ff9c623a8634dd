//! `-m ttl` (`xt_ttl.c`): the IP TTL equal to, not equal to, below or
//! above a value.

use std::fmt::Write;

use super::MatchResult;
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::model::TtlMatch;
use crate::parse::{conflict, parse_num_range, Opt, OptSpec};

const TTL_EQ: u8 = 0;
const TTL_LT: u8 = 1;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("ttl-eq", TTL_EQ).invertible(),
    OptSpec::value("ttl-lt", TTL_LT),
    OptSpec::value("ttl-gt", 2),
];

pub(super) fn parse_option(t: &mut Option<TtlMatch>, opt: &Opt<'_>) -> PResult<()> {
    let tok = opt.tok;
    if t.is_some() {
        return Err(conflict(
            tok,
            "ttl: only one of --ttl-eq, --ttl-lt, --ttl-gt can be used",
        ));
    }
    let v = parse_num_range(opt.arg(), 0, 255, tok)? as u8;
    *t = Some(match (opt.id, opt.inv) {
        (TTL_EQ, false) => TtlMatch::Eq(v),
        (TTL_EQ, true) => TtlMatch::Ne(v),
        (TTL_LT, _) => TtlMatch::Lt(v),
        _ => TtlMatch::Gt(v),
    });
    Ok(())
}

pub(super) fn save(s: &mut String, t: &TtlMatch) {
    s.push_str(" -m ttl");
    let _ = match t {
        TtlMatch::Eq(v) => write!(s, " --ttl-eq {v}"),
        TtlMatch::Ne(v) => write!(s, " ! --ttl-eq {v}"),
        TtlMatch::Lt(v) => write!(s, " --ttl-lt {v}"),
        TtlMatch::Gt(v) => write!(s, " --ttl-gt {v}"),
    };
}

pub(super) fn list(out: &mut String, t: &TtlMatch) {
    let _ = match t {
        TtlMatch::Eq(v) => write!(out, " TTL match TTL == {v}"),
        TtlMatch::Ne(v) => write!(out, " TTL match TTL != {v}"),
        TtlMatch::Lt(v) => write!(out, " TTL match TTL < {v}"),
        TtlMatch::Gt(v) => write!(out, " TTL match TTL > {v}"),
    };
}

/// The model's value is the compiled form.
#[inline(always)]
pub(super) fn eval(t: &TtlMatch, ctx: &PacketCtx) -> MatchResult {
    MatchResult::from(match *t {
        TtlMatch::Eq(v) => ctx.ttl == v,
        TtlMatch::Ne(v) => ctx.ttl != v,
        TtlMatch::Lt(v) => ctx.ttl < v,
        TtlMatch::Gt(v) => ctx.ttl > v,
    })
}
