//! The restore driver: a file's `*table`, `:CHAIN`, `COMMIT` and command
//! lines applied to a copy of the ruleset, table by table, each table checked
//! at `COMMIT` as the kernel checks it on load (`validate`).

use std::collections::HashMap;

use crate::error::{ErrorKind, PResult, Problem, RulesError};
use crate::model::*;
use crate::names::{self, parse_uint};
use crate::{targets, validate};

use super::lex::tokenize;
use super::rule::{Cmd, RuleParser};
use super::values::{bad, check_chain_name, parse_counter, BLANK};
use super::RestoreOptions;

/// The table being restored (between `*table` and `COMMIT`).
struct Cur {
    table: Table,
    rules: TableRules,
    /// Whether the table exists after COMMIT (iptables-nft creates it on
    /// the first command that is not a bare -F, -Z or -X).
    present: bool,
    idx: ChainIdx,
}

/// Chain name -> position, rebuilt after the chain list changes shape, so
/// that big tables (thousands of chains) load in linear time.
#[derive(Default)]
pub(super) struct ChainIdx {
    map: HashMap<String, usize>,
    dirty: bool,
}

impl ChainIdx {
    fn get(&mut self, t: &TableRules, name: &str) -> Option<usize> {
        if self.dirty || self.map.len() != t.chains.len() {
            self.map.clear();
            for (i, c) in t.chains.iter().enumerate() {
                self.map.entry(c.name.clone()).or_insert(i);
            }
            self.dirty = false;
        }
        let i = *self.map.get(name)?;
        (t.chains.get(i)?.name == name).then_some(i)
    }

    fn invalidate(&mut self) {
        self.dirty = true;
    }

    /// `t.chains` just got `name` pushed at its end.
    fn pushed(&mut self, t: &TableRules) {
        if let Some(c) = t.chains.last() {
            if !self.dirty && self.map.len() + 1 == t.chains.len() {
                self.map.insert(c.name.clone(), t.chains.len() - 1);
            }
        }
    }
}

/// A restore in progress: the ruleset so far and the errors found.
pub(super) struct Restore<'a> {
    file: &'a str,
    opts: RestoreOptions,
    pub(super) out: Ruleset,
    cur: Option<Cur>,
    pub(super) errors: Vec<RulesError>,
    stop_first: bool,
}

/// A table as the kernel has it before any rule: its built-in chains, ACCEPT.
pub(crate) fn empty_table(t: Table) -> TableRules {
    TableRules {
        table: t,
        chains: t
            .builtin_hooks()
            .iter()
            .map(|h| Chain {
                name: h.chain_name().to_string(),
                policy: Some(Policy::Accept),
                counters: Counters::default(),
                rules: Vec::new(),
            })
            .collect(),
    }
}

/// Marks a rule's line while its file is being applied: added by this file.
const NEW_RULE: u32 = 1 << 31;

/// `[packets:bytes]`.
fn parse_counters(s: &str) -> Option<Counters> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let (p, b) = inner.split_once(':')?;
    Some(Counters {
        packets: parse_counter(p)?,
        bytes: parse_counter(b)?,
    })
}

fn is_builtin(t: Table, name: &str) -> bool {
    t.builtin_hooks().iter().any(|h| h.chain_name() == name)
}

/// The same rule for `-D`: everything but the counters and the line.
fn rule_eq(a: &Rule, b: &Rule) -> bool {
    a.src == b.src
        && a.dst == b.dst
        && a.in_iface == b.in_iface
        && a.out_iface == b.out_iface
        && a.proto == b.proto
        && a.fragment == b.fragment
        && a.matches == b.matches
        && a.target == b.target
}

/// Whether a rule of `t` jumps or goes to `name`.
fn referenced(t: &TableRules, name: &str) -> bool {
    t.chains.iter().any(|c| {
        c.rules.iter().any(|r| match &r.target {
            Target::Jump(x) | Target::Goto(x) => x == name,
            _ => false,
        })
    })
}

impl<'a> Restore<'a> {
    pub(super) fn new(
        current: &Ruleset,
        file: &'a str,
        opts: RestoreOptions,
        stop_first: bool,
    ) -> Self {
        Restore {
            file,
            opts,
            out: current.clone(),
            cur: None,
            errors: Vec::new(),
            stop_first,
        }
    }

    fn err(&mut self, line: u32, p: Problem) {
        self.errors.push(p.at(self.file, line));
    }

    pub(super) fn run(&mut self, text: &str) {
        let mut nlines = 0u32;
        // `lines()` semantics for the count: a final newline ends the last line.
        let body = text.strip_suffix('\n').unwrap_or(text);
        for (idx, line) in body.split('\n').enumerate() {
            if text.is_empty() {
                break;
            }
            let line_no = u32::try_from(idx + 1).unwrap_or(u32::MAX).min(NEW_RULE - 1);
            nlines = line_no;
            if let Err(p) = self.line(line, line_no) {
                self.err(line_no, p);
                if self.stop_first {
                    return;
                }
            }
        }
        if let Some(cur) = self.cur.take() {
            self.err(
                nlines + 1,
                Problem::new(
                    ErrorKind::MissingCommit,
                    format!("*{}", cur.table.name()),
                    format!(
                        "COMMIT expected: table {} is not committed at the end of the file",
                        cur.table.name()
                    ),
                ),
            );
        }
    }

