//! The compiler on rulesets produced by the parser: every valid corpus file
//! that parses also compiles, and the seed scenarios evaluate as the kernel
//! does.

use std::path::Path;

use fastables_rules::compile::{CompileError, CompiledRuleset, RuleState};
use fastables_rules::ctx::{CtCtx, PacketCtx, Verdict};
use fastables_rules::model::{CtStateSet, Hook, Ruleset, Table, Target};
use fastables_rules::parse_restore;

const IFACES: &[&str] = &["eth0", "docker0", "eth1", "lo"];

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().expect("address"))
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16) -> PacketCtx {
    let mut p = PacketCtx::new();
    p.src = ip(src);
    p.dst = ip(dst);
    p.proto = 6;
    p.ttl = 64;
    p.len = 60;
    p.has_l4 = true;
    p.sport = sport;
    p.dport = dport;
    p.tcp_flags = 0x02;
    p
}

fn parse(text: &str) -> Ruleset {
    parse_restore(text, "test.rules").expect("test ruleset parses")
}

#[test]
fn valid_corpus_compiles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/valid");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("no corpus at {}; skipping", dir.display());
        return;
    };
    let mut compiled = 0;
    for entry in rd.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("rules") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read corpus file");
        // The parser's own tests decide what parses; here only what it accepts.
        let Ok(rs) = parse_restore(&text, &path.display().to_string()) else {
            continue;
        };
        match CompiledRuleset::compile(&rs, IFACES) {
            Ok(c) => {
                compiled += 1;
                // Every built-in chain runs on an untracked, empty packet.
                let mut state = RuleState::new(&c);
                for t in Table::ALL {
                    for &h in t.builtin_hooks() {
                        let mut p = PacketCtx::new();
                        let _ = c.run(t, h, &mut p, &mut state, 0);
                    }
                }
            }
            Err(CompileError::AddrtypeLimitIface { .. }) => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    eprintln!("{compiled} corpus files compiled");
    assert!(compiled > 0, "no corpus file compiled");
}

#[test]
fn seed_masquerade() {
    let rs = parse(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         -A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -p tcp -j MASQUERADE --to-ports 55666-55680\n\
         -A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT\n",
    );
    let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
    assert!(c.needs().conntrack);
    let mut s = RuleState::new(&c);
    let mut http = tcp("172.18.0.2", "93.184.216.34", 37622, 80);
    http.in_if = Some(1);
    http.out_if = Some(0);
    let Verdict::Nat(id) = c.run(Table::Nat, Hook::Postrouting, &mut http, &mut s, 0) else {
        panic!("tcp must be masqueraded");
    };
    let info = c.rule_info(id);
    assert_eq!((info.chain, info.index), ("POSTROUTING", 1));
    assert!(
        matches!(c.target(id), Target::Masquerade { ports: Some(p), .. } if p.lo == 55666 && p.hi == 55680)
    );
    let mut dns = http;
    dns.proto = 17;
    dns.dport = 53;
    let Verdict::Nat(id) = c.run(Table::Nat, Hook::Postrouting, &mut dns, &mut s, 0) else {
        panic!("udp must be masqueraded");
    };
    assert_eq!(c.rule_info(id).index, 2);
    assert!(matches!(
        c.target(id),
        Target::Masquerade { ports: None, .. }
    ));
    // Container to container stays on docker0: not translated.
    let mut local = http;
    local.out_if = Some(1);
    assert_eq!(
        c.run(Table::Nat, Hook::Postrouting, &mut local, &mut s, 0),
        Verdict::Accept
    );
    let out = c.counters_into(&rs, &[&s]);
    let post = &out.table(Table::Nat).unwrap().chains[3];
    assert_eq!(post.rules[0].counters.packets, 1);
    assert_eq!(post.rules[1].counters.packets, 1);
    assert_eq!(post.counters.packets, 1);
}

#[test]
fn user_chains_jump_goto_from_text() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/valid/008-user-chains-jump-goto.rules"),
    );
    let Ok(text) = text else {
        eprintln!("corpus file missing; skipping");
        return;
    };
    let rs = parse(&text);
    let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
    let mut s = RuleState::new(&c);
    let mut run = |p: PacketCtx| {
        let mut p = p;
        let v = c.run(Table::Filter, Hook::Input, &mut p, &mut s, 0);
        (v, p.effects.log_count)
    };
    // web: 192.168.1.0/24 returns, then `-g check-src`: 10/8 RETURNs from a
    // goto'd chain = back to INPUT's caller = policy ACCEPT; else ACCEPT.
    assert_eq!(
        run(tcp("192.168.1.5", "10.0.2.15", 1000, 80)),
        (Verdict::Accept, 0)
    );
    // Port 80 from elsewhere: web -> LOGDROP: LOG then DROP.
    assert_eq!(
        run(tcp("8.8.8.8", "10.0.2.15", 1000, 80)),
        (Verdict::Drop, 1)
    );
    assert_eq!(
        run(tcp("10.1.1.1", "10.0.2.15", 1000, 22)),
        (Verdict::Accept, 0)
    );
}

