//! A workload for instruction counting (`perf/callgrind.sh`): runs one part of
//! the data path on `PACKETS` packets and exits. Only the functions named
//! `measure_*` do the measured work (callgrind is run with
//! `--toggle-collect=*measure_*`), so set-up and the frame restore between
//! batches are not counted.
//!
//! Usage: `pipeline_count MODE PACKETS`, MODE one of
//! - `parse[:tcp1500]`: `parse_frame` on 64-byte UDP frames (1514-byte TCP
//!   frames with `:tcp1500`);
//! - `rules:<empty|N>[:tcp1500]`: filter FORWARD evaluation alone
//!   (`CompiledRuleset::run`) with the bench ruleset of N rules, the packet
//!   matching rule N - 1 (the context of a 64-byte UDP frame unless `:tcp1500`);
//! - `pipeline:<empty|seed|N>[:tcp1500]`: the whole pipeline on batches of 64
//!   frames (64-byte UDP unless `:tcp1500`); PACKETS is rounded up to a
//!   multiple of 64;
//! - `pipeline:<empty|seed|N>:stats`: the same, plus what `fastables run`'s
//!   worker records per batch for the latency histograms (two clock reads,
//!   two histogram updates), as with `[stats] latency = true`;
//! - `pipeline:<empty|seed|N>:trace`: the same with a `fastables trace` set
//!   whose filter matches none of the packets (TCP port 1);
//! - `pipeline:<empty|seed|N>:nocache`: the same without the flow cache
//!   (`PipelineOptions::flow_cache` off: every packet runs the chains);
//! - `pipeline:<empty|seed|N>:nocsum`: the same with `[conntrack] checksum
//!   = false` (nf_conntrack_checksum 0: conntrack does not verify the
//!   transport checksum);
//! - `pipeline:new`: the seed rules, every packet (64-byte UDP) the first of
//!   a new connection that MASQUERADE binds and conntrack confirms (PACKETS
//!   flows, an empty table of room for all of them);
//! - `conntrack:<lookup|batch|new>`: in a table of 4096 TCP connections, a
//!   lookup of a random one (`lookup`), the same 64 at a time with
//!   `lookup_batch` (`batch`, PACKETS rounded up to a multiple of 64), or a
//!   new connection (SYN classified, a source port chosen in 1024-65535,
//!   confirmed with the SNAT binding, then removed: `new`), or the same
//!   with the nat table's rules run for it, PREROUTING's null binding and
//!   POSTROUTING's MASQUERADE (`masq`, `fastables_benches::masq_new`).
//!
//! The rulesets, frames and topology are those of `benches/pipeline.rs`.

use std::hint::black_box;
use std::process::ExitCode;

use fastables_conntrack::tcp_hdr::SYN;
use fastables_conntrack::{
    Dir, EntryId, NatRange, PacketFacts, Table as CtTable, TableConfig, Track, Tuple, IPPROTO_TCP,
};
use fastables_packet::parse::parse_frame;
use fastables_rules::compile::{CompiledRuleset, RuleState};
use fastables_rules::ctx::PacketCtx;
use fastables_rules::model::{Hook, Table};

#[path = "../benches/pipeline_setup/mod.rs"]
mod pipeline_setup;
use pipeline_setup::{Batches, FrameKind, Harness, SpreadHarness, BATCH};

#[inline(never)]
fn measure_parse(frames: &[Vec<u8>], n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        if parse_frame(black_box(&frames[i % frames.len()])).is_ok() {
            ok += 1;
        }
    }
    ok
}

#[inline(never)]
fn measure_rules(
    rules: &CompiledRuleset,
    state: &mut RuleState,
    ctxs: &[PacketCtx],
    n: usize,
) -> usize {
    let mut accepted = 0;
    for i in 0..n {
        let mut c = black_box(ctxs[i % ctxs.len()]);
        let v = rules.run(Table::Filter, Hook::Forward, &mut c, state, 0);
        if v == fastables_rules::ctx::Verdict::Accept {
            accepted += 1;
        }
    }
    accepted
}

#[inline(never)]
fn measure_batch(h: &mut Harness, now_ns: u64) {
    h.run(now_ns);
}

#[inline(never)]
fn measure_batch_stats(
    h: &mut Harness,
    now_ns: u64,
    batch: &mut fastables_stats::Latency,
    pkt: &mut fastables_stats::Latency,
) {
    // As the worker loop of `fastables run` does it.
    let t0 = std::time::Instant::now();
    h.run(now_ns);
    let ns = t0.elapsed().as_nanos() as u64;
    batch.record(ns);
    pkt.record(ns / BATCH as u64);
}

#[inline(never)]
fn measure_new(h: &mut SpreadHarness, now_ns: u64) {
    h.run(now_ns);
}

const CT_FLOWS: u32 = 4096;

fn ct_flow(i: u32) -> Tuple {
    Tuple::new(
        IPPROTO_TCP,
        0x0a00_0000 + i / 1000,
        1024 + (i % 1000) as u16,
        0x0808_0808,
        80,
    )
}

