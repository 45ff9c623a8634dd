//! `-m addrtype` (`xt_addrtype.c`): the route type (`LOCAL`, `BROADCAST`,
//! ...) of the source or destination address, as the data plane's FIB
//! classifies it. `--limit-iface-in/--limit-iface-out` are parsed and printed
//! but refused by the compiler.

use std::fmt::Write;

use super::{MatchResult, Missing};
use crate::compile::{CompileError, RuleBuild};
use crate::ctx::PacketCtx;
use crate::error::{PResult, Problem};
use crate::model::{AddrTypeSet, AddrtypeMatch, Neg};
use crate::names;
use crate::parse::{bad, conflict, not_allowed, Opt, OptSpec};
use crate::print::bang;
use crate::validate::{IN, OUT, POST, PRE};

const SRC_TYPE: u8 = 0;
const DST_TYPE: u8 = 1;
const LIMIT_IFACE_IN: u8 = 2;
const LIMIT_IFACE_OUT: u8 = 3;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("src-type", SRC_TYPE).invertible(),
    OptSpec::value("dst-type", DST_TYPE).invertible(),
    OptSpec::flag("limit-iface-in", LIMIT_IFACE_IN),
    OptSpec::flag("limit-iface-out", LIMIT_IFACE_OUT),
];

pub(super) fn parse_option(t: &mut AddrtypeMatch, opt: &Opt<'_>) -> PResult<()> {
    let (a, inv) = (opt.arg(), opt.inv);
    match opt.id {
        SRC_TYPE => {
            t.src = Some(Neg {
                inv,
                val: parse_addr_types(a)?,
            })
        }
        DST_TYPE => {
            t.dst = Some(Neg {
                inv,
                val: parse_addr_types(a)?,
            })
        }
        LIMIT_IFACE_IN | LIMIT_IFACE_OUT => {
            if opt.id == LIMIT_IFACE_IN {
                t.limit_iface_in = true;
            } else {
                t.limit_iface_out = true;
            }
            if t.limit_iface_in && t.limit_iface_out {
                return Err(conflict(
                    opt.tok,
                    "addrtype: --limit-iface-in and --limit-iface-out cannot be used together",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A comma list of address type names.
fn parse_addr_types(s: &str) -> PResult<AddrTypeSet> {
    let mut v = 0u16;
    for part in s.split(',') {
        let up = part.to_ascii_uppercase();
        match names::ADDR_TYPES.iter().find(|(n, _)| *n == up) {
            Some(&(_, b)) => v |= b,
            None => {
                return Err(bad(
                    s,
                    format!("bad address type `{part}`: use a comma list of UNSPEC, UNICAST, LOCAL, BROADCAST, ANYCAST, MULTICAST, BLACKHOLE, UNREACHABLE, PROHIBIT, THROW, NAT, XRESOLVE"),
                ))
            }
        }
    }
    Ok(AddrTypeSet(v))
}

pub(super) fn finish(t: AddrtypeMatch, need: Missing) -> PResult<AddrtypeMatch> {
    if t.src.is_none() && t.dst.is_none() {
        return Err(need.option("--src-type or --dst-type"));
    }
    Ok(t)
}

/// `--limit-iface-in` needs an input interface, `--limit-iface-out` an
/// output one, on every hook that reaches the rule.
pub(super) fn hook_problems(a: &AddrtypeMatch, hooks: u8, problems: &mut Vec<Problem>) {
    if a.limit_iface_in && hooks & (OUT | POST) != 0 {
        problems.push(not_allowed(
            "--limit-iface-in",
            "addrtype --limit-iface-in is not valid in OUTPUT or POSTROUTING (no input interface)",
        ));
    }
    if a.limit_iface_out && hooks & (PRE | IN) != 0 {
        problems.push(not_allowed(
            "--limit-iface-out",
            "addrtype --limit-iface-out is not valid in PREROUTING or INPUT (no output interface)",
        ));
    }
}

/// Address type bits as iptables names them (`LOCAL,BROADCAST`).
fn type_names(v: u16) -> String {
    names::ADDR_TYPES
        .iter()
        .filter(|(_, b)| v & b != 0)
        .map(|&(n, _)| n)
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn save(s: &mut String, a: &AddrtypeMatch) {
    s.push_str(" -m addrtype");
    if let Some(t) = &a.src {
        let _ = write!(s, "{} --src-type {}", bang(t.inv), type_names(t.val.0));
    }
    if let Some(t) = &a.dst {
        let _ = write!(s, "{} --dst-type {}", bang(t.inv), type_names(t.val.0));
    }
    if a.limit_iface_in {
        s.push_str(" --limit-iface-in");
    }
    if a.limit_iface_out {
        s.push_str(" --limit-iface-out");
    }
}

pub(super) fn list(out: &mut String, a: &AddrtypeMatch) {
    out.push_str(" ADDRTYPE match");
    if let Some(t) = &a.src {
        let _ = write!(
            out,
            " src-type {}{}",
            if t.inv { "!" } else { "" },
            type_names(t.val.0)
        );
    }
    if let Some(t) = &a.dst {
        let _ = write!(
            out,
            " dst-type {}{}",
            if t.inv { "!" } else { "" },
            type_names(t.val.0)
        );
    }
    if a.limit_iface_in {
        out.push_str(" limit-in");
    }
    if a.limit_iface_out {
        out.push_str(" limit-out");
    }
}

/// A compiled `-m addrtype`: `(type bits, inverted)` of each side given.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    src: Option<(u16, bool)>,
    dst: Option<(u16, bool)>,
}

pub(super) fn compile(a: &AddrtypeMatch, b: &mut RuleBuild<'_>) -> Result<Compiled, CompileError> {
    let AddrtypeMatch {
        src,
        dst,
        limit_iface_in,
        limit_iface_out,
    } = *a;
    if limit_iface_in || limit_iface_out {
        return Err(CompileError::AddrtypeLimitIface { line: b.line });
    }
    b.needs.addrtype = true;
    Ok(Compiled {
        src: src.map(|s| (s.val.0, s.inv)),
        dst: dst.map(|d| (d.val.0, d.inv)),
    })
}

#[inline(always)]
pub(super) fn eval(a: &Compiled, ctx: &PacketCtx) -> MatchResult {
    if let Some((mask, inv)) = a.src {
        if ((mask & ctx.src_type) != 0) == inv {
            return MatchResult::No;
        }
    }
    if let Some((mask, inv)) = a.dst {
        if ((mask & ctx.dst_type) != 0) == inv {
            return MatchResult::No;
        }
    }
    MatchResult::Yes
}
