//! `fastables nat map|owner`: who holds a public address and port, and
//! what a subscriber maps to, answered offline from the rules file (the
//! deterministic blocks of `-j SNAT --deterministic` need nothing else)
//! and, for dynamic blocks and plain NAT, from the NAT event log (syslog
//! lines of `[nat_log]`, in any syslog daemon's file).
//!
//! Output, one line per answer:
//!
//! ```text
//! map:   172.18.0.2 203.0.113.0:5056-7071 deterministic rules.v4:12
//! owner: 203.0.113.0:5060 172.18.0.2 deterministic rules.v4:12
//!        203.0.113.5:40123 172.18.0.2 block 40000-40511 from 1733604800.123456 to 1733604900.000000
//!        203.0.113.5:40123 172.18.0.2:37622 session proto 6 dst 8.8.8.8:80 from ... to -
//! ```
//!
//! `to -`: not released (or deleted) by the end of the log.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use fastables_conntrack::{NatEvent, NatEventKind};
use fastables_natlog::{syslog, time};
use fastables_rules::blocks::Layout;
use fastables_rules::model::{Ruleset, Table, Target};

use crate::rulescmd::{load_config_and_rules, load_rules};
use crate::CliError;

/// `fastables nat`.
#[derive(Args, Debug)]
pub struct NatArgs {
    #[command(subcommand)]
    pub cmd: NatCmd,
}

#[derive(Subcommand, Debug)]
pub enum NatCmd {
    /// The public address and port block of inside addresses (deterministic NAT).
    Map(MapArgs),
    /// The inside address that held public ADDR:PORT: deterministic blocks
    /// from the rules; dynamic blocks and sessions, with their time spans,
    /// from the NAT log (--log).
    Owner(OwnerArgs),
}

/// Where the rules come from.
#[derive(Args, Debug)]
pub struct RulesSource {
    /// The configuration (its rules file).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A rules file (iptables-save format).
    #[arg(short = 'r', long = "rules", value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MapArgs {
    #[command(flatten)]
    pub src: RulesSource,
    /// Inside addresses.
    #[arg(value_name = "ADDR", required = true)]
    pub addrs: Vec<String>,
}

#[derive(Args, Debug)]
pub struct OwnerArgs {
    #[command(flatten)]
    pub src: RulesSource,
    /// The NAT event log: syslog lines of `[nat_log]` (any syslog file).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Only what held it at this time (seconds since the epoch, with up to
    /// nine decimals).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub at: Option<u64>,
    /// Public ADDR:PORT (ICMP: the echo id as the port).
    #[arg(value_name = "ADDR:PORT", required = true)]
    pub targets: Vec<String>,
}

