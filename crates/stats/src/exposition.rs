//! The Prometheus text exposition (version 0.0.4) of a [`Snapshot`].

use std::fmt::Write as _;

use crate::{Counter, IfaceSample, Latency, TrafficCounters, XdpCounters};

/// Bucket bounds of the latency histograms in the exposition, seconds.
pub const BUCKETS: [f64; 14] = [
    1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 100e-3,
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
}

fn histogram(out: &mut String, name: &str, help: &str, l: &Latency) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for b in BUCKETS {
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{b}\"}} {}",
            l.count_le((b * 1e9) as u64)
        );
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", l.count());
    let _ = writeln!(out, "{name}_sum {}", l.sum_ns() as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {}", l.count());
}

fn metric_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
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
