//! `-m iprange` (`xt_iprange.c`): the source or destination address in an
//! inclusive range.

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::{MatchResult, Missing};
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::list::inv_prefix;
use crate::model::{IprangeMatch, Neg};
use crate::parse::{parse_range_addrs, Opt, OptSpec};
use crate::print::bang;

const SRC: u8 = 0;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("src-range", SRC).invertible(),
    OptSpec::value("dst-range", 1).invertible(),
];

pub(super) fn parse_option(r: &mut IprangeMatch, opt: &Opt<'_>) -> PResult<()> {
    let v = Some(Neg {
        inv: opt.inv,
        val: parse_range_addrs(opt.arg())?,
    });
    if opt.id == SRC {
        r.src = v;
    } else {
        r.dst = v;
    }
    Ok(())
}

pub(super) fn finish(r: IprangeMatch, need: Missing) -> PResult<IprangeMatch> {
    if r.src.is_none() && r.dst.is_none() {
        return Err(need.option("--src-range or --dst-range"));
    }
    Ok(r)
}

pub(super) fn save(s: &mut String, r: &IprangeMatch) {
    s.push_str(" -m iprange");
    let rng = |s: &mut String, name: &str, v: &Option<Neg<(Ipv4Addr, Ipv4Addr)>>| {
        if let Some(v) = v {
            let _ = write!(s, "{} --{} {}-{}", bang(v.inv), name, v.val.0, v.val.1);
        }
    };
    rng(s, "src-range", &r.src);
    rng(s, "dst-range", &r.dst);
}

pub(super) fn list(out: &mut String, r: &IprangeMatch) {
    let rng = |out: &mut String, name: &str, v: &Option<Neg<(Ipv4Addr, Ipv4Addr)>>| {
        if let Some(v) = v {
            let _ = write!(out, " {name} IP range");
            inv_prefix(out, v.inv);
            let _ = write!(out, " {}-{}", v.val.0, v.val.1);
        }
    };
    rng(out, "source", &r.src);
    rng(out, "destination", &r.dst);
}

/// A compiled `-m iprange`: `(lo, hi, inverted)` of each range given.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    src: Option<(u32, u32, bool)>,
    dst: Option<(u32, u32, bool)>,
}

pub(super) fn compile(r: &IprangeMatch) -> Compiled {
    let f = |n: &Neg<(Ipv4Addr, Ipv4Addr)>| (u32::from(n.val.0), u32::from(n.val.1), n.inv);
    Compiled {
        src: r.src.as_ref().map(f),
        dst: r.dst.as_ref().map(f),
    }
}

#[inline(always)]
pub(super) fn eval(r: &Compiled, ctx: &PacketCtx) -> MatchResult {
    if let Some((lo, hi, inv)) = r.src {
        if (ctx.src >= lo && ctx.src <= hi) == inv {
            return MatchResult::No;
        }
    }
    if let Some((lo, hi, inv)) = r.dst {
        if (ctx.dst >= lo && ctx.dst <= hi) == inv {
            return MatchResult::No;
        }
    }
    MatchResult::Yes
}
