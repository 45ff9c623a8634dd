//! All or nothing on a running instance (its own lab, namespaces
//! `fl<pid>an-*` and `fl<pid>ah-*`): a restore of 100 MB is refused whole
//! and its client told so (through `fastables restore`, from a file and
//! from standard input, and as a raw request that skips the client's own
//! check); a rules file that holds no table is refused by SIGHUP, by
//! `fastables reload` and by `restore`, and the running rules stay; an
//! empty table block empties that table on purpose.
//!
//! Needs root, python3 and ping (skipped otherwise, a failure under CI).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};
use std::time::Duration;

use common::describe;
use common::lab::{Lab, FASTABLES};

/// The running ruleset, without the `#` lines (their dates differ).
fn saved(lab: &Lab) -> String {
    let out = lab.control("save", &[]);
    assert!(out.status.success(), "save: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A valid ruleset of about `size` bytes: a nat table that differs from
/// the running one, then a filter table of many rules; applying a part of
/// it would show in either.
fn big_rules(size: usize) -> Vec<u8> {
    let mut v = b"*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        :POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o eth0 -j MASQUERADE --random\nCOMMIT\n\
        *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        .to_vec();
    let rule = b"-A FORWARD -s 192.0.2.7/32 -p tcp -m tcp --dport 5555 -j DROP\n";
    while v.len() + rule.len() < size {
        v.extend_from_slice(rule);
    }
    v.extend_from_slice(b"COMMIT\n");
    v
}

/// The answer to a raw request on the control socket (the client's own
/// size check skipped).
fn raw_request(lab: &Lab, head: &[u8], body: &[u8]) -> String {
    let mut s = UnixStream::connect(lab.dir.join("fastables.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(head).and_then(|()| s.write_all(body));
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_restore_of_100_mb_is_refused_whole_and_its_client_told() {
    let Some(lab) = Lab::start("an") else {
        return;
    };
    let before = saved(&lab);
    let file = lab.dir.join("big.v4");
    let rules = big_rules(100_000_000);
    std::fs::write(&file, &rules).unwrap();
    let refused = "one restore takes at most 64 MiB of rules";

    let out = lab.control("restore", &[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let e = stderr(&out);
    assert!(
        e.contains(refused) && e.contains("95.4 MiB") && e.contains("nothing was applied"),
        "{e}"
    );
    // From standard input: the size is not known before.
    let stdin = std::fs::File::open(&file).unwrap();
    let out = Command::new(FASTABLES)
        .args(["restore", "--socket"])
        .arg(lab.dir.join("fastables.sock"))
        .stdin(stdin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains(refused), "{}", describe(&out));
    // Straight to the socket: the instance refuses it whole and says so.
    let answer = raw_request(&lab, b"restore\x1f--name\x1fbig.v4\n", &rules);
    assert!(
        answer.starts_with("1 0 ") && answer.contains("refused whole, nothing was applied"),
        "{answer:?}{}",
        lab.logs()
    );
    assert_eq!(saved(&lab), before, "a refused restore changed the rules");

    // Within the bound, the same kind of file is applied whole.
    let small = big_rules(20_000);
    let file = lab.dir.join("small.v4");
    std::fs::write(&file, &small).unwrap();
    let out = lab.control("restore", &[file.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", describe(&out), lab.logs());
    let after = saved(&lab);
    assert!(
        after.contains("-A POSTROUTING -o eth0 -j MASQUERADE --random")
            && after.matches("--dport 5555 -j DROP").count() > 250,
        "{after}"
    );
}

#[test]
fn a_rules_file_without_a_table_is_refused() {
    let Some(lab) = Lab::start("ah") else {
        return;
    };
    let pid = std::fs::read_to_string(lab.dir.join("fastables.pid"))
        .unwrap()
        .trim()
        .to_string();
    let before = saved(&lab);
    let rules = lab.dir.join("rules.v4");
    let seed = std::fs::read_to_string(&rules).unwrap();
    let hint = "to empty a table on purpose, give its block with no rules";

    // SIGHUP with an empty file (a truncated write by a config tool).
    std::fs::write(&rules, "").unwrap();
    let st = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(500));
    let log = std::fs::read_to_string(lab.dir.join("fastables.log")).unwrap();
    assert!(
        log.contains("holds no table") && log.contains("reload: the running ruleset is unchanged"),
        "{log}"
    );
    assert_eq!(saved(&lab), before, "an empty file changed the rules");
    // The same through `fastables reload`, which says so and fails.
    let out = lab.control("reload", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr(&out).contains(hint), "{}", describe(&out));
    // And `restore` without -n (a file of comments holds no table either).
    let empty = lab.dir.join("empty.v4");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let out = lab.control("restore", &[empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("holds no table") && stderr(&out).contains("nothing was applied"),
        "{}",
        describe(&out)
    );
    assert_eq!(saved(&lab), before);
    // Traffic still goes through the MASQUERADE of the running rules.
    let ping = lab.exec("ctr", 10, &["ping", "-n", "-c", "1", "-W", "2", "8.8.8.8"]);
    assert!(ping.status.success(), "{}{}", describe(&ping), lab.logs());

    // Emptying the filter table on purpose: its block with no rules.
    let filter_at = seed.find("*filter").unwrap();
    std::fs::write(
        &rules,
        format!(
            "{}*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
            &seed[..filter_at]
        ),
    )
    .unwrap();
    let out = lab.control("reload", &[]);
    assert!(out.status.success(), "{}{}", describe(&out), lab.logs());
    let after = saved(&lab);
    assert!(
        after.contains("MASQUERADE --to-ports 55666-55680"),
        "{after}"
    );
    let filter = after[after.find("*filter").unwrap()..]
        .split("COMMIT")
        .next()
        .unwrap();
    assert!(
        !filter.contains("\n-A "),
        "the filter table is empty: {after}"
    );
}