fn ct_table() -> CtTable {
    let mut t = CtTable::new(TableConfig {
        max: 2 * CT_FLOWS,
        buckets: CT_FLOWS,
        seed: 1,
        ..Default::default()
    })
    .expect("table");
    for i in 0..CT_FLOWS {
        let o = ct_flow(i);
        t.insert(o, o.invert().expect("invertible"), 0)
            .expect("insert");
    }
    t
}

fn ct_spread() -> Vec<Tuple> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ct_flow((x % u64::from(CT_FLOWS)) as u32)
        })
        .collect()
}

#[inline(never)]
fn measure_ct_lookup(t: &CtTable, tuples: &[Tuple], n: usize) -> usize {
    (0..n)
        .filter(|i| t.lookup(black_box(&tuples[i % tuples.len()]), 1).is_some())
        .count()
}

#[inline(never)]
fn measure_ct_batch(
    t: &CtTable,
    tuples: &[Tuple],
    n: usize,
    out: &mut [Option<(EntryId, Dir)>],
) -> usize {
    let mut found = 0;
    for b in 0..n.div_ceil(64) {
        let at = (b * 64) % (tuples.len() - 63);
        t.lookup_batch(black_box(&tuples[at..at + 64]), 1, out);
        found += out.iter().filter(|o| o.is_some()).count();
    }
    found
}

#[inline(never)]
fn measure_ct_new(t: &mut CtTable, n: usize) -> usize {
    let nat = 0x0a00_020f;
    let range = NatRange::addrs(nat, nat).with_ports(1024, 65535);
    let mut made = 0;
    for i in 0..n as u32 {
        let p = fastables_benches::syn(0xac12_0000, i);
        if let Track::New(nc) = t.track(black_box(&p), 2) {
            if let Ok(id) = t.confirm(nc, None, Some(&range), 2) {
                made += 1;
                black_box(t.remove(id));
            }
        }
    }
    made
}

/// The SYN of the `k`th connection from 172.19.0.2 and one of
/// [`SHARED_PORTS`] source ports (port `40000 + k % SHARED_PORTS`), each to
/// its own server (9.0.0.0 + `k`), port 443.
fn shared_syn(k: u32) -> PacketFacts<'static> {
    PacketFacts::tcp(
        0xac13_0002,
        40_000 + (k % SHARED_PORTS) as u16,
        0x0900_0000 + k,
        443,
        SYN,
        k,
        0,
        64240,
        0,
        &[],
    )
}

/// Source ports of [`shared_syn`]: [`SHARED_PER_PORT`] connections from
/// each are kept in the table of `conntrack:shared`.
const SHARED_PORTS: u32 = 64;
const SHARED_PER_PORT: u32 = 16;

/// [`ct_table`] with [`SHARED_PORTS`] × [`SHARED_PER_PORT`] MASQUERADEd
/// connections from one address: many connections per source address and
/// port, as behind a resolver or a peer-to-peer client.
fn ct_table_shared() -> CtTable {
    let mut t = ct_table();
    let nat = 0x0a00_020f;
    let range = NatRange::addrs(nat, nat).with_ports(1024, 65535);
    for k in 0..SHARED_PORTS * SHARED_PER_PORT {
        let Track::New(nc) = t.track(&shared_syn(k), 0) else {
            panic!("connection {k} is not new");
        };
        let dnat = NatRange::null_binding(nc.entry.reply().src);
        t.confirm(nc, Some(&dnat), Some(&range), 0)
            .expect("confirm");
    }
    t
}

