//! Conntrack table benchmarks.
//!
//! cargo bench -p fastables-benches --bench conntrack -- --warm-up-time 1 --measurement-time 3
//! FASTABLES_BENCH_10M=1 adds the 10-million-entry table (about 1.6 GB).
//! FASTABLES_BENCH_HUGE=0: no huge pages for the tables (`fastables run`
//! asks for them: `fastables_xdp::advise_huge_pages`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fastables_benches::{masq_new, nat_rules, syn, syn_ctx, SRV};
use fastables_conntrack::tcp_hdr::{ACK, SYN};
use fastables_conntrack::{
    Dir, EntryId, NatRange, PacketFacts, Table, TableConfig, Track, Tuple, IPPROTO_TCP,
    PREFETCH_AHEAD,
};
use fastables_dataplane::pipeline::nat::range_of;
use fastables_rules::compile::RuleState;
use fastables_rules::ctx::Verdict;
use fastables_rules::model::{Hook, Table as RTable};

fn flow(i: u32) -> Tuple {
    Tuple::new(
        IPPROTO_TCP,
        0x0a00_0000 + i / 50_000,
        1024 + (i % 50_000) as u16,
        SRV,
        80,
    )
}

/// A table holding `n` entries (one of them a fully established TCP flow) and
/// `max` = `buckets` = `n` rounded up with some headroom.
fn filled(n: u32) -> Table {
    let cap = n + n / 8 + 1024;
    let mut t = Table::new(TableConfig {
        max: cap,
        buckets: cap,
        seed: 1,
        ..Default::default()
    })
    .unwrap();
    // Huge pages for the entries, as `fastables run` asks
    // (FASTABLES_BENCH_HUGE=0: the system's default, 4 KiB pages).
    if std::env::var("FASTABLES_BENCH_HUGE").as_deref() != Ok("0") {
        for (addr, len) in t.regions() {
            let _ = fastables_xdp::advise_huge_pages(addr, len);
        }
    }
    for i in 1..n {
        let o = flow(i);
        t.insert(o, o.invert().unwrap(), 0).unwrap();
    }
    t
}

/// The next burst of new connections: `tuples.len()` SYNs from `net`
/// (counting on from `*i`) into `syns`, their tuples looked up together
/// (`lookup_batch`, as the pipeline's lookups ahead do), and the first
/// [`PREFETCH_AHEAD`] of them prefetched (`prefetch_new`, source NAT to `nat`).
fn burst(
    t: &Table,
    net: u32,
    i: &mut u32,
    syns: &mut Vec<PacketFacts<'static>>,
    tuples: &mut [Tuple],
    out: &mut [Option<(EntryId, Dir)>],
    nat: u32,
) {
    syns.clear();
    for tu in tuples.iter_mut() {
        *i = i.wrapping_add(1);
        let p = syn(net, *i);
        *tu = p.tuple().unwrap();
        syns.push(p);
    }
    t.lookup_batch(tuples, 2, out);
    for tu in tuples.iter().take(PREFETCH_AHEAD) {
        t.prefetch_new(tu, Some(nat));
    }
}

/// While connection `k` of a burst is made: prefetch for the one [`PREFETCH_AHEAD`]
/// after it.
fn prefetch_ahead(t: &Table, tuples: &[Tuple], k: usize, nat: u32) {
    if let Some(tu) = tuples.get(k + PREFETCH_AHEAD) {
        t.prefetch_new(tu, Some(nat));
    }
}

/// SYN, SYN/ACK, ACK of flow 0 (src 10.0.0.0:1024).
fn establish(t: &mut Table) -> (PacketFacts<'static>, Tuple) {
    let o = flow(0);
    let syn = PacketFacts::tcp(o.src, o.sport, o.dst, o.dport, SYN, 1000, 0, 64240, 0, &[]);
    let Track::New(n) = t.track(&syn, 0) else {
        panic!("SYN not new")
    };
    t.confirm(n, None, None, 0).unwrap();
    let sa = PacketFacts::tcp(
        o.dst,
        o.dport,
        o.src,
        o.sport,
        SYN | ACK,
        5000,
        1001,
        65160,
        0,
        &[],
    );
    assert!(matches!(t.track(&sa, 0), Track::Tracked(_)));
    let ack = PacketFacts::tcp(o.src, o.sport, o.dst, o.dport, ACK, 1001, 5001, 502, 0, &[]);
    assert!(matches!(t.track(&ack, 0), Track::Tracked(_)));
    (ack, o)
}

fn sizes() -> Vec<(u32, &'static str)> {
    let mut v = vec![(1_000, "1k"), (1_000_000, "1m")];
    if std::env::var_os("FASTABLES_BENCH_10M").is_some() {
        v.push((10_000_000, "10m"));
    }
    v
}

