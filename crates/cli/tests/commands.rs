//! `check`, `save`, `restore --test` and the commands that are not supported yet.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::seed::{CONFIG, DEMO_RULES};
use common::{fastables, TmpDir};

fn run(args: &[&str]) -> Output {
    fastables().args(args).output().unwrap()
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = fastables()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits without reading stdin: the
    // write then fails with a broken pipe, which is not the test's concern.
    match child.stdin.take().unwrap().write_all(input.as_bytes()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("writing to the command's stdin: {e}"),
    }
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A directory with the seed config and `rules` as rules.v4.
fn setup(tag: &str, config: &str, rules: &str) -> TmpDir {
    let d = TmpDir::new(tag);
    std::fs::write(d.path("fastables.toml"), config).unwrap();
    std::fs::write(d.path("rules.v4"), rules).unwrap();
    d
}

#[test]
fn check_accepts_the_demo_and_prints_a_summary() {
    let d = setup("check-ok", CONFIG, DEMO_RULES);
    let cfg = d.path("fastables.toml");
    let o = run(&["check", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    let rules = d.path("rules.v4");
    assert_eq!(
        out(&o),
        format!(
            "ok: {}: 2 interfaces, 2 routes, 3 neighbors; {}: 8 rules in 12 chains\n",
            cfg.display(),
            rules.display()
        )
    );
    assert_eq!(err(&o), "");
}

#[test]
fn check_names_file_and_line_of_every_bad_rule() {
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A INPUT -p tcp --dport 22 -j ACCEPT\n\
                 -A INPUT -p tcp --dportx 22 -j ACCEPT\n\
                 -A INPUT -s 300.1.1.1 -j DROP\n\
                 COMMIT\n";
    let d = setup("check-rules", CONFIG, rules);
    let o = run(&["check", "-c", d.path("fastables.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    let file = d.path("rules.v4").display().to_string();
    assert!(e.contains(&format!("{file}:6: ")), "{e}");
    assert!(e.contains(&format!("{file}:7: ")), "{e}");
    assert!(!e.contains(&format!("{file}:5: ")), "{e}");
    assert_eq!(out(&o), "");
}

#[test]
fn check_names_file_line_and_column_of_a_bad_config() {
    let config = CONFIG.replace(
        "addresses = [\"172.18.0.1/16\"]",
        "addresses = [\"172.18.0.1/33\"]",
    );
    let line = config
        .lines()
        .position(|l| l.contains("/33"))
        .map(|i| i + 1)
        .unwrap();
    let d = setup("check-config", &config, DEMO_RULES);
    let cfg = d.path("fastables.toml");
    let o = run(&["check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(e.contains(&format!("{}:{line}:", cfg.display())), "{e}");

    // A missing rules file names the path.
    let config = CONFIG.replace("rules = \"rules.v4\"", "rules = \"nope.v4\"");
    let d = setup("check-norules", &config, DEMO_RULES);
    let o = run(&["check", "-c", d.path("fastables.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("nope.v4: cannot read the rules file"),
        "{}",
        err(&o)
    );
}

#[test]
fn check_reports_compile_errors_and_warns_about_unknown_interfaces() {
    // A jump loop parses line by line but cannot be compiled... unless the parser
    // already rejects it; either way the error names the rules file.
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :a - [0:0]\n:b - [0:0]\n-A INPUT -j a\n-A a -j b\n-A b -j a\nCOMMIT\n";
    let d = setup("check-loop", CONFIG, rules);
    let o = run(&["check", "-c", d.path("fastables.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let file = d.path("rules.v4").display().to_string();
    assert!(err(&o).contains(&file), "{}", err(&o));

    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 -A FORWARD -i eth1 -j DROP\n-A FORWARD -o docker+ -j ACCEPT\nCOMMIT\n";
    let d = setup("check-warn", CONFIG, rules);
    let o = run(&["check", "-c", d.path("fastables.toml").to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    let file = d.path("rules.v4").display().to_string();
    assert_eq!(
        err(&o),
        format!("warning: {file}:5: -i eth1: no configured interface has this name\n")
    );
}

#[test]
fn save_prints_canonical_iptables_save() {
    let rules = "*filter\n:INPUT ACCEPT [5:300]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 [2:120] -A INPUT -p tcp --dport 22 -s 1.2.3.4 -j ACCEPT\nCOMMIT\n";
    let d = setup("save", CONFIG, rules);
    let path = d.path("rules.v4");
    let o = run(&["save", "-r", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    assert!(
        text.contains("\n-A INPUT -s 1.2.3.4/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"),
        "{text}"
    );
    // Policy counters are printed with or without -c, as iptables-save 1.8.9 does;
    // rule counters only with -c.
    assert!(text.contains("\n:INPUT ACCEPT [5:300]\n"), "{text}");
    assert!(!text.contains("[2:120]"), "{text}");
    let o = run(&["save", "-c", "-r", path.to_str().unwrap()]);
    let text = out(&o);
    assert!(text.contains("\n:INPUT ACCEPT [5:300]\n"), "{text}");
    assert!(
        text.contains("\n[2:120] -A INPUT -s 1.2.3.4/32 -p tcp -m tcp --dport 22 -j ACCEPT\n"),
        "{text}"
    );
    // Canonical output is a fixed point.
    std::fs::write(d.path("canon.v4"), &text).unwrap();
    let o2 = run(&["save", "-c", "-r", d.path("canon.v4").to_str().unwrap()]);
    assert_eq!(out(&o2), text);
    // -t keeps one table; a table the file lacks prints nothing.
    let o = run(&["save", "-t", "nat", "-r", path.to_str().unwrap()]);
    assert!(o.status.success());
    assert_eq!(out(&o), "");
    let o = run(&["save", "-t", "bogus", "-r", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    // Without -r it asks a running instance; none answers on this socket.
    let sock = d.path("none.sock");
    let o = run(&["save", "--socket", sock.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("none.sock: no running instance answers"),
        "{}",
        err(&o)
    );
}

#[test]
fn list_prints_iptables_l() {
    let rules = "*filter\n:INPUT ACCEPT [5:300]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                 :web - [0:0]\n\
                 [2:120] -A INPUT -p tcp --dport 22 -s 1.2.3.4 -j ACCEPT\n\
                 [123456:98765432] -A INPUT -i eth0 -j web\nCOMMIT\n";
    let d = setup("list", CONFIG, rules);
    let path = d.path("rules.v4");
    let p = path.to_str().unwrap();
    let o = run(&["list", "-r", p, "-v", "-n", "-x"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o),
        "Chain INPUT (policy ACCEPT 5 packets, 300 bytes)\n\
         \x20   pkts      bytes target     prot opt in     out     source               destination         \n\
         \x20      2      120 ACCEPT     6    --  *      *       1.2.3.4              0.0.0.0/0            tcp dpt:22\n\
         \x20 123456 98765432 web        0    --  eth0   *       0.0.0.0/0            0.0.0.0/0           \n\
         \n\
         Chain FORWARD (policy DROP 0 packets, 0 bytes)\n\
         \x20   pkts      bytes target     prot opt in     out     source               destination         \n\
         \n\
         Chain OUTPUT (policy ACCEPT 0 packets, 0 bytes)\n\
         \x20   pkts      bytes target     prot opt in     out     source               destination         \n\
         \n\
         Chain web (1 references)\n\
         \x20   pkts      bytes target     prot opt in     out     source               destination         \n"
    );
    // Rounded counters, one chain, rule numbers.
    let o = run(&["list", "-r", p, "-vn", "--line-numbers", "INPUT"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o),
        "Chain INPUT (policy ACCEPT 5 packets, 300 bytes)\n\
         num   pkts bytes target     prot opt in     out     source               destination         \n\
         1        2   120 ACCEPT     6    --  *      *       1.2.3.4              0.0.0.0/0            tcp dpt:22\n\
         2     123K   99M web        0    --  eth0   *       0.0.0.0/0            0.0.0.0/0           \n"
    );
    // A table the file lacks lists its built-in chains, empty.
    let o = run(&["list", "-r", p, "-t", "raw", "-n"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).starts_with("Chain PREROUTING (policy ACCEPT)\n"),
        "{}",
        out(&o)
    );
    // A chain the table lacks, a bad table.
    let o = run(&["list", "-r", p, "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("No chain/target/match by that name"),
        "{}",
        err(&o)
    );
    let o = run(&["list", "-r", p, "-t", "bogus"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn restore_test_validates_stdin() {
    let o = run_stdin(&["restore", "--test"], DEMO_RULES);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "");
    let o = run_stdin(&["restore", "-t", "-n"], DEMO_RULES);
    assert!(o.status.success(), "{}", err(&o));

    let bad = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j NOSUCHCHAIN\nCOMMIT\n";
    let o = run_stdin(&["restore", "--test"], bad);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown target is a parameter problem"
    );
    assert!(err(&o).contains("<stdin>:3: "), "{}", err(&o));

    let o = run_stdin(&["restore", "--test"], "*filter\n:INPUT ACCEPT [0:0]\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("<stdin>:"), "{}", err(&o));

    // iptables-restore's exit codes (1.8.9, nft; checked against it): 2 for
    // parameter problems, 1 for a missing chain or COMMIT, 4 for what the
    // kernel refuses.
    for (input, code) in [
        ("*filter\n-A INPUT --frob 1 -j ACCEPT\nCOMMIT\n", 2),
        ("*filter\n-A INPUT -s 1.2.3.999 -j ACCEPT\nCOMMIT\n", 2),
        ("*frob\nCOMMIT\n", 2),
        ("*filter\n-A NOPE -j ACCEPT\nCOMMIT\n", 1),
        ("*filter\n-A INPUT -j ACCEPT\n", 1),
        (
            "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j REJECT\nCOMMIT\n",
            4,
        ),
        (
            "*filter\n:A - [0:0]\n:B - [0:0]\n-A INPUT -j A\n-A A -j B\n-A B -j A\nCOMMIT\n",
            4,
        ),
    ] {
        let o = run_stdin(&["restore", "--test"], input);
        assert_eq!(o.status.code(), Some(code), "{input:?}: {}", err(&o));
    }

    let o = run_stdin(
        &["restore", "--socket", "/nonexistent/fastables.sock"],
        DEMO_RULES,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("/nonexistent/fastables.sock: no running instance answers"),
        "{}",
        err(&o)
    );
}

#[test]
fn gen_names_what_is_wrong_with_its_options() {
    for (args, want) in [
        (&["gen"][..], "--dev <IFACE>"),
        (
            &["gen", "--dev", "eth0", "--rate", "1000"][..],
            "fastables: fastables gen: the generator needs --src A[-B] and --dst A[-B] (or --sink to receive)",
        ),
        (
            &["gen", "--dev", "eth0", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--sport", "9-1"][..],
            "the range is reversed",
        ),
        (
            &["gen", "--sink", "--dev", "eth0", "--dst", "10.0.0.2"][..],
            "fastables: fastables gen: --dst is a generator option: not for --sink",
        ),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", err(&o));
        assert!(err(&o).contains(want), "{args:?}: {}", err(&o));
        assert_eq!(out(&o), "");
    }
}

#[test]
fn instance_commands_say_when_no_instance_answers() {
    for args in [
        &["conntrack", "--socket", "/nonexistent/f.sock", "-L"][..],
        // The socket option also after the conntrack arguments.
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--socket",
            "/nonexistent/f.sock",
        ],
        &["conntrack", "-E", "--socket=/nonexistent/f.sock"],
        &[
            "trace",
            "-p",
            "tcp",
            "--dport",
            "80",
            "--socket",
            "/nonexistent/f.sock",
        ],
        &["stats", "--socket", "/nonexistent/f.sock", "--json"],
        &[
            "trace",
            "-p",
            "tcp",
            "--dport",
            "80",
            "--socket",
            "/nonexistent/f.sock",
        ],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            err(&o).contains("/nonexistent/f.sock: no running instance answers"),
            "{args:?}: {}",
            err(&o)
        );
    }
}

#[test]
fn run_names_what_keeps_it_from_starting() {
    let config = "[[interface]]\nname = \"nosuchif9\"\naddresses = [\"10.9.0.1/24\"]\n";
    let d = setup("run-nodev", config, "");
    let cfg = d.path("fastables.toml");
    let o = run(&["run", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.contains("interface `nosuchif9` does not exist") || e.contains("needs root"),
        "{e}"
    );
    assert_eq!(out(&o), "");
}

#[test]
fn run_refuses_one_address_on_two_interfaces() {
    let config = "[[interface]]\nname = \"nosuchA\"\naddresses = [\"10.9.0.1/24\"]\n\
                  [[interface]]\nname = \"nosuchB\"\naddresses = [\"10.9.0.1/16\"]\n";
    let d = setup("run-dupaddr", config, "");
    let cfg = d.path("fastables.toml");
    let o = run(&["run", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.contains("address 10.9.0.1 is configured on both `nosuchA` and `nosuchB`")
            || e.contains("needs root"),
        "{e}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let o = run(&["sim", "-c", "x.toml", "--out-dir", "d"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("--in"), "{}", err(&o));
    let o = run(&["sim", "-c", "x.toml", "--in", "eth0", "--out-dir", "d"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("expected IFACE=FILE"), "{}", err(&o));
    let o = run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}
