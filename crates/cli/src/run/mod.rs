//! `fastables run`: the live data plane on AF_XDP.
//!
//! One worker thread per core of `[workers] cores`, pinned, each serving RX
//! queue `k` of every interface through its own AF_XDP port (one UMEM shared
//! by its sockets) and owning its conntrack shard; frames a device puts on
//! the wrong worker's queue are handed to their owner ([`steer`]). The main
//! thread is the control and stats thread: it answers the control socket by
//! running jobs on every worker between two of its batches and merging the
//! answers, publishes the metrics, handles signals and talks to systemd.
//! SIGTERM or SIGINT stop it cleanly (sockets closed, XDP programs
//! detached, counters printed); SIGHUP (or `fastables reload`) reloads the
//! rules file: the new ruleset is parsed, validated and compiled first, and
//! a bad file, or one that holds no table, changes nothing; connections
//! keep their NAT bindings.
//!
//! Start-up checks everything it can before it attaches an XDP program:
//! the configuration and rules, the devices, the control socket's path and
//! the metrics port; a failure after that stops what started (the workers
//! detach their programs, the socket file is removed).
//!
//! This file starts the instance, runs the control thread's loop and stops
//! it. The rest: `startup.rs` (checks and device set-up before the
//! workers), `servers.rs` (the control socket and the metrics listener),
//! `systemd.rs` (readiness, status and the watchdog), `worker.rs` (the
//! worker threads and the jobs they run for the control thread),
//! `sample.rs` (a worker's counters), `metrics.rs` (the snapshot behind
//! `/metrics`, and the rates), `commands/` (each request of the control
//! socket, and the streams of `conntrack -E` and `trace`). The servers'
//! protocols are apart: the control socket in `crate::control`, the
//! metrics listener in `fastables_stats::serve`.
//!
//! [`steer`]: fastables_port::steer

mod commands;
mod metrics;
mod sample;
mod servers;
mod startup;
mod systemd;
mod worker;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use fastables_port::rss::{Rss, SYMMETRIC_KEY};
use fastables_port::steer::{Mesh, HANDOFF_SLOTS};
use fastables_stats::Health;

use crate::rulescmd::{compile, load_config_and_rules};
use crate::CliError;
use commands::ControlState;
use metrics::Metrics;
use sample::{summary, Sample};
use startup::{check_queues, complete_config, random_seed, rss_model};
pub(crate) use startup::{is_root, mount_bpffs};
use systemd::Systemd;
use worker::{WorkerShared, Workers};

/// `fastables run` arguments.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// Descriptors per AF_XDP ring (RX, TX, fill, completion); a power of two.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub ring: u32,
    /// Seed of the conntrack hash keys and of NAT's random port choices
    /// (default: random at each start, so that an attacker cannot aim
    /// collisions).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

/// `fastables run -c CONFIG`.
pub fn run(a: &RunArgs) -> Result<(), CliError> {
    if !is_root() {
        return Err(CliError::Start(
            "fastables run needs root (AF_XDP sockets and XDP programs)".to_string(),
        ));
    }
    let mut sd = Systemd::from_env();
    sd.status("starting");
    // Signals first: a SIGTERM during start-up stops it cleanly too.
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    crate::on_signals(&crate::STOP_SIGNALS, &stop)?;
    crate::on_signals(&[signal_hook::consts::SIGHUP], &hup)?;

    let (mut cfg, rs) = load_config_and_rules(&a.config)?;
    complete_config(&mut cfg)?;
    let rules_name = cfg
        .rules
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let names: Vec<String> = cfg.iface_names().iter().map(|s| s.to_string()).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let compiled = Arc::new(compile(&rs, &name_refs, &rules_name)?);
    let n = cfg.workers.cores.len().max(1);
    check_queues(&cfg, n)?;
    let health = Arc::new(Health::new(n));
    // The side channels before any XDP program: a refused socket path or a
    // port in use leaves nothing behind.
    let servers = servers::start(&cfg, &health)?;
    mount_bpffs();
    let seed = a.seed.unwrap_or_else(random_seed);
    let cfg = Arc::new(cfg);
    let rss = Arc::new(if n > 1 {
        rss_model(&cfg, n)
    } else {
        Rss::new(SYMMETRIC_KEY, 1)
    });
    // NAT events carry the workers' CLOCK_MONOTONIC; the exporter writes
    // wall-clock times.
    let offset = fastables_natlog::time::now_ns() as i64 - fastables_xdp::monotonic_ns() as i64;
    let natlog = crate::natlog::start(&cfg, n, offset)?;
    let nat_sinks = natlog
        .iter()
        .flat_map(|l| (0..n).map(|k| l.sink(k)))
        .collect();
    let workers = Workers::start(&WorkerShared {
        n,
        cfg: Arc::clone(&cfg),
        compiled: Arc::clone(&compiled),
        seed,
        ring: a.ring,
        rss,
        mesh: (n > 1).then(|| Mesh::new(n, cfg.interfaces.len(), HANDOFF_SLOTS)),
        stop: Arc::clone(&stop),
        nat_sinks,
        health: Arc::clone(&health),
    })?;

    let mut state = ControlState::new(rs, compiled, names, Arc::clone(&cfg));
    state.natlog = natlog.as_ref().map(|l| l.counters());
    println!("control socket: {}", cfg.control.socket.display());
    if let Some(addr) = &cfg.stats.listen {
        println!("metrics: http://{addr}/metrics (and /healthz, /readyz)");
    }
    println!("running");
    let _ = std::io::stdout().flush();
    health.set_open(true);
    sd.ready(n);

    // Observability: the workers' histograms (recorded without allocating)
    // are taken and merged into the published snapshot once per interval.
    let mut metrics = Metrics::new(servers.exporter(), Instant::now());
    let interval = Duration::from_millis(cfg.stats.interval_ms.max(10));
    let mut last_publish = Instant::now();

    while !stop.load(Ordering::Relaxed) {
        // Control requests; between them, a tick of 2 ms.
        if let Ok(req) = servers
            .control
            .requests
            .recv_timeout(Duration::from_millis(2))
        {
            let reload = req.args.first().is_some_and(|a| a == "reload");
            if reload {
                sd.reloading();
            }
            let r = commands::answer(&req, &mut state, &workers);
            if reload {
                sd.ready(n);
            }
            let _ = req.reply.send(r);
        }
        if hup.swap(false, Ordering::Relaxed) {
            sd.reloading();
            match commands::reload(&workers, &mut state) {
                Ok(m) => eprintln!("reload: {m}"),
                Err(m) => eprintln!("reload: {m}\nreload: the running ruleset is unchanged"),
            }
            sd.ready(n);
        }
        if !state.subs.is_empty() {
            commands::publish_events(&mut state, &workers);
        }
        if state.trace_sub.is_some() {
            commands::publish_trace(&mut state, &workers);
        }
        if last_publish.elapsed() >= interval {
            last_publish = Instant::now();
            metrics.publish(&workers, &mut state);
        }
        sd.tick(Instant::now(), &health);
    }
    health.set_open(false);
    sd.stopping();
    drop(servers);
    let samples = workers.join();
    if let Some(l) = natlog {
        eprintln!("{}", crate::natlog::summary(&l.stop()));
    }
    let summary = summary(&Sample::merge(&samples));
    eprintln!("stopped");
    eprint!("{summary}");
    Ok(())
}
