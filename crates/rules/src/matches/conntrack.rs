//! `-m conntrack` (`xt_conntrack.c`): the connection's state (with the
//! virtual SNAT and DNAT states), status bits, and the addresses of its
//! original and reply tuples and the ports of the original one. Not
//! supported yet (refused with a message): `--ctproto`, `--ctexpire`,
//! `--ctdir`, `--ctreplsrcport`, `--ctrepldstport`.

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::state::{parse_ct_states, state_list};
use super::{MatchResult, Missing};
use crate::compile::{Net, Range16, RuleBuild};
use crate::ctx::{CtCtx, PacketCtx};
use crate::error::{ErrorKind, PResult, Problem};
use crate::list::{inv_prefix, range};
use crate::model::{ConntrackMatch, CtStateSet, CtStatusSet, Ipv4Net, Neg, PortRange};
use crate::names::{self, parse_c_uint};
use crate::parse::{bad, parse_net_raw, parse_port_range_wrapping, Opt, OptSpec};
use crate::print::{bang, mask, port_opt};

const STATE: u8 = 0;
const ORIG_SRC: u8 = 2;
const ORIG_DST: u8 = 3;
const REPL_SRC: u8 = 4;
const REPL_DST: u8 = 5;
const STATUS: u8 = 6;
const ORIG_SRC_PORT: u8 = 8;
const ORIG_DST_PORT: u8 = 9;

/// Every option the kernel has; those without a constant above are refused
/// when given (not supported yet).
pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("ctstate", STATE).invertible(),
    OptSpec::value("ctproto", 1).invertible(),
    OptSpec::value("ctorigsrc", ORIG_SRC).invertible(),
    OptSpec::value("ctorigdst", ORIG_DST).invertible(),
    OptSpec::value("ctreplsrc", REPL_SRC).invertible(),
    OptSpec::value("ctrepldst", REPL_DST).invertible(),
    OptSpec::value("ctstatus", STATUS).invertible(),
    OptSpec::value("ctexpire", 7).invertible(),
    OptSpec::value("ctorigsrcport", ORIG_SRC_PORT).invertible(),
    OptSpec::value("ctorigdstport", ORIG_DST_PORT).invertible(),
    OptSpec::value("ctreplsrcport", 10).invertible(),
    OptSpec::value("ctrepldstport", 11).invertible(),
    OptSpec::value("ctdir", 12),
];

pub(super) fn parse_option(c: &mut ConntrackMatch, opt: &Opt<'_>) -> PResult<()> {
    let (a, inv, tok) = (opt.arg(), opt.inv, opt.tok);
    match opt.id {
        STATE => c.state = Some(Neg { inv, val: parse_ct_states(a, true)? }),
        ORIG_SRC => c.orig_src = Some(Neg { inv, val: parse_ct_net(a)? }),
        ORIG_DST => c.orig_dst = Some(Neg { inv, val: parse_ct_net(a)? }),
        REPL_SRC => c.repl_src = Some(Neg { inv, val: parse_ct_net(a)? }),
        REPL_DST => c.repl_dst = Some(Neg { inv, val: parse_ct_net(a)? }),
        STATUS => c.status = Some(Neg { inv, val: parse_ct_status(a)? }),
        ORIG_SRC_PORT => {
            c.orig_src_port = Some(Neg { inv, val: parse_port_range_wrapping(a, None)? })
        }
        ORIG_DST_PORT => {
            c.orig_dst_port = Some(Neg { inv, val: parse_port_range_wrapping(a, None)? })
        }
        _ => {
            return Err(Problem::new(
                ErrorKind::UnknownOption,
                tok,
                format!("conntrack option `{tok}` is not supported; supported: --ctstate, --ctstatus, --ctorigsrc, --ctorigdst, --ctreplsrc, --ctrepldst, --ctorigsrcport, --ctorigdstport"),
            ))
        }
    }
    Ok(())
}

