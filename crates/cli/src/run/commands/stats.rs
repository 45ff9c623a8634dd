//! `fastables stats`: the instance's counters merged over the workers, as
//! a table or as JSON.

use std::sync::Arc;

use fastables_dataplane::io::PacketIo;
use fastables_dataplane::steer::SteerStats;
use fastables_rules::model::Table;
use fastables_stats::Latency;

use super::ControlState;
use crate::control;
use crate::run::sample::{summary, Sample};
use crate::run::worker::Workers;

pub(super) fn stats_cmd(args: &[&str], state: &ControlState, workers: &Workers) -> control::Reply {
    let json = match args {
        [] => false,
        ["--json"] => true,
        _ => return control::Reply::fail(format!("fastables: stats: unknown options {args:?}\n")),
    };
    let cfg = Arc::clone(&state.cfg);
    let per_worker = workers.map(move |c| Sample::of(c, &cfg, false));
    let m = Sample::merge(&per_worker);
    let nat = nat_ports(state, workers);
    let samples = &m.interfaces;
    let s = summary(&m);
    let (entries, max, _) = m.ct.unwrap_or_default();
    let xdp = |x: &fastables_stats::IfaceSample| {
        [
            ("rx_dropped", x.xdp.rx_dropped),
            ("rx_ring_full", x.xdp.rx_ring_full),
            ("fill_ring_empty", x.xdp.fill_ring_empty),
            ("rx_invalid", x.xdp.rx_invalid),
            ("tx_invalid", x.xdp.tx_invalid),
        ]
    };
    let steer = |st: &SteerStats| {
        [
            ("handed_out", st.handed_out),
            ("handed_in", st.handed_in),
            ("handoff_dropped", st.handoff_dropped),
            ("arp_copies", st.arp_copies),
            ("redirects_sent", st.redirects_sent),
            ("redirects_dropped", st.redirects_dropped),
            ("redirects_known", st.redirects_known),
        ]
    };
    if json {
        let list = |items: Vec<String>| items.join(",");
        let interfaces = list(
            samples
                .iter()
                .map(|x| {
                    let rate = state.rates.iter().find(|r| r.name == x.name).map_or(
                        String::new(),
                        |r| {
                            format!(
                                ",\"rx_pps\":{:.1},\"tx_pps\":{:.1},\"rx_bps\":{:.0},\"tx_bps\":{:.0}",
                                r.rx_pps, r.tx_pps, r.rx_bps, r.tx_bps
                            )
                        },
                    );
                    format!(
                        "{{\"name\":\"{}\",\"rx_packets\":{},\"rx_bytes\":{},\"tx_packets\":{},\"tx_bytes\":{}{rate}}}",
                        x.name, x.traffic.rx_packets, x.traffic.rx_bytes, x.traffic.tx_packets, x.traffic.tx_bytes
                    )
                })
                .collect(),
        );
        let drops = list(
            s.drops
                .iter()
                .map(|(r, n)| format!("\"{}\":{n}", r.name()))
                .collect(),
        );
        let xdp = list(
            samples
                .iter()
                .map(|x| {
                    let f = list(xdp(x).iter().map(|(k, v)| format!("\"{k}\":{v}")).collect());
                    format!("\"{}\":{{{f}}}", x.name)
                })
                .collect(),
        );
        let workers_json = list(
            per_worker
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let st = list(
                        steer(&w.steer)
                            .iter()
                            .map(|(k, v)| format!("\"{k}\":{v}"))
                            .collect(),
                    );
                    let rx: u64 = w.interfaces.iter().map(|x| x.traffic.rx_packets).sum();
                    let tx: u64 = w.interfaces.iter().map(|x| x.traffic.tx_packets).sum();
                    let ct = w.ct.map_or(0, |c| c.0);
                    format!(
                        "{{\"worker\":{i},\"core\":{},\"rx_packets\":{rx},\"tx_packets\":{tx},\"conntrack_entries\":{ct},{st}}}",
                        state.cfg.workers.cores.get(i).copied().unwrap_or(0)
                    )
                })
                .collect(),
        );
        let nat_json = list(
            nat.addresses
                .iter()
                .map(|((a, p), n)| {
                    format!(
                        "{{\"address\":\"{}\",\"proto\":{p},\"ports\":{n}}}",
                        std::net::Ipv4Addr::from(*a)
                    )
                })
                .collect(),
        );
        let range_json = list(
            nat.ranges
                .iter()
                .map(|r| {
                    format!(
                        "{{\"rule\":\"{}\",\"lo\":{},\"hi\":{},\"in_use\":{}}}",
                        r.rule, r.lo, r.hi, r.in_use
                    )
                })
                .collect(),
        );
        return control::Reply::ok(format!(
            "{{\"interfaces\":[{interfaces}],\"drops\":{{{drops}}},\"xdp\":{{{xdp}}},\"conntrack\":{{\"entries\":{entries},\"max\":{max}}},\"arp\":{{\"received\":{},\"replies_sent\":{},\"requests_sent\":{},\"learned\":{}}},\"flow_cache\":{{\"usable\":{},\"hits\":{}}},\"nat\":{{\"addresses\":[{nat_json}],\"ranges\":[{range_json}]}},\"workers\":[{workers_json}]}}\n",
            m.arp.received,
            m.arp.replies_sent,
            m.arp.requests_sent,
            m.arp.learned,
            m.flow_cache.0,
            m.flow_cache.1
        ));
    }
    let mut o = s.to_string();
    for r in &state.rates {
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
    for x in samples {
        let f: Vec<String> = xdp(x).iter().map(|(k, v)| format!("{k} {v}")).collect();
        o.push_str(&format!("xdp {}: {}\n", x.name, f.join(" ")));
    }
    let a = &m.arp;
    o.push_str(&format!(
        "arp: received {} replies_sent {} requests_sent {} learned {}\n",
        a.received, a.replies_sent, a.requests_sent, a.learned
    ));
    o.push_str(&match m.flow_cache {
        (true, hits) => {
            format!("flow cache: on, {hits} frames forwarded by their connection's decision\n")
        }
        (false, _) => {
            "flow cache: off (a chain of the forward path is not flow-invariant, or no conntrack)\n"
                .to_string()
        }
    });
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
    for ((a, p), n) in &nat.addresses {
        let proto = match p {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            1 => "icmp ids".to_string(),
            p => format!("proto {p}"),
        };
        o.push_str(&format!(
            "nat: {} {proto}: {n} in use\n",
            std::net::Ipv4Addr::from(*a)
        ));
    }
    for r in &nat.ranges {
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
    for (b, p) in &state.latency {
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
    if per_worker.len() > 1 {
        for (i, w) in per_worker.iter().enumerate() {
            let rx: u64 = w.interfaces.iter().map(|x| x.traffic.rx_packets).sum();
            let tx: u64 = w.interfaces.iter().map(|x| x.traffic.tx_packets).sum();
            let ct = w.ct.map_or(0, |c| c.0);
            let st: Vec<String> = steer(&w.steer)
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            o.push_str(&format!(
                "worker {i} (core {}): rx {rx} tx {tx} conntrack {ct} {}\n",
                state.cfg.workers.cores.get(i).copied().unwrap_or(0),
                st.join(" ")
            ));
            if let Some((b, p)) = state.latency.get(i).filter(|(b, _)| b.count() > 0) {
                o.push_str(&format!(
                    "worker {i} latency per batch:  {}\nworker {i} latency per packet: {}\n",
                    b.summary(),
                    p.summary()
                ));
            }
        }
    }
    control::Reply::ok(o)
}

/// Source NAT in use: translated ports (ICMP ids) per address and
/// protocol, and for each SNAT/MASQUERADE rule with a port range how many
/// of its ports connections hold (of that rule's protocol, any address).
struct NatPorts {
    addresses: Vec<((u32, u8), u64)>,
    ranges: Vec<NatRangeUse>,
}

struct NatRangeUse {
    rule: String,
    lo: u16,
    hi: u16,
    in_use: u64,
}

fn nat_ports(state: &ControlState, workers: &Workers) -> NatPorts {
    use fastables_rules::model::Target;
    // (address, protocol, port) of every source-NATed connection.
    let held = workers.map(|c| {
        let now = c.port.now_ns();
        c.worker.pipeline().conntrack().map_or_else(Vec::new, |t| {
            t.iter()
                .filter(|(_, e)| {
                    e.status & fastables_conntrack::status::SRC_NAT != 0 && !e.is_expired(now)
                })
                .map(|(_, e)| {
                    let r = e.reply();
                    (r.dst, r.proto, r.dport)
                })
                .collect::<Vec<_>>()
        })
    });
    let held: Vec<(u32, u8, u16)> = held.into_iter().flatten().collect();
    let mut addresses: std::collections::BTreeMap<(u32, u8), u64> = Default::default();
    for (a, p, _) in &held {
        *addresses.entry((*a, *p)).or_default() += 1;
    }
    let mut ranges = Vec::new();
    for t in state.rs.tables.iter().filter(|t| t.table == Table::Nat) {
        for c in &t.chains {
            for (i, r) in c.rules.iter().enumerate() {
                let ports = match &r.target {
                    Target::Snat { range, .. } => range.ports,
                    Target::Masquerade { ports, .. } => *ports,
                    _ => None,
                };
                let Some(p) = ports else { continue };
                let proto = r.proto.filter(|x| !x.inv).map(|x| x.val);
                let in_use = held
                    .iter()
                    .filter(|(_, pr, port)| {
                        proto.is_none_or(|x| x == *pr) && (p.lo..=p.hi).contains(port)
                    })
                    .count() as u64;
                ranges.push(NatRangeUse {
                    rule: format!("nat {} rule {}", c.name, i + 1),
                    lo: p.lo,
                    hi: p.hi,
                    in_use,
                });
            }
        }
    }
    NatPorts {
        addresses: addresses.into_iter().collect(),
        ranges,
    }
}
