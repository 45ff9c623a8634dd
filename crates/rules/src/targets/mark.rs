//! `-j MARK` (`xt_mark.c`): set the packet mark, in xmark form
//! (`mark = (mark & !mask) ^ value`). The option parser is shared with
//! CONNMARK (`connmark.rs`), which takes the same mark operations.

use std::fmt::Write;

use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::model::XMark;
use crate::parse::{conflict, parse_mark, parse_u32_val, Opt, OptSpec};

pub(super) const SET_XMARK: u8 = 0;
pub(super) const SET_MARK: u8 = 1;
pub(super) const AND_MARK: u8 = 2;
pub(super) const OR_MARK: u8 = 3;
pub(super) const XOR_MARK: u8 = 4;
pub(super) const SAVE_MARK: u8 = 5;
pub(super) const RESTORE_MARK: u8 = 6;
pub(super) const MASK: u8 = 7;
pub(super) const NFMASK: u8 = 8;
pub(super) const CTMASK: u8 = 9;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("set-xmark", SET_XMARK),
    OptSpec::value("set-mark", SET_MARK),
    OptSpec::value("and-mark", AND_MARK),
    OptSpec::value("or-mark", OR_MARK),
    OptSpec::value("xor-mark", XOR_MARK),
];

/// What MARK's or CONNMARK's options have said so far.
#[derive(Debug, Clone)]
pub(crate) struct Builder {
    pub(super) xmark: Option<XMark>,
    pub(super) op: Operation,
    pub(super) nfmask: u32,
    pub(super) ctmask: u32,
}

/// CONNMARK's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    None,
    /// A mark operation (`--set-xmark` ...).
    Set,
    /// `--save-mark`.
    Save,
    /// `--restore-mark`.
    Restore,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            xmark: None,
            op: Operation::None,
            nfmask: u32::MAX,
            ctmask: u32::MAX,
        }
    }
}

/// One option of MARK (`connmark` false) or CONNMARK; `seen` are the option
/// ids given so far (this one included), `tname` the target as written.
pub(super) fn parse_option(
    t: &mut Builder,
    opt: &Opt<'_>,
    seen: &[u8],
    tname: &str,
    connmark: bool,
) -> PResult<()> {
    let (a, tok, id) = (opt.arg(), opt.tok, opt.id);
    if id <= RESTORE_MARK {
        let ops = seen.iter().filter(|&&x| x <= RESTORE_MARK).count();
        if ops > 1 {
            return Err(conflict(
                tok,
                format!("{tname}: only one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark{} can be used", if connmark { ", --save-mark, --restore-mark" } else { "" }),
            ));
        }
    }
    match id {
        SET_XMARK => {
            let (v, m) = parse_mark(a)?;
            t.xmark = Some(XMark { value: v, mask: m });
            t.op = Operation::Set;
        }
        SET_MARK => {
            let (v, m) = parse_mark(a)?;
            t.xmark = Some(XMark {
                value: v,
                mask: v | m,
            });
            t.op = Operation::Set;
        }
        AND_MARK => {
            let v = parse_u32_val(a, "mark")?;
            t.xmark = Some(XMark { value: 0, mask: !v });
            t.op = Operation::Set;
        }
        OR_MARK => {
            let v = parse_u32_val(a, "mark")?;
            t.xmark = Some(XMark { value: v, mask: v });
            t.op = Operation::Set;
        }
        XOR_MARK => {
            let v = parse_u32_val(a, "mark")?;
            t.xmark = Some(XMark { value: v, mask: 0 });
            t.op = Operation::Set;
        }
        SAVE_MARK => t.op = Operation::Save,
        RESTORE_MARK => t.op = Operation::Restore,
        MASK..=CTMASK
            if seen.contains(&MASK) && seen.iter().any(|&x| x == NFMASK || x == CTMASK) =>
        {
            return Err(conflict(
                tok,
                "CONNMARK: --mask cannot be used together with --nfmask or --ctmask",
            ));
        }
        MASK => {
            let v = parse_u32_val(a, "mask")?;
            t.nfmask = v;
            t.ctmask = v;
            if let Some(x) = &mut t.xmark {
                x.mask = v;
            }
        }
        NFMASK => t.nfmask = parse_u32_val(a, "mask")?,
        _ => {
            let v = parse_u32_val(a, "mask")?;
            t.ctmask = v;
            if let Some(x) = &mut t.xmark {
                x.mask = v;
            }
        }
    }
    Ok(())
}

pub(super) fn finish(t: Builder, tok: &str) -> PResult<XMark> {
    t.xmark.ok_or_else(|| {
        conflict(
            tok,
            "MARK: one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark is required",
        )
    })
}

pub(super) fn save(s: &mut String, x: &XMark) {
    let _ = write!(s, " -j MARK --set-xmark 0x{:x}/0x{:x}", x.value, x.mask);
}

pub(super) fn list(out: &mut String, x: &XMark) {
    list_xmark(out, "MARK", x.value, x.mask);
}

/// `MARK`/`CONNMARK --set-xmark` as libxt_MARK (v2) prints it.
pub(super) fn list_xmark(out: &mut String, name: &str, value: u32, mask: u32) {
    let _ = if value == 0 {
        write!(out, " {name} and 0x{:x}", !mask)
    } else if value == mask {
        write!(out, " {name} or 0x{value:x}")
    } else if mask == 0 {
        write!(out, " {name} xor 0x{value:x}")
    } else if mask == u32::MAX {
        write!(out, " {name} set 0x{value:x}")
    } else {
        write!(out, " {name} xset 0x{value:x}/0x{mask:x}")
    };
}

#[inline(always)]
pub(super) fn apply(ctx: &mut PacketCtx, x: XMark) {
    ctx.mark = (ctx.mark & !x.mask) ^ x.value;
}