/// `inet_aton`: 1 to 4 parts (`a`, `a.b` = a.0.0.b, `a.b.c` = a.b.0.c),
/// each decimal, `0x` hex or `0` octal.
fn parse_inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u64> = s
        .split('.')
        .map(parse_c_uint)
        .collect::<Option<Vec<u64>>>()?;
    let (last, head) = parts.split_last()?;
    if head.len() > 3 || head.iter().any(|&p| p > 255) {
        return None;
    }
    let room = 8 * (4 - head.len() as u32);
    if room < 64 && *last >= 1u64 << room {
        return None;
    }
    let mut v: u32 = 0;
    for (i, &p) in head.iter().enumerate() {
        v |= (p as u32) << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from(v | *last as u32))
}

/// A conntrack address (`--ctorigsrc` ...): `inet_aton` forms, host bits kept;
/// a prefix length above 32 means 32, as iptables reads it.
fn parse_ct_net(s: &str) -> PResult<Ipv4Net> {
    let (a, m) = match s.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (s, None),
    };
    let addr = parse_inet_aton(a).ok_or_else(|| {
        bad(
            s,
            format!("invalid IPv4 address `{a}`: expected a dotted quad such as 192.0.2.1"),
        )
    })?;
    match m {
        Some(m) if !m.contains('.') => {
            let len = parse_c_uint(m).ok_or_else(|| {
                bad(
                    s,
                    format!("invalid mask `{m}`: use a prefix length 0-32 or a dotted mask"),
                )
            })?;
            Ok(Ipv4Net::prefix(addr, len.min(32) as u8))
        }
        None => Ok(Ipv4Net::prefix(addr, 32)),
        Some(m) => Ok(Ipv4Net {
            addr,
            mask: parse_net_raw(&format!("0.0.0.0/{m}"))?.mask,
        }),
    }
}

/// `--ctstatus`: a comma list of status names (`NONE` is no bit).
fn parse_ct_status(s: &str) -> PResult<CtStatusSet> {
    let mut v = 0u32;
    for part in s.split(',') {
        let up = part.to_ascii_uppercase();
        if up == "NONE" {
            continue;
        }
        match names::CT_STATUS.iter().find(|(n, _)| *n == up) {
            Some(&(_, b)) => v |= b,
            None => {
                return Err(bad(
                    s,
                    format!("bad ctstatus `{part}`: use a comma list of NONE, EXPECTED, SEEN_REPLY, ASSURED, CONFIRMED"),
                ))
            }
        }
    }
    Ok(CtStatusSet(v))
}

pub(super) fn finish(c: ConntrackMatch, seen: &[u8], need: Missing) -> PResult<ConntrackMatch> {
    if seen.is_empty() {
        return Err(need.option("--ctstate, --ctstatus, --ctorigsrc ... (at least one)"));
    }
    Ok(c)
}

/// `--ctstatus` bits as iptables names them (`NONE` for none).
fn status_list(v: u32) -> String {
    let list: Vec<&str> = names::CT_STATUS
        .iter()
        .filter(|(_, b)| v & b != 0)
        .map(|&(n, _)| n)
        .collect();
    if list.is_empty() {
        "NONE".to_string()
    } else {
        list.join(",")
    }
}

pub(super) fn save(s: &mut String, c: &ConntrackMatch) {
    let net = |s: &mut String, name: &str, n: &Option<Neg<Ipv4Net>>| {
        if let Some(n) = n {
            let _ = write!(s, "{} --{} {}", bang(n.inv), name, n.val.addr);
            if n.val.mask != u32::MAX {
                mask(s, &n.val);
            }
        }
    };
    s.push_str(" -m conntrack");
    if let Some(st) = &c.state {
        let _ = write!(s, "{} --ctstate {}", bang(st.inv), state_list(st.val.0));
    }
    net(s, "ctorigsrc", &c.orig_src);
    net(s, "ctorigdst", &c.orig_dst);
    net(s, "ctreplsrc", &c.repl_src);
    net(s, "ctrepldst", &c.repl_dst);
    port_opt(s, "ctorigsrcport", &c.orig_src_port);
    port_opt(s, "ctorigdstport", &c.orig_dst_port);
    if let Some(st) = &c.status {
        let _ = write!(s, "{} --ctstatus {}", bang(st.inv), status_list(st.val.0));
    }
}