/// The port-block SNAT rules: (where, layout).
fn layouts(a: &RulesSource) -> Result<Vec<(String, Layout)>, CliError> {
    let (rs, file): (Ruleset, String) = match (&a.config, &a.rules) {
        (_, Some(r)) => (load_rules(r)?, r.display().to_string()),
        (Some(c), None) => {
            let (cfg, rs) = load_config_and_rules(c)?;
            let file = cfg
                .rules
                .map_or("rules".into(), |p| p.display().to_string());
            (rs, file)
        }
        (None, None) => {
            return Err(CliError::Usage(
                "give the rules: -c fastables.toml or -r rules.v4".into(),
            ))
        }
    };
    let mut out = Vec::new();
    if let Some(t) = rs.table(Table::Nat) {
        for c in &t.chains {
            for r in &c.rules {
                if let Target::Snat { range, .. } = &r.target {
                    if let Ok(Some(l)) = Layout::of(range) {
                        out.push((format!("{file}:{}", r.line), l));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `SECS[.FRACTION]` as ns, exactly.
fn parse_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}`: expected seconds since the epoch, e.g. 1733604800.123456");
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    if f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: u64 = i.parse().map_err(|_| bad())?;
    let frac: u64 = format!("{f:0<9}").parse().map_err(|_| bad())?;
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(bad)
}

fn addr(s: &str) -> Result<u32, CliError> {
    s.parse::<Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| CliError::Usage(format!("`{s}` is not an IPv4 address")))
}

/// `fastables nat map|owner`.
pub fn run(a: &NatArgs) -> Result<(), CliError> {
    let found = match &a.cmd {
        NatCmd::Map(m) => map(m)?,
        NatCmd::Owner(o) => owner(o)?,
    };
    if found {
        Ok(())
    } else {
        Err(CliError::Exit(1))
    }
}

/// Prints each address's deterministic blocks; whether all had one.
fn map(a: &MapArgs) -> Result<bool, CliError> {
    let ls = layouts(&a.src)?;
    let mut all = true;
    for s in &a.addrs {
        let inside = addr(s)?;
        let mut any = false;
        for (at, l) in &ls {
            if let Some(b) = l.map(inside) {
                println!(
                    "{} {}:{}-{} deterministic {at}",
                    Ipv4Addr::from(inside),
                    Ipv4Addr::from(b.addr),
                    b.lo,
                    b.hi
                );
                any = true;
            }
        }
        if !any {
            eprintln!(
                "{}: no deterministic mapping (dynamic blocks and plain NAT: `fastables nat owner --log`)",
                Ipv4Addr::from(inside)
            );
        }
        all &= any;
    }
    Ok(all)
}

/// A span in the log: who held what, from when to when (`None`: still).
struct Span {
    ev: NatEvent,
    until: Option<u64>,
}

/// The log's block and session spans, in the order they began.
fn spans(path: &PathBuf) -> Result<Vec<Span>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadRules {
        path: path.clone(),
        source,
    })?;
    let mut out: Vec<Span> = Vec::new();
    let key = |e: &NatEvent| match e.kind {
        NatEventKind::BlockAlloc | NatEventKind::BlockRelease => {
            (0u8, e.xsrc, e.block.0, e.src, 0u16, 0u8, 0u32, 0u16)
        }
        _ => (1, e.xsrc, e.xsport, e.src, e.sport, e.proto, e.dst, e.dport),
    };
    for e in text.lines().filter_map(syslog::parse) {
        match e.kind {
            NatEventKind::BlockAlloc | NatEventKind::SessionCreate => {
                out.push(Span { ev: e, until: None })
            }
            NatEventKind::BlockRelease | NatEventKind::SessionDelete => {
                let k = key(&e);
                if let Some(s) = out
                    .iter_mut()
                    .rev()
                    .find(|s| s.until.is_none() && key(&s.ev) == k)
                {
                    s.until = Some(e.time_ns);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Prints who held each target; whether every one had someone.
fn owner(a: &OwnerArgs) -> Result<bool, CliError> {
    let ls = layouts(&a.src)?;
    let spans = a.log.as_ref().map(spans).transpose()?.unwrap_or_default();
    let at = a.at;
    let mut all = true;
    for s in &a.targets {
        let (ip, port) = s
            .rsplit_once(':')
            .ok_or_else(|| CliError::Usage(format!("`{s}`: expected ADDR:PORT")))?;
        let ip = addr(ip)?;
        let port: u16 = port
            .parse()
            .map_err(|_| CliError::Usage(format!("`{s}`: bad port")))?;
        let pub_ = format!("{}:{port}", Ipv4Addr::from(ip));
        let mut any = false;
        for (where_, l) in &ls {
            if let Some(inside) = l.owner(ip, port) {
                println!("{pub_} {} deterministic {where_}", Ipv4Addr::from(inside));
                any = true;
            }
        }
        // [from, until): at the release, the next holder holds it.
        let held =
            |sp: &Span| at.is_none_or(|t| sp.ev.time_ns <= t && sp.until.is_none_or(|u| t < u));
        let until = |sp: &Span| sp.until.map_or("-".to_string(), time::secs_us);
        for sp in spans.iter().filter(|sp| held(sp)) {
            let e = &sp.ev;
            match e.kind {
                NatEventKind::BlockAlloc
                    if e.xsrc == ip && e.block.0 <= port && port <= e.block.1 =>
                {
                    println!(
                        "{pub_} {} block {}-{} from {} to {}",
                        Ipv4Addr::from(e.src),
                        e.block.0,
                        e.block.1,
                        time::secs_us(e.time_ns),
                        until(sp)
                    );
                    any = true;
                }
                NatEventKind::SessionCreate if e.xsrc == ip && e.xsport == port => {
                    println!(
                        "{pub_} {}:{} session proto {} dst {}:{} from {} to {}",
                        Ipv4Addr::from(e.src),
                        e.sport,
                        e.proto,
                        Ipv4Addr::from(e.dst),
                        e.dport,
                        time::secs_us(e.time_ns),
                        until(sp)
                    );
                    any = true;
                }
                _ => {}
            }
        }
        if !any {
            eprintln!("{pub_}: no owner found");
        }
        all &= any;
    }
    Ok(all)
}
