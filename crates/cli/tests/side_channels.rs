//! The side channels under a flood: 20,000 idle control connections, 1,000
//! idle metrics connections, oversized requests and clients that send a
//! byte a second, against `fastables run` in its own lab (namespaces
//! `fl<pid>fl-*`). While they hold on, `fastables stats`, a scrape and
//! forwarding (a ping through the router) must each answer within a
//! second, a `conntrack -E` stream opened before keeps working, and the
//! instance's RSS stays within the bound the README states.
//!
//! Needs root, python3, curl and ping (skipped otherwise, a failure under CI).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::describe;
use common::lab::{Lab, FASTABLES};

/// Idle clients, each in its own process (a process may not hold 20,000
/// descriptors here): `kind count [path]`, then `ready` and wait for EOF.
const IDLE: &str = r#"
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
kind, n = sys.argv[1], int(sys.argv[2])
conns = []
for i in range(n):
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sys.argv[3])
    else:
        s = socket.create_connection(("127.0.0.1", 9464))
    conns.append(s)
print("ready", flush=True)
sys.stdin.read()
"#;

/// Hostile clients: oversized requests to both servers (a request line of
/// 1 MiB, a restore of 65 MiB, an HTTP head of 1 MiB), and 20 clients of
/// each that send a byte a second; prints what the oversized ones were
/// answered, then `ready`, and keeps trickling until EOF on stdin.
const HOSTILE: &str = r##"
import select, socket, sys, threading, time
path = sys.argv[1]
def unix():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
def tcp():
    return socket.create_connection(("127.0.0.1", 9464))
def answer(s, data):
    s.settimeout(10)
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError:
        pass
    return out.split(b"\n")[0:2]
print("line", answer(unix(), b"stats" + b"x" * (1 << 20)), flush=True)
print("restore", answer(unix(), b"restore\x1f--name\x1fbig\n" + b"#" * (65 << 20)), flush=True)
print("http", answer(tcp(), b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (1 << 20)), flush=True)
trickle = [unix() for _ in range(20)] + [tcp() for _ in range(20)]
print("ready", flush=True)
stop = []
threading.Thread(target=lambda: (sys.stdin.read(), stop.append(1)), daemon=True).start()
while not stop:
    for s in trickle:
        try:
            s.send(b"G")
        except OSError:
            pass
    time.sleep(1)
"##;

/// What the README states: what clients send holds at most 1024 x 64 KiB +
/// 128 MiB (control) and 256 x 8 KiB (metrics), and each client costs at
/// most 4 KiB of the server's own memory besides.
const INPUT_BOUND: u64 = 1024 * (64 << 10) + (128 << 20) + 256 * (8 << 10);
const PER_CLIENT: u64 = 4 << 10;
const RSS_BOUND: u64 = INPUT_BOUND + (1024 + 256) * PER_CLIENT;

fn rss(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb << 10
}

/// Starts `python3 -c script args` in the router's namespace; returns it
/// and its stdout, after it printed `ready` (the lines before are returned).
fn spawn(lab: &Lab, script: &str, args: &[&str]) -> (Child, Vec<String>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec"])
        .arg(lab.ns("rtr"))
        .args(["python3", "-u", "-c", script])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        let n = out.read_line(&mut l).unwrap();
        assert!(
            n > 0,
            "{script:.40}... ended before ready: {lines:?}{}",
            lab.logs()
        );
        if l.trim() == "ready" {
            break;
        }
        lines.push(l.trim().to_string());
    }
    (child, lines)
}

