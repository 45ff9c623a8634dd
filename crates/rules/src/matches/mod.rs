//! The match extensions (`-m NAME`), one file each: everything about one
//! match in one place, as iptables keeps it in `libxt_NAME.c` and the kernel
//! in `xt_NAME.c`. A match's file holds
//!
//! - `OPTIONS`, its option table, and `parse_option`/`finish`: its options
//!   into the model's value (`crate::model::Match`), checked as iptables and
//!   the kernel check them;
//! - `save` and `list`: that value as `iptables-save` and `iptables -L` print
//!   it;
//! - `compile` and `eval`: what the rule compiles it to, and how that tests
//!   one packet on the hot path (never allocating, never panicking);
//! - its unit tests.
//!
//! This file is the registry: each dispatch below has one line per match, so
//! that adding a match is its model variant (`model.rs`), its file, and a
//! line in each dispatch here (the compiler lists the ones missing).

use std::fmt::Write;

use crate::compile::{CompileError, RuleBuild};
use crate::ctx::PacketCtx;
use crate::error::{PResult, Problem};
use crate::model::*;
use crate::parse::{conflict, Opt, OptSpec};

mod addrtype;
mod comment;
mod conntrack;
mod icmp;
mod iprange;
mod length;
pub(crate) mod limit;
mod mark;
mod multiport;
mod state;
mod tcp;
mod ttl;
mod udp;

/// The matches fastables implements, for messages (`-m` of anything else is
/// refused with this list).
pub const SUPPORTED: &str =
    "tcp, udp, icmp, multiport, conntrack, state, comment, mark, ttl, length, iprange, limit, addrtype";

/// A `-m NAME` being parsed: the model value its options have built so far.
#[derive(Debug, Clone)]
pub(crate) enum Builder {
    Tcp(TcpMatch),
    Udp(UdpMatch),
    Icmp(Option<Neg<IcmpType>>),
    Multiport(Option<MultiportMatch>),
    Conntrack(ConntrackMatch),
    State(Option<Neg<CtStateSet>>),
    Comment(Option<String>),
    Mark(Option<Neg<MarkMask>>),
    Ttl(Option<TtlMatch>),
    Length(Option<Neg<PortRange>>),
    Iprange(IprangeMatch),
    Limit(LimitMatch),
    Addrtype(AddrtypeMatch),
}

impl Builder {
    /// A fresh builder for `-m name`; `None` for a match fastables does not
    /// implement.
    pub(crate) fn by_name(name: &str) -> Option<Builder> {
        Some(match name {
            "tcp" => Builder::Tcp(TcpMatch::default()),
            "udp" => Builder::Udp(UdpMatch::default()),
            "icmp" => Builder::Icmp(None),
            "multiport" => Builder::Multiport(None),
            "conntrack" => Builder::Conntrack(ConntrackMatch::default()),
            "state" => Builder::State(None),
            "comment" => Builder::Comment(None),
            "mark" => Builder::Mark(None),
            "ttl" => Builder::Ttl(None),
            "length" => Builder::Length(None),
            "iprange" => Builder::Iprange(IprangeMatch {
                src: None,
                dst: None,
            }),
            "limit" => Builder::Limit(limit::DEFAULT),
            "addrtype" => Builder::Addrtype(AddrtypeMatch::default()),
            _ => return None,
        })
    }

    /// The match's name, as `-m` takes it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Builder::Tcp(_) => "tcp",
            Builder::Udp(_) => "udp",
            Builder::Icmp(_) => "icmp",
            Builder::Multiport(_) => "multiport",
            Builder::Conntrack(_) => "conntrack",
            Builder::State(_) => "state",
            Builder::Comment(_) => "comment",
            Builder::Mark(_) => "mark",
            Builder::Ttl(_) => "ttl",
            Builder::Length(_) => "length",
            Builder::Iprange(_) => "iprange",
            Builder::Limit(_) => "limit",
            Builder::Addrtype(_) => "addrtype",
        }
    }

    /// The match's options.
    pub(crate) fn options(&self) -> &'static [OptSpec] {
        match self {
            Builder::Tcp(_) => tcp::OPTIONS,
            Builder::Udp(_) => udp::OPTIONS,
            Builder::Icmp(_) => icmp::OPTIONS,
            Builder::Multiport(_) => multiport::OPTIONS,
            Builder::Conntrack(_) => conntrack::OPTIONS,
            Builder::State(_) => state::OPTIONS,
            Builder::Comment(_) => comment::OPTIONS,
            Builder::Mark(_) => mark::OPTIONS,
            Builder::Ttl(_) => ttl::OPTIONS,
            Builder::Length(_) => length::OPTIONS,
            Builder::Iprange(_) => iprange::OPTIONS,
            Builder::Limit(_) => limit::OPTIONS,
            Builder::Addrtype(_) => addrtype::OPTIONS,
        }
    }
}

