//! The NAT targets: `-j SNAT`, `-j DNAT` (`xt_nat.c`), `-j MASQUERADE`
//! (`xt_MASQUERADE.c`) and `-j REDIRECT` (`xt_REDIRECT.c`). The rule only
//! decides (`Verdict::Nat`); the data plane's NAT stage binds the connection
//! to the target's range.

use std::fmt::Write;

use crate::error::{PResult, Problem};
use crate::model::{NatFlags, NatRange, Neg, PortRange};
use crate::parse::{bad, conflict, not_allowed, parse_port, parse_range_addrs, Opt, OptSpec};

const RANGE: u8 = 0;
const RANDOM: u8 = 1;
const RANDOM_FULLY: u8 = 2;
const PERSISTENT: u8 = 3;

pub(super) const SNAT_OPTIONS: &[OptSpec] = &[
    OptSpec::value("to-source", RANGE),
    OptSpec::flag("random", RANDOM),
    OptSpec::flag("random-fully", RANDOM_FULLY),
    OptSpec::flag("persistent", PERSISTENT),
];

pub(super) const DNAT_OPTIONS: &[OptSpec] = &[
    OptSpec::value("to-destination", RANGE),
    OptSpec::flag("random", RANDOM),
    OptSpec::flag("persistent", PERSISTENT),
];

pub(super) const MASQUERADE_OPTIONS: &[OptSpec] = &[
    OptSpec::value("to-ports", RANGE),
    OptSpec::flag("random", RANDOM),
    OptSpec::flag("random-fully", RANDOM_FULLY),
];

pub(super) const REDIRECT_OPTIONS: &[OptSpec] = &[
    OptSpec::value("to-ports", RANGE),
    OptSpec::flag("random", RANDOM),
];

/// What a NAT target's options have said so far: the range (SNAT, DNAT) or
/// the ports (MASQUERADE, REDIRECT), and the flags.
#[derive(Debug, Clone, Default)]
pub(crate) struct Builder {
    range: Option<NatRange>,
    ports: Option<PortRange>,
    flags: NatFlags,
}

/// An option of SNAT or DNAT; `proto` is the rule's `-p` so far.
pub(super) fn parse_range_option(
    b: &mut Builder,
    opt: &Opt<'_>,
    proto: Option<Neg<u8>>,
) -> PResult<()> {
    match opt.id {
        RANGE => b.range = Some(parse_nat_range(opt.arg())?),
        RANDOM => b.flags.random = true,
        RANDOM_FULLY => b.flags.random_fully = true,
        _ => b.flags.persistent = true,
    }
    check_ports(b, opt, proto)
}

/// An option of MASQUERADE or REDIRECT; `proto` is the rule's `-p` so far.
pub(super) fn parse_ports_option(
    b: &mut Builder,
    opt: &Opt<'_>,
    proto: Option<Neg<u8>>,
) -> PResult<()> {
    match opt.id {
        RANGE => b.ports = Some(parse_nat_ports(opt.arg())?),
        RANDOM => b.flags.random = true,
        _ => b.flags.random_fully = true,
    }
    check_ports(b, opt, proto)
}

/// NAT targets check ports against the protocol given so far, as iptables does.
fn check_ports(b: &Builder, opt: &Opt<'_>, proto: Option<Neg<u8>>) -> PResult<()> {
    let has_ports = b.ports.is_some() || b.range.as_ref().is_some_and(|r| r.ports.is_some());
    if has_ports && !ports_ok(proto) {
        return Err(need_ports_proto(opt.tok));
    }
    Ok(())
}

/// NAT port ranges need a protocol with ports (iptables also lets `-p icmp` and `! -p tcp` through).
fn ports_ok(proto: Option<Neg<u8>>) -> bool {
    matches!(
        proto,
        Some(Neg {
            val: 6 | 17 | 132 | 33 | 1,
            ..
        })
    )
}

fn need_ports_proto(tok: &str) -> Problem {
    not_allowed(
        tok,
        "a port range needs `-p tcp`, `-p udp`, `-p sctp` or `-p dccp` given before it",
    )
}

/// `a` or `a-b` (`-` separated, `b >= a`).
fn parse_nat_ports(s: &str) -> PResult<PortRange> {
    if s.contains(':') {
        return Err(bad(
            s,
            "invalid port:port syntax: use a dash, as in 1024-65535",
        ));
    }
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let lo = parse_port(a, s, None)?;
    let hi = match b {
        Some(b) => parse_port(b, s, None)?,
        None => lo,
    };
    if hi < lo {
        return Err(bad(
            s,
            format!("port range `{s}` is reversed: the first port must not exceed the second"),
        ));
    }
    Ok(PortRange { lo, hi })
}

