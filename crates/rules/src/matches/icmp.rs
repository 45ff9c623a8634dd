//! `-m icmp` (`xt_icmp` in `ip_tables.c`): an ICMP type, with a code or a
//! range of codes; `any` (type 255) matches every ICMP packet.

use std::fmt::Write;

use super::{l4_guard, MatchResult, Missing};
use crate::compile::{CompileError, RuleBuild};
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::list::inv_prefix;
use crate::model::{IcmpType, Neg};
use crate::names::{self, parse_uint};
use crate::parse::{bad, not_allowed, Opt, OptSpec};
use crate::print::bang;

pub(super) const OPTIONS: &[OptSpec] = &[OptSpec::value("icmp-type", 0).invertible()];

pub(super) fn parse_option(i: &mut Option<Neg<IcmpType>>, opt: &Opt<'_>) -> PResult<()> {
    *i = Some(Neg {
        inv: opt.inv,
        val: parse_icmp_type(opt.arg())?,
    });
    Ok(())
}

/// `--icmp-type`: a number, `type/code`, or a name (a unique prefix, any
/// case) from [`names::ICMP_TYPES`].
fn parse_icmp_type(s: &str) -> PResult<IcmpType> {
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        let (t, c) = match s.split_once('/') {
            Some((t, c)) => (t, Some(c)),
            None => (s, None),
        };
        let ty = parse_uint(t)
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| bad(s, format!("invalid ICMP type `{s}`: use 0-255, type/code or a name (`iptables -p icmp -h`)")))?;
        return match c {
            None => Ok(IcmpType {
                ty,
                code_lo: 0,
                code_hi: 0xFF,
            }),
            Some(c) => {
                let code = parse_uint(c)
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or_else(|| bad(s, format!("invalid ICMP code in `{s}`: use 0-255")))?;
                Ok(IcmpType {
                    ty,
                    code_lo: code,
                    code_hi: code,
                })
            }
        };
    }
    let lower = s.to_ascii_lowercase();
    let mut found: Option<&(&str, u8, u8, u8)> = None;
    for e in names::ICMP_TYPES {
        if e.0.to_ascii_lowercase().starts_with(&lower) {
            if e.0.len() == s.len() {
                found = Some(e);
                break;
            }
            if let Some(f) = found {
                return Err(bad(
                    s,
                    format!("ambiguous ICMP type `{s}`: `{}` or `{}`?", f.0, e.0),
                ));
            }
            found = Some(e);
        }
    }
    match found {
        Some(&(_, ty, lo, hi)) if !s.is_empty() => Ok(IcmpType {
            ty,
            code_lo: lo,
            code_hi: hi,
        }),
        _ => Err(bad(
            s,
            format!("unknown ICMP type `{s}`: use a number, type/code or a name such as echo-request, destination-unreachable, port-unreachable, time-exceeded, any"),
        )),
    }
}

pub(super) fn finish(
    i: Option<Neg<IcmpType>>,
    proto: Option<Neg<u8>>,
    need: Missing,
) -> PResult<Neg<IcmpType>> {
    if !matches!(proto, Some(Neg { inv: false, val: 1 })) {
        return Err(not_allowed("-m icmp", "the icmp match requires `-p icmp`"));
    }
    i.ok_or_else(|| need.option("--icmp-type"))
}

pub(super) fn save(s: &mut String, i: &Neg<IcmpType>) {
    let _ = write!(s, " -m icmp{}", bang(i.inv));
    let v = i.val;
    if v.ty == 0xFF && v.code_lo == 0 && v.code_hi == 0xFF {
        s.push_str(" --icmp-type any");
    } else {
        let _ = write!(s, " --icmp-type {}", v.ty);
        if v.code_lo != 0 || v.code_hi != 0xFF {
            let _ = write!(s, "/{}", v.code_lo);
        }
    }
}

pub(super) fn list(out: &mut String, i: &Neg<IcmpType>) {
    out.push_str(" icmp");
    inv_prefix(out, i.inv);
    let v = i.val;
    let _ = write!(out, "type {}", v.ty);
    if v.code_lo == v.code_hi {
        let _ = write!(out, " code {}", v.code_lo);
    } else if v.code_lo != 0 || v.code_hi != 0xff {
        let _ = write!(out, " codes {}-{}", v.code_lo, v.code_hi);
    }
}

/// A compiled `-m icmp`.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    ty: u8,
    code_lo: u8,
    code_hi: u8,
    inv: bool,
}

pub(super) fn compile(i: &Neg<IcmpType>, b: &mut RuleBuild<'_>) -> Result<Compiled, CompileError> {
    b.require_proto("icmp", "icmp", &[1])?;
    let IcmpType {
        ty,
        code_lo,
        code_hi,
    } = i.val;
    Ok(Compiled {
        ty,
        code_lo,
        code_hi,
        inv: i.inv,
    })
}

#[inline(always)]
pub(super) fn eval(i: &Compiled, ctx: &PacketCtx) -> MatchResult {
    if let Some(r) = l4_guard(ctx, false) {
        return r;
    }
    let hit = i.ty == 0xff
        || (ctx.icmp_type == i.ty && ctx.icmp_code >= i.code_lo && ctx.icmp_code <= i.code_hi);
    MatchResult::from(hit != i.inv)
}
