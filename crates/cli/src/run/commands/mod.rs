//! The control thread's commands: what it keeps to answer them
//! ([`ControlState`]), and each request of the control socket, answered by
//! running jobs on the workers and merging their answers: `rules.rs`
//! (`list`, `save`, `restore`, SIGHUP's reload), `conntrack.rs`,
//! `trace.rs`, `stats.rs`.

mod conntrack;
mod rules;
mod stats;
mod trace;

use std::sync::Arc;
use std::time::Instant;

use fastables_config::Config;
use fastables_dataplane::pipeline::TraceFilter;
use fastables_rules::compile::CompiledRuleset;
use fastables_rules::model::Ruleset;
use fastables_stats::Latency;

use super::metrics::IfaceRate;
use super::worker::Workers;
use crate::control;
pub(super) use conntrack::publish_events;
use conntrack::{conntrack_cmd, parse_ct_args, ConntrackOp, EventSub};
pub(super) use rules::reload;
use rules::{list_cmd, restore_cmd, save_cmd};
pub(super) use stats::nat_ports;
use stats::stats_cmd;
use trace::parse_trace_args;
pub(super) use trace::publish_trace;

/// What the control thread keeps to answer requests.
pub(super) struct ControlState {
    /// The ruleset as loaded (counters: the base that live counters add to).
    pub(super) rs: Ruleset,
    pub(super) compiled: Arc<CompiledRuleset>,
    pub(super) names: Vec<String>,
    /// `conntrack -E` listeners.
    pub(super) subs: Vec<EventSub>,
    /// Per worker, the latency since start (per batch, per packet).
    pub(super) latency: Vec<(Latency, Latency)>,
    /// The `fastables trace` listener and how many records it still wants.
    pub(super) trace_sub: Option<(control::StreamSender, Option<u64>)>,
    pub(super) cfg: Arc<Config>,
    /// The interfaces' counters at the last interval, for the rates.
    pub(super) last_sample: Option<(Instant, Vec<fastables_stats::IfaceSample>)>,
    /// Packets and bits per second over the last interval.
    pub(super) rates: Vec<IfaceRate>,
    /// The NAT event log's counters (`[nat_log]`).
    pub(in crate::run) natlog: Option<Arc<fastables_natlog::Counters>>,
}

impl ControlState {
    /// The state at start: the ruleset as loaded and compiled, no listener.
    pub(super) fn new(
        rs: Ruleset,
        compiled: Arc<CompiledRuleset>,
        names: Vec<String>,
        cfg: Arc<Config>,
    ) -> ControlState {
        let n = cfg.workers.cores.len().max(1);
        ControlState {
            rs,
            compiled,
            names,
            subs: Vec::new(),
            latency: vec![(Latency::new(), Latency::new()); n],
            trace_sub: None,
            cfg,
            last_sample: None,
            rates: Vec::new(),
            natlog: None,
        }
    }

    fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// The ruleset with every worker's live counters folded in.
    fn with_counters(&self, workers: &Workers) -> Ruleset {
        let states = workers.map(|c| c.worker.pipeline().rule_state().clone());
        let refs: Vec<&fastables_rules::compile::RuleState> = states.iter().collect();
        self.compiled.counters_into(&self.rs, &refs)
    }
}

pub(super) fn answer(
    req: &control::Request,
    state: &mut ControlState,
    workers: &Workers,
) -> control::Reply {
    let args: Vec<&str> = req.args.iter().map(String::as_str).collect();
    match args.split_first() {
        Some((&"save", rest)) => save_cmd(rest, state, workers),
        Some((&"list", rest)) => list_cmd(rest, state, workers),
        Some((&"restore", rest)) => restore_cmd(rest, &req.body, state, workers),
        Some((&"conntrack", rest)) => match (&req.stream, parse_ct_args(rest)) {
            (Some(tx), Ok((ConntrackOp::Events, f, opts))) => {
                state.subs.push(EventSub::new(tx.clone(), f, opts));
                workers.map(|c| c.worker.pipeline_mut().set_ct_events(true));
                control::Reply::ok(String::new())
            }
            _ => conntrack_cmd(rest, workers),
        },
        Some((&"trace", rest)) => match (&req.stream, parse_trace_args(rest, &state.cfg)) {
            (_, Err(m)) => control::Reply {
                code: 2,
                out: String::new(),
                err: format!("fastables trace: {m}\n"),
            },
            (None, Ok(_)) => {
                control::Reply::fail("fastables trace: needs a streaming connection\n")
            }
            (Some(tx), Ok((filter, count))) => {
                if state.trace_sub.is_some() {
                    control::Reply::fail("fastables trace: another trace is running\n")
                } else {
                    state.trace_sub = Some((tx.clone(), count));
                    workers.map(move |c| c.worker.pipeline_mut().set_trace(Some((filter, count))));
                    control::Reply::ok(String::new())
                }
            }
        },
        Some((&"stats", rest)) => stats_cmd(rest, state, workers),
        Some((&"reload", [])) => match reload(workers, state) {
            Ok(m) => control::Reply::ok(format!("{m}\n")),
            Err(m) => control::Reply::fail(format!(
                "fastables: reload: {m}\nfastables: reload: the running ruleset is unchanged\n"
            )),
        },
        #[cfg(debug_assertions)]
        Some((&"test-stall-worker", [k, ms])) => stall_worker(workers, k, ms),
        _ => control::Reply::fail(format!("fastables: unknown request {:?}", req.args)),
    }
}

