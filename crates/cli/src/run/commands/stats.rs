//! `fastables stats`: the instance's counters merged over the workers, as
//! a table or as JSON (serde's derive: every name escaped).

use std::net::Ipv4Addr;
use std::sync::Arc;

use fastables_port::PacketIo;
use fastables_rules::model::Table;
use fastables_stats::{Latency, TrafficCounters, Values, XdpCounters};
use serde::{Serialize, Serializer};

use super::ControlState;
use crate::control;
use crate::run::metrics::IfaceRate;
use crate::run::sample::{summary, FlowCacheSample, Sample, ARP_COUNTERS, STEER_COUNTERS};
use crate::run::worker::Workers;

pub(super) fn stats_cmd(args: &[&str], state: &ControlState, workers: &Workers) -> control::Reply {
    let json = match args {
        [] => false,
        ["--json"] => true,
        _ => return control::Reply::fail(format!("fastables: stats: unknown options {args:?}\n")),
    };
    let cfg = Arc::clone(&state.cfg);
    let per_worker = workers.map(move |c| Sample::of(c, &cfg, false));
    let view = StatsView {
        merged: Sample::merge(&per_worker),
        per_worker,
        nat: nat_ports(state, workers),
        rates: &state.rates,
        cores: &state.cfg.workers.cores,
        latency: &state.latency,
    };
    let mut out = if json { view.json() } else { view.text() };
    if let (false, Some(c)) = (json, &state.natlog) {
        out.push_str(&crate::natlog::summary(&c.snapshot()));
        out.push('\n');
    }
    control::Reply::ok(out)
}

/// What `fastables stats` shows: the workers' samples and what the control
/// thread keeps.
struct StatsView<'a> {
    merged: Sample,
    per_worker: Vec<Sample>,
    nat: NatPorts,
    rates: &'a [IfaceRate],
    /// Each worker's core.
    cores: &'a [u32],
    /// Per worker, the latency since start (per batch, per packet).
    latency: &'a [(Latency, Latency)],
}

