//! Compilation: a validated ruleset into the flat entry array, table by
//! table. Chains are ordered as the kernel lays a table out, jumps resolved
//! to entry indices (after a loop check), interface names turned into masks
//! over the instance's interfaces, and each rule's matches and target
//! compiled by their extensions (`matches/`, `targets/`).

use super::program::{
    Act, ChainLayout, Cold, EntryInfo, Hot, Net, F_DST_INV, F_FRAG, F_FRAG_INV, F_PROTO_INV,
    F_SRC_INV, IF_NONE, IF_UNKNOWN, MAX_IFACES,
};
use super::{CompileError, CompileOptions, CompiledRuleset, Flavor};
use crate::ctx::Needs;
use crate::matches::{self, limit::Bucket};
use crate::model::{Chain, IfaceName, Neg, Policy, Rule, Ruleset, Table, TableRules, Target};
use crate::targets;

/// What a rule's matches compile against: the rule's line (for errors) and
/// protocol, its entry (whose inline fields a leading tcp or udp match
/// fills), and what the ruleset being built collects.
pub(crate) struct RuleBuild<'a> {
    pub(crate) line: u32,
    pub(crate) proto: Option<Neg<u8>>,
    pub(crate) entry: &'a mut Hot,
    /// No side-table match compiled yet for this rule.
    pub(crate) first: bool,
    pub(crate) needs: &'a mut Needs,
    pub(crate) flavor: Flavor,
    buckets: &'a mut Vec<Bucket>,
}

impl RuleBuild<'_> {
    /// [`CompileError::ProtoRequired`] unless the rule has `-p` (not negated)
    /// with one of the protocols `protos`; `m` names the match, `proto` the
    /// protocols for the message.
    pub(crate) fn require_proto(
        &self,
        m: &'static str,
        proto: &'static str,
        protos: &[u8],
    ) -> Result<(), CompileError> {
        match self.proto {
            Some(Neg { inv: false, val }) if protos.contains(&val) => Ok(()),
            _ => Err(CompileError::ProtoRequired {
                line: self.line,
                m,
                proto,
            }),
        }
    }

    /// A `-m limit` bucket for each worker's state; its slot.
    pub(crate) fn add_bucket(&mut self, full: Bucket) -> u32 {
        self.buckets.push(full);
        self.buckets.len() as u32 - 1
    }
}

/// A table's chains in the order they are laid out.
struct TableBuild<'a> {
    table: Table,
    /// Model chains in flat order: built-ins in hook order, then user chains.
    order: Vec<Option<(usize, &'a Chain)>>,
}

impl CompiledRuleset {
    /// Compile a validated ruleset for an instance whose interface index `i`
    /// is named `ifaces[i]`.
    pub fn compile(rs: &Ruleset, ifaces: &[&str]) -> Result<CompiledRuleset, CompileError> {
        Self::compile_with(rs, ifaces, CompileOptions::default())
    }

    /// [`CompiledRuleset::compile`] with options (the kernel flavour to follow).
    pub fn compile_with(
        rs: &Ruleset,
        ifaces: &[&str],
        opts: CompileOptions,
    ) -> Result<CompiledRuleset, CompileError> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        if ifaces.len() > MAX_IFACES {
            return Err(CompileError::TooManyInterfaces(ifaces.len()));
        }
        let mut c = CompiledRuleset {
            hot: Vec::new(),
            cold: Vec::new(),
            exts: Vec::new(),
            targets: Vec::new(),
            infos: Vec::new(),
            chain_names: Vec::new(),
            hooks: [[None; 5]; 4],
            layout: rs
                .tables
                .iter()
                .map(|t| {
                    vec![
                        ChainLayout {
                            rules_start: 0,
                            nrules: 0,
                            policy: None,
                        };
                        t.chains.len()
                    ]
                })
                .collect(),
            buckets: Vec::new(),
            flavor: opts.flavor,
            stack_depth: 1,
            n_ifaces: ifaces.len(),
            needs: Needs::default(),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        for (i, t) in rs.tables.iter().enumerate() {
            if rs.tables[..i].iter().any(|o| o.table == t.table) {
                return Err(CompileError::DuplicateTable {
                    table: t.table.name(),
                });
            }
        }
        for table in Table::ALL {
            let tpos = rs.tables.iter().position(|t| t.table == table);
            let build = plan_table(table, tpos.map(|p| &rs.tables[p]))?;
            c.compile_table(&build, tpos, ifaces)?;
        }
        Ok(c)
    }

