//! The `iptables -L` listing: the table layout `iptables -L [-v] [-x]
//! [--line-numbers] -n` (1.8.9, nft backend) prints, byte for byte, counters
//! included. Addresses, ports and protocols are always numeric (as with
//! `-n`): nothing is resolved.

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::model::*;
use crate::names;
use crate::print::{
    addr_types, hidden_only, kernel_matches, nat_ports, ordered_chains, shown, state_list,
};

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
            empty = TableRules {
                table,
                chains: table
                    .builtin_hooks()
                    .iter()
                    .map(|h| Chain {
                        name: h.chain_name().to_string(),
                        policy: Some(Policy::Accept),
                        counters: Counters::default(),
                        rules: Vec::new(),
                    })
                    .collect(),
            };
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
    let _ = write!(out, "{:<9} ", target_name(&r.target));
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
        list_match(out, &m);
    }
    list_target(out, &r.target);
    out.push('\n');
}

/// The `target` column.
fn target_name(t: &Target) -> &str {
    match t {
        Target::None => "",
        Target::Accept => "ACCEPT",
        Target::Drop => "DROP",
        Target::Return => "RETURN",
        Target::Jump(c) | Target::Goto(c) => c,
        Target::Reject(_) => "REJECT",
        Target::Log(_) => "LOG",
        Target::Mark(_) => "MARK",
        Target::Connmark(_) => "CONNMARK",
        Target::Ttl(_) => "TTL",
        Target::Notrack => "CT",
        Target::Trace => "TRACE",
        Target::CtNotrack => "CT",
        Target::Tcpmss(_) => "TCPMSS",
        Target::Snat { .. } => "SNAT",
        Target::Dnat { .. } => "DNAT",
        Target::Masquerade { .. } => "MASQUERADE",
        Target::Redirect { .. } => "REDIRECT",
    }
}

/// libxt_tcp's `print_ports`: nothing for a full range that is not negated.
fn port_test(out: &mut String, name: &str, p: &Option<Neg<PortRange>>) {
    let Some(p) = p else { return };
    let (lo, hi, inv) = (p.val.lo, p.val.hi, if p.inv { "!" } else { "" });
    if lo == 0 && hi == 0xffff && !p.inv {
        return;
    }
    if lo == hi {
        let _ = write!(out, " {name}:{inv}{lo}");
    } else {
        let _ = write!(out, " {name}s:{inv}{lo}:{hi}");
    }
}

fn range(p: &PortRange) -> String {
    if p.lo == p.hi {
        p.lo.to_string()
    } else {
        format!("{}:{}", p.lo, p.hi)
    }
}

fn inv_prefix(out: &mut String, inv: bool) {
    if inv {
        out.push_str(" !");
    }
}

fn ct_addr(out: &mut String, name: &str, n: &Option<Neg<Ipv4Net>>) {
    if let Some(n) = n {
        inv_prefix(out, n.inv);
        let _ = write!(out, " {name} {}", n.val.addr);
        if n.val.mask != u32::MAX {
            match n.val.prefix_len() {
                Some(len) => {
                    let _ = write!(out, "/{len}");
                }
                None => {
                    let _ = write!(out, "/{}", n.val.mask_addr());
                }
            }
        }
    }
}

fn ct_port(out: &mut String, name: &str, p: &Option<Neg<PortRange>>) {
    if let Some(p) = p {
        inv_prefix(out, p.inv);
        let _ = write!(out, " {name} {}", range(&p.val));
    }
}

