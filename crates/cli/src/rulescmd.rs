//! The rules commands: `check`, and `save`, `list`, `restore`, each on a
//! file (`-r FILE`, `--test`) or on the running instance through its
//! control socket.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use fastables_config::Config;
use fastables_rules::compile::CompiledRuleset;
use fastables_rules::model::{IfaceName, Neg, Ruleset, Table};
use fastables_rules::{parse, print};

use crate::{control, CliError};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The configuration file (TOML); its `rules` key names the rules file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Print this rules file (offline) instead of the running instance's ruleset.
    #[arg(short = 'r', long = "rules", value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// The running instance's control socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Find the control socket in this configuration (`[control] socket`).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print packet and byte counters (`[packets:bytes]`).
    #[arg(short = 'c', long = "counters")]
    pub counters: bool,
    /// Print only this table (raw, mangle, nat, filter).
    #[arg(short = 't', long = "table", value_name = "TABLE")]
    pub table: Option<String>,
}

/// `fastables list`: `iptables -L` of the running instance (live counters)
/// or of a rules file.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// List this rules file (offline) instead of the running instance's ruleset.
    #[arg(short = 'r', long = "rules", value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// The running instance's control socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Find the control socket in this configuration (`[control] socket`).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The table (raw, mangle, nat, filter).
    #[arg(
        short = 't',
        long = "table",
        value_name = "TABLE",
        default_value = "filter"
    )]
    pub table: String,
    /// Packet and byte counters, interfaces.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Numeric output: always on (addresses and ports are never resolved); accepted as in iptables.
    #[arg(short = 'n', long = "numeric")]
    pub numeric: bool,
    /// Exact counters instead of K/M/G.
    #[arg(short = 'x', long = "exact")]
    pub exact: bool,
    /// Rule numbers.
    #[arg(long = "line-numbers")]
    pub line_numbers: bool,
    /// Only this chain.
    #[arg(value_name = "CHAIN")]
    pub chain: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Only parse and validate the input; do not commit it.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Do not flush the tables before restoring (as iptables-restore -n).
    #[arg(short = 'n', long = "noflush")]
    pub noflush: bool,
    /// Restore packet and byte counters too.
    #[arg(short = 'c', long = "counters")]
    pub counters: bool,
    /// Read the rules from FILE instead of standard input.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The running instance's control socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Find the control socket in this configuration (`[control] socket`).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Reads and parses a rules file; errors (all of them) name `file:line`.
pub fn load_rules(path: &Path) -> Result<Ruleset, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadRules {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse::parse_restore_all(
        &text,
        &path.display().to_string(),
    )?)
}

/// Loads the configuration and its rules (an empty ruleset when the config has no `rules`).
pub fn load_config_and_rules(config: &Path) -> Result<(Config, Ruleset), CliError> {
    let cfg = Config::load(config)?;
    let rs = match &cfg.rules {
        Some(p) => load_rules(p)?,
        None => Ruleset::default(),
    };
    Ok((cfg, rs))
}

/// Compiles `rs` for an instance with these interfaces; errors name `file`.
pub fn compile(rs: &Ruleset, ifaces: &[&str], file: &str) -> Result<CompiledRuleset, CliError> {
    CompiledRuleset::compile(rs, ifaces).map_err(|source| CliError::Compile {
        file: file.to_string(),
        source,
    })
}

