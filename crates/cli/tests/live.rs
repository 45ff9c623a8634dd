//! End-to-end tests of the live data plane: `fastables run` as the router of
//! the reference lab (`lab/lab.sh`, the seed topology in network namespaces:
//! a container, the router, the internet with servers on 8.8.8.8 and 1.1.1.1),
//! with real hosts, sockets and tools on both sides.
//!
//! Each test builds its own lab (namespaces named `fl<pid><tag>-ctr|rtr|net`,
//! so that the parallel tests, and a user's `fastables lab`, never collide)
//! and takes it down on drop, also when it fails. Every network operation has
//! a timeout, so a broken data plane fails fast; a failure message carries the
//! fastables log and the servers' logs.
//!
//! Needs root and ip, ss, ethtool, python3, curl, ping, timeout, and a
//! `fastables run`; skipped with a note otherwise, except under CI (env `CI`
//! set), where that is a failure. `FASTABLES_LIVE_KERNEL=1` runs the same
//! tests with the Linux kernel as the router (lab.sh's `KERNEL_ROUTER=1`):
//! the reference they were written against.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The lab script (`fastables lab` runs the same script).
const LAB_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/lab.sh");
const FASTABLES: &str = env!("CARGO_BIN_EXE_fastables");

/// The seed's MASQUERADE port range for TCP.
const TCP_PORTS: std::ops::RangeInclusive<u16> = 55666..=55680;

fn kernel_router() -> bool {
    std::env::var_os("FASTABLES_LIVE_KERNEL").is_some_and(|v| v == "1")
}