pub(super) fn list(out: &mut String, c: &ConntrackMatch) {
    let addr = |out: &mut String, name: &str, n: &Option<Neg<Ipv4Net>>| {
        if let Some(n) = n {
            inv_prefix(out, n.inv);
            let _ = write!(out, " {name} {}", n.val.addr);
            if n.val.mask != u32::MAX {
                mask(out, &n.val);
            }
        }
    };
    let port = |out: &mut String, name: &str, p: &Option<Neg<PortRange>>| {
        if let Some(p) = p {
            inv_prefix(out, p.inv);
            let _ = write!(out, " {name} {}", range(&p.val));
        }
    };
    if let Some(st) = &c.state {
        inv_prefix(out, st.inv);
        let _ = write!(out, " ctstate {}", state_list(st.val.0));
    }
    addr(out, "ctorigsrc", &c.orig_src);
    addr(out, "ctorigdst", &c.orig_dst);
    addr(out, "ctreplsrc", &c.repl_src);
    addr(out, "ctrepldst", &c.repl_dst);
    port(out, "ctorigsrcport", &c.orig_src_port);
    port(out, "ctorigdstport", &c.orig_dst_port);
    if let Some(st) = &c.status {
        inv_prefix(out, st.inv);
        let _ = write!(out, " ctstatus {}", status_list(st.val.0));
    }
}

/// A compiled `-m conntrack`: each test given, with its inversion.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    state: Option<(u8, bool)>,
    status: Option<(u32, bool)>,
    orig_src: Option<Net>,
    orig_dst: Option<Net>,
    repl_src: Option<Net>,
    repl_dst: Option<Net>,
    orig_sport: Option<Range16>,
    orig_dport: Option<Range16>,
}

pub(super) fn compile(ct: &ConntrackMatch, b: &mut RuleBuild<'_>) -> Compiled {
    b.needs.conntrack = true;
    Compiled {
        state: ct.state.map(|s| (s.val.0, s.inv)),
        status: ct.status.map(|s| (s.val.0, s.inv)),
        orig_src: ct.orig_src.as_ref().map(Net::from),
        orig_dst: ct.orig_dst.as_ref().map(Net::from),
        repl_src: ct.repl_src.as_ref().map(Net::from),
        repl_dst: ct.repl_dst.as_ref().map(Net::from),
        orig_sport: ct.orig_src_port.as_ref().map(Range16::from),
        orig_dport: ct.orig_dst_port.as_ref().map(Range16::from),
    }
}

#[inline(always)]
pub(super) fn eval(c: &Compiled, ctx: &PacketCtx) -> MatchResult {
    MatchResult::from(test(c, &ctx.ct))
}

/// `conntrack_mt`: the state first (an untracked packet matches only on
/// state), then tuples, ports and status.
fn test(c: &Compiled, ct: &CtCtx) -> bool {
    let tracked = ct.state & CtStateSet::TRACKED != 0;
    if let Some((mask, inv)) = c.state {
        let mut bits = ct.state & CtStateSet::BASIC;
        if tracked {
            bits |= ct.state & (CtStateSet::SNAT | CtStateSet::DNAT);
            if ct.status & CtStatusSet::SRC_NAT != 0 {
                bits |= CtStateSet::SNAT;
            }
            if ct.status & CtStatusSet::DST_NAT != 0 {
                bits |= CtStateSet::DNAT;
            }
        }
        if ((mask & bits) != 0) == inv {
            return false;
        }
    }
    if !tracked {
        return c.state.is_some();
    }
    for (net, a) in [
        (&c.orig_src, ct.orig_src),
        (&c.orig_dst, ct.orig_dst),
        (&c.repl_src, ct.repl_src),
        (&c.repl_dst, ct.repl_dst),
    ] {
        if let Some(n) = net {
            if !n.test(a) {
                return false;
            }
        }
    }
    for (r, p) in [
        (&c.orig_sport, ct.orig_sport),
        (&c.orig_dport, ct.orig_dport),
    ] {
        if let Some(r) = r {
            if !ct.has_ports || !r.test(p) {
                return false;
            }
        }
    }
    if let Some((mask, inv)) = c.status {
        if ((mask & ct.status) != 0) == inv {
            return false;
        }
    }
    true
}