/// A match on a rule line: its builder and the option ids given so far.
#[derive(Debug, Clone)]
pub(crate) struct MatchParse {
    builder: Builder,
    seen: Vec<u8>,
}

impl MatchParse {
    pub(crate) fn new(builder: Builder) -> MatchParse {
        MatchParse {
            builder,
            seen: Vec::new(),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.builder.name()
    }

    pub(crate) fn options(&self) -> &'static [OptSpec] {
        self.builder.options()
    }

    /// One of the match's options; `proto` is the rule's `-p` so far.
    pub(crate) fn apply(&mut self, opt: &Opt<'_>, proto: Option<Neg<u8>>) -> PResult<()> {
        // multiport checks the protocol given so far, as iptables does.
        if let Builder::Multiport(_) = self.builder {
            multiport::check_proto(proto)?;
        }
        let name = self.builder.name();
        let tok = opt.tok;
        if self.seen.contains(&opt.id) {
            return Err(conflict(
                tok,
                format!("{name}: option `{tok}` can only be used once"),
            ));
        }
        self.seen.push(opt.id);
        let seen = &self.seen;
        let proto = proto.map(|p| p.val);
        match &mut self.builder {
            Builder::Tcp(t) => tcp::parse_option(t, opt, seen),
            Builder::Udp(u) => udp::parse_option(u, opt),
            Builder::Icmp(i) => icmp::parse_option(i, opt),
            Builder::Multiport(m) => multiport::parse_option(m, opt, proto),
            Builder::Conntrack(c) => conntrack::parse_option(c, opt),
            Builder::State(s) => state::parse_option(s, opt),
            Builder::Comment(c) => comment::parse_option(c, opt),
            Builder::Mark(m) => mark::parse_option(m, opt),
            Builder::Ttl(t) => ttl::parse_option(t, opt),
            Builder::Length(l) => length::parse_option(l, opt),
            Builder::Iprange(r) => iprange::parse_option(r, opt),
            Builder::Limit(l) => limit::parse_option(l, opt),
            Builder::Addrtype(a) => addrtype::parse_option(a, opt),
        }
    }

    /// The finished match, checked against the rule's `-p`.
    pub(crate) fn finish(self, proto: Option<Neg<u8>>) -> PResult<Match> {
        let need = Missing(self.builder.name());
        Ok(match self.builder {
            Builder::Tcp(t) => Match::Tcp(tcp::finish(t, proto)?),
            Builder::Udp(u) => Match::Udp(udp::finish(u, proto)?),
            Builder::Icmp(i) => Match::Icmp(icmp::finish(i, proto, need)?),
            Builder::Multiport(m) => Match::Multiport(multiport::finish(m, proto, need)?),
            Builder::Conntrack(c) => Match::Conntrack(conntrack::finish(c, &self.seen, need)?),
            Builder::State(s) => Match::State(s.ok_or_else(|| need.option("--state"))?),
            Builder::Comment(c) => Match::Comment(c.ok_or_else(|| need.option("--comment"))?),
            Builder::Mark(m) => Match::Mark(m.ok_or_else(|| need.option("--mark"))?),
            Builder::Ttl(t) => {
                Match::Ttl(t.ok_or_else(|| need.option("--ttl-eq, --ttl-lt or --ttl-gt"))?)
            }
            Builder::Length(l) => Match::Length(l.ok_or_else(|| need.option("--length"))?),
            Builder::Iprange(r) => Match::Iprange(iprange::finish(r, need)?),
            Builder::Limit(l) => Match::Limit(l),
            Builder::Addrtype(a) => Match::Addrtype(addrtype::finish(a, need)?),
        })
    }
}

