//! The side channels of `run`: the control socket and the metrics listener.
//! They are started before any XDP program is attached, so that a refused
//! socket path or a port in use leaves nothing behind, with their caps on
//! clients fitted to the descriptors the process may open (the soft
//! RLIMIT_NOFILE, raised to the hard limit first).

use std::sync::Arc;

use fastables_config::Config;
use fastables_stats::{Exporter, Health, HTTP_LIMITS};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use crate::control::{self, CONTROL_LIMITS};
use crate::CliError;

/// Descriptors kept for everything but the servers' clients (AF_XDP
/// sockets, BPF programs and maps, files).
const RESERVED_FDS: u64 = 256;

/// The running side channels (stopped, and the socket file removed, on drop).
pub(super) struct Servers {
    pub(super) control: control::Server,
    /// The metrics listener and what it serves (with `[stats] listen`).
    pub(super) metrics: Option<(fastables_serve::Server, Arc<Exporter>)>,
}

impl Servers {
    /// What `/metrics` serves, when there is a listener.
    pub(super) fn exporter(&self) -> Option<Arc<Exporter>> {
        self.metrics.as_ref().map(|(_, e)| Arc::clone(e))
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit.
fn raise_nofile() -> u64 {
    let l = getrlimit(Resource::Nofile);
    let hard = l.maximum.unwrap_or(1 << 20);
    match l.current {
        Some(soft) if soft < hard => {
            let raised = Rlimit {
                current: Some(hard),
                maximum: l.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => hard,
                Err(_) => soft,
            }
        }
        Some(soft) => soft,
        None => hard,
    }
}

/// Starts the control socket and (with `[stats] listen`) the metrics listener.
pub(super) fn start(cfg: &Config, health: &Arc<Health>) -> Result<Servers, CliError> {
    let nofile = raise_nofile();
    let (mut ctl, mut http) = (CONTROL_LIMITS, HTTP_LIMITS);
    let want = (ctl.max_clients + http.max_clients) as u64 + RESERVED_FDS;
    if nofile < want {
        let room = nofile.saturating_sub(RESERVED_FDS).max(20) as usize;
        ctl.max_clients = room * 4 / 5;
        http.max_clients = room / 5;
        eprintln!(
            "warning: RLIMIT_NOFILE is {nofile}: the control socket takes {} clients and the \
             metrics listener {} (raise the hard limit to {want} for {} and {})",
            ctl.max_clients, http.max_clients, CONTROL_LIMITS.max_clients, HTTP_LIMITS.max_clients
        );
    }
    let control = control::serve(&cfg.control.socket, ctl)?;
    let metrics = match &cfg.stats.listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(|e| {
                CliError::Start(format!("[stats] listen = \"{addr}\": cannot listen: {e}"))
            })?;
            let exporter = Exporter::new(Arc::clone(health));
            let server = fastables_stats::serve(l, Arc::clone(&exporter), http)
                .map_err(|e| CliError::Start(format!("cannot start the metrics listener: {e}")))?;
            if let Some(s) = control.stats() {
                exporter.add_server(s);
            }
            Some((server, exporter))
        }
        None => None,
    };
    Ok(Servers { control, metrics })
}
