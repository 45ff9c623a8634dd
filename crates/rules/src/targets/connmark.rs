//! `-j CONNMARK` (`xt_connmark.c`): set the connection's mark, or save the
//! packet mark into it, or restore the packet mark from it (under masks).
//! Its mark operations are parsed as MARK's (`mark.rs`).

use std::fmt::Write;

use super::mark::{self, Builder, Operation};
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::model::{ConnmarkTarget, CtStateSet, XMark};
use crate::parse::{conflict, OptSpec};

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("set-xmark", mark::SET_XMARK),
    OptSpec::value("set-mark", mark::SET_MARK),
    OptSpec::value("and-mark", mark::AND_MARK),
    OptSpec::value("or-mark", mark::OR_MARK),
    OptSpec::value("xor-mark", mark::XOR_MARK),
    OptSpec::flag("save-mark", mark::SAVE_MARK),
    OptSpec::flag("restore-mark", mark::RESTORE_MARK),
    OptSpec::value("mask", mark::MASK),
    OptSpec::value("nfmask", mark::NFMASK),
    OptSpec::value("ctmask", mark::CTMASK),
];

pub(super) fn finish(t: Builder, tok: &str) -> PResult<ConnmarkTarget> {
    Ok(match t.op {
        Operation::Set => ConnmarkTarget::Set(t.xmark.unwrap_or(XMark { value: 0, mask: 0 })),
        Operation::Save => ConnmarkTarget::Save {
            nfmask: t.nfmask,
            ctmask: t.ctmask,
        },
        Operation::Restore => ConnmarkTarget::Restore {
            nfmask: t.nfmask,
            ctmask: t.ctmask,
        },
        Operation::None => {
            return Err(conflict(
                tok,
                "CONNMARK: one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark, --save-mark, --restore-mark is required",
            ))
        }
    })
}

pub(super) fn save(s: &mut String, c: &ConnmarkTarget) {
    let _ = match c {
        ConnmarkTarget::Set(x) => {
            write!(s, " -j CONNMARK --set-xmark 0x{:x}/0x{:x}", x.value, x.mask)
        }
        ConnmarkTarget::Save { nfmask, ctmask } => write!(
            s,
            " -j CONNMARK --save-mark --nfmask 0x{nfmask:x} --ctmask 0x{ctmask:x}"
        ),
        ConnmarkTarget::Restore { nfmask, ctmask } => write!(
            s,
            " -j CONNMARK --restore-mark --nfmask 0x{nfmask:x} --ctmask 0x{ctmask:x}"
        ),
    };
}

pub(super) fn list(out: &mut String, c: &ConnmarkTarget) {
    match *c {
        ConnmarkTarget::Set(x) => mark::list_xmark(out, "CONNMARK", x.value, x.mask),
        ConnmarkTarget::Save { nfmask, ctmask } => {
            let _ = if nfmask == u32::MAX && ctmask == u32::MAX {
                write!(out, " CONNMARK save")
            } else if nfmask == ctmask {
                write!(out, " CONNMARK save mask 0x{nfmask:x}")
            } else {
                write!(
                    out,
                    " CONNMARK save nfmask 0x{nfmask:x} ctmask ~0x{ctmask:x}"
                )
            };
        }
        ConnmarkTarget::Restore { nfmask, ctmask } => {
            let _ = if nfmask == u32::MAX && ctmask == u32::MAX {
                write!(out, " CONNMARK restore")
            } else if nfmask == ctmask {
                write!(out, " CONNMARK restore mask 0x{nfmask:x}")
            } else {
                write!(
                    out,
                    " CONNMARK restore ctmask 0x{ctmask:x} nfmask ~0x{nfmask:x}"
                )
            };
        }
    }
}

/// Does nothing to a packet without a connection.
pub(super) fn apply(ctx: &mut PacketCtx, cm: ConnmarkTarget) {
    if ctx.ct.state & CtStateSet::TRACKED == 0 {
        return;
    }
    match cm {
        ConnmarkTarget::Set(x) => {
            let new = (ctx.ct.mark & !x.mask) ^ x.value;
            if new != ctx.ct.mark {
                ctx.ct.mark = new;
                ctx.effects.ctmark_changed = true;
            }
        }
        ConnmarkTarget::Save { nfmask, ctmask } => {
            let new = (ctx.ct.mark & !ctmask) ^ (ctx.mark & nfmask);
            if new != ctx.ct.mark {
                ctx.ct.mark = new;
                ctx.effects.ctmark_changed = true;
            }
        }
        ConnmarkTarget::Restore { nfmask, ctmask } => {
            ctx.mark = (ctx.mark & !nfmask) ^ (ctx.ct.mark & ctmask);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn connmark_modes_and_untracked() {
        let run = |cm: ConnmarkTarget, p: &mut PacketCtx| {
            let rs = table(
                Table::Mangle,
                vec![(
                    Hook::Forward,
                    Policy::Accept,
                    vec![rule(Target::Connmark(cm))],
                )],
                vec![],
            );
            Loaded::new(&rs).run(Table::Mangle, Hook::Forward, p)
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        p.ct = tracked(CtStateSet::ESTABLISHED);
        p.ct.mark = 0xff00;
        p.mark = 0x12;
        run(
            ConnmarkTarget::Set(XMark {
                value: 0x1,
                mask: 0xf000,
            }),
            &mut p,
        );
        assert_eq!(p.ct.mark, 0x0f01);
        assert!(p.effects.ctmark_changed);
        let mut q = p;
        q.effects = Default::default();
        run(
            ConnmarkTarget::Set(XMark {
                value: 0x0,
                mask: 0,
            }),
            &mut q,
        );
        assert!(!q.effects.ctmark_changed, "unchanged mark is not a change");
        run(
            ConnmarkTarget::Restore {
                nfmask: 0xff,
                ctmask: 0x0f,
            },
            &mut q,
        );
        assert_eq!(q.mark, 0x01);
        let mut u = p;
        u.ct = CtCtx::untracked();
        u.effects = Default::default();
        run(
            ConnmarkTarget::Set(XMark {
                value: 0x7,
                mask: !0,
            }),
            &mut u,
        );
        assert_eq!(u.ct.mark, 0);
        assert!(!u.effects.ctmark_changed);
        run(
            ConnmarkTarget::Restore {
                nfmask: !0,
                ctmask: !0,
            },
            &mut u,
        );
        assert_eq!(u.mark, 0x12, "no conntrack: restore is a no-op");
    }
}
