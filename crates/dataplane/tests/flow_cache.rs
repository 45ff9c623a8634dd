//! The flow cache is an optimisation, never a change in meaning: the same
//! traffic through a pipeline with it and one without gives the same frames
//! out, the same generated packets, the same rule counters, the same
//! conntrack table and statistics, and the same drop counters — through
//! NAT in both directions, TCP lifecycles, checksum errors, TTL and MTU
//! limits, rule reloads, flushes, timeouts and the lookups ahead. And the
//! cache is really used (its hits are counted), or the comparison would
//! prove nothing.

use std::net::Ipv4Addr;
use std::sync::Arc;

use fastables_config::Config;
use fastables_conntrack::format::format_entry;
use fastables_dataplane::pipeline::{Pipeline, PipelineOptions};
use fastables_dataplane::worker::{Action, Batch};
use fastables_packet::builder::{self, EthSpec, IpSpec, TcpSpec, UdpSpec};
use fastables_packet::MacAddr;
use fastables_port::{Frame, FrameAddr, FRAME_SIZE};
use fastables_rules::compile::CompiledRuleset;
use fastables_rules::ctx::IfIndex;
use fastables_rules::model::Ruleset;

mod common;

const ROUTES: &str = r#"
[[route]]
to = "0.0.0.0/0"
via = "10.0.2.2"
dev = "eth0"
"#;

const ETH0: IfIndex = 0;
const DOCKER0: IfIndex = 1;
const DOCKER0_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x01]);
const ETH0_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xc2, 0xbe, 0x11]);
const HOST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x35, 0x02]);
const HOST: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const SEC: u64 = 1_000_000_000;

const SEED: &str = include_str!("../../../demo/rules.v4");

/// DNAT to the host, a user chain with marks, per-port verdicts, ctstate;
/// raw rules (so the flow cache looks the decision up before conntrack).
const MIXED: &str = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A PREROUTING -s 203.0.113.0/24 -j DROP\n\
-A PREROUTING -p udp --dport 7 -j NOTRACK\nCOMMIT\n\
*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
-A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:80\n\
-A PREROUTING -i eth0 -p udp --dport 5353 -j DNAT --to-destination 172.18.0.2:53\n\
-A POSTROUTING -s 172.18.0.0/16 -o eth0 -j MASQUERADE\nCOMMIT\n\
*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
-A PREROUTING -i eth0 -p udp --dport 5353 -j TTL --ttl-dec 10\n\
-A FORWARD -p udp -m multiport --dports 53,5353 -j MARK --set-mark 0x5\n\
-A POSTROUTING -m mark --mark 0x5 -j ACCEPT\nCOMMIT\n\
*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:fwd - [0:0]\n\
-A FORWARD -m conntrack --ctstate INVALID -j DROP\n\
-A FORWARD -j fwd\n\
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
-A FORWARD -i docker0 -o eth0 -j ACCEPT\n\
-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT\n\
-A fwd -p udp --dport 9 -j REJECT\n\
-A fwd -p tcp --dport 81 -j DROP\n\
-A fwd -m mark --mark 0x5 -j RETURN\n\
-A fwd -s 172.18.0.0/16 -j RETURN\nCOMMIT\n";

/// [`MIXED`] after a reload: established UDP to port 53 is dropped now,
/// and a LOG on the way of the TCP flows keeps them on the slow path.
const MIXED2: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
-A PREROUTING -i eth0 -p tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:80\n\
-A POSTROUTING -s 172.18.0.0/16 -o eth0 -j MASQUERADE\nCOMMIT\n\
*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A FORWARD -p udp --dport 53 -j DROP\n\
-A FORWARD -p tcp -j LOG --log-prefix \"tcp \"\n\
-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
-A FORWARD -i docker0 -o eth0 -j ACCEPT\n\
-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT\nCOMMIT\n";

