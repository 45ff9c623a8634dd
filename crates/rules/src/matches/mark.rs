//! `-m mark` (`xt_mark.c`): the packet mark under a mask.

use std::fmt::Write;

use super::MatchResult;
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::list::inv_prefix;
use crate::model::{MarkMask, Neg};
use crate::parse::{parse_mark, Opt, OptSpec};
use crate::print::bang;

pub(super) const OPTIONS: &[OptSpec] = &[OptSpec::value("mark", 0).invertible()];

pub(super) fn parse_option(mk: &mut Option<Neg<MarkMask>>, opt: &Opt<'_>) -> PResult<()> {
    let (value, mask) = parse_mark(opt.arg())?;
    *mk = Some(Neg {
        inv: opt.inv,
        val: MarkMask { value, mask },
    });
    Ok(())
}

pub(super) fn save(s: &mut String, mk: &Neg<MarkMask>) {
    let _ = write!(s, " -m mark{} --mark 0x{:x}", bang(mk.inv), mk.val.value);
    if mk.val.mask != u32::MAX {
        let _ = write!(s, "/0x{:x}", mk.val.mask);
    }
}

pub(super) fn list(out: &mut String, mk: &Neg<MarkMask>) {
    out.push_str(" mark match");
    inv_prefix(out, mk.inv);
    let _ = write!(out, " 0x{:x}", mk.val.value);
    if mk.val.mask != u32::MAX {
        let _ = write!(out, "/0x{:x}", mk.val.mask);
    }
}

/// A compiled `-m mark`.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    value: u32,
    mask: u32,
    inv: bool,
}

pub(super) fn compile(mk: &Neg<MarkMask>) -> Compiled {
    Compiled {
        value: mk.val.value,
        mask: mk.val.mask,
        inv: mk.inv,
    }
}

#[inline(always)]
pub(super) fn eval(mk: &Compiled, ctx: &PacketCtx) -> MatchResult {
    MatchResult::from(((ctx.mark & mk.mask) == mk.value) != mk.inv)
}
