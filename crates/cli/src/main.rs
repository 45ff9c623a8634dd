//! The `fastables` command. `run` is the live data plane on AF_XDP; `list`,
//! `save`, `restore`, `conntrack`, `stats` and `trace` talk to it over its
//! control socket; `sim`, `check`, `save -r`, `list -r` and `restore
//! --test` work offline on files; `gen` is the AF_XDP traffic generator and
//! sink that measure a forwarder from the outside; `lab` the seed topology
//! in network namespaces.

mod control;
mod error;
mod gen;
mod generate;
mod instance;
mod nat;
mod natlog;
mod rulescmd;
mod run;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

pub use error::CliError;

/// Exit code of a usage error (as clap's).
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "fastables",
    version,
    about = "Poll-mode IPv4 forwarder with Linux netfilter semantics",
    long_about = "Poll-mode IPv4 forwarder with Linux netfilter semantics.\n\n\
                  run is the data plane on AF_XDP. list, save, restore, conntrack, stats and trace \
                  talk to a running instance over its control socket (--socket PATH, or the \
                  [control] socket of --config FILE, else /run/fastables.sock). sim, check, \
                  save -r, list -r and restore --test work offline on files. gen is an AF_XDP \
                  traffic generator and sink; lab builds the seed topology around run."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline offline: packets from pcap files, egress frames to DIR/<iface>.pcap.
    Sim(sim::SimArgs),
    /// Validate the configuration and its rules file; errors name file:line.
    Check(rulescmd::CheckArgs),
    /// iptables-save [-c] [-t TABLE] of the running instance (or of -r FILE, in canonical form).
    Save(rulescmd::SaveArgs),
    /// iptables -L [-v] [-n] [-x] [--line-numbers] [CHAIN] of the running instance (or of -r FILE).
    List(rulescmd::ListArgs),
    /// iptables-restore on the running instance, all or nothing (with --test: only parse and validate).
    Restore(rulescmd::RestoreArgs),
    /// The live data plane on AF_XDP (root): SIGTERM stops, SIGHUP reloads the rules.
    Run(run::RunArgs),
    /// Reload the running instance's rules file (as SIGHUP) and wait for the result: exit 1 when it was refused.
    Reload(instance::ReloadArgs),
    /// conntrack-tools on the running instance: -L, -C, -F, -D, -S, -E with -s -d -p --sport --dport.
    Conntrack(instance::ConntrackArgs),
    /// Counters of the running instance: rx/tx and rates, drops by reason, AF_XDP, conntrack fill, ARP, NAT ports, latency.
    Stats(instance::StatsArgs),
    /// Per-packet trace of the running instance: hooks, rules, verdicts, conntrack before/after NAT.
    Trace(instance::TraceArgs),
    /// Deterministic NAT and port blocks offline: `map` an inside address, find the `owner` of a public address:port.
    Nat(nat::NatArgs),
    /// AF_XDP traffic generator, or with --sink the receiver that counts loss and latency (root).
    Gen(gen::GenArgs),
    /// The seed topology in network namespaces with real hosts around `fastables run` (root).
    Lab(LabArgs),
}

/// Sets `flag` when one of `signals` arrives.
pub(crate) fn on_signals(
    signals: &[i32],
    flag: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), CliError> {
    for &sig in signals {
        signal_hook::flag::register(sig, std::sync::Arc::clone(flag))
            .map_err(|e| CliError::Start(format!("cannot install the signal handler: {e}")))?;
    }
    Ok(())
}

/// SIGINT and SIGTERM, the signals that stop a command.
pub(crate) const STOP_SIGNALS: [i32; 2] =
    [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];

/// `fastables lab up|demo|down`.
#[derive(Args, Debug)]
struct LabArgs {
    /// up: build the lab and start fastables; demo: up, curl/DNS/ping from the
    /// container, show the NAT, then down; down: remove everything.
    #[arg(value_parser = ["up", "demo", "down"])]
    what: String,
    /// Work directory (config, rules, logs).
    #[arg(long, value_name = "DIR", default_value = "/tmp/fastables-lab")]
    dir: PathBuf,
}

/// The lab script (crates/cli/lab/lab.sh), run with bash.
const LAB_SH: &str = include_str!("../lab/lab.sh");

fn lab(a: &LabArgs) -> Result<(), CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Start(format!("cannot find the fastables binary: {e}")))?;
    std::fs::create_dir_all(&a.dir).map_err(|source| CliError::Write {
        path: a.dir.clone(),
        source,
    })?;
    let script = a.dir.join("lab.sh");
    std::fs::write(&script, LAB_SH).map_err(|source| CliError::Write {
        path: script.clone(),
        source,
    })?;
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(&a.what)
        .env("FASTABLES", exe)
        .env("LAB_DIR", &a.dir)
        .status()
        .map_err(|e| CliError::Start(format!("cannot run bash: {e}")))?;
    control::exit(status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)))
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.cmd {
        Command::Sim(a) => sim::run(&a),
        Command::Check(a) => rulescmd::check(&a),
        Command::Save(a) => rulescmd::save(&a),
        Command::List(a) => rulescmd::list(&a),
        Command::Restore(a) => rulescmd::restore(&a),
        Command::Run(a) => run::run(&a),
        Command::Reload(a) => instance::reload(&a),
        Command::Conntrack(a) => instance::conntrack(&a),
        Command::Stats(a) => instance::stats(&a),
        Command::Trace(a) => instance::trace(&a),
        Command::Nat(a) => nat::run(&a),
        Command::Gen(a) => gen::run(&a),
        Command::Lab(a) => lab(&a),
    }
}

/// Parses the command line: `Cli`, or the hidden `generate`.
fn parse_and_run() -> Result<(), CliError> {
    let matches = Cli::command().subcommand(generate::command()).get_matches();
    if let Some((generate::NAME, m)) = matches.subcommand() {
        return generate::run(m);
    }
    run(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

fn main() -> ExitCode {
    match parse_and_run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("fastables: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Parses `IFACE=FILE` (the `--in` option).
fn parse_in(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((i, f)) if !i.is_empty() && !f.is_empty() => Ok((i.to_string(), PathBuf::from(f))),
        _ => Err(format!("`{s}`: expected IFACE=FILE, e.g. eth0=in.pcap")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parse_in_accepts_iface_eq_file() {
        assert_eq!(
            parse_in("eth0=a=b.pcap").unwrap(),
            ("eth0".to_string(), PathBuf::from("a=b.pcap"))
        );
        assert!(parse_in("eth0").is_err());
        assert!(parse_in("=x.pcap").is_err());
        assert!(parse_in("eth0=").is_err());
    }

    #[test]
    fn conntrack_passes_its_arguments_through() {
        let cli = Cli::try_parse_from([
            "fastables",
            "conntrack",
            "--socket",
            "/x.sock",
            "-L",
            "-p",
            "tcp",
            "--dport",
            "80",
        ])
        .unwrap();
        let Command::Conntrack(a) = cli.cmd else {
            panic!("not conntrack")
        };
        assert_eq!(a.instance.socket, Some(PathBuf::from("/x.sock")));
        assert_eq!(a.args(), ["-L", "-p", "tcp", "--dport", "80"]);
    }
}
