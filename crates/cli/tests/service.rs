//! fastables as a systemd service: the unit passes `systemd-analyze
//! verify`; `fastables run` under a `NOTIFY_SOCKET` this test listens on
//! says READY=1 once its listeners accept, RELOADING=1 / READY=1 around
//! reloads, WATCHDOG=1 while its workers make progress and not while one
//! is stalled, and STOPPING=1; and failures at start (a control socket
//! path over a regular file, a metrics port in use, an interface missing)
//! leave nothing behind: no XDP program, no socket file. The live tests
//! use their own labs (namespaces `fl<pid>sd-*`, `fl<pid>sf-*`).
//!
//! Needs root, systemd-analyze, python3 and curl (skipped otherwise, a
//! failure under CI).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lab::{skip, Lab, FASTABLES};
use common::{describe, have};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    for tool in ["systemd-analyze", "systemd-sysusers"] {
        if !have(tool) {
            skip(&format!("{tool} not installed (Debian: systemd)"));
            return;
        }
    }
    // A root with the unit, the binary where the unit runs it, and the
    // system's own units (targets the unit names).
    let root = std::env::temp_dir().join(format!("fastables-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::copy(
        Path::new(DEPLOY).join("fastables.service"),
        units.join("fastables.service"),
    )
    .unwrap();
    let sbin = root.join("usr/sbin");
    std::fs::create_dir_all(&sbin).unwrap();
    let bin = sbin.join("fastables");
    std::fs::write(&bin, format!("#!/bin/sh\nexec {FASTABLES} \"$@\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|p| Path::new(p).join("sysinit.target").exists())
        .expect("the system's units");
    copy_tree(Path::new(system), &root.join("usr/lib/systemd/system"));
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    // --man=no: the man page comes with the package, not in this root.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg("fastables.service")
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        describe(&out)
    );
    // The sysusers.d file creates the unit's user.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg("--dry-run")
        .arg(Path::new(DEPLOY).join("fastables.sysusers"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("Creating user 'fastables'"),
        "systemd-sysusers: {}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Copies the directory `from` to `to`, symbolic links as links.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let t = e.file_type().unwrap();
        if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if t.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Whether an XDP program is attached to the router's `dev`.
fn xdp_attached(lab: &Lab, dev: &str) -> bool {
    let out = lab.exec("rtr", 10, &["ip", "link", "show", "dev", dev]);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).contains("xdp")
}

fn assert_nothing_attached(lab: &Lab, when: &str) {
    for dev in ["eth0", "docker0"] {
        assert!(
            !xdp_attached(lab, dev),
            "{when}: an XDP program is left on {dev}{}",
            lab.logs()
        );
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
}

/// Stops the instance lab.sh started (the tests start their own).
fn stop_lab_instance(lab: &Lab) {
    let pid: u32 = std::fs::read_to_string(lab.dir.join("fastables.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let t = Instant::now();
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the lab's instance does not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_nothing_attached(lab, "after SIGTERM");
}

/// `fastables run -c config` in the router, its output in `NAME.log`.
fn run_instance(lab: &Lab, name: &str, config: &Path, env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(lab.dir.join(format!("{name}.log"))).unwrap();
    Command::new("ip")
        .args(["netns", "exec"])
        .arg(lab.ns("rtr"))
        .arg(FASTABLES)
        .arg("run")
        .arg("-c")
        .arg(config)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit (at most `secs`); its status code.
fn wait_exit(child: &mut Child, secs: u64) -> Option<i32> {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the instance did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The notifications the instance sends, with when they came.
struct Listener {
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn bind(path: &Path) -> Listener {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (Arc::clone(&messages), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    m.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        Listener {
            messages,
            stop,
            thread: Some(thread),
        }
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until a message starting with `what` comes after `since`.
    fn wait_for(&self, what: &str, since: Instant, secs: u64, lab: &Lab) -> Instant {
        let t = Instant::now();
        loop {
            if let Some((at, _)) = self
                .all()
                .into_iter()
                .find(|(at, m)| *at >= since && m.starts_with(what))
            {
                return at;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "no {what:?} within {secs} s: {:?}{}",
                self.all().iter().map(|m| &m.1).collect::<Vec<_>>(),
                lab.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn watchdogs(&self, from: Instant, to: Instant) -> usize {
        self.all()
            .iter()
            .filter(|(at, m)| *at >= from && *at < to && m == "WATCHDOG=1")
            .count()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw request on the control socket; the answer.
fn request(sock: &Path, fields: &[&str]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{}\n", fields.join("\x1f")).as_bytes())
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn readyz(lab: &Lab) -> String {
    let out = lab.exec(
        "rtr",
        10,
        &[
            "curl",
            "-sS",
            "-m",
            "2",
            "-w",
            " %{http_code}",
            "http://127.0.0.1:9464/readyz",
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn readiness_reloads_and_the_watchdog_reach_systemd() {
    let Some(mut lab) = Lab::start("sd") else {
        return;
    };
    stop_lab_instance(&lab);
    let notify = lab.dir.join("notify.sock");
    let listener = Listener::bind(&notify);
    let start = Instant::now();
    let child = run_instance(
        &lab,
        "notified",
        &lab.dir.join("fastables.toml"),
        &[
            ("NOTIFY_SOCKET", notify.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    lab.children.push(child);
    let ready = listener.wait_for("READY=1", start, 30, &lab);
    // The listeners accept as soon as READY=1 is said.
    let sock = lab.dir.join("fastables.sock");
    UnixStream::connect(&sock).expect("the control socket accepts at READY=1");
    assert_eq!(readyz(&lab), "ready\n 200");
    let before: Vec<String> = listener
        .all()
        .into_iter()
        .filter(|(at, _)| *at <= ready)
        .map(|m| m.1)
        .collect();
    assert_eq!(
        before,
        ["STATUS=starting", "READY=1\nSTATUS=running with 1 worker"],
        "{}",
        lab.logs()
    );
    // WATCHDOG=1 every 200 ms while the worker goes round.
    std::thread::sleep(Duration::from_millis(1500));
    let n = listener.watchdogs(ready, Instant::now());
    assert!(n >= 4, "{n} WATCHDOG=1 in 1.5 s{}", lab.logs());

    // Reloads: SIGHUP, and `fastables reload`, which waits for the result.
    let pid = lab.children.last().unwrap().id().to_string();
    let t = Instant::now();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let r = listener.wait_for("RELOADING=1", t, 10, &lab);
    listener.wait_for("READY=1", r, 10, &lab);
    let t = Instant::now();
    let out = lab.control("reload", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let r = listener.wait_for("RELOADING=1", t, 10, &lab);
    listener.wait_for("READY=1", r, 10, &lab);

    // A stalled worker (a test build's request): no WATCHDOG=1 while it
    // lasts, /readyz says why, and both come back after.
    let answer = request(&sock, &["test-stall-worker", "0", "3000"]);
    assert!(
        answer.starts_with("0 "),
        "test-stall-worker: {answer:?} (a release build?)"
    );
    let stalled = Instant::now();
    std::thread::sleep(Duration::from_millis(1600));
    let r = readyz(&lab);
    assert!(
        r.starts_with("not ready: worker 0 has made no progress") && r.ends_with(" 503"),
        "{r}"
    );
    std::thread::sleep(Duration::from_millis(3000));
    let quiet = listener.watchdogs(
        stalled + Duration::from_millis(1300),
        stalled + Duration::from_millis(2900),
    );
    assert_eq!(
        quiet,
        0,
        "WATCHDOG=1 while worker 0 was stalled{}",
        lab.logs()
    );
    let resumed = listener.watchdogs(stalled + Duration::from_millis(3100), Instant::now());
    assert!(
        resumed >= 2,
        "WATCHDOG=1 did not resume ({resumed}){}",
        lab.logs()
    );
    assert_eq!(readyz(&lab), "ready\n 200");

    // SIGTERM: STOPPING=1, exit 0, nothing left.
    let t = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    listener.wait_for("STOPPING=1", t, 10, &lab);
    let mut child = lab.children.pop().unwrap();
    assert_eq!(wait_exit(&mut child, 15), Some(0), "{}", lab.logs());
    assert_nothing_attached(&lab, "after SIGTERM");
    assert!(!sock.exists(), "the control socket file is left");
}

/// The lab's configuration with `from` replaced by `to`, as `name`.
fn variant(lab: &Lab, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut cfg = std::fs::read_to_string(lab.dir.join("fastables.toml")).unwrap();
    for (from, to) in edits {
        assert!(cfg.contains(from), "{from} not in the lab's configuration");
        cfg = cfg.replace(from, to);
    }
    let path = lab.dir.join(name);
    std::fs::write(&path, cfg).unwrap();
    path
}

#[test]
fn failures_at_start_leave_nothing_behind() {
    if !have("python3") {
        skip("python3 not installed");
        return;
    }
    let Some(mut lab) = Lab::start("sf") else {
        return;
    };
    stop_lab_instance(&lab);
    let sock_line = format!("socket = \"{}\"", lab.dir.join("fastables.sock").display());
    let sock = lab.dir.join("fastables.sock");

    // The control socket's path names a regular file: refused, kept.
    let precious = lab.dir.join("precious.txt");
    std::fs::write(&precious, "do not delete\n").unwrap();
    let cfg = variant(
        &lab,
        "over-a-file.toml",
        &[(&sock_line, &format!("socket = \"{}\"", precious.display()))],
    );
    let mut child = run_instance(&lab, "over-a-file", &cfg, &[]);
    assert_eq!(wait_exit(&mut child, 20), Some(1), "{}", lab.logs());
    let log = std::fs::read_to_string(lab.dir.join("over-a-file.log")).unwrap();
    assert!(
        log.contains("names a regular file, not a socket: refusing to replace it"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "do not delete\n"
    );
    assert_nothing_attached(&lab, "a socket path over a file");

    // The metrics port is taken.
    let holder = "import socket, time\n\
        s = socket.socket(); s.bind(('127.0.0.1', 9464)); s.listen()\n\
        print('listening', flush=True); time.sleep(600)\n";
    lab.server("rtr", "port-holder", &["python3", "-u", "-c", holder]);
    let mut child = run_instance(&lab, "port-taken", &lab.dir.join("fastables.toml"), &[]);
    assert_eq!(wait_exit(&mut child, 20), Some(1), "{}", lab.logs());
    let log = std::fs::read_to_string(lab.dir.join("port-taken.log")).unwrap();
    assert!(log.contains("127.0.0.1:9464\": cannot listen"), "{log}");
    assert_nothing_attached(&lab, "a metrics port in use");
    assert!(
        !sock.exists(),
        "the control socket file is left after a port in use"
    );

    // An interface that does not exist.
    let cfg = variant(&lab, "no-device.toml", &[("\"docker0\"", "\"nosuch0\"")]);
    let mut child = run_instance(&lab, "no-device", &cfg, &[]);
    assert_eq!(wait_exit(&mut child, 20), Some(1), "{}", lab.logs());
    let log = std::fs::read_to_string(lab.dir.join("no-device.log")).unwrap();
    assert!(log.contains("interface `nosuch0` does not exist"), "{log}");
    assert_nothing_attached(&lab, "an interface missing");
    assert!(
        !sock.exists(),
        "the control socket file is left after a missing device"
    );
}
