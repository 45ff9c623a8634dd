//! `fastables sim`: the pipeline offline, over pcap files.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use fastables_dataplane::pipeline::{Pipeline, PipelineOptions};
use fastables_dataplane::worker::Worker;
use fastables_offline::{self as offline, OfflineInput, OfflinePort};
use fastables_port::rss::{Rss, SYMMETRIC_KEY};
use fastables_rules::print;

use crate::rulescmd::{compile, load_config_and_rules};
use crate::CliError;

#[derive(Args, Debug)]
pub struct SimArgs {
    /// The configuration file (TOML); every interface needs a `mac`.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// An input: frames received on IFACE, from a pcap file (Ethernet). Repeat for
    /// more interfaces or files.
    #[arg(long = "in", value_name = "IFACE=FILE", required = true, value_parser = crate::parse_in)]
    pub inputs: Vec<(String, PathBuf)>,
    /// Where to write DIR/<iface>.pcap (created if missing; existing files are replaced).
    #[arg(long = "out-dir", value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Seed for the run's random choices (conntrack hash keys, NAT port choice
    /// with --random/--random-fully); the same inputs and seed give the same output.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Print the final connection table in `conntrack -L` format, at the time of
    /// the last frame (entries sorted by protocol and ORIGINAL tuple; the
    /// kernel lists them in hash order). The summary line goes to stderr.
    #[arg(long)]
    pub conntrack: bool,
    /// Write the ruleset with its final counters to FILE, as `iptables-save -c` prints it.
    #[arg(long = "save-counters", value_name = "FILE")]
    pub save_counters: Option<PathBuf>,
}

/// `fastables sim ...`.
pub fn run(a: &SimArgs) -> Result<(), CliError> {
    let (cfg, rs) = load_config_and_rules(&a.config)?;
    let rules_file = cfg
        .rules
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let names = cfg.iface_names();
    let compiled = Arc::new(compile(&rs, &names, &rules_file)?);
    let opts = PipelineOptions {
        conntrack_seed: a.seed,
        ..PipelineOptions::default()
    };
    // One worker per `[workers] cores` entry, each the owner of one emulated
    // RX queue (RSS with the symmetric key, round-robin indirection).
    let nworkers = cfg.workers.cores.len().clamp(1, usize::from(u16::MAX));
    let rss = Arc::new(Rss::new(SYMMETRIC_KEY, nworkers as u16));
    let batch = cfg.workers.batch;
    let mut workers = Vec::with_capacity(nworkers);
    for q in 0..nworkers {
        let mut pipeline =
            Pipeline::with_options(&cfg, Arc::clone(&compiled), opts).map_err(|e| {
                CliError::Pipeline {
                    file: a.config.display().to_string(),
                    source: e,
                }
            })?;
        if nworkers > 1 {
            pipeline.set_rss(Arc::clone(&rss), q as u16);
        }
        workers.push(Worker::new(pipeline, batch));
    }
    let inputs: Vec<OfflineInput> = a
        .inputs
        .iter()
        .map(|(iface, path)| OfflineInput {
            iface: iface.clone(),
            path: path.clone(),
        })
        .collect();
    let port = OfflinePort::open(&names, &inputs, &a.out_dir, batch)?;
    // LOG lines go to stdout as they are produced, as the kernel log would show them.
    let drain = |w: &mut Worker| {
        w.pipeline_mut().drain_logs(|l| println!("log: {l}"));
    };
    let summary = if nworkers == 1 {
        offline::run(&mut workers[0], port, drain)?
    } else {
        offline::run_workers(&mut workers, port, (*rss).clone(), drain)?
    };
    let suppressed: u64 = workers.iter().map(|w| w.pipeline().logs_dropped()).sum();
    if suppressed > 0 {
        println!("log: {suppressed} LOG lines suppressed by the log rate limit");
    }
    print!("{summary}");
    let pipelines: Vec<&Pipeline> = workers.iter().map(|w| w.pipeline()).collect();
    if a.conntrack {
        print_conntrack(&pipelines, summary.last_ns);
    }

    if let Some(path) = &a.save_counters {
        let states: Vec<_> = pipelines.iter().map(|p| p.rule_state()).collect();
        let with = compiled.counters_into(&rs, &states);
        std::fs::write(path, print::print_save(&with, true)).map_err(|source| CliError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `conntrack -L` of the pipeline's table at `now_ns`: lines on stdout, the
/// tool's summary on stderr. Sorted by protocol and ORIGINAL tuple (stable
/// across runs); the kernel's order is its hash order.
fn print_conntrack(workers: &[&Pipeline], now_ns: u64) {
    let mut entries: Vec<_> = workers
        .iter()
        .filter_map(|p| p.conntrack())
        .flat_map(|t| t.iter().map(|(_, e)| e))
        .filter(|e| !e.is_expired(now_ns))
        .collect();
    entries.sort_by_key(|e| {
        let o = e.orig();
        (o.proto, o.src, o.dst, o.sport, o.dport)
    });
    for e in &entries {
        println!("{}", fastables_conntrack::format_entry(e, now_ns));
    }
    eprintln!("{}", fastables_conntrack::format_summary(entries.len()));
}
