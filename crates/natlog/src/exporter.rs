//! The exporter: one thread that takes the workers' NAT events from their
//! queues and sends them, IPFIX messages to the collector and syslog lines
//! to their target.
//!
//! A worker moves its table's events into its own bounded lock-free queue
//! ([`Sink::drain`], between two batches: no allocation, no system call);
//! what does not fit is counted as dropped, as is what the table could not
//! keep. The exporter wakes every millisecond, empties the queues, packs
//! the events into IPFIX messages of up to 1400 bytes (so that a burst
//! costs one `send` per few dozen events) and writes one syslog line each.
//! Templates go first and again every `template_refresh` seconds.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use fastables_config::{NatLogConfig, SyslogTarget};
use fastables_conntrack::{NatEvent, Table};

use crate::ipfix::Encoder;
use crate::syslog::Header;

/// The exporter's counters (all since start).
#[derive(Debug, Default)]
pub struct Counters {
    /// Events the workers handed over.
    pub events: AtomicU64,
    /// Events lost before the exporter: a worker's queue or its table's
    /// log was full.
    pub dropped: AtomicU64,
    pub ipfix_messages: AtomicU64,
    pub ipfix_records: AtomicU64,
    pub syslog_lines: AtomicU64,
    /// Messages or lines the system refused to send (the events are lost).
    pub send_errors: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub events: u64,
    pub dropped: u64,
    pub ipfix_messages: u64,
    pub ipfix_records: u64,
    pub syslog_lines: u64,
    pub send_errors: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Snapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            events: l(&self.events),
            dropped: l(&self.dropped),
            ipfix_messages: l(&self.ipfix_messages),
            ipfix_records: l(&self.ipfix_records),
            syslog_lines: l(&self.syslog_lines),
            send_errors: l(&self.send_errors),
        }
    }
}

/// A worker's end: its queue to the exporter.
#[derive(Clone)]
pub struct Sink {
    q: Arc<ArrayQueue<NatEvent>>,
    counters: Arc<Counters>,
}

impl Sink {
    /// Moves the events `t` recorded into the queue; what does not fit,
    /// and what the table could not keep, is counted as dropped. No
    /// allocation, no system call.
    pub fn drain(&self, t: &mut Table) {
        if t.nat_events_pending() == 0 && t.nat_events_lost() == 0 {
            return;
        }
        let (q, mut handed, mut dropped) = (&self.q, 0u64, 0u64);
        let lost = t.drain_nat_events(|e| match q.push(*e) {
            Ok(()) => handed += 1,
            Err(_) => dropped += 1,
        });
        self.counters.events.fetch_add(handed, Ordering::Relaxed);
        self.add_dropped(dropped + lost);
    }

    /// [`Sink::drain`] that waits for room instead of dropping (offline,
    /// where nothing is lost to time: `sim`).
    pub fn drain_wait(&self, t: &mut Table) {
        let (q, mut handed) = (&self.q, 0u64);
        let lost = t.drain_nat_events(|e| {
            let mut e = *e;
            while let Err(back) = q.push(e) {
                e = back;
                std::thread::yield_now();
            }
            handed += 1;
        });
        self.counters.events.fetch_add(handed, Ordering::Relaxed);
        self.add_dropped(lost);
    }

    /// Hands one event over (for callers without a table).
    pub fn push(&self, e: &NatEvent) -> bool {
        let ok = self.q.push(*e).is_ok();
        if ok {
            self.counters.events.fetch_add(1, Ordering::Relaxed);
        } else {
            self.add_dropped(1);
        }
        ok
    }