fn bench(c: &mut Criterion) {
    let nat_rules = nat_rules();
    let mut state = RuleState::new(&nat_rules);
    for (n, name) in sizes() {
        let mut t = filled(n);
        let (ack, o) = establish(&mut t);
        let mut g = c.benchmark_group("conntrack");
        g.bench_with_input(BenchmarkId::new("lookup_established", name), &o, |b, o| {
            b.iter(|| black_box(t.lookup(black_box(o), 1)))
        });
        // Lookups spread over the whole table (cache misses at 1m+).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let spread: Vec<Tuple> = (0..65_536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                flow((x % u64::from(n)) as u32)
            })
            .collect();
        let mut k = 0usize;
        g.bench_function(BenchmarkId::new("lookup_spread", name), |b| {
            b.iter(|| {
                k = (k + 1) & 65_535;
                black_box(t.lookup(&spread[k], 1))
            })
        });
        // The same spread lookups, 64 at a time (the worker's burst): ns per
        // batch / 64 is the time per lookup.
        let mut out = vec![None; 64];
        let mut k64 = 0usize;
        g.throughput(criterion::Throughput::Elements(64));
        g.bench_function(BenchmarkId::new("lookup_spread_batch64", name), |b| {
            b.iter(|| {
                k64 = (k64 + 64) & 65_535;
                t.lookup_batch(black_box(&spread[k64..k64 + 64]), 1, &mut out);
                black_box(&out);
            })
        });
        g.throughput(criterion::Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("track_established_ack", name), |b| {
            b.iter(|| black_box(t.track(black_box(&ack), 1)))
        });
        // New connection: classify the SYN, choose a source port in a range
        // (MASQUERADE --to-ports), insert; then remove to keep the size steady.
        let nat = 0x0a00_020f;
        let range = NatRange::addrs(nat, nat).with_ports(1024, 65535);
        let mut i = 0u32;
        g.bench_function(BenchmarkId::new("new_conn_snat_insert_remove", name), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let p = syn(0xac12_0000, i);
                if let Track::New(nc) = t.track(&p, 2) {
                    if let Ok(id) = t.confirm(nc, None, Some(&range), 2) {
                        black_box(t.remove(id));
                    }
                }
            })
        });
        // The same 64 at a time, as a worker's burst of new connections
        // goes: the burst's tuples looked up together (`lookup_batch`, the
        // pipeline's lookups ahead), then each SYN classified, bound and
        // inserted, and removed again, with the NAT buckets of the one
        // PREFETCH_AHEAD connections later prefetched (`prefetch_new`, as the
        // pipeline does). ns per batch / 64 is the time per connection.
        let mut syns: Vec<PacketFacts> = Vec::with_capacity(64);
        let mut tuples = vec![flow(0); 64];
        let mut j = 0u32;
        g.throughput(criterion::Throughput::Elements(64));
        g.bench_function(BenchmarkId::new("new_conn_snat_batch64", name), |b| {
            b.iter(|| {
                burst(
                    &t,
                    0xac13_0000,
                    &mut j,
                    &mut syns,
                    &mut tuples,
                    &mut out,
                    nat,
                );
                for (k, p) in syns.iter().enumerate() {
                    prefetch_ahead(&t, &tuples, k, nat);
                    if let Track::New(nc) = t.track(p, 2) {
                        if let Ok(id) = t.confirm(nc, None, Some(&range), 2) {
                            black_box(t.remove(id));
                        }
                    }
                }
            })
        });
        // The same with the nat table's rules run for each SYN, as the
        // pipeline runs them for a new connection: PREROUTING (no rule: a
        // null destination binding) and POSTROUTING, whose MASQUERADE
        // gives the range (`fastables_dataplane::pipeline::nat::range_of`).
        let mut ctx = syn_ctx(&syn(0xac14_0000, 0));
        let fired = nat_rules.run(RTable::Nat, Hook::Postrouting, &mut ctx, &mut state, 0);
        let Verdict::Nat(id) = fired else {
            panic!("MASQUERADE must fire for the bench's SYNs, got {fired:?}")
        };
        assert_eq!(
            range_of(nat_rules.target(id), Some(nat)),
            Some(range),
            "the rule gives the range of new_conn_snat_*"
        );
        let mut k = 0u32;
        g.bench_function(BenchmarkId::new("new_conn_masq_rules_batch64", name), |b| {
            b.iter(|| {
                burst(
                    &t,
                    0xac14_0000,
                    &mut k,
                    &mut syns,
                    &mut tuples,
                    &mut out,
                    nat,
                );
                for (n, p) in syns.iter().enumerate() {
                    prefetch_ahead(&t, &tuples, n, nat);
                    black_box(masq_new(&mut t, &nat_rules, &mut state, p, nat, 2));
                }
            })
        });
        g.throughput(criterion::Throughput::Elements(1));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
