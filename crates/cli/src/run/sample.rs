//! A worker's counters as the control thread reads them ([`Sample`]), and
//! their sum over the workers.

use fastables_dataplane::config::Config;
use fastables_dataplane::drop::DropReason;
use fastables_dataplane::offline::{IfaceTotals, Summary};
use fastables_dataplane::steer::SteerStats;
use fastables_rules::ctx::IfIndex;
use fastables_stats::Latency;
use fastables_xdp::XdpPort;

use super::worker::WorkerState;

/// One worker's counters (and, for the metrics, the latency recorded since
/// the last sample).
#[derive(Clone, Default)]
pub(super) struct Sample {
    pub(super) interfaces: Vec<fastables_stats::IfaceSample>,
    pub(super) drops: Vec<(DropReason, u64)>,
    pub(super) ct: Option<(u64, u64, fastables_conntrack::Stats)>,
    pub(super) held: u64,
    pub(super) steer: SteerStats,
    pub(super) arp: fastables_dataplane::neigh::ArpCounters,
    /// Whether the flow cache can forward with this ruleset, and the frames
    /// it forwarded.
    pub(super) flow_cache: (bool, u64),
    pub(super) batch_lat: Latency,
    pub(super) pkt_lat: Latency,
}

impl Sample {
    /// `take_latency`: move the histograms out (the metrics' interval).
    pub(super) fn of(c: &mut WorkerState, cfg: &Config, take_latency: bool) -> Sample {
        let p = c.worker.pipeline();
        let (batch_lat, pkt_lat) = if take_latency {
            (
                std::mem::replace(&mut c.batch_lat, Latency::new()),
                std::mem::replace(&mut c.pkt_lat, Latency::new()),
            )
        } else {
            (Latency::new(), Latency::new())
        };
        Sample {
            interfaces: iface_samples(c.port.inner(), cfg),
            drops: p.drops().snapshot().to_vec(),
            ct: p
                .conntrack()
                .map(|t| (t.len() as u64, t.max() as u64, t.stats())),
            held: (p.held() + p.reassembling()) as u64,
            steer: c.port.stats(),
            arp: p.arp_counters(),
            flow_cache: (p.flow_cache_usable(), p.flow_cache_hits()),
            batch_lat,
            pkt_lat,
        }
    }

    /// The instance's totals: counters summed over the workers.
    pub(super) fn merge(all: &[Sample]) -> Sample {
        let mut m = all.first().cloned().unwrap_or_default();
        for s in all.iter().skip(1) {
            for (a, b) in m.interfaces.iter_mut().zip(&s.interfaces) {
                a.add(b);
            }
            for ((_, a), (_, b)) in m.drops.iter_mut().zip(&s.drops) {
                *a += b;
            }
            m.ct = match (m.ct, s.ct) {
                (Some((n, max, a)), Some((n2, max2, b))) => Some((n + n2, max + max2, a.sum(&b))),
                (a, b) => a.or(b),
            };
            m.held += s.held;
            m.steer.add(&s.steer);
            m.arp.add(&s.arp);
            m.flow_cache.1 += s.flow_cache.1;
            m.batch_lat.add(&s.batch_lat);
            m.pkt_lat.add(&s.pkt_lat);
        }
        m
    }
}

/// Each interface's counters and the kernel's statistics of its socket.
pub(super) fn iface_samples(port: &XdpPort, cfg: &Config) -> Vec<fastables_stats::IfaceSample> {
    cfg.interfaces
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let k = port.counters(i as IfIndex);
            let x = port.kernel_stats(i as IfIndex).unwrap_or_default();
            fastables_stats::IfaceSample {
                name: c.name.clone(),
                queue: None,
                traffic: fastables_stats::TrafficCounters {
                    rx_packets: k.rx,
                    rx_bytes: k.rx_bytes,
                    tx_packets: k.tx,
                    tx_bytes: k.tx_bytes,
                },
                xdp: fastables_stats::XdpCounters {
                    rx_dropped: x.rx_dropped,
                    rx_ring_full: x.rx_ring_full,
                    fill_ring_empty: x.rx_fill_ring_empty_descs,
                    rx_invalid: x.rx_invalid_descs,
                    tx_invalid: x.tx_invalid_descs,
                },
            }
        })
        .collect()
}

/// The table `sim` prints too: packets per interface, drops by reason.
pub(super) fn summary(s: &Sample) -> Summary {
    let interfaces = s
        .interfaces
        .iter()
        .map(|x| IfaceTotals {
            name: x.name.clone(),
            rx_packets: x.traffic.rx_packets,
            rx_bytes: x.traffic.rx_bytes,
            tx_packets: x.traffic.tx_packets,
            tx_bytes: x.traffic.tx_bytes,
            rx_too_long: 0,
        })
        .collect();
    let drops = s.drops.iter().copied().filter(|(_, n)| *n > 0).collect();
    Summary {
        interfaces,
        drops,
        last_ns: 0,
    }
}
