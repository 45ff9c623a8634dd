//! The Prometheus text exposition (version 0.0.4) of a [`Snapshot`].

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use fastables_serve::{Refusal, ServerStats};

use crate::{Counter, Health, IfaceSample, Latency, TrafficCounters, XdpCounters};

/// Bucket bounds of the latency histograms in the exposition, nanoseconds:
/// from 25 ns, so that the per-packet cost (a few hundred nanoseconds) is
/// resolved, to 100 ms for the batches of a stalled worker.
pub const BUCKETS_NS: [u64; 23] = [
    25,
    50,
    100,
    150,
    200,
    300,
    400,
    500,
    750,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    100_000_000,
];

/// What the control thread publishes each interval: the instance's
/// counters, and its histograms since start.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Per interface.
    pub interfaces: Vec<IfaceSample>,
    /// Drops by reason (every reason, zeros included).
    pub drops: Vec<(&'static str, u64)>,
    /// Conntrack entries now.
    pub ct_entries: u64,
    /// Conntrack max.
    pub ct_max: u64,
    /// Conntrack counters by name (`insert`, `insert_failed`, `drop`,
    /// `early_drop`, `invalid`, `error`, `expired`, ...).
    pub ct_counters: Vec<(&'static str, u64)>,
    /// Frames waiting for ARP or reassembly.
    pub held: u64,
    /// More counters, each as (metric name ending in `_total`, help, value):
    /// ARP, hand-offs between workers.
    pub counters: Vec<(&'static str, &'static str, u64)>,
    /// Batch latency (rx burst to tx submit), cumulative.
    pub batch_latency: Latency,
    /// Per-packet processing time (a batch's time over its frames), cumulative.
    pub packet_latency: Latency,
    /// Seconds since start.
    pub uptime_s: f64,
    /// The labels of `fastables_build_info` (version, commit, ...).
    pub build_info: Vec<(&'static str, String)>,
    /// Per worker (in order): its connections and its table's size.
    pub workers: Vec<WorkerTable>,
    /// Source NAT: translated ports (ICMP ids) in use per address and protocol.
    pub nat_addresses: Vec<NatAddress>,
    /// Each SNAT/MASQUERADE rule with a port range: its ports, those in use.
    pub nat_rules: Vec<NatRule>,
}

/// A worker's connection table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerTable {
    /// Connections in it.
    pub entries: u64,
    /// Its size.
    pub max: u64,
}

/// Translated ports in use on one address, for one protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatAddress {
    /// The address connections are translated to.
    pub address: String,
    /// `tcp`, `udp`, `icmp` or the number.
    pub proto: String,
    /// Ports (ICMP ids) held by connections.
    pub in_use: u64,
}

/// A SNAT/MASQUERADE rule with a port range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatRule {
    /// Its chain (of the nat table).
    pub chain: String,
    /// Its number in the chain, from 1.
    pub rule: usize,
    /// The range, `lo-hi`.
    pub range: String,
    /// Ports in the range.
    pub ports: u64,
    /// Ports of the range held by connections (of the rule's protocol).
    pub in_use: u64,
}

