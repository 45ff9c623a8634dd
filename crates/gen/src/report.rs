//! What the generator and the sink print: a progress line a second (to
//! stderr) and a final summary, human-readable or JSON.

use std::fmt;

use fastables_stats::Latency;

use crate::sink::SinkCounters;
use crate::tcp::{ResponderCounters, TcpReport};

/// Latency quantiles, nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LatencyReport {
    /// Samples.
    pub samples: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

impl From<&Latency> for LatencyReport {
    fn from(l: &Latency) -> Self {
        LatencyReport {
            samples: l.count(),
            p50_ns: l.quantile(0.5),
            p90_ns: l.quantile(0.9),
            p99_ns: l.quantile(0.99),
            p999_ns: l.quantile(0.999),
            max_ns: l.max(),
        }
    }
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// The generator's summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GenReport {
    /// Device.
    pub dev: String,
    /// How the device was attached (`XDP generic, copy mode, ...`).
    pub xdp: String,
    /// `udp`, `syn` or `tcp`.
    pub proto: &'static str,
    /// Frame size without FCS.
    pub size: usize,
    /// Destination MAC used.
    pub dst_mac: String,
    /// Frames the TX ring took (sequence numbers `0..sent`; with `tcp`
    /// the data segments: the SYNs, ACKs and FINs are in `tcp`).
    pub sent: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Distinct flows used.
    pub flows: u64,
    /// Seconds from the first frame to the last completion (`tcp`: to
    /// the end of the sending, before the drain and the closes).
    pub secs: f64,
    /// Frames per second over `secs`.
    pub pps: f64,
    /// Rounds the TX ring was full (backpressure).
    pub tx_ring_full: u64,
    /// TX frames that were still not completed by the kernel at the end.
    pub not_completed: u64,
    /// Frames received (and dropped) on the device meanwhile (`tcp`: those
    /// that were not the peers' segments).
    pub rx_ignored: u64,
    /// `tcp`: the connections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpReport>,
}

impl GenReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl fmt::Display for GenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "gen {}: sent {} frames ({} bytes) in {:.3} s: {:.0} pps, {:.1} Mbit/s",
            self.dev,
            self.sent,
            self.bytes,
            self.secs,
            self.pps,
            per_sec(self.bytes * 8, self.secs) / 1e6
        )?;
        writeln!(
            f,
            "  {} {} bytes to {}, {} flows; TX ring full {} times; {} not completed; {} received frames ignored",
            self.proto,
            self.size,
            self.dst_mac,
            self.flows,
            self.tx_ring_full,
            self.not_completed,
            self.rx_ignored
        )?;
        if let Some(t) = &self.tcp {
            let c = &t.counters;
            writeln!(
                f,
                "  tcp: handshakes {} started, {} completed, {} failed, {} incomplete; SYN retransmits {}; late SYN-ACKs {}; resets received {}; unexpected segments {}",
                c.handshakes_started,
                c.handshakes_completed,
                c.handshakes_failed,
                t.handshakes_incomplete,
                c.syn_retransmits,
                c.late_syn_acks,
                c.resets_received,
                c.unexpected
            )?;
            let l = &t.setup_latency;
            writeln!(
                f,
                "  tcp: set-up (SYN to SYN-ACK) p50 {:.1} us  p99 {:.1} us  max {:.1} us",
                micros(l.p50_ns),
                micros(l.p99_ns),
                micros(l.max_ns)
            )?;
            writeln!(
                f,
                "  tcp: data segments per flow {}..{}, {} flows fully acknowledged, window stalls {}; close {}: {} started, {} completed, {} failed, {} unanswered, {} by the peer; {} control segments sent; {:.3} s in all",
                t.segments_per_flow_min,
                t.segments_per_flow_max,
                t.flows_acked,
                c.window_stalls,
                t.close.name(),
                c.closes_started,
                c.closes_completed,
                c.closes_failed,
                t.closes_incomplete,
                c.closed_by_peer,
                c.control_sent,
                t.total_secs
            )?;
        }
        writeln!(f, "  {}", self.xdp)
    }
}

/// The kernel's drop counters of the sink's socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkXdp {
    /// Dropped by the kernel (other reasons).
    pub rx_dropped: u64,
    /// Dropped because the RX ring was full (the sink fell behind).
    pub rx_ring_full: u64,
    /// Times the fill ring was empty.
    pub fill_ring_empty: u64,
}

/// The sink's summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SinkReport {
    /// Device.
    pub dev: String,
    /// How the device was attached.
    pub xdp: String,
    /// The counters.
    #[serde(flatten)]
    pub counters: SinkCounters,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// The highest sequence number received.
    pub highest_seq: Option<u64>,
    /// The first frame's `SRC:SPORT -> DST:DPORT` (as a router in between
    /// rewrote it).
    pub first_flow: Option<String>,
    /// Seconds from the first generator frame to the last.
    pub secs: f64,
    /// Generator frames per second over `secs`.
    pub pps: f64,
    /// One-way latency (stamp to receipt).
    pub latency: LatencyReport,
    /// The kernel's counters of the socket.
    pub kernel: SinkXdp,
    /// `--echo`: the TCP responder's counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<ResponderCounters>,
}

