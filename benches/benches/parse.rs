//! `parse_frame` cost per packet, for a minimum-size (64-byte on the wire, 60
//! without FCS) UDP frame and a TCP SYN with the usual Linux options.
//! Run: `cargo bench -p fastables-benches --bench parse`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastables_packet::builder::{self, EthSpec, IpSpec, UdpSpec};
use fastables_packet::fixtures;
use fastables_packet::parse::{l4_checksum_ok, parse_frame};

fn bench_parse(c: &mut Criterion) {
    let udp = builder::udp_frame(
        &EthSpec {
            pad: true,
            ..EthSpec::default()
        },
        &IpSpec::default(),
        &UdpSpec::default(),
        &[0u8; 18],
    );
    assert_eq!(udp.len(), 60, "64 bytes on the wire with the FCS");
    let tcp = fixtures::TCP_SYN.to_vec();

    let mut g = c.benchmark_group("parse_frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("udp_64B", |b| b.iter(|| parse_frame(black_box(&udp))));
    g.bench_function("tcp_syn_74B", |b| b.iter(|| parse_frame(black_box(&tcp))));
    g.finish();

    let mut g = c.benchmark_group("l4_checksum_ok");
    g.throughput(Throughput::Elements(1));
    let pu = parse_frame(&udp).expect("valid frame");
    let pt = parse_frame(&tcp).expect("valid frame");
    g.bench_function("udp_64B", |b| {
        b.iter(|| l4_checksum_ok(black_box(&udp), black_box(&pu)))
    });
    g.bench_function("tcp_syn_74B", |b| {
        b.iter(|| l4_checksum_ok(black_box(&tcp), black_box(&pt)))
    });
    g.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
