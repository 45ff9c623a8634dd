//! The `iptables -L` listing: the table layout `iptables -L [-v] [-x]
//! [--line-numbers] -n` (1.8.9, nft backend) prints, byte for byte, counters
//! included. Addresses, ports and protocols are always numeric (as with
//! `-n`): nothing is resolved. The table layout and a rule's columns are
//! here; each match and target prints its part in its own file
//! (`matches/`, `targets/`).

use std::fmt::Write;

use crate::model::*;
use crate::parse::empty_table;
use crate::print::{kernel_matches, ordered_chains};
use crate::{matches, targets};

/// How `iptables -L` lays the listing out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListOptions {
    /// `-v`: the packet and byte counters and the interface columns.
    pub verbose: bool,
    /// `-x`: exact counters instead of `12K`, `3M` (only with `-v`).
    pub exact: bool,
    /// `--line-numbers`: a `num` column.
    pub line_numbers: bool,
}

/// `iptables -t TABLE -L [CHAIN]` for `rs` (a table that `rs` lacks is empty
/// with ACCEPT policies, as in the kernel). `Err` names a chain the table
/// does not have, with iptables' message.
pub fn print_list(
    rs: &Ruleset,
    table: Table,
    chain: Option<&str>,
    opts: ListOptions,
) -> Result<String, String> {
    let empty;
    let tr = match rs.table(table) {
        Some(tr) => tr,
        None => {
            empty = empty_table(table);
            &empty
        }
    };
    let chains = ordered_chains(table, tr);
    if let Some(name) = chain {
        if !chains.iter().any(|c| c.name == name) {
            return Err(format!(
                "iptables: No chain/target/match by that name. (`{name}` in table {})",
                table.name()
            ));
        }
    }
    let mut out = String::new();
    let mut first = true;
    for c in chains.iter().filter(|c| chain.is_none_or(|n| c.name == n)) {
        if !first {
            out.push('\n');
        }
        first = false;
        header(&mut out, c, references(tr, &c.name), opts);
        for (i, r) in c.rules.iter().enumerate() {
            rule(&mut out, i + 1, r, opts);
        }
    }
    Ok(out)
}

/// Rules of the table that jump or go to `chain`.
fn references(tr: &TableRules, chain: &str) -> usize {
    tr.chains
        .iter()
        .flat_map(|c| &c.rules)
        .filter(|r| matches!(&r.target, Target::Jump(n) | Target::Goto(n) if n == chain))
        .count()
}

/// `xtables_print_num`: `%8llu ` exact; else up to 99999 as is (`%5llu `),
/// then rounded thousands with K, M, G, T (`%4lluK `).
fn num(out: &mut String, n: u64, exact: bool, table: bool) {
    if exact {
        let _ = if table {
            write!(out, "{n:8} ")
        } else {
            write!(out, "{n} ")
        };
        return;
    }
    if n <= 99_999 {
        let _ = if table {
            write!(out, "{n:5} ")
        } else {
            write!(out, "{n} ")
        };
        return;
    }
    let mut n = n.wrapping_add(500) / 1000;
    for unit in ['K', 'M', 'G'] {
        if n <= 9999 {
            let _ = if table {
                write!(out, "{n:4}{unit} ")
            } else {
                write!(out, "{n}{unit} ")
            };
            return;
        }
        n = n.wrapping_add(500) / 1000;
    }
    let _ = if table {
        write!(out, "{n:4}T ")
    } else {
        write!(out, "{n}T ")
    };
}

fn header(out: &mut String, c: &Chain, refs: usize, o: ListOptions) {
    let _ = write!(out, "Chain {}", c.name);
    match c.policy {
        Some(p) => {
            let p = match p {
                Policy::Accept => "ACCEPT",
                Policy::Drop => "DROP",
            };
            let _ = write!(out, " (policy {p}");
            if o.verbose {
                out.push(' ');
                num(out, c.counters.packets, o.exact, false);
                out.push_str("packets, ");
                num(out, c.counters.bytes, o.exact, false);
                out.push_str("bytes");
            }
            out.push_str(")\n");
        }
        None => {
            let _ = writeln!(out, " ({refs} references)");
        }
    }
    if o.line_numbers {
        out.push_str("num  ");
    }
    if o.verbose {
        if o.exact {
            let _ = write!(out, "{:>8} {:>10} ", "pkts", "bytes");
        } else {
            let _ = write!(out, "{:>5} {:>5} ", "pkts", "bytes");
        }
    }
    out.push_str("target     prot opt ");
    if o.verbose {
        out.push_str("in     out     ");
    }
    let _ = writeln!(out, "{:<19}  {:<19} ", "source", "destination");
}

/// An address column: `0.0.0.0/0`, `10.0.0.1` (a /32), `10.0.0.0/8`,
/// `10.0.0.0/255.0.255.0`.
fn addr(n: Option<&Neg<Ipv4Net>>) -> String {
    let Some(n) = n else {
        return "0.0.0.0/0".to_string();
    };
    let a = n.val;
    match a.prefix_len() {
        Some(32) => a.addr.to_string(),
        Some(len) => format!("{}/{len}", a.addr),
        None => format!("{}/{}", a.addr, a.mask_addr()),
    }
}

fn bang(inv: bool) -> char {
    if inv {
        '!'
    } else {
        ' '
    }
}

fn rule(out: &mut String, n: usize, r: &Rule, o: ListOptions) {
    if o.line_numbers {
        let _ = write!(out, "{n:<4} ");
    }
    if o.verbose {
        num(out, r.counters.packets, o.exact, true);
        num(out, r.counters.bytes, o.exact, true);
    }
    let _ = write!(out, "{:<9} ", targets::list_name(&r.target));
    let proto = r.proto.filter(|p| p.val != 0);
    out.push(bang(proto.is_some_and(|p| p.inv)));
    let _ = write!(out, "{:<4} ", proto.map_or(0, |p| p.val));
    match r.fragment {
        None => out.push_str("-- "),
        Some(inv) => {
            out.push(if inv { '!' } else { '-' });
            out.push_str("f ");
        }
    }
    if o.verbose {
        let iface = |i: &Option<Neg<IfaceName>>| match i {
            None => "*".to_string(),
            Some(i) => format!("{}{}", if i.inv { "!" } else { "" }, i.val.0),
        };
        let _ = write!(
            out,
            " {:<6} {:<6} ",
            iface(&r.in_iface),
            iface(&r.out_iface)
        );
    }
    out.push(bang(r.src.is_some_and(|s| s.inv)));
    let _ = write!(out, "{:<19} ", addr(r.src.as_ref()));
    out.push(bang(r.dst.is_some_and(|s| s.inv)));
    let _ = write!(out, "{:<19} ", addr(r.dst.as_ref()));
    if matches!(r.target, Target::Goto(_)) {
        out.push_str("[goto] ");
    }
    for m in kernel_matches(r) {
        matches::list(out, &m);
    }
    targets::list(out, &r.target);
    out.push('\n');
}

/// A port range as the extensions' `print` writes it (`80`, `1024:65535`).
pub(crate) fn range(p: &PortRange) -> String {
    if p.lo == p.hi {
        p.lo.to_string()
    } else {
        format!("{}:{}", p.lo, p.hi)
    }
}

/// ` !` before a negated test.
pub(crate) fn inv_prefix(out: &mut String, inv: bool) {
    if inv {
        out.push_str(" !");
    }
}
