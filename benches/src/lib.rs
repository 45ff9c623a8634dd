//! Benchmarks live in `benches/benches/`; this library holds what a
//! criterion bench and the callgrind workload (`examples/pipeline_count.rs`)
//! both run, so that the two measure the same thing.

use fastables_conntrack::tcp_hdr::SYN;
use fastables_conntrack::{NatRange, PacketFacts, Table, Track, IPPROTO_TCP};
use fastables_dataplane::pipeline::nat::range_of;
use fastables_rules::compile::{CompiledRuleset, RuleState};
use fastables_rules::ctx::{PacketCtx, Verdict};
use fastables_rules::model::{Hook, Table as RTable};

/// The nat table of a NAT box: MASQUERADE for the inside's TCP, ports
/// 1024-65535.
pub const NAT_RULES: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 172.16.0.0/12 -p tcp -j MASQUERADE --to-ports 1024-65535
COMMIT
";

/// [`NAT_RULES`] compiled.
pub fn nat_rules() -> CompiledRuleset {
    let rs =
        fastables_rules::parse::parse_restore(NAT_RULES, "nat.rules").expect("nat rules parse");
    CompiledRuleset::compile(&rs, &[]).expect("nat rules compile")
}

/// The server the benches' new connections go to: 8.8.8.8.
pub const SRV: u32 = 0x0808_0808;

/// The SYN of new connection `i` (source port `i`, the address `net +
/// i / 65536`) to [`SRV`] port 443.
pub fn syn(net: u32, i: u32) -> PacketFacts<'static> {
    PacketFacts::tcp(
        net + (i >> 16),
        i as u16,
        SRV,
        443,
        SYN,
        i,
        0,
        64240,
        0,
        &[],
    )
}

/// What the nat table's rules see of a SYN.
pub fn syn_ctx(p: &PacketFacts) -> PacketCtx {
    let mut c = PacketCtx::new();
    c.src = p.src;
    c.dst = p.dst;
    c.proto = IPPROTO_TCP;
    c.has_l4 = true;
    c.sport = p.sport;
    c.dport = p.dport;
    c.tcp_flags = SYN;
    c.len = 60;
    c.ttl = 63;
    c
}

/// A new connection as the pipeline makes one, without the packet's
/// parse, route and rewrite: the SYN classified, the nat table's
/// PREROUTING (no rule: a null destination binding) and POSTROUTING
/// (MASQUERADE to `masq`, `range_of` as the pipeline calls it) run, the
/// connection confirmed (port choice, insertion), then removed so that the
/// table keeps its size. Returns whether it was made.
#[inline]
pub fn masq_new(
    t: &mut Table,
    rules: &CompiledRuleset,
    state: &mut RuleState,
    p: &PacketFacts,
    masq: u32,
    now_ns: u64,
) -> bool {
    let Track::New(nc) = t.track(p, now_ns) else {
        return false;
    };
    let mut ctx = syn_ctx(p);
    let dnat = match rules.run(RTable::Nat, Hook::Prerouting, &mut ctx, state, now_ns) {
        Verdict::Accept => NatRange::null_binding(nc.entry.reply().src),
        _ => return false,
    };
    let snat = match rules.run(RTable::Nat, Hook::Postrouting, &mut ctx, state, now_ns) {
        Verdict::Nat(id) => range_of(rules.target(id), Some(masq)),
        _ => None,
    };
    match t.confirm(nc, Some(&dnat), snat.as_ref(), now_ns) {
        Ok(id) => t.remove(id).is_some(),
        Err(_) => false,
    }
}
