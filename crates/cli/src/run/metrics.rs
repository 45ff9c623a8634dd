//! The metrics: the snapshot behind `/metrics`, refreshed once per
//! `[stats] interval_ms` from the workers' counters and histograms, and
//! the interfaces' rates `fastables stats` shows.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastables_stats::{Exporter, IfaceSample, NatAddress, NatRule, Snapshot, Values, WorkerTable};

use super::commands::{nat_ports, ControlState};
use super::sample::{Sample, ARP_COUNTERS, STEER_COUNTERS};
use super::worker::Workers;

/// How often the NAT ports in use are counted for the metrics (each worker
/// walks its whole table for it, between two batches).
const NAT_EVERY: Duration = Duration::from_secs(10);

/// The published metrics: the cumulative snapshot, and where it goes.
pub(super) struct Metrics {
    /// The metrics listener's page (none without `[stats] listen`).
    exporter: Option<Arc<Exporter>>,
    snapshot: Snapshot,
    started: Instant,
    /// When the NAT ports are counted next.
    nat_next: Instant,
}

/// `fastables_build_info`'s labels: the version, the commit (when built
/// from a git checkout), the build profile.
fn build_info() -> Vec<(&'static str, String)> {
    let mut v = vec![("version", env!("CARGO_PKG_VERSION").to_string())];
    if let Some(c) = fastables_stats::COMMIT {
        v.push(("commit", c.to_string()));
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    v.push(("profile", profile.to_string()));
    v
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        p => p.to_string(),
    }
}

impl Metrics {
    pub(super) fn new(exporter: Option<Arc<Exporter>>, started: Instant) -> Metrics {
        Metrics {
            exporter,
            snapshot: Snapshot {
                build_info: build_info(),
                ..Snapshot::default()
            },
            started,
            nat_next: started,
        }
    }

    /// Takes this interval's histograms and counters from the workers,
    /// refreshes the rates `fastables stats` shows, and publishes the
    /// snapshot (once per `[stats] interval_ms`, off the data path).
    pub(super) fn publish(&mut self, workers: &Workers, state: &mut ControlState) {
        let cfg = Arc::clone(&state.cfg);
        let samples = workers.map(move |c| Sample::of(c, &cfg, true));
        for (i, s) in samples.iter().enumerate() {
            if let Some((b, p)) = state.latency.get_mut(i) {
                b.add(&s.batch_lat);
                p.add(&s.pkt_lat);
            }
        }
        let m = Sample::merge(&samples);
        update_rates(state, &m);
        let Some(exporter) = &self.exporter else {
            return;
        };
        let s = &mut self.snapshot;
        // Per interface and queue (one queue per worker).
        s.interfaces = samples
            .iter()
            .enumerate()
            .flat_map(|(q, s)| {
                s.interfaces.iter().map(move |i| IfaceSample {
                    queue: Some(q as u32),
                    ..i.clone()
                })
            })
            .collect();
        s.workers = samples
            .iter()
            .map(|w| {
                w.conntrack
                    .map_or_else(WorkerTable::default, |c| WorkerTable {
                        entries: c.entries,
                        max: c.max,
                    })
            })
            .collect();
        let ct = m.conntrack.unwrap_or_default();
        let st = ct.stats;
        s.ct_counters = vec![
            ("found", st.found),
            ("invalid", st.invalid),
            ("insert", st.insert),
            ("insert_failed", st.insert_failed),
            ("drop", st.drop),
            ("early_drop", st.early_drop),
            ("error", st.error),
            ("expired", st.expired),
            ("chaintoolong", st.chaintoolong),
        ];
        let mut counters: Vec<_> = Values::new(&m.arp, ARP_COUNTERS)
            .metrics()
            .chain(Values::new(&m.steer, STEER_COUNTERS).metrics())
            .collect();
        counters.push((
            "fastables_flow_cache_hits_total",
            "Frames forwarded by their connection's cached decision (no chain run).",
            m.flow_cache.hits,
        ));
        if let Some(c) = &state.natlog {
            counters.extend(crate::natlog::metrics(&c.snapshot()));
        }
        s.drops = m.drops.iter().map(|(r, n)| (r.name(), *n)).collect();
        s.ct_entries = ct.entries;
        s.ct_max = ct.max;
        s.held = m.held;
        s.counters = counters;
        s.batch_latency.add(&m.batch_lat);
        s.packet_latency.add(&m.pkt_lat);
        let now = Instant::now();
        s.uptime_s = now.duration_since(self.started).as_secs_f64();
        if now >= self.nat_next {
            self.nat_next = now + NAT_EVERY;
            let nat = nat_ports(state, workers);
            s.nat_addresses = nat
                .addresses
                .iter()
                .map(|&((a, p), n)| NatAddress {
                    address: Ipv4Addr::from(a).to_string(),
                    proto: proto_name(p),
                    in_use: n,
                })
                .collect();
            s.nat_rules = nat
                .ranges
                .into_iter()
                .map(|r| NatRule {
                    chain: r.at.0,
                    rule: r.at.1,
                    range: format!("{}-{}", r.lo, r.hi),
                    ports: u64::from(r.hi) - u64::from(r.lo) + 1,
                    in_use: r.in_use,
                })
                .collect();
        }
        exporter.publish(s);
    }
}

/// Packets and bits per second over the last interval, per interface.
fn update_rates(state: &mut ControlState, m: &Sample) {
    let now = Instant::now();
    if let Some((then, prev)) = &state.last_sample {
        let dt = now.duration_since(*then).as_secs_f64();
        if dt > 0.0 {
            state.rates = m
                .interfaces
                .iter()
                .zip(prev)
                .map(|(a, b)| IfaceRate {
                    name: a.name.clone(),
                    rx_pps: a.traffic.rx_packets.saturating_sub(b.traffic.rx_packets) as f64 / dt,
                    rx_bps: a.traffic.rx_bytes.saturating_sub(b.traffic.rx_bytes) as f64 * 8.0 / dt,
                    tx_pps: a.traffic.tx_packets.saturating_sub(b.traffic.tx_packets) as f64 / dt,
                    tx_bps: a.traffic.tx_bytes.saturating_sub(b.traffic.tx_bytes) as f64 * 8.0 / dt,
                    secs: dt,
                })
                .collect();
        }
    }
    state.last_sample = Some((now, m.interfaces.clone()));
}

/// One interface's rates over the last stats interval.
pub(super) struct IfaceRate {
    pub(super) name: String,
    pub(super) rx_pps: f64,
    pub(super) rx_bps: f64,
    pub(super) tx_pps: f64,
    pub(super) tx_bps: f64,
    pub(super) secs: f64,
}
