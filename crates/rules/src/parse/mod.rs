//! The `iptables-restore` parser: tokenizer, option parsing with iptables'
//! rules (long-option prefixes, `!` before an option, implicit `-m tcp` after
//! `-p tcp --dport`), and the restore driver that applies a file's commands to
//! a ruleset atomically.
//!
//! - `lex`: a line into arguments (iptables' `add_param_to_argv`);
//! - `options`: option tables (name, arguments, `!`) of the base options;
//! - `values`: value parsers several options share;
//! - `rule`: one line's options into a rule or a command;
//! - `restore`: a file's lines applied to a ruleset, table by table.
//!
//! Each match and target parses its own options in its file (`matches/`,
//! `targets/`).
//!
//! The language is what `iptables-restore` 1.8.9 (nft) accepts, checked line by
//! line against it (see `testdata/kernel_lines.tsv`):
//!
//! - file: `*table`, `:CHAIN POLICY [p:b]`, `COMMIT`, `#` comments in column 1,
//!   empty lines, `[p:b]` rule prefixes, `"..."` quoting with `\` escapes;
//! - commands: `-A`, `-I [n]`, `-D rule|n`, `-R n`, `-N`, `-X [chain]`,
//!   `-F [chain]`, `-Z [chain]`, `-P`, `-E`; rule options `-s -d -p -i -o -f -j
//!   -g -m -c` and their long forms (unique prefixes accepted, as getopt does);
//! - the matches and targets of [`crate::names::SUPPORTED_MATCHES`] and
//!   [`crate::names::SUPPORTED_TARGETS`] (each extension's file says which of
//!   its options it refuses).
//!
//! Not supported (an error names them): other matches and targets, hostnames
//! (except `localhost`).

use crate::error::{RulesError, RulesErrors};
use crate::model::*;

mod lex;
mod options;
mod restore;
mod rule;
mod values;

pub(crate) use options::{Opt, OptSpec};
pub(crate) use restore::empty_table;
pub(crate) use values::{bad, conflict, not_allowed};
pub(crate) use values::{
    parse_mark, parse_net_raw, parse_num_range, parse_port, parse_port_range,
    parse_port_range_wrapping, parse_range_addrs, parse_u32_val,
};

use lex::tokenize;
use restore::{check_rule_in_table, Restore};
use rule::RuleParser;

/// How to apply a restore file: `iptables-restore -n` / `-c`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// `-n`/`--noflush`: the file's commands apply on top of the current tables
    /// instead of replacing them.
    pub noflush: bool,
    /// `-c`/`--counters`: take the `[packets:bytes]` of chains and rules from the file.
    pub counters: bool,
}

/// Parses an `iptables-restore` file into a validated ruleset (as restoring it
/// into an empty instance with `iptables-restore -c` would). Rules carry their
/// source line and the counters written in the file.
pub fn parse_restore(text: &str, file: &str) -> Result<Ruleset, RulesError> {
    let opts = RestoreOptions {
        noflush: false,
        counters: true,
    };
    apply_restore_opts(&Ruleset::default(), text, file, opts)
}

/// `iptables-restore [-n]` against a running ruleset: each table in the file
/// replaces that table (tables absent from the file are untouched); with
/// `noflush` the file's commands apply on top. Counters in the file are ignored
/// (as without `-c`) except `-c P B` in a rule. Atomic: on error nothing of the
/// file applies and the caller keeps `current`.
pub fn apply_restore(
    current: &Ruleset,
    text: &str,
    file: &str,
    noflush: bool,
) -> Result<Ruleset, RulesError> {
    let opts = RestoreOptions {
        noflush,
        counters: false,
    };
    apply_restore_opts(current, text, file, opts)
}

/// [`apply_restore`] with all of `iptables-restore`'s relevant options.
pub fn apply_restore_opts(
    current: &Ruleset,
    text: &str,
    file: &str,
    opts: RestoreOptions,
) -> Result<Ruleset, RulesError> {
    let mut r = Restore::new(current, file, opts, true);
    r.run(text);
    match r.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(r.out),
    }
}

/// Checks a restore file and returns every error found (in line order), not
/// just the first; empty when the file is valid. A line with an error is
/// skipped and checking goes on, so later errors may follow from earlier ones.
pub fn check_restore(text: &str, file: &str) -> Vec<RulesError> {
    let opts = RestoreOptions {
        noflush: false,
        counters: true,
    };
    let mut r = Restore::new(&Ruleset::default(), file, opts, false);
    r.run(text);
    let mut errs = r.errors;
    errs.sort_by_key(|e| e.line);
    errs
}

/// [`check_restore`] as a `Result`.
pub fn parse_restore_all(text: &str, file: &str) -> Result<Ruleset, RulesErrors> {
    let opts = RestoreOptions {
        noflush: false,
        counters: true,
    };
    let mut r = Restore::new(&Ruleset::default(), file, opts, false);
    r.run(text);
    if r.errors.is_empty() {
        Ok(r.out)
    } else {
        let mut errs = r.errors;
        errs.sort_by_key(|e| e.line);
        Err(RulesErrors(errs))
    }
}