impl StatsView<'_> {
    fn core(&self, worker: usize) -> u32 {
        self.cores.get(worker).copied().unwrap_or(0)
    }

    /// The table.
    fn text(&self) -> String {
        let m = &self.merged;
        let mut o = summary(m).to_string();
        for r in self.rates {
            o.push_str(&format!(
                "rate {} (last {:.1} s): rx {:.0} pps {:.1} Mbit/s, tx {:.0} pps {:.1} Mbit/s\n",
                r.name,
                r.secs,
                r.rx_pps,
                r.rx_bps / 1e6,
                r.tx_pps,
                r.tx_bps / 1e6
            ));
        }
        // What the kernel side of each AF_XDP socket dropped (XDP_STATISTICS).
        for x in &m.interfaces {
            o.push_str(&format!("xdp {}: {}\n", x.name, x.xdp.values()));
        }
        o.push_str(&format!("arp: {}\n", Values::new(&m.arp, ARP_COUNTERS)));
        o.push_str(&match m.flow_cache {
            FlowCacheSample { usable: true, hits } => {
                format!("flow cache: on, {hits} frames forwarded by their connection's decision\n")
            }
            FlowCacheSample { usable: false, .. } => {
                "flow cache: off (a chain of the forward path is not flow-invariant, or no conntrack)\n"
                    .to_string()
            }
        });
        let ct = m.conntrack.unwrap_or_default();
        let (entries, max) = (ct.entries, ct.max);
        if max > 0 {
            let fill = entries as f64 * 100.0 / max as f64;
            o.push_str(&format!(
                "conntrack: {entries} entries of {max} ({fill:.1}%)"
            ));
            if fill > 90.0 {
                o.push_str("  WARNING: above 90%, new connections will soon be dropped");
            }
            o.push('\n');
        } else {
            o.push_str("conntrack: not loaded (no rule needs it)\n");
        }
        for ((a, p), n) in &self.nat.addresses {
            let proto = match p {
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                1 => "icmp ids".to_string(),
                p => format!("proto {p}"),
            };
            o.push_str(&format!(
                "nat: {} {proto}: {n} in use\n",
                Ipv4Addr::from(*a)
            ));
        }
        for r in &self.nat.ranges {
            o.push_str(&format!(
                "nat range {}-{} ({}): {} of {} ports in use\n",
                r.lo,
                r.hi,
                r.rule,
                r.in_use,
                u32::from(r.hi) - u32::from(r.lo) + 1
            ));
        }
        let mut total = (Latency::new(), Latency::new());
        for (b, p) in self.latency {
            total.0.add(b);
            total.1.add(p);
        }
        if total.0.count() > 0 {
            o.push_str(&format!(
                "latency per batch:  {}\nlatency per packet: {}\n",
                total.0.summary(),
                total.1.summary()
            ));
        }
        if self.per_worker.len() > 1 {
            for (i, w) in self.per_worker.iter().enumerate() {
                let (rx, tx) = w.packets();
                let ct = w.conntrack.map_or(0, |c| c.entries);
                o.push_str(&format!(
                    "worker {i} (core {}): rx {rx} tx {tx} conntrack {ct} {}\n",
                    self.core(i),
                    Values::new(&w.steer, STEER_COUNTERS)
                ));
                if let Some((b, p)) = self.latency.get(i).filter(|(b, _)| b.count() > 0) {
                    o.push_str(&format!(
                        "worker {i} latency per batch:  {}\nworker {i} latency per packet: {}\n",
                        b.summary(),
                        p.summary()
                    ));
                }
            }
        }
        o
    }

    /// One JSON object (and a newline).
    fn json(&self) -> String {
        let m = &self.merged;
        let ct = m.conntrack.unwrap_or_default();
        let doc = StatsJson {
            interfaces: m
                .interfaces
                .iter()
                .map(|x| InterfaceJson {
                    name: &x.name,
                    traffic: &x.traffic,
                    rate: self
                        .rates
                        .iter()
                        .find(|r| r.name == x.name)
                        .map(|r| RateJson {
                            rx_pps: one_decimal(r.rx_pps),
                            tx_pps: one_decimal(r.tx_pps),
                            rx_bps: whole(r.rx_bps),
                            tx_bps: whole(r.tx_bps),
                        }),
                })
                .collect(),
            drops: summary(m)
                .drops
                .iter()
                .map(|(r, n)| (r.name(), *n))
                .collect(),
            xdp: m
                .interfaces
                .iter()
                .map(|x| (x.name.as_str(), &x.xdp))
                .collect(),
            conntrack: ConntrackJson {
                entries: ct.entries,
                max: ct.max,
            },
            arp: Values::new(&m.arp, ARP_COUNTERS),
            flow_cache: m.flow_cache,
            nat: NatJson {
                addresses: self
                    .nat
                    .addresses
                    .iter()
                    .map(|&((a, proto), ports)| NatAddressJson {
                        address: Ipv4Addr::from(a),
                        proto,
                        ports,
                    })
                    .collect(),
                ranges: &self.nat.ranges,
            },
            workers: self
                .per_worker
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let (rx_packets, tx_packets) = w.packets();
                    WorkerJson {
                        worker: i,
                        core: self.core(i),
                        rx_packets,
                        tx_packets,
                        conntrack_entries: w.conntrack.map_or(0, |c| c.entries),
                        steer: Values::new(&w.steer, STEER_COUNTERS),
                    }
                })
                .collect(),
        };
        let mut out = serde_json::to_string(&doc).unwrap_or_default();
        out.push('\n');
        out
    }
}

/// `x` as `{:.1}` prints it.
fn one_decimal(x: f64) -> f64 {
    format!("{x:.1}").parse().unwrap_or(x)
}

/// `x` as `{:.0}` prints it (a rate: never negative).
fn whole(x: f64) -> u64 {
    format!("{x:.0}").parse().unwrap_or(0)
}

/// Pairs as one JSON object, in their order.
fn as_map<K: Serialize, V: Serialize, S: Serializer>(
    pairs: &[(K, V)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// `fastables stats --json`.
#[derive(Serialize)]
struct StatsJson<'a> {
    interfaces: Vec<InterfaceJson<'a>>,
    /// Drops by reason, those that happened.
    #[serde(serialize_with = "as_map")]
    drops: Vec<(&'static str, u64)>,
    /// The kernel's AF_XDP statistics by interface.
    #[serde(serialize_with = "as_map")]
    xdp: Vec<(&'a str, &'a XdpCounters)>,
    conntrack: ConntrackJson,
    arp: Values<'a, fastables_dataplane::neigh::ArpCounters>,
    flow_cache: FlowCacheSample,
    nat: NatJson<'a>,
    workers: Vec<WorkerJson<'a>>,
}

#[derive(Serialize)]
struct InterfaceJson<'a> {
    name: &'a str,
    #[serde(flatten)]
    traffic: &'a TrafficCounters,
    /// Over the last stats interval (none before the first).
    #[serde(flatten)]
    rate: Option<RateJson>,
}

#[derive(Serialize)]
struct RateJson {
    rx_pps: f64,
    tx_pps: f64,
    rx_bps: u64,
    tx_bps: u64,
}

#[derive(Serialize)]
struct ConntrackJson {
    entries: u64,
    max: u64,
}

#[derive(Serialize)]
struct NatJson<'a> {
    addresses: Vec<NatAddressJson>,
    ranges: &'a [NatRangeUse],
}