#[inline(never)]
fn measure_ct_masq(
    t: &mut CtTable,
    rules: &CompiledRuleset,
    state: &mut RuleState,
    n: usize,
    syn_of: impl Fn(u32) -> PacketFacts<'static>,
) -> usize {
    let mut made = 0;
    for i in 0..n as u32 {
        let p = syn_of(i);
        if fastables_benches::masq_new(t, rules, state, black_box(&p), 0x0a00_020f, 2) {
            made += 1;
        }
    }
    made
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: pipeline_count MODE PACKETS\n  MODE: parse[:tcp1500] | rules:<empty|N>[:tcp1500] | pipeline:<empty|seed|N>[:tcp1500|:stats|:trace|:nocache|:nocsum] | pipeline:new | conntrack:<lookup|batch|new|masq|shared>"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, packets] = args.as_slice() else {
        return usage();
    };
    let Ok(n) = packets.parse::<usize>() else {
        return usage();
    };
    let mut parts: Vec<&str> = mode.split(':').collect();
    let kind = if parts.last() == Some(&"tcp1500") {
        parts.pop();
        FrameKind::Tcp1500
    } else {
        FrameKind::Udp64
    };
    match parts.as_slice() {
        ["parse"] => {
            let frames: Vec<Vec<u8>> = (0..BATCH).map(|i| pipeline_setup::frame(kind, i)).collect();
            let ok = measure_parse(&frames, n);
            assert_eq!(ok, n, "every frame parses");
        }
        ["rules", name] => {
            let rules = pipeline_setup::compile(&pipeline_setup::rules_text(name));
            let ctxs: Vec<PacketCtx> = (0..BATCH)
                .map(|i| pipeline_setup::forward_ctx(kind, i))
                .collect();
            pipeline_setup::check_forward_accept(&rules, &ctxs[0]);
            let mut state = RuleState::new(&rules);
            let accepted = measure_rules(&rules, &mut state, &ctxs, n);
            assert_eq!(accepted, n, "every packet is accepted");
        }
        ["pipeline", "new"] => {
            let batches = n.div_ceil(BATCH);
            let mut h = SpreadHarness::fresh(batches * BATCH, true);
            for b in 0..batches {
                h.restore();
                measure_new(&mut h, 1_000_000_000 + b as u64);
                h.check();
            }
            let made = h.connections();
            assert_eq!(made, batches * BATCH, "every packet made its connection");
        }
        ["pipeline", name, "stats"] => {
            let mut h = Harness::new(&pipeline_setup::rules_text(name), kind);
            let (mut b, mut p) = (
                fastables_stats::Latency::new(),
                fastables_stats::Latency::new(),
            );
            for i in 0..n.div_ceil(BATCH) {
                h.restore();
                measure_batch_stats(&mut h, 1_000_000_000 + i as u64, &mut b, &mut p);
            }
            h.check();
            assert_eq!(b.count() as usize, n.div_ceil(BATCH));
        }
        ["pipeline", name, "trace"] => {
            let mut h = Harness::new(&pipeline_setup::rules_text(name), kind);
            let filter = fastables_dataplane::pipeline::TraceFilter {
                proto: Some(IPPROTO_TCP),
                dport: Some(1),
                ..Default::default()
            };
            h.pipeline_mut().set_trace(Some((filter, None)));
            for b in 0..n.div_ceil(BATCH) {
                h.restore();
                measure_batch(&mut h, 1_000_000_000 + b as u64);
            }
            h.check();
            let mut records = 0;
            h.pipeline_mut().drain_trace(|_| records += 1);
            assert_eq!(records, 0, "the filter matches nothing");
        }
        ["pipeline", name, "nocsum"] => {
            let mut cfg = pipeline_setup::seed_config();
            cfg.conntrack.checksum = false;
            let mut h = Harness::with_config(
                &pipeline_setup::rules_text(name),
                kind,
                Default::default(),
                cfg,
            );
            for b in 0..n.div_ceil(BATCH) {
                h.restore();
                measure_batch(&mut h, 1_000_000_000 + b as u64);
            }
            h.check();
        }
        ["pipeline", name, "nocache"] => {
            let opts = fastables_dataplane::pipeline::PipelineOptions {
                flow_cache: false,
                ..Default::default()
            };
            let mut h = Harness::with_options(&pipeline_setup::rules_text(name), kind, opts);
            for b in 0..n.div_ceil(BATCH) {
                h.restore();
                measure_batch(&mut h, 1_000_000_000 + b as u64);
            }
            h.check();
        }
        ["pipeline", name] => {
            let mut h = Harness::new(&pipeline_setup::rules_text(name), kind);
            for b in 0..n.div_ceil(BATCH) {
                h.restore();
                measure_batch(&mut h, 1_000_000_000 + b as u64);
            }
            h.check();
        }
        ["conntrack", "lookup"] => {
            let t = ct_table();
            let found = measure_ct_lookup(&t, &ct_spread(), n);
            assert_eq!(found, n, "every flow is found");
        }
        ["conntrack", "batch"] => {
            let t = ct_table();
            let mut out = vec![None; 64];
            let found = measure_ct_batch(&t, &ct_spread(), n, &mut out);
            assert_eq!(found, n.div_ceil(64) * 64, "every flow is found");
        }
        ["conntrack", "new"] => {
            let mut t = ct_table();
            let made = measure_ct_new(&mut t, n);
            assert_eq!(made, n, "every connection is made");
        }
        ["conntrack", "masq"] => {
            let mut t = ct_table();
            let rules = fastables_benches::nat_rules();
            let mut state = RuleState::new(&rules);
            let made = measure_ct_masq(&mut t, &rules, &mut state, n, |i| {
                fastables_benches::syn(0xac12_0000, i)
            });
            assert_eq!(made, n, "every connection is made");
        }
        ["conntrack", "shared"] => {
            let mut t = ct_table_shared();
            let rules = fastables_benches::nat_rules();
            let mut state = RuleState::new(&rules);
            let kept = SHARED_PORTS * SHARED_PER_PORT;
            let made = measure_ct_masq(&mut t, &rules, &mut state, n, |i| shared_syn(kept + i));
            assert_eq!(made, n, "every connection is made");
        }
        _ => return usage(),
    }
    ExitCode::SUCCESS
}