/// The error of a match finished without a required option.
#[derive(Clone, Copy)]
pub(crate) struct Missing(&'static str);

impl Missing {
    /// `opt` (or one of the options it lists) must be given.
    pub(crate) fn option(self, opt: &str) -> Problem {
        let name = self.0;
        conflict(
            &format!("-m {name}"),
            format!("{name}: option {opt} must be specified"),
        )
    }
}

/// `m` as `iptables-save` writes it (` -m NAME --option value ...`).
pub(crate) fn save(s: &mut String, m: &Match) {
    match m {
        Match::Tcp(t) => tcp::save(s, t),
        Match::Udp(u) => udp::save(s, u),
        Match::Icmp(i) => icmp::save(s, i),
        Match::Multiport(m) => multiport::save(s, m),
        Match::Conntrack(c) => conntrack::save(s, c),
        Match::State(st) => state::save(s, st),
        Match::Comment(c) => comment::save(s, c),
        Match::Mark(m) => mark::save(s, m),
        Match::Ttl(t) => ttl::save(s, t),
        Match::Length(l) => length::save(s, l),
        Match::Iprange(r) => iprange::save(s, r),
        Match::Limit(l) => limit::save(s, l),
        Match::Addrtype(a) => addrtype::save(s, a),
    }
}

/// `m` as `iptables -L -n` shows it after the addresses (its extension's
/// `print`).
pub(crate) fn list(out: &mut String, m: &Match) {
    match m {
        Match::Tcp(t) => tcp::list(out, t),
        Match::Udp(u) => udp::list(out, u),
        Match::Icmp(i) => icmp::list(out, i),
        Match::Multiport(m) => multiport::list(out, m),
        Match::Conntrack(c) => conntrack::list(out, c),
        Match::State(st) => state::list(out, st),
        Match::Comment(c) => comment::list(out, c),
        Match::Mark(m) => mark::list(out, m),
        Match::Ttl(t) => ttl::list(out, t),
        Match::Length(l) => length::list(out, l),
        Match::Iprange(r) => iprange::list(out, r),
        Match::Limit(l) => limit::list(out, l),
        Match::Addrtype(a) => addrtype::list(out, a),
    }
}

/// Problems with `m` in a built-in chain that the hooks `hooks` (a set of
/// [`crate::validate`]'s hook bits) reach: a match the kernel allows on some
/// hooks only.
pub(crate) fn hook_problems(m: &Match, hooks: u8, problems: &mut Vec<Problem>) {
    if let Match::Addrtype(a) = m {
        addrtype::hook_problems(a, hooks, problems);
    }
}

/// What `m` compiles to: a side-table test evaluated in rule order, or
/// `None` when it tests nothing (a comment).
pub(crate) fn compile(m: &Match, b: &mut RuleBuild<'_>) -> Result<Option<Ext>, CompileError> {
    Ok(Some(match m {
        Match::Comment(_) => return Ok(None),
        Match::Tcp(t) => Ext::Tcp(tcp::compile(t, b)?),
        Match::Udp(u) => Ext::Udp(udp::compile(u, b)?),
        Match::Icmp(i) => Ext::Icmp(icmp::compile(i, b)?),
        Match::Multiport(m) => Ext::Multiport(multiport::compile(m, b)?),
        Match::Conntrack(c) => Ext::Conntrack(Box::new(conntrack::compile(c, b))),
        Match::State(s) => Ext::State(state::compile(s, b)),
        Match::Mark(m) => Ext::Mark(mark::compile(m)),
        Match::Ttl(t) => Ext::Ttl(*t),
        Match::Length(l) => Ext::Length(length::compile(l)),
        Match::Iprange(r) => Ext::Iprange(iprange::compile(r)),
        Match::Limit(l) => Ext::Limit(limit::compile(l, b)?),
        Match::Addrtype(a) => Ext::Addrtype(addrtype::compile(a, b)?),
    }))
}

/// A compiled match of the side table (the matches of a rule that its
/// entry's inline fields do not cover), evaluated in rule order.
#[derive(Debug, Clone)]
pub(crate) enum Ext {
    Tcp(tcp::Compiled),
    Udp(udp::Compiled),
    Icmp(icmp::Compiled),
    Multiport(multiport::Compiled),
    Conntrack(Box<conntrack::Compiled>),
    State(state::Compiled),
    Mark(mark::Compiled),
    Ttl(TtlMatch),
    Length(length::Compiled),
    Iprange(iprange::Compiled),
    Limit(limit::Compiled),
    Addrtype(addrtype::Compiled),
}

impl Ext {
    /// Tests one packet. Kept out of line so that the rule scan in
    /// `CompiledRuleset::run` stays small; `buckets` are the worker's
    /// `-m limit` buckets.
    #[inline(never)]
    pub(crate) fn eval(
        &self,
        ctx: &PacketCtx,
        buckets: &mut [limit::Bucket],
        now_ns: u64,
    ) -> MatchResult {
        match self {
            Ext::Tcp(t) => tcp::eval(t, ctx),
            Ext::Udp(u) => udp::eval(u, ctx),
            Ext::Icmp(i) => icmp::eval(i, ctx),
            Ext::Multiport(m) => multiport::eval(m, ctx),
            Ext::Conntrack(c) => conntrack::eval(c, ctx),
            Ext::State(s) => state::eval(s, ctx),
            Ext::Mark(m) => mark::eval(m, ctx),
            Ext::Ttl(t) => ttl::eval(t, ctx),
            Ext::Length(l) => length::eval(l, ctx),
            Ext::Iprange(r) => iprange::eval(r, ctx),
            Ext::Limit(l) => limit::eval(l, buckets, now_ns),
            Ext::Addrtype(a) => addrtype::eval(a, ctx),
        }
    }

    /// Whether it answers the same for every packet (not a fragment) of one
    /// direction of one connection in the same conntrack state, given the
    /// same interfaces and packet mark (`CompiledRuleset::flow_invariant`).
    pub(crate) fn flow_invariant(&self) -> bool {
        match self {
            Ext::Tcp(t) => tcp::flow_invariant(t),
            Ext::Conntrack(c) => conntrack::flow_invariant(c),
            Ext::Udp(_)
            | Ext::Icmp(_)
            | Ext::Multiport(_)
            | Ext::State(_)
            | Ext::Mark(_)
            | Ext::Iprange(_)
            | Ext::Addrtype(_) => true,
            // The IP header's TTL and length, and time.
            Ext::Ttl(_) | Ext::Length(_) | Ext::Limit(_) => false,
        }
    }
}

/// What one match says about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MatchResult {
    /// It matches: go on with the rule's next match.
    Yes,
    /// It does not: the rule does not match.
    No,
    /// The packet must be dropped (the kernel's `hotdrop`).
    Hotdrop,
}

