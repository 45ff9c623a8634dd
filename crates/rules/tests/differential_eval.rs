//! Differential test: the compiled evaluator against the naive reference
//! interpreter (`eval_ref`), on random rulesets and random packets. Both must
//! give the same verdicts, the same packet context afterwards (effects, mark,
//! TTL, conntrack mark) and the same counters.

mod eval_ref;

use std::net::Ipv4Addr;

use eval_ref::{RefRuleset, RefState};
use fastables_rules::compile::{CompileOptions, CompiledRuleset, Flavor, RuleState};
use fastables_rules::ctx::{CtCtx, PacketCtx, Verdict};
use fastables_rules::model::*;
use proptest::prelude::*;

const IFACES: &[&str] = &["eth0", "eth1", "veth0", "veth1"];
const NUSER: usize = 3;

fn neg<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Neg<T>> {
    (prop::bool::weighted(0.25), s).prop_map(|(inv, val)| Neg { inv, val })
}

fn net() -> impl Strategy<Value = Ipv4Net> {
    let prefix = prop_oneof![
        Just(([10, 0, 0, 0], 8)),
        Just(([10, 0, 0, 0], 24)),
        Just(([10, 0, 0, 1], 32)),
        Just(([10, 0, 1, 0], 24)),
        Just(([192, 168, 0, 0], 16)),
        Just(([0, 0, 0, 0], 0)),
    ]
    .prop_map(|(a, len)| Ipv4Net::prefix(Ipv4Addr::from(a), len));
    // Non-contiguous masks, as `-s 10.0.0.0/255.0.255.0` gives.
    let dotted = prop_oneof![
        Just(([10, 0, 0, 0], [255, 0, 255, 0])),
        Just(([0, 0, 0, 1], [0, 0, 0, 255])),
        Just(([0, 0, 1, 0], [0, 255, 255, 0])),
    ]
    .prop_map(|(a, m)| Ipv4Net {
        addr: Ipv4Addr::from(a),
        mask: u32::from(Ipv4Addr::from(m)),
    });
    prop_oneof![4 => prefix, 1 => dotted]
}

fn addr() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just([10, 0, 0, 1]),
        Just([10, 0, 0, 2]),
        Just([10, 0, 1, 5]),
        Just([192, 168, 1, 1]),
        Just([8, 8, 8, 8]),
    ]
    .prop_map(|a| u32::from(Ipv4Addr::from(a)))
}

fn prange() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        Just((22, 22)),
        Just((80, 80)),
        Just((1000, 2000)),
        Just((0, 1023)),
        Just((53, 53)),
    ]
    .prop_map(|(lo, hi)| PortRange { lo, hi })
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(22u16), Just(53), Just(80), Just(1500), Just(40000)]
}

fn iface() -> impl Strategy<Value = IfaceName> {
    prop_oneof![
        Just("eth0"),
        Just("eth1"),
        Just("eth+"),
        Just("veth+"),
        Just("wlan0"),
        Just("+")
    ]
    .prop_map(|s| IfaceName(s.to_string()))
}

fn tcp_match() -> impl Strategy<Value = TcpMatch> {
    (
        prop::option::of(neg(prange())),
        prop::option::of(neg(prange())),
        prop::option::of(neg((any::<u8>(), any::<u8>()).prop_map(|(m, c)| {
            TcpFlags {
                mask: m,
                comp: c & m,
            }
        }))),
        prop::option::weighted(
            0.2,
            neg(prop_oneof![Just(2u8), Just(4), Just(8), Just(200)]),
        ),
    )
        .prop_map(|(sport, dport, flags, option)| TcpMatch {
            sport,
            dport,
            flags,
            option,
        })
}

fn ctstate_bits() -> impl Strategy<Value = u8> {
    (1u8..0x80).prop_map(|b| b & 0x7f)
}