/// The status changes within a connection (ASSURED comes later).
pub(super) fn flow_invariant(c: &Compiled) -> bool {
    c.status.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn conntrack_match() {
        use CtStateSet as S;
        let ctm = |c: ConntrackMatch| with_matches(vec![Match::Conntrack(c)]);
        let st = |inv: bool, bits: u8| ConntrackMatch {
            state: Some(Neg {
                inv,
                val: CtStateSet(bits),
            }),
            ..Default::default()
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        p.ct = tracked(S::ESTABLISHED);
        assert!(hit(ctm(st(false, S::ESTABLISHED | S::RELATED)), &p));
        assert!(!hit(ctm(st(false, S::NEW)), &p));
        assert!(hit(ctm(st(true, S::NEW)), &p));
        assert!(!hit(ctm(st(false, S::SNAT)), &p));
        p.ct.status = CtStatusSet::SRC_NAT;
        assert!(hit(ctm(st(false, S::SNAT)), &p));
        assert!(!hit(ctm(st(false, S::DNAT)), &p));
        p.ct.state |= S::DNAT;
        assert!(hit(ctm(st(false, S::DNAT)), &p));
        // Untracked: the state test applies; other criteria are then ignored
        // when a state was given (ct == NULL returns "state given").
        let mut u = p;
        u.ct = CtCtx::untracked();
        assert!(hit(ctm(st(false, S::UNTRACKED)), &u));
        assert!(hit(ctm(st(true, S::NEW)), &u));
        let with_addr = ConntrackMatch {
            orig_src: Some(pos(net([99, 0, 0, 0], 8))),
            ..st(false, S::UNTRACKED)
        };
        assert!(hit(ctm(with_addr), &u));
        let only_status = ConntrackMatch {
            status: Some(neg(CtStatusSet(CtStatusSet::ASSURED))),
            ..Default::default()
        };
        assert!(
            !hit(ctm(only_status.clone()), &u),
            "no ct, no state option: no match"
        );
        assert!(hit(ctm(only_status), &p));
        let mut inv = u;
        inv.ct.state = S::INVALID;
        assert!(hit(ctm(st(false, S::INVALID)), &inv));
        // Status: any of the bits.
        p.ct.status = CtStatusSet::ASSURED | CtStatusSet::CONFIRMED;
        let status = |inv: bool, bits: u32| ConntrackMatch {
            status: Some(Neg {
                inv,
                val: CtStatusSet(bits),
            }),
            ..Default::default()
        };
        assert!(hit(
            ctm(status(
                false,
                CtStatusSet::SEEN_REPLY | CtStatusSet::CONFIRMED
            )),
            &p
        ));
        assert!(!hit(ctm(status(false, CtStatusSet::EXPECTED)), &p));
        assert!(hit(ctm(status(true, CtStatusSet::EXPECTED)), &p));
        // Tuple addresses and ports.
        let c = ConntrackMatch {
            orig_src: Some(pos(net([10, 0, 0, 0], 8))),
            orig_dst: Some(pos(net([192, 168, 0, 2], 32))),
            repl_src: Some(neg(net([172, 16, 0, 0], 12))),
            repl_dst: Some(pos(net([10, 0, 2, 15], 32))),
            orig_src_port: Some(pos(port_range(1024, 65535))),
            orig_dst_port: Some(pos(port_range(80, 80))),
            ..Default::default()
        };
        assert!(hit(ctm(c.clone()), &p));
        let mut c2 = c.clone();
        c2.orig_dst_port = Some(neg(port_range(80, 80)));
        assert!(!hit(ctm(c2), &p));
        let mut c3 = c.clone();
        c3.repl_dst = Some(neg(net([10, 0, 2, 15], 32)));
        assert!(!hit(ctm(c3), &p));
        let mut np = p;
        np.ct.has_ports = false;
        assert!(!hit(ctm(c), &np));
        assert!(
            Loaded::new(&filter_input(vec![ctm(st(false, S::NEW))]))
                .c
                .needs()
                .conntrack
        );
    }
}
