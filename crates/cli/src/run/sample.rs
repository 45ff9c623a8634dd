//! A worker's counters as the control thread reads them ([`Sample`]), their
//! sum over the workers, and how `fastables stats` and `/metrics` name the
//! counter groups declared in other crates ([`ARP_COUNTERS`],
//! [`STEER_COUNTERS`]).

use fastables_config::Config;
use fastables_conntrack::Stats as ConntrackStats;
use fastables_dataplane::drop::DropReason;
use fastables_dataplane::neigh::ArpCounters;
use fastables_offline::{IfaceTotals, Summary};
use fastables_port::steer::SteerStats;
use fastables_rules::ctx::IfIndex;
use fastables_stats::{Counter, IfaceSample, Latency, TrafficCounters, XdpCounters};
use fastables_xdp::XdpPort;

use super::worker::WorkerState;

/// ARP's counters, as `fastables stats` and `/metrics` name them.
pub(super) const ARP_COUNTERS: &[Counter<ArpCounters>] = &[
    Counter {
        name: "received",
        metric: Some("fastables_arp_received_total"),
        help: "ARP packets received.",
        get: |a| a.received,
    },
    Counter {
        name: "replies_sent",
        metric: Some("fastables_arp_replies_sent_total"),
        help: "ARP replies sent for our addresses.",
        get: |a| a.replies_sent,
    },
    Counter {
        name: "requests_sent",
        metric: Some("fastables_arp_requests_sent_total"),
        help: "ARP requests sent for next hops.",
        get: |a| a.requests_sent,
    },
    Counter {
        name: "learned",
        metric: Some("fastables_neighbors_learned_total"),
        help: "Neighbor entries that got a MAC address.",
        get: |a| a.learned,
    },
];

/// The hand-offs between workers, as `fastables stats` names them (the
/// frames handed out and lost are in `/metrics` too).
pub(super) const STEER_COUNTERS: &[Counter<SteerStats>] = &[
    Counter {
        name: "handed_out",
        metric: Some("fastables_handoffs_total"),
        help: "Frames handed to the worker that owns their connection.",
        get: |s| s.handed_out,
    },
    Counter {
        name: "handed_in",
        metric: None,
        help: "Frames other workers handed here.",
        get: |s| s.handed_in,
    },
    Counter {
        name: "handoff_dropped",
        metric: Some("fastables_handoffs_dropped_total"),
        help: "Frames lost on the way to their owner (queue full).",
        get: |s| s.handoff_dropped,
    },
    Counter {
        name: "arp_copies",
        metric: None,
        help: "ARP replies copied to the other workers.",
        get: |s| s.arp_copies,
    },
    Counter {
        name: "redirects_sent",
        metric: None,
        help: "Reply tuples announced to the other workers.",
        get: |s| s.redirects_sent,
    },
    Counter {
        name: "redirects_dropped",
        metric: None,
        help: "Announcements lost (a full queue or table).",
        get: |s| s.redirects_dropped,
    },
    Counter {
        name: "redirects_known",
        metric: None,
        help: "Reply tuples remembered for other workers now.",
        get: |s| s.redirects_known,
    },
];

/// One worker's counters (and, for the metrics, the latency recorded since
/// the last sample).
#[derive(Clone, Default)]
pub(super) struct Sample {
    pub(super) interfaces: Vec<IfaceSample>,
    pub(super) drops: Vec<(DropReason, u64)>,
    /// The connection table, when conntrack is loaded.
    pub(super) conntrack: Option<ConntrackSample>,
    /// Frames waiting for ARP or reassembly.
    pub(super) held: u64,
    pub(super) steer: SteerStats,
    pub(super) arp: ArpCounters,
    pub(super) flow_cache: FlowCacheSample,
    pub(super) batch_lat: Latency,
    pub(super) pkt_lat: Latency,
}

/// A connection table's fill and statistics.
#[derive(Clone, Copy, Default)]
pub(super) struct ConntrackSample {
    pub(super) entries: u64,
    pub(super) max: u64,
    pub(super) stats: ConntrackStats,
}

/// Whether the flow cache can forward with this ruleset, and the frames it
/// forwarded.
#[derive(Clone, Copy, Default, serde::Serialize)]
pub(super) struct FlowCacheSample {
    pub(super) usable: bool,
    pub(super) hits: u64,
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
            conntrack: p.conntrack().map(|t| ConntrackSample {
                entries: t.len() as u64,
                max: t.max() as u64,
                stats: t.stats(),
            }),
            held: (p.held() + p.reassembling()) as u64,
            steer: c.port.stats(),
            arp: p.arp_counters(),
            flow_cache: FlowCacheSample {
                usable: p.flow_cache_usable(),
                hits: p.flow_cache_hits(),
            },
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
            m.conntrack = match (m.conntrack, s.conntrack) {
                (Some(a), Some(b)) => Some(ConntrackSample {
                    entries: a.entries + b.entries,
                    max: a.max + b.max,
                    stats: a.stats.sum(&b.stats),
                }),
                (a, b) => a.or(b),
            };
            m.held += s.held;
            m.steer.add(&s.steer);
            m.arp.add(&s.arp);
            m.flow_cache.hits += s.flow_cache.hits;
            m.batch_lat.add(&s.batch_lat);
            m.pkt_lat.add(&s.pkt_lat);
        }
        m
    }

    /// Packets received and sent on every interface.
    pub(super) fn packets(&self) -> (u64, u64) {
        let sum =
            |f: fn(&TrafficCounters) -> u64| self.interfaces.iter().map(|x| f(&x.traffic)).sum();
        (sum(|t| t.rx_packets), sum(|t| t.tx_packets))
    }
}

/// Each interface's counters and the kernel's statistics of its socket.
fn iface_samples(port: &XdpPort, cfg: &Config) -> Vec<IfaceSample> {
    cfg.interfaces
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let k = port.counters(i as IfIndex);
            let x = port.kernel_stats(i as IfIndex).unwrap_or_default();
            IfaceSample {
                name: c.name.clone(),
                queue: None,
                traffic: TrafficCounters {
                    rx_packets: k.rx,
                    rx_bytes: k.rx_bytes,
                    tx_packets: k.tx,
                    tx_bytes: k.tx_bytes,
                },
                xdp: XdpCounters {
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
