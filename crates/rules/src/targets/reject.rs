//! `-j REJECT` (`ipt_REJECT.c`): drop the packet and answer with an ICMP
//! error or a TCP reset (the data plane builds the answer, from
//! `Verdict::Reject`).

use std::fmt::Write;

use crate::error::PResult;
use crate::model::{Neg, RejectWith};
use crate::names;
use crate::parse::{bad, not_allowed, Opt, OptSpec};

pub(super) const OPTIONS: &[OptSpec] = &[OptSpec::value("reject-with", 0)];

/// `--reject-with`: a type by name or alias, any case, a prefix allowed.
pub(super) fn parse_option(r: &mut RejectWith, opt: &Opt<'_>) -> PResult<()> {
    let a = opt.arg();
    *r = names::REJECT_TYPES
        .iter()
        .find(|(n, al, _)| {
            let pre = |x: &str| x.len() >= a.len() && x[..a.len()].eq_ignore_ascii_case(a);
            !a.is_empty() && (pre(n) || pre(al))
        })
        .map(|&(_, _, v)| v)
        .ok_or_else(|| bad(a, format!("unknown reject type `{a}`: use one of icmp-net-unreachable, icmp-host-unreachable, icmp-port-unreachable, icmp-proto-unreachable, icmp-net-prohibited, icmp-host-prohibited, icmp-admin-prohibited, tcp-reset")))?;
    Ok(())
}

pub(super) fn finish(r: RejectWith, proto: Option<Neg<u8>>) -> PResult<RejectWith> {
    if r == RejectWith::TcpReset && !matches!(proto, Some(Neg { inv: false, val: 6 })) {
        return Err(not_allowed(
            "tcp-reset",
            "REJECT --reject-with tcp-reset requires `-p tcp`",
        ));
    }
    Ok(r)
}

pub(super) fn save(s: &mut String, r: RejectWith) {
    let _ = write!(s, " -j REJECT --reject-with {}", names::reject_name(r));
}

pub(super) fn list(out: &mut String, r: RejectWith) {
    let _ = write!(out, " reject-with {}", names::reject_name(r));
}