fn histogram(out: &mut String, name: &str, help: &str, l: &Latency) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for ns in BUCKETS_NS {
        let le = ns as f64 / 1e9;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", l.count_le(ns));
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", l.count());
    let _ = writeln!(out, "{name}_sum {}", l.sum_ns() as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {}", l.count());
}

pub(crate) fn metric_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric per counter of a group, a sample per interface (and queue).
fn per_iface<T>(
    o: &mut String,
    interfaces: &[IfaceSample],
    counters: &[Counter<T>],
    group: fn(&IfaceSample) -> &T,
) {
    for c in counters {
        let Some(name) = c.metric else { continue };
        metric_header(o, name, c.help, "counter");
        for i in interfaces {
            let v = (c.get)(group(i));
            match i.queue {
                Some(q) => writeln!(
                    o,
                    "{name}{{interface=\"{}\",queue=\"{q}\"}} {v}",
                    label(&i.name)
                ),
                None => writeln!(o, "{name}{{interface=\"{}\"}} {v}", label(&i.name)),
            }
            .ok();
        }
    }
}

/// The Prometheus text exposition (version 0.0.4) of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::with_capacity(8192);
    per_iface(&mut o, &s.interfaces, TrafficCounters::COUNTERS, |i| {
        &i.traffic
    });
    per_iface(&mut o, &s.interfaces, XdpCounters::COUNTERS, |i| &i.xdp);
    metric_header(
        &mut o,
        "fastables_drops_total",
        "Frames dropped by the pipeline, by reason.",
        "counter",
    );
    for (r, n) in &s.drops {
        let _ = writeln!(o, "fastables_drops_total{{reason=\"{}\"}} {n}", label(r));
    }
    metric_header(
        &mut o,
        "fastables_conntrack_entries",
        "Connections in the table.",
        "gauge",
    );
    let _ = writeln!(o, "fastables_conntrack_entries {}", s.ct_entries);
    metric_header(
        &mut o,
        "fastables_conntrack_max",
        "The table's size (nf_conntrack_max).",
        "gauge",
    );
    let _ = writeln!(o, "fastables_conntrack_max {}", s.ct_max);
    for (c, n) in &s.ct_counters {
        let name = format!("fastables_conntrack_{c}_total");
        metric_header(
            &mut o,
            &name,
            &format!("conntrack statistics: {c}."),
            "counter",
        );
        let _ = writeln!(o, "{name} {n}");
    }
    metric_header(
        &mut o,
        "fastables_held_frames",
        "Frames waiting for ARP or for the rest of their datagram.",
        "gauge",
    );
    let _ = writeln!(o, "fastables_held_frames {}", s.held);
    for (name, help, n) in &s.counters {
        metric_header(&mut o, name, help, "counter");
        let _ = writeln!(o, "{name} {n}");
    }
    histogram(
        &mut o,
        "fastables_batch_latency_seconds",
        "Time from a receive burst to the transmit submit.",
        &s.batch_latency,
    );
    histogram(
        &mut o,
        "fastables_packet_processing_seconds",
        "Processing time per packet (a batch's time over its frames).",
        &s.packet_latency,
    );
    metric_header(
        &mut o,
        "fastables_uptime_seconds",
        "Seconds since start.",
        "gauge",
    );
    let _ = writeln!(o, "fastables_uptime_seconds {}", s.uptime_s);
    workers_and_nat(&mut o, s);
    metric_header(
        &mut o,
        "fastables_build_info",
        "The running binary: its version and the commit it was built from.",
        "gauge",
    );
    let labels: Vec<String> = s
        .build_info
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
        .collect();
    match labels.is_empty() {
        true => writeln!(o, "fastables_build_info 1"),
        false => writeln!(o, "fastables_build_info{{{}}} 1", labels.join(",")),
    }
    .ok();
    o
}

/// Per worker tables, and the NAT ports in use.
fn workers_and_nat(o: &mut String, s: &Snapshot) {
    metric_header(
        o,
        "fastables_conntrack_worker_entries",
        "Connections in each worker's table.",
        "gauge",
    );
    for (k, w) in s.workers.iter().enumerate() {
        let _ = writeln!(
            o,
            "fastables_conntrack_worker_entries{{worker=\"{k}\"}} {}",
            w.entries
        );
    }
    metric_header(
        o,
        "fastables_conntrack_worker_max",
        "The size of each worker's table.",
        "gauge",
    );
    for (k, w) in s.workers.iter().enumerate() {
        let _ = writeln!(
            o,
            "fastables_conntrack_worker_max{{worker=\"{k}\"}} {}",
            w.max
        );
    }
    metric_header(
        o,
        "fastables_nat_address_ports_in_use",
        "Source NAT: ports (ICMP ids) held by connections, per address and protocol.",
        "gauge",
    );
    for a in &s.nat_addresses {
        let _ = writeln!(
            o,
            "fastables_nat_address_ports_in_use{{address=\"{}\",proto=\"{}\"}} {}",
            label(&a.address),
            label(&a.proto),
            a.in_use
        );
    }
    for (name, help, value) in [
        (
            "fastables_nat_rule_ports",
            "Ports in the range of each SNAT/MASQUERADE rule that has one.",
            (|r: &NatRule| r.ports) as fn(&NatRule) -> u64,
        ),
        (
            "fastables_nat_rule_ports_in_use",
            "Ports of each SNAT/MASQUERADE rule's range held by connections.",
            |r: &NatRule| r.in_use,
        ),
    ] {
        metric_header(o, name, help, "gauge");
        for r in &s.nat_rules {
            let _ = writeln!(
                o,
                "{name}{{chain=\"{}\",rule=\"{}\",range=\"{}\"}} {}",
                label(&r.chain),
                r.rule,
                label(&r.range),
                value(r)
            );
        }
    }
}

