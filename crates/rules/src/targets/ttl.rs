//! `-j TTL` (`xt_HL.c`): set, increase or decrease the IP TTL (saturating);
//! mangle table only.

use std::fmt::Write;

use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::model::TtlTarget;
use crate::parse::{conflict, parse_num_range, Opt, OptSpec};

const SET: u8 = 0;
const DEC: u8 = 1;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("ttl-set", SET),
    OptSpec::value("ttl-dec", DEC),
    OptSpec::value("ttl-inc", 2),
];

pub(super) fn parse_option(t: &mut Option<TtlTarget>, opt: &Opt<'_>) -> PResult<()> {
    let a = opt.arg();
    if t.is_some() {
        return Err(conflict(
            opt.tok,
            "TTL: only one of --ttl-set, --ttl-inc, --ttl-dec can be used",
        ));
    }
    *t = Some(match opt.id {
        SET => TtlTarget::Set(parse_num_range(a, 0, 255, "--ttl-set")? as u8),
        DEC => TtlTarget::Dec(parse_num_range(a, 1, 255, "--ttl-dec")? as u8),
        _ => TtlTarget::Inc(parse_num_range(a, 1, 255, "--ttl-inc")? as u8),
    });
    Ok(())
}

pub(super) fn finish(t: Option<TtlTarget>, tok: &str) -> PResult<TtlTarget> {
    t.ok_or_else(|| {
        conflict(
            tok,
            "TTL: one of --ttl-set, --ttl-inc, --ttl-dec is required",
        )
    })
}

pub(super) fn save(s: &mut String, t: &TtlTarget) {
    let _ = match t {
        TtlTarget::Set(v) => write!(s, " -j TTL --ttl-set {v}"),
        TtlTarget::Inc(v) => write!(s, " -j TTL --ttl-inc {v}"),
        TtlTarget::Dec(v) => write!(s, " -j TTL --ttl-dec {v}"),
    };
}

pub(super) fn list(out: &mut String, t: &TtlTarget) {
    let _ = match t {
        TtlTarget::Set(v) => write!(out, " TTL set to {v}"),
        TtlTarget::Inc(v) => write!(out, " TTL increment by {v}"),
        TtlTarget::Dec(v) => write!(out, " TTL decrement by {v}"),
    };
}

/// The new TTL; the data plane rewrites the header when it changed.
#[inline(always)]
pub(super) fn apply(ctx: &mut PacketCtx, t: TtlTarget) {
    let new = match t {
        TtlTarget::Set(v) => v,
        TtlTarget::Inc(v) => ctx.ttl.saturating_add(v),
        TtlTarget::Dec(v) => ctx.ttl.saturating_sub(v),
    };
    if new != ctx.ttl {
        ctx.ttl = new;
        ctx.effects.ttl_changed = true;
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    #[test]
    fn ttl_target_saturates() {
        let run = |t: TtlTarget, ttl: u8| {
            let rs = table(
                Table::Mangle,
                vec![(Hook::Prerouting, Policy::Accept, vec![rule(Target::Ttl(t))])],
                vec![],
            );
            let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
            p.ttl = ttl;
            Loaded::new(&rs).run(Table::Mangle, Hook::Prerouting, &mut p);
            (p.ttl, p.effects.ttl_changed)
        };
        assert_eq!(run(TtlTarget::Inc(10), 250), (255, true));
        assert_eq!(run(TtlTarget::Inc(1), 255), (255, false));
        assert_eq!(run(TtlTarget::Dec(10), 5), (0, true));
        assert_eq!(run(TtlTarget::Dec(1), 0), (0, false));
        assert_eq!(run(TtlTarget::Set(64), 64), (64, false));
        assert_eq!(run(TtlTarget::Set(1), 64), (1, true));
    }
}
