//! `-m length` (`xt_length.c`): the IP total length in a range.

use std::fmt::Write;

use super::MatchResult;
use crate::compile::Range16;
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::list::range;
use crate::model::{Neg, PortRange};
use crate::parse::{parse_num_range, Opt, OptSpec};
use crate::print::{bang, ports};

pub(super) const OPTIONS: &[OptSpec] = &[OptSpec::value("length", 0).invertible()];

/// `N`, `lo:hi`, `:hi` or `lo:`.
pub(super) fn parse_option(l: &mut Option<Neg<PortRange>>, opt: &Opt<'_>) -> PResult<()> {
    let a = opt.arg();
    let len = |x: &str| parse_num_range(x, 0, 65535, "--length").map(|v| v as u16);
    let r = match a.split_once(':') {
        None => {
            let v = len(a)?;
            PortRange { lo: v, hi: v }
        }
        Some((x, y)) => PortRange {
            lo: if x.is_empty() { 0 } else { len(x)? },
            hi: if y.is_empty() { 65535 } else { len(y)? },
        },
    };
    *l = Some(Neg {
        inv: opt.inv,
        val: r,
    });
    Ok(())
}

pub(super) fn save(s: &mut String, l: &Neg<PortRange>) {
    let _ = write!(s, " -m length{} --length {}", bang(l.inv), ports(&l.val));
}

pub(super) fn list(out: &mut String, l: &Neg<PortRange>) {
    let _ = write!(
        out,
        " length {}{}",
        if l.inv { "!" } else { "" },
        range(&l.val)
    );
}

/// A compiled `-m length`.
pub(crate) type Compiled = Range16;

pub(super) fn compile(l: &Neg<PortRange>) -> Compiled {
    Range16::from(l)
}

#[inline(always)]
pub(super) fn eval(l: &Compiled, ctx: &PacketCtx) -> MatchResult {
    MatchResult::from(l.test(ctx.len))
}