    fn line(&mut self, line: &str, line_no: u32) -> PResult<()> {
        // As iptables-restore: only an empty line or a `#` in column 1 is skipped;
        // `*table`, `:chain` and `COMMIT` start in column 1.
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let trimmed = line.trim_end_matches(BLANK);
        let lead = line.trim_start_matches(BLANK);
        if lead.is_empty() {
            return Err(Problem::new(
                ErrorKind::Syntax,
                line,
                "line of only blanks: remove the blanks (an empty line is fine)",
            ));
        }
        if lead.starts_with('#') {
            return Err(Problem::new(
                ErrorKind::Syntax,
                "#",
                "a comment must start in column 1: remove the blanks before `#`",
            ));
        }
        if lead != line
            && (lead.starts_with('*')
                || lead.starts_with(':')
                || lead.trim_end_matches(BLANK) == "COMMIT")
        {
            return Err(Problem::new(
                ErrorKind::Syntax,
                line.trim_matches(BLANK),
                "`*table`, `:CHAIN` and `COMMIT` lines must start in column 1",
            ));
        }
        if trimmed == "COMMIT" && trimmed != line {
            return Err(Problem::new(
                ErrorKind::Syntax,
                line,
                "blanks after COMMIT: the line must be exactly `COMMIT`",
            ));
        }
        let trimmed = trimmed.trim_start_matches(BLANK);
        if let Some(rest) = trimmed.strip_prefix('*') {
            if let Some(cur) = &self.cur {
                return Err(Problem::new(
                    ErrorKind::MissingCommit,
                    trimmed,
                    format!(
                        "table {} is not committed: add COMMIT before starting a new table",
                        cur.table.name()
                    ),
                ));
            }
            let name = rest.trim_matches(BLANK);
            let table = Table::ALL
                .iter()
                .copied()
                .find(|t| t.name() == name)
                .ok_or_else(|| {
                    bad(
                        name,
                        format!("table name `{name}` invalid: use raw, mangle, nat or filter"),
                    )
                })?;
            let existing = self.out.table(table).cloned();
            let (rules, present) = match (self.opts.noflush, existing) {
                (true, Some(t)) => (t, true),
                (false, Some(_)) => (empty_table(table), false),
                (_, None) => (empty_table(table), false),
            };
            self.cur = Some(Cur {
                table,
                rules,
                present,
                idx: ChainIdx::default(),
            });
            return Ok(());
        }
        if trimmed == "COMMIT" {
            let cur = self.cur.take().ok_or_else(|| {
                Problem::new(
                    ErrorKind::Syntax,
                    "COMMIT",
                    "COMMIT outside a table: start one with `*filter` (or raw, mangle, nat)",
                )
            })?;
            let mut cur = cur;
            for c in &mut cur.rules.chains {
                for r in &mut c.rules {
                    r.line &= !NEW_RULE;
                }
            }
            let probs = validate::validate_table(&cur.rules);
            if !probs.is_empty() {
                for (l, p) in probs {
                    self.err(l, p);
                }
                return Ok(());
            }
            // A flushed table that nothing recreated is gone (iptables-nft
            // deletes it); otherwise the table replaces the old one.
            let t = cur.table;
            self.out.tables.retain(|x| x.table != t);
            if cur.present {
                self.out.tables.push(cur.rules);
                self.out.tables.sort_by_key(|x| x.table);
            }
            return Ok(());
        }
        let Some(cur) = self.cur.as_mut() else {
            return Err(Problem::new(
                ErrorKind::Syntax,
                trimmed.split_whitespace().next().unwrap_or(trimmed),
                "command before any table: start the table with `*filter` (or raw, mangle, nat)",
            ));
        };
        if let Some(rest) = trimmed.strip_prefix(':') {
            let parts: Vec<&str> = rest.split(BLANK).filter(|p| !p.is_empty()).collect();
            let name = parts.first().copied().unwrap_or("");
            let pol = parts.get(1).copied().unwrap_or("-");
            let counters = match parts.get(2) {
                None => None,
                Some(c) => Some(
                    parse_counters(c).ok_or_else(|| bad(c, "bad counters: use [PACKETS:BYTES]"))?,
                ),
            };
            if parts.len() > 3 {
                return Err(Problem::new(
                    ErrorKind::Syntax,
                    parts[3],
                    "unexpected text after the chain counters",
                ));
            }
            let table = cur.table;
            if is_builtin(table, name) {
                let policy = match pol {
                    "ACCEPT" => Some(Policy::Accept),
                    "DROP" => Some(Policy::Drop),
                    "-" => None,
                    _ => {
                        return Err(bad(
                            pol,
                            format!(
                                "bad policy `{pol}` for built-in chain {name}: use ACCEPT or DROP"
                            ),
                        ))
                    }
                };
                let ci = cur.idx.get(&cur.rules, name);
                if let Some(c) = ci.and_then(|i| cur.rules.chains.get_mut(i)) {
                    if policy.is_some() {
                        c.policy = policy;
                    }
                    if self.opts.counters {
                        if let Some(k) = counters {
                            c.counters = k;
                        }
                    }
                }
            } else {
                check_chain_name(name)?;
                match cur.idx.get(&cur.rules, name) {
                    Some(i) => cur.rules.chains[i].rules.clear(),
                    None => cur.rules.chains.push(Chain {
                        name: name.to_string(),
                        policy: None,
                        counters: Counters::default(),
                        rules: Vec::new(),
                    }),
                }
                cur.idx.pushed(&cur.rules);
            }
            cur.present = true;
            return Ok(());
        }
        // A command, possibly with a [p:b] prefix.
        let mut body = trimmed;
        let mut prefix_counters = None;
        if body.starts_with('[') {
            let end = body
                .find(']')
                .ok_or_else(|| bad(body, "bad counters: use [PACKETS:BYTES] before the command"))?;
            let c = &body[..=end];
            prefix_counters =
                Some(parse_counters(c).ok_or_else(|| bad(c, "bad counters: use [PACKETS:BYTES]"))?);
            body = &body[end + 1..];
        }
        let toks = tokenize(body)?;
        let mut rp = RuleParser::new(true);
        rp.parse(&toks)?;
        if rp.cmd.is_none() {
            return Err(Problem::new(
                ErrorKind::Syntax,
                toks.first().map(|t| t.text.as_str()).unwrap_or(trimmed),
                "no command specified: start the line with -A CHAIN (or -I, -D, -R, -N, -X, -F, -Z, -P, -E)",
            ));
        }
        if self.opts.counters && rp.counters.is_none() {
            rp.counters = prefix_counters;
        }
        let counters_ok = matches!(
            rp.cmd,
            Some((
                Cmd::Append(_) | Cmd::Insert(..) | Cmd::Replace(..) | Cmd::Policy(..),
                _
            ))
        );
        if rp.counters.is_some() && !counters_ok {
            return Err(Problem::new(
                ErrorKind::Syntax,
                "-c",
                "counters (`[P:B]` or -c) only go with -A, -I, -R and -P",
            ));
        }
        self.command(rp, line_no)
    }