/// What `/metrics` reads at each scrape rather than from the published
/// snapshot (so that it tells the truth even when the control thread that
/// publishes is held up): readiness, the workers' heartbeats, and the
/// side-channel servers' own counters.
pub fn render_live(health: &Health, servers: &[Arc<ServerStats>], now: Instant) -> String {
    let mut o = String::with_capacity(1024);
    metric_header(
        &mut o,
        "fastables_ready",
        "1 when the ports are open and every worker makes progress (/readyz), else 0.",
        "gauge",
    );
    let _ = writeln!(o, "fastables_ready {}", u8::from(health.ready(now).is_ok()));
    metric_header(
        &mut o,
        "fastables_worker_heartbeat_age_seconds",
        "Seconds since each worker last went round its loop (a stalled worker's grows).",
        "gauge",
    );
    for (k, age) in health.ages(now).enumerate() {
        let _ = writeln!(
            o,
            "fastables_worker_heartbeat_age_seconds{{worker=\"{k}\"}} {}",
            age.as_secs_f64()
        );
    }
    metric_header(
        &mut o,
        "fastables_server_clients",
        "Clients connected to the control socket and to the metrics listener.",
        "gauge",
    );
    for s in servers {
        let _ = writeln!(
            o,
            "fastables_server_clients{{server=\"{}\"}} {}",
            s.name,
            s.clients()
        );
    }
    metric_header(
        &mut o,
        "fastables_server_connections_total",
        "Connections accepted by the control socket and by the metrics listener.",
        "counter",
    );
    for s in servers {
        let _ = writeln!(
            o,
            "fastables_server_connections_total{{server=\"{}\"}} {}",
            s.name,
            s.accepted()
        );
    }
    metric_header(
        &mut o,
        "fastables_server_refused_total",
        "Clients refused or dropped, by server and reason (cap full, evicted idle, deadlines, too large, ...).",
        "counter",
    );
    for s in servers {
        for r in Refusal::ALL {
            let _ = writeln!(
                o,
                "fastables_server_refused_total{{server=\"{}\",reason=\"{}\"}} {}",
                s.name,
                r.name(),
                s.refused(r)
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter a group declares but `/metrics` does not show is a lie on
    /// a dashboard: every one has its sample, per interface and queue.
    #[test]
    fn every_declared_interface_counter_is_exported() {
        let sample = |name: &str, queue| IfaceSample {
            name: name.into(),
            queue,
            traffic: TrafficCounters {
                rx_packets: 11,
                rx_bytes: 12,
                tx_packets: 13,
                tx_bytes: 14,
            },
            xdp: XdpCounters {
                rx_dropped: 21,
                rx_ring_full: 22,
                fill_ring_empty: 23,
                rx_invalid: 24,
                tx_invalid: 25,
            },
        };
        let s = Snapshot {
            interfaces: vec![sample("eth0", None), sample("eth1", Some(2))],
            ..Snapshot::default()
        };
        let text = render(&s);
        let i = &s.interfaces[0];
        let mut lines: Vec<(&str, &str, u64)> = Vec::new();
        for c in TrafficCounters::COUNTERS {
            lines.extend(c.metric.map(|m| (m, c.help, (c.get)(&i.traffic))));
        }
        for c in XdpCounters::COUNTERS {
            lines.extend(c.metric.map(|m| (m, c.help, (c.get)(&i.xdp))));
        }
        assert_eq!(lines.len(), 9, "every interface counter has a metric");
        for (metric, help, v) in lines {
            for want in [
                format!("# HELP {metric} {help}\n# TYPE {metric} counter\n"),
                format!("\n{metric}{{interface=\"eth0\"}} {v}\n"),
                format!("\n{metric}{{interface=\"eth1\",queue=\"2\"}} {v}\n"),
            ] {
                assert!(text.contains(&want), "no `{want}` in:\n{text}");
            }
        }
    }
}