fn compile(rules: &str) -> (Ruleset, Arc<CompiledRuleset>) {
    let rs = fastables_rules::parse::parse_restore(rules, "flow.rules").unwrap();
    let c = CompiledRuleset::compile(&rs, &["eth0", "docker0", "lan2"]).unwrap();
    (rs, Arc::new(c))
}

/// Two pipelines, with and without the flow cache, fed the same frames.
struct Pair {
    rs: Ruleset,
    p: [Pipeline; 2],
    now: u64,
}

impl Pair {
    fn new(rules: &str, ahead: bool) -> Pair {
        let cfg = format!("{}{ROUTES}", common::LAN);
        let cfg = Config::parse(&cfg, "/t/fastables.toml").unwrap();
        let (rs, c) = compile(rules);
        let opts = |flow_cache| PipelineOptions {
            flow_cache,
            conntrack_lookup_ahead: if ahead { 0 } else { usize::MAX },
            conntrack_seed: 7,
            ..PipelineOptions::default()
        };
        let p = [true, false].map(|on| Pipeline::with_options(&cfg, c.clone(), opts(on)).unwrap());
        assert!(p[0].flow_cache_usable(), "the ruleset is flow-invariant");
        assert!(!p[1].flow_cache_usable());
        Pair { rs, p, now: SEC }
    }

    fn reload(&mut self, rules: &str) {
        let (rs, c) = compile(rules);
        self.rs = rs;
        for p in &mut self.p {
            p.set_ruleset(c.clone());
        }
    }

    /// One batch of `frames` (each with its input port) through both; the
    /// outputs must be equal. Returns them.
    fn batch(&mut self, frames: &[(IfIndex, Vec<u8>)]) -> Vec<(Action, Vec<u8>)> {
        let mut outs = Vec::new();
        for p in &mut self.p {
            let mut mem = vec![0u8; FRAME_SIZE * (frames.len() * 3 + 4)];
            let mut b = Batch::with_capacity(frames.len());
            for (i, (port, f)) in frames.iter().enumerate() {
                mem[i * FRAME_SIZE..i * FRAME_SIZE + f.len()].copy_from_slice(f);
                b.frames.push(Frame::rx(
                    (i * FRAME_SIZE) as FrameAddr,
                    f.len() as u16,
                    *port,
                ));
            }
            for i in frames.len()..frames.len() * 3 + 4 {
                b.spare.push((i * FRAME_SIZE) as FrameAddr);
            }
            p.process_batch(self.now, &mut mem, &mut b);
            let at = |a: FrameAddr, len: u16| mem[a as usize..a as usize + len as usize].to_vec();
            assert_eq!(b.verdicts.len(), b.frames.len());
            let frames: Vec<(Action, Vec<u8>)> = b
                .frames
                .iter()
                .zip(&b.verdicts)
                .map(|(f, v)| (*v, at(f.addr, f.len)))
                .collect();
            let generated: Vec<(IfIndex, Vec<u8>)> = b
                .generated
                .iter()
                .map(|g| (g.port, at(g.addr, g.len)))
                .collect();
            let mut logs = Vec::new();
            p.drain_logs(|l| logs.push(l.to_string()));
            outs.push((frames, generated, logs));
        }
        assert_eq!(outs[0].0, outs[1].0, "frames out at {} ns", self.now);
        assert_eq!(outs[0].1, outs[1].1, "generated at {} ns", self.now);
        assert_eq!(outs[0].2, outs[1].2, "LOG lines at {} ns", self.now);
        outs.swap_remove(0).0
    }

    /// Everything the two pipelines count and hold is equal.
    fn same_state(&self) {
        let counters = |p: &Pipeline| p.ruleset().counters_into(&self.rs, &[p.rule_state()]);
        assert_eq!(counters(&self.p[0]), counters(&self.p[1]), "rule counters");
        let table = |p: &Pipeline| {
            let t = p.conntrack().expect("conntrack");
            let mut l: Vec<String> = t.iter().map(|(_, e)| format_entry(e, self.now)).collect();
            l.sort();
            (l, t.stats())
        };
        assert_eq!(table(&self.p[0]), table(&self.p[1]), "conntrack");
        assert_eq!(
            self.p[0].drops().snapshot(),
            self.p[1].drops().snapshot(),
            "drops"
        );
        assert_eq!(self.p[1].flow_cache_hits(), 0);
    }

