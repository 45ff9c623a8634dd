//! Per-packet rule evaluation time (`CompiledRuleset::run`).
//!
//! Rulesets of 10, 100 and 1000 filter rules (address + port matches, some
//! interface and UDP rules, the matching rule near the end), and 1000 rules
//! spread over 10 user chains reached by jumps.
//!
//! Run: `cargo bench -p fastables-benches --bench rules -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastables_packet::ipv4::PROTO_TCP;
use fastables_rules::compile::{CompiledRuleset, RuleState};
use fastables_rules::ctx::{PacketCtx, Verdict};
use fastables_rules::model::*;

const IFACES: &[&str] = &["eth0", "eth1", "docker0"];

fn base_rule(target: Target) -> Rule {
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
        line: 0,
    }
}

/// Rule `i` of a realistic list: `-s 10.(i/256).(i%256).0/24 [-i eth1] -p tcp|udp --dport P -j ACCEPT`.
fn filler(i: usize) -> Rule {
    let udp = i % 5 == 4;
    let port = PortRange {
        lo: 1000 + (i % 500) as u16,
        hi: 1000 + (i % 500) as u16,
    };
    let ports = Some(Neg {
        inv: false,
        val: port,
    });
    Rule {
        src: Some(Neg {
            inv: false,
            val: Ipv4Net {
                addr: Ipv4Addr::new(10, (i / 256) as u8, (i % 256) as u8, 0),
                mask: 0xffff_ff00,
            },
        }),
        in_iface: i.is_multiple_of(3).then(|| Neg {
            inv: false,
            val: IfaceName("eth1".into()),
        }),
        proto: Some(Neg {
            inv: false,
            val: if udp { 17 } else { 6 },
        }),
        matches: vec![if udp {
            Match::Udp(UdpMatch {
                dport: ports,
                ..Default::default()
            })
        } else {
            Match::Tcp(TcpMatch {
                dport: ports,
                ..Default::default()
            })
        }],
        ..base_rule(Target::Accept)
    }
}

/// The rule the benchmark packet matches.
fn hit_rule() -> Rule {
    Rule {
        src: Some(Neg {
            inv: false,
            val: Ipv4Net {
                addr: Ipv4Addr::new(192, 168, 1, 0),
                mask: 0xffff_ff00,
            },
        }),
        proto: Some(Neg {
            inv: false,
            val: PROTO_TCP,
        }),
        matches: vec![Match::Tcp(TcpMatch {
            dport: Some(Neg {
                inv: false,
                val: PortRange { lo: 443, hi: 443 },
            }),
            ..Default::default()
        })],
        ..base_rule(Target::Accept)
    }
}

fn chain(name: &str, policy: Option<Policy>, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.into(),
        policy,
        counters: Counters::default(),
        rules,
    }
}

fn filter(input: Vec<Rule>, users: Vec<Chain>) -> Ruleset {
    let mut chains = vec![
        chain("INPUT", Some(Policy::Drop), input),
        chain("FORWARD", Some(Policy::Drop), vec![]),
        chain("OUTPUT", Some(Policy::Accept), vec![]),
    ];
    chains.extend(users);
    Ruleset {
        tables: vec![TableRules {
            table: Table::Filter,
            chains,
        }],
    }
}

/// `n` rules, the matching one second to last.
fn flat(n: usize) -> Ruleset {
    let mut rules: Vec<Rule> = (0..n - 2).map(filler).collect();
    rules.push(hit_rule());
    rules.push(filler(n));
    filter(rules, vec![])
}

/// 1000 rules in 10 user chains of 100, jumped to in turn from INPUT; the
/// packet matches near the end of the last chain (so it walks every rule).
fn chained() -> Ruleset {
    let mut users = Vec::new();
    let mut input = Vec::new();
    for c in 0..10 {
        let name = format!("chain{c}");
        let mut rules: Vec<Rule> = (0..100).map(|i| filler(c * 100 + i)).collect();
        if c == 9 {
            rules[98] = hit_rule();
        }
        input.push(base_rule(Target::Jump(name.clone())));
        users.push(chain(&name, None, rules));
    }
    filter(input, users)
}

fn packet() -> PacketCtx {
    let mut p = PacketCtx::new();
    p.src = u32::from(Ipv4Addr::new(192, 168, 1, 20));
    p.dst = u32::from(Ipv4Addr::new(10, 0, 2, 15));
    p.proto = PROTO_TCP;
    p.ttl = 64;
    p.len = 60;
    p.has_l4 = true;
    p.sport = 51234;
    p.dport = 443;
    p.tcp_flags = 0x10;
    p.in_if = Some(1);
    p
}

fn bench_rules(c: &mut Criterion) {
    let mut g = c.benchmark_group("rules_eval");
    g.throughput(Throughput::Elements(1));
    let cases = [
        ("flat_10", flat(10)),
        ("flat_100", flat(100)),
        ("flat_1000", flat(1000)),
        ("chains_1000", chained()),
    ];
    for (name, rs) in cases {
        let compiled = CompiledRuleset::compile(&rs, IFACES).expect("bench ruleset compiles");
        let mut state = RuleState::new(&compiled);
        let pkt = packet();
        {
            let mut p = pkt;
            let v = compiled.run(Table::Filter, Hook::Input, &mut p, &mut state, 0);
            assert_eq!(
                v,
                Verdict::Accept,
                "{name}: the packet must hit the ACCEPT rule"
            );
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut p = black_box(pkt);
                compiled.run(Table::Filter, Hook::Input, &mut p, &mut state, 0)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_rules);
criterion_main!(benches);
