//! `-j CT` (`xt_CT.c`) with `--notrack`, and `-j NOTRACK` (the same in the
//! kernel): the packet is not tracked. CT's other options (`--zone`,
//! `--helper`, `--timeout`, ...) are refused for now.

use crate::ctx::{CtCtx, PacketCtx};
use crate::error::{ErrorKind, PResult, Problem};
use crate::model::{CtStateSet, Target};
use crate::parse::{Opt, OptSpec};

const NOTRACK: u8 = 0;
/// Every option the kernel has but `--notrack`, refused when given.
const REFUSED: u8 = 1;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::flag("notrack", NOTRACK),
    OptSpec::value("zone", REFUSED),
    OptSpec::value("zone-orig", REFUSED),
    OptSpec::value("zone-reply", REFUSED),
    OptSpec::value("helper", REFUSED),
    OptSpec::value("ctevents", REFUSED),
    OptSpec::value("expevents", REFUSED),
    OptSpec::value("timeout", REFUSED),
];

pub(super) fn parse_option(notrack: &mut bool, opt: &Opt<'_>) -> PResult<()> {
    let tok = opt.tok;
    if opt.id == NOTRACK {
        *notrack = true;
        Ok(())
    } else {
        Err(Problem::new(
            ErrorKind::UnknownOption,
            tok,
            format!("CT option `{tok}` is not supported; only `-j CT --notrack` is"),
        ))
    }
}

pub(super) fn finish(notrack: bool, tok: &str) -> PResult<Target> {
    if !notrack {
        return Err(Problem::new(
            ErrorKind::UnknownOption,
            tok,
            "CT without --notrack is not supported; use `-j CT --notrack`",
        ));
    }
    Ok(Target::CtNotrack)
}

/// NOTRACK / CT --notrack: a packet that already has a connection is left
/// alone (the kernel's "previously seen" case); otherwise it becomes UNTRACKED.
pub(super) fn apply_notrack(ctx: &mut PacketCtx) {
    if ctx.ct.state & CtStateSet::TRACKED != 0 {
        return;
    }
    ctx.effects.notrack = true;
    ctx.ct = CtCtx::untracked();
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    #[test]
    fn notrack_and_state_untracked() {
        for target in [Target::Notrack, Target::CtNotrack] {
            let rs = table(
                Table::Raw,
                vec![(
                    Hook::Prerouting,
                    Policy::Drop,
                    vec![
                        rule(target),
                        with_matches(vec![Match::State(pos(CtStateSet(CtStateSet::UNTRACKED)))]),
                    ],
                )],
                vec![],
            );
            let mut t = Loaded::new(&rs);
            assert!(t.c.needs().conntrack);
            let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
            p.ct.state = CtStateSet::INVALID;
            assert_eq!(t.run(Table::Raw, Hook::Prerouting, &mut p), Verdict::Accept);
            assert!(p.effects.notrack);
            assert_eq!(p.ct.state, CtStateSet::UNTRACKED);
            // A packet that already has a connection is left alone.
            let mut q = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
            q.ct = tracked(CtStateSet::ESTABLISHED);
            assert_eq!(t.run(Table::Raw, Hook::Prerouting, &mut q), Verdict::Drop);
            assert!(!q.effects.notrack);
        }
    }
}
