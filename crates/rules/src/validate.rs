//! Whole-table checks done at `COMMIT`, as the kernel does them when the table
//! is loaded: jump loops reachable from a built-in chain, and the hook
//! restrictions of targets, which a user chain inherits from every built-in
//! chain it is reachable from. The restrictions themselves are each
//! extension's (`targets::hooks_of`, `matches::hook_problems`, ...).

use std::collections::HashMap;

use crate::error::{ErrorKind, Problem};
use crate::model::{Hook, TableRules, Target};
use crate::{matches, targets};

const fn bit(h: Hook) -> u8 {
    1 << (h as u8)
}

/// Each hook's bit in a set of hooks (`1 << hook`, as the kernel's
/// `xt_target.hooks`), for the extensions' restrictions.
pub(crate) const PRE: u8 = bit(Hook::Prerouting);
pub(crate) const IN: u8 = bit(Hook::Input);
pub(crate) const FWD: u8 = bit(Hook::Forward);
pub(crate) const OUT: u8 = bit(Hook::Output);
pub(crate) const POST: u8 = bit(Hook::Postrouting);

fn hook_names(mask: u8) -> String {
    Hook::ALL
        .iter()
        .filter(|&&h| mask & bit(h) != 0)
        .map(|h| h.chain_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A DFS frame: chain index, its outgoing jumps (target, line, name), next edge.
type Frame = (usize, Vec<(usize, u32, String)>, usize);

/// Checks one table; returns (line, problem) pairs in line order.
pub(crate) fn validate_table(t: &TableRules) -> Vec<(u32, Problem)> {
    let mut errs = Vec::new();
    let idx: HashMap<&str, usize> = t
        .chains
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let builtin_hook = |name: &str| {
        t.table
            .builtin_hooks()
            .iter()
            .copied()
            .find(|h| h.chain_name() == name)
    };
    let edges = |ci: usize| {
        t.chains[ci].rules.iter().filter_map(|r| match &r.target {
            Target::Jump(c) | Target::Goto(c) => idx.get(c.as_str()).map(|&j| (j, r.line, c)),
            _ => None,
        })
    };

    // Loops: DFS from each built-in chain.
    let n = t.chains.len();
    let mut state = vec![0u8; n];
    for (bi, c) in t.chains.iter().enumerate() {
        if builtin_hook(&c.name).is_none() || c.policy.is_none() {
            continue;
        }
        // Iterative DFS: stack of (chain, edge list, position).
        let mut stack: Vec<Frame> = Vec::new();
        if state[bi] == 0 {
            state[bi] = 1;
            let e: Vec<_> = edges(bi).map(|(j, l, c)| (j, l, c.clone())).collect();
            stack.push((bi, e, 0));
        }
        while let Some(top) = stack.last_mut() {
            if top.2 >= top.1.len() {
                state[top.0] = 2;
                stack.pop();
                continue;
            }
            let (j, line, name) = top.1[top.2].clone();
            top.2 += 1;
            match state[j] {
                0 => {
                    state[j] = 1;
                    let e: Vec<_> = edges(j).map(|(k, l, c)| (k, l, c.clone())).collect();
                    stack.push((j, e, 0));
                }
                1 => errs.push((
                    line,
                    Problem::new(
                        ErrorKind::Loop,
                        name.as_str(),
                        format!("jump to {name} makes a loop: {name} leads back to this chain; remove the jump or break the cycle"),
                    ),
                )),
                _ => {}
            }
        }
    }
    if !errs.is_empty() {
        errs.sort_by_key(|e| e.0);
        errs.dedup_by_key(|e| e.0);
        return errs;
    }

    // Hooks each chain is reachable from.
    let mut mask = vec![0u8; n];
    for (bi, c) in t.chains.iter().enumerate() {
        if c.policy.is_none() {
            continue;
        }
        let Some(h) = builtin_hook(&c.name) else {
            continue;
        };
        let b = bit(h);
        let mut work = vec![bi];
        while let Some(ci) = work.pop() {
            if mask[ci] & b != 0 {
                continue;
            }
            mask[ci] |= b;
            for (j, _, _) in edges(ci) {
                if mask[j] & b == 0 {
                    work.push(j);
                }
            }
        }
    }

    for (ci, c) in t.chains.iter().enumerate() {
        let is_builtin = c.policy.is_some() && builtin_hook(&c.name).is_some();
        for r in &c.rules {
            if let Some((name, allowed, allowed_names)) = targets::hooks_of(&r.target) {
                let bad = mask[ci] & !allowed;
                if bad != 0 {
                    let via = if is_builtin {
                        String::new()
                    } else {
                        format!(" (chain {} is reached from {})", c.name, hook_names(bad))
                    };
                    errs.push((
                        r.line,
                        Problem::new(
                            ErrorKind::NotAllowed,
                            name,
                            format!(
                                "target {name} is only valid in {allowed_names} of the {} table{via}",
                                t.table.name()
                            ),
                        ),
                    ));
                }
            }
            if !is_builtin {
                continue;
            }
            let mut problems = Vec::new();
            targets::hook_problems(&r.target, mask[ci], &mut problems);
            for m in &r.matches {
                matches::hook_problems(m, mask[ci], &mut problems);
            }
            errs.extend(problems.into_iter().map(|p| (r.line, p)));
        }
    }
    errs.sort_by_key(|e| e.0);
    errs
}
