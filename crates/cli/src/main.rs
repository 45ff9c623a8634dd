//! The `fastables` command: the offline simulator (`sim`), configuration and
//! rules validation (`check`, `restore --test`), and the canonical
//! `iptables-save` printer (`save -r FILE`).
//!
//! `run` is the live data plane on AF_XDP; `gen` the AF_XDP traffic
//! generator and sink that measure it from the outside.

mod control;
mod error;
mod gen;
mod rulescmd;
mod run;
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use error::CliError;

/// Exit code of a command or option that is not supported yet.
pub const EXIT_UNSUPPORTED: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "fastables",
    version,
    about = "Poll-mode IPv4 forwarder with Linux netfilter semantics",
    long_about = "Poll-mode IPv4 forwarder with Linux netfilter semantics.\n\n\
                  Working today: run (the AF_XDP data plane), gen (its AF_XDP traffic generator and sink), sim, check, save -r, restore --test.\n\
                  The commands that talk to a running instance are not supported yet."
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
    /// Print a rules file in canonical iptables-save form (offline, with -r).
    Save(rulescmd::SaveArgs),
    /// iptables -L [-v] [-n] [-x] [--line-numbers] [CHAIN] of the running instance (or of -r FILE).
    List(rulescmd::ListArgs),
    /// iptables-restore: only --test (parse and validate stdin) is supported yet.
    Restore(rulescmd::RestoreArgs),
    /// The live data plane on AF_XDP (root): SIGTERM stops, SIGHUP reloads the rules.
    Run(run::RunArgs),
    /// conntrack-tools on the running instance: -L, -C, -F, -D, -S with -s -d -p --sport --dport.
    Conntrack(PassThroughArgs),
    /// Counters of the running instance (rx/tx, drops by reason, conntrack fill).
    Stats(StatsArgs),
    /// Per-packet trace of the running instance: hooks, rules, verdicts, conntrack before/after NAT.
    Trace(PassThroughArgs),
    /// AF_XDP traffic generator, or with --sink the receiver that counts loss and latency (root).
    Gen(gen::GenArgs),
    /// The seed topology in network namespaces with real hosts around `fastables run` (root).
    Lab(LabArgs),
}

/// Where a command finds the running instance.
#[derive(Args, Debug)]
struct InstanceArgs {
    /// The running instance's control socket.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Find the control socket in this configuration (`[control] socket`).
    #[arg(long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// A command run by the running instance, its arguments passed through:
/// `fastables conntrack -L|-C|-F|-D|-S|-E [-s A] [-d A] [-p P] [--sport N]
/// [--dport N]`, `fastables trace [-p P] [-s A] [-d A] [--sport N]
/// [--dport N] [-i IF] [--count N]`.
#[derive(Args, Debug)]
struct PassThroughArgs {
    #[command(flatten)]
    instance: InstanceArgs,
    /// The command's own arguments (conntrack-tools or iptables style).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

/// `fastables stats [--json] [--watch]`.
#[derive(Args, Debug)]
struct StatsArgs {
    #[command(flatten)]
    instance: InstanceArgs,
    /// JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Refresh every second, in place, until interrupted.
    #[arg(long)]
    watch: bool,
}

/// `--socket`/`--config` given after a command's pass-through arguments
/// (`conntrack -L --socket PATH`): moved into `i`; the rest is returned.
fn take_instance_args(args: Vec<String>, i: &mut InstanceArgs) -> Vec<String> {
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--socket" => i.socket = it.next().map(PathBuf::from),
            "--config" => i.config = it.next().map(PathBuf::from),
            _ => match (x.strip_prefix("--socket="), x.strip_prefix("--config=")) {
                (Some(v), _) => i.socket = Some(PathBuf::from(v)),
                (_, Some(v)) => i.config = Some(PathBuf::from(v)),
                _ => rest.push(x),
            },
        }
    }
    rest
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

/// A streamed request (`conntrack -E`, `trace`) until Ctrl-C or the instance
/// ends it: the lines it sent, or the refusal printed and its exit code.
fn stream(i: &InstanceArgs, args: &[String]) -> Result<Result<usize, u8>, CliError> {
    let sock = control::socket_path(i.socket.as_deref(), i.config.as_deref())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    on_signals(&STOP_SIGNALS, &stop)?;
    Ok(control::call_stream(&sock, args, &stop)?.map_err(|refused| control::print(&refused)))
}

fn instance_call(i: &InstanceArgs, args: Vec<String>) -> Result<(), CliError> {
    let sock = control::socket_path(i.socket.as_deref(), i.config.as_deref())?;
    control::exit(control::print(&control::call(&sock, &args, "")?))
}

/// `conntrack -E`: events as they happen until Ctrl-C, then the summary.
fn conntrack_events(i: &InstanceArgs, args: &[String]) -> Result<(), CliError> {
    match stream(i, args)? {
        Ok(n) => {
            eprintln!("{}", fastables_conntrack::format_events_summary(n));
            Ok(())
        }
        Err(code) => control::exit(code),
    }
}

/// `trace`: records as packets come, until Ctrl-C or `--count` is reached.
fn trace(i: &InstanceArgs, args: &[String]) -> Result<(), CliError> {
    match stream(i, args)? {
        Ok(_) => Ok(()),
        Err(code) => control::exit(code),
    }
}

fn stats(a: &StatsArgs) -> Result<(), CliError> {
    let mut args = vec!["stats".to_string()];
    if a.json {
        args.push("--json".into());
    }
    if !a.watch {
        return instance_call(&a.instance, args);
    }
    let sock = control::socket_path(a.instance.socket.as_deref(), a.instance.config.as_deref())?;
    loop {
        let r = control::call(&sock, &args, "")?;
        // Home, clear the screen, then the table.
        print!("\x1b[H\x1b[2J");
        if control::print(&r) != 0 {
            return control::exit(r.code);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

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
        Command::Conntrack(mut a) => {
            let rest = take_instance_args(std::mem::take(&mut a.args), &mut a.instance);
            let mut args = vec!["conntrack".to_string()];
            let events = rest.iter().any(|x| x == "-E" || x == "--event");
            args.extend(rest);
            if events {
                conntrack_events(&a.instance, &args)
            } else {
                instance_call(&a.instance, args)
            }
        }
        Command::Stats(a) => stats(&a),
        Command::Trace(mut a) => {
            let mut args = vec!["trace".to_string()];
            args.extend(take_instance_args(
                std::mem::take(&mut a.args),
                &mut a.instance,
            ));
            trace(&a.instance, &args)
        }
        Command::Gen(a) => gen::run(&a),
        Command::Lab(a) => lab(&a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
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
        assert_eq!(a.args, ["-L", "-p", "tcp", "--dport", "80"]);
    }
}