    fn compile_table(
        &mut self,
        b: &TableBuild<'_>,
        tpos: Option<usize>,
        ifaces: &[&str],
    ) -> Result<(), CompileError> {
        let table = b.table;
        let nbuiltin = table.builtin_hooks().len();
        // First pass: entry index of each chain's first rule.
        let mut starts = Vec::with_capacity(b.order.len());
        let mut next = self.hot.len() as u32;
        for ch in &b.order {
            starts.push(next);
            next += ch.map_or(0, |(_, c)| c.rules.len() as u32) + 1;
        }
        let find = |name: &str, line: u32| -> Result<u32, CompileError> {
            for (k, ch) in b.order.iter().enumerate() {
                let cname = match ch {
                    Some((_, c)) => c.name.as_str(),
                    None => table.builtin_hooks()[k].chain_name(),
                };
                if cname == name {
                    if k < nbuiltin {
                        return Err(CompileError::JumpToBuiltin {
                            line,
                            chain: name.to_string(),
                        });
                    }
                    return Ok(starts[k]);
                }
            }
            Err(CompileError::UnknownChain {
                line,
                table: table.name(),
                chain: name.to_string(),
            })
        };
        // Loop check over user chains (edges by -j / -g).
        let nchains = b.order.len();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); nchains];
        for (k, ch) in b.order.iter().enumerate() {
            if let Some((_, c)) = ch {
                for r in &c.rules {
                    if let Target::Jump(n) | Target::Goto(n) = &r.target {
                        let s = find(n, r.line)?;
                        if let Some(j) = starts.iter().position(|&x| x == s) {
                            edges[k].push(j);
                        }
                    }
                }
            }
        }
        check_loops(table, b, &edges)?;
        let nuser = nchains - nbuiltin;
        self.stack_depth = self.stack_depth.max(nuser + 1);

        for (k, ch) in b.order.iter().enumerate() {
            let chain_name = match ch {
                Some((_, c)) => c.name.clone(),
                None => table.builtin_hooks()[k].chain_name().to_string(),
            };
            let chain_idx = self.chain_names.len() as u32;
            self.chain_names.push(chain_name);
            let rules: &[Rule] = ch.map_or(&[], |(_, c)| c.rules.as_slice());
            debug_assert_eq!(self.hot.len() as u32, starts[k]);
            for (ri, r) in rules.iter().enumerate() {
                let (hot, cold) = self.compile_rule(r, ifaces, &find)?;
                self.hot.push(hot);
                self.cold.push(cold);
                self.targets.push(r.target.clone());
                self.infos.push(EntryInfo {
                    table,
                    chain: chain_idx,
                    index: ri as u32 + 1,
                    line: r.line,
                });
            }
            let end = self.hot.len() as u32;
            let act = if k < nbuiltin {
                let pol = ch.and_then(|(_, c)| c.policy).unwrap_or(Policy::Accept);
                self.hooks[table as usize][table.builtin_hooks()[k] as usize] =
                    Some((starts[k], end));
                match pol {
                    Policy::Accept => Act::Accept,
                    Policy::Drop => Act::Drop,
                }
            } else {
                Act::Return
            };
            self.hot.push(Hot::always());
            self.cold.push(Cold::always(act));
            self.targets.push(Target::None);
            self.infos.push(EntryInfo {
                table,
                chain: chain_idx,
                index: 0,
                line: 0,
            });
            if let (Some(tp), Some((ci, _))) = (tpos, ch) {
                self.layout[tp][*ci] = ChainLayout {
                    rules_start: starts[k],
                    nrules: rules.len() as u32,
                    policy: (k < nbuiltin).then_some(end),
                };
            }
        }
        Ok(())
    }

    fn compile_rule(
        &mut self,
        r: &Rule,
        ifaces: &[&str],
        find: &dyn Fn(&str, u32) -> Result<u32, CompileError>,
    ) -> Result<(Hot, Cold), CompileError> {
        let mut e = Hot::always();
        if let Some(s) = &r.src {
            let n = Net::from(s);
            e.src = n.addr;
            e.smsk = n.mask;
            if s.inv {
                e.flags |= F_SRC_INV;
            }
        }
        if let Some(d) = &r.dst {
            let n = Net::from(d);
            e.dst = n.addr;
            e.dmsk = n.mask;
            if d.inv {
                e.flags |= F_DST_INV;
            }
        }
        e.in_mask = iface_mask(r.in_iface.as_ref(), ifaces);
        e.out_mask = iface_mask(r.out_iface.as_ref(), ifaces);
        if let Some(p) = &r.proto {
            e.proto = p.val;
            if p.inv && p.val != 0 {
                e.flags |= F_PROTO_INV;
            }
        }
        if let Some(inv) = r.fragment {
            e.flags |= F_FRAG;
            if inv {
                e.flags |= F_FRAG_INV;
            }
        }
        let ext_start = self.exts.len() as u32;
        let mut b = RuleBuild {
            line: r.line,
            proto: r.proto,
            entry: &mut e,
            first: true,
            needs: &mut self.needs,
            flavor: self.flavor,
            buckets: &mut self.buckets,
        };
        for m in &r.matches {
            if let Some(x) = matches::compile(m, &mut b)? {
                self.exts.push(x);
                b.first = false;
            }
        }
        let cold = Cold {
            ext_start,
            ext_end: self.exts.len() as u32,
            act: targets::compile(&r.target, r.line, find, &mut self.needs)?,
        };
        Ok((e, cold))
    }
}

