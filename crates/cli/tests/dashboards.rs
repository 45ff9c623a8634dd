//! The Grafana dashboard (`deploy/grafana/fastables.json`) and the
//! Prometheus alert rules (`deploy/prometheus/fastables.rules.yml`) name
//! only metrics that a running instance's `/metrics` exports: every PromQL
//! expression's metric names are read out and looked up in the page of
//! `fastables run` in its own lab (namespaces `fl<pid>db-*`). `promtool
//! check rules` checks the rules' syntax (Debian's prometheus package).
//!
//! The name extraction is a unit test here too: no lab needed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::lab::{skip, Lab};
use common::{describe, have};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");

/// PromQL words that are not metric names (the aggregations, which may
/// have their `by (...)` before their parenthesis, among them).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
];

/// The metric names a PromQL expression reads: identifiers that are not
/// functions, keywords, label names (in `{...}` and in `by (...)` and its
/// kin), strings, durations or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    // Skips from an opening bracket to its match.
    let skip_group = |mut i: usize, open: u8, close: u8| {
        let mut depth = 0;
        while i < b.len() {
            match b[i] {
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                b'"' | b'\'' => {
                    let q = b[i];
                    i += 1;
                    while i < b.len() && b[i] != q {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            i = skip_group(i, b'{', b'}');
        } else if c == b'[' {
            i = skip_group(i, b'[', b']');
        } else if c == b'"' || c == b'\'' || c == b'`' {
            // A string: to its closing quote.
            let mut j = i + 1;
            while j < b.len() && b[j] != c {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if c == b'$' {
            i += 1;
            while i < b.len() && (ident(b[i]) || b[i] == b'{' || b[i] == b'}') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let call = b.get(j) == Some(&b'(');
            let grouping = [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ];
            if call && grouping.contains(&word) {
                // Label names.
                i = skip_group(j, b'(', b')');
            } else if !call && !KEYWORDS.contains(&word) {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn promql_metric_names_are_read_out() {
    let got = metric_names(
        "sum by (instance, worker) (rate(fastables_drops_total{reason!~\"filter_drop|x\"}[5m])) \
         > 1.5 * sum without (le) (rate(fastables_rx_packets_total[1h] offset 5m)) \
         and on (instance) fastables_ready == bool 1 unless histogram_quantile(0.99, \
         sum by (le) (rate(fastables_batch_latency_seconds_bucket{instance=~\"$instance\"}[$__rate_interval])))",
    );
    let want: BTreeSet<String> = [
        "fastables_drops_total",
        "fastables_rx_packets_total",
        "fastables_ready",
        "fastables_batch_latency_seconds_bucket",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
}

/// Every PromQL expression of the dashboard: the panels' targets, and the
/// metric of each `label_values(...)` variable.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(DEPLOY).join("grafana/fastables.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q.strip_prefix("label_values(").unwrap_or(q);
            exprs.push(inner.split(',').next().unwrap().to_string());
        }
    }
    exprs
}

/// Every `expr:` of the rules file (inline, or a `|` block).
fn rule_exprs() -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(DEPLOY).join("prometheus/fastables.rules.yml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if let Some(v) = l.trim_start().strip_prefix("expr:") {
            let indent = l.len() - l.trim_start().len();
            let v = v.trim();
            if v == "|" || v == ">" {
                let mut block = String::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() > indent)
                {
                    block.push_str(lines[i]);
                    block.push('\n');
                    i += 1;
                }
                exprs.push(block);
                continue;
            }
            exprs.push(v.to_string());
        }
        i += 1;
    }
    exprs
}

/// The names a `/metrics` page exports: its families, and their samples
/// (`_bucket`, `_sum`, `_count` of histograms).
fn exported(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in page.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let mut w = t.split_whitespace();
            let (name, kind) = (w.next().unwrap(), w.next().unwrap_or(""));
            names.insert(name.to_string());
            if kind == "histogram" || kind == "summary" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
        } else if !l.starts_with('#') && !l.is_empty() {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            names.insert(l[..end].to_string());
        }
    }
    names
}

#[test]
fn dashboard_and_alerts_name_only_exported_metrics() {
    let dashboard = dashboard_exprs();
    let rules = rule_exprs();
    assert!(
        dashboard.len() >= 20 && rules.len() >= 4,
        "{dashboard:?} {rules:?}"
    );
    if have("promtool") {
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(Path::new(DEPLOY).join("prometheus/fastables.rules.yml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "promtool: {}", describe(&out));
    } else if !skip("promtool not installed (Debian: prometheus)") {
        return;
    }
    let Some(lab) = Lab::start("db") else {
        return;
    };
    // A NATed connection, so that the NAT metrics have samples too.
    lab.ctr_ok(15, &["curl", "-sS", "-m", "5", "http://8.8.8.8/whoami"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = lab.exec(
        "rtr",
        10,
        &["curl", "-sS", "-m", "2", "http://127.0.0.1:9464/metrics"],
    );
    assert!(out.status.success(), "{}{}", describe(&out), lab.logs());
    let page = String::from_utf8_lossy(&out.stdout).into_owned();
    let have = exported(&page);
    for (source, exprs) in [("dashboard", &dashboard), ("alert rules", &rules)] {
        for e in exprs.iter() {
            let names = metric_names(e);
            assert!(!names.is_empty(), "{source}: no metric in `{e}`");
            for n in names {
                assert!(
                    have.contains(&n),
                    "{source}: `{n}` (in `{}`) is not exported by /metrics:\n{page}",
                    e.trim()
                );
            }
        }
    }
}