fn generic_match() -> impl Strategy<Value = Match> {
    prop_oneof![
        (
            prop::option::of(neg(ctstate_bits().prop_map(CtStateSet))),
            prop::option::of(neg((0u32..64).prop_map(CtStatusSet))),
            prop::option::of(neg(net())),
            prop::option::of(neg(net())),
            prop::option::of(neg(prange())),
        )
            .prop_map(|(state, status, orig_src, repl_dst, orig_dst_port)| {
                Match::Conntrack(ConntrackMatch {
                    state,
                    status,
                    orig_src,
                    repl_dst,
                    orig_dst_port,
                    ..Default::default()
                })
            }),
        neg((1u8..32).prop_map(CtStateSet)).prop_map(Match::State),
        Just(Match::Comment("c".into())),
        neg((0u32..4, 0u32..4).prop_map(|(v, m)| MarkMask {
            value: v & m,
            mask: m
        }))
        .prop_map(Match::Mark),
        prop_oneof![
            (0u8..3).prop_map(TtlMatch::Eq),
            (0u8..3).prop_map(TtlMatch::Ne),
            (0u8..70).prop_map(TtlMatch::Lt),
            (0u8..70).prop_map(TtlMatch::Gt),
        ]
        .prop_map(Match::Ttl),
        neg(prop_oneof![
            Just((0u16, 60u16)),
            Just((61, 1500)),
            Just((40, 40))
        ])
        .prop_map(|n| Match::Length(Neg {
            inv: n.inv,
            val: PortRange {
                lo: n.val.0,
                hi: n.val.1
            }
        })),
        (
            prop::option::of(neg(Just((
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 200)
            )))),
            prop::option::of(neg(Just((
                Ipv4Addr::new(192, 168, 0, 0),
                Ipv4Addr::new(192, 168, 255, 255)
            )))),
        )
            .prop_map(|(src, dst)| Match::Iprange(IprangeMatch { src, dst })),
        (
            1u32..5,
            prop_oneof![Just(LimitUnit::Second), Just(LimitUnit::Minute)],
            1u32..4
        )
            .prop_map(|(rate, unit, burst)| Match::Limit(LimitMatch { rate, unit, burst })),
        (
            prop::option::of(neg(1u16..16)),
            prop::option::of(neg(1u16..16))
        )
            .prop_map(|(s, d)| {
                Match::Addrtype(AddrtypeMatch {
                    src: s.map(|n| Neg {
                        inv: n.inv,
                        val: AddrTypeSet(n.val),
                    }),
                    dst: d.map(|n| Neg {
                        inv: n.inv,
                        val: AddrTypeSet(n.val),
                    }),
                    ..Default::default()
                })
            }),
    ]
}

/// Protocol plus its protocol matches.
fn proto_and_matches() -> impl Strategy<Value = (Option<Neg<u8>>, Vec<Match>)> {
    prop_oneof![
        4 => Just((None, vec![])),
        1 => Just((Some(Neg { inv: true, val: 6 }), vec![])),
        1 => tcp_match().prop_map(|t| (Some(Neg { inv: false, val: 6 }), vec![Match::Tcp(t)])),
        1 => (prop::option::of(neg(prange())), prop::option::of(neg(prange()))).prop_map(|(sport, dport)| (
            Some(Neg { inv: false, val: 17 }),
            vec![Match::Udp(UdpMatch { sport, dport })]
        )),
        1 => (any::<bool>(), prop_oneof![Just(0u8), Just(3), Just(8), Just(255)], 0u8..3).prop_map(|(inv, ty, c)| (
            Some(Neg { inv: false, val: 1 }),
            vec![Match::Icmp(Neg { inv, val: IcmpType { ty, code_lo: c, code_hi: c + 1 } })]
        )),
        1 => (
            prop_oneof![Just(6u8), Just(17)],
            prop_oneof![
                Just(MultiportDir::Source),
                Just(MultiportDir::Destination),
                Just(MultiportDir::Either)
            ],
            any::<bool>(),
            prop::collection::vec(prange(), 1..4)
        )
            .prop_map(|(p, dir, inv, ports)| (
                Some(Neg { inv: false, val: p }),
                vec![Match::Multiport(MultiportMatch { dir, inv, ports })]
            )),
    ]
}

/// A target; `chain_pos` limits jumps to user chains after the current one.
fn target(min_user: usize) -> BoxedStrategy<Target> {
    let opts: Vec<BoxedStrategy<Target>> = vec![
        Just(Target::None).boxed(),
        Just(Target::Accept).boxed(),
        Just(Target::Drop).boxed(),
        Just(Target::Return).boxed(),
        Just(Target::Reject(RejectWith::IcmpPortUnreachable)).boxed(),
        Just(Target::Log(LogTarget::default())).boxed(),
        (0u32..4, 0u32..4)
            .prop_map(|(value, mask)| Target::Mark(XMark { value, mask }))
            .boxed(),
        prop_oneof![
            (0u32..4, 0u32..4).prop_map(|(value, mask)| ConnmarkTarget::Set(XMark { value, mask })),
            (0u32..4, 0u32..4).prop_map(|(nfmask, ctmask)| ConnmarkTarget::Save { nfmask, ctmask }),
            (0u32..4, 0u32..4)
                .prop_map(|(nfmask, ctmask)| ConnmarkTarget::Restore { nfmask, ctmask }),
        ]
        .prop_map(Target::Connmark)
        .boxed(),
        prop_oneof![
            any::<u8>().prop_map(TtlTarget::Set),
            any::<u8>().prop_map(TtlTarget::Inc),
            any::<u8>().prop_map(TtlTarget::Dec),
        ]
        .prop_map(Target::Ttl)
        .boxed(),
        Just(Target::Notrack).boxed(),
        Just(Target::CtNotrack).boxed(),
        Just(Target::Tcpmss(TcpmssTarget::SetMss(1400))).boxed(),
        Just(Target::Masquerade {
            ports: None,
            flags: NatFlags::default(),
        })
        .boxed(),
    ];
    let mut weighted: Vec<(u32, BoxedStrategy<Target>)> =
        opts.into_iter().map(|s| (1, s)).collect();
    if min_user < NUSER {
        let names = (min_user..NUSER)
            .map(|i| format!("u{i}"))
            .collect::<Vec<_>>();
        let n2 = names.clone();
        weighted.push((
            4,
            prop::sample::select(names).prop_map(Target::Jump).boxed(),
        ));
        weighted.push((3, prop::sample::select(n2).prop_map(Target::Goto).boxed()));
    }
    prop::strategy::Union::new_weighted(weighted).boxed()
}