/// Order a table's chains (built-ins in hook order, absent ones as `None`,
/// then user chains) and check names and policies.
fn plan_table(table: Table, tr: Option<&TableRules>) -> Result<TableBuild<'_>, CompileError> {
    let hooks = table.builtin_hooks();
    let mut order: Vec<Option<(usize, &Chain)>> = vec![None; hooks.len()];
    let Some(tr) = tr else {
        return Ok(TableBuild { table, order });
    };
    for (ci, ch) in tr.chains.iter().enumerate() {
        if tr.chains[..ci].iter().any(|o| o.name == ch.name) {
            return Err(CompileError::DuplicateChain {
                table: table.name(),
                chain: ch.name.clone(),
            });
        }
        let builtin = hooks.iter().position(|h| h.chain_name() == ch.name);
        match (builtin, ch.policy) {
            (Some(k), Some(_)) => order[k] = Some((ci, ch)),
            (Some(_), None) => {
                return Err(CompileError::MissingPolicy {
                    table: table.name(),
                    chain: ch.name.clone(),
                })
            }
            (None, Some(_)) => {
                return Err(CompileError::NotBuiltin {
                    table: table.name(),
                    chain: ch.name.clone(),
                })
            }
            (None, None) => {}
        }
    }
    for (ci, ch) in tr.chains.iter().enumerate() {
        if ch.policy.is_none() {
            order.push(Some((ci, ch)));
        }
    }
    Ok(TableBuild { table, order })
}

