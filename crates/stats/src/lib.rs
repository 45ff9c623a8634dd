//! Observability of the running instance: latency histograms (hdrhistogram)
//! and the Prometheus text exposition of a [`Snapshot`].
//!
//! The worker records into its own [`Latency`] without allocating or
//! locking; once per `[stats] interval_ms` it publishes a [`Snapshot`]
//! (counters it reads from its own state, and the histograms merged into the
//! cumulative ones) where the exporter thread and `fastables stats` read it.
//! Nothing here reads a clock or touches a socket except [`serve`].

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

/// Bucket bounds of the latency histograms in the exposition, seconds.
pub const BUCKETS: [f64; 14] = [
    1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 100e-3,
];

/// Latency in nanoseconds, 1 ns to 60 s at 3 significant digits. Recording
/// never allocates (the counts array is allocated at construction).
#[derive(Clone, Debug)]
pub struct Latency {
    h: Histogram<u64>,
    sum_ns: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        Latency {
            h: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist())),
            sum_ns: 0,
        }
    }

    /// One sample (clamped to the range).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let v = ns.clamp(1, 60_000_000_000);
        let _ = self.h.record(v);
        self.sum_ns = self.sum_ns.saturating_add(v);
    }

    /// Adds `other`'s samples.
    pub fn add(&mut self, other: &Latency) {
        let _ = self.h.add(&other.h);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Forgets every sample (no deallocation).
    pub fn reset(&mut self) {
        self.h.reset();
        self.sum_ns = 0;
    }

    /// Samples.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The value at quantile `q` (0..=1), ns; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.h.is_empty() {
            0
        } else {
            self.h.value_at_quantile(q)
        }
    }

    /// The largest sample, ns.
    pub fn max(&self) -> u64 {
        if self.h.is_empty() {
            0
        } else {
            self.h.max()
        }
    }

    /// Samples at or below `ns`.
    pub fn count_le(&self, ns: u64) -> u64 {
        if self.h.is_empty() {
            0
        } else {
            self.h.count_between(0, ns)
        }
    }

    /// `p50 p90 p99 p99.9 max` in microseconds, for `fastables stats`.
    pub fn summary(&self) -> String {
        let us = |ns: u64| ns as f64 / 1000.0;
        format!(
            "p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  ({} samples)",
            us(self.quantile(0.5)),
            us(self.quantile(0.9)),
            us(self.quantile(0.99)),
            us(self.quantile(0.999)),
            us(self.max()),
            self.count()
        )
    }
}

fn unreachable_hist() -> Histogram<u64> {
    // 1..2^63 at 3 digits always fits the library's limits.
    Histogram::new_with_max(u64::MAX / 2, 3).unwrap_or_else(|_| std::process::abort())
}

/// One interface's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfaceSample {
    /// Device name.
    pub name: String,
    /// The RX queue (worker) these counters are of; `None`: all queues.
    pub queue: Option<u32>,
    /// Frames received.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// The kernel's AF_XDP statistics: dropped.
    pub xdp_rx_dropped: u64,
    /// ... dropped because the RX ring was full.
    pub xdp_rx_ring_full: u64,
    /// ... times the fill ring was empty.
    pub xdp_fill_ring_empty: u64,
    /// ... invalid RX descriptors.
    pub xdp_rx_invalid: u64,
    /// ... invalid TX descriptors.
    pub xdp_tx_invalid: u64,
}

impl IfaceSample {
    /// Adds `o`'s counters to these (the same interface on another queue).
    pub fn add(&mut self, o: &IfaceSample) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.xdp_rx_dropped += o.xdp_rx_dropped;
        self.xdp_rx_ring_full += o.xdp_rx_ring_full;
        self.xdp_fill_ring_empty += o.xdp_fill_ring_empty;
        self.xdp_rx_invalid += o.xdp_rx_invalid;
        self.xdp_tx_invalid += o.xdp_tx_invalid;
    }
}

/// What one worker publishes each interval.
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