/// Parses a rule specification (the part after `-A CHAIN`, e.g.
/// `-p tcp --dport 80 -j ACCEPT`) for `table`/`chain` without checking that
/// jump targets exist. A list in `-s`/`-d` gives several rules.
pub fn parse_rule_spec(table: Table, chain: &str, spec: &str) -> Result<Vec<Rule>, RulesError> {
    let toks = tokenize(spec).map_err(|p| p.at("<rule>", 1))?;
    let mut pr = RuleParser::new(false);
    pr.parse(&toks).map_err(|p| p.at("<rule>", 1))?;
    let rules = pr.rule_only(chain).map_err(|p| p.at("<rule>", 1))?;
    if let Some(r) = rules.first() {
        // Jump targets are not checked: the chains are not known here.
        let t = TableRules {
            table,
            chains: Vec::new(),
        };
        if !matches!(r.target, Target::Jump(_) | Target::Goto(_)) {
            check_rule_in_table(&t, None, table, r).map_err(|p| p.at("<rule>", 1))?;
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::values::parse_net;
    use super::*;
    use crate::print::{print_rule, print_save};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// Lines checked against the real `iptables-restore` + `iptables-save`
    /// (1.8.9, nft) in a fresh netns: `table \t input line \t saved rules
    /// joined by " | "` or `ERROR` when iptables-restore refused the line.
    const KERNEL_LINES: &str = include_str!("../testdata/kernel_lines.tsv");

    fn one(table: &str, line: &str) -> Result<String, RulesError> {
        let text = format!("*{table}\n{line}\nCOMMIT\n");
        let rs = parse_restore(&text, "t.rules")?;
        let t = rs.tables.first().expect("table present");
        let mut out = Vec::new();
        for c in t.chains.iter() {
            for r in &c.rules {
                out.push(print_rule(&c.name, r));
            }
        }
        Ok(out.join(" | "))
    }

    #[test]
    fn kernel_canonical_forms() {
        let mut n = 0;
        for l in KERNEL_LINES.lines() {
            let mut f = l.split('\t');
            let (table, input, want) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let got = one(table, input);
            if want == "ERROR" {
                assert!(
                    got.is_err(),
                    "{table}: `{input}` accepted as `{}`, iptables rejects it",
                    got.unwrap()
                );
            } else {
                match got {
                    Ok(g) => assert_eq!(g, want, "{table}: `{input}`"),
                    Err(e) => panic!("{table}: `{input}` rejected ({e}), iptables prints `{want}`"),
                }
            }
            n += 1;
        }
        assert!(n > 350, "fixture has {n} lines");
    }

    #[test]
    fn rules_carry_lines_and_rule_spec_parses() {
        let rs = parse_restore(
            "*filter\n\n# x\n-A INPUT -s 1.1.1.1,2.2.2.2 -j DROP\nCOMMIT\n",
            "f",
        )
        .unwrap();
        let lines: Vec<u32> = rs.tables[0].chains[0]
            .rules
            .iter()
            .map(|r| r.line)
            .collect();
        assert_eq!(lines, vec![4, 4]);
        let r = parse_rule_spec(Table::Filter, "INPUT", "-p tcp --dport 80 -j ACCEPT").unwrap();
        assert_eq!(
            print_rule("INPUT", &r[0]),
            "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT"
        );
        assert!(parse_rule_spec(Table::Filter, "INPUT", "-A INPUT").is_err());
    }

    #[test]
    fn non_contiguous_masks() {
        let n = |s: &str| parse_net(s).unwrap();
        let m = |a: [u8; 4]| u32::from(Ipv4Addr::from(a));
        // Kept as given, the address masked, as iptables does.
        let x = n("10.20.30.40/0.0.0.255");
        assert_eq!((x.addr, x.mask), (Ipv4Addr::new(0, 0, 0, 40), 0xff));
        assert_eq!(x.prefix_len(), None);
        let x = n("10.1.2.3/255.0.255.0");
        assert_eq!(
            (x.addr, x.mask),
            (Ipv4Addr::new(10, 0, 2, 0), m([255, 0, 255, 0]))
        );
        // Contiguous dotted masks are prefixes.
        assert_eq!(n("10.1.2.3/255.255.0.0"), n("10.1.0.0/16"));
        assert_eq!(n("1.2.3.4/0.0.0.0").prefix_len(), Some(0));
        assert_eq!(n("1.2.3.4").prefix_len(), Some(32));
        // Printed dotted, as iptables-save does; prefixes stay `/len`.
        let cases = [
            (
                "-A INPUT -s 10.0.0.0/255.0.255.0 -j ACCEPT",
                "-A INPUT -s 10.0.0.0/255.0.255.0 -j ACCEPT",
            ),
            (
                "-A INPUT -s 10.20.30.40/0.0.0.255 -j ACCEPT",
                "-A INPUT -s 0.0.0.40/0.0.0.255 -j ACCEPT",
            ),
            (
                "-A INPUT ! -d 172.16.5.5/255.255.0.255 -j DROP",
                "-A INPUT ! -d 172.16.0.5/255.255.0.255 -j DROP",
            ),
            (
                "-A INPUT -s 10.1.2.3/255.255.255.0 -j DROP",
                "-A INPUT -s 10.1.2.0/24 -j DROP",
            ),
            (
                "-A INPUT -s 1.2.3.4/255.255.255.255 -j DROP",
                "-A INPUT -s 1.2.3.4/32 -j DROP",
            ),
            (
                "-A INPUT -m conntrack --ctorigsrc 1.2.3.4/255.0.255.0 ! --ctrepldst 5.6.7.8/255.255.255.0 --ctorigdst 9.9.9.9/255.255.255.255",
                "-A INPUT -m conntrack --ctorigsrc 1.2.3.4/255.0.255.0 --ctorigdst 9.9.9.9 ! --ctrepldst 5.6.7.8/24",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(one("filter", input).unwrap(), want, "`{input}`");
            // The printed form reads back to the same rule.
            assert_eq!(one("filter", want).unwrap(), want, "`{want}`");
        }
        // Masks that are not addresses are still refused.
        assert!(one("filter", "-A INPUT -s 1.2.3.4/255.0.256.0").is_err());
        assert!(one("filter", "-A INPUT -s 1.2.3.4/33").is_err());
    }

    /// Printing then re-parsing gives the same ruleset (save output is a fixed point).
    #[test]
    fn save_output_reparses_to_the_same_ruleset() {
        let mut text = String::new();
        for l in KERNEL_LINES.lines() {
            let mut f = l.split('\t');
            let (table, input, want) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            // An interface name with a blank prints unquoted (as iptables-save
            // does) and cannot be read back.
            if want == "ERROR" || input.contains("\"a b\"") {
                continue;
            }
            text.clear();
            text.push_str(&format!("*{table}\n{input}\nCOMMIT\n"));
            let a = parse_restore(&text, "a").unwrap();
            let saved = print_save(&a, true);
            let b = parse_restore(&saved, "b").unwrap();
            assert_eq!(print_save(&b, true), saved, "{input}");
        }
    }

    const SEED: &str = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:X - [0:0]\n-A INPUT -s 10.0.0.0/8 ! -i eth0 -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m comment --comment \"ssh in\" -j ACCEPT\n-A INPUT -p icmp -m icmp --icmp-type 8 -m limit --limit 5/sec -j X\n-A X -j LOG --log-prefix \"x: \"\n-A FORWARD -p tcp -m multiport --dports 80,443 -j REJECT --reject-with tcp-reset\nCOMMIT\n*nat\n-A POSTROUTING -s 172.18.0.0/16 ! -o docker0 -p tcp -j MASQUERADE --to-ports 55666-55680\n-A PREROUTING -p tcp --dport 8088 -j DNAT --to-destination 192.168.0.2:80\nCOMMIT\n";

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
            let _ = parse_restore(&s, "f");
            let _ = check_restore(&s, "f");
        }

        #[test]
        fn restore_like_text_never_panics(lines in prop::collection::vec(
            prop_oneof![
                Just("*filter".to_string()), Just("*nat".to_string()), Just("COMMIT".to_string()),
                Just(":INPUT DROP [1:2]".to_string()), Just("-N X".to_string()), Just("-X".to_string()),
                "-[AIDR] (INPUT|X|OUTPUT) [-!a-z0-9 .:/,\"]{0,40}",
                "(-p|-s|--dport|-m|-j|--to|!) [a-zA-Z0-9.:/,-]{0,12}",
            ], 0..12)) {
            let text = lines.join("\n");
            let _ = parse_restore(&text, "f");
            let _ = apply_restore(&Ruleset::default(), &text, "f", true);
        }

        #[test]
        fn mutated_valid_file_never_panics(pos in 0usize..2000, del in 0usize..8, ins in "[ -~]{0,6}") {
            let mut b: Vec<char> = SEED.chars().collect();
            let p = pos % (b.len() + 1);
            let d = del.min(b.len() - p);
            b.splice(p..p + d, ins.chars());
            let text: String = b.into_iter().collect();
            if let Ok(rs) = parse_restore(&text, "f") {
                let saved = print_save(&rs, true);
                let again = parse_restore(&saved, "g");
                prop_assert!(again.is_ok(), "save output must re-parse: {:?}\n{}", again.err(), saved);
                prop_assert_eq!(print_save(&again.unwrap(), true), saved);
            }
        }
    }
}