    fn command(&mut self, rp: RuleParser, line_no: u32) -> PResult<()> {
        let Some((cmd, cmd_tok)) = rp.cmd.clone() else {
            return Err(Problem::new(
                ErrorKind::Syntax,
                rp.has_rule_opts().unwrap_or("").to_string(),
                "no command specified: start the line with -A CHAIN (or -I, -D, -R, -N, -X, -F, -Z, -P, -E)",
            ));
        };
        let cur = self
            .cur
            .as_mut()
            .ok_or_else(|| Problem::new(ErrorKind::Syntax, &cmd_tok, "command before any table"))?;
        let table = cur.table;
        let is_rule_cmd = matches!(
            cmd,
            Cmd::Append(_) | Cmd::Insert(..) | Cmd::Delete(..) | Cmd::Replace(..)
        );
        let policy_cmd = matches!(cmd, Cmd::Policy(..));
        // What creates the table in iptables-nft: anything but a bare -F, -Z or
        // -X. Before that, its built-in chains do not exist for -Z.
        let creates = !matches!(cmd, Cmd::Flush(None) | Cmd::Zero(_) | Cmd::DelChain(None));
        if let Cmd::Zero(Some(c)) = &cmd {
            if !cur.present && is_builtin(table, c) {
                return Err(Problem::new(
                    ErrorKind::UnknownChain,
                    c.as_str(),
                    format!("chain {c} does not exist yet in this table: -Z it after declaring it"),
                ));
            }
        }
        if !is_rule_cmd {
            let other = rp
                .rule_opts
                .iter()
                .find(|o| !(policy_cmd && (o.as_str() == "-c" || o.starts_with("--set"))));
            if let Some(o) = other {
                return Err(Problem::new(
                    ErrorKind::Syntax,
                    o,
                    format!("illegal option `{o}` with {cmd_tok}"),
                ));
            }
        }
        let t = &mut cur.rules;
        let idx = &mut cur.idx;
        let find = |t: &TableRules, idx: &mut ChainIdx, name: &str| -> PResult<usize> {
            idx.get(t, name).ok_or_else(|| {
                Problem::new(
                    ErrorKind::UnknownChain,
                    name,
                    format!("chain `{name}` does not exist in table {}", table.name()),
                )
            })
        };
        let rulenum = |s: &str| -> PResult<usize> {
            match parse_uint(s) {
                Some(n) if n >= 1 && n <= i32::MAX as u64 => Ok(n as usize),
                _ => Err(bad(s, format!("invalid rule number `{s}`: use 1 or more"))),
            }
        };
        match cmd {
            Cmd::Append(ch) => {
                let ci = find(t, idx, &ch)?;
                let rules = build_rules(rp, t, idx, table, &ch, line_no)?;
                t.chains[ci].rules.extend(rules);
            }
            Cmd::Insert(ch, pos) => {
                let ci = find(t, idx, &ch)?;
                let n = match &pos {
                    Some(p) => rulenum(p)?,
                    None => 1,
                };
                let len = t.chains[ci].rules.len();
                if n > len + 1 {
                    return Err(Problem::new(
                        ErrorKind::NoSuchRule,
                        pos.unwrap_or_default(),
                        format!("index of insertion too big: chain {ch} has {len} rules"),
                    ));
                }
                let rules = build_rules(rp, t, idx, table, &ch, line_no)?;
                let at = n - 1;
                t.chains[ci].rules.splice(at..at, rules);
            }
            Cmd::Replace(ch, pos) => {
                let ci = find(t, idx, &ch)?;
                let p = pos.ok_or_else(|| {
                    Problem::new(
                        ErrorKind::Syntax,
                        &cmd_tok,
                        "-R needs a rule number: -R CHAIN N rule",
                    )
                })?;
                let n = rulenum(&p)?;
                let len = t.chains[ci].rules.len();
                if n > len {
                    return Err(Problem::new(
                        ErrorKind::NoSuchRule,
                        p,
                        format!("no rule {n} in chain {ch} ({len} rules)"),
                    ));
                }
                let mut rules = build_rules(rp, t, idx, table, &ch, line_no)?;
                if rules.len() != 1 {
                    return Err(Problem::new(
                        ErrorKind::Syntax,
                        &cmd_tok,
                        "-R replaces one rule: an address list is not allowed",
                    ));
                }
                t.chains[ci].rules[n - 1] = rules.remove(0);
            }
            Cmd::Delete(ch, pos) => {
                let ci = find(t, idx, &ch)?;
                match pos {
                    Some(p) => {
                        if rp.has_rule_opts().is_some() {
                            return Err(Problem::new(
                                ErrorKind::Syntax,
                                p,
                                "-D takes either a rule number or a rule specification, not both",
                            ));
                        }
                        let n = rulenum(&p)?;
                        let len = t.chains[ci].rules.len();
                        if n > len {
                            return Err(Problem::new(
                                ErrorKind::NoSuchRule,
                                p,
                                format!("no rule {n} in chain {ch} ({len} rules)"),
                            ));
                        }
                        t.chains[ci].rules.remove(n - 1);
                    }
                    None => {
                        let rules = rp.rule_only(&ch)?;
                        for r in rules {
                            let chain = &mut t.chains[ci];
                            match chain.rules.iter().position(|x| rule_eq(x, &r)) {
                                Some(k) => {
                                    chain.rules.remove(k);
                                }
                                None => {
                                    return Err(Problem::new(
                                        ErrorKind::NoSuchRule,
                                        &cmd_tok,
                                        format!("no such rule in chain {ch}: -D needs an existing rule, written as iptables-save shows it"),
                                    ))
                                }
                            }
                        }
                    }
                }
            }
            Cmd::Flush(ch) => match ch {
                Some(ch) => {
                    let ci = find(t, idx, &ch)?;
                    t.chains[ci].rules.clear();
                }
                // iptables-nft: a bare -F flushes the table as it was before
                // this file; rules added earlier in the file stay.
                None => t
                    .chains
                    .iter_mut()
                    .for_each(|c| c.rules.retain(|r| r.line & NEW_RULE != 0)),
            },
            Cmd::Zero(ch) => {
                // iptables-nft re-creates a zeroed built-in chain of a table
                // being replaced with the default policy, ACCEPT.
                let reset_policy = !self.opts.noflush;
                let zero = |c: &mut Chain| {
                    if reset_policy && c.policy.is_some() {
                        c.policy = Some(Policy::Accept);
                    }
                    c.counters = Counters::default();
                    c.rules
                        .iter_mut()
                        .for_each(|r| r.counters = Counters::default());
                };
                match ch {
                    Some(ch) => {
                        let ci = find(t, idx, &ch)?;
                        zero(&mut t.chains[ci]);
                    }
                    None => t.chains.iter_mut().for_each(zero),
                }
            }
            Cmd::NewChain(name) => {
                check_chain_name(&name)?;
                if idx.get(t, &name).is_some() {
                    return Err(Problem::new(
                        ErrorKind::ChainExists,
                        name.as_str(),
                        format!("chain `{name}` already exists"),
                    ));
                }
                t.chains.push(Chain {
                    name,
                    policy: None,
                    counters: Counters::default(),
                    rules: Vec::new(),
                });
                idx.pushed(t);
            }
            Cmd::DelChain(name) => {
                match name {
                    Some(name) => {
                        let ci = find(t, idx, &name)?;
                        if t.chains[ci].policy.is_some() {
                            return Err(Problem::new(
                                ErrorKind::ChainInUse,
                                name.as_str(),
                                format!("cannot delete built-in chain {name}"),
                            ));
                        }
                        if !t.chains[ci].rules.is_empty() {
                            return Err(Problem::new(
                            ErrorKind::ChainInUse,
                            name.as_str(),
                            format!("cannot delete chain {name}: it is not empty (flush it first with -F {name})"),
                        ));
                        }
                        if referenced(t, &name) {
                            return Err(Problem::new(
                                ErrorKind::ChainInUse,
                                name.as_str(),
                                format!("cannot delete chain {name}: rules still jump to it"),
                            ));
                        }
                        t.chains.remove(ci);
                        idx.invalidate();
                    }
                    None => {
                        for c in t.chains.iter().filter(|c| c.policy.is_none()) {
                            if !c.rules.is_empty() || referenced(t, &c.name) {
                                return Err(Problem::new(
                                ErrorKind::ChainInUse,
                                c.name.as_str(),
                                format!("cannot delete chain {}: it is not empty or rules jump to it", c.name),
                            ));
                            }
                        }
                        t.chains.retain(|c| c.policy.is_some());
                        idx.invalidate();
                        // iptables-nft re-creates the built-in chains of a
                        // replaced table with the default policy.
                        if !self.opts.noflush {
                            for c in &mut t.chains {
                                c.policy = Some(Policy::Accept);
                            }
                        }
                    }
                }
            }
            Cmd::Rename(old, new) => {
                let new = new.ok_or_else(|| {
                    Problem::new(
                        ErrorKind::Syntax,
                        &cmd_tok,
                        "-E needs two names: -E OLD NEW",
                    )
                })?;
                let ci = find(t, idx, &old)?;
                if t.chains[ci].policy.is_some() {
                    return Err(Problem::new(
                        ErrorKind::NotAllowed,
                        old.as_str(),
                        format!("cannot rename built-in chain {old}"),
                    ));
                }
                check_chain_name(&new)?;
                if idx.get(t, &new).is_some() {
                    return Err(Problem::new(
                        ErrorKind::ChainExists,
                        new.as_str(),
                        format!("chain `{new}` already exists"),
                    ));
                }
                t.chains[ci].name = new.clone();
                idx.invalidate();
                for c in &mut t.chains {
                    for r in &mut c.rules {
                        match &mut r.target {
                            Target::Jump(x) | Target::Goto(x) if *x == old => *x = new.clone(),
                            _ => {}
                        }
                    }
                }
            }
            Cmd::Policy(ch, pol) => {
                if !is_builtin(table, &ch) {
                    return Err(Problem::new(
                        ErrorKind::UnknownChain,
                        ch.as_str(),
                        format!(
                            "bad built-in chain name `{ch}`: -P applies to {}",
                            table
                                .builtin_hooks()
                                .iter()
                                .map(|h| h.chain_name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                let pol = pol.unwrap_or_default();
                let policy = match pol.as_str() {
                    "ACCEPT" => Policy::Accept,
                    "DROP" => Policy::Drop,
                    _ => {
                        return Err(bad(
                            &pol,
                            format!("bad policy name `{pol}`: use ACCEPT or DROP"),
                        ))
                    }
                };
                if table == Table::Nat && policy == Policy::Drop {
                    return Err(Problem::new(
                        ErrorKind::NotAllowed,
                        "DROP",
                        "the nat table is not intended for filtering: a DROP policy is not allowed there",
                    ));
                }
                let ci = find(t, idx, &ch)?;
                // iptables-nft accepts counters with -P and ignores them.
                t.chains[ci].policy = Some(policy);
            }
        }
        if creates {
            cur.present = true;
        }
        Ok(())
    }
}

/// Builds a rule command's rules and checks what can be checked where the rule
/// is added: jump targets, table-only targets.
fn build_rules(
    rp: RuleParser,
    t: &TableRules,
    idx: &mut ChainIdx,
    table: Table,
    chain: &str,
    line_no: u32,
) -> PResult<Vec<Rule>> {
    let mut rules = rp.rule_only(chain)?;
    for r in &mut rules {
        r.line = line_no | NEW_RULE;
    }
    if let Some(r) = rules.first() {
        check_rule_in_table(t, Some(idx), table, r)?;
    }
    Ok(rules)
}

/// Checks what can be checked of `r` where it is added to table `t`: that
/// its jump target exists and is a user chain, and that its target may be
/// used in this table.
pub(super) fn check_rule_in_table(
    t: &TableRules,
    idx: Option<&mut ChainIdx>,
    table: Table,
    r: &Rule,
) -> PResult<()> {
    match &r.target {
        Target::Jump(c) | Target::Goto(c) => {
            let j = if matches!(r.target, Target::Goto(_)) { "-g" } else { "-j" };
            let pos = match idx {
                Some(idx) => idx.get(t, c),
                None => t.chains.iter().position(|x| x.name == *c),
            };
            match pos.and_then(|i| t.chains.get(i)) {
                None => {
                    return Err(Problem::new(
                        ErrorKind::UnknownTarget,
                        c.as_str(),
                        format!(
                            "{j} {c}: no chain `{c}` in table {} and no such target; create the chain first (`:{c} - [0:0]` or -N {c}) or use a target: {}",
                            table.name(),
                            names::SUPPORTED_TARGETS
                        ),
                    ))
                }
                Some(x) if x.policy.is_some() => {
                    return Err(Problem::new(
                        ErrorKind::NotAllowed,
                        c.as_str(),
                        format!("{j} {c}: cannot jump to a built-in chain"),
                    ))
                }
                Some(_) => {}
            }
        }
        Target::Drop if table == Table::Nat => {
            return Err(Problem::new(
                ErrorKind::NotAllowed,
                "DROP",
                "the nat table is not intended for filtering: DROP is not allowed there (use the filter table)",
            ))
        }
        tg => {
            if let Some((tname, allowed)) = targets::table_of(tg) {
                if allowed != table {
                    return Err(Problem::new(
                        ErrorKind::NotAllowed,
                        tname,
                        format!(
                            "target {tname} is only valid in the {} table, not in {}",
                            allowed.name(),
                            table.name()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::error::{ErrorKind, RulesError};
    use crate::model::*;
    use crate::parse::{apply_restore, check_restore, parse_restore, parse_restore_all};
    use crate::print::print_save;

    fn err(text: &str) -> RulesError {
        parse_restore(text, "f.rules").expect_err("should be rejected")
    }

    #[test]
    fn errors_name_file_line_and_token() {
        let e =
            err("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 99999 -j ACCEPT\nCOMMIT\n");
        assert_eq!(
            (e.line, e.token.as_str(), e.kind),
            (3, "99999", ErrorKind::BadValue)
        );
        let s = e.to_string();
        assert!(s.starts_with("f.rules:3: "), "{s}");
        assert!(s.ends_with("(at '99999')"), "{s}");
        assert!(s.contains("0-65535"), "says what is allowed: {s}");

        let e = err("*filter\n-A INPUT -m nosuch -j ACCEPT\nCOMMIT\n");
        assert_eq!((e.line, e.kind), (2, ErrorKind::UnknownMatch));
        assert!(e.message.contains("tcp, udp, icmp"), "{e}");

        let e = err("*filter\n-A INPUT -j NOWHERE\nCOMMIT\n");
        assert_eq!(
            (e.line, e.token.as_str(), e.kind),
            (2, "NOWHERE", ErrorKind::UnknownTarget)
        );
        assert!(e.message.contains("MASQUERADE"), "lists targets: {e}");

        let e = err("*filter\n-A INPUT --frobnicate 1\nCOMMIT\n");
        assert_eq!(
            (e.line, e.token.as_str(), e.kind),
            (2, "--frobnicate", ErrorKind::UnknownOption)
        );

        let e = err("*filter\n-A INPUT -j ACCEPT\n");
        assert_eq!((e.line, e.kind), (3, ErrorKind::MissingCommit));

        let e = err("-A INPUT -j ACCEPT\n*filter\nCOMMIT\n");
        assert_eq!((e.line, e.kind), (1, ErrorKind::Syntax));
        assert!(e.message.contains("*filter"), "{e}");

        let e = err("*nat\n:POSTROUTING ACCEPT [0:0]\n-A PREROUTING -j MASQUERADE\nCOMMIT\n");
        assert_eq!(
            (e.line, e.token.as_str(), e.kind),
            (3, "MASQUERADE", ErrorKind::NotAllowed)
        );
        assert!(e.message.contains("POSTROUTING"), "{e}");

        let e = err("*filter\n-A OUTPUT -i eth0\nCOMMIT\n");
        assert_eq!(
            (e.line, e.token.as_str(), e.kind),
            (2, "-i", ErrorKind::NotAllowed)
        );
        let e = err("*filter\n-A INPUT -o eth0\nCOMMIT\n");
        assert_eq!((e.line, e.token.as_str()), (2, "-o"));

        let e = err("*filter\n-N A\n-N B\n-A A -j B\n-A B -j A\n-A INPUT -j A\nCOMMIT\n");
        assert_eq!(e.kind, ErrorKind::Loop);
        assert!(e.line == 4 || e.line == 5, "{e}");

        let e = err("*filter\n-N A\n-A INPUT -j A\n-X A\nCOMMIT\n");
        assert_eq!(
            (e.line, e.token.as_str(), e.kind),
            (4, "A", ErrorKind::ChainInUse)
        );

        let e = err("*filter\n-N A\n-N A\nCOMMIT\n");
        assert_eq!((e.line, e.kind), (3, ErrorKind::ChainExists));

        let e = err("*filter\n-A INPUT -m comment --comment \"open\nCOMMIT\n");
        assert_eq!((e.line, e.kind), (2, ErrorKind::Syntax));

        let e = err("*filter\n-A INPUT -j ACCEPT # trailing\nCOMMIT\n");
        assert_eq!((e.line, e.token.as_str()), (2, "#"));

        let e = err("*mangle\n-N X\n-A X -j REJECT\n-A INPUT -j X\nCOMMIT\n");
        assert_eq!((e.line, e.token.as_str()), (3, "REJECT"));
    }

    #[test]
    fn user_chain_inherits_hook_restrictions() {
        let ok = "*nat\n-N X\n-A X -j MASQUERADE\n-A POSTROUTING -j X\nCOMMIT\n";
        assert!(parse_restore(ok, "f").is_ok());
        let e =
            err("*nat\n-N X\n-N Y\n-A X -j Y\n-A Y -j MASQUERADE\n-A PREROUTING -j X\nCOMMIT\n");
        assert_eq!((e.line, e.token.as_str()), (5, "MASQUERADE"));
        assert!(e.message.contains("reached from PREROUTING"), "{e}");
        // Unreachable: accepted, as the kernel does.
        assert!(parse_restore("*nat\n-N X\n-A X -j MASQUERADE\nCOMMIT\n", "f").is_ok());
        // An unreachable loop is accepted too; a reachable one is not.
        assert!(parse_restore("*filter\n-N A\n-A A -j A\nCOMMIT\n", "f").is_ok());
    }

    #[test]
    fn check_restore_lists_every_error() {
        let errs = check_restore(
            "*filter\n-A INPUT -p tcp --dport x\n-A INPUT -j ACCEPT\n-A INPUT -s 1.2.3.400\nCOMMIT\n",
            "f",
        );
        let lines: Vec<u32> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 4]);
        assert!(check_restore("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", "f").is_empty());
        let all = parse_restore_all("*filter\n-A INPUT -j X\n-A FORWARD -j Y\nCOMMIT\n", "f")
            .unwrap_err();
        assert_eq!(all.0.len(), 2);
        assert_eq!(all.to_string().lines().count(), 2);
    }

    const BASE: &str = "*filter\n-N FOO\n-A FOO -j ACCEPT\n-A INPUT -j FOO\n-A INPUT -s 1.1.1.1\nCOMMIT\n*nat\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n";

    fn rules_of(rs: &Ruleset) -> String {
        print_save(rs, false)
            .lines()
            .filter(|l| l.starts_with("-A") || l.starts_with(':') || l.starts_with('*'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn apply_restore_replaces_only_the_tables_in_the_file() {
        let cur = parse_restore(BASE, "base").unwrap();
        let new =
            apply_restore(&cur, "*filter\n-A INPUT -s 3.3.3.3\nCOMMIT\n", "f", false).unwrap();
        let s = rules_of(&new);
        assert!(s.contains("-A INPUT -s 3.3.3.3/32"), "{s}");
        assert!(!s.contains("FOO"), "filter replaced: {s}");
        assert!(
            s.contains("-A POSTROUTING -j MASQUERADE"),
            "nat untouched: {s}"
        );
        // Policies reset to ACCEPT when the file does not set them.
        let cur = parse_restore("*filter\n:INPUT DROP [0:0]\nCOMMIT\n", "b").unwrap();
        let new =
            apply_restore(&cur, "*filter\n-A INPUT -s 3.3.3.3\nCOMMIT\n", "f", false).unwrap();
        assert!(rules_of(&new).contains(":INPUT ACCEPT"));
    }

    #[test]
    fn apply_restore_noflush() {
        let cur = parse_restore(BASE, "base").unwrap();
        let new = apply_restore(&cur, "*filter\n-A INPUT -s 2.2.2.2\nCOMMIT\n", "f", true).unwrap();
        let s = rules_of(&new);
        assert!(
            s.contains("-A INPUT -j FOO\n-A INPUT -s 1.1.1.1/32\n-A INPUT -s 2.2.2.2/32"),
            "{s}"
        );
        // Redeclaring a user chain flushes it.
        let new = apply_restore(
            &cur,
            "*filter\n:FOO - [0:0]\n-A FOO -j DROP\nCOMMIT\n",
            "f",
            true,
        )
        .unwrap();
        let s = rules_of(&new);
        assert!(
            s.contains("-A FOO -j DROP") && !s.contains("-A FOO -j ACCEPT"),
            "{s}"
        );
        // -N of an existing chain fails, and nothing applies.
        let e = apply_restore(
            &cur,
            "*nat\n-A POSTROUTING -j ACCEPT\nCOMMIT\n*filter\n-N FOO\nCOMMIT\n",
            "f",
            true,
        )
        .unwrap_err();
        assert_eq!((e.line, e.kind), (5, ErrorKind::ChainExists));
        // -D by specification and by number.
        let new = apply_restore(
            &cur,
            "*filter\n-D INPUT -s 1.1.1.1/32\n-D INPUT 1\nCOMMIT\n",
            "f",
            true,
        )
        .unwrap();
        assert!(!rules_of(&new).contains("-A INPUT"), "{}", rules_of(&new));
        // Deleting a chain still referenced fails; after -F INPUT it works.
        assert!(apply_restore(&cur, "*filter\n-F FOO\n-X FOO\nCOMMIT\n", "f", true).is_err());
        let new = apply_restore(
            &cur,
            "*filter\n-F INPUT\n-F FOO\n-X FOO\nCOMMIT\n",
            "f",
            true,
        )
        .unwrap();
        assert!(!rules_of(&new).contains("FOO"));
    }

    #[test]
    fn a_flushed_table_that_nothing_recreates_is_gone() {
        let rs = parse_restore(
            "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n*filter\nCOMMIT\n*raw\n-F\nCOMMIT\n",
            "f",
        )
        .unwrap();
        assert!(rs.tables.is_empty(), "{rs:?}");
        let cur = parse_restore(BASE, "base").unwrap();
        let new = apply_restore(&cur, "*nat\nCOMMIT\n", "f", false).unwrap();
        assert!(new.table(Table::Nat).is_none() && new.table(Table::Filter).is_some());
        let new = apply_restore(&cur, "*nat\nCOMMIT\n", "f", true).unwrap();
        assert!(new.table(Table::Nat).is_some(), "noflush keeps it");
    }

    #[test]
    fn bare_flush_keeps_rules_added_by_the_file() {
        // iptables-nft: `-F` without a chain flushes what was there before the file.
        let rs = parse_restore("*filter\n-A INPUT -j ACCEPT\n-F\nCOMMIT\n", "f").unwrap();
        assert!(print_save(&rs, false).contains("-A INPUT -j ACCEPT"));
        let cur = parse_restore(BASE, "base").unwrap();
        let new = apply_restore(
            &cur,
            "*filter\n-F\n-A INPUT -s 9.9.9.9\nCOMMIT\n",
            "f",
            true,
        )
        .unwrap();
        let s = rules_of(&new);
        assert!(
            !s.contains("-A INPUT -j FOO") && s.contains("-A INPUT -s 9.9.9.9/32"),
            "{s}"
        );
        // Lines are plain again once applied.
        let lines: Vec<u32> = new
            .tables
            .iter()
            .flat_map(|t| &t.chains)
            .flat_map(|c| &c.rules)
            .map(|r| r.line)
            .collect();
        assert!(lines.iter().all(|&l| l < 100), "{lines:?}");
    }

    #[test]
    fn policies() {
        let e = err("*nat\n-P POSTROUTING DROP\nCOMMIT\n");
        assert_eq!((e.line, e.kind), (2, ErrorKind::NotAllowed));
        let e = err("*filter\n-P FORWARD RETURN\nCOMMIT\n");
        assert_eq!((e.line, e.token.as_str()), (2, "RETURN"));
        let e = err("*filter\n-N X\n-P X DROP\nCOMMIT\n");
        assert_eq!((e.line, e.kind), (3, ErrorKind::UnknownChain));
        // `-` keeps the policy; a user chain's policy word is ignored.
        // iptables-nft: -Z in a replaced table resets built-in policies to ACCEPT.
        let rs = parse_restore("*filter\n:INPUT DROP [3:4]\n-Z INPUT\nCOMMIT\n", "f").unwrap();
        assert!(print_save(&rs, false).contains(":INPUT ACCEPT [0:0]\n"));
        let rs = parse_restore("*filter\n:INPUT DROP\n-N X\n-X\nCOMMIT\n", "f").unwrap();
        assert!(
            print_save(&rs, false).contains(":INPUT ACCEPT [0:0]\n"),
            "bare -X too"
        );
        assert!(parse_restore("*filter\n-X\nCOMMIT\n", "f")
            .unwrap()
            .tables
            .is_empty());
        assert_eq!(
            err("*filter\n-Z INPUT\nCOMMIT\n").kind,
            ErrorKind::UnknownChain
        );
        assert_eq!(
            parse_restore("*filter\n-F INPUT\nCOMMIT\n", "f")
                .unwrap()
                .tables
                .len(),
            1
        );
        let cur = parse_restore("*filter\n:INPUT DROP [3:4]\nCOMMIT\n", "f").unwrap();
        let new = apply_restore(&cur, "*filter\n-Z\nCOMMIT\n", "f", true).unwrap();
        assert!(print_save(&new, false).contains(":INPUT DROP [0:0]\n"));
        let rs = parse_restore(
            "*filter\n:INPUT DROP\n:INPUT - [0:0]\n:x DROP [0:0]\nCOMMIT\n",
            "f",
        )
        .unwrap();
        let s = print_save(&rs, false);
        assert!(
            s.contains(":INPUT DROP [0:0]\n") && s.contains(":x - [0:0]\n"),
            "{s}"
        );
    }

    #[test]
    fn apply_restore_is_atomic() {
        let cur = parse_restore(BASE, "base").unwrap();
        let r = apply_restore(
            &cur,
            "*filter\n-A INPUT -s 3.3.3.3\nCOMMIT\n*nat\n-A FOO\nCOMMIT\n",
            "f",
            false,
        );
        let e = r.unwrap_err();
        assert_eq!(
            (e.line, e.token.as_str(), e.kind),
            (5, "FOO", ErrorKind::UnknownChain)
        );
    }

    #[test]
    fn counters_only_with_the_counters_option() {
        let text =
            "*filter\n:INPUT DROP [5:6]\n[1:2] -A INPUT -j ACCEPT\n-A INPUT -c 7 8\nCOMMIT\n";
        let with = parse_restore(text, "f").unwrap();
        let s = print_save(&with, true);
        assert!(s.contains(":INPUT DROP [5:6]\n"), "{s}");
        assert!(
            s.contains("[1:2] -A INPUT -j ACCEPT\n[7:8] -A INPUT\n"),
            "{s}"
        );
        let without = apply_restore(&Ruleset::default(), text, "f", false).unwrap();
        let s = print_save(&without, true);
        assert!(s.contains(":INPUT DROP [0:0]\n"), "{s}");
        // `-c` in the rule applies even without -c, as iptables-restore does.
        assert!(
            s.contains("[0:0] -A INPUT -j ACCEPT\n[7:8] -A INPUT\n"),
            "{s}"
        );
        assert!(!print_save(&without, false)
            .lines()
            .any(|l| l.starts_with('[')));
    }
}