/// Refuses a loop of jumps reachable from a built-in chain.
fn check_loops(table: Table, b: &TableBuild<'_>, edges: &[Vec<usize>]) -> Result<(), CompileError> {
    // Only loops reachable from a built-in chain matter (the kernel's
    // mark_source_chains); unreachable chains never run.
    // 0 = unvisited, 1 = on the DFS path, 2 = done. Iterative DFS.
    let mut color = vec![0u8; edges.len()];
    for root in 0..b.table.builtin_hooks().len().min(edges.len()) {
        if color[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&succ) = edges[node].get(*next) {
                *next += 1;
                match color[succ] {
                    0 => {
                        color[succ] = 1;
                        stack.push((succ, 0));
                    }
                    1 => {
                        let name = b.order[succ]
                            .map(|(_, c)| c.name.clone())
                            .unwrap_or_default();
                        return Err(CompileError::Loop {
                            table: table.name(),
                            chain: name,
                        });
                    }
                    _ => {}
                }
            } else {
                color[node] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

/// The mask of an `-i`/`-o` match over interface indices plus [`IF_NONE`] and
/// [`IF_UNKNOWN`], with the inversion folded in.
fn iface_mask(m: Option<&Neg<IfaceName>>, ifaces: &[&str]) -> u64 {
    let Some(n) = m else {
        return !0;
    };
    let mut mask = 0u64;
    for (i, name) in ifaces.iter().enumerate() {
        if n.val.matches(name) {
            mask |= 1 << i;
        }
    }
    if n.val.matches("") {
        mask |= IF_NONE;
    }
    if n.val.0 == "+" {
        mask |= IF_UNKNOWN;
    }
    if n.inv {
        !mask
    } else {
        mask
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    #[test]
    fn compile_errors() {
        let e = |rs: &Ruleset| CompiledRuleset::compile(rs, IFACES).unwrap_err();
        let unknown = filter_input(vec![rule(Target::Jump("nope".into()))]);
        assert!(matches!(
            e(&unknown),
            CompileError::UnknownChain { line: 7, .. }
        ));
        let builtin = filter_input(vec![rule(Target::Goto("OUTPUT".into()))]);
        assert!(matches!(e(&builtin), CompileError::JumpToBuiltin { .. }));
        let lp = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Accept,
                vec![rule(Target::Jump("a".into()))],
            )],
            vec![
                ("a", vec![rule(Target::Goto("b".into()))]),
                ("b", vec![rule(Target::Jump("a".into()))]),
            ],
        );
        assert!(matches!(e(&lp), CompileError::Loop { .. }));
        let selfloop = table(
            Table::Filter,
            vec![(
                Hook::Forward,
                Policy::Accept,
                vec![rule(Target::Jump("a".into()))],
            )],
            vec![("a", vec![rule(Target::Goto("a".into()))])],
        );
        assert!(matches!(e(&selfloop), CompileError::Loop { .. }));
        // A loop no built-in chain reaches is accepted, as by the kernel.
        let unreachable = table(
            Table::Filter,
            vec![],
            vec![("a", vec![rule(Target::Goto("a".into()))])],
        );
        assert!(CompiledRuleset::compile(&unreachable, IFACES).is_ok());
        let noproto = filter_input(vec![with_matches(vec![Match::Tcp(TcpMatch::default())])]);
        assert!(matches!(
            e(&noproto),
            CompileError::ProtoRequired { m: "tcp", .. }
        ));
        let mut dup = filter_input(vec![]);
        dup.tables.push(dup.tables[0].clone());
        assert!(matches!(e(&dup), CompileError::DuplicateTable { .. }));
        let mut pol = filter_input(vec![]);
        pol.tables[0]
            .chains
            .push(chain("mine", Some(Policy::Accept), vec![]));
        assert!(matches!(e(&pol), CompileError::NotBuiltin { .. }));
        let many: Vec<String> = (0..63).map(|i| format!("e{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            CompiledRuleset::compile(&Ruleset::default(), &refs),
            Err(CompileError::TooManyInterfaces(63))
        ));
        // Diamond (two paths to one chain) is not a loop.
        let diamond = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Accept,
                vec![
                    rule(Target::Jump("a".into())),
                    rule(Target::Jump("b".into())),
                ],
            )],
            vec![
                ("a", vec![rule(Target::Jump("c".into()))]),
                ("b", vec![rule(Target::Jump("c".into()))]),
                ("c", vec![]),
            ],
        );
        assert!(CompiledRuleset::compile(&diamond, IFACES).is_ok());
    }
}
