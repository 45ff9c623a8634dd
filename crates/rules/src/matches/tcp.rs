//! `-m tcp` (`xt_tcpudp.c`): source and destination port ranges, TCP flags
//! (`--syn`, `--tcp-flags`) and `--tcp-option`. A leading tcp match's ports
//! and flags are also stored inline in the rule's entry, so that a packet
//! that fails them is rejected in the entry scan.

use std::fmt::Write;

use super::{l4_guard, list_ports, nft_port, payload_port, MatchResult};
use crate::compile::{CompileError, Range16, RuleBuild};
use crate::ctx::PacketCtx;
use crate::error::PResult;
use crate::model::{Neg, TcpFlags, TcpMatch};
use crate::parse::{bad, conflict, not_allowed, parse_num_range, parse_port_range, Opt, OptSpec};
use crate::print::{bang, hidden_only, port_opt, shown};

const SPORT: u8 = 0;
const DPORT: u8 = 1;
const SYN: u8 = 2;
const FLAGS: u8 = 3;
const OPTION: u8 = 4;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("source-port", SPORT).invertible(),
    OptSpec::value("sport", SPORT).invertible(),
    OptSpec::value("destination-port", DPORT).invertible(),
    OptSpec::value("dport", DPORT).invertible(),
    OptSpec::flag("syn", SYN).invertible(),
    OptSpec::pair("tcp-flags", FLAGS).invertible(),
    OptSpec::value("tcp-option", OPTION).invertible(),
];

pub(super) fn parse_option(t: &mut TcpMatch, opt: &Opt<'_>, seen: &[u8]) -> PResult<()> {
    let (a, inv, tok) = (opt.arg(), opt.inv, opt.tok);
    match opt.id {
        SPORT | DPORT => {
            let r = parse_port_range(a, Some(6))?;
            if r.lo > r.hi {
                return Err(bad(
                    a,
                    format!("invalid port range `{a}` (min > max): write the lower port first"),
                ));
            }
            if opt.id == SPORT {
                t.sport = nft_port(inv, r);
            } else {
                t.dport = nft_port(inv, r);
            }
        }
        SYN | FLAGS => {
            if seen.contains(&SYN) && seen.contains(&FLAGS) {
                return Err(conflict(
                    tok,
                    "only one of `--syn` or `--tcp-flags` allowed",
                ));
            }
            let (mask, comp) = if opt.id == SYN {
                (0x17, 0x02)
            } else {
                (parse_tcp_flags(a)?, parse_tcp_flags(opt.arg2())?)
            };
            // iptables-nft drops a test of no flags (`NONE NONE`).
            t.flags = if mask == 0 && !inv {
                None
            } else {
                Some(Neg {
                    inv,
                    val: TcpFlags { mask, comp },
                })
            };
        }
        _ => {
            let v = parse_num_range(a, 1, 255, "--tcp-option")? as u8;
            t.option = Some(Neg { inv, val: v });
        }
    }
    Ok(())
}

/// A comma list of TCP flag names.
fn parse_tcp_flags(s: &str) -> PResult<u8> {
    let mut v = 0u8;
    for part in s.split(',').filter(|p| !p.is_empty()) {
        v |= match part.to_ascii_uppercase().as_str() {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ALL" => 0x3F,
            "NONE" => 0,
            _ => {
                return Err(bad(
                    s,
                    format!("unknown TCP flag `{part}`: use a comma list of FIN, SYN, RST, PSH, ACK, URG, ALL, NONE"),
                ))
            }
        };
    }
    Ok(v)
}

pub(super) fn finish(t: TcpMatch, proto: Option<Neg<u8>>) -> PResult<TcpMatch> {
    if !matches!(proto, Some(Neg { val: 6, .. })) {
        return Err(not_allowed("-m tcp", "the tcp match requires `-p tcp`"));
    }
    if matches!(proto, Some(Neg { inv: true, .. }))
        && (!(payload_port(&t.sport) || payload_port(&t.dport) || t.flags.is_some())
            || t.option.is_some())
    {
        // iptables-nft turns these into the xtables tcp match, which the
        // kernel refuses after `! -p tcp`.
        return Err(not_allowed(
            "-m tcp",
            "after `! -p tcp` the tcp match needs a port or flag test and no --tcp-option",
        ));
    }
    Ok(t)
}

