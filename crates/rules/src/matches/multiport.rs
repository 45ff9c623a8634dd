//! `-m multiport` (`xt_multiport.c`): up to 15 source, destination or
//! either ports and port ranges (a range counts as two).

use std::fmt::Write;

use super::{l4_guard, MatchResult, Missing};
use crate::compile::{CompileError, RuleBuild};
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::list::{inv_prefix, range};
use crate::model::{MultiportDir, MultiportMatch, Neg, PortRange};
use crate::parse::{bad, conflict, not_allowed, parse_port, Opt, OptSpec};
use crate::print::{bang, ports};

const SOURCE: u8 = 0;
const DESTINATION: u8 = 1;
const EITHER: u8 = 2;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("source-ports", SOURCE).invertible(),
    OptSpec::value("sports", SOURCE).invertible(),
    OptSpec::value("destination-ports", DESTINATION).invertible(),
    OptSpec::value("dports", DESTINATION).invertible(),
    OptSpec::value("ports", EITHER).invertible(),
];

/// The ports of one option; `proto` (the rule's `-p`) names the services.
pub(super) fn parse_option(
    mp: &mut Option<MultiportMatch>,
    opt: &Opt<'_>,
    proto: Option<u8>,
) -> PResult<()> {
    let (a, inv, tok) = (opt.arg(), opt.inv, opt.tok);
    if mp.is_some() {
        return Err(conflict(
            tok,
            "multiport: only one of --sports, --dports, --ports can be used",
        ));
    }
    let dir = match opt.id {
        SOURCE => MultiportDir::Source,
        DESTINATION => MultiportDir::Destination,
        _ => MultiportDir::Either,
    };
    let mut ports = Vec::new();
    let mut count = 0;
    for part in a.split(',') {
        let r = match part.split_once(':') {
            Some((x, y)) => {
                let lo = parse_port(x, a, proto)?;
                let hi = parse_port(y, a, proto)?;
                if lo >= hi {
                    return Err(bad(
                        a,
                        format!(
                            "invalid port range `{part}`: the first port must be below the second"
                        ),
                    ));
                }
                count += 2;
                PortRange { lo, hi }
            }
            None => {
                count += 1;
                let p = parse_port(part, a, proto)?;
                PortRange { lo: p, hi: p }
            }
        };
        ports.push(r);
    }
    if count > 15 {
        return Err(bad(
            a,
            "too many ports: multiport takes at most 15 (a range counts as two)",
        ));
    }
    *mp = Some(MultiportMatch { dir, inv, ports });
    Ok(())
}

/// multiport needs `-p` tcp, udp, udplite, sctp or dccp, not negated, before
/// its option (and at the end of the rule).
pub(super) fn check_proto(proto: Option<Neg<u8>>) -> PResult<()> {
    match proto {
        None | Some(Neg { val: 0, .. }) => Err(not_allowed("-m multiport",
            "multiport needs `-p tcp`, `-p udp`, `-p udplite`, `-p sctp` or `-p dccp` before its option",
        )),
        Some(Neg {
            inv: false,
            val: 6 | 17 | 136 | 132 | 33,
        }) => Ok(()),
        Some(_) => Err(not_allowed("-m multiport",
            "multiport only works with TCP, UDP, UDPLITE, SCTP and DCCP",
        )),
    }
}

pub(super) fn finish(
    mp: Option<MultiportMatch>,
    proto: Option<Neg<u8>>,
    need: Missing,
) -> PResult<MultiportMatch> {
    check_proto(proto)?;
    mp.ok_or_else(|| need.option("--sports, --dports or --ports"))
}

fn option_name(dir: MultiportDir) -> &'static str {
    match dir {
        MultiportDir::Source => "sports",
        MultiportDir::Destination => "dports",
        MultiportDir::Either => "ports",
    }
}

pub(super) fn save(s: &mut String, mp: &MultiportMatch) {
    let list: Vec<String> = mp.ports.iter().map(ports).collect();
    let _ = write!(
        s,
        " -m multiport{} --{} {}",
        bang(mp.inv),
        option_name(mp.dir),
        list.join(",")
    );
}

pub(super) fn list(out: &mut String, mp: &MultiportMatch) {
    let _ = write!(out, " multiport {} ", option_name(mp.dir));
    inv_prefix(out, mp.inv);
    let list: Vec<String> = mp.ports.iter().map(range).collect();
    out.push_str(&list.join(","));
}

/// A compiled `-m multiport`: the first `n` of `ports`.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    dir: MultiportDir,
    inv: bool,
    n: u8,
    ports: [[u16; 2]; 15],
}

pub(super) fn compile(
    mp: &MultiportMatch,
    b: &mut RuleBuild<'_>,
) -> Result<Compiled, CompileError> {
    b.require_proto(
        "multiport",
        "tcp, udp, udplite, dccp or sctp",
        &[6, 17, 33, 132, 136],
    )?;
    let weight: usize = mp
        .ports
        .iter()
        .map(|p| if p.lo == p.hi { 1 } else { 2 })
        .sum();
    if weight > 15 || mp.ports.len() > 15 {
        return Err(CompileError::TooManyPorts { line: b.line });
    }
    let mut ports = [[0u16; 2]; 15];
    for (slot, p) in ports.iter_mut().zip(&mp.ports) {
        *slot = [p.lo, p.hi];
    }
    Ok(Compiled {
        dir: mp.dir,
        inv: mp.inv,
        n: mp.ports.len() as u8,
        ports,
    })
}

#[inline(always)]
pub(super) fn eval(mp: &Compiled, ctx: &PacketCtx) -> MatchResult {
    if let Some(r) = l4_guard(ctx, false) {
        return r;
    }
    let (s, d) = (ctx.sport, ctx.dport);
    let list = mp.ports.get(..usize::from(mp.n)).unwrap_or(&[]);
    for &[lo, hi] in list {
        let hit = match mp.dir {
            MultiportDir::Source => s >= lo && s <= hi,
            MultiportDir::Destination => d >= lo && d <= hi,
            MultiportDir::Either => (s >= lo && s <= hi) || (d >= lo && d <= hi),
        };
        if hit {
            return MatchResult::from(!mp.inv);
        }
    }
    MatchResult::from(mp.inv)
}