/// Test builds only: worker `k` sleeps `ms` milliseconds between two
/// batches (a stalled worker, for the readiness and watchdog tests).
#[cfg(debug_assertions)]
fn stall_worker(workers: &Workers, k: &str, ms: &str) -> control::Reply {
    match (k.parse::<usize>(), ms.parse::<u64>()) {
        (Ok(k), Ok(ms)) => {
            workers.post(k, move |_| {
                std::thread::sleep(std::time::Duration::from_millis(ms))
            });
            control::Reply::ok(format!("worker {k} stalls for {ms} ms\n"))
        }
        _ => control::Reply::fail("fastables: test-stall-worker K MS\n"),
    }
}

/// The tuple options `conntrack` and `trace` share (`-s -d -p --sport
/// --dport` and their long forms), into `f`; `None` for any other option.
fn tuple_option<'a>(
    f: &mut TraceFilter,
    opt: &str,
    value: &mut impl FnMut() -> Result<&'a str, String>,
) -> Option<Result<(), String>> {
    let addr = |v: &str| {
        v.parse::<std::net::Ipv4Addr>()
            .map(u32::from)
            .map_err(|_| format!("bad address `{v}'"))
    };
    let port = |v: &str| v.parse::<u16>().map_err(|_| format!("bad port `{v}'"));
    let proto = |v: &str| match v {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        _ => v
            .parse::<u8>()
            .map_err(|_| format!("unknown protocol `{v}'")),
    };
    let r = match opt {
        "-s" | "--src" | "--orig-src" | "--source" => {
            value().and_then(addr).map(|x| f.src = Some(x))
        }
        "-d" | "--dst" | "--orig-dst" | "--destination" => {
            value().and_then(addr).map(|x| f.dst = Some(x))
        }
        "-p" | "--proto" | "--protocol" => value().and_then(proto).map(|x| f.proto = Some(x)),
        "--sport" | "--orig-port-src" | "--source-port" => {
            value().and_then(port).map(|x| f.sport = Some(x))
        }
        "--dport" | "--orig-port-dst" | "--destination-port" => {
            value().and_then(port).map(|x| f.dport = Some(x))
        }
        _ => return None,
    };
    Some(r)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::instance::{ConntrackArgs, TraceArgs};

    #[derive(Parser)]
    struct Conntrack {
        #[command(flatten)]
        a: ConntrackArgs,
    }

    #[derive(Parser)]
    struct Trace {
        #[command(flatten)]
        a: TraceArgs,
    }

    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    /// The client's options (clap's, for `--help`) hand the instance what
    /// it read before from the raw arguments: the same command and filter.
    #[test]
    fn the_clients_options_reach_the_instance_unchanged() {
        for line in [
            "-L",
            "-L -p tcp --dport 80",
            "-D -s 10.0.0.1 --orig-dst 8.8.8.8 --orig-port-src 1024 --orig-port-dst 53",
            "-C --src 1.2.3.4 --source 1.2.3.5 --proto udp --protocol 17",
            "--dump --sport 1 --source-port 2 --destination-port 3 --destination 4.4.4.4",
            "-S -E",
            "-L -L",
            "-E -p icmp",
            "-E -e NEW,DESTROY -o timestamp -p tcp",
            "-E --event-mask UPDATES --output timestamp",
            "",
        ] {
            let raw = words(line);
            let client = Conntrack::try_parse_from(std::iter::once("conntrack").chain(raw.clone()))
                .unwrap_or_else(|e| panic!("{line}: {e}"))
                .a
                .args();
            let client: Vec<&str> = client.iter().map(String::as_str).collect();
            assert_eq!(parse_ct_args(&client), parse_ct_args(&raw), "{line}");
        }
        let cfg = Config::parse(
            "[[interface]]\nname = \"eth0\"\naddresses = [\"10.0.0.1/24\"]\n\
             [[interface]]\nname = \"eth1\"\naddresses = [\"10.1.0.1/24\"]\n",
            "t.toml",
        )
        .unwrap();
        for line in [
            "",
            "-p tcp --dport 80 --count 1",
            "--marked -c 5 -i eth1 -m tcp -p tcp --sport 9",
            "--in-interface eth0 --source 10.0.0.2 --destination 10.1.0.2 --protocol 6",
            "-p udp --dport 53 --dport 54 -s 1.1.1.1",
        ] {
            let raw = words(line);
            let client = Trace::try_parse_from(std::iter::once("trace").chain(raw.clone()))
                .unwrap_or_else(|e| panic!("{line}: {e}"))
                .a
                .args();
            let client: Vec<&str> = client.iter().map(String::as_str).collect();
            assert_eq!(
                parse_trace_args(&client, &cfg),
                parse_trace_args(&raw, &cfg),
                "{line}"
            );
        }
    }
}
