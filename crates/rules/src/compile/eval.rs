//! Evaluation: one packet through a built-in chain, with the kernel's
//! `ipt_do_table` semantics (jump stack, goto, RETURN, policy, counters,
//! hotdrop). The per-packet hot path: no allocation, no panicking index.

use super::program::{
    Act, Hot, F_DPORT_INV, F_DST_INV, F_EXT_SKIP, F_FRAG, F_FRAG_INV, F_L4, F_PROTO_INV,
    F_SPORT_INV, F_SRC_INV, F_TFL_INV, IF_NONE, IF_UNKNOWN,
};
use super::{CompiledRuleset, RuleState};
use crate::ctx::{IfIndex, PacketCtx, Verdict};
use crate::matches::MatchResult;
use crate::model::{Hook, Table};

/// Per-packet values computed once per `run`.
struct Key {
    in_bit: u64,
    out_bit: u64,
    /// Transport header readable and not a fragment: port matches are pure.
    clean: bool,
}

impl Hot {
    #[inline(always)]
    fn ip_match(&self, ctx: &PacketCtx, k: &Key) -> bool {
        let f = self.flags;
        if ((ctx.src & self.smsk) != self.src) != (f & F_SRC_INV != 0) {
            return false;
        }
        if ((ctx.dst & self.dmsk) != self.dst) != (f & F_DST_INV != 0) {
            return false;
        }
        if self.proto != 0 && ((ctx.proto != self.proto) != (f & F_PROTO_INV != 0)) {
            return false;
        }
        if (self.in_mask & k.in_bit) == 0 || (self.out_mask & k.out_bit) == 0 {
            return false;
        }
        if f & F_FRAG != 0 && (ctx.fragment == (f & F_FRAG_INV != 0)) {
            return false;
        }
        if f & F_L4 != 0 && k.clean {
            let inv = |b: u16| f & b != 0;
            if (ctx.sport >= self.sport[0] && ctx.sport <= self.sport[1]) == inv(F_SPORT_INV) {
                return false;
            }
            if (ctx.dport >= self.dport[0] && ctx.dport <= self.dport[1]) == inv(F_DPORT_INV) {
                return false;
            }
            if ((ctx.tcp_flags & self.tfl_mask) == self.tfl_comp) == inv(F_TFL_INV) {
                return false;
            }
        }
        true
    }
}

/// The interface mask bit of `i` (of an instance with `n` interfaces).
#[inline(always)]
fn if_key(i: Option<IfIndex>, n: usize) -> u64 {
    match i {
        None => IF_NONE,
        Some(i) if usize::from(i) < n => 1u64 << i,
        Some(_) => IF_UNKNOWN,
    }
}

