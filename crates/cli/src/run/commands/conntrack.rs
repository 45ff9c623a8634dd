//! conntrack-tools on the running instance: `-L -C -F -D -S` over every
//! worker's shard, and the `-E` events streamed to their listeners.

use std::sync::mpsc;

use fastables_dataplane::pipeline::Pipeline;
use fastables_dataplane::pipeline::TraceFilter;
use fastables_port::PacketIo;

use super::{tuple_option, ControlState};
use crate::control;
use crate::run::worker::Workers;

/// An entry's ORIGINAL tuple as a sort key (protocol, addresses, ports).
type OrigKey = (u8, u32, u32, u16, u16);

/// A conntrack-tools command.
#[derive(PartialEq, Clone, Copy, Debug)]
pub(super) enum ConntrackOp {
    List,
    Count,
    Flush,
    Delete,
    Stats,
    Events,
}

pub(super) fn parse_ct_args(args: &[&str]) -> Result<(ConntrackOp, TraceFilter), String> {
    let mut op = None;
    let mut f = TraceFilter::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .copied()
                .ok_or_else(|| format!("option `{a}' requires an argument"))
        };
        if let Some(r) = tuple_option(&mut f, a, &mut value) {
            r?;
            continue;
        }
        let o = match *a {
            "-L" | "--dump" => ConntrackOp::List,
            "-C" | "--count" => ConntrackOp::Count,
            "-F" | "--flush" => ConntrackOp::Flush,
            "-D" | "--delete" => ConntrackOp::Delete,
            "-S" | "--stats" => ConntrackOp::Stats,
            "-E" | "--event" => ConntrackOp::Events,
            other => return Err(format!("unknown option `{other}'")),
        };
        if op.is_some_and(|x| x != o) {
            return Err("only one command at a time".to_string());
        }
        op = Some(o);
    }
    let op = op.ok_or("no command specified (use -L, -C, -F, -D, -S or -E)")?;
    Ok((op, f))
}

/// A conntrack-tools usage error, as the tool words it (exit 2).
fn conntrack_usage(m: &str) -> control::Reply {
    control::Reply {
        code: 2,
        out: String::new(),
        err: format!("conntrack v1.4.7 (conntrack-tools): {m}\n"),
    }
}

/// Whether a connection's ORIGINAL tuple passes the filter (conntrack-tools'
/// `-s -d -p --sport --dport`).
fn entry_matches(f: &TraceFilter, e: &fastables_conntrack::Entry) -> bool {
    let o = e.orig();
    let ports = fastables_conntrack::tuple::proto_has_ports(o.proto);
    f.matches(o.proto, o.src, o.dst, o.sport, o.dport, ports, 0)
}

/// One worker's part of a conntrack command: the listed (or deleted)
/// entries with their sort keys, how many matched, its statistics line.
struct ConntrackPart {
    lines: Vec<(OrigKey, String)>,
    matched: usize,
    stats: String,
}

/// `conntrack -L/-C/-F/-D/-S` with the `-s -d -p --sport --dport` filters
/// (on the ORIGINAL tuple, as conntrack-tools has them), over every
/// worker's shard. `-E` is answered in [`answer`](super::answer), which keeps the listener.
pub(super) fn conntrack_cmd(args: &[&str], workers: &Workers) -> control::Reply {
    let (op, filter) = match parse_ct_args(args) {
        Ok(x) => x,
        Err(m) => return conntrack_usage(&m),
    };
    if op == ConntrackOp::Events {
        return conntrack_usage("-E needs a streaming connection");
    }
    let parts = workers.map(move |c| {
        let now_ns = c.port.now_ns();
        conntrack_on_worker(op, &filter, c.worker.pipeline_mut(), now_ns, c.index)
    });
    let matched: usize = parts.iter().map(|p| p.matched).sum();
    let mut lines: Vec<(OrigKey, String)> = parts.iter().flat_map(|p| p.lines.clone()).collect();
    lines.sort_by_key(|x| x.0);
    let mut out = String::new();
    for (_, l) in &lines {
        out.push_str(l);
        out.push('\n');
    }
    match op {
        ConntrackOp::List => control::Reply {
            code: 0,
            out,
            err: format!("{}\n", fastables_conntrack::format_summary(matched)),
        },
        ConntrackOp::Count => {
            control::Reply::ok(format!("{}\n", fastables_conntrack::format_count(matched)))
        }
        ConntrackOp::Flush => control::Reply {
            code: 0,
            out: String::new(),
            err:
                "conntrack v1.4.7 (conntrack-tools): connection tracking table has been emptied.\n"
                    .into(),
        },
        ConntrackOp::Delete => control::Reply {
            code: 0,
            out,
            err: format!(
                "conntrack v1.4.7 (conntrack-tools): {matched} flow entries have been deleted.\n"
            ),
        },
        ConntrackOp::Stats => control::Reply::ok(parts.iter().map(|p| p.stats.as_str()).collect()),
        ConntrackOp::Events => conntrack_usage("-E needs a streaming connection"),
    }
}

