//! The packaging of deploy/, run as an operator would: the Debian package
//! built by its one command (`deploy/deb/build.sh`) and installed on a
//! clean Debian 12 (`deploy/deb/test-install.sh`: debootstrap, dpkg,
//! apt-get, `fastables --version`, `man`, `check`), whose binary then runs
//! the lab demo; the container image built with buildah and run by podman
//! as the router of the lab demo (`deploy/container/`); and the Kubernetes
//! manifest checked against the configuration, the capabilities and
//! `fastables check` (`deploy/kubernetes/check.py`).
//!
//! The scripts print a line per step; a failure shows their whole output.
//! The package is built once for both tests that need it. Needs root and
//! the Debian packages .ci/setup installs (debootstrap, lintian, buildah,
//! podman, runc, python3-yaml, and the lab's); skipped with a note
//! otherwise, except under CI (env `CI` set), where that is a failure.
//! The labs use their own namespace prefixes (flpkg-, flctr-).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use common::{describe, have, is_root};

const FASTABLES: &str = env!("CARGO_BIN_EXE_fastables");

/// The repository's root (the scripts run from there).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository's root")
}

/// Prints why the test does not run and returns false; under CI, fails.
fn skip(why: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run the package tests: {why}"
    );
    eprintln!("note: {why}; skipping the package test");
    false
}

/// Whether the tools are there (and root, when `root`).
fn can_run(tools: &[&str], root: bool) -> bool {
    for tool in tools {
        if !have(tool) {
            return skip(&format!("{tool} not installed"));
        }
    }
    if root && !is_root() {
        return skip("not root");
    }
    true
}

/// Runs a script of deploy/ from the repository's root; its stdout, or a
/// panic with its whole output. Prints how long it took.
fn script(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let start = Instant::now();
    let out = cmd
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}", describe(&out));
    eprintln!("{what}: {:.0?}", start.elapsed());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package of `deploy/deb/build.sh`, built once per test run.
fn deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = script(&mut Command::new("deploy/deb/build.sh"));
        let deb = repo().join(out.trim());
        assert!(deb.is_file(), "build.sh printed {out:?}, not a package");
        deb
    })
    .clone()
}

const LAB_TOOLS: [&str; 8] = [
    "bash", "ip", "ss", "ethtool", "python3", "curl", "ping", "dig",
];

#[test]
fn deb_installs_on_a_clean_debian_12_and_runs_the_lab_demo() {
    let mut tools = vec!["debootstrap", "dpkg-shlibdeps", "lintian", "unshare"];
    tools.extend(LAB_TOOLS);
    if !can_run(&tools, true) {
        return;
    }
    let deb = deb();
    let out = script(
        Command::new("deploy/deb/test-install.sh")
            .arg(&deb)
            .env("LAB_DEMO", "1"),
    );
    println!("{out}");
    for want in [
        "ok: fastables --version: fastables ",
        "ok: man fastables: fastables - Poll-mode IPv4 forwarder",
        "ok: fastables check: ok: /etc/fastables/fastables.toml",
        "demo: all 4 steps ok",
    ] {
        assert!(out.contains(want), "no `{want}` in:\n{out}");
    }
}

#[test]
fn image_builds_and_runs_the_lab_as_its_router() {
    let mut tools = vec![
        "debootstrap",
        "dpkg-shlibdeps",
        "buildah",
        "podman",
        "runc",
        "nsenter",
    ];
    tools.extend(LAB_TOOLS);
    if !can_run(&tools, true) {
        return;
    }
    let deb = deb();
    let image = script(Command::new("deploy/container/build.sh").arg(&deb));
    let image = image.trim();
    assert!(image.starts_with("localhost/fastables:"), "{image}");
    let out = script(Command::new("deploy/container/test-lab.sh").arg(image));
    println!("{out}");
    assert!(out.contains("demo: all 4 steps ok"), "{out}");
}

#[test]
fn kubernetes_manifest_agrees_with_the_config_and_the_capabilities() {
    // Debian's python3, which has python3-yaml (a python3 of its own on
    // the PATH may not).
    if !Path::new("/usr/bin/python3").exists() {
        skip("/usr/bin/python3 not installed");
        return;
    }
    let yaml = Command::new("/usr/bin/python3")
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if !yaml && !skip("python3-yaml not installed") {
        return;
    }
    let out = script(
        Command::new("/usr/bin/python3")
            .arg("deploy/kubernetes/check.py")
            .arg(FASTABLES),
    );
    println!("{out}");
    assert!(
        out.contains("ok: fastables check of the ConfigMap"),
        "{out}"
    );
}

#[test]
fn man_pages_and_completions_cover_every_subcommand() {
    let dir = common::TmpDir::new("generate");
    for what in ["man", "completions"] {
        let out = Command::new(FASTABLES)
            .args(["generate", what])
            .arg(dir.path(what))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
    }
    let help = Command::new(FASTABLES).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|s| *s != "help")
        .collect();
    assert!(subcommands.contains(&"run"), "{help}");
    let top = std::fs::read_to_string(dir.path("man").join("fastables.8")).unwrap();
    for sub in &subcommands {
        let page = dir.path("man").join(format!("fastables-{sub}.8"));
        assert!(page.is_file(), "no {}", page.display());
        assert!(
            top.contains(&format!("fastables\\-{sub}(8)")),
            "fastables.8 does not name {sub}"
        );
    }
    let pages = std::fs::read_dir(dir.path("man")).unwrap().count();
    assert_eq!(
        pages,
        subcommands.len() + 1,
        "one page per subcommand and fastables.8"
    );
    for file in ["fastables.bash", "_fastables", "fastables.fish"] {
        let text = std::fs::read_to_string(dir.path("completions").join(file)).unwrap();
        for sub in &subcommands {
            assert!(text.contains(sub), "{file} does not complete {sub}");
        }
        assert!(
            !text.contains("generate"),
            "{file} offers the hidden generate"
        );
    }
}
