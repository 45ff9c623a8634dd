//! The reference lab for the live tests: `lab/lab.sh` (the seed topology
//! in network namespaces: a container, the router, the internet with
//! servers on 8.8.8.8 and 1.1.1.1) around `fastables run`, built per test
//! (namespaces named `fl<pid><tag>-ctr|rtr|net`, so that parallel tests,
//! other test binaries and a user's `fastables lab` never collide) and
//! taken down on drop, also when the test fails. Tests that cannot run
//! here (no root, a tool missing) skip with a note, except under CI (env
//! `CI` set), where that is a failure.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use super::{describe, have, is_root};

/// The lab script (`fastables lab` runs the same script).
pub const LAB_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/lab.sh");
pub const FASTABLES: &str = env!("CARGO_BIN_EXE_fastables");

pub fn kernel_router() -> bool {
    std::env::var_os("FASTABLES_LIVE_KERNEL").is_some_and(|v| v == "1")
}

/// Prints why the test does not run and returns false; under CI, fails.
pub fn skip(why: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the live tests: {why}"
    );
    eprintln!("note: {why}; skipping the live test");
    false
}

pub fn can_run() -> bool {
    let mut tools = vec![
        "bash", "ip", "ss", "ethtool", "python3", "curl", "ping", "timeout",
    ];
    if kernel_router() {
        tools.extend(["iptables-restore", "iptables-save", "conntrack"]);
    }
    for tool in tools {
        if !have(tool) {
            return skip(&format!("{tool} not installed"));
        }
    }
    if !is_root() {
        return skip("not root");
    }
    if !kernel_router() {
        let help = Command::new("timeout")
            .args(["10", FASTABLES, "run", "--help"])
            .stdin(Stdio::null())
            .output();
        let works = help.is_ok_and(|o| {
            o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("not supported")
        });
        if !works {
            return skip("`fastables run` is not implemented in this build");
        }
    }
    true
}
/// One lab, taken down on drop.
pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    /// Extra environment for lab.sh (`LAB_EXTRA_NAT`, `LAB_EXTRA_FILTER`).
    pub env: Vec<(&'static str, String)>,
    /// Test servers started in the lab's namespaces.
    pub children: Vec<Child>,
}

impl Lab {
    /// Builds the lab for the test `tag` (one or two characters), or returns
    /// None when the live tests cannot run here.
    pub fn start(tag: &str) -> Option<Lab> {
        Lab::start_with(tag, &[])
    }

    /// As `start`, with extra environment for lab.sh (the extra rules).
    pub fn start_with(tag: &str, env: &[(&'static str, &str)]) -> Option<Lab> {
        if !can_run() {
            return None;
        }
        // Tests run in parallel: two labs with one tag would share namespaces.
        static TAGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        {
            let mut tags = TAGS.lock().unwrap_or_else(|e| e.into_inner());
            assert!(
                !tags.iter().any(|t| t == tag),
                "two live tests use the lab tag {tag:?}"
            );
            tags.push(tag.to_string());
        }
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("fastables-live-{pid}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Built before `up`, so that a failed `up` is taken down too.
        let lab = Lab {
            prefix: format!("fl{pid}{tag}-"),
            dir,
            env: env.iter().map(|&(k, v)| (k, v.to_string())).collect(),
            children: Vec::new(),
        };
        let out = lab.lab_sh("up");
        assert!(
            out.status.success(),
            "lab.sh up failed: {}{}",
            describe(&out),
            lab.logs()
        );
        Some(lab)
    }

    pub fn lab_sh(&self, cmd: &str) -> Output {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", "60", "bash", LAB_SH, cmd])
            .env("LAB_PREFIX", &self.prefix)
            .env("LAB_DIR", &self.dir)
            .env("LAB_SERVERS", "http")
            .env("LAB_TIMEOUT", "15")
            .env("FASTABLES", FASTABLES)
            .env("KERNEL_ROUTER", if kernel_router() { "1" } else { "0" })
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c.output().unwrap()
    }

    /// The namespace `ctr`, `rtr` or `net`.
    pub fn ns(&self, which: &str) -> String {
        format!("{}{which}", self.prefix)
    }

    /// Runs `args` in the namespace `which`, killed after `secs` seconds.
    pub fn exec(&self, which: &str, secs: u32, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-k", "2", &secs.to_string(), "ip", "netns", "exec"])
            .arg(self.ns(which))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `args` in the container; asserts success; returns stdout.
    pub fn ctr_ok(&self, secs: u32, args: &[&str]) -> String {
        let out = self.exec("ctr", secs, args);
        assert!(
            out.status.success(),
            "{} in the container failed: {}{}",
            short(args),
            describe(&out),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a python3 server in the internet namespace that prints one line
    /// when it is ready (its stderr goes to `name.log` in the lab directory).
    pub fn python_server(&mut self, name: &str, src: &str) {
        self.server("net", name, &["python3", "-u", "-c", src]);
    }

    /// Starts the server `args` in the namespace `which`; it prints a line
    /// with `listening` when it is ready (its stderr goes to `name.log`).
    pub fn server(&mut self, which: &str, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec"])
            .arg(self.ns(which))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.children.push(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(
            line.contains("listening"),
            "{name} did not start: {line:?}{}",
            self.logs()
        );
    }

    /// `fastables CMD --socket <the lab's> ARGS...`: a command on the running
    /// instance, killed after 10 s.
    pub fn control(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-k", "2", "10", FASTABLES, cmd, "--socket"])
            .arg(self.dir.join("fastables.sock"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The router's log and the servers' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.sort();
        // fastables.log first.
        names.sort_by_key(|p| !p.ends_with("fastables.log"));
        for p in names
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let _ = write!(
                s,
                "\n---- {} ----\n{}",
                p.file_name().unwrap().to_string_lossy(),
                tail(&text, 60)
            );
        }
        s
    }
}

/// A command line for a message, long arguments (scripts) cut.
pub fn short(args: &[&str]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| match a.char_indices().nth(40) {
            Some((i, _)) => format!("{:?}...", a[..i].trim()),
            None => a.to_string(),
        })
        .collect();
    format!("`{}`", words.join(" "))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut out = String::new();
    if from > 0 {
        let _ = writeln!(out, "[... {from} lines]");
    }
    for l in &lines[from..] {
        let _ = writeln!(out, "{l}");
    }
    out
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let out = self.lab_sh("down");
        if !out.status.success() {
            eprintln!("lab.sh down failed: {}", describe(&out));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