/// One match as its extension's `print` writes it (numeric).
fn list_match(out: &mut String, m: &Match) {
    match m {
        Match::Tcp(t) => {
            let (sport, dport) = (shown(&t.sport), shown(&t.dport));
            if hidden_only(&[&t.sport, &t.dport], &[&sport, &dport])
                && t.option.is_none()
                && t.flags.is_none()
            {
                return;
            }
            out.push_str(" tcp");
            port_test(out, "spt", &sport);
            port_test(out, "dpt", &dport);
            if let Some(o) = &t.option {
                let _ = write!(out, " option={}{}", if o.inv { "!" } else { "" }, o.val);
            }
            if let Some(f) = &t.flags {
                let _ = write!(
                    out,
                    " flags:{}0x{:02X}/0x{:02X}",
                    if f.inv { "!" } else { "" },
                    f.val.mask,
                    f.val.comp
                );
            }
        }
        Match::Udp(u) => {
            let (sport, dport) = (shown(&u.sport), shown(&u.dport));
            if hidden_only(&[&u.sport, &u.dport], &[&sport, &dport]) {
                return;
            }
            out.push_str(" udp");
            port_test(out, "spt", &sport);
            port_test(out, "dpt", &dport);
        }
        Match::Icmp(i) => {
            out.push_str(" icmp");
            inv_prefix(out, i.inv);
            let v = i.val;
            let _ = write!(out, "type {}", v.ty);
            if v.code_lo == v.code_hi {
                let _ = write!(out, " code {}", v.code_lo);
            } else if v.code_lo != 0 || v.code_hi != 0xff {
                let _ = write!(out, " codes {}-{}", v.code_lo, v.code_hi);
            }
        }
        Match::Multiport(mp) => {
            let name = match mp.dir {
                MultiportDir::Source => "sports",
                MultiportDir::Destination => "dports",
                MultiportDir::Either => "ports",
            };
            let _ = write!(out, " multiport {name} ");
            inv_prefix(out, mp.inv);
            let list: Vec<String> = mp.ports.iter().map(range).collect();
            out.push_str(&list.join(","));
        }
        Match::Conntrack(c) => {
            if let Some(st) = &c.state {
                inv_prefix(out, st.inv);
                let _ = write!(out, " ctstate {}", state_list(st.val.0));
            }
            ct_addr(out, "ctorigsrc", &c.orig_src);
            ct_addr(out, "ctorigdst", &c.orig_dst);
            ct_addr(out, "ctreplsrc", &c.repl_src);
            ct_addr(out, "ctrepldst", &c.repl_dst);
            ct_port(out, "ctorigsrcport", &c.orig_src_port);
            ct_port(out, "ctorigdstport", &c.orig_dst_port);
            if let Some(st) = &c.status {
                inv_prefix(out, st.inv);
                let list: Vec<&str> = names::CT_STATUS
                    .iter()
                    .filter(|(_, b)| st.val.0 & b != 0)
                    .map(|&(n, _)| n)
                    .collect();
                let list = if list.is_empty() {
                    "NONE".to_string()
                } else {
                    list.join(",")
                };
                let _ = write!(out, " ctstatus {list}");
            }
        }
        Match::State(st) => {
            inv_prefix(out, st.inv);
            let _ = write!(out, " state {}", state_list(st.val.0));
        }
        Match::Comment(c) => {
            let _ = write!(out, " /* {c} */");
        }
        Match::Mark(mk) => {
            out.push_str(" mark match");
            inv_prefix(out, mk.inv);
            let _ = write!(out, " 0x{:x}", mk.val.value);
            if mk.val.mask != u32::MAX {
                let _ = write!(out, "/0x{:x}", mk.val.mask);
            }
        }
        Match::Ttl(t) => {
            let _ = match t {
                TtlMatch::Eq(v) => write!(out, " TTL match TTL == {v}"),
                TtlMatch::Ne(v) => write!(out, " TTL match TTL != {v}"),
                TtlMatch::Lt(v) => write!(out, " TTL match TTL < {v}"),
                TtlMatch::Gt(v) => write!(out, " TTL match TTL > {v}"),
            };
        }
        Match::Length(l) => {
            let _ = write!(
                out,
                " length {}{}",
                if l.inv { "!" } else { "" },
                range(&l.val)
            );
        }
        Match::Iprange(r) => {
            let rng = |out: &mut String, name: &str, v: &Option<Neg<(Ipv4Addr, Ipv4Addr)>>| {
                if let Some(v) = v {
                    let _ = write!(out, " {name} IP range");
                    inv_prefix(out, v.inv);
                    let _ = write!(out, " {}-{}", v.val.0, v.val.1);
                }
            };
            rng(out, "source", &r.src);
            rng(out, "destination", &r.dst);
        }
        Match::Limit(l) => {
            let unit = match l.unit {
                LimitUnit::Second => "sec",
                LimitUnit::Minute => "min",
                LimitUnit::Hour => "hour",
                LimitUnit::Day => "day",
            };
            let _ = write!(out, " limit: avg {}/{unit} burst {}", l.rate, l.burst);
        }
        Match::Addrtype(a) => {
            out.push_str(" ADDRTYPE match");
            if let Some(t) = &a.src {
                let _ = write!(
                    out,
                    " src-type {}{}",
                    if t.inv { "!" } else { "" },
                    addr_types(t.val.0)
                );
            }
            if let Some(t) = &a.dst {
                let _ = write!(
                    out,
                    " dst-type {}{}",
                    if t.inv { "!" } else { "" },
                    addr_types(t.val.0)
                );
            }
            if a.limit_iface_in {
                out.push_str(" limit-in");
            }
            if a.limit_iface_out {
                out.push_str(" limit-out");
            }
        }
    }
}