impl SinkReport {
    /// One JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Lost as a percentage of the sequence numbers expected.
fn loss_pct(lost: u64, unique: u64) -> f64 {
    let expected = lost + unique;
    if expected == 0 {
        0.0
    } else {
        lost as f64 * 100.0 / expected as f64
    }
}

impl fmt::Display for SinkReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        writeln!(
            f,
            "sink {}: received {} frames ({} unique, {} bytes) in {:.3} s: {:.0} pps",
            self.dev, c.received, self.unique, c.bytes, self.secs, self.pps
        )?;
        writeln!(
            f,
            "  lost {} ({:.3}%), reordered {}, duplicates {}, late {}, other {}, bad checksum {}, clock skew {}",
            c.lost,
            loss_pct(c.lost, self.unique),
            c.reordered,
            c.duplicates,
            c.late,
            c.other,
            c.bad_checksum,
            c.clock_skew
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "  latency p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  ({} samples)",
            micros(l.p50_ns),
            micros(l.p90_ns),
            micros(l.p99_ns),
            micros(l.p999_ns),
            micros(l.max_ns),
            l.samples
        )?;
        writeln!(
            f,
            "  first flow {}; kernel: rx_dropped {} rx_ring_full {} fill_ring_empty {}; {}",
            self.first_flow.as_deref().unwrap_or("none"),
            self.kernel.rx_dropped,
            self.kernel.rx_ring_full,
            self.kernel.fill_ring_empty,
            self.xdp
        )?;
        if let Some(t) = &self.tcp {
            writeln!(
                f,
                "  tcp: {} segments; {} SYNs ({} again), {} handshakes completed, {} data segments ({} out of order) acknowledged, {} FINs answered, {} closed; resets {} received, {} sent; table full {}, {} open",
                t.segments,
                t.syns,
                t.syn_retransmits,
                t.handshakes_completed,
                t.data_segments,
                t.out_of_order,
                t.fins,
                t.closed,
                t.resets_received,
                t.resets_sent,
                t.table_full,
                t.open
            )?;
        }
        Ok(())
    }
}

/// The generator's line for one interval: `secs` since the start, `sent`
/// so far, `delta` frames over `dt` seconds.
pub fn gen_progress(secs: f64, sent: u64, delta: u64, dt: f64) -> String {
    format!(
        "gen: {secs:.0} s  sent {sent}  {:.0} pps",
        per_sec(delta, dt)
    )
}