#[derive(Serialize)]
struct NatAddressJson {
    address: Ipv4Addr,
    proto: u8,
    ports: u64,
}

#[derive(Serialize)]
struct WorkerJson<'a> {
    worker: usize,
    core: u32,
    rx_packets: u64,
    tx_packets: u64,
    conntrack_entries: u64,
    #[serde(flatten)]
    steer: Values<'a, fastables_port::steer::SteerStats>,
}

/// Source NAT in use: translated ports (ICMP ids) per address and
/// protocol, and for each SNAT/MASQUERADE rule with a port range how many
/// of its ports connections hold (of that rule's protocol, any address).
pub(in crate::run) struct NatPorts {
    pub(in crate::run) addresses: Vec<((u32, u8), u64)>,
    pub(in crate::run) ranges: Vec<NatRangeUse>,
}

/// A SNAT/MASQUERADE rule's port range and the ports of it in use.
#[derive(serde::Serialize)]
pub(in crate::run) struct NatRangeUse {
    pub(in crate::run) rule: String,
    pub(in crate::run) lo: u16,
    pub(in crate::run) hi: u16,
    pub(in crate::run) in_use: u64,
    /// The rule's chain and number (from 1), for the metrics.
    #[serde(skip)]
    pub(in crate::run) at: (String, usize),
}

/// A port range of a rule: its protocol (any: `None`) and bounds.
type RangeSpec = (Option<u8>, u16, u16);

/// Counts the ports in use on every worker (each counts its own table,
/// between two batches) and adds the counts up.
pub(in crate::run) fn nat_ports(state: &ControlState, workers: &Workers) -> NatPorts {
    use fastables_rules::model::Target;
    let mut ranges = Vec::new();
    let mut specs: Vec<RangeSpec> = Vec::new();
    for t in state.rs.tables.iter().filter(|t| t.table == Table::Nat) {
        for c in &t.chains {
            for (i, r) in c.rules.iter().enumerate() {
                let ports = match &r.target {
                    Target::Snat { range, .. } => range.ports,
                    Target::Masquerade { ports, .. } => *ports,
                    _ => None,
                };
                let Some(p) = ports else { continue };
                specs.push((r.proto.filter(|x| !x.inv).map(|x| x.val), p.lo, p.hi));
                ranges.push(NatRangeUse {
                    rule: format!("nat {} rule {}", c.name, i + 1),
                    lo: p.lo,
                    hi: p.hi,
                    in_use: 0,
                    at: (c.name.clone(), i + 1),
                });
            }
        }
    }
    let specs = std::sync::Arc::new(specs);
    let parts = workers.map(move |c| {
        let mut addresses: std::collections::BTreeMap<(u32, u8), u64> = Default::default();
        let mut in_use = vec![0u64; specs.len()];
        let now = c.port.now_ns();
        if let Some(t) = c.worker.pipeline().conntrack() {
            let nat = t.iter().filter(|(_, e)| {
                e.status & fastables_conntrack::status::SRC_NAT != 0 && !e.is_expired(now)
            });
            for (_, e) in nat {
                let r = e.reply();
                *addresses.entry((r.dst, r.proto)).or_default() += 1;
                for (n, (proto, lo, hi)) in in_use.iter_mut().zip(specs.iter()) {
                    if proto.is_none_or(|x| x == r.proto) && (*lo..=*hi).contains(&r.dport) {
                        *n += 1;
                    }
                }
            }
        }
        (addresses, in_use)
    });
    let mut addresses: std::collections::BTreeMap<(u32, u8), u64> = Default::default();
    for (a, in_use) in parts {
        for (k, n) in a {
            *addresses.entry(k).or_default() += n;
        }
        for (r, n) in ranges.iter_mut().zip(in_use) {
            r.in_use += n;
        }
    }
    NatPorts {
        addresses: addresses.into_iter().collect(),
        ranges,
    }
}

#[cfg(test)]
mod tests {
    use fastables_stats::IfaceSample;

    use super::*;
    use crate::run::sample::ConntrackSample;

    /// An interface whose every counter has its own value.
    fn iface(name: &str, base: u64) -> IfaceSample {
        IfaceSample {
            name: name.into(),
            queue: None,
            traffic: TrafficCounters {
                rx_packets: base + 1,
                rx_bytes: base + 2,
                tx_packets: base + 3,
                tx_bytes: base + 4,
            },
            xdp: XdpCounters {
                rx_dropped: base + 5,
                rx_ring_full: base + 6,
                fill_ring_empty: base + 7,
                rx_invalid: base + 8,
                tx_invalid: base + 9,
            },
        }
    }