/// A conntrack command on one worker's shard (`cpu` = the worker, as
/// `conntrack -S` numbers its lines).
fn conntrack_on_worker(
    op: ConntrackOp,
    filter: &TraceFilter,
    p: &mut Pipeline,
    now_ns: u64,
    cpu: usize,
) -> ConntrackPart {
    let matches = |e: &fastables_conntrack::Entry| entry_matches(filter, e);
    let ids: Vec<(fastables_conntrack::EntryId, OrigKey)> = p
        .conntrack()
        .map(|t| {
            t.iter()
                .filter(|(_, e)| !e.is_expired(now_ns) && matches(e))
                .map(|(id, e)| {
                    let o = e.orig();
                    (id, (o.proto, o.src, o.dst, o.sport, o.dport))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut part = ConntrackPart {
        lines: Vec::new(),
        matched: ids.len(),
        stats: String::new(),
    };
    match op {
        ConntrackOp::List => {
            if let Some(t) = p.conntrack() {
                for (id, key) in &ids {
                    if let Some(e) = t.entry(*id) {
                        part.lines
                            .push((*key, fastables_conntrack::format_entry(e, now_ns)));
                    }
                }
            }
        }
        ConntrackOp::Flush => {
            let mut gone = Vec::new();
            if let Some(t) = p.conntrack_mut() {
                gone = t.iter().map(|(_, e)| *e).collect();
                t.clear();
            }
            for e in &gone {
                p.note_destroyed(e, now_ns);
            }
        }
        ConntrackOp::Delete => {
            let mut gone = Vec::new();
            if let Some(t) = p.conntrack_mut() {
                for (id, key) in &ids {
                    if let Some(e) = t.remove(*id) {
                        part.lines
                            .push((*key, fastables_conntrack::format_entry(&e, now_ns)));
                        gone.push(e);
                    }
                }
            }
            for e in &gone {
                p.note_destroyed(e, now_ns);
            }
        }
        ConntrackOp::Stats => {
            let st = p.conntrack().map(|t| t.stats()).unwrap_or_default();
            part.stats = format!("{}\n", fastables_conntrack::format_stats(cpu, &st));
        }
        ConntrackOp::Count | ConntrackOp::Events => {}
    }
    part
}

/// `conntrack -E`: the events the workers collected since last time, to
/// each listener whose filters they pass. A listener that is gone is
/// dropped; when none is left the workers stop collecting.
pub(in crate::run) fn publish_events(state: &mut ControlState, workers: &Workers) {
    let events = workers.map(|c| {
        let mut v = Vec::new();
        c.worker.pipeline_mut().drain_ct_events(|kind, e, at| {
            v.push((
                *e,
                format!("{}\n", fastables_conntrack::format_event(kind, e, at)),
            ));
        });
        v
    });
    let subs = &mut state.subs;
    let mut gone = vec![false; subs.len()];
    for (e, line) in events.iter().flatten() {
        for (i, (tx, f)) in subs.iter().enumerate() {
            if !gone[i] && entry_matches(f, e) {
                match tx.try_send(line.clone()) {
                    Ok(()) | Err(mpsc::TrySendError::Full(_)) => {}
                    Err(mpsc::TrySendError::Disconnected(_)) => gone[i] = true,
                }
            }
        }
    }
    // A listener goes when its client does: its control thread stops
    // reading the channel at the first failed write, and the next send here
    // finds it disconnected.
    let mut i = 0;
    subs.retain(|_| {
        let keep = !gone[i];
        i += 1;
        keep
    });
    if subs.is_empty() {
        workers.map(|c| c.worker.pipeline_mut().set_ct_events(false));
    }
}