/// The sink's line for one interval: rate, loss so far, the interval's p99.
pub fn sink_progress(
    secs: f64,
    c: &SinkCounters,
    unique: u64,
    delta: u64,
    dt: f64,
    interval: &Latency,
) -> String {
    format!(
        "sink: {secs:.0} s  received {}  {:.0} pps  lost {} ({:.3}%)  p99 {:.1} us",
        c.received,
        per_sec(delta, dt),
        c.lost,
        loss_pct(c.lost, unique),
        micros(interval.quantile(0.99))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_report() -> SinkReport {
        let mut l = Latency::new();
        l.record(12_000);
        SinkReport {
            dev: "up0".into(),
            xdp: "up0: XDP generic, copy mode, queue 0 of 1".into(),
            counters: SinkCounters {
                received: 1000,
                bytes: 60_000,
                lost: 0,
                duplicates: 0,
                other: 2,
                ..SinkCounters::default()
            },
            unique: 1000,
            highest_seq: Some(999),
            first_flow: Some("10.0.2.15:1024 -> 8.8.8.8:9".into()),
            secs: 0.5,
            pps: 2000.0,
            latency: LatencyReport::from(&l),
            kernel: SinkXdp::default(),
            tcp: None,
        }
    }

    #[test]
    fn sink_json_has_flat_counters_and_latency() {
        let v: serde_json::Value = serde_json::from_str(&sink_report().to_json()).unwrap();
        assert_eq!(v["received"], 1000);
        assert_eq!(v["lost"], 0);
        assert_eq!(v["duplicates"], 0);
        assert_eq!(v["other"], 2);
        assert_eq!(v["unique"], 1000);
        assert_eq!(v["highest_seq"], 999);
        assert_eq!(v["first_flow"], "10.0.2.15:1024 -> 8.8.8.8:9");
        assert_eq!(v["latency"]["samples"], 1);
        assert!(v["latency"]["p99_ns"].as_u64().unwrap().abs_diff(12_000) < 20);
        assert_eq!(v["kernel"]["rx_ring_full"], 0);
    }

    #[test]
    fn human_summaries_name_every_figure() {
        let s = sink_report().to_string();
        assert!(
            s.starts_with(
                "sink up0: received 1000 frames (1000 unique, 60000 bytes) in 0.500 s: 2000 pps\n"
            ),
            "{s}"
        );
        assert!(
            s.contains(
                "lost 0 (0.000%), reordered 0, duplicates 0, late 0, other 2, bad checksum 0"
            ),
            "{s}"
        );
        assert!(s.contains("latency p50 12.0 us"), "{s}");
        let g = GenReport {
            dev: "eth0".into(),
            xdp: "eth0: XDP generic, copy mode, queue 0 of 1".into(),
            proto: "udp",
            size: 60,
            dst_mac: "02:42:ac:12:00:01".into(),
            sent: 500,
            bytes: 30_000,
            flows: 1,
            secs: 0.25,
            pps: 2000.0,
            tx_ring_full: 0,
            not_completed: 0,
            rx_ignored: 0,
            tcp: None,
        };
        assert!(
            g.to_string().starts_with(
                "gen eth0: sent 500 frames (30000 bytes) in 0.250 s: 2000 pps, 1.0 Mbit/s\n"
            ),
            "{g}"
        );
        let v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        assert_eq!(
            (v["sent"].as_u64(), v["proto"].as_str()),
            (Some(500), Some("udp"))
        );
    }

    #[test]
    fn tcp_sections_in_both_summaries() {
        use crate::tcp::{Close, ResponderCounters, TcpGenCounters, TcpReport};
        let mut l = Latency::new();
        l.record(250_000);
        let g = GenReport {
            dev: "eth0".into(),
            xdp: "eth0: XDP generic, copy mode, queue 0 of 1".into(),
            proto: "tcp",
            size: 72,
            dst_mac: "02:42:ac:12:00:01".into(),
            sent: 5000,
            bytes: 360_000,
            flows: 8,
            secs: 1.0,
            pps: 5000.0,
            tx_ring_full: 0,
            not_completed: 0,
            rx_ignored: 0,
            tcp: Some(TcpReport {
                counters: TcpGenCounters {
                    handshakes_started: 8,
                    handshakes_completed: 7,
                    handshakes_failed: 1,
                    syn_retransmits: 2,
                    closes_started: 7,
                    closes_completed: 7,
                    control_sent: 31,
                    ..TcpGenCounters::default()
                },
                handshakes_incomplete: 0,
                closes_incomplete: 0,
                setup_latency: LatencyReport::from(&l),
                flows_acked: 7,
                segments_per_flow_min: 714,
                segments_per_flow_max: 715,
                close: Close::Fin,
                total_secs: 2.5,
            }),
        };
        let v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        let t = &v["tcp"];
        assert_eq!(
            (
                t["handshakes_completed"].as_u64(),
                t["handshakes_failed"].as_u64()
            ),
            (Some(7), Some(1))
        );
        assert_eq!(t["close"], "fin");
        assert_eq!(t["segments_per_flow_max"], 715);
        assert!(
            t["setup_latency"]["p50_ns"]
                .as_u64()
                .unwrap()
                .abs_diff(250_000)
                < 500
        );
        let text = g.to_string();
        assert!(
            text.contains("tcp: handshakes 8 started, 7 completed, 1 failed, 0 incomplete; SYN retransmits 2;"),
            "{text}"
        );
        assert!(
            text.contains("set-up (SYN to SYN-ACK) p50 250.1 us"),
            "{text}"
        );
        assert!(
            text.contains("data segments per flow 714..715, 7 flows fully acknowledged, window stalls 0; close fin: 7 started, 7 completed"),
            "{text}"
        );
        // No tcp key for udp and syn.
        let u = GenReport { tcp: None, ..g };
        assert!(!u.to_json().contains("\"tcp\":"));
        let mut r = sink_report();
        assert!(!r.to_json().contains("\"tcp\":"));
        r.tcp = Some(ResponderCounters {
            syns: 8,
            handshakes_completed: 8,
            data_segments: 5000,
            fins: 8,
            closed: 8,
            ..ResponderCounters::default()
        });
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            (v["tcp"]["syns"].as_u64(), v["tcp"]["closed"].as_u64()),
            (Some(8), Some(8))
        );
        assert!(
            r.to_string().contains("8 handshakes completed, 5000 data segments (0 out of order) acknowledged, 8 FINs answered, 8 closed"),
            "{r}"
        );
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            gen_progress(3.0, 3000, 1000, 1.0),
            "gen: 3 s  sent 3000  1000 pps"
        );
        let c = SinkCounters {
            received: 990,
            lost: 10,
            ..SinkCounters::default()
        };
        let mut l = Latency::new();
        l.record(5_000);
        assert_eq!(
            sink_progress(1.0, &c, 990, 990, 1.0, &l),
            "sink: 1 s  received 990  990 pps  lost 10 (1.000%)  p99 5.0 us"
        );
    }
}
