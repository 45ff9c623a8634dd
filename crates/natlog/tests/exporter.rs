//! The exporter end to end over loopback: every event handed to the
//! workers' queues arrives, as IPFIX records at a UDP socket and as syslog
//! lines in a file, in order per worker; what does not fit a queue is
//! counted as dropped. `--ignored` measures the rate it sustains.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use fastables_config::{NatLogConfig, SyslogFormat, SyslogTarget};
use fastables_conntrack::{NatEvent, NatEventKind};
use fastables_natlog::ipfix::{event_of, Decoder};
use fastables_natlog::{syslog, NatLog};

fn session(i: u32) -> NatEvent {
    NatEvent {
        kind: if i % 2 == 0 {
            NatEventKind::SessionCreate
        } else {
            NatEventKind::SessionDelete
        },
        time_ns: 1_733_604_800_000_000_000 + u64::from(i) * 1_000_000,
        proto: 17,
        src: 0xac12_0000 + (i % 200),
        sport: (i % 60000) as u16,
        xsrc: 0xcb00_7105,
        xsport: (i % 50000) as u16 + 1024,
        dst: 0x0808_0808,
        dport: 53,
        xdst: 0x0808_0808,
        xdport: 53,
        ..NatEvent::default()
    }
}

/// A collector on loopback and a temporary log file.
fn setup(queue: usize) -> (UdpSocket, std::path::PathBuf, NatLogConfig) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // A collector keeps up with bursts by its buffer (nfcapd's -B): 4 MiB,
    // `net.core.rmem_max` here.
    let _ = nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
    let dir = std::env::temp_dir().join(format!("natlog-test-{}-{queue}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("nat.log");
    let _ = std::fs::remove_file(&file);
    let cfg = NatLogConfig {
        ipfix: Some(rx.local_addr().unwrap()),
        syslog: Some(SyslogTarget::File(file.clone())),
        syslog_format: SyslogFormat::Rfc5424,
        queue,
        ..NatLogConfig::default()
    };
    (rx, file, cfg)
}

fn collect(rx: &UdpSocket, want: usize) -> Vec<NatEvent> {
    let mut dec = Decoder::default();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < want && Instant::now() < deadline {
        let Ok(n) = rx.recv(&mut buf) else { continue };
        let d = dec.message(&buf[..n]).expect("a valid IPFIX message");
        got.extend(d.records.iter().filter_map(|r| event_of(&r.1)));
    }
    got
}

#[test]
fn every_event_arrives_as_ipfix_and_as_a_syslog_line() {
    let (rx, file, cfg) = setup(4096);
    let log = NatLog::start(&cfg, 2, 0).unwrap();
    let (a, b) = (log.sink(0), log.sink(1));
    let n = 3000u32;
    for i in 0..n {
        let s = if i % 2 == 0 { &a } else { &b };
        assert!(s.push(&session(i)));
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let got = collect(&rx, n as usize);
    let c = log.stop();
    assert_eq!(got.len(), n as usize);
    assert_eq!((c.events, c.dropped, c.send_errors), (u64::from(n), 0, 0));
    assert_eq!(c.ipfix_records, u64::from(n));
    assert_eq!(c.syslog_lines, u64::from(n));
    // Per worker, in order; IPFIX keeps milliseconds.
    let mut want: Vec<NatEvent> = (0..n).map(session).collect();
    let mut have = got.clone();
    want.sort_by_key(|e| e.time_ns);
    have.sort_by_key(|e| e.time_ns);
    assert_eq!(have, want);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<NatEvent> = text.lines().filter_map(syslog::parse).collect();
    assert_eq!(lines.len(), n as usize);
    let mut lines_sorted = lines.clone();
    lines_sorted.sort_by_key(|e| e.time_ns);
    assert_eq!(lines_sorted, want);
}

#[test]
fn a_full_queue_counts_what_it_drops() {
    let (_rx, _file, mut cfg) = setup(1024);
    cfg.ipfix = None;
    cfg.syslog = Some(SyslogTarget::File("/dev/null".into()));
    let log = NatLog::start(&cfg, 1, 0).unwrap();
    let s = log.sink(0);
    let mut refused = 0;
    for i in 0..200_000 {
        if !s.push(&session(i)) {
            refused += 1;
        }
    }
    let c = log.stop();
    assert_eq!(c.dropped, refused);
    assert_eq!(c.events + c.dropped, 200_000);
    assert_eq!(c.syslog_lines, c.events);
}

/// The rates the exporter sustains without loss (IPFIX to a collector on
/// loopback, and a syslog file too): events paced at each rate for two
/// seconds; a rate is lossless when nothing is dropped and the collector
/// got every record. `cargo test -p fastables-natlog --release --test
/// exporter -- --ignored --nocapture`.
#[test]
#[ignore]
fn sustained_rate() {
    for (name, syslog) in [("ipfix", false), ("ipfix+syslog", true)] {
        for rate in [100_000u32, 250_000, 500_000, 1_000_000] {
            let (rx, _file, mut cfg) = setup(65536);
            if !syslog {
                cfg.syslog = None;
            }
            let log = NatLog::start(&cfg, 1, 0).unwrap();
            let s = log.sink(0);
            // The collector counts the records of each message (the
            // session template's 38 bytes each after 20 of headers).
            let reader = std::thread::spawn(move || {
                let mut n = 0usize;
                let mut buf = [0u8; 2048];
                while let Ok(k) = rx.recv(&mut buf) {
                    // Not the templates' message (set id 2).
                    if buf[16..18] != [0, 2] {
                        n += k.saturating_sub(20) / 38;
                    }
                }
                n
            });
            let total = rate * 2;
            let t0 = Instant::now();
            for i in 0..total {
                // Paced per millisecond.
                if i % (rate / 1000) == 0 {
                    let due = Duration::from_secs_f64(f64::from(i) / f64::from(rate));
                    if let Some(w) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(w);
                    }
                }
                s.push(&session(i));
            }
            let c = log.stop();
            let received = reader.join().unwrap();
            println!(
                "{name} at {rate}/s: handed {} dropped {} sent {} in {} messages, collector got {}{}",
                c.events,
                c.dropped,
                c.ipfix_records,
                c.ipfix_messages,
                received,
                if c.dropped == 0 && received as u64 == u64::from(total) {
                    " (lossless)"
                } else {
                    ""
                }
            );
        }
    }
}