pub(super) fn save(s: &mut String, t: &TcpMatch) {
    let (sport, dport) = (shown(&t.sport), shown(&t.dport));
    if hidden_only(&[&t.sport, &t.dport], &[&sport, &dport])
        && t.option.is_none()
        && t.flags.is_none()
    {
        return;
    }
    s.push_str(" -m tcp");
    port_opt(s, "sport", &sport);
    port_opt(s, "dport", &dport);
    if let Some(o) = &t.option {
        let _ = write!(s, "{} --tcp-option {}", bang(o.inv), o.val);
    }
    if let Some(f) = &t.flags {
        let _ = write!(
            s,
            "{} --tcp-flags {} {}",
            bang(f.inv),
            flag_names(f.val.mask),
            flag_names(f.val.comp)
        );
    }
}

/// TCP flags as iptables-save names them (`SYN,ACK`, `NONE`).
fn flag_names(v: u8) -> String {
    const NAMES: [(u8, &str); 6] = [
        (0x01, "FIN"),
        (0x02, "SYN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x10, "ACK"),
        (0x20, "URG"),
    ];
    let v: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| v & b != 0)
        .map(|&(_, n)| n)
        .collect();
    if v.is_empty() {
        "NONE".to_string()
    } else {
        v.join(",")
    }
}

pub(super) fn list(out: &mut String, t: &TcpMatch) {
    let (sport, dport) = (shown(&t.sport), shown(&t.dport));
    if hidden_only(&[&t.sport, &t.dport], &[&sport, &dport])
        && t.option.is_none()
        && t.flags.is_none()
    {
        return;
    }
    out.push_str(" tcp");
    list_ports(out, "spt", &sport);
    list_ports(out, "dpt", &dport);
    if let Some(o) = &t.option {
        let _ = write!(out, " option={}{}", if o.inv { "!" } else { "" }, o.val);
    }
    if let Some(f) = &t.flags {
        let _ = write!(
            out,
            " flags:{}0x{:02X}/0x{:02X}",
            if f.inv { "!" } else { "" },
            f.val.mask,
            f.val.comp
        );
    }
}

/// A compiled `-m tcp`.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    sport: Range16,
    dport: Range16,
    fl_mask: u8,
    fl_comp: u8,
    fl_inv: bool,
    /// `--tcp-option` kind (0 = none, as in the kernel) and inversion.
    option: u8,
    opt_inv: bool,
}

pub(super) fn compile(t: &TcpMatch, b: &mut RuleBuild<'_>) -> Result<Compiled, CompileError> {
    b.require_proto("tcp", "tcp", &[6])?;
    let sport = t.sport.as_ref().map_or(Range16::any(), Range16::from);
    let dport = t.dport.as_ref().map_or(Range16::any(), Range16::from);
    let (fl_mask, fl_comp, fl_inv) = t
        .flags
        .map_or((0, 0, false), |f| (f.val.mask, f.val.comp, f.inv));
    let (option, opt_inv) = t.option.map_or((0, false), |o| (o.val, o.inv));
    if option != 0 {
        b.needs.tcp_options = true;
    }
    if b.first {
        b.entry
            .set_l4(sport, dport, fl_mask, fl_comp, fl_inv, option == 0);
    }
    Ok(Compiled {
        sport,
        dport,
        fl_mask,
        fl_comp,
        fl_inv,
        option,
        opt_inv,
    })
}

#[inline(always)]
pub(super) fn eval(t: &Compiled, ctx: &PacketCtx) -> MatchResult {
    if let Some(r) = l4_guard(ctx, true) {
        return r;
    }
    if !t.sport.test(ctx.sport) || !t.dport.test(ctx.dport) {
        return MatchResult::No;
    }
    if ((ctx.tcp_flags & t.fl_mask) == t.fl_comp) == t.fl_inv {
        return MatchResult::No;
    }
    if t.option != 0 {
        if ctx.tcp_options_bad {
            return MatchResult::Hotdrop;
        }
        let o = t.option;
        let found = ctx.tcp_options[usize::from(o >> 6)] >> (o & 63) & 1 != 0;
        return MatchResult::from(found != t.opt_inv);
    }
    MatchResult::Yes
}

