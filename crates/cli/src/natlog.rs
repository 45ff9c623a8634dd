//! The NAT event log of `run` and `sim` (`[nat_log]`): the exporter
//! started for the workers, each pipeline's table told to record events,
//! and the line that sums it up.

use fastables_config::Config;
use fastables_dataplane::pipeline::Pipeline;
use fastables_natlog::{NatLog, Snapshot};

use crate::CliError;

/// Events a table keeps between two hand-overs to its worker's queue.
pub const TABLE_EVENTS: usize = fastables_conntrack::natevent::NAT_LOG_QUEUE;

/// The exporter of `cfg`'s `[nat_log]` for `workers` queues; `None`
/// without `[nat_log]`. `clock_offset_ns` turns the workers' time into
/// time since the epoch.
pub fn start(
    cfg: &Config,
    workers: usize,
    clock_offset_ns: i64,
) -> Result<Option<NatLog>, CliError> {
    let Some(c) = &cfg.nat_log else {
        return Ok(None);
    };
    NatLog::start(c, workers, clock_offset_ns)
        .map(Some)
        .map_err(|e| CliError::Start(format!("[nat_log]: cannot start the exporter: {e}")))
}

/// `p`'s connection table records NAT events as `cfg`'s `[nat_log]` says.
pub fn attach(cfg: &Config, p: &mut Pipeline) {
    if let Some(c) = &cfg.nat_log {
        p.set_nat_log(true, c.sessions, TABLE_EVENTS);
    }
}

/// `nat log: ...`, the exporter's counters in a line (`stats`, the end of
/// `run` and `sim`).
pub fn summary(s: &Snapshot) -> String {
    format!(
        "nat log: {} events, {} dropped, {} IPFIX records in {} messages, {} syslog lines, {} send errors",
        s.events, s.dropped, s.ipfix_records, s.ipfix_messages, s.syslog_lines, s.send_errors
    )
}

/// The exporter's counters as metrics (name, help, value).
pub fn metrics(s: &Snapshot) -> [(&'static str, &'static str, u64); 6] {
    [
        (
            "fastables_natlog_events_total",
            "NAT events the workers handed to the exporter.",
            s.events,
        ),
        (
            "fastables_natlog_dropped_total",
            "NAT events lost before the exporter (a worker's queue or table log full).",
            s.dropped,
        ),
        (
            "fastables_natlog_ipfix_records_total",
            "NAT event records sent to the IPFIX collector.",
            s.ipfix_records,
        ),
        (
            "fastables_natlog_ipfix_messages_total",
            "IPFIX messages sent (templates included).",
            s.ipfix_messages,
        ),
        (
            "fastables_natlog_syslog_lines_total",
            "NAT event syslog lines written.",
            s.syslog_lines,
        ),
        (
            "fastables_natlog_send_errors_total",
            "IPFIX messages or syslog lines the system refused (their events lost).",
            s.send_errors,
        ),
    ]
}