/// `(rules, chains)` in a ruleset.
pub fn count(rs: &Ruleset) -> (usize, usize) {
    let chains = rs.tables.iter().map(|t| t.chains.len()).sum();
    let rules = rs
        .tables
        .iter()
        .flat_map(|t| t.chains.iter())
        .map(|c| c.rules.len())
        .sum();
    (rules, chains)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Warnings for interface names in rules that match no configured interface:
/// such a rule can never match (`-i`) or always matches (`! -i`) in this instance.
fn iface_warnings(rs: &Ruleset, cfg: &Config, rules_file: &str) -> Vec<String> {
    let names = cfg.iface_names();
    let known = |n: &IfaceName| match n.0.strip_suffix('+') {
        Some(prefix) => names.iter().any(|x| x.starts_with(prefix)),
        None => names.iter().any(|x| *x == n.0),
    };
    let mut out = Vec::new();
    for t in &rs.tables {
        for c in &t.chains {
            for r in &c.rules {
                for (opt, n) in [("-i", &r.in_iface), ("-o", &r.out_iface)] {
                    if let Some(Neg { val, .. }) = n {
                        if !known(val) {
                            out.push(format!(
                                "warning: {rules_file}:{}: {opt} {}: no configured interface has this name",
                                r.line, val.0
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// `fastables check -c CONFIG`.
pub fn check(a: &CheckArgs) -> Result<(), CliError> {
    let (cfg, rs) = load_config_and_rules(&a.config)?;
    let rules_file = cfg
        .rules
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no rules file)".to_string());
    compile(&rs, &cfg.iface_names(), &rules_file)?;
    for w in iface_warnings(&rs, &cfg, &rules_file) {
        eprintln!("{w}");
    }
    let (rules, chains) = count(&rs);
    println!(
        "ok: {}: {}, {}, {}; {}: {} in {}",
        a.config.display(),
        plural(cfg.interfaces.len(), "interface", "interfaces"),
        plural(cfg.routes.len(), "route", "routes"),
        plural(cfg.neighbors.len(), "neighbor", "neighbors"),
        rules_file,
        plural(rules, "rule", "rules"),
        plural(chains, "chain", "chains"),
    );
    Ok(())
}

fn parse_table(s: &str) -> Result<Table, CliError> {
    Table::ALL
        .into_iter()
        .find(|t| t.name() == s)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "-t {s}: unknown table; expected one of raw, mangle, nat, filter"
            ))
        })
}

/// `fastables save [-r FILE] [-c] [-t TABLE]`.
pub fn save(a: &SaveArgs) -> Result<(), CliError> {
    let Some(path) = &a.rules else {
        let mut args = vec!["save".to_string()];
        if a.counters {
            args.push("-c".into());
        }
        if let Some(t) = &a.table {
            parse_table(t)?;
            args.extend(["-t".to_string(), t.clone()]);
        }
        let sock = control::socket_path(a.socket.as_deref(), a.config.as_deref())?;
        return control::exit(control::print(&control::call(&sock, &args, "")?));
    };
    let mut rs = load_rules(path)?;
    if let Some(t) = &a.table {
        let t = parse_table(t)?;
        rs.tables.retain(|x| x.table == t);
    }
    print!("{}", print::print_save(&rs, a.counters));
    Ok(())
}

/// The control request of a listing: `list -t TABLE [-v] [-x] [--line-numbers] [CHAIN]`.
fn list_request(a: &ListArgs) -> Vec<String> {
    let mut args = vec!["list".to_string(), "-t".to_string(), a.table.clone()];
    for (on, flag) in [
        (a.verbose, "-v"),
        (a.exact, "-x"),
        (a.line_numbers, "--line-numbers"),
    ] {
        if on {
            args.push(flag.to_string());
        }
    }
    args.extend(a.chain.clone());
    args
}

/// Parses a listing request (the arguments after `list`), as the worker
/// receives it.
pub fn parse_list_request(
    args: &[&str],
) -> Result<(Table, Option<String>, fastables_rules::ListOptions), String> {
    let mut table = Table::Filter;
    let mut chain = None;
    let mut o = fastables_rules::ListOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-t" => {
                let t = it.next().copied().unwrap_or("");
                table = Table::ALL
                    .into_iter()
                    .find(|x| x.name() == t)
                    .ok_or_else(|| {
                        format!("-t: expected one of raw, mangle, nat, filter, got `{t}`")
                    })?;
            }
            "-v" => o.verbose = true,
            "-x" => o.exact = true,
            "-n" => {}
            "--line-numbers" => o.line_numbers = true,
            c if !c.starts_with('-') && chain.is_none() => chain = Some(c.to_string()),
            other => return Err(format!("list: unknown option `{other}`")),
        }
    }
    Ok((table, chain, o))
}

/// `fastables list [-r FILE] [-t TABLE] [-v] [-n] [-x] [--line-numbers] [CHAIN]`.
pub fn list(a: &ListArgs) -> Result<(), CliError> {
    parse_table(&a.table)?;
    let req = list_request(a);
    let Some(path) = &a.rules else {
        let sock = control::socket_path(a.socket.as_deref(), a.config.as_deref())?;
        return control::exit(control::print(&control::call(&sock, &req, "")?));
    };
    let rs = load_rules(path)?;
    let words: Vec<&str> = req[1..].iter().map(String::as_str).collect();
    let (table, chain, o) = parse_list_request(&words).map_err(CliError::Usage)?;
    match fastables_rules::print_list(&rs, table, chain.as_deref(), o) {
        Ok(text) => {
            print!("{text}");
            Ok(())
        }
        Err(e) => {
            eprintln!("fastables: {e}");
            Err(CliError::Exit(1))
        }
    }
}

/// The refusal of a rules input larger than one restore takes (`len`:
/// its size, when known).
fn too_large(name: &str, len: Option<u64>) -> CliError {
    let size = match len {
        Some(n) => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        None => "more than that".to_string(),
    };
    CliError::Restore(
        1,
        format!(
            "{name}: one restore takes at most {} MiB of rules, this is {size}: refused, nothing was applied",
            control::MAX_RULES_INPUT >> 20
        ),
    )
}

/// `fastables restore [--test] [-n] [-c] [FILE]`.
pub fn restore(a: &RestoreArgs) -> Result<(), CliError> {
    let max = control::MAX_RULES_INPUT as u64;
    let (text, name) = match &a.file {
        Some(p) => {
            let name = p.display().to_string();
            let read_err = |source| CliError::ReadRules {
                path: p.clone(),
                source,
            };
            let mut f = std::fs::File::open(p).map_err(read_err)?;
            let mut s = String::new();
            (&mut f)
                .take(max + 1)
                .read_to_string(&mut s)
                .map_err(read_err)?;
            if s.len() as u64 > max {
                return Err(too_large(&name, f.metadata().ok().map(|m| m.len())));
            }
            (s, name)
        }
        None => {
            let mut s = String::new();
            std::io::stdin()
                .take(max + 1)
                .read_to_string(&mut s)
                .map_err(CliError::ReadStdin)?;
            if s.len() as u64 > max {
                return Err(too_large("<stdin>", None));
            }
            (s, "<stdin>".to_string())
        }
    };
    if !a.test {
        let mut args = vec!["restore".to_string(), "--name".to_string(), name];
        if a.counters {
            args.push("-c".into());
        }
        if a.noflush {
            args.push("-n".into());
        }
        let sock = control::socket_path(a.socket.as_deref(), a.config.as_deref())?;
        return control::exit(control::print(&control::call(&sock, &args, &text)?));
    }
    let rs = parse::parse_restore_all(&text, &name)
        .map_err(|e| CliError::Restore(e.restore_exit_code(), e.to_string()))?;
    CompiledRuleset::compile(&rs, &[])
        .map_err(|e| CliError::Restore(e.restore_exit_code(), format!("{name}: {e}")))?;
    Ok(())
}