/// Ports are the flow's; flags and options are per packet.
pub(super) fn flow_invariant(t: &Compiled) -> bool {
    t.fl_mask == 0 && t.option == 0
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    #[test]
    fn tcp_ports_and_flags() {
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 40000, 22);
        let t = |t: TcpMatch| tcp_rule(Target::Accept, t);
        assert!(hit(
            t(TcpMatch {
                dport: Some(pos(port_range(22, 22))),
                ..Default::default()
            }),
            &p
        ));
        assert!(!hit(
            t(TcpMatch {
                dport: Some(pos(port_range(80, 80))),
                ..Default::default()
            }),
            &p
        ));
        assert!(hit(
            t(TcpMatch {
                dport: Some(neg(port_range(80, 80))),
                ..Default::default()
            }),
            &p
        ));
        assert!(hit(
            t(TcpMatch {
                sport: Some(pos(port_range(1024, 65535))),
                ..Default::default()
            }),
            &p
        ));
        assert!(!hit(
            t(TcpMatch {
                sport: Some(neg(port_range(1024, 65535))),
                ..Default::default()
            }),
            &p
        ));
        let syn = TcpFlags {
            mask: 0x17,
            comp: 0x02,
        };
        assert!(hit(
            t(TcpMatch {
                flags: Some(pos(syn)),
                ..Default::default()
            }),
            &p
        ));
        assert!(!hit(
            t(TcpMatch {
                flags: Some(neg(syn)),
                ..Default::default()
            }),
            &p
        ));
        let mut ack = p;
        ack.tcp_flags = 0x10;
        assert!(!hit(
            t(TcpMatch {
                flags: Some(pos(syn)),
                ..Default::default()
            }),
            &ack
        ));
        // A tcp match that is not the first match (comment first) still works.
        let mut r = t(TcpMatch {
            dport: Some(pos(port_range(22, 22))),
            ..Default::default()
        });
        r.matches.insert(0, Match::Comment("x".into()));
        assert!(hit(r.clone(), &p));
        r.matches[1] = Match::Tcp(TcpMatch {
            dport: Some(pos(port_range(23, 23))),
            ..Default::default()
        });
        assert!(!hit(r, &p));
    }

    #[test]
    fn tcp_fragments_and_tinygrams() {
        let rs = filter_input(vec![
            tcp_rule(
                Target::Accept,
                TcpMatch {
                    dport: Some(neg(port_range(1, 1))),
                    ..Default::default()
                },
            ),
            rule(Target::Accept),
        ]);
        let mut t = Loaded::new(&rs);
        // A non-first fragment does not match a port match: falls to rule 2.
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 5, 6);
        p.set_frag_offset(100);
        p.has_l4 = false;
        assert_eq!(t.input(&p), Verdict::Accept);
        // Offset 1 (8 bytes) is dropped by the tcp match (hotdrop).
        p.set_frag_offset(1);
        assert_eq!(t.input(&p), Verdict::Drop);
        // A truncated TCP header on a first fragment / whole packet: hotdrop.
        let mut q = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 5, 6);
        q.has_l4 = false;
        assert_eq!(t.input(&q), Verdict::Drop);
        let out = t.counters(&rs);
        let ch = &out.tables[0].chains[0];
        assert_eq!(ch.rules[0].counters.packets, 0);
        assert_eq!(ch.rules[1].counters.packets, 1);
        // Hotdrop is not the policy: policy counter untouched.
        assert_eq!(ch.counters.packets, 0);
        // A hotdrop happens only if the rule's earlier criteria matched.
        let rs = filter_input(vec![
            Rule {
                src: Some(pos(net([9, 9, 9, 9], 32))),
                ..tcp_rule(Target::Accept, TcpMatch::default())
            },
            rule(Target::Accept),
        ]);
        assert_eq!(Loaded::new(&rs).input(&q), Verdict::Accept);
    }

    #[test]
    fn tcp_option() {
        let r = |inv: bool| {
            tcp_rule(
                Target::Accept,
                TcpMatch {
                    option: Some(Neg { inv, val: 2 }),
                    ..Default::default()
                },
            )
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        // MSS option, NOP, NOP, SACK-permitted.
        p.tcp_options = tcp_option_kinds(&[2, 4, 5, 0xb4, 1, 1, 4, 2]);
        assert!(hit(r(false), &p));
        assert!(!hit(r(true), &p));
        p.tcp_options = tcp_option_kinds(&[1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(!hit(r(false), &p));
        assert!(hit(r(true), &p));
        p.tcp_options_bad = true;
        let mut t = Loaded::new(&filter_input(vec![r(true), rule(Target::Accept)]));
        assert_eq!(t.input(&p), Verdict::Drop);
        assert!(
            Loaded::new(&filter_input(vec![r(true)]))
                .c
                .needs()
                .tcp_options
        );
    }

    #[test]
    fn tcp_option_walk_is_the_kernels() {
        // EOL does not stop the walk; a zero length advances by one.
        let b = tcp_option_kinds(&[0, 3, 3, 7, 200, 0, 5]);
        let has = |k: u8| b[usize::from(k / 64)] >> (k % 64) & 1 == 1;
        assert!(has(0) && has(3) && has(200));
        assert!(!has(7), "7 is inside option 3's payload");
        assert!(has(5), "length 0 of option 200 advances by one byte");
        // Truncated length byte at the end.
        let b = tcp_option_kinds(&[1, 30]);
        assert_eq!(b[0], 1 << 1 | 1 << 30);
    }
}
