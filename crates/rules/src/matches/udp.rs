//! `-m udp` (`xt_tcpudp.c`): source and destination port ranges. A leading
//! udp match's ports are also stored inline in the rule's entry.

use super::{l4_guard, list_ports, nft_port, payload_port, MatchResult};
use crate::compile::{CompileError, Range16, RuleBuild};
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::model::{Neg, UdpMatch};
use crate::parse::{not_allowed, parse_port_range_wrapping, Opt, OptSpec};
use crate::print::{hidden_only, port_opt, shown};

const SPORT: u8 = 0;
const DPORT: u8 = 1;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("source-port", SPORT).invertible(),
    OptSpec::value("sport", SPORT).invertible(),
    OptSpec::value("destination-port", DPORT).invertible(),
    OptSpec::value("dport", DPORT).invertible(),
];

pub(super) fn parse_option(u: &mut UdpMatch, opt: &Opt<'_>) -> PResult<()> {
    let r = nft_port(opt.inv, parse_port_range_wrapping(opt.arg(), None)?);
    match opt.id {
        SPORT => u.sport = r,
        _ => u.dport = r,
    }
    Ok(())
}

pub(super) fn finish(u: UdpMatch, proto: Option<Neg<u8>>) -> PResult<UdpMatch> {
    if !matches!(proto, Some(Neg { val: 17, .. })) {
        return Err(not_allowed("-m udp", "the udp match requires `-p udp`"));
    }
    if matches!(proto, Some(Neg { inv: true, .. }))
        && !(payload_port(&u.sport) || payload_port(&u.dport))
    {
        return Err(not_allowed(
            "-m udp",
            "after `! -p udp` the udp match needs a port test",
        ));
    }
    Ok(u)
}

pub(super) fn save(s: &mut String, u: &UdpMatch) {
    let (sport, dport) = (shown(&u.sport), shown(&u.dport));
    if hidden_only(&[&u.sport, &u.dport], &[&sport, &dport]) {
        return;
    }
    s.push_str(" -m udp");
    port_opt(s, "sport", &sport);
    port_opt(s, "dport", &dport);
}

pub(super) fn list(out: &mut String, u: &UdpMatch) {
    let (sport, dport) = (shown(&u.sport), shown(&u.dport));
    if hidden_only(&[&u.sport, &u.dport], &[&sport, &dport]) {
        return;
    }
    out.push_str(" udp");
    list_ports(out, "spt", &sport);
    list_ports(out, "dpt", &dport);
}

/// A compiled `-m udp`.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    sport: Range16,
    dport: Range16,
}

pub(super) fn compile(u: &UdpMatch, b: &mut RuleBuild<'_>) -> Result<Compiled, CompileError> {
    b.require_proto("udp", "udp", &[17])?;
    let sport = u.sport.as_ref().map_or(Range16::any(), Range16::from);
    let dport = u.dport.as_ref().map_or(Range16::any(), Range16::from);
    if b.first {
        b.entry.set_l4(sport, dport, 0, 0, false, true);
    }
    Ok(Compiled { sport, dport })
}

#[inline(always)]
pub(super) fn eval(u: &Compiled, ctx: &PacketCtx) -> MatchResult {
    if let Some(r) = l4_guard(ctx, false) {
        return r;
    }
    MatchResult::from(u.sport.test(ctx.sport) && u.dport.test(ctx.dport))
}
