//! The `/metrics` text read back by a real Prometheus parser: the
//! prometheus_client package of Debian (`python3-prometheus-client`), run
//! with Debian's python3. Skipped with a note when it is not installed,
//! except under CI, where that is a failure.

use std::io::Write as _;
use std::process::{Command, Stdio};

use fastables_stats::{render, IfaceSample, Latency, Snapshot, TrafficCounters};

const PYTHON: &str = "/usr/bin/python3";

/// Parses `text` with prometheus_client; returns `name kind labels value`
/// lines, one per sample, sorted.
fn parse(text: &str) -> Option<Vec<String>> {
    let ok = Command::new(PYTHON)
        .args(["-c", "import prometheus_client.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the exposition test: python3-prometheus-client missing"
        );
        eprintln!("note: python3-prometheus-client not installed; skipping");
        return None;
    }
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families as f\n\
        out = []\n\
        for fam in f(sys.stdin.read()):\n\
        \x20   for s in fam.samples:\n\
        \x20       labels = ','.join(k + '=' + v for k, v in sorted(s.labels.items()))\n\
        \x20       out.append(f'{s.name} {fam.type} {labels} {s.value}')\n\
        print('\\n'.join(sorted(out)))\n";
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn a_prometheus_parser_reads_our_metrics() {
    let mut batch = Latency::new();
    for ns in [800, 1_500, 3_000, 40_000, 2_000_000] {
        batch.record(ns);
    }
    let mut pkt = Latency::new();
    pkt.record(120);
    let s = Snapshot {
        interfaces: vec![
            IfaceSample {
                name: "eth0".into(),
                traffic: TrafficCounters {
                    rx_packets: 10,
                    rx_bytes: 1000,
                    tx_packets: 9,
                    tx_bytes: 900,
                },
                ..IfaceSample::default()
            },
            IfaceSample {
                name: "docker\"0".into(),
                ..IfaceSample::default()
            },
            IfaceSample {
                name: "eth1".into(),
                queue: Some(1),
                traffic: TrafficCounters {
                    rx_packets: 4,
                    ..TrafficCounters::default()
                },
                ..IfaceSample::default()
            },
        ],
        drops: vec![("filter_drop", 3), ("conntrack_full", 0)],
        ct_entries: 5,
        ct_max: 262_144,
        ct_counters: vec![("insert", 7), ("early_drop", 0)],
        held: 1,
        counters: vec![("fastables_arp_replies_sent_total", "ARP replies sent.", 4)],
        batch_latency: batch,
        packet_latency: pkt,
        uptime_s: 12.5,
        ..Snapshot::default()
    };
    let Some(samples) = parse(&render(&s)) else {
        return;
    };
    let has = |want: &str| {
        assert!(
            samples.iter().any(|l| l == want),
            "missing `{want}` in:\n{}",
            samples.join("\n")
        )
    };
    has("fastables_rx_packets_total counter interface=eth0 10.0");
    has("fastables_tx_bytes_total counter interface=eth0 900.0");
    has("fastables_rx_packets_total counter interface=eth1,queue=1 4.0");
    has("fastables_rx_packets_total counter interface=docker\"0 0.0");
    has("fastables_drops_total counter reason=filter_drop 3.0");
    has("fastables_arp_replies_sent_total counter  4.0");
    has("fastables_drops_total counter reason=conntrack_full 0.0");
    has("fastables_conntrack_entries gauge  5.0");
    has("fastables_conntrack_insert_total counter  7.0");
    has("fastables_held_frames gauge  1.0");
    has("fastables_batch_latency_seconds_bucket histogram le=0.000001 1.0");
    has("fastables_batch_latency_seconds_bucket histogram le=0.000005 3.0");
    has("fastables_batch_latency_seconds_bucket histogram le=+Inf 5.0");
    has("fastables_batch_latency_seconds_count histogram  5.0");
    has("fastables_packet_processing_seconds_count histogram  1.0");
    has("fastables_uptime_seconds gauge  12.5");
}

/// The operators' metrics (build, per-worker tables, NAT ports, and the
/// live lines of each scrape) read back by the same parser.
#[test]
fn a_prometheus_parser_reads_the_operators_metrics() {
    use std::sync::Arc;
    use std::time::Instant;

    use fastables_stats::{render_live, Health, NatAddress, NatRule, WorkerTable};

    let mut pkt = Latency::new();
    pkt.record(180);
    let s = Snapshot {
        packet_latency: pkt,
        build_info: vec![("version", "0.1.0".into()), ("commit", "abc\"def".into())],
        workers: vec![
            WorkerTable {
                entries: 3,
                max: 100,
            },
            WorkerTable {
                entries: 4,
                max: 100,
            },
        ],
        nat_addresses: vec![NatAddress {
            address: "10.0.2.15".into(),
            proto: "tcp".into(),
            in_use: 7,
        }],
        nat_rules: vec![NatRule {
            chain: "POSTROUTING".into(),
            rule: 1,
            range: "55666-55680".into(),
            ports: 15,
            in_use: 7,
        }],
        ..Snapshot::default()
    };
    let health = Health::new(2);
    health.set_open(true);
    let servers = [Arc::new(fastables_serve::ServerStats::new("control"))];
    let text = render(&s) + &render_live(&health, &servers, Instant::now());
    let Some(samples) = parse(&text) else {
        return;
    };
    let has = |want: &str| {
        assert!(
            samples.iter().any(|l| l == want),
            "missing `{want}` in:\n{}",
            samples.join("\n")
        )
    };
    has("fastables_build_info gauge commit=abc\"def,version=0.1.0 1.0");
    has("fastables_conntrack_worker_entries gauge worker=1 4.0");
    has("fastables_conntrack_worker_max gauge worker=0 100.0");
    has("fastables_nat_address_ports_in_use gauge address=10.0.2.15,proto=tcp 7.0");
    has("fastables_nat_rule_ports gauge chain=POSTROUTING,range=55666-55680,rule=1 15.0");
    has("fastables_nat_rule_ports_in_use gauge chain=POSTROUTING,range=55666-55680,rule=1 7.0");
    // Sub-microsecond buckets resolve the per-packet cost.
    has("fastables_packet_processing_seconds_bucket histogram le=0.00000015 0.0");
    has("fastables_packet_processing_seconds_bucket histogram le=0.0000002 1.0");
    has("fastables_ready gauge  1.0");
    has("fastables_server_clients gauge server=control 0.0");
    has("fastables_server_refused_total counter reason=evicted,server=control 0.0");
    assert!(
        samples
            .iter()
            .any(|l| l.starts_with("fastables_worker_heartbeat_age_seconds gauge worker=1 ")),
        "{samples:?}"
    );
}