#[test]
fn raw_notrack_then_state_untracked() {
    let rs = parse(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p udp -m udp --dport 53 -j NOTRACK\nCOMMIT\n\
         *filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -m state --state UNTRACKED -j ACCEPT\n-A INPUT -s 1.2.3.4/32 -j DROP\nCOMMIT\n",
    );
    let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
    let mut s = RuleState::new(&c);
    let mut dns = tcp("8.8.8.8", "10.0.2.15", 53, 53);
    dns.proto = 17;
    dns.ct.state = CtStateSet::INVALID; // no conntrack yet at raw PREROUTING
    assert_eq!(
        c.run(Table::Raw, Hook::Prerouting, &mut dns, &mut s, 0),
        Verdict::Accept
    );
    assert!(dns.effects.notrack);
    assert_eq!(
        c.run(Table::Filter, Hook::Input, &mut dns, &mut s, 0),
        Verdict::Accept
    );
    let mut other = tcp("1.2.3.4", "10.0.2.15", 1, 2);
    other.ct = CtCtx {
        state: CtStateSet::NEW,
        ..CtCtx::default()
    };
    assert_eq!(
        c.run(Table::Filter, Hook::Input, &mut other, &mut s, 0),
        Verdict::Drop
    );
}

#[test]
fn mangle_ttl_inc_cancels_forward_decrement() {
    let rs = parse(
        "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         -A PREROUTING -i eth0 -j TTL --ttl-inc 1\nCOMMIT\n",
    );
    let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
    let mut s = RuleState::new(&c);
    let mut p = tcp("8.8.8.8", "172.18.0.2", 1, 2);
    p.in_if = Some(0);
    assert_eq!(
        c.run(Table::Mangle, Hook::Prerouting, &mut p, &mut s, 0),
        Verdict::Accept
    );
    assert_eq!(p.ttl, 65);
    assert!(p.effects.ttl_changed);
    let mut q = tcp("8.8.8.8", "172.18.0.2", 1, 2);
    q.in_if = Some(1);
    c.run(Table::Mangle, Hook::Prerouting, &mut q, &mut s, 0);
    assert_eq!(q.ttl, 64);
}

/// Recorded on Linux 6.18 + iptables 1.8.9 (nft): restore this ruleset in a
/// namespace, send one UDP datagram (30 bytes) and one TCP SYN (60 bytes) to
/// it, `iptables-save -c` prints the counters asserted here.
#[test]
fn goto_return_and_policy_counters_match_kernel() {
    let rs = parse(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:X - [0:0]\n:Y - [0:0]\n\
         -A INPUT -p udp -j X\n-A INPUT -p udp\n-A INPUT -p tcp -j RETURN\n-A INPUT -p tcp\n\
         -A X -g Y\n-A X -j DROP\n-A Y -j RETURN\n-A Y -j DROP\nCOMMIT\n",
    );
    let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
    let mut s = RuleState::new(&c);
    let mut udp = tcp("10.9.0.1", "10.9.0.2", 40000, 9999);
    udp.proto = 17;
    udp.len = 30;
    udp.in_if = Some(0);
    let mut syn = tcp("10.9.0.1", "10.9.0.2", 40001, 9999);
    syn.in_if = Some(0);
    assert_eq!(
        c.run(Table::Filter, Hook::Input, &mut udp, &mut s, 0),
        Verdict::Accept
    );
    assert_eq!(
        c.run(Table::Filter, Hook::Input, &mut syn, &mut s, 0),
        Verdict::Accept
    );
    let out = c.counters_into(&rs, &[&s]);
    let f = out.table(Table::Filter).unwrap();
    let get = |name: &str| f.chains.iter().find(|c| c.name == name).unwrap();
    let pk = |name: &str| {
        get(name)
            .rules
            .iter()
            .map(|r| (r.counters.packets, r.counters.bytes))
            .collect::<Vec<_>>()
    };
    assert_eq!(get("INPUT").counters.packets, 2);
    assert_eq!(get("INPUT").counters.bytes, 90);
    assert_eq!(pk("INPUT"), vec![(1, 30), (1, 30), (1, 60), (0, 0)]);
    assert_eq!(pk("X"), vec![(1, 30), (0, 0)]);
    assert_eq!(pk("Y"), vec![(1, 30), (0, 0)]);
}
