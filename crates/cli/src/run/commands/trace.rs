//! `fastables trace` on the running instance: its filter, and the
//! workers' records streamed to the listener.

use std::sync::mpsc;

use fastables_config::Config;
use fastables_dataplane::pipeline::TraceFilter;
use fastables_rules::ctx::IfIndex;

use super::{tuple_option, ControlState};
use crate::run::worker::Workers;

/// `fastables trace` arguments: `--count N`, `-p PROTO`, `-s ADDR`,
/// `-d ADDR`, `--sport N`, `--dport N`, `-i IFACE` (as iptables writes them).
pub(super) fn parse_trace_args(
    args: &[&str],
    cfg: &Config,
) -> Result<(TraceFilter, Option<u64>), String> {
    let mut f = TraceFilter::default();
    let mut count = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .copied()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        if let Some(r) = tuple_option(&mut f, a, &mut value) {
            r?;
            continue;
        }
        match *a {
            "--count" | "-c" => {
                let v = value()?;
                count = Some(v.parse::<u64>().map_err(|_| format!("bad count `{v}`"))?);
            }
            "-i" | "--in-interface" => {
                let v = value()?;
                let i = cfg
                    .interfaces
                    .iter()
                    .position(|c| c.name == v)
                    .ok_or_else(|| format!("no interface `{v}` in the configuration"))?;
                f.in_if = Some(i as IfIndex);
            }
            // The packets `-j TRACE` marked (`xtables-monitor --trace`).
            "--marked" => f.marked = true,
            // `-m tcp`/`-m udp` as iptables writes them: implied by -p.
            "-m" => {
                value()?;
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok((f, count))
}

/// `fastables trace`: the finished records of every worker to the
/// listener; the trace stops when the listener goes or its count is
/// reached (the stream then closes).
pub(in crate::run) fn publish_trace(state: &mut ControlState, workers: &Workers) {
    let Some((tx, left)) = state.trace_sub.as_mut() else {
        return;
    };
    let records = workers.map(|c| {
        let mut v = Vec::new();
        c.worker
            .pipeline_mut()
            .drain_trace(|r| v.push(r.to_string()));
        (v, c.worker.pipeline().tracing())
    });
    let mut gone = false;
    let mut tracing = false;
    for (lines, on) in records {
        tracing |= on;
        for l in lines {
            if gone || *left == Some(0) {
                break;
            }
            if matches!(tx.try_send(l), Err(mpsc::TrySendError::Disconnected(_))) {
                gone = true;
            }
            if let Some(n) = left.as_mut() {
                *n -= 1;
            }
        }
    }
    if gone || !tracing || *left == Some(0) {
        workers.map(|c| c.worker.pipeline_mut().set_trace(None));
        state.trace_sub = None;
    }
}
