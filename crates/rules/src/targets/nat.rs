//! The NAT targets: `-j SNAT`, `-j DNAT` (`xt_nat.c`), `-j MASQUERADE`
//! (`xt_MASQUERADE.c`) and `-j REDIRECT` (`xt_REDIRECT.c`). The rule only
//! decides (`Verdict::Nat`); the data plane's NAT stage binds the connection
//! to the target's range.
//!
//! SNAT also takes fastables' port-block options (`--deterministic`,
//! `--block-size`, `--max-blocks`; the layout is `crate::blocks`'), which
//! let `--to-source` be a prefix (`a/len`) as well.

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::blocks::{range_text, Layout};
use crate::error::{PResult, Problem};
use crate::model::{NatFlags, NatRange, Neg, PortBlocks, PortRange};
use crate::parse::{
    bad, conflict, not_allowed, parse_addr, parse_num_range, parse_port, parse_range_addrs, Opt,
    OptSpec,
};

const RANGE: u8 = 0;
const RANDOM: u8 = 1;
const RANDOM_FULLY: u8 = 2;
const PERSISTENT: u8 = 3;
const DETERMINISTIC: u8 = 4;
const BLOCK_SIZE: u8 = 5;
const MAX_BLOCKS: u8 = 6;

pub(super) const SNAT_OPTIONS: &[OptSpec] = &[
    OptSpec::value("to-source", RANGE),
    OptSpec::flag("random", RANDOM),
    OptSpec::flag("random-fully", RANDOM_FULLY),
    OptSpec::flag("persistent", PERSISTENT),
    OptSpec::value("deterministic", DETERMINISTIC),
    OptSpec::value("block-size", BLOCK_SIZE),
    OptSpec::value("max-blocks", MAX_BLOCKS),
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
    /// SNAT's port-block options, if any was given.
    blocks: Option<PortBlocks>,
    /// `--to-source` as written when it was a prefix (`a/len`), which only
    /// port blocks allow.
    prefix: Option<String>,
}

/// An option of SNAT or DNAT; `proto` is the rule's `-p` so far.
pub(super) fn parse_range_option(
    b: &mut Builder,
    opt: &Opt<'_>,
    proto: Option<Neg<u8>>,
) -> PResult<()> {
    let blocks = || PortBlocks {
        inside: None,
        size: None,
        max_blocks: None,
    };
    match opt.id {
        RANGE => {
            let arg = opt.arg();
            let mut r = parse_nat_range(arg)?;
            // A prefix stands for its addresses (port blocks only: finish
            // refuses it otherwise).
            if let Some((a, _)) = arg.split_once('/') {
                let len = arg[a.len() + 1..].split(':').next().unwrap_or("");
                r.addr = Some(parse_prefix(&format!("{a}/{len}"))?);
                b.prefix = Some(arg.to_string());
            }
            b.range = Some(r);
        }
        RANDOM => b.flags.random = true,
        RANDOM_FULLY => b.flags.random_fully = true,
        PERSISTENT => b.flags.persistent = true,
        DETERMINISTIC => {
            let arg = opt.arg();
            let inside = if arg.contains('/') {
                parse_prefix(arg)?
            } else {
                parse_range_addrs(arg)?
            };
            b.blocks.get_or_insert_with(blocks).inside = Some(inside);
        }
        BLOCK_SIZE => {
            let n = parse_num_range(opt.arg(), 1, 65535, "--block-size")?;
            b.blocks.get_or_insert_with(blocks).size = Some(n as u16);
        }
        _ => {
            let n = parse_num_range(opt.arg(), 1, 65535, "--max-blocks")?;
            b.blocks.get_or_insert_with(blocks).max_blocks = Some(n as u16);
        }
    }
    check_ports(b, opt, proto)
}

