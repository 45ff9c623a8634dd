//! `fastables run`: the live data plane on AF_XDP.
//!
//! One worker (the first core of `[workers] cores`, pinned), one AF_XDP
//! socket per configured interface over a shared UMEM, the same pipeline as
//! `sim`. SIGTERM or SIGINT stop it cleanly (sockets closed, XDP programs
//! detached, counters printed); SIGHUP reloads the rules file: the new
//! ruleset is parsed, validated and compiled first, and a bad file changes
//! nothing; connections keep their NAT bindings.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use fastables_dataplane::config::{Config, Queues};
use fastables_dataplane::io::Worker;
use fastables_dataplane::offline::{IfaceTotals, Summary};
use fastables_dataplane::pipeline::{Pipeline, PipelineOptions};
use fastables_packet::MacAddr;
use fastables_rules::ctx::IfIndex;
use fastables_xdp::{Options, PortSpec, XdpPort};

use crate::rulescmd::{compile, load_config_and_rules, load_rules};
use crate::CliError;

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

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// A seed from the kernel's random pool, else from the clock.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read as _;
        f.read_exact(&mut b)
    }) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// Fills in what `run` reads from the devices (MACs) and checks the devices.
fn complete_config(cfg: &mut Config) -> Result<(), CliError> {
    for i in &mut cfg.interfaces {
        if !fastables_xdp::device_exists(&i.name) {
            return Err(CliError::Start(format!(
                "{}: interface `{}` does not exist (see `ip link`)",
                cfg.path.display(),
                i.name
            )));
        }
        let dev_mac = fastables_xdp::device_mac(&i.name).map(MacAddr);
        match (i.mac, dev_mac) {
            (None, Some(m)) => i.mac = Some(m),
            (Some(c), Some(d)) if c != d => {
                return Err(CliError::Start(format!(
                    "{}: interface `{}` has MAC {d} but the configuration says {c}: \
                     remove `mac` to use the device's, or set the device's (`ip link set {} address {c}`)",
                    cfg.path.display(),
                    i.name,
                    i.name
                )))
            }
            _ => {}
        }
        if let Some(mtu) = fastables_xdp::device_mtu(&i.name) {
            if mtu != u32::from(i.mtu) {
                eprintln!(
                    "warning: {}: the device's MTU is {mtu}, the configuration's {}: \
                     fastables uses {} for fragmentation and frag-needed",
                    i.name, i.mtu, i.mtu
                );
            }
        }
    }
    Ok(())
}

fn pin(cores: &[u32]) {
    let Some(&core) = cores.first() else {
        return;
    };
    if cores.len() > 1 {
        eprintln!(
            "warning: [workers] cores lists {} cores; this version runs one worker, on core {core}",
            cores.len()
        );
    }
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == core as usize) {
        Some(id) if core_affinity::set_for_current(id) => {}
        _ => eprintln!("warning: cannot pin the worker to core {core}; it runs unpinned"),
    }
}

/// `fastables run -c CONFIG`.
pub fn run(a: &RunArgs) -> Result<(), CliError> {
    if !is_root() {
        return Err(CliError::Start(
            "fastables run needs root (AF_XDP sockets and XDP programs)".to_string(),
        ));
    }
    let (mut cfg, rs) = load_config_and_rules(&a.config)?;
    complete_config(&mut cfg)?;
    let rules_file = cfg.rules.clone();
    let rules_name = rules_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let names = cfg.iface_names();
    let compiled = Arc::new(compile(&rs, &names, &rules_name)?);
    let opts = PipelineOptions {
        conntrack_seed: a.seed.unwrap_or_else(random_seed),
        ..PipelineOptions::default()
    };
    let pipeline = Pipeline::with_options(&cfg, Arc::clone(&compiled), opts).map_err(|e| {
        CliError::Pipeline {
            file: a.config.display().to_string(),
            source: e,
        }
    })?;

    let specs: Vec<PortSpec> = cfg
        .interfaces
        .iter()
        .map(|i| PortSpec {
            name: i.name.clone(),
            mode: i.xdp_mode,
            zero_copy: i.zero_copy,
            one_queue_ok: i.queues == Queues::Count(1),
        })
        .collect();
    if let Err(e) = fastables_xdp::ensure_bpffs() {
        eprintln!("warning: cannot mount bpffs on /sys/fs/bpf ({e}); libxdp loads its program without the dispatcher");
    }
    let mut port = XdpPort::open(&specs, Options { ring: a.ring })?;
    for info in port.info() {
        println!("{info}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| CliError::Start(format!("cannot install the signal handler: {e}")))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .map_err(|e| CliError::Start(format!("cannot install the signal handler: {e}")))?;

    pin(&cfg.workers.cores);
    let mut worker = Worker::new(pipeline, cfg.workers.batch);
    println!("running");
    let _ = std::io::stdout().flush();

    let mut idle = 0u32;
    let mut last_service = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let n = worker.poll(&mut port);
        if n == 0 {
            idle = idle.saturating_add(1);
            // Poll mode while there is traffic; an idle worker sleeps in
            // poll(2) so that an idle appliance does not burn its core.
            if idle > 256 {
                port.wait(5);
            }
        } else {
            idle = 0;
        }
        if last_service.elapsed() >= Duration::from_millis(100) {
            last_service = Instant::now();
            worker.pipeline_mut().drain_logs(|l| eprintln!("log: {l}"));
            if hup.swap(false, Ordering::Relaxed) {
                reload(&mut worker, rules_file.as_ref(), &names);
            }
        }
    }
    worker.pipeline_mut().drain_logs(|l| eprintln!("log: {l}"));
    let summary = summary(&port, &worker, &cfg);
    drop(port);
    eprintln!("stopped");
    eprint!("{summary}");
    Ok(())
}

/// SIGHUP: the rules file again, all or nothing.
fn reload(worker: &mut Worker, file: Option<&PathBuf>, names: &[&str]) {
    let Some(file) = file else {
        eprintln!("reload: the configuration names no rules file; nothing to reload");
        return;
    };
    let res = load_rules(file).and_then(|rs| compile(&rs, names, &file.display().to_string()));
    match res {
        Ok(c) => {
            worker.pipeline_mut().set_ruleset(Arc::new(c));
            eprintln!("reload: {} loaded", file.display());
        }
        Err(e) => eprintln!("reload: {e}\nreload: the running ruleset is unchanged"),
    }
}

fn summary(port: &XdpPort, worker: &Worker, cfg: &Config) -> Summary {
    let interfaces = cfg
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let k = port.counters(i as IfIndex);
            IfaceTotals {
                name: c.name.clone(),
                rx_packets: k.rx,
                rx_bytes: k.rx_bytes,
                tx_packets: k.tx,
                tx_bytes: k.tx_bytes,
                rx_too_long: 0,
            }
        })
        .collect();
    let drops = worker
        .pipeline()
        .drops()
        .snapshot()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    Summary {
        interfaces,
        drops,
        last_ns: 0,
    }
}
