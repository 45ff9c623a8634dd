//! The ruleset on a running instance: `list`, `save`, `restore`, and the
//! rules file again on SIGHUP.

use std::sync::Arc;

use fastables_rules::compile::CompiledRuleset;
use fastables_rules::model::{Ruleset, Table};
use fastables_rules::print;

use super::ControlState;
use crate::control;
use crate::rulescmd::{compile, load_rules};
use crate::run::worker::Workers;

/// `iptables -L` of the running ruleset, with the live counters.
pub(super) fn list_cmd(args: &[&str], state: &ControlState, workers: &Workers) -> control::Reply {
    match crate::rulescmd::parse_list_request(args) {
        Err(m) => control::Reply {
            code: 2,
            out: String::new(),
            err: format!("fastables: {m}\n"),
        },
        Ok((table, chain, o)) => {
            let rs = state.with_counters(workers);
            match fastables_rules::print_list(&rs, table, chain.as_deref(), o) {
                Ok(text) => control::Reply::ok(text),
                Err(m) => control::Reply::fail(format!("fastables: {m}\n")),
            }
        }
    }
}

pub(super) fn save_cmd(args: &[&str], state: &ControlState, workers: &Workers) -> control::Reply {
    let mut counters = false;
    let mut table = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-c" | "--counters" => counters = true,
            "-t" | "--table" => match it
                .next()
                .and_then(|t| Table::ALL.into_iter().find(|x| x.name() == *t))
            {
                Some(t) => table = Some(t),
                None => {
                    return control::Reply::fail(
                        "fastables: -t: expected one of raw, mangle, nat, filter\n",
                    )
                }
            },
            other => {
                return control::Reply::fail(format!("fastables: save: unknown option `{other}`\n"))
            }
        }
    }
    let mut rs = state.with_counters(workers);
    if let Some(t) = table {
        rs.tables.retain(|x| x.table == t);
    }
    control::Reply::ok(print::print_save(&rs, counters))
}

/// iptables-restore on the running instance: the tables in the input replace
/// theirs, the others stay (with their counters); all or nothing.
pub(super) fn restore_cmd(
    args: &[&str],
    body: &str,
    state: &mut ControlState,
    workers: &Workers,
) -> control::Reply {
    let (mut test, mut counters, mut noflush) = (false, false, false);
    let mut name = "<stdin>";
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--name" => name = it.next().copied().unwrap_or(name),
            "-t" | "--test" => test = true,
            "-c" | "--counters" => counters = true,
            "-n" | "--noflush" => noflush = true,
            other => {
                return control::Reply::fail(format!(
                    "fastables: restore: unknown option `{other}`\n"
                ))
            }
        }
    }
    if noflush {
        // The file's commands on top of the running tables (their rules
        // keep their counters; the file's count only with -c).
        let opts = fastables_rules::RestoreOptions {
            noflush: true,
            counters,
        };
        let current = state.with_counters(workers);
        let merged = match fastables_rules::apply_restore_opts(&current, body, name, opts) {
            Ok(rs) => rs,
            Err(e) => {
                return control::Reply {
                    code: e.kind.restore_exit_code(),
                    out: String::new(),
                    err: format!("{e}\n"),
                }
            }
        };
        return commit_restore(merged, name, test, state, workers);
    }
    let mut new = match fastables_rules::parse::parse_restore_all(body, name) {
        Ok(rs) => rs,
        Err(e) => {
            return control::Reply {
                code: e.restore_exit_code(),
                out: String::new(),
                err: format!("{e}\n"),
            }
        }
    };
    if new.tables.is_empty() {
        return control::Reply::fail(format!(
            "fastables: restore: {name} {NO_TABLE}; nothing was applied\n"
        ));
    }
    if !counters {
        for t in &mut new.tables {
            for c in &mut t.chains {
                c.counters = Default::default();
                for r in &mut c.rules {
                    r.counters = Default::default();
                }
            }
        }
    }
    let mut merged = state.with_counters(workers);
    for t in new.tables {
        match merged.tables.iter_mut().find(|x| x.table == t.table) {
            Some(slot) => *slot = t,
            None => merged.tables.push(t),
        }
    }
    merged
        .tables
        .sort_by_key(|t| Table::ALL.iter().position(|x| *x == t.table));
    commit_restore(merged, name, test, state, workers)
}

/// Compiles a restored ruleset and, unless `test`, sets it on every worker.
fn commit_restore(
    merged: Ruleset,
    name: &str,
    test: bool,
    state: &mut ControlState,
    workers: &Workers,
) -> control::Reply {
    let compiled = match CompiledRuleset::compile(&merged, &state.names()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            return control::Reply {
                code: e.restore_exit_code(),
                out: String::new(),
                err: format!("{name}: {e}\n"),
            }
        }
    };
    if !test {
        workers.set_ruleset(&compiled);
        state.rs = merged;
        state.compiled = compiled;
    }
    control::Reply::ok(String::new())
}

/// SIGHUP (and `fastables reload`): the rules file again, all or nothing
/// (counters start afresh, as after `iptables-restore` without `-c`). A
/// file that holds no table is refused: an empty or truncated file would
/// otherwise remove every rule.
pub(in crate::run) fn reload(
    workers: &Workers,
    state: &mut ControlState,
) -> Result<String, String> {
    let Some(file) = state.cfg.rules.clone() else {
        return Err("the configuration names no rules file; nothing to reload".into());
    };
    let name = file.display().to_string();
    let rs = load_rules(&file).map_err(|e| e.to_string())?;
    if rs.tables.is_empty() {
        return Err(format!("{name}: {NO_TABLE}"));
    }
    let c = compile(&rs, &state.names(), &name).map_err(|e| e.to_string())?;
    let c = Arc::new(c);
    workers.set_ruleset(&c);
    state.rs = rs;
    state.compiled = c;
    Ok(format!("{name} loaded"))
}

/// Why a rules file without a table is refused, and how to empty a table.
const NO_TABLE: &str = "holds no table (no `*TABLE` ... `COMMIT` block): refused, as an \
    empty or truncated file would remove every rule; to empty a table on purpose, give its \
    block with no rules (`*filter`, then `COMMIT`)";
