//! conntrack-tools on the running instance: `-L -C -F -D -S` over every
//! worker's shard, and the `-E` events streamed to their listeners (with
//! `-e NEW,UPDATES,DESTROY` and `-o timestamp`).

use std::sync::mpsc;

use fastables_conntrack::EventKind;
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

/// `-E`'s options: which events (`-e`) and whether lines carry the time
/// they were printed (`-o timestamp`).
#[derive(PartialEq, Clone, Copy, Debug)]
pub(super) struct EventOpts {
    /// Bits of [`EventOpts::NEW`], [`EventOpts::UPDATE`], [`EventOpts::DESTROY`].
    mask: u8,
    timestamp: bool,
}

impl EventOpts {
    const NEW: u8 = 1;
    const UPDATE: u8 = 2;
    const DESTROY: u8 = 4;

    fn wants(&self, k: EventKind) -> bool {
        let bit = match k {
            EventKind::New => Self::NEW,
            EventKind::Update => Self::UPDATE,
            EventKind::Destroy => Self::DESTROY,
        };
        self.mask & bit != 0
    }
}

impl Default for EventOpts {
    fn default() -> Self {
        EventOpts {
            mask: Self::NEW | Self::UPDATE | Self::DESTROY,
            timestamp: false,
        }
    }
}

/// `-e NEW,UPDATES,DESTROY` (or `ALL`; any case, as conntrack-tools reads it).
fn parse_event_mask(v: &str) -> Result<u8, String> {
    let mut m = 0;
    for w in v.split(',') {
        m |= match w.to_ascii_uppercase().as_str() {
            "NEW" => EventOpts::NEW,
            "UPDATES" | "UPDATE" => EventOpts::UPDATE,
            "DESTROY" => EventOpts::DESTROY,
            "ALL" => EventOpts::NEW | EventOpts::UPDATE | EventOpts::DESTROY,
            _ => return Err(format!("Bad parameter `{w}'")),
        };
    }
    Ok(m)
}

/// `-o timestamp` (the other formats of conntrack-tools are not supported).
fn parse_output(v: &str) -> Result<bool, String> {
    let mut ts = false;
    for w in v.split(',') {
        match w {
            "timestamp" => ts = true,
            "extended" | "xml" | "id" | "ktimestamp" | "labels" | "userspace" | "save" => {
                return Err(format!(
                    "output format `{w}' is not supported (only timestamp)"
                ))
            }
            _ => return Err(format!("Bad parameter `{w}'")),
        }
    }
    Ok(ts)
}

pub(super) fn parse_ct_args(
    args: &[&str],
) -> Result<(ConntrackOp, TraceFilter, EventOpts), String> {
    let mut op = None;
    let mut f = TraceFilter::default();
    let mut opts = EventOpts::default();
    let mut mask_given = false;
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
        match *a {
            "-e" | "--event-mask" => {
                opts.mask = parse_event_mask(value()?)?;
                mask_given = true;
                continue;
            }
            "-o" | "--output" => {
                opts.timestamp = parse_output(value()?)?;
                continue;
            }
            _ => {}
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
    if mask_given && op != ConntrackOp::Events {
        return Err("Illegal option `--event-mask' with this command".to_string());
    }
    Ok((op, f, opts))
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
    let (op, filter, _) = match parse_ct_args(args) {
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

/// A `conntrack -E` listener: where its lines go, its filters and options.
pub(in crate::run) struct EventSub {
    tx: control::StreamSender,
    filter: TraceFilter,
    opts: EventOpts,
}

impl EventSub {
    pub(super) fn new(tx: control::StreamSender, filter: TraceFilter, opts: EventOpts) -> Self {
        EventSub { tx, filter, opts }
    }
}

/// `[1733600000.123456]\t` as conntrack-tools prints it (`[%-8ld.%-6ld]\t`:
/// the microseconds left-aligned, padded with spaces).
fn timestamp_prefix(wall_ns: u64) -> String {
    format!(
        "[{:<8}.{:<6}]\t",
        wall_ns / 1_000_000_000,
        (wall_ns % 1_000_000_000) / 1000
    )
}

/// `conntrack -E`: the events the workers collected since last time, to
/// each listener whose filters they pass. A listener that is gone is
/// dropped; when none is left the workers stop collecting.
pub(in crate::run) fn publish_events(state: &mut ControlState, workers: &Workers) {
    let events = workers.map(|c| {
        let mut v = Vec::new();
        c.worker.pipeline_mut().drain_ct_events(|kind, e, at| {
            v.push((
                kind,
                *e,
                at,
                format!("{}\n", fastables_conntrack::format_event(kind, e, at)),
            ));
        });
        v
    });
    // The workers' clock is CLOCK_MONOTONIC; the stamps are wall-clock.
    let offset = fastables_natlog::time::now_ns() as i64 - fastables_xdp::monotonic_ns() as i64;
    let subs = &mut state.subs;
    let mut gone = vec![false; subs.len()];
    for (kind, e, at, line) in events.iter().flatten() {
        for (i, s) in subs.iter().enumerate() {
            if gone[i] || !s.opts.wants(*kind) || !entry_matches(&s.filter, e) {
                continue;
            }
            let line = if s.opts.timestamp {
                let wall = (*at as i64).saturating_add(offset).max(0) as u64;
                format!("{}{line}", timestamp_prefix(wall))
            } else {
                line.clone()
            };
            match s.tx.try_send(line) {
                Ok(()) | Err(mpsc::TrySendError::Full(_)) => {}
                Err(mpsc::TrySendError::Disconnected(_)) => gone[i] = true,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_options_as_conntrack_tools_reads_them() {
        let (op, _, o) = parse_ct_args(&["-E", "-e", "NEW,destroy", "-o", "timestamp"]).unwrap();
        assert_eq!(op, ConntrackOp::Events);
        assert!(o.wants(EventKind::New) && o.wants(EventKind::Destroy));
        assert!(!o.wants(EventKind::Update));
        assert!(o.timestamp);
        let (_, _, o) = parse_ct_args(&["-E", "--event-mask", "UPDATES"]).unwrap();
        assert_eq!(o.mask, EventOpts::UPDATE);
        let (_, _, o) = parse_ct_args(&["-E", "-e", "ALL"]).unwrap();
        assert_eq!(o, EventOpts::default());
        assert!(parse_ct_args(&["-E", "-e", "NEWS"])
            .unwrap_err()
            .contains("Bad parameter"));
        assert!(parse_ct_args(&["-L", "-e", "NEW"])
            .unwrap_err()
            .contains("Illegal option"));
        assert!(parse_ct_args(&["-E", "-o", "xml"])
            .unwrap_err()
            .contains("not supported"));
        // -o timestamp is accepted with -L (conntrack-tools stamps events only).
        assert!(parse_ct_args(&["-L", "-o", "timestamp"]).is_ok());
    }

    #[test]
    fn the_timestamp_is_conntrack_tools_prefix() {
        assert_eq!(
            timestamp_prefix(1_733_600_000_123_456_789),
            "[1733600000.123456]\t"
        );
        // %-6ld: fewer digits are padded on the right with spaces.
        assert_eq!(
            timestamp_prefix(1_733_600_000_001_234_000),
            "[1733600000.1234  ]\t"
        );
    }
}
