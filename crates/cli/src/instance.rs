//! The commands that talk to a running instance over its control socket
//! (`conntrack`, `trace`, `stats`; `save`, `list` and `restore` are in
//! `rulescmd.rs` with their offline forms): their options, and the client
//! side of each call. The instance parses and checks the options again,
//! as the tools it imitates do, and answers in their words.

use std::path::PathBuf;

use clap::Args;

use crate::{control, on_signals, CliError, STOP_SIGNALS};

/// Where a command finds the running instance.
#[derive(Args, Debug)]
pub struct InstanceArgs {
    /// The running instance's control socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Find the control socket in this configuration (`[control] socket`).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl InstanceArgs {
    fn socket_path(&self) -> Result<PathBuf, CliError> {
        control::socket_path(self.socket.as_deref(), self.config.as_deref())
    }
}

/// The tuple filters `conntrack` and `trace` share, in conntrack-tools'
/// and iptables' spellings.
#[derive(Args, Debug)]
pub struct TupleFilterArgs {
    /// Source address.
    #[arg(
        short = 's',
        long = "src",
        value_name = "ADDR",
        visible_aliases = ["orig-src", "source"]
    )]
    pub src: Option<String>,
    /// Destination address.
    #[arg(
        short = 'd',
        long = "dst",
        value_name = "ADDR",
        visible_aliases = ["orig-dst", "destination"]
    )]
    pub dst: Option<String>,
    /// Protocol: tcp, udp, icmp or a number.
    #[arg(
        short = 'p',
        long = "proto",
        value_name = "PROTO",
        visible_alias = "protocol"
    )]
    pub proto: Option<String>,
    /// Source port.
    #[arg(
        long = "sport",
        value_name = "PORT",
        visible_aliases = ["orig-port-src", "source-port"]
    )]
    pub sport: Option<String>,
    /// Destination port.
    #[arg(
        long = "dport",
        value_name = "PORT",
        visible_aliases = ["orig-port-dst", "destination-port"]
    )]
    pub dport: Option<String>,
}

impl TupleFilterArgs {
    /// The filters as the instance reads them.
    fn push_args(&self, out: &mut Vec<String>) {
        for (opt, v) in [
            ("-s", &self.src),
            ("-d", &self.dst),
            ("-p", &self.proto),
            ("--sport", &self.sport),
            ("--dport", &self.dport),
        ] {
            if let Some(v) = v {
                out.extend([opt.to_string(), v.clone()]);
            }
        }
    }
}

/// `fastables conntrack`: one command (-L, -C, -F, -D, -S or -E) and the
/// filters on the ORIGINAL tuple, as conntrack-tools takes them.
#[derive(Args, Debug)]
#[command(
    args_override_self = true,
    after_help = "One command at a time; the filters apply to the ORIGINAL tuple, as in conntrack-tools."
)]
pub struct ConntrackArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// List the connections the filters match (the summary on stderr).
    #[arg(short = 'L', long = "dump", help_heading = "Commands")]
    pub list: bool,
    /// Count the connections the filters match.
    #[arg(short = 'C', long = "count", help_heading = "Commands")]
    pub count: bool,
    /// Remove every connection.
    #[arg(short = 'F', long = "flush", help_heading = "Commands")]
    pub flush: bool,
    /// Delete the connections the filters match (and list them).
    #[arg(short = 'D', long = "delete", help_heading = "Commands")]
    pub delete: bool,
    /// Statistics: one line per worker (`cpu=K`).
    #[arg(short = 'S', long = "stats", help_heading = "Commands")]
    pub stats: bool,
    /// The events (`[NEW]`, `[UPDATE]`, `[DESTROY]`) of the connections the
    /// filters match, as they happen, until Ctrl-C.
    #[arg(short = 'E', long = "event", help_heading = "Commands")]
    pub events: bool,
    /// With -E: only these events, comma-separated: NEW, UPDATES, DESTROY or ALL.
    #[arg(short = 'e', long = "event-mask", value_name = "MASK")]
    pub event_mask: Option<String>,
    /// Output format: `timestamp` prefixes each -E event with the time
    /// (`[secs.usecs]`, as conntrack-tools).
    #[arg(short = 'o', long = "output", value_name = "FORMAT")]
    pub output: Option<String>,
    #[command(flatten, next_help_heading = "Filters")]
    pub filter: TupleFilterArgs,
}