impl From<bool> for MatchResult {
    #[inline(always)]
    fn from(matched: bool) -> MatchResult {
        if matched {
            MatchResult::Yes
        } else {
            MatchResult::No
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers several matches share

/// The kernel's common preamble of tcp/udp/icmp/multiport: no match on a
/// fragment (hotdrop for TCP at offset 1), hotdrop when the header is truncated.
#[inline(always)]
fn l4_guard(ctx: &PacketCtx, tcp: bool) -> Option<MatchResult> {
    if ctx.fragment {
        return Some(if tcp && ctx.frag_off == 1 {
            MatchResult::Hotdrop
        } else {
            MatchResult::No
        });
    }
    if !ctx.has_l4 {
        return Some(MatchResult::Hotdrop);
    }
    None
}

/// A `-m tcp`/`-m udp` port test as iptables-nft stores it: as a range, `! 0:N`
/// printed as `N+1:65535` and a full range as no test at all. `! 0:65535`
/// (never matches) is kept; the printer leaves it out as iptables-save does.
fn nft_port(inv: bool, r: PortRange) -> Option<Neg<PortRange>> {
    if !inv && r.lo == 0 && r.hi == 65535 {
        return None;
    }
    if inv && r.lo == 0 && r.hi > 0 && r.hi < 65535 {
        return Some(Neg {
            inv: false,
            val: PortRange {
                lo: r.hi + 1,
                hi: 65535,
            },
        });
    }
    Some(Neg { inv, val: r })
}

/// A port test that iptables-nft turns into a payload expression: anything but
/// the plain full range `0:65535`, which it leaves out (so that only the xtables
/// match remains, which the kernel refuses after a negated `-p`).
fn payload_port(p: &Option<Neg<PortRange>>) -> bool {
    p.is_some_and(|p| p.inv || p.val.lo != 0 || p.val.hi != 65535)
}

/// libxt_tcp's `print_ports` (`iptables -L`): nothing for a full range that
/// is not negated.
fn list_ports(out: &mut String, name: &str, p: &Option<Neg<PortRange>>) {
    let Some(p) = p else { return };
    let (lo, hi, inv) = (p.val.lo, p.val.hi, if p.inv { "!" } else { "" });
    if lo == 0 && hi == 0xffff && !p.inv {
        return;
    }
    if lo == hi {
        let _ = write!(out, " {name}:{inv}{lo}");
    } else {
        let _ = write!(out, " {name}s:{inv}{lo}:{hi}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    /// [`SUPPORTED`] lists exactly the matches [`Builder::by_name`] knows.
    #[test]
    fn supported_lists_the_registry() {
        for name in SUPPORTED.split(", ") {
            let b = Builder::by_name(name).expect(name);
            assert_eq!(b.name(), name);
        }
        assert!(Builder::by_name("nosuch").is_none());
    }

    #[test]
    fn udp_icmp_multiport_hotdrop_and_fragments() {
        let udp = Rule {
            proto: Some(pos(17)),
            matches: vec![Match::Udp(UdpMatch {
                dport: Some(pos(port_range(53, 53))),
                ..Default::default()
            })],
            ..rule(Target::Accept)
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 3333, 53);
        p.proto = 17;
        assert!(hit(udp.clone(), &p));
        p.dport = 54;
        assert!(!hit(udp.clone(), &p));
        p.dport = 53;
        let rs = filter_input(vec![udp, rule(Target::Accept)]);
        let mut t = Loaded::new(&rs);
        let mut f = p;
        f.set_frag_offset(1);
        assert_eq!(
            t.input(&f),
            Verdict::Accept,
            "udp fragment: no match, no drop"
        );
        let mut short = p;
        short.has_l4 = false;
        assert_eq!(t.input(&short), Verdict::Drop, "udp tinygram hotdrop");

        let icmp = |ty: u8, lo: u8, hi: u8, inv: bool| Rule {
            proto: Some(pos(1)),
            matches: vec![Match::Icmp(Neg {
                inv,
                val: IcmpType {
                    ty,
                    code_lo: lo,
                    code_hi: hi,
                },
            })],
            ..rule(Target::Accept)
        };
        let mut e = PacketCtx::new();
        e.proto = 1;
        e.has_l4 = true;
        e.icmp_type = 3;
        e.icmp_code = 4;
        assert!(hit(icmp(3, 0, 255, false), &e));
        assert!(hit(icmp(3, 4, 4, false), &e));
        assert!(!hit(icmp(3, 3, 3, false), &e));
        assert!(hit(icmp(3, 3, 3, true), &e));
        assert!(!hit(icmp(8, 0, 255, false), &e));
        assert!(hit(icmp(255, 0, 255, false), &e));
        assert!(!hit(icmp(255, 0, 255, true), &e));
        let mut et = e;
        et.has_l4 = false;
        let mut t = Loaded::new(&filter_input(vec![
            icmp(8, 0, 255, false),
            rule(Target::Accept),
        ]));
        assert_eq!(t.input(&et), Verdict::Drop);

        let mp = |dir: MultiportDir, inv: bool, ports: Vec<PortRange>| Rule {
            proto: Some(pos(6)),
            matches: vec![Match::Multiport(MultiportMatch { dir, inv, ports })],
            ..rule(Target::Accept)
        };
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 5000, 443);
        let ps = vec![port_range(22, 22), port_range(80, 80), port_range(440, 450)];
        assert!(hit(mp(MultiportDir::Destination, false, ps.clone()), &p));
        assert!(!hit(mp(MultiportDir::Destination, true, ps.clone()), &p));
        assert!(!hit(mp(MultiportDir::Source, false, ps.clone()), &p));
        assert!(hit(mp(MultiportDir::Source, true, ps.clone()), &p));
        assert!(hit(
            mp(MultiportDir::Either, false, vec![port_range(4000, 5000)]),
            &p
        ));
        assert!(!hit(
            mp(
                MultiportDir::Either,
                false,
                vec![port_range(1, 442), port_range(444, 4999)]
            ),
            &p
        ));
        let mut fr = p;
        fr.set_frag_offset(3);
        assert!(!hit(mp(MultiportDir::Source, true, ps.clone()), &fr));
        let mut t = Loaded::new(&filter_input(vec![
            mp(MultiportDir::Source, true, ps),
            rule(Target::Accept),
        ]));
        let mut short = p;
        short.has_l4 = false;
        assert_eq!(t.input(&short), Verdict::Drop);
    }

    #[test]
    fn state_comment_mark_ttl_length_iprange_addrtype() {
        use CtStateSet as S;
        let mut p = tcp_pkt([10, 0, 0, 5], [10, 0, 1, 9], 1, 2);
        p.ct = tracked(S::NEW);
        p.ct.status = CtStatusSet::SRC_NAT;
        let state = |inv: bool, b: u8| {
            with_matches(vec![Match::State(Neg {
                inv,
                val: CtStateSet(b),
            })])
        };
        assert!(hit(state(false, S::NEW), &p));
        assert!(!hit(state(true, S::NEW), &p));
        p.ct = CtCtx::untracked();
        assert!(hit(state(false, S::UNTRACKED), &p));
        assert!(!hit(state(false, S::INVALID), &p));

        assert!(hit(with_matches(vec![Match::Comment("hello".into())]), &p));

        p.mark = 0x1234;
        let mark = |inv, value, mask| {
            with_matches(vec![Match::Mark(Neg {
                inv,
                val: MarkMask { value, mask },
            })])
        };
        assert!(hit(mark(false, 0x1234, 0xffff_ffff), &p));
        assert!(hit(mark(false, 0x30, 0xf0), &p));
        assert!(!hit(mark(false, 0x20, 0xf0), &p));
        assert!(hit(mark(true, 0x20, 0xf0), &p));

        p.ttl = 64;
        let ttl = |t| with_matches(vec![Match::Ttl(t)]);
        assert!(hit(ttl(TtlMatch::Eq(64)), &p));
        assert!(!hit(ttl(TtlMatch::Ne(64)), &p));
        assert!(hit(ttl(TtlMatch::Lt(65)), &p));
        assert!(!hit(ttl(TtlMatch::Lt(64)), &p));
        assert!(hit(ttl(TtlMatch::Gt(63)), &p));
        assert!(!hit(ttl(TtlMatch::Gt(64)), &p));

        p.len = 1500;
        let len = |n| with_matches(vec![Match::Length(n)]);
        assert!(hit(len(pos(port_range(1000, 1500))), &p));
        assert!(!hit(len(pos(port_range(0, 1499))), &p));
        assert!(hit(len(neg(port_range(0, 1499))), &p));

        let a = Ipv4Addr::new;
        let ipr = |src, dst| with_matches(vec![Match::Iprange(IprangeMatch { src, dst })]);
        assert!(hit(
            ipr(Some(pos((a(10, 0, 0, 1), a(10, 0, 0, 5)))), None),
            &p
        ));
        assert!(!hit(
            ipr(Some(pos((a(10, 0, 0, 6), a(10, 0, 0, 9)))), None),
            &p
        ));
        assert!(hit(
            ipr(Some(neg((a(10, 0, 0, 6), a(10, 0, 0, 9)))), None),
            &p
        ));
        assert!(!hit(
            ipr(
                Some(pos((a(10, 0, 0, 1), a(10, 0, 0, 5)))),
                Some(neg((a(10, 0, 1, 0), a(10, 0, 1, 255))))
            ),
            &p
        ));

        p.src_type = AddrTypeSet::UNICAST;
        p.dst_type = AddrTypeSet::LOCAL;
        let at = |src: Option<Neg<u16>>, dst: Option<Neg<u16>>| {
            with_matches(vec![Match::Addrtype(AddrtypeMatch {
                src: src.map(|n| Neg {
                    inv: n.inv,
                    val: AddrTypeSet(n.val),
                }),
                dst: dst.map(|n| Neg {
                    inv: n.inv,
                    val: AddrTypeSet(n.val),
                }),
                ..Default::default()
            })])
        };
        assert!(hit(at(None, Some(pos(AddrTypeSet::LOCAL))), &p));
        assert!(hit(
            at(None, Some(pos(AddrTypeSet::LOCAL | AddrTypeSet::BROADCAST))),
            &p
        ));
        assert!(!hit(at(None, Some(neg(AddrTypeSet::LOCAL))), &p));
        assert!(!hit(at(Some(pos(AddrTypeSet::LOCAL)), None), &p));
        assert!(hit(
            at(Some(neg(AddrTypeSet::LOCAL)), Some(pos(AddrTypeSet::LOCAL))),
            &p
        ));
        assert!(
            Loaded::new(&filter_input(vec![at(None, Some(pos(1)))]))
                .c
                .needs()
                .addrtype
        );
        let bad = with_matches(vec![Match::Addrtype(AddrtypeMatch {
            dst: Some(pos(AddrTypeSet(AddrTypeSet::LOCAL))),
            limit_iface_in: true,
            ..Default::default()
        })]);
        let err = CompiledRuleset::compile(&filter_input(vec![bad]), IFACES).unwrap_err();
        assert_eq!(err, CompileError::AddrtypeLimitIface { line: 7 });
        assert!(err.to_string().contains("line 7"));
    }
}