fn rule(min_user: usize) -> impl Strategy<Value = Rule> {
    (
        prop::option::weighted(0.4, neg(net())),
        prop::option::weighted(0.3, neg(net())),
        prop::option::weighted(0.3, neg(iface())),
        prop::option::weighted(0.3, neg(iface())),
        proto_and_matches(),
        prop::option::weighted(0.1, any::<bool>()),
        prop_oneof![
            4 => Just(vec![]),
            2 => prop::collection::vec(generic_match(), 1..2),
            1 => prop::collection::vec(generic_match(), 2..4),
        ],
        any::<bool>(),
        target(min_user),
    )
        .prop_map(
            |(src, dst, in_iface, out_iface, (proto, pm), fragment, gm, pm_first, target)| {
                let matches = if pm_first {
                    pm.into_iter().chain(gm).collect()
                } else {
                    gm.into_iter().chain(pm).collect()
                };
                Rule {
                    src,
                    dst,
                    in_iface,
                    out_iface,
                    proto,
                    fragment,
                    matches,
                    target,
                    counters: Counters::default(),
                    line: 0,
                }
            },
        )
}

fn rules(min_user: usize) -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec(rule(min_user), 0..5)
}

fn table_rules(table: Table) -> impl Strategy<Value = TableRules> {
    let hooks = table.builtin_hooks();
    (
        prop::collection::vec((any::<bool>(), rules(0)), hooks.len()),
        rules(1),
        rules(2),
        rules(3),
    )
        .prop_map(move |(builtins, u0, u1, u2)| {
            let mut chains: Vec<Chain> = hooks
                .iter()
                .zip(builtins)
                .map(|(h, (drop, rules))| Chain {
                    name: h.chain_name().to_string(),
                    policy: Some(if drop { Policy::Drop } else { Policy::Accept }),
                    counters: Counters::default(),
                    rules,
                })
                .collect();
            for (i, rules) in [u0, u1, u2].into_iter().enumerate() {
                chains.push(Chain {
                    name: format!("u{i}"),
                    policy: None,
                    counters: Counters::default(),
                    rules,
                });
            }
            let mut line = 1;
            for c in &mut chains {
                for r in &mut c.rules {
                    r.line = line;
                    line += 1;
                }
            }
            TableRules { table, chains }
        })
}

fn ruleset() -> impl Strategy<Value = Ruleset> {
    (
        prop::option::of(table_rules(Table::Raw)),
        prop::option::of(table_rules(Table::Mangle)),
        prop::option::of(table_rules(Table::Nat)),
        table_rules(Table::Filter),
    )
        .prop_map(|(r, m, n, f)| Ruleset {
            tables: [r, m, n, Some(f)].into_iter().flatten().collect(),
        })
}

fn ifidx() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![Just(None), (0u8..4).prop_map(Some), Just(Some(9))]
}

fn conntrack_ctx() -> impl Strategy<Value = CtCtx> {
    (
        prop_oneof![
            Just(CtStateSet::INVALID),
            Just(CtStateSet::NEW),
            Just(CtStateSet::ESTABLISHED),
            Just(CtStateSet::RELATED),
            Just(CtStateSet::UNTRACKED)
        ],
        0u8..4,
        0u32..64,
        0u32..4,
        addr(),
        addr(),
        port(),
        any::<bool>(),
    )
        .prop_map(|(state, nat, status, mark, a, b, p, has_ports)| {
            let tracked =
                state & (CtStateSet::NEW | CtStateSet::ESTABLISHED | CtStateSet::RELATED) != 0;
            let nat_bits = if tracked { (nat & 3) << 5 } else { 0 };
            CtCtx {
                state: state | nat_bits,
                status,
                mark,
                orig_src: a,
                orig_dst: b,
                repl_src: b,
                repl_dst: a,
                orig_sport: 40000,
                orig_dport: p,
                has_ports,
            }
        })
}