/// `a[-b][:p[-q]]` or `:p[-q]`.
fn parse_nat_range(s: &str) -> PResult<NatRange> {
    let (a, p) = match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr = if a.is_empty() {
        None
    } else {
        Some(parse_range_addrs(a)?)
    };
    let ports = match p {
        Some(p) => Some(parse_nat_ports(p)?),
        None => None,
    };
    if addr.is_none() && ports.is_none() {
        return Err(bad(s, "empty NAT range: use addr[-addr][:port[-port]]"));
    }
    Ok(NatRange { addr, ports })
}

/// SNAT's or DNAT's range (`opt` names it) and flags; `name` and `tok` are
/// the target as written and as `-j NAME`.
pub(super) fn finish_range(
    b: Builder,
    proto: Option<Neg<u8>>,
    name: &str,
    tok: &str,
    opt: &str,
) -> PResult<(NatRange, NatFlags)> {
    let range = b
        .range
        .ok_or_else(|| conflict(tok, format!("{name}: option {opt} must be specified")))?;
    if range.ports.is_some() && !ports_ok(proto) {
        return Err(need_ports_proto(opt));
    }
    Ok((range, b.flags))
}

/// MASQUERADE's or REDIRECT's ports and flags.
pub(super) fn finish_ports(
    b: Builder,
    proto: Option<Neg<u8>>,
) -> PResult<(Option<PortRange>, NatFlags)> {
    if b.ports.is_some() && !ports_ok(proto) {
        return Err(need_ports_proto("--to-ports"));
    }
    Ok((b.ports, b.flags))
}

/// A port range as the NAT targets print it (`1024-65535`).
fn nat_ports(p: &PortRange) -> String {
    if p.lo == p.hi {
        format!("{}", p.lo)
    } else {
        format!("{}-{}", p.lo, p.hi)
    }
}

fn nat_range(r: &NatRange) -> String {
    let mut s = String::new();
    if let Some((a, b)) = r.addr {
        if a == b {
            let _ = write!(s, "{a}");
        } else {
            let _ = write!(s, "{a}-{b}");
        }
    }
    if let Some(p) = &r.ports {
        let _ = write!(s, ":{}", nat_ports(p));
    }
    s
}

fn save_flags(s: &mut String, f: &NatFlags, persistent: bool) {
    if f.random {
        s.push_str(" --random");
    }
    if f.random_fully {
        s.push_str(" --random-fully");
    }
    if persistent && f.persistent {
        s.push_str(" --persistent");
    }
}

pub(super) fn save_snat(s: &mut String, range: &NatRange, flags: &NatFlags) {
    let _ = write!(s, " -j SNAT --to-source {}", nat_range(range));
    save_flags(s, flags, true);
}

pub(super) fn save_dnat(s: &mut String, range: &NatRange, flags: &NatFlags) {
    let _ = write!(s, " -j DNAT --to-destination {}", nat_range(range));
    save_flags(s, flags, true);
}

pub(super) fn save_masquerade(s: &mut String, ports: &Option<PortRange>, flags: &NatFlags) {
    s.push_str(" -j MASQUERADE");
    if let Some(p) = ports {
        let _ = write!(s, " --to-ports {}", nat_ports(p));
    }
    save_flags(s, flags, false);
}

pub(super) fn save_redirect(s: &mut String, ports: &Option<PortRange>, flags: &NatFlags) {
    s.push_str(" -j REDIRECT");
    if let Some(p) = ports {
        let _ = write!(s, " --to-ports {}", nat_ports(p));
    }
    save_flags(s, flags, false);
}

fn list_flags(out: &mut String, f: &NatFlags) {
    if f.random {
        out.push_str(" random");
    }
    if f.random_fully {
        out.push_str(" random-fully");
    }
    if f.persistent {
        out.push_str(" persistent");
    }
}

/// SNAT and DNAT.
pub(super) fn list_range(out: &mut String, range: &NatRange, flags: &NatFlags) {
    out.push_str(" to:");
    if let Some((a, b)) = range.addr {
        let _ = write!(out, "{a}");
        if a != b {
            let _ = write!(out, "-{b}");
        }
    }
    if let Some(p) = &range.ports {
        let _ = write!(out, ":{}", nat_ports(p));
    }
    list_flags(out, flags);
}

pub(super) fn list_masquerade(out: &mut String, ports: &Option<PortRange>, flags: &NatFlags) {
    if let Some(p) = ports {
        let _ = write!(out, " masq ports: {}", nat_ports(p));
    }
    list_flags(out, flags);
}

pub(super) fn list_redirect(out: &mut String, ports: &Option<PortRange>, flags: &NatFlags) {
    if let Some(p) = ports {
        let _ = write!(out, " redir ports {}", nat_ports(p));
    }
    list_flags(out, flags);
}