/// `a/len` as the first and last address of the prefix (host bits of `a`
/// ignored, as iptables does with `-s`).
fn parse_prefix(s: &str) -> PResult<(Ipv4Addr, Ipv4Addr)> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let len = parse_num_range(l, 0, 32, "a prefix length")? as u32;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    let net = u32::from(parse_addr(a)?) & mask;
    Ok((Ipv4Addr::from(net), Ipv4Addr::from(net | !mask)))
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
    } else if a.contains('/') {
        // A prefix: the caller reads it.
        Some((Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED))
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
    Ok(NatRange {
        addr,
        ports,
        blocks: None,
    })
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
    let mut range = b
        .range
        .ok_or_else(|| conflict(tok, format!("{name}: option {opt} must be specified")))?;
    if range.ports.is_some() && !ports_ok(proto) {
        return Err(need_ports_proto(opt));
    }
    range.blocks = b.blocks;
    if let Some(p) = &b.prefix {
        if b.blocks.is_none() {
            return Err(bad(
                p,
                format!(
                    "{name}: {opt} takes addr[-addr][:port[-port]]; a prefix is for port \
                     blocks (--deterministic or --block-size)"
                ),
            ));
        }
    }
    if let Err(m) = Layout::of(&range) {
        return Err(conflict(tok, format!("{name}: {m}")));
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
    if let Some(b) = &range.blocks {
        blocks_text(s, b, "--");
    }
}

/// The port-block options, each as `{dash}name value` (`--` for save,
/// nothing for list).
fn blocks_text(s: &mut String, b: &PortBlocks, dash: &str) {
    if let Some((lo, hi)) = b.inside {
        let _ = write!(s, " {dash}deterministic {}", range_text(lo, hi));
    }
    if let Some(n) = b.size {
        let _ = write!(s, " {dash}block-size {n}");
    }
    if let Some(n) = b.max_blocks {
        let _ = write!(s, " {dash}max-blocks {n}");
    }
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
    if let Some(b) = &range.blocks {
        blocks_text(out, b, "");
    }
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

#[cfg(test)]
mod tests {
    use crate::list::{print_list, ListOptions};
    use crate::model::Table;
    use crate::parse::parse_restore;
    use crate::print::print_save;

    fn nat(rule: &str) -> Result<crate::model::Ruleset, String> {
        let text = format!("*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING {rule}\nCOMMIT\n");
        parse_restore(&text, "t.v4").map_err(|e| e.to_string())
    }

    fn saved(rule: &str) -> String {
        let rs = nat(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
        let s = print_save(&rs, false);
        s.lines()
            .find(|l| l.starts_with("-A"))
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn port_blocks_are_saved_and_listed() {
        let r = "-s 172.18.0.0/24 -j SNAT --to-source 203.0.113.0/28 --deterministic 172.18.0.0/24 --block-size 2016";
        let s = saved(r);
        assert_eq!(
            s,
            "-A POSTROUTING -s 172.18.0.0/24 -j SNAT --to-source 203.0.113.0-203.0.113.15 \
             --deterministic 172.18.0.0/24 --block-size 2016"
        );
        // What save prints reads back the same.
        assert_eq!(saved(s.trim_start_matches("-A POSTROUTING ")), s);
        let rs = nat(r).unwrap();
        let l = print_list(&rs, Table::Nat, None, ListOptions::default()).unwrap();
        assert!(
            l.contains("to:203.0.113.0-203.0.113.15 deterministic 172.18.0.0/24 block-size 2016"),
            "{l}"
        );
        assert_eq!(
            saved("-p udp -j SNAT --to-source 198.51.100.1:2000-2999 --block-size 100 --max-blocks 3 --random"),
            "-A POSTROUTING -p udp -j SNAT --to-source 198.51.100.1:2000-2999 --random \
             --block-size 100 --max-blocks 3"
        );
        assert_eq!(
            saved("-j SNAT --deterministic 10.0.0.1-10.0.0.5 --to-source 1.1.1.1"),
            "-A POSTROUTING -j SNAT --to-source 1.1.1.1 --deterministic 10.0.0.1-10.0.0.5"
        );
    }

    #[test]
    fn rules_may_share_a_pool_with_the_same_options() {
        let r = "-p tcp -j SNAT --to-source 1.1.1.0/30 --block-size 64\n-A POSTROUTING -p udp -j SNAT --to-source 1.1.1.0-1.1.1.3 --block-size 64";
        nat(r).unwrap();
    }

    #[test]
    fn inconsistent_port_blocks_are_refused() {
        for (rule, want) in [
            (
                "-j SNAT --to-source 203.0.113.0/30 --deterministic 172.18.0.0/24 --block-size 2016",
                "the pool is too small",
            ),
            (
                "-j SNAT --to-source 203.0.113.0/28",
                "a prefix is for port blocks",
            ),
            (
                "-j SNAT --to-source 1.1.1.1 --max-blocks 2",
                "dynamic port blocks need --block-size",
            ),
            (
                "-j SNAT --to-source 1.1.1.1 --deterministic 10.0.0.0/24 --max-blocks 2",
                "--max-blocks is for dynamic blocks",
            ),
            (
                "-p tcp -j SNAT --to-source 1.1.1.1:5000-5009 --block-size 11",
                "larger than the port range",
            ),
            (
                "-j SNAT --to-source 1.1.1.1 --block-size 0",
                "--block-size",
            ),
            (
                "-j SNAT --to-source 1.1.1.1 --deterministic 10.0.0.9-10.0.0.1",
                "reversed",
            ),
            (
                "-j DNAT --to-destination 10.0.0.0/24",
                "a prefix is for port blocks",
            ),
            ("-j MASQUERADE --block-size 64", "block-size"),
            (
                "-j SNAT --to-source 1.1.1.0/30 --block-size 64\n-A POSTROUTING -j SNAT --to-source 1.1.1.3 --block-size 100",
                "overlap those of the rule at line 3",
            ),
        ] {
            let e = nat(rule).expect_err(rule);
            assert!(e.contains(want), "{rule}: {e}");
        }
    }
}
