//! The whole forwarding pipeline per packet, in batches of 64: parse, L2
//! check, PREROUTING (raw, mangle, nat), route lookup, TTL check and
//! decrement, FORWARD (mangle, filter), POSTROUTING (mangle, nat), neighbor
//! lookup and L2 rewrite; with the seed rules, conntrack and MASQUERADE.
//!
//! Cases (`pipeline/<frame>/<rules>`): the seed topology (demo/fastables.toml)
//! with the empty ruleset, the seed's own rules (demo/rules.v4, UDP only),
//! and filter FORWARD chains of 10, 100 and 1000 rules where the packet
//! matches the second to last rule; 64-byte UDP and 1500-byte TCP frames,
//! forwarded from docker0 to eth0. `udp_64B/seed_1m` and `seed_1m_single`:
//! the seed rules with a million connections in the table (see
//! [`bench_pipeline_spread`]); `seed_1m_new`: every packet a new
//! connection in that table; `seed_1m_churn`: the same with the removal of
//! each connection timed too.
//!
//! The pipeline rewrites the frames in place, so each batch gets the pristine
//! frames copied back before it runs; only `process_batch` is timed
//! (`iter_custom`, one `Instant` pair per batch of 64, well under 1 ns per
//! packet). Throughput is per packet: criterion's "thrpt" is packets/s and
//! time / 64 is ns per packet.
//!
//! Run: `cargo bench -p fastables-benches --bench pipeline -- --warm-up-time 1 --measurement-time 3`

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

mod pipeline_setup;
use pipeline_setup::{time_batches, FrameKind, Harness, SpreadHarness, BATCH};

fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    for kind in [FrameKind::Udp64, FrameKind::Tcp1500] {
        for rules in ["empty", "seed", "10", "100", "1000"] {
            if kind == FrameKind::Tcp1500 && rules == "seed" {
                // The seed MASQUERADEs TCP to 15 ports (55666-55680): 64 TCP
                // flows to one server cannot all have a binding (the 16th
                // and later are dropped, ConntrackInsertFailed).
                continue;
            }
            let mut h = Harness::new(&pipeline_setup::rules_text(rules), kind);
            g.bench_function(BenchmarkId::new(kind.name(), rules), |b| {
                b.iter_custom(|iters| time_batches(&mut h, iters))
            });
            h.check();
        }
    }
    g.finish();
}

/// The seed rules' established NATed UDP flow with `FASTABLES_BENCH_FLOWS`
/// (default 1 million) connections in the table, 64 random ones per batch
/// (`pipeline/udp_64B/seed_1m`): the conntrack entries are cache misses.
/// `seed_1m_single`: the same with the batch's conntrack lookups one at a
/// time (`conntrack_lookup_ahead` off), for the ratio; `seed_1m_nocache`:
/// without the flow cache (every packet runs the chains).
fn bench_pipeline_spread(c: &mut Criterion) {
    let flows = std::env::var("FASTABLES_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000usize);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    let base = if flows == 1_000_000 {
        "seed_1m".to_string()
    } else {
        format!("seed_{flows}")
    };
    for (ahead, cache, suffix) in [
        (true, true, ""),
        (false, true, "_single"),
        (true, false, "_nocache"),
    ] {
        bench_harness(&mut g, format!("{base}{suffix}"), || {
            SpreadHarness::with_cache(flows, ahead, cache)
        });
    }
    // New connections in a table of `flows` (`seed_1m_new`): every packet
    // of every batch the first of a connection that MASQUERADE binds and
    // conntrack inserts ([`SpreadHarness::churn`]); and the same with the
    // removal of each connection timed as well (`seed_1m_churn`).
    bench_harness(&mut g, format!("{base}_new"), || {
        SpreadHarness::churn(flows)
    });
    bench_harness(&mut g, format!("{base}_churn"), || {
        SpreadHarness::churn_timed(flows)
    });
    g.finish();
}

/// One case of 64-byte UDP batches from the harness `make` builds.
/// Criterion names the case before it runs it: the table is built only
/// then (and one at a time: each is hundreds of MB).
fn bench_harness(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: String,
    make: impl Fn() -> SpreadHarness,
) {
    let mut h: Option<SpreadHarness> = None;
    g.bench_function(BenchmarkId::new(FrameKind::Udp64.name(), name), |b| {
        let h = h.get_or_insert_with(&make);
        b.iter_custom(|iters| {
            let t = time_batches(h, iters);
            h.check();
            t
        })
    });
}

criterion_group!(benches, bench_pipeline, bench_pipeline_spread);
criterion_main!(benches);
