//! Helpers of the unit tests that compile and run rules (`compile/`,
//! `matches/`, `targets/`): rule and packet builders, and a compiled ruleset
//! with one worker's state. A test module takes them with
//! `use crate::testutil::*;`, which also brings the types they use.

pub(crate) use crate::compile::*;
pub(crate) use crate::ctx::{tcp_option_kinds, CtCtx, PacketCtx, Verdict};
pub(crate) use crate::model::*;
pub(crate) use std::net::Ipv4Addr;

pub(crate) const IFACES: &[&str] = &["eth0", "eth1", "docker0", "veth1a"];

pub(crate) fn rule(target: Target) -> Rule {
    Rule {
        src: None,
        dst: None,
        in_iface: None,
        out_iface: None,
        proto: None,
        fragment: None,
        matches: vec![],
        target,
        counters: Counters::default(),
        line: 7,
    }
}

pub(crate) fn tcp_rule(target: Target, t: TcpMatch) -> Rule {
    Rule {
        proto: Some(Neg { inv: false, val: 6 }),
        matches: vec![Match::Tcp(t)],
        ..rule(target)
    }
}

pub(crate) fn chain(name: &str, policy: Option<Policy>, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.into(),
        policy,
        counters: Counters::default(),
        rules,
    }
}

/// A ruleset with one table: built-in chains `builtins` (others empty,
/// ACCEPT), plus user chains.
pub(crate) fn table(
    t: Table,
    builtins: Vec<(Hook, Policy, Vec<Rule>)>,
    users: Vec<(&str, Vec<Rule>)>,
) -> Ruleset {
    let mut chains = Vec::new();
    for h in t.builtin_hooks() {
        match builtins.iter().find(|b| b.0 == *h) {
            Some((_, p, r)) => chains.push(chain(h.chain_name(), Some(*p), r.clone())),
            None => chains.push(chain(h.chain_name(), Some(Policy::Accept), vec![])),
        }
    }
    for (n, r) in users {
        chains.push(chain(n, None, r));
    }
    Ruleset {
        tables: vec![TableRules { table: t, chains }],
    }
}

pub(crate) fn filter_input(rules: Vec<Rule>) -> Ruleset {
    table(
        Table::Filter,
        vec![(Hook::Input, Policy::Drop, rules)],
        vec![],
    )
}

pub(crate) fn net(a: [u8; 4], len: u8) -> Ipv4Net {
    Ipv4Net::prefix(Ipv4Addr::from(a), len)
}

pub(crate) fn pos<T>(val: T) -> Neg<T> {
    Neg { inv: false, val }
}

pub(crate) fn neg<T>(val: T) -> Neg<T> {
    Neg { inv: true, val }
}

pub(crate) fn port_range(lo: u16, hi: u16) -> PortRange {
    PortRange { lo, hi }
}

pub(crate) fn ipv4(a: [u8; 4]) -> u32 {
    u32::from(Ipv4Addr::from(a))
}

pub(crate) fn tcp_pkt(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> PacketCtx {
    let mut p = PacketCtx::new();
    p.src = ipv4(src);
    p.dst = ipv4(dst);
    p.proto = 6;
    p.ttl = 64;
    p.len = 60;
    p.has_l4 = true;
    p.sport = sport;
    p.dport = dport;
    p.tcp_flags = 0x02;
    p.in_if = Some(0);
    p
}

pub(crate) fn tracked(state: u8) -> CtCtx {
    CtCtx {
        state,
        orig_src: ipv4([10, 0, 0, 1]),
        orig_dst: ipv4([192, 168, 0, 2]),
        repl_src: ipv4([192, 168, 0, 2]),
        repl_dst: ipv4([10, 0, 2, 15]),
        orig_sport: 40000,
        orig_dport: 80,
        has_ports: true,
        ..CtCtx::default()
    }
}

pub(crate) struct Loaded {
    pub(crate) c: CompiledRuleset,
    pub(crate) s: RuleState,
}

impl Loaded {
    pub(crate) fn new(rs: &Ruleset) -> Loaded {
        let c = CompiledRuleset::compile(rs, IFACES).expect("compile");
        let s = RuleState::new(&c);
        Loaded { c, s }
    }
    pub(crate) fn run(&mut self, t: Table, h: Hook, p: &mut PacketCtx) -> Verdict {
        self.c.run(t, h, p, &mut self.s, 0)
    }
    pub(crate) fn input(&mut self, p: &PacketCtx) -> Verdict {
        let mut p = *p;
        self.run(Table::Filter, Hook::Input, &mut p)
    }
    pub(crate) fn counters(&self, rs: &Ruleset) -> Ruleset {
        self.c.counters_into(rs, &[&self.s])
    }
}

/// Whether a single-rule ACCEPT ruleset (policy DROP) accepts `p`.
pub(crate) fn hit(r: Rule, p: &PacketCtx) -> bool {
    let mut t = Loaded::new(&filter_input(vec![r]));
    match t.input(p) {
        Verdict::Accept => true,
        Verdict::Drop => false,
        v => panic!("unexpected {v:?}"),
    }
}

pub(crate) fn with_matches(ms: Vec<Match>) -> Rule {
    Rule {
        matches: ms,
        ..rule(Target::Accept)
    }
}