    fn add_dropped(&self, n: u64) {
        if n > 0 {
            self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Where syslog lines are written.
enum Lines {
    Unix(UnixDatagram, std::path::PathBuf),
    Udp(Peer),
    File(BufWriter<File>),
}

/// A UDP destination. The socket is not connected: a collector that is
/// down (an ICMP port unreachable) must not fail the next sends.
struct Peer {
    sock: UdpSocket,
    to: SocketAddr,
}

impl Peer {
    fn new(to: SocketAddr) -> io::Result<Peer> {
        let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        Ok(Peer { sock, to })
    }

    fn send(&self, b: &[u8]) -> io::Result<()> {
        self.sock.send_to(b, self.to).map(drop)
    }
}

impl Lines {
    fn open(t: &SyslogTarget) -> io::Result<Lines> {
        Ok(match t {
            SyslogTarget::Unix(p) => Lines::Unix(UnixDatagram::unbound()?, p.clone()),
            SyslogTarget::Udp(a) => Lines::Udp(Peer::new(*a)?),
            SyslogTarget::File(p) => Lines::File(BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
        })
    }

    fn send(&mut self, line: &str) -> io::Result<()> {
        match self {
            Lines::Unix(s, p) => s.send_to(line.as_bytes(), &*p).map(drop),
            Lines::Udp(p) => p.send(line.as_bytes()),
            Lines::File(f) => {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Lines::File(f) => f.flush(),
            _ => Ok(()),
        }
    }
}

/// The running exporter.
pub struct NatLog {
    queues: Vec<Arc<ArrayQueue<NatEvent>>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NatLog {
    /// Opens the sockets (or file) of `cfg` and starts the exporter for
    /// `workers` queues. Events carry their worker's `now`;
    /// `clock_offset_ns` added to it gives the time since the epoch (0 when
    /// `now` is already that, as in `sim`).
    pub fn start(cfg: &NatLogConfig, workers: usize, clock_offset_ns: i64) -> io::Result<NatLog> {
        let ipfix = cfg.ipfix.map(Peer::new).transpose()?;
        let lines = cfg.syslog.as_ref().map(Lines::open).transpose()?;
        let queues: Vec<_> = (0..workers.max(1))
            .map(|_| Arc::new(ArrayQueue::new(cfg.queue)))
            .collect();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut ex = Exporter {
            queues: queues.clone(),
            counters: Arc::clone(&counters),
            ipfix,
            enc: Encoder::new(cfg.observation_domain),
            refresh: Duration::from_secs(cfg.template_refresh),
            templates_at: None,
            lines,
            header: Header::local(cfg.syslog_format, cfg.facility),
            offset: clock_offset_ns,
        };
        let st = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("fastables-natlog".into())
            .spawn(move || ex.run(&st))?;
        Ok(NatLog {
            queues,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// Worker `k`'s end.
    pub fn sink(&self, k: usize) -> Sink {
        let q = self.queues.get(k).or(self.queues.first());
        Sink {
            q: Arc::clone(q.expect("at least one queue")),
            counters: Arc::clone(&self.counters),
        }
    }

    /// The counters, shared (for the metrics).
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Sends what the queues still hold, then stops; the final counters.
    pub fn stop(mut self) -> Snapshot {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.counters.snapshot()
    }
}

impl Drop for NatLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The exporter thread's state.
struct Exporter {
    queues: Vec<Arc<ArrayQueue<NatEvent>>>,
    counters: Arc<Counters>,
    ipfix: Option<Peer>,
    enc: Encoder,
    refresh: Duration,
    templates_at: Option<Instant>,
    lines: Option<Lines>,
    header: Header,
    offset: i64,
}

impl Exporter {
    fn run(&mut self, stop: &AtomicBool) {
        loop {
            // Read before emptying the queues: what came before the stop
            // is sent.
            let stopping = stop.load(Ordering::Relaxed);
            self.templates();
            let mut n = 0;
            for i in 0..self.queues.len() {
                while let Some(e) = self.queues[i].pop() {
                    self.export(&e);
                    n += 1;
                }
            }
            self.flush();
            if stopping {
                return;
            }
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// The templates, at start and every `refresh`.
    fn templates(&mut self) {
        let Some(s) = &self.ipfix else { return };
        if self
            .templates_at
            .is_some_and(|t| t.elapsed() < self.refresh)
        {
            return;
        }
        self.templates_at = Some(Instant::now());
        let m = self.enc.templates(export_secs());
        if s.send(&m).is_ok() {
            self.counters.ipfix_messages.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn export(&mut self, e: &NatEvent) {
        let t = (i128::from(e.time_ns) + i128::from(self.offset)).max(0) as u64;
        if let Some(s) = &self.ipfix {
            let c = &self.counters;
            self.enc.add(e, t, export_secs(), &mut |m| send(s, m, c));
        }
        if let Some(l) = &mut self.lines {
            let line = self.header.line(e, t);
            match l.send(&line) {
                Ok(()) => self.counters.syslog_lines.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.counters.send_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    fn flush(&mut self) {
        if let Some(s) = &self.ipfix {
            let c = &self.counters;
            self.enc.flush(&mut |m| send(s, m, c));
        }
        if let Some(l) = &mut self.lines {
            if l.flush().is_err() {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One IPFIX message to the collector, counted.
fn send(s: &Peer, m: &[u8], c: &Counters) {
    // The records are the message's data records: its length less the
    // header and sets is not needed, the encoder's count is.
    match s.send(m) {
        Ok(_) => {
            c.ipfix_messages.fetch_add(1, Ordering::Relaxed);
            c.ipfix_records.fetch_add(records_in(m), Ordering::Relaxed);
        }
        Err(_) => {
            c.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Data records in a message the encoder built (its sets' lengths over
/// their templates' record sizes).
fn records_in(m: &[u8]) -> u64 {
    let mut at = 16;
    let mut n = 0;
    while let Some(h) = m.get(at..at + 4) {
        let (id, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            usize::from(u16::from_be_bytes([h[2], h[3]])),
        );
        if len < 4 {
            break;
        }
        if let Some((_, f)) = crate::ipfix::TEMPLATES.iter().find(|t| t.0 == id) {
            let rec: usize = f.iter().map(|x| usize::from(x.1)).sum();
            n += ((len - 4) / rec.max(1)) as u64;
        }
        at += len;
    }
    n
}

/// The export time of a message: now, in seconds since the epoch.
fn export_secs() -> u32 {
    (crate::time::now_ns() / 1_000_000_000) as u32
}