impl ConntrackArgs {
    /// The arguments as the instance reads them (conntrack-tools').
    pub fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (on, opt) in [
            (self.list, "-L"),
            (self.count, "-C"),
            (self.flush, "-F"),
            (self.delete, "-D"),
            (self.stats, "-S"),
            (self.events, "-E"),
        ] {
            if on {
                out.push(opt.to_string());
            }
        }
        for (opt, v) in [("-e", &self.event_mask), ("-o", &self.output)] {
            if let Some(v) = v {
                out.extend([opt.to_string(), v.clone()]);
            }
        }
        self.filter.push_args(&mut out);
        out
    }
}

/// `fastables trace`: which packets to trace, and how many.
#[derive(Args, Debug)]
#[command(args_override_self = true)]
pub struct TraceArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Only the packets a `-j TRACE` rule marked, from that rule's table on
    /// (as `xtables-monitor --trace`).
    #[arg(long)]
    pub marked: bool,
    /// Stop after this many packets (default: at Ctrl-C).
    #[arg(short = 'c', long = "count", value_name = "N")]
    pub count: Option<String>,
    #[command(flatten, next_help_heading = "Filters")]
    pub filter: TupleFilterArgs,
    /// Input interface (a configured one).
    #[arg(short = 'i', long = "in-interface", value_name = "IFACE")]
    pub in_interface: Option<String>,
    /// Accepted as iptables writes it (`-m tcp`): implied by -p.
    #[arg(short = 'm', value_name = "MATCH")]
    pub matches: Option<String>,
}

impl TraceArgs {
    /// The arguments as the instance reads them (iptables').
    pub fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.marked {
            out.push("--marked".to_string());
        }
        self.filter.push_args(&mut out);
        for (opt, v) in [
            ("-i", &self.in_interface),
            ("--count", &self.count),
            ("-m", &self.matches),
        ] {
            if let Some(v) = v {
                out.extend([opt.to_string(), v.clone()]);
            }
        }
        out
    }
}

/// `fastables stats [--json] [--watch]`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every second, in place, until interrupted.
    #[arg(long)]
    pub watch: bool,
}

/// `fastables reload`: the running instance's rules file again (as
/// SIGHUP), waiting for the result.
#[derive(Args, Debug)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
}

/// `fastables reload`: says what was loaded, or why nothing was (exit 1;
/// the running ruleset is then unchanged).
pub fn reload(a: &ReloadArgs) -> Result<(), CliError> {
    call(&a.instance, vec!["reload".to_string()])
}

/// A streamed request (`conntrack -E`, `trace`) until Ctrl-C or the instance
/// ends it: the lines it sent, or the refusal printed and its exit code.
fn stream(i: &InstanceArgs, args: &[String]) -> Result<Result<usize, u8>, CliError> {
    let sock = i.socket_path()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    on_signals(&STOP_SIGNALS, &stop)?;
    Ok(control::call_stream(&sock, args, &stop)?.map_err(|refused| control::print(&refused)))
}

fn call(i: &InstanceArgs, args: Vec<String>) -> Result<(), CliError> {
    let sock = i.socket_path()?;
    control::exit(control::print(&control::call(&sock, &args, "")?))
}

/// `fastables conntrack`; with `-E`, events as they happen until Ctrl-C,
/// then the summary.
pub fn conntrack(a: &ConntrackArgs) -> Result<(), CliError> {
    let mut args = vec!["conntrack".to_string()];
    args.extend(a.args());
    if !a.events {
        return call(&a.instance, args);
    }
    match stream(&a.instance, &args)? {
        Ok(n) => {
            eprintln!("{}", fastables_conntrack::format_events_summary(n));
            Ok(())
        }
        Err(code) => control::exit(code),
    }
}

/// `fastables trace`: records as packets come, until Ctrl-C or `--count`
/// is reached.
pub fn trace(a: &TraceArgs) -> Result<(), CliError> {
    let mut args = vec!["trace".to_string()];
    args.extend(a.args());
    match stream(&a.instance, &args)? {
        Ok(_) => Ok(()),
        Err(code) => control::exit(code),
    }
}

/// `fastables stats`; with `--watch`, again every second.
pub fn stats(a: &StatsArgs) -> Result<(), CliError> {
    let mut args = vec!["stats".to_string()];
    if a.json {
        args.push("--json".into());
    }
    if !a.watch {
        return call(&a.instance, args);
    }
    let sock = a.instance.socket_path()?;
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