impl CompiledRuleset {
    /// Run the built-in chain of `hook` in `table` on one packet, with the
    /// kernel's `ipt_do_table` semantics. Counters, limit buckets and the jump
    /// stack live in `state` (which must come from [`RuleState::new`] on this
    /// ruleset). Never allocates. A (table, hook) pair that has no built-in
    /// chain (e.g. filter PREROUTING) returns ACCEPT.
    pub fn run(
        &self,
        table: Table,
        hook: Hook,
        ctx: &mut PacketCtx,
        state: &mut RuleState,
        now_ns: u64,
    ) -> Verdict {
        debug_assert_eq!(state.id, self.id, "RuleState from another CompiledRuleset");
        let Some((start, policy)) = self.hooks[table as usize][hook as usize] else {
            return Verdict::Accept;
        };
        // A built-in chain without rules: only its policy (counted).
        if start == policy {
            if let (Some(c), Some(e)) = (
                state.counters.get_mut(policy as usize),
                self.cold.get(policy as usize),
            ) {
                let v = match e.act {
                    Act::Accept => Some(Verdict::Accept),
                    Act::Drop => Some(Verdict::Drop),
                    _ => None,
                };
                if let Some(v) = v {
                    c.packets = c.packets.wrapping_add(1);
                    c.bytes = c.bytes.wrapping_add(u64::from(ctx.len));
                    if state.recording {
                        state.path.push(policy);
                    }
                    ctx.effects.last = policy;
                    return v;
                }
            }
        }
        let key = Key {
            in_bit: if_key(ctx.in_if, self.n_ifaces),
            out_bit: if_key(ctx.out_if, self.n_ifaces),
            clean: ctx.has_l4 && !ctx.fragment,
        };
        let bytes = u64::from(ctx.len);
        let RuleState {
            counters,
            buckets,
            stack,
            recording,
            path,
            ..
        } = state;
        let mut pc = start;
        let mut sp = 0usize;
        loop {
            let Some(h) = self.hot.get(pc as usize) else {
                return Verdict::Drop;
            };
            if !h.ip_match(ctx, &key) {
                pc += 1;
                continue;
            }
            let Some(e) = self.cold.get(pc as usize) else {
                return Verdict::Drop;
            };
            if e.ext_start != e.ext_end {
                let mut from = e.ext_start as usize;
                if key.clean && h.flags & F_EXT_SKIP != 0 {
                    from += 1;
                }
                let exts = self.exts.get(from..e.ext_end as usize).unwrap_or(&[]);
                let mut res = MatchResult::Yes;
                for x in exts {
                    res = x.eval(ctx, buckets, now_ns);
                    if res != MatchResult::Yes {
                        break;
                    }
                }
                match res {
                    MatchResult::Yes => {}
                    MatchResult::No => {
                        pc += 1;
                        continue;
                    }
                    MatchResult::Hotdrop => return Verdict::Drop,
                }
            }
            if let Some(c) = counters.get_mut(pc as usize) {
                c.packets = c.packets.wrapping_add(1);
                c.bytes = c.bytes.wrapping_add(bytes);
            }
            if *recording {
                path.push(pc);
            }
            match e.act {
                Act::Continue => {}
                Act::Accept => {
                    ctx.effects.last = pc;
                    return Verdict::Accept;
                }
                Act::Drop => {
                    ctx.effects.last = pc;
                    return Verdict::Drop;
                }
                Act::Reject(w) => {
                    ctx.effects.last = pc;
                    return Verdict::Reject(w);
                }
                Act::Nat => {
                    ctx.effects.last = pc;
                    return Verdict::Nat(pc);
                }
                Act::Return => {
                    if sp == 0 {
                        pc = policy;
                    } else {
                        sp -= 1;
                        match stack.get(sp) {
                            Some(&ret) => pc = ret + 1,
                            None => return Verdict::Drop,
                        }
                    }
                    continue;
                }
                Act::Jump(t) => {
                    let Some(slot) = stack.get_mut(sp) else {
                        return Verdict::Drop;
                    };
                    *slot = pc;
                    sp += 1;
                    pc = t;
                    continue;
                }
                Act::Goto(t) => {
                    pc = t;
                    continue;
                }
                Act::Apply(a) => a.apply(ctx, pc),
            }
            pc += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn absent_tables_and_hooks_accept() {
        let mut t = Loaded::new(&Ruleset::default());
        let mut p = tcp_pkt([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
        for table in Table::ALL {
            for hook in Hook::ALL {
                assert_eq!(t.run(table, hook, &mut p), Verdict::Accept);
            }
        }
        // Filter has no PREROUTING even when present.
        let mut t = Loaded::new(&table(
            Table::Filter,
            vec![(Hook::Input, Policy::Drop, vec![])],
            vec![],
        ));
        assert_eq!(
            t.run(Table::Filter, Hook::Prerouting, &mut p),
            Verdict::Accept
        );
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut p), Verdict::Drop);
        assert_eq!(t.run(Table::Filter, Hook::Forward, &mut p), Verdict::Accept);
    }

    #[test]
    fn addresses_and_inversion() {
        let p = tcp_pkt([10, 1, 2, 3], [192, 168, 1, 1], 1000, 80);
        let r = |src: Option<Neg<Ipv4Net>>, dst: Option<Neg<Ipv4Net>>| Rule {
            src,
            dst,
            ..rule(Target::Accept)
        };
        assert!(hit(r(Some(pos(net([10, 0, 0, 0], 8))), None), &p));
        assert!(!hit(r(Some(neg(net([10, 0, 0, 0], 8))), None), &p));
        assert!(!hit(r(Some(pos(net([10, 1, 2, 4], 32))), None), &p));
        assert!(hit(r(Some(neg(net([10, 1, 2, 4], 32))), None), &p));
        assert!(hit(r(None, Some(pos(net([192, 168, 0, 0], 16)))), &p));
        assert!(!hit(r(None, Some(pos(net([192, 168, 2, 0], 24)))), &p));
        assert!(hit(
            r(
                Some(pos(net([0, 0, 0, 0], 0))),
                Some(pos(net([192, 168, 1, 1], 32)))
            ),
            &p
        ));
        // An unmasked address is masked like iptables does.
        assert!(hit(r(Some(pos(net([10, 9, 9, 9], 8))), None), &p));
    }

    #[test]
    fn non_contiguous_masks() {
        let p = tcp_pkt([10, 1, 2, 3], [192, 168, 1, 1], 1000, 80);
        let d = |a: [u8; 4], m: [u8; 4]| Ipv4Net {
            addr: Ipv4Addr::from(a),
            mask: u32::from(Ipv4Addr::from(m)),
        };
        let r = |src: Option<Neg<Ipv4Net>>, dst: Option<Neg<Ipv4Net>>| Rule {
            src,
            dst,
            ..rule(Target::Accept)
        };
        // 10.1.2.3 & 255.0.255.0 == 10.0.2.0
        assert!(hit(
            r(Some(pos(d([10, 0, 2, 0], [255, 0, 255, 0]))), None),
            &p
        ));
        assert!(!hit(
            r(Some(neg(d([10, 0, 2, 0], [255, 0, 255, 0]))), None),
            &p
        ));
        assert!(!hit(
            r(Some(pos(d([10, 0, 1, 0], [255, 0, 255, 0]))), None),
            &p
        ));
        assert!(hit(r(Some(pos(d([0, 0, 0, 3], [0, 0, 0, 255]))), None), &p));
        assert!(!hit(
            r(None, Some(pos(d([0, 0, 0, 2], [0, 0, 0, 255])))),
            &p
        ));
        assert!(hit(r(None, Some(neg(d([0, 0, 0, 2], [0, 0, 0, 255])))), &p));
        // Host bits outside the mask are ignored, as for prefixes.
        assert!(hit(
            r(Some(pos(d([10, 9, 2, 9], [255, 0, 255, 0]))), None),
            &p
        ));
        // Conntrack tuple addresses too.
        let mut p = p;
        p.ct = tracked(CtStateSet::ESTABLISHED);
        p.ct.orig_src = ipv4([10, 1, 2, 3]);
        let ct = |n: Neg<Ipv4Net>| {
            with_matches(vec![Match::Conntrack(ConntrackMatch {
                orig_src: Some(n),
                ..Default::default()
            })])
        };
        assert!(hit(ct(pos(d([10, 7, 2, 7], [255, 0, 255, 0]))), &p));
        assert!(!hit(ct(pos(d([10, 7, 3, 7], [255, 0, 255, 0]))), &p));
        assert!(hit(ct(neg(d([10, 7, 3, 7], [255, 0, 255, 0]))), &p));
    }

    #[test]
    fn protocol() {
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        let r = |n: Neg<u8>| Rule {
            proto: Some(n),
            ..rule(Target::Accept)
        };
        assert!(hit(r(pos(6)), &p));
        assert!(!hit(r(pos(17)), &p));
        assert!(hit(r(neg(17)), &p));
        assert!(!hit(r(neg(6)), &p));
    }

    #[test]
    fn interfaces() {
        let r = |i: Option<Neg<&str>>, o: Option<Neg<&str>>| Rule {
            in_iface: i.map(|n| Neg {
                inv: n.inv,
                val: IfaceName(n.val.into()),
            }),
            out_iface: o.map(|n| Neg {
                inv: n.inv,
                val: IfaceName(n.val.into()),
            }),
            ..rule(Target::Accept)
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        p.in_if = Some(1); // eth1
        p.out_if = Some(2); // docker0
        assert!(hit(r(Some(pos("eth1")), None), &p));
        assert!(!hit(r(Some(pos("eth0")), None), &p));
        assert!(hit(r(Some(pos("eth+")), None), &p));
        assert!(!hit(r(Some(pos("eth1+")), Some(pos("eth+"))), &p));
        assert!(hit(r(Some(pos("eth1+")), Some(pos("docker0"))), &p));
        assert!(!hit(r(None, Some(neg("docker0"))), &p));
        assert!(hit(r(None, Some(neg("eth0"))), &p));
        assert!(hit(r(Some(pos("+")), Some(pos("+"))), &p));
        // A name that exists nowhere matches nothing, and its negation everything.
        assert!(!hit(r(Some(pos("wlan0")), None), &p));
        assert!(hit(r(Some(neg("wlan0")), None), &p));
        // `eth1` does not match `eth10`-like names: exact means exact.
        p.in_if = Some(3); // veth1a
        assert!(!hit(r(Some(pos("veth1")), None), &p));
        assert!(hit(r(Some(pos("veth1+")), None), &p));
        // No device (locally generated): only `+` matches, negations match.
        p.in_if = None;
        assert!(!hit(r(Some(pos("eth0")), None), &p));
        assert!(hit(r(Some(neg("eth0")), None), &p));
        assert!(hit(r(Some(pos("+")), None), &p));
        assert!(!hit(r(Some(neg("+")), None), &p));
        // An index without a configured name.
        p.in_if = Some(9);
        assert!(!hit(r(Some(pos("eth+")), None), &p));
        assert!(hit(r(Some(pos("+")), None), &p));
        assert!(hit(r(Some(neg("eth0")), None), &p));
    }

    #[test]
    fn fragment_flag() {
        let r = |inv: bool| Rule {
            fragment: Some(inv),
            ..rule(Target::Accept)
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert!(!hit(r(false), &p));
        assert!(hit(r(true), &p));
        p.set_frag_offset(185);
        assert!(hit(r(false), &p));
        assert!(!hit(r(true), &p));
    }

    #[test]
    fn terminal_targets_reject_and_nat() {
        let w = RejectWith::TcpReset;
        let mut t = Loaded::new(&filter_input(vec![rule(Target::Reject(w))]));
        assert_eq!(
            t.input(&tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2)),
            Verdict::Reject(w)
        );

        let masq = Target::Masquerade {
            ports: Some(port_range(55666, 55680)),
            flags: NatFlags::default(),
        };
        let rs = table(
            Table::Nat,
            vec![(
                Hook::Postrouting,
                Policy::Accept,
                vec![
                    Rule {
                        src: Some(pos(net([172, 18, 0, 0], 16))),
                        out_iface: Some(neg(IfaceName("docker0".into()))),
                        line: 11,
                        ..tcp_rule(masq.clone(), TcpMatch::default())
                    },
                    Rule {
                        src: Some(pos(net([172, 18, 0, 0], 16))),
                        out_iface: Some(neg(IfaceName("docker0".into()))),
                        line: 12,
                        ..rule(Target::Masquerade {
                            ports: None,
                            flags: NatFlags::default(),
                        })
                    },
                ],
            )],
            vec![],
        );
        let mut t = Loaded::new(&rs);
        assert!(t.c.needs().conntrack);
        let mut p = tcp_pkt([172, 18, 0, 2], [1, 1, 1, 1], 37622, 80);
        p.out_if = Some(0);
        let Verdict::Nat(id) = t.run(Table::Nat, Hook::Postrouting, &mut p) else {
            panic!()
        };
        assert_eq!(t.c.rule_info(id).line, 11);
        assert_eq!(t.c.target(id), &masq);
        p.proto = 17;
        let Verdict::Nat(id) = t.run(Table::Nat, Hook::Postrouting, &mut p) else {
            panic!()
        };
        assert_eq!(t.c.rule_info(id).index, 2);
        p.out_if = Some(2);
        assert_eq!(
            t.run(Table::Nat, Hook::Postrouting, &mut p),
            Verdict::Accept
        );
        // Unknown ids are harmless.
        assert_eq!(t.c.target(99_999), &Target::None);
        assert_eq!(t.c.rule_info(99_999).chain, "");
    }

    #[test]
    fn jump_return_goto_and_policy_counters() {
        // INPUT: 1 -j A ; 2 -g B ; 3 ACCEPT (never reached by goto path)
        // A: 1 RETURN if src 10/8 ; 2 mark 1
        // B: 1 -j C ; 2 RETURN-able fall off
        // C: 1 RETURN
        let src10 = Some(pos(net([10, 0, 0, 0], 8)));
        let rs = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Drop,
                vec![
                    rule(Target::Jump("A".into())),
                    Rule {
                        src: src10,
                        ..rule(Target::Goto("B".into()))
                    },
                    rule(Target::Accept),
                ],
            )],
            vec![
                (
                    "A",
                    vec![
                        Rule {
                            src: src10,
                            ..rule(Target::Return)
                        },
                        rule(Target::Mark(XMark { value: 1, mask: 1 })),
                    ],
                ),
                (
                    "B",
                    vec![rule(Target::Jump("C".into())), rule(Target::None)],
                ),
                ("C", vec![rule(Target::Return)]),
            ],
        );
        let mut t = Loaded::new(&rs);
        // From 10/8: A returns early, goto B, B calls C, C returns, B falls
        // off: returns to the caller of INPUT = none, so the policy (DROP).
        let p10 = tcp_pkt([10, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        let mut q = p10;
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut q), Verdict::Drop);
        assert_eq!(q.mark, 0);
        // From elsewhere: A marks, no goto, ACCEPT.
        let mut r = tcp_pkt([11, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut r), Verdict::Accept);
        assert_eq!(r.mark, 1);
        let out = t.counters(&rs);
        let ch = |n: &str| {
            out.tables[0]
                .chains
                .iter()
                .find(|c| c.name == n)
                .unwrap()
                .clone()
        };
        let pk = |c: &Chain| {
            c.rules
                .iter()
                .map(|r| r.counters.packets)
                .collect::<Vec<_>>()
        };
        assert_eq!(pk(&ch("INPUT")), vec![2, 1, 1]);
        assert_eq!(pk(&ch("A")), vec![1, 1]);
        assert_eq!(pk(&ch("B")), vec![1, 1]);
        assert_eq!(pk(&ch("C")), vec![1]);
        assert_eq!(
            ch("INPUT").counters,
            Counters {
                packets: 1,
                bytes: 60
            }
        );
    }