    fn hits(&self) -> u64 {
        self.p[0].flow_cache_hits()
    }
}

fn eth_in(from_host: bool) -> EthSpec {
    let (src, dst) = if from_host {
        (HOST_MAC, DOCKER0_MAC)
    } else {
        (GW_MAC, ETH0_MAC)
    };
    EthSpec {
        src,
        dst,
        vlan: None,
        pad: true,
    }
}

fn ip(src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> IpSpec {
    IpSpec {
        src,
        dst,
        ident,
        ..IpSpec::default()
    }
}

/// A UDP datagram; `from_host`: in on docker0, else in on eth0.
fn udp(
    from_host: bool,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: usize,
) -> (IfIndex, Vec<u8>) {
    let f = builder::udp_frame(
        &eth_in(from_host),
        &ip(src.0, dst.0, src.1 ^ dst.1),
        &UdpSpec {
            src_port: src.1,
            dst_port: dst.1,
        },
        &vec![0xa5; payload],
    );
    (if from_host { DOCKER0 } else { ETH0 }, f)
}

fn tcp(
    from_host: bool,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: usize,
) -> (IfIndex, Vec<u8>) {
    let f = builder::tcp_frame(
        &eth_in(from_host),
        &ip(src.0, dst.0, seq as u16),
        &TcpSpec {
            src_port: src.1,
            dst_port: dst.1,
            seq,
            ack,
            flags,
            window: 64000,
            ..TcpSpec::default()
        },
        &vec![0x5a; payload],
    );
    (if from_host { DOCKER0 } else { ETH0 }, f)
}

/// The source address and port of a forwarded frame (after NAT).
fn src_of(f: &[u8]) -> (Ipv4Addr, u16) {
    let a = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let ihl = usize::from(f[14] & 0x0f) * 4;
    (a, u16::from_be_bytes([f[14 + ihl], f[15 + ihl]]))
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

fn forwarded(out: &[(Action, Vec<u8>)]) -> usize {
    out.iter()
        .filter(|(a, _)| matches!(a, Action::Forward { .. }))
        .count()
}

/// UDP flows from the host out, their replies, some of them in the same
/// batch; datagrams with TTL 1, too big, with a bad checksum, on the
/// wrong interface, to a rejected port; expiry and reuse of the entries.
fn udp_traffic(pair: &mut Pair, dport: u16) {
    let remote = |k: u16| Ipv4Addr::new(93, 184, 216, 1 + (k % 7) as u8);
    let flows: Vec<u16> = (0..40).map(|k| 20000 + k).collect();
    for round in 0..6u16 {
        let mut frames: Vec<(IfIndex, Vec<u8>)> = flows
            .iter()
            .map(|&p| udp(true, (HOST, p), (remote(p), dport), 18 + usize::from(round)))
            .collect();
        if round == 2 {
            // TTL 1, too big with DF (eth0's MTU is 1400), too big without,
            // a bad UDP checksum, a rejected port, in on the wrong side.
            let mut t = udp(true, (HOST, flows[1]), (remote(flows[1]), dport), 20);
            t.1[22] = 1;
            fix_ip_checksum(&mut t.1);
            frames.push(t);
            let mut big = udp(true, (HOST, flows[2]), (remote(flows[2]), dport), 1450);
            big.1[20] |= 0x40;
            fix_ip_checksum(&mut big.1);
            frames.push(big);
            frames.push(udp(true, (HOST, flows[3]), (remote(flows[3]), dport), 1450));
            let mut bad = udp(true, (HOST, flows[4]), (remote(flows[4]), dport), 20);
            bad.1[40] ^= 0xff;
            frames.push(bad);
            frames.push(udp(true, (HOST, flows[5]), (remote(flows[5]), 9), 20));
            let mut wrong = udp(true, (HOST, flows[6]), (remote(flows[6]), dport), 20);
            wrong.0 = ETH0;
            wrong.1[..6].copy_from_slice(&ETH0_MAC.0);
            frames.push(wrong);
        }
        if round < 2 {
            // Unreplied yet (conntrack NEW) in round 0: the second is
            // the first of its state and direction, the third replays it.
            pair.batch(&frames);
            pair.batch(&frames);
        }
        let out = pair.batch(&frames);
        // The replies to what went out, to the translated source (the
        // datagram with the bad checksum is INVALID: not translated).
        let replies: Vec<(IfIndex, Vec<u8>)> = out
            .iter()
            .filter(|(a, f)| {
                *a == Action::Forward { port: ETH0 } && f.len() < 200 && src_of(f).0 == OUTSIDE
            })
            .enumerate()
            .map(|(k, (_, f))| {
                let from = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
                let mut r = udp(false, (from, dport), (OUTSIDE, src_of(f).1), 30);
                // TTLs that the seed's `-j TTL --ttl-inc 1` on eth0 leaves
                // alone (255), lifts over the forwarding limit (1), or not.
                r.1[22] = [64, 255, 2, 1, 3][(k + usize::from(round)) % 5];
                fix_ip_checksum(&mut r.1);
                r
            })
            .collect();
        assert!(!replies.is_empty());
        let back = pair.batch(&replies);
        assert!(forwarded(&back) > 0);
        pair.now += SEC / 10;
    }
    pair.same_state();
    // Past the unreplied and stream timeouts: the entries go, their slots
    // are reused by new connections of other flows.
    pair.now += 200 * SEC;
    let frames: Vec<(IfIndex, Vec<u8>)> = (0..64)
        .map(|k| udp(true, (HOST, 30000 + k), (remote(k), dport), 18))
        .collect();
    pair.batch(&frames);
    pair.batch(&frames);
    pair.same_state();
}

/// A TCP connection from the host through MASQUERADE: handshake, data both
/// ways, an out-of-window RST (INVALID), a FIN close; then a DNATed one in
/// from eth0 reset by the host.
fn tcp_traffic(pair: &mut Pair) {
    let server = (Ipv4Addr::new(93, 184, 216, 34), 80);
    let c = (HOST, 41000);
    let (c0, s0) = (1000u32, 900_000u32);
    let out = pair.batch(&[tcp(true, c, server, c0, 0, SYN, 0)]);
    let outside = src_of(&out[0].1);
    pair.batch(&[tcp(false, server, outside, s0, c0 + 1, SYN | ACK, 0)]);
    pair.batch(&[tcp(true, c, server, c0 + 1, s0 + 1, ACK, 0)]);
    let (mut cs, mut ss) = (c0 + 1, s0 + 1);
    for i in 0..20 {
        let mut frames = vec![tcp(true, c, server, cs, ss, PSH | ACK, 100)];
        cs += 100;
        frames.push(tcp(false, server, outside, ss, cs, PSH | ACK, 200));
        ss += 200;
        if i == 10 {
            // Out of the window: INVALID, the connection stays.
            frames.push(tcp(false, server, outside, ss + 10_000_000, cs, RST, 0));
            // A SYN in the middle of the connection.
            frames.push(tcp(true, c, server, cs, 0, SYN, 0));
        }
        let out = pair.batch(&frames);
        assert!(
            forwarded(&out) >= 2,
            "round {i}: {:?}",
            out.iter().map(|o| o.0).collect::<Vec<_>>()
        );
        pair.now += SEC / 100;
    }
    pair.batch(&[tcp(true, c, server, cs, ss, FIN | ACK, 0)]);
    pair.batch(&[tcp(false, server, outside, ss, cs + 1, FIN | ACK, 0)]);
    pair.batch(&[tcp(true, c, server, cs + 1, ss + 1, ACK, 0)]);
    // After the close: TIME_WAIT; a packet more of the old connection.
    pair.batch(&[tcp(true, c, server, cs + 1, ss + 1, ACK, 0)]);
    pair.same_state();

    // In from eth0 to port 8080, DNATed to the host's port 80.
    let client = (Ipv4Addr::new(198, 51, 100, 7), 50000);
    let front = (OUTSIDE, 8080);
    let out = pair.batch(&[tcp(false, client, front, 5, 0, SYN, 0)]);
    assert_eq!(out[0].0, Action::Forward { port: DOCKER0 });
    let back = (HOST, 80);
    pair.batch(&[tcp(true, back, client, 70, 6, SYN | ACK, 0)]);
    let (mut a, mut b) = (6u32, 71u32);
    for _ in 0..10 {
        pair.batch(&[
            tcp(false, client, front, a, b, PSH | ACK, 50),
            tcp(true, back, client, b, a + 50, ACK, 0),
        ]);
        a += 50;
        b += 0;
    }
    // The host resets it: the entry goes (and a late segment finds none).
    pair.batch(&[tcp(true, back, client, b, a, RST | ACK, 0)]);
    pair.batch(&[tcp(false, client, front, a, b, PSH | ACK, 50)]);
    pair.same_state();
}

fn fix_ip_checksum(f: &mut [u8]) {
    f[24] = 0;
    f[25] = 0;
    let c = !fastables_packet::checksum::fold(fastables_packet::checksum::sum(&f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn the_seed_rules_decide_the_same_with_the_cache() {
    for ahead in [false, true] {
        let mut pair = Pair::new(SEED, ahead);
        udp_traffic(&mut pair, 53);
        tcp_traffic_seed(&mut pair);
        assert!(pair.hits() > 150, "ahead {ahead}: {} hits", pair.hits());
    }
}

/// The seed has no DNAT: only the MASQUERADEd connection of [`tcp_traffic`].
fn tcp_traffic_seed(pair: &mut Pair) {
    let server = (Ipv4Addr::new(93, 184, 216, 34), 443);
    let c = (HOST, 42000);
    let out = pair.batch(&[tcp(true, c, server, 1, 0, SYN, 0)]);
    let outside = src_of(&out[0].1);
    pair.batch(&[tcp(false, server, outside, 500, 2, SYN | ACK, 0)]);
    let (mut cs, ss) = (2u32, 501u32);
    for _ in 0..30 {
        pair.batch(&[tcp(true, c, server, cs, ss, PSH | ACK, 64)]);
        cs += 64;
    }
    pair.batch(&[tcp(false, server, outside, ss, cs, RST, 0)]);
    pair.batch(&[tcp(true, c, server, cs, ss, PSH | ACK, 64)]);
    pair.same_state();
}

#[test]
fn nat_both_ways_reloads_and_flushes_decide_the_same_with_the_cache() {
    for ahead in [false, true] {
        let mut pair = Pair::new(MIXED, ahead);
        udp_traffic(&mut pair, 53);
        tcp_traffic(&mut pair);
        // DNATed UDP in from eth0, answered by the host.
        for round in 0..5u16 {
            // The TTL target takes 10 off: 11 and 5 expire, 12 leaves with 1.
            let ttls = [64u8, 11, 12, 5, 255];
            let ttl = |k: u16| {
                if round == 0 {
                    64
                } else {
                    ttls[usize::from(k + round) % 5]
                }
            };
            let frames: Vec<(IfIndex, Vec<u8>)> = (0..16)
                .map(|k| {
                    let src = (Ipv4Addr::new(198, 51, 100, 9), 7000 + k);
                    let mut f = udp(false, src, (OUTSIDE, 5353), 20);
                    f.1[22] = ttl(k);
                    fix_ip_checksum(&mut f.1);
                    f
                })
                .collect();
            let out = pair.batch(&frames);
            let expired = (0..16).filter(|&k| matches!(ttl(k), 11 | 5)).count();
            assert_eq!(forwarded(&out), 16 - expired, "round {round}");
            let replies: Vec<(IfIndex, Vec<u8>)> = (0..16)
                .map(|k| {
                    udp(
                        true,
                        (HOST, 53),
                        (Ipv4Addr::new(198, 51, 100, 9), 7000 + k),
                        40,
                    )
                })
                .collect();
            assert_eq!(forwarded(&pair.batch(&replies)), 16);
        }
        // raw drops these, and does not track those (twice each).
        for _ in 0..2 {
            let out = pair.batch(&[
                udp(
                    false,
                    (Ipv4Addr::new(203, 0, 113, 5), 4000),
                    (OUTSIDE, 5353),
                    20,
                ),
                udp(true, (HOST, 4001), (Ipv4Addr::new(93, 184, 216, 9), 7), 20),
            ]);
            assert!(matches!(out[0].0, Action::Drop(_)));
            assert_eq!(out[1].0, Action::Forward { port: ETH0 });
        }
        pair.same_state();
        let before = pair.hits();
        assert!(before > 300, "ahead {ahead}: {before} hits");
        // A reload: the established UDP flows to port 53 are dropped now.
        pair.reload(MIXED2);
        assert!(pair.p[0].flow_cache_usable());
        let frames: Vec<(IfIndex, Vec<u8>)> = (0..40)
            .map(|k| {
                udp(
                    true,
                    (HOST, 30000 + k),
                    (Ipv4Addr::new(93, 184, 216, 1 + (k % 7) as u8), 53),
                    18,
                )
            })
            .collect();
        let out = pair.batch(&frames);
        assert_eq!(forwarded(&out), 0, "dropped after the reload");
        udp_traffic(&mut pair, 123);
        tcp_traffic(&mut pair);
        assert!(pair.hits() > before);
        // A flush: every connection starts again.
        for p in &mut pair.p {
            p.conntrack_mut().unwrap().clear();
        }
        udp_traffic(&mut pair, 123);
        pair.same_state();
    }
}

#[test]
fn a_ruleset_that_is_not_flow_invariant_turns_the_cache_off() {
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A FORWARD -m conntrack --ctstate NEW -j ACCEPT\n\
                 -A FORWARD -m length --length 0:100 -j ACCEPT\nCOMMIT\n";
    let cfg = format!("{}{ROUTES}", common::LAN);
    let cfg = Config::parse(&cfg, "/t/fastables.toml").unwrap();
    let (_, c) = compile(rules);
    let mut p = Pipeline::new(&cfg, c).unwrap();
    assert!(!p.flow_cache_usable());
    for _ in 0..3 {
        let (port, f) = udp(true, (HOST, 1000), (Ipv4Addr::new(93, 184, 216, 1), 53), 20);
        let out = common::run_spares(&mut p, port, &f, 2, SEC);
        assert_eq!(out.action, Action::Forward { port: ETH0 });
    }
    assert_eq!(p.flow_cache_hits(), 0);
}

#[test]
fn workers_flow_cache_false_turns_it_off() {
    for (line, on) in [
        ("", true),
        ("flow_cache = true\n", true),
        ("flow_cache = false\n", false),
    ] {
        let cfg = format!("{}{ROUTES}\n[workers]\n{line}", common::LAN);
        let cfg = Config::parse(&cfg, "/t/fastables.toml").unwrap();
        assert_eq!(cfg.workers.flow_cache, on);
        let (_, c) = compile(SEED);
        let p = Pipeline::new(&cfg, c).unwrap();
        assert_eq!(p.flow_cache_usable(), on, "{line}");
    }
    let bad = format!("{}\n[workers]\nflow_cache = 1\n", common::LAN);
    assert!(Config::parse(&bad, "/t/fastables.toml").is_err());
}
