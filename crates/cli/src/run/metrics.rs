//! The metrics: the snapshot the `/metrics` server reads, refreshed once
//! per `[stats] interval_ms` from the workers' counters and histograms,
//! and the interfaces' rates `fastables stats` shows.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use fastables_config::Config;
use fastables_stats::{IfaceSample, Snapshot, Values};

use super::commands::ControlState;
use super::sample::{Sample, ARP_COUNTERS, STEER_COUNTERS};
use super::worker::Workers;
use crate::CliError;

/// Takes this interval's histograms and counters from the workers and
/// refreshes the published snapshot (once per `[stats] interval_ms`, off
/// the data path).
pub(super) fn publish(
    shared: &Mutex<Snapshot>,
    workers: &Workers,
    state: &mut ControlState,
    started: Instant,
) {
    let cfg = Arc::clone(&state.cfg);
    let samples = workers.map(move |c| Sample::of(c, &cfg, true));
    for (i, s) in samples.iter().enumerate() {
        if let Some((b, p)) = state.latency.get_mut(i) {
            b.add(&s.batch_lat);
            p.add(&s.pkt_lat);
        }
    }
    let m = Sample::merge(&samples);
    // Rates over the interval, per interface.
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
    // Per interface and queue (one queue per worker).
    let interfaces = samples
        .iter()
        .enumerate()
        .flat_map(|(q, s)| {
            s.interfaces.iter().map(move |i| IfaceSample {
                queue: Some(q as u32),
                ..i.clone()
            })
        })
        .collect();
    let ct = m.conntrack.unwrap_or_default();
    let st = ct.stats;
    let ct_counters = vec![
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
    let Ok(mut s) = shared.lock() else { return };
    s.interfaces = interfaces;
    s.drops = m.drops.iter().map(|(r, n)| (r.name(), *n)).collect();
    s.ct_entries = ct.entries;
    s.ct_max = ct.max;
    s.ct_counters = ct_counters;
    s.held = m.held;
    s.counters = counters;
    s.batch_latency.add(&m.batch_lat);
    s.packet_latency.add(&m.pkt_lat);
    s.uptime_s = started.elapsed().as_secs_f64();
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

/// The `[stats] listen` server, when the configuration has one, over the
/// snapshot that [`publish`] refreshes.
pub(super) fn serve(cfg: &Config) -> Result<Arc<Mutex<Snapshot>>, CliError> {
    let shared = Arc::new(Mutex::new(Snapshot::default()));
    if let Some(addr) = &cfg.stats.listen {
        let l = std::net::TcpListener::bind(addr).map_err(|e| {
            CliError::Start(format!("[stats] listen = \"{addr}\": cannot listen: {e}"))
        })?;
        fastables_stats::serve(l, Arc::clone(&shared))
            .map_err(|e| CliError::Start(format!("cannot start the stats thread: {e}")))?;
        println!("metrics: http://{addr}/metrics");
    }
    Ok(shared)
}