fn packet() -> impl Strategy<Value = PacketCtx> {
    (
        (
            addr(),
            addr(),
            prop_oneof![Just(6u8), Just(17), Just(1)],
            prop_oneof![4 => Just(0u16), 1 => Just(1), 1 => Just(7)],
        ),
        (
            prop_oneof![Just(0u8), Just(1), Just(64), Just(255)],
            prop_oneof![Just(40u16), Just(60), Just(1500)],
            prop::bool::weighted(0.9),
        ),
        (
            port(),
            port(),
            any::<u8>(),
            prop::sample::select(vec![2u8, 4, 8, 200]),
            prop::bool::weighted(0.05),
        ),
        (
            prop_oneof![Just(0u8), Just(3), Just(8)],
            0u8..4,
            ifidx(),
            ifidx(),
        ),
        (1u16..16, 1u16..16, 0u32..4, conntrack_ctx()),
    )
        .prop_map(
            |(
                (src, dst, proto, frag),
                (ttl, len, has_l4),
                (sport, dport, tcp_flags, opt, bad),
                (it, ic, in_if, out_if),
                (st, dt, mark, ct),
            )| {
                let mut p = PacketCtx::new();
                p.src = src;
                p.dst = dst;
                p.proto = proto;
                p.set_frag_offset(frag);
                p.ttl = ttl;
                p.len = len;
                p.has_l4 = has_l4 && frag == 0;
                p.sport = sport;
                p.dport = dport;
                p.tcp_flags = tcp_flags;
                p.tcp_options[usize::from(opt / 64)] |= 1 << (opt % 64);
                p.tcp_options_bad = bad;
                p.icmp_type = it;
                p.icmp_code = ic;
                p.in_if = in_if;
                p.out_if = out_if;
                p.src_type = 1 << (st % 12);
                p.dst_type = 1 << (dt % 12);
                p.mark = mark;
                p.ct = ct;
                p
            },
        )
}

fn hook_for(table: Table, k: usize) -> Hook {
    let hs = table.builtin_hooks();
    hs[k % hs.len()]
}

/// A verdict with rule ids replaced by (table, chain, index).
fn norm_verdict(v: Verdict, info: impl Fn(u32) -> (Table, String, u32)) -> String {
    match v {
        Verdict::Nat(id) => format!("Nat{:?}", info(id)),
        v => format!("{v:?}"),
    }
}

fn norm_ctx(p: &PacketCtx, info: impl Fn(u32) -> (Table, String, u32)) -> String {
    let mut q = *p;
    let logs: Vec<_> = q.effects.logs[..usize::from(q.effects.log_count)]
        .iter()
        .map(|&id| info(id))
        .collect();
    q.effects.logs = [0; 4];
    format!("{q:?} logs={logs:?}")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn compiled_equals_reference(
        rs in ruleset(),
        pkts in prop::collection::vec(
            (packet(), 0usize..4, 0usize..5, prop_oneof![Just(0u64), 0u64..50_000_000, 0u64..3_000_000_000]),
            1..40,
        ),
        nft in any::<bool>(),
    ) {
        let flavor = if nft { Flavor::Nft } else { Flavor::Xtables };
        let c = CompiledRuleset::compile_with(&rs, IFACES, CompileOptions { flavor })
            .expect("generated rulesets compile");
        let r = RefRuleset::with_flavor(&rs, IFACES, flavor);
        let mut cs = RuleState::new(&c);
        let mut st = RefState::new(&r);
        let ci = |id: u32| { let i = c.rule_info(id); (i.table, i.chain.to_string(), i.index) };
        let ri = |id: u32| { let i = r.rule_info(id); (i.table, i.chain.to_string(), i.index) };
        let mut now = 1_000_000_000u64;
        for (p, t, h, dt) in pkts {
            now += dt;
            let table = Table::ALL[t];
            let hook = hook_for(table, h);
            let mut pc = p;
            let mut pr = p;
            let vc = c.run(table, hook, &mut pc, &mut cs, now);
            let vr = r.run(table, hook, &mut pr, &mut st, now);
            prop_assert_eq!(norm_verdict(vc, ci), norm_verdict(vr, ri), "table {:?} hook {:?} packet {:?}", table, hook, p);
            // `effects.last` (the deciding entry, for tracing) is kept by
            // the compiled evaluator only.
            pc.effects.last = pr.effects.last;
            prop_assert_eq!(norm_ctx(&pc, ci), norm_ctx(&pr, ri));
        }
        prop_assert_eq!(c.counters_into(&rs, &[&cs]), r.counters_into(&st));
    }
}