    #[test]
    fn goto_then_return_returns_to_caller_of_goto_chain() {
        // INPUT: -j X ; LOG ; (policy ACCEPT)
        // X: -g Y ; DROP          Y: RETURN ; DROP
        // RETURN in Y goes back to INPUT (the caller of X), rule 2.
        let rs = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Accept,
                vec![
                    rule(Target::Jump("X".into())),
                    rule(Target::Log(LogTarget::default())),
                ],
            )],
            vec![
                (
                    "X",
                    vec![rule(Target::Goto("Y".into())), rule(Target::Drop)],
                ),
                ("Y", vec![rule(Target::Return), rule(Target::Drop)]),
            ],
        );
        let mut t = Loaded::new(&rs);
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut p), Verdict::Accept);
        assert_eq!(p.effects.log_count, 1);
        let out = t.counters(&rs);
        assert_eq!(
            out.tables[0].chains[1].counters.packets, 0,
            "user chain has no policy counter"
        );
        assert_eq!(out.tables[0].chains[3].rules[1].counters.packets, 0);
        assert_eq!(
            out.tables[0].chains[0].counters.packets, 1,
            "INPUT policy counted"
        );
    }

    #[test]
    fn return_in_builtin_chain_applies_policy() {
        let rs = filter_input(vec![rule(Target::Return), rule(Target::Accept)]);
        let mut t = Loaded::new(&rs);
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.input(&p), Verdict::Drop);
        let out = t.counters(&rs);
        assert_eq!(
            out.tables[0].chains[0].rules[0].counters,
            Counters {
                packets: 1,
                bytes: 60
            }
        );
        assert_eq!(out.tables[0].chains[0].rules[1].counters.packets, 0);
        assert_eq!(out.tables[0].chains[0].counters.packets, 1);
    }

    #[test]
    fn deep_jump_chain_fits_the_stack() {
        let n = 20;
        let users: Vec<(String, Vec<Rule>)> = (0..n)
            .map(|i| {
                let r = if i + 1 < n {
                    vec![rule(Target::Jump(format!("c{}", i + 1)))]
                } else {
                    vec![rule(Target::Accept)]
                };
                (format!("c{i}"), r)
            })
            .collect();
        let rs = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Drop,
                vec![rule(Target::Jump("c0".into()))],
            )],
            users.iter().map(|(n, r)| (n.as_str(), r.clone())).collect(),
        );
        let mut t = Loaded::new(&rs);
        assert_eq!(
            t.input(&tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2)),
            Verdict::Accept
        );
    }
}