    fn view<'a>(
        per_worker: Vec<Sample>,
        rates: &'a [IfaceRate],
        latency: &'a [(Latency, Latency)],
    ) -> StatsView<'a> {
        StatsView {
            merged: Sample::merge(&per_worker),
            per_worker,
            nat: NatPorts {
                addresses: vec![((0x0a00_020f, 6), 7)],
                ranges: vec![NatRangeUse {
                    rule: "nat POST\"ROUTING rule 1".into(),
                    lo: 55666,
                    hi: 55680,
                    in_use: 7,
                    at: ("POST\"ROUTING".into(), 1),
                }],
            },
            rates,
            cores: &[1, 0],
            latency,
        }
    }

    /// A counter an interface group declares but `fastables stats` does
    /// not show is a lie on a dashboard: every one is in the table and in
    /// the JSON, with its value.
    #[test]
    fn every_declared_interface_counter_is_shown() {
        let worker = Sample {
            interfaces: vec![iface("eth0", 1000), iface("docker0", 2000)],
            ..Sample::default()
        };
        let v = view(vec![worker], &[], &[]);
        let text = v.text();
        let json: serde_json::Value = serde_json::from_str(&v.json()).unwrap();
        let header = text.lines().next().unwrap();
        for (k, x) in v.merged.interfaces.iter().enumerate() {
            let row: Vec<&str> = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(x.name.as_str()))
                .unwrap_or_else(|| panic!("no row for {}:\n{text}", x.name))
                .split_whitespace()
                .collect();
            for c in TrafficCounters::COUNTERS {
                let value = (c.get)(&x.traffic);
                assert!(header.contains(c.name), "{} not in: {header}", c.name);
                assert!(
                    row.contains(&value.to_string().as_str()),
                    "{}: {text}",
                    c.name
                );
                assert_eq!(json["interfaces"][k][c.name], value, "{} in {json}", c.name);
            }
            let line = format!("xdp {}: ", x.name);
            let xdp = text
                .lines()
                .find_map(|l| l.strip_prefix(&line))
                .unwrap_or_else(|| panic!("no `{line}` in:\n{text}"));
            for c in XdpCounters::COUNTERS {
                let value = (c.get)(&x.xdp);
                assert!(
                    xdp.contains(&format!("{} {value}", c.name)),
                    "{}: {text}",
                    c.name
                );
                assert_eq!(json["xdp"][&x.name][c.name], value, "{} in {json}", c.name);
            }
        }
    }

    #[test]
    fn the_groups_of_other_crates_are_shown_by_their_names() {
        let mut worker = Sample {
            interfaces: vec![iface("eth0", 0)],
            conntrack: Some(ConntrackSample {
                entries: 5,
                max: 100,
                stats: Default::default(),
            }),
            ..Sample::default()
        };
        worker.arp.received = 4;
        worker.arp.learned = 2;
        worker.steer.handed_out = 9;
        worker.steer.redirects_known = 3;
        let mut l = Latency::new();
        l.record(1_500);
        let latency = [(l.clone(), l.clone()), (l.clone(), l)];
        let v = view(vec![worker.clone(), worker], &[], &latency);
        let text = v.text();
        assert!(
            text.contains("\narp: received 8 replies_sent 0 requests_sent 0 learned 4\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\nworker 1 (core 0): rx 1 tx 3 conntrack 5 handed_out 9 handed_in 0 \
                 handoff_dropped 0 arp_copies 0 redirects_sent 0 redirects_dropped 0 \
                 redirects_known 3\n"
            ),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&v.json()).unwrap();
        assert_eq!(json["arp"]["learned"], 4);
        assert_eq!(json["workers"][1]["handed_out"], 9);
        assert_eq!(json["workers"][1]["core"], 0);
        assert_eq!(json["conntrack"]["entries"], 10);
        // Names are escaped.
        assert_eq!(json["nat"]["ranges"][0]["rule"], "nat POST\"ROUTING rule 1");
        assert_eq!(json["nat"]["addresses"][0]["address"], "10.0.2.15");
    }

    #[test]
    fn rates_are_rounded_as_the_text_shows_them() {
        let rates = [IfaceRate {
            name: "eth0".into(),
            rx_pps: 1234.56,
            rx_bps: 98765.5,
            tx_pps: 0.04,
            tx_bps: 12.4,
            secs: 0.2,
        }];
        let worker = Sample {
            interfaces: vec![iface("eth0", 0), iface("eth1", 10)],
            ..Sample::default()
        };
        let v = view(vec![worker], &rates, &[]);
        let json = v.json();
        assert!(
            json.contains(
                "\"tx_bytes\":4,\"rx_pps\":1234.6,\"tx_pps\":0.0,\"rx_bps\":98766,\"tx_bps\":12}"
            ),
            "{json}"
        );
        assert!(
            json.contains("{\"name\":\"eth1\",\"rx_packets\":11,"),
            "{json}"
        );
        assert!(json.ends_with("}\n"));
    }
}