/// Prints why the test does not run and returns false; under CI, fails.
fn skip(why: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the live tests: {why}"
    );
    eprintln!("note: {why}; skipping the live test");
    false
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn can_run() -> bool {
    let mut tools = vec![
        "bash", "ip", "ss", "ethtool", "python3", "curl", "ping", "timeout",
    ];
    if kernel_router() {
        tools.push("iptables-restore");
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

/// Status, stdout and stderr of a finished command.
fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One lab, taken down on drop.
struct Lab {
    prefix: String,
    dir: PathBuf,
    /// Test servers started in the lab's namespaces.
    children: Vec<Child>,
}

impl Lab {
    /// Builds the lab for the test `tag` (one or two characters), or returns
    /// None when the live tests cannot run here.
    fn start(tag: &str) -> Option<Lab> {
        if !can_run() {
            return None;
        }
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("fastables-live-{pid}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Built before `up`, so that a failed `up` is taken down too.
        let lab = Lab {
            prefix: format!("fl{pid}{tag}-"),
            dir,
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

    fn lab_sh(&self, cmd: &str) -> Output {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", "60", "bash", LAB_SH, cmd])
            .env("LAB_PREFIX", &self.prefix)
            .env("LAB_DIR", &self.dir)
            .env("LAB_SERVERS", "http")
            .env("LAB_TIMEOUT", "15")
            .env("FASTABLES", FASTABLES)
            .env("KERNEL_ROUTER", if kernel_router() { "1" } else { "0" })
            .stdin(Stdio::null());
        c.output().unwrap()
    }

    /// The namespace `ctr`, `rtr` or `net`.
    fn ns(&self, which: &str) -> String {
        format!("{}{which}", self.prefix)
    }

    /// Runs `args` in the namespace `which`, killed after `secs` seconds.
    fn exec(&self, which: &str, secs: u32, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-k", "2", &secs.to_string(), "ip", "netns", "exec"])
            .arg(self.ns(which))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `args` in the container; asserts success; returns stdout.
    fn ctr_ok(&self, secs: u32, args: &[&str]) -> String {
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
    fn python_server(&mut self, name: &str, src: &str) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec"])
            .arg(self.ns("net"))
            .args(["python3", "-u", "-c", src])
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

    /// The router's log and the servers' logs, for failure messages.
    fn logs(&self) -> String {
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
fn short(args: &[&str]) -> String {
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
fn tail(text: &str, n: usize) -> String {
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

/// `ADDRESS:PORT` as the HTTP server `/whoami` at `url` saw the container.
fn whoami(lab: &Lab, url: &str) -> (String, u16) {
    let body = lab.ctr_ok(10, &["curl", "-sS", "-m", "5", url]);
    let parsed = body
        .trim()
        .rsplit_once(':')
        .and_then(|(a, p)| Some((a.to_string(), p.parse::<u16>().ok()?)));
    parsed.unwrap_or_else(|| panic!("{url} answered {body:?}{}", lab.logs()))
}

/// A UDP echo server that answers with the address it saw.
const UDP_WHOAMI: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("8.8.8.8", 53))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    sys.stderr.write("udp from %s:%d\n" % peer)
    s.sendto(("%s:%d" % peer).encode(), peer)
"#;

/// The container's client: from port 33894, up to 3 tries of 2 s; prints the
/// answer and the address it came from.
const UDP_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 33894))
s.settimeout(2)
for _ in range(3):
    s.sendto(b"who am i", ("8.8.8.8", 53))
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        print("timeout", file=sys.stderr)
        continue
    print("%s from %s:%d" % (data.decode(), peer[0], peer[1]))
    sys.exit(0)
sys.exit(1)
"#;

#[test]
fn udp_through_masquerade_keeps_its_source_port() {
    let Some(mut lab) = Lab::start("u") else {
        return;
    };
    lab.python_server("udp-8.8.8.8", UDP_WHOAMI);
    let got = lab.ctr_ok(15, &["python3", "-c", UDP_CLIENT]);
    assert_eq!(
        got.trim(),
        "10.0.2.15:33894 from 8.8.8.8:53",
        "the server saw the container as (answer from): {got:?}{}",
        lab.logs()
    );
}

#[test]
fn tcp_through_masquerade_gets_a_port_of_the_range() {
    let Some(lab) = Lab::start("t") else {
        return;
    };
    let (addr, port) = whoami(&lab, "http://8.8.8.8/whoami");
    assert!(
        addr == "10.0.2.15" && TCP_PORTS.contains(&port),
        "8.8.8.8 saw the container as {addr}:{port}, not 10.0.2.15:{TCP_PORTS:?}{}",
        lab.logs()
    );
}

#[test]
fn masquerade_takes_the_address_of_the_next_hops_subnet() {
    let Some(lab) = Lab::start("m") else {
        return;
    };
    let (addr, port) = whoami(&lab, "http://1.1.1.1/whoami");
    assert!(
        addr == "1.2.3.56" && TCP_PORTS.contains(&port),
        "1.1.1.1 (via 1.2.3.4) saw the container as {addr}:{port}, not 1.2.3.56:{TCP_PORTS:?}{}",
        lab.logs()
    );
    // And the default route's address for the others, in the same instance.
    let (addr, _) = whoami(&lab, "http://8.8.8.8/whoami");
    assert_eq!(addr, "10.0.2.15", "{}", lab.logs());
}

#[test]
fn ping_through_nat() {
    let Some(lab) = Lab::start("p") else {
        return;
    };
    let out = lab.ctr_ok(
        15,
        &["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "8.8.8.8"],
    );
    assert!(
        out.contains("3 received") && out.contains("from 8.8.8.8"),
        "ping 8.8.8.8 from the container:\n{out}{}",
        lab.logs()
    );
}

/// 20 MB of pseudo-random bytes (xorshift64), the same on every run.
fn big_file() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(20 << 20);
    while v.len() < 20 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

#[test]
fn download_20mb_over_http_through_nat() {
    let Some(lab) = Lab::start("d") else {
        return;
    };
    let data = big_file();
    std::fs::write(lab.dir.join("www/big.bin"), &data).unwrap();
    let got_path = lab.dir.join("got.bin");
    let speed = lab.ctr_ok(
        70,
        &[
            "curl",
            "-sS",
            "-m",
            "60",
            "-o",
            got_path.to_str().unwrap(),
            "-w",
            "%{size_download} bytes, %{speed_download} bytes/s",
            "http://8.8.8.8/big.bin",
        ],
    );
    eprintln!("download through the router: {speed}");
    let got = std::fs::read(&got_path).unwrap();
    if got != data {
        let first = got.iter().zip(&data).position(|(a, b)| a != b);
        panic!(
            "the download differs: {} bytes received of {}, first difference at {first:?}{}",
            got.len(),
            data.len(),
            lab.logs()
        );
    }
}