/// `MARK`/`CONNMARK --set-xmark` as libxt_MARK (v2) prints it.
fn xmark(out: &mut String, name: &str, value: u32, mask: u32) {
    let _ = if value == 0 {
        write!(out, " {name} and 0x{:x}", !mask)
    } else if value == mask {
        write!(out, " {name} or 0x{value:x}")
    } else if mask == 0 {
        write!(out, " {name} xor 0x{value:x}")
    } else if mask == u32::MAX {
        write!(out, " {name} set 0x{value:x}")
    } else {
        write!(out, " {name} xset 0x{value:x}/0x{mask:x}")
    };
}

fn nat_flags(out: &mut String, f: &NatFlags) {
    if f.random {
        out.push_str(" random");
    }
    if f.random_fully {
        out.push_str(" random-fully");
    }
    if f.persistent {
        out.push_str(" persistent");
    }
}

fn list_target(out: &mut String, t: &Target) {
    match t {
        Target::None
        | Target::Accept
        | Target::Drop
        | Target::Return
        | Target::Jump(_)
        | Target::Goto(_)
        | Target::Trace => {}
        Target::Reject(r) => {
            let _ = write!(out, " reject-with {}", names::reject_name(*r));
        }
        Target::Log(l) => {
            let flags = u8::from(l.tcp_sequence)
                | u8::from(l.tcp_options) << 1
                | u8::from(l.ip_options) << 2
                | u8::from(l.uid) << 3
                | u8::from(l.macdecode) << 5;
            let _ = write!(out, " LOG flags {flags} level {}", l.level.unwrap_or(4));
            if let Some(p) = l.prefix.as_deref().filter(|p| !p.is_empty()) {
                let _ = write!(out, " prefix \"{p}\"");
            }
        }
        Target::Mark(x) => xmark(out, "MARK", x.value, x.mask),
        Target::Connmark(c) => match *c {
            ConnmarkTarget::Set(x) => xmark(out, "CONNMARK", x.value, x.mask),
            ConnmarkTarget::Save { nfmask, ctmask } => {
                let _ = if nfmask == u32::MAX && ctmask == u32::MAX {
                    write!(out, " CONNMARK save")
                } else if nfmask == ctmask {
                    write!(out, " CONNMARK save mask 0x{nfmask:x}")
                } else {
                    write!(
                        out,
                        " CONNMARK save nfmask 0x{nfmask:x} ctmask ~0x{ctmask:x}"
                    )
                };
            }
            ConnmarkTarget::Restore { nfmask, ctmask } => {
                let _ = if nfmask == u32::MAX && ctmask == u32::MAX {
                    write!(out, " CONNMARK restore")
                } else if nfmask == ctmask {
                    write!(out, " CONNMARK restore mask 0x{nfmask:x}")
                } else {
                    write!(
                        out,
                        " CONNMARK restore ctmask 0x{ctmask:x} nfmask ~0x{nfmask:x}"
                    )
                };
            }
        },
        Target::Ttl(t) => {
            let _ = match t {
                TtlTarget::Set(v) => write!(out, " TTL set to {v}"),
                TtlTarget::Inc(v) => write!(out, " TTL increment by {v}"),
                TtlTarget::Dec(v) => write!(out, " TTL decrement by {v}"),
            };
        }
        Target::Notrack => out.push_str(" NOTRACK"),
        Target::CtNotrack => out.push_str(" CT notrack"),
        Target::Tcpmss(t) => {
            let _ = match t {
                TcpmssTarget::SetMss(v) => write!(out, " TCPMSS set {v}"),
                TcpmssTarget::ClampToPmtu => write!(out, " TCPMSS clamp to PMTU"),
            };
        }
        Target::Snat { range, flags } | Target::Dnat { range, flags } => {
            out.push_str(" to:");
            if let Some((a, b)) = range.addr {
                let _ = write!(out, "{a}");
                if a != b {
                    let _ = write!(out, "-{b}");
                }
            }
            if let Some(p) = &range.ports {
                let _ = write!(out, ":{}", nat_ports(p));
            }
            nat_flags(out, flags);
        }
        Target::Masquerade { ports, flags } => {
            if let Some(p) = ports {
                let _ = write!(out, " masq ports: {}", nat_ports(p));
            }
            nat_flags(out, flags);
        }
        Target::Redirect { ports, flags } => {
            if let Some(p) = ports {
                let _ = write!(out, " redir ports {}", nat_ports(p));
            }
            nat_flags(out, flags);
        }
    }
}
