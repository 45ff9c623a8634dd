//! `CompiledRuleset::run` must not allocate: count allocations made by this
//! thread around many runs over a ruleset that exercises every kind of match
//! and target (jumps, gotos, limit, conntrack, LOG overflow, NAT).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;

use fastables_rules::compile::{CompiledRuleset, RuleState};
use fastables_rules::ctx::{CtCtx, PacketCtx, Verdict};
use fastables_rules::model::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator unchanged; the
// thread-local counter is a const-initialised Cell, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|a| a.get())
}

fn rule(target: Target) -> Rule {
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
        line: 1,
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

fn ruleset() -> Ruleset {
    let tcp = |dport: u16, target: Target| Rule {
        proto: Some(Neg { inv: false, val: 6 }),
        matches: vec![Match::Tcp(TcpMatch {
            dport: Some(Neg {
                inv: false,
                val: PortRange {
                    lo: dport,
                    hi: dport,
                },
            }),
            option: Some(Neg { inv: true, val: 8 }),
            ..Default::default()
        })],
        ..rule(target)
    };
    let everything = Rule {
        src: Some(Neg {
            inv: false,
            val: Ipv4Net::prefix(Ipv4Addr::new(10, 0, 0, 0), 8),
        }),
        in_iface: Some(Neg {
            inv: true,
            val: IfaceName("eth9".into()),
        }),
        proto: Some(Neg { inv: false, val: 6 }),
        matches: vec![
            Match::Multiport(MultiportMatch {
                dir: MultiportDir::Either,
                inv: false,
                ports: vec![PortRange { lo: 1, hi: 65535 }],
            }),
            Match::Conntrack(ConntrackMatch {
                state: Some(Neg {
                    inv: false,
                    val: CtStateSet(CtStateSet::NEW | CtStateSet::ESTABLISHED),
                }),
                orig_src: Some(Neg {
                    inv: false,
                    val: Ipv4Net::prefix(Ipv4Addr::new(10, 0, 0, 0), 8),
                }),
                ..Default::default()
            }),
            Match::Mark(Neg {
                inv: true,
                val: MarkMask { value: 7, mask: 7 },
            }),
            Match::Ttl(TtlMatch::Gt(1)),
            Match::Length(Neg {
                inv: false,
                val: PortRange { lo: 0, hi: 9000 },
            }),
            Match::Limit(LimitMatch {
                rate: 5,
                unit: LimitUnit::Second,
                burst: 3,
            }),
            Match::Addrtype(AddrtypeMatch {
                dst: Some(Neg {
                    inv: true,
                    val: AddrTypeSet(AddrTypeSet::BROADCAST),
                }),
                ..Default::default()
            }),
        ],
        ..rule(Target::Log(LogTarget::default()))
    };
    let mut filter_input = vec![tcp(22, Target::Accept)];
    filter_input.push(rule(Target::Jump("a".into())));
    filter_input.push(everything.clone());
    filter_input.extend((0..6).map(|_| rule(Target::Log(LogTarget::default()))));
    filter_input.push(tcp(80, Target::Accept));
    Ruleset {
        tables: vec![
            TableRules {
                table: Table::Filter,
                chains: vec![
                    chain("INPUT", Some(Policy::Drop), filter_input),
                    chain("FORWARD", Some(Policy::Accept), vec![]),
                    chain("OUTPUT", Some(Policy::Accept), vec![]),
                    chain(
                        "a",
                        None,
                        vec![rule(Target::Goto("b".into())), rule(Target::Drop)],
                    ),
                    chain(
                        "b",
                        None,
                        vec![
                            rule(Target::Mark(XMark { value: 1, mask: 1 })),
                            rule(Target::Jump("c".into())),
                            rule(Target::Return),
                        ],
                    ),
                    chain("c", None, vec![everything, rule(Target::Return)]),
                ],
            },
            TableRules {
                table: Table::Nat,
                chains: vec![
                    chain("PREROUTING", Some(Policy::Accept), vec![]),
                    chain("INPUT", Some(Policy::Accept), vec![]),
                    chain("OUTPUT", Some(Policy::Accept), vec![]),
                    chain(
                        "POSTROUTING",
                        Some(Policy::Accept),
                        vec![rule(Target::Masquerade {
                            ports: None,
                            flags: NatFlags::default(),
                        })],
                    ),
                ],
            },
            TableRules {
                table: Table::Mangle,
                chains: vec![
                    chain(
                        "PREROUTING",
                        Some(Policy::Accept),
                        vec![
                            rule(Target::Ttl(TtlTarget::Inc(1))),
                            rule(Target::Connmark(ConnmarkTarget::Save {
                                nfmask: !0,
                                ctmask: !0,
                            })),
                            rule(Target::Tcpmss(TcpmssTarget::SetMss(1400))),
                        ],
                    ),
                    chain("INPUT", Some(Policy::Accept), vec![]),
                    chain("FORWARD", Some(Policy::Accept), vec![]),
                    chain("OUTPUT", Some(Policy::Accept), vec![]),
                    chain("POSTROUTING", Some(Policy::Accept), vec![]),
                ],
            },
        ],
    }
}

#[test]
fn run_does_not_allocate() {
    let rs = ruleset();
    let c = CompiledRuleset::compile(&rs, &["eth0", "eth1"]).expect("compile");
    let mut state = RuleState::new(&c);
    let mut base = PacketCtx::new();
    base.src = u32::from(Ipv4Addr::new(10, 1, 2, 3));
    base.dst = u32::from(Ipv4Addr::new(10, 9, 9, 9));
    base.proto = 6;
    base.ttl = 64;
    base.len = 60;
    base.has_l4 = true;
    base.sport = 40000;
    base.dport = 80;
    base.in_if = Some(0);
    base.ct = CtCtx {
        state: CtStateSet::NEW,
        orig_src: base.src,
        ..CtCtx::default()
    };
    let mut verdicts = [0u32; 4];
    let before = allocs();
    for i in 0..10_000u64 {
        let mut p = base;
        p.dport = if i % 3 == 0 { 22 } else { 80 };
        p.has_l4 = i % 7 != 0;
        for (t, h) in [
            (Table::Mangle, Hook::Prerouting),
            (Table::Filter, Hook::Input),
            (Table::Nat, Hook::Postrouting),
            (Table::Raw, Hook::Prerouting),
        ] {
            let v = c.run(t, h, &mut p, &mut state, i * 1_000_000);
            let k = match v {
                Verdict::Accept => 0,
                Verdict::Drop => 1,
                Verdict::Reject(_) => 2,
                Verdict::Nat(_) => 3,
            };
            verdicts[k] += 1;
        }
    }
    let after = allocs();
    assert_eq!(after - before, 0, "run allocated {} times", after - before);
    // The loop exercised accept, drop (hotdrop) and NAT verdicts.
    assert!(
        verdicts[0] > 0 && verdicts[1] > 0 && verdicts[3] > 0,
        "{verdicts:?}"
    );
    // Sanity: the counting allocator does see allocations.
    let v: Vec<u8> = Vec::with_capacity(16);
    assert!(allocs() > after);
    drop(v);
}
