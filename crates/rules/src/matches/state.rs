//! `-m state` (`xt_state.c`): the connection's state, as `-m conntrack
//! --ctstate` without the virtual SNAT and DNAT states.

use std::fmt::Write;

use super::MatchResult;
use crate::compile::RuleBuild;
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::list::inv_prefix;
use crate::model::{CtStateSet, Neg};
use crate::names;
use crate::parse::{bad, Opt, OptSpec};
use crate::print::bang;

pub(super) const OPTIONS: &[OptSpec] = &[OptSpec::value("state", 0).invertible()];

pub(super) fn parse_option(s: &mut Option<Neg<CtStateSet>>, opt: &Opt<'_>) -> PResult<()> {
    *s = Some(Neg {
        inv: opt.inv,
        val: parse_ct_states(opt.arg(), false)?,
    });
    Ok(())
}

/// A comma list of state names; `allow_nat`: also the virtual SNAT and DNAT
/// of `-m conntrack`.
pub(super) fn parse_ct_states(s: &str, allow_nat: bool) -> PResult<CtStateSet> {
    let mut v = 0u8;
    for part in s.split(',') {
        let up = part.to_ascii_uppercase();
        match names::CT_STATES.iter().find(|(n, _)| *n == up) {
            Some(&(n, b)) if allow_nat || (n != "SNAT" && n != "DNAT") => v |= b,
            _ => {
                let allowed = if allow_nat {
                    "INVALID, NEW, ESTABLISHED, RELATED, UNTRACKED, SNAT, DNAT"
                } else {
                    "INVALID, NEW, ESTABLISHED, RELATED, UNTRACKED"
                };
                return Err(bad(
                    s,
                    format!("bad state `{part}`: use a comma list of {allowed}"),
                ));
            }
        }
    }
    Ok(CtStateSet(v))
}

/// State bits as iptables-save names them (`RELATED,ESTABLISHED`).
pub(super) fn state_list(v: u8) -> String {
    names::CT_STATES
        .iter()
        .filter(|(_, b)| v & b != 0)
        .map(|&(n, _)| n)
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn save(s: &mut String, st: &Neg<CtStateSet>) {
    let _ = write!(
        s,
        " -m state{} --state {}",
        bang(st.inv),
        state_list(st.val.0)
    );
}

pub(super) fn list(out: &mut String, st: &Neg<CtStateSet>) {
    inv_prefix(out, st.inv);
    let _ = write!(out, " state {}", state_list(st.val.0));
}

/// A compiled `-m state`.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    mask: u8,
    inv: bool,
}

pub(super) fn compile(s: &Neg<CtStateSet>, b: &mut RuleBuild<'_>) -> Compiled {
    b.needs.conntrack = true;
    Compiled {
        mask: s.val.0,
        inv: s.inv,
    }
}

#[inline(always)]
pub(super) fn eval(s: &Compiled, ctx: &PacketCtx) -> MatchResult {
    MatchResult::from(((s.mask & ctx.ct.state & CtStateSet::BASIC) != 0) != s.inv)
}