/// Runs `cmd`, asserting success within a second; returns its stdout.
fn within_a_second(lab: &Lab, what: &str, cmd: &mut Command) -> String {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{what} failed under the flood: {}{}",
        describe(&out),
        lab.logs()
    );
    assert!(
        took < Duration::from_secs(1),
        "{what} took {took:?} under the flood{}",
        lab.logs()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn idle_and_hostile_clients_hold_up_nothing() {
    let Some(mut lab) = Lab::start("fl") else {
        return;
    };
    let pid = std::fs::read_to_string(lab.dir.join("fastables.pid"))
        .unwrap()
        .trim()
        .to_string();
    let sock = lab.dir.join("fastables.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    // A stream opened before the flood.
    let mut events = Command::new(FASTABLES)
        .args(["conntrack", "-E", "--socket", &sock_arg])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = rss(&pid);

    let mut flood = Vec::new();
    for _ in 0..4 {
        flood.push(spawn(&lab, IDLE, &["unix", "5000", &sock_arg]).0);
    }
    flood.push(spawn(&lab, IDLE, &["tcp", "1000"]).0);
    let (hostile, answers) = spawn(&lab, HOSTILE, &[&sock_arg]);
    flood.push(hostile);
    lab.children.extend(flood);
    let answers = answers.join("\n");
    for want in [
        "line [b'1 0 ",
        "refused whole, nothing was applied",
        "http [b'HTTP/1.1 431 ",
    ] {
        assert!(answers.contains(want), "{want} not in:\n{answers}");
    }
    assert_eq!(
        answers.matches("refused whole").count(),
        2,
        "both oversized control requests are refused whole:\n{answers}"
    );

    // Five rounds while the byte-a-second clients trickle.
    for _ in 0..5 {
        let stats = within_a_second(
            &lab,
            "fastables stats",
            Command::new(FASTABLES).args(["stats", "--socket", &sock_arg]),
        );
        assert!(stats.contains("eth0"), "{stats}");
        let page = within_a_second(
            &lab,
            "a scrape",
            Command::new("ip")
                .args(["netns", "exec"])
                .arg(lab.ns("rtr"))
                .args(["curl", "-sS", "-m", "1", "http://127.0.0.1:9464/metrics"]),
        );
        assert!(page.contains("\nfastables_ready 1\n"), "{page}");
        within_a_second(
            &lab,
            "a ping through the router",
            Command::new("ip")
                .args(["netns", "exec"])
                .arg(lab.ns("ctr"))
                .args(["ping", "-n", "-c", "1", "-W", "1", "8.8.8.8"]),
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let after = rss(&pid);
    assert!(
        after <= before + RSS_BOUND,
        "RSS grew from {before} to {after} bytes, over the stated bound of {RSS_BOUND}"
    );
    eprintln!(
        "RSS before the flood {} KiB, under it {} KiB (bound +{} KiB)",
        before >> 10,
        after >> 10,
        RSS_BOUND >> 10
    );
    let page = String::from_utf8_lossy(
        &lab.exec(
            "rtr",
            10,
            &["curl", "-sS", "-m", "2", "http://127.0.0.1:9464/metrics"],
        )
        .stdout,
    )
    .into_owned();
    let value = |line: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{line}` in:\n{page}"))
    };
    let refused = |server: &str, reason: &str| {
        value(&format!(
            "fastables_server_refused_total{{server=\"{server}\",reason=\"{reason}\"}} "
        ))
    };
    assert!(refused("control", "evicted") >= 18_000, "{page}");
    assert!(refused("metrics", "evicted") >= 700, "{page}");
    assert_eq!(refused("control", "too_large"), 2, "{page}");
    assert_eq!(refused("metrics", "too_large"), 1, "{page}");
    assert!(
        value("fastables_server_clients{server=\"control\"} ") <= 1024,
        "{page}"
    );
    assert!(
        value("fastables_server_clients{server=\"metrics\"} ") <= 256,
        "{page}"
    );

    // The stream opened before the flood saw the pings' connection.
    let _ = Command::new("kill")
        .args(["-INT", &events.id().to_string()])
        .status();
    let mut seen = String::new();
    let _ = events.stdout.take().unwrap().read_to_string(&mut seen);
    let _ = events.wait();
    assert!(
        seen.contains("[NEW] icmp") && seen.contains("dst=8.8.8.8"),
        "conntrack -E under the flood: {seen:?}{}",
        lab.logs()
    );
}
