//! `fastables sim`: the pipeline offline, over pcap files.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use fastables_dataplane::io::Worker;
use fastables_dataplane::offline::{self, OfflineInput, OfflinePort};
use fastables_dataplane::pipeline::Pipeline;
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
    /// Seed for the run's random choices. Nothing in the pipeline is random yet
    /// (NAT port selection will be); the same inputs always give the same output.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Print the final connection table in `conntrack -L` format (not supported yet).
    #[arg(long)]
    pub conntrack: bool,
    /// Write the ruleset with its final counters to FILE, as `iptables-save -c` prints it.
    #[arg(long = "save-counters", value_name = "FILE")]
    pub save_counters: Option<PathBuf>,
}

/// `fastables sim ...`.
pub fn run(a: &SimArgs) -> Result<(), CliError> {
    if a.conntrack {
        return Err(CliError::Unsupported(
            "`fastables sim --conntrack`: conntrack is not implemented yet".to_string(),
        ));
    }
    // Nothing consumes the seed yet; it is part of the interface so that runs
    // stay reproducible once NAT port selection uses it.
    let _ = a.seed;
    let (cfg, rs) = load_config_and_rules(&a.config)?;
    let rules_file = cfg
        .rules
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let names = cfg.iface_names();
    let compiled = Arc::new(compile(&rs, &names, &rules_file)?);
    let pipeline = Pipeline::new(&cfg, Arc::clone(&compiled)).map_err(|e| CliError::Pipeline {
        file: a.config.display().to_string(),
        source: e,
    })?;
    let batch = cfg.workers.batch;
    let mut worker = Worker::new(pipeline, batch);
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
    let summary = offline::run(&mut worker, port, |w| {
        w.pipeline_mut().drain_logs(|l| println!("log: {l}"));
    })?;
    if worker.pipeline().logs_dropped() > 0 {
        println!(
            "log: {} LOG lines suppressed by the log rate limit",
            worker.pipeline().logs_dropped()
        );
    }
    print!("{summary}");

    if let Some(path) = &a.save_counters {
        let with = compiled.counters_into(&rs, &[worker.pipeline().rule_state()]);
        std::fs::write(path, print::print_save(&with, true)).map_err(|source| CliError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