fn hist(out: &mut String, name: &str, help: &str, l: &Latency) {
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
    let _ = writeln!(out, "{name}_sum {}", l.sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {}", l.count());
}

fn counter(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition (version 0.0.4) of `s`.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::with_capacity(8192);
    type Field = fn(&IfaceSample) -> u64;
    let per_iface: [(&str, &str, Field); 9] = [
        ("fastables_rx_packets_total", "Frames received.", |i| {
            i.rx_packets
        }),
        ("fastables_rx_bytes_total", "Bytes received.", |i| {
            i.rx_bytes
        }),
        ("fastables_tx_packets_total", "Frames sent.", |i| {
            i.tx_packets
        }),
        ("fastables_tx_bytes_total", "Bytes sent.", |i| i.tx_bytes),
        (
            "fastables_xdp_rx_dropped_total",
            "Frames the kernel dropped on the AF_XDP socket.",
            |i| i.xdp_rx_dropped,
        ),
        (
            "fastables_xdp_rx_ring_full_total",
            "Frames the kernel dropped because the RX ring was full.",
            |i| i.xdp_rx_ring_full,
        ),
        (
            "fastables_xdp_fill_ring_empty_total",
            "Times the kernel found the fill ring empty.",
            |i| i.xdp_fill_ring_empty,
        ),
        (
            "fastables_xdp_rx_invalid_total",
            "Invalid RX descriptors the kernel met.",
            |i| i.xdp_rx_invalid,
        ),
        (
            "fastables_xdp_tx_invalid_total",
            "Invalid TX descriptors the kernel met.",
            |i| i.xdp_tx_invalid,
        ),
    ];
    for (name, help, f) in per_iface {
        counter(&mut o, name, help, "counter");
        for i in &s.interfaces {
            match i.queue {
                Some(q) => writeln!(
                    o,
                    "{name}{{interface=\"{}\",queue=\"{q}\"}} {}",
                    label(&i.name),
                    f(i)
                ),
                None => writeln!(o, "{name}{{interface=\"{}\"}} {}", label(&i.name), f(i)),
            }
            .ok();
        }
    }
    counter(
        &mut o,
        "fastables_drops_total",
        "Frames dropped by the pipeline, by reason.",
        "counter",
    );
    for (r, n) in &s.drops {
        let _ = writeln!(o, "fastables_drops_total{{reason=\"{}\"}} {n}", label(r));
    }
    counter(
        &mut o,
        "fastables_conntrack_entries",
        "Connections in the table.",
        "gauge",
    );
    let _ = writeln!(o, "fastables_conntrack_entries {}", s.ct_entries);
    counter(
        &mut o,
        "fastables_conntrack_max",
        "The table's size (nf_conntrack_max).",
        "gauge",
    );
    let _ = writeln!(o, "fastables_conntrack_max {}", s.ct_max);
    for (c, n) in &s.ct_counters {
        let name = format!("fastables_conntrack_{c}_total");
        counter(
            &mut o,
            &name,
            &format!("conntrack statistics: {c}."),
            "counter",
        );
        let _ = writeln!(o, "{name} {n}");
    }
    counter(
        &mut o,
        "fastables_held_frames",
        "Frames waiting for ARP or for the rest of their datagram.",
        "gauge",
    );
    let _ = writeln!(o, "fastables_held_frames {}", s.held);
    for (name, help, n) in &s.counters {
        counter(&mut o, name, help, "counter");
        let _ = writeln!(o, "{name} {n}");
    }
    hist(
        &mut o,
        "fastables_batch_latency_seconds",
        "Time from a receive burst to the transmit submit.",
        &s.batch_latency,
    );
    hist(
        &mut o,
        "fastables_packet_processing_seconds",
        "Processing time per packet (a batch's time over its frames).",
        &s.packet_latency,
    );
    counter(
        &mut o,
        "fastables_uptime_seconds",
        "Seconds since start.",
        "gauge",
    );
    let _ = writeln!(o, "fastables_uptime_seconds {}", s.uptime_s);
    o
}

/// Serves `GET /metrics` on `listener` from `snap` in a thread of its own
/// (never on the data path). Other paths get 404.
pub fn serve(listener: TcpListener, snap: Arc<Mutex<Snapshot>>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut line = String::new();
                let mut r = BufReader::new(match c.try_clone() {
                    Ok(x) => x,
                    Err(_) => continue,
                });
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                // The rest of the request head.
                let mut h = String::new();
                while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let resp = if line.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
                    let body = match snap.lock() {
                        Ok(s) => render(&s),
                        Err(p) => render(&p.into_inner().clone()),
                    };
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = c.write_all(resp.as_bytes());
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_buckets() {
        let mut l = Latency::new();
        for ns in 1..=1000u64 {
            l.record(ns * 1000);
        }
        assert_eq!(l.count(), 1000);
        let p50 = l.quantile(0.5);
        assert!((499_000..=501_000).contains(&p50), "{p50}");
        assert!(l.max() >= 999_000 && l.max() <= 1_001_000);
        assert_eq!(l.count_le(100_000), 100);
        let mut m = Latency::new();
        m.add(&l);
        m.add(&l);
        assert_eq!(m.count(), 2000);
        m.reset();
        assert_eq!((m.count(), m.quantile(0.99)), (0, 0));
    }
}
