//! `fastables run`: the live data plane on AF_XDP.
//!
//! One worker thread per core of `[workers] cores`, pinned, each serving RX
//! queue `k` of every interface through its own AF_XDP port (one UMEM shared
//! by its sockets) and owning its conntrack shard; frames a device puts on
//! the wrong worker's queue are handed to their owner ([`steer`]). The main
//! thread is the control and stats thread: it answers the control socket by
//! running jobs on every worker between two of its batches and merging the
//! answers, publishes the metrics, and handles signals. SIGTERM or SIGINT
//! stop it cleanly (sockets closed, XDP programs detached, counters
//! printed); SIGHUP reloads the rules file: the new ruleset is parsed,
//! validated and compiled first, and a bad file changes nothing;
//! connections keep their NAT bindings.
//!
//! [`steer`]: fastables_dataplane::steer

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::Args;
use fastables_dataplane::config::{Config, Queues};
use fastables_dataplane::drop::DropReason;
use fastables_dataplane::offline::{IfaceTotals, Summary};
use fastables_dataplane::pipeline::TraceFilter;
use fastables_dataplane::pipeline::{Pipeline, PipelineOptions};
use fastables_dataplane::port::PacketIo;
use fastables_dataplane::rss::{Rss, SYMMETRIC_KEY};
use fastables_dataplane::steer::{Mesh, SteerStats, Steered, HANDOFF_SLOTS};
use fastables_dataplane::worker::Worker;
use fastables_packet::MacAddr;
use fastables_rules::ctx::IfIndex;
use fastables_stats::Latency;
use fastables_xdp::{Options, PortSpec, XdpPort};

use fastables_rules::compile::CompiledRuleset;
use fastables_rules::model::{Ruleset, Table};
use fastables_rules::print;

use crate::control;
use crate::rulescmd::{compile, load_config_and_rules, load_rules};
use crate::CliError;

/// `fastables run` arguments.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// Descriptors per AF_XDP ring (RX, TX, fill, completion); a power of two.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub ring: u32,
    /// Seed of the conntrack hash keys and of NAT's random port choices
    /// (default: random at each start, so that an attacker cannot aim
    /// collisions).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

fn pin(k: usize, core: u32) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == core as usize) {
        Some(id) if core_affinity::set_for_current(id) => {}
        _ => eprintln!("warning: cannot pin worker {k} to core {core}; it runs unpinned"),
    }
}

/// A worker thread's state. Jobs from the control thread run on it between
/// two batches.
struct Ctx {
    index: usize,
    worker: Worker,
    port: Steered<XdpPort>,
    batch_lat: Latency,
    pkt_lat: Latency,
}

type Job = Box<dyn FnOnce(&mut Ctx) + Send>;

/// What a worker hands over when it starts: its interfaces' lines, or why
/// it could not start.
type Ready = Result<Vec<String>, CliError>;

/// The running workers, as the control thread sees them.
struct Workers {
    jobs: Vec<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<Sample>>,
}

impl Workers {
    /// Runs `f` on every worker (between two of its batches) and returns
    /// the answers in worker order; a worker that is gone gives none.
    fn map<R: Send + 'static>(&self, f: impl Fn(&mut Ctx) -> R + Send + Sync + 'static) -> Vec<R> {
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        for (i, j) in self.jobs.iter().enumerate() {
            let (f, tx) = (Arc::clone(&f), tx.clone());
            let _ = j.send(Box::new(move |c: &mut Ctx| {
                let _ = tx.send((i, f(c)));
            }));
        }
        drop(tx);
        let mut out: Vec<Option<R>> = (0..self.jobs.len()).map(|_| None).collect();
        while let Ok((i, r)) = rx.recv_timeout(Duration::from_secs(5)) {
            out[i] = Some(r);
        }
        out.into_iter().flatten().collect()
    }

    /// Stops every worker (the caller set the stop flag) and collects their
    /// last samples.
    fn join(self) -> Vec<Sample> {
        drop(self.jobs);
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .collect()
    }
}

/// One worker's counters (and, for the metrics, the latency recorded since
/// the last sample).
#[derive(Clone, Default)]
struct Sample {
    interfaces: Vec<fastables_stats::IfaceSample>,
    drops: Vec<(DropReason, u64)>,
    ct: Option<(u64, u64, fastables_conntrack::Stats)>,
    held: u64,
    steer: SteerStats,
    arp: fastables_dataplane::neigh::ArpCounters,
    /// Whether the flow cache can forward with this ruleset, and the frames
    /// it forwarded.
    flow_cache: (bool, u64),
    batch_lat: Latency,
    pkt_lat: Latency,
}

impl Sample {
    /// `take_latency`: move the histograms out (the metrics' interval).
    fn of(c: &mut Ctx, cfg: &Config, take_latency: bool) -> Sample {
        let p = c.worker.pipeline();
        let (batch_lat, pkt_lat) = if take_latency {
            (
                std::mem::replace(&mut c.batch_lat, Latency::new()),
                std::mem::replace(&mut c.pkt_lat, Latency::new()),
            )
        } else {
            (Latency::new(), Latency::new())
        };
        Sample {
            interfaces: iface_samples(c.port.inner(), cfg),
            drops: p.drops().snapshot().to_vec(),
            ct: p
                .conntrack()
                .map(|t| (t.len() as u64, t.max() as u64, t.stats())),
            held: (p.held() + p.reassembling()) as u64,
            steer: c.port.stats(),
            arp: p.arp_counters(),
            flow_cache: (p.flow_cache_usable(), p.flow_cache_hits()),
            batch_lat,
            pkt_lat,
        }
    }

    /// The instance's totals: counters summed over the workers.
    fn merge(all: &[Sample]) -> Sample {
        let mut m = all.first().cloned().unwrap_or_default();
        for s in all.iter().skip(1) {
            for (a, b) in m.interfaces.iter_mut().zip(&s.interfaces) {
                a.add(b);
            }
            for ((_, a), (_, b)) in m.drops.iter_mut().zip(&s.drops) {
                *a += b;
            }
            m.ct = match (m.ct, s.ct) {
                (Some((n, max, a)), Some((n2, max2, b))) => Some((n + n2, max + max2, a.sum(&b))),
                (a, b) => a.or(b),
            };
            m.held += s.held;
            m.steer.add(&s.steer);
            m.arp.add(&s.arp);
            m.flow_cache.1 += s.flow_cache.1;
            m.batch_lat.add(&s.batch_lat);
            m.pkt_lat.add(&s.pkt_lat);
        }
        m
    }
}

/// `fastables run -c CONFIG`.
pub fn run(a: &RunArgs) -> Result<(), CliError> {
    if !is_root() {
        return Err(CliError::Start(
            "fastables run needs root (AF_XDP sockets and XDP programs)".to_string(),
        ));
    }
    let (mut cfg, rs) = load_config_and_rules(&a.config)?;
    complete_config(&mut cfg)?;
    let rules_file = cfg.rules.clone();
    let rules_name = rules_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let names: Vec<String> = cfg.iface_names().iter().map(|s| s.to_string()).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let compiled = Arc::new(compile(&rs, &name_refs, &rules_name)?);
    let n = cfg.workers.cores.len().max(1);
    for i in &cfg.interfaces {
        if let Queues::Count(q) = i.queues {
            if q as usize != n {
                return Err(CliError::Start(format!(
                    "{}: interface `{}` has queues = {q} but [workers] cores lists {n} cores: \
                     each worker serves one queue of every interface",
                    cfg.path.display(),
                    i.name
                )));
            }
        }
    }
    mount_bpffs();
    let seed = a.seed.unwrap_or_else(random_seed);
    let cfg = Arc::new(cfg);
    let rss = Arc::new(if n > 1 {
        rss_model(&cfg, n)
    } else {
        Rss::new(SYMMETRIC_KEY, 1)
    });
    let mesh = (n > 1).then(|| Mesh::new(n, cfg.interfaces.len(), HANDOFF_SLOTS));
    let stop = Arc::new(AtomicBool::new(false));

    // The workers, one after the other (libxdp attaches its program to an
    // interface with its first socket).
    let mut workers = Workers {
        jobs: Vec::with_capacity(n),
        threads: Vec::with_capacity(n),
    };
    let mut started_err = None;
    for k in 0..n {
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let w = WorkerSetup {
            k,
            n,
            core: cfg.workers.cores.get(k).copied(),
            cfg: Arc::clone(&cfg),
            compiled: Arc::clone(&compiled),
            opts: PipelineOptions {
                conntrack_seed: seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ..PipelineOptions::default()
            },
            ring: a.ring,
            rss: Arc::clone(&rss),
            mesh: mesh.clone(),
            stop: Arc::clone(&stop),
        };
        let t = std::thread::Builder::new()
            .name(format!("fastables-worker-{k}"))
            .spawn(move || worker_main(w, &ready_tx, &job_rx))
            .map_err(|e| CliError::Start(format!("cannot start worker {k}: {e}")))?;
        workers.jobs.push(job_tx);
        workers.threads.push(t);
        match ready_rx.recv() {
            Ok(Ok(lines)) => {
                for l in lines {
                    println!("{l}");
                }
            }
            Ok(Err(e)) => {
                started_err = Some(e);
                break;
            }
            Err(_) => {
                started_err = Some(CliError::Start(format!("worker {k} failed to start")));
                break;
            }
        }
    }
    if let Some(e) = started_err {
        stop.store(true, Ordering::Relaxed);
        workers.join();
        return Err(e);
    }

    let hup = Arc::new(AtomicBool::new(false));
    crate::on_signals(&crate::STOP_SIGNALS, &stop)?;
    crate::on_signals(&[signal_hook::consts::SIGHUP], &hup)?;

    let server = control::serve(&cfg.control.socket)?;
    let mut live = Live {
        rs,
        compiled,
        names,
        subs: Vec::new(),
        latency: vec![(Latency::new(), Latency::new()); n],
        trace_sub: None,
        cfg: Arc::clone(&cfg),
        last_sample: None,
        rates: Vec::new(),
    };
    println!("control socket: {}", cfg.control.socket.display());
    println!("running");
    let _ = std::io::stdout().flush();

    // Observability: the workers' histograms (recorded without allocating)
    // are taken and merged into the published snapshot once per interval.
    let started = Instant::now();
    let shared = Arc::new(std::sync::Mutex::new(fastables_stats::Snapshot::default()));
    if let Some(addr) = &cfg.stats.listen {
        let l = std::net::TcpListener::bind(addr).map_err(|e| {
            CliError::Start(format!("[stats] listen = \"{addr}\": cannot listen: {e}"))
        })?;
        fastables_stats::serve(l, Arc::clone(&shared))
            .map_err(|e| CliError::Start(format!("cannot start the stats thread: {e}")))?;
        println!("metrics: http://{addr}/metrics");
    }
    let interval = Duration::from_millis(cfg.stats.interval_ms.max(10));
    let mut last_publish = Instant::now();

    while !stop.load(Ordering::Relaxed) {
        // Control requests; between them, a tick of 2 ms.
        if let Ok(req) = server.requests.recv_timeout(Duration::from_millis(2)) {
            let r = answer(&req, &mut live, &workers);
            let _ = req.reply.send(r);
        }
        if hup.swap(false, Ordering::Relaxed) {
            reload(&workers, &mut live, rules_file.as_ref());
        }
        if !live.subs.is_empty() {
            publish_events(&mut live, &workers);
        }
        if live.trace_sub.is_some() {
            publish_trace(&mut live, &workers);
        }
        if last_publish.elapsed() >= interval {
            last_publish = Instant::now();
            publish(&shared, &workers, &mut live, started);
        }
    }
    drop(server);
    let samples = workers.join();
    let summary = summary(&Sample::merge(&samples));
    eprintln!("stopped");
    eprint!("{summary}");
    Ok(())
}

/// Several workers: each device's RSS is set to the model's (symmetric
/// Toeplitz key, the queues round-robin, `ETHTOOL_SRSSH`) and read back;
/// the model then uses the devices' table. A device that cannot be set
/// (veth) is said so: its frames reach their worker by steering.
fn rss_model(cfg: &Config, n: usize) -> Rss {
    let mut tables: Vec<Vec<u16>> = Vec::new();
    for i in &cfg.interfaces {
        let got = fastables_xdp::set_device_rss(&i.name, &SYMMETRIC_KEY, n as u32)
            .and_then(|()| fastables_xdp::device_rss(&i.name));
        match got {
            Ok(c) if c.key == SYMMETRIC_KEY && c.indir.iter().all(|q| (*q as usize) < n) => {
                println!(
                    "{}: RSS set: symmetric Toeplitz key, {n} queues over {} entries",
                    i.name,
                    c.indir.len()
                );
                tables.push(c.indir.iter().map(|q| *q as u16).collect());
            }
            Ok(_) => println!(
                "{}: RSS reads back otherwise than set: frames on another queue than their owner's are steered to it",
                i.name
            ),
            Err(e) => println!(
                "{}: RSS not programmable ({e}): frames on another queue than their owner's are steered to it",
                i.name
            ),
        }
    }
    match tables.first() {
        Some(t) if tables.iter().all(|x| x == t) => Rss::with_table(SYMMETRIC_KEY, t.clone()),
        _ => Rss::new(SYMMETRIC_KEY, n as u16),
    }
}

/// What a worker thread needs to start.
struct WorkerSetup {
    k: usize,
    n: usize,
    core: Option<u32>,
    cfg: Arc<Config>,
    compiled: Arc<CompiledRuleset>,
    opts: PipelineOptions,
    ring: u32,
    rss: Arc<Rss>,
    mesh: Option<Arc<Mesh>>,
    stop: Arc<AtomicBool>,
}

/// A worker thread: its pipeline and port (created here, where they live),
/// then the poll loop until the stop flag; returns its last counters.
fn worker_main(w: WorkerSetup, ready: &mpsc::Sender<Ready>, jobs: &mpsc::Receiver<Job>) -> Sample {
    if let Some(core) = w.core {
        pin(w.k, core);
    }
    let cfg = &*w.cfg;
    let mut pipeline = match Pipeline::with_options(cfg, Arc::clone(&w.compiled), w.opts) {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(CliError::Pipeline {
                file: cfg.path.display().to_string(),
                source: e,
            }));
            return Sample::default();
        }
    };
    if w.n > 1 {
        pipeline.set_rss(Arc::clone(&w.rss), w.k as u16);
    }
    advise_huge_pages(&pipeline);
    let specs: Vec<PortSpec> = cfg
        .interfaces
        .iter()
        .map(|i| PortSpec {
            name: i.name.clone(),
            mode: i.xdp_mode,
            zero_copy: i.zero_copy,
            one_queue_ok: i.queues == Queues::Count(1),
        })
        .collect();
    let opts = Options {
        ring: w.ring,
        queue: w.k as u32,
        queues: w.n as u32,
    };
    let port = match XdpPort::open(&specs, opts) {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Sample::default();
        }
    };
    let lines = port.info().map(|i| i.to_string()).collect();
    let batch = cfg.workers.batch;
    let mut c = Ctx {
        index: w.k,
        worker: Worker::new(pipeline, batch),
        port: Steered::new(port, w.k as u16, w.rss, w.mesh, batch),
        batch_lat: Latency::new(),
        pkt_lat: Latency::new(),
    };
    if w.k == 0 {
        announce(c.port.inner_mut(), c.worker.pipeline());
    }
    let _ = ready.send(Ok(lines));

    let mut idle = 0u32;
    let mut last_service = Instant::now();
    let latency = cfg.stats.latency;
    while !w.stop.load(Ordering::Relaxed) {
        let t0 = latency.then(Instant::now);
        let n = c.worker.poll(&mut c.port);
        if n > 0 {
            if let Some(t0) = t0 {
                let ns = t0.elapsed().as_nanos() as u64;
                c.batch_lat.record(ns);
                c.pkt_lat.record(ns / n as u64);
            }
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            // Poll mode while there is traffic; an idle worker sleeps in
            // poll(2) so that an idle appliance does not burn its core.
            if idle > 256 {
                c.port.inner_mut().wait(5);
            }
        }
        while let Ok(job) = jobs.try_recv() {
            job(&mut c);
        }
        if last_service.elapsed() >= Duration::from_millis(2) {
            last_service = Instant::now();
            c.worker
                .pipeline_mut()
                .drain_logs(|l| eprintln!("log: {l}"));
        }
    }
    c.worker
        .pipeline_mut()
        .drain_logs(|l| eprintln!("log: {l}"));
    Sample::of(&mut c, cfg, true)
}

/// `conntrack -E`: the events the workers collected since last time, to
/// each listener whose filters they pass. A listener that is gone is
/// dropped; when none is left the workers stop collecting.
fn publish_events(live: &mut Live, workers: &Workers) {
    let events = workers.map(|c| {
        let mut v = Vec::new();
        c.worker.pipeline_mut().drain_ct_events(|kind, e, at| {
            v.push((
                *e,
                format!("{}\n", fastables_conntrack::format_event(kind, e, at)),
            ));
        });
        v
    });
    let subs = &mut live.subs;
    let mut gone = vec![false; subs.len()];
    for (e, line) in events.iter().flatten() {
        for (i, (tx, f)) in subs.iter().enumerate() {
            if !gone[i] && entry_matches(f, e) {
                match tx.try_send(line.clone()) {
                    Ok(()) | Err(mpsc::TrySendError::Full(_)) => {}
                    Err(mpsc::TrySendError::Disconnected(_)) => gone[i] = true,
                }
            }
        }
    }
    // A listener goes when its client does: its control thread stops
    // reading the channel at the first failed write, and the next send here
    // finds it disconnected.
    let mut i = 0;
    subs.retain(|_| {
        let keep = !gone[i];
        i += 1;
        keep
    });
    if subs.is_empty() {
        workers.map(|c| c.worker.pipeline_mut().set_ct_events(false));
    }
}

/// A gratuitous ARP request for every primary address of every interface
/// (as `arping -U`), so that neighbors that knew another MAC for our
/// addresses learn ours at start.
fn announce(port: &mut XdpPort, p: &Pipeline) {
    let mut bufs = Vec::with_capacity(64);
    for (i, dev) in p.interfaces().iter().enumerate() {
        let addrs: Vec<u32> = dev.primaries().map(|a| a.addr).collect();
        for addr in addrs {
            bufs.clear();
            port.alloc(&mut bufs, 1);
            let Some(&b) = bufs.first() else { return };
            let at = b as usize;
            let frame = port
                .memory()
                .get_mut(at..at + fastables_dataplane::port::FRAME_SIZE);
            let n =
                frame.and_then(|f| fastables_dataplane::neigh::arp_request(f, dev.mac, addr, addr));
            match n {
                Some(n) => {
                    let f = fastables_dataplane::port::Frame {
                        addr: b,
                        len: n as u16,
                        port: i as IfIndex,
                    };
                    if port.tx_burst(i as IfIndex, &[f]) == 0 {
                        port.free(&[b]);
                    }
                }
                None => port.free(&[b]),
            }
        }
    }
}

/// Takes this interval's histograms and counters from the workers and
/// refreshes the published snapshot (once per `[stats] interval_ms`, off
/// the data path).
fn publish(
    shared: &std::sync::Mutex<fastables_stats::Snapshot>,
    workers: &Workers,
    live: &mut Live,
    started: Instant,
) {
    let cfg = Arc::clone(&live.cfg);
    let samples = workers.map(move |c| Sample::of(c, &cfg, true));
    for (i, s) in samples.iter().enumerate() {
        if let Some((b, p)) = live.latency.get_mut(i) {
            b.add(&s.batch_lat);
            p.add(&s.pkt_lat);
        }
    }
    let m = Sample::merge(&samples);
    // Rates over the interval, per interface.
    let now = Instant::now();
    if let Some((then, prev)) = &live.last_sample {
        let dt = now.duration_since(*then).as_secs_f64();
        if dt > 0.0 {
            live.rates = m
                .interfaces
                .iter()
                .zip(prev)
                .map(|(a, b)| IfaceRate {
                    name: a.name.clone(),
                    rx_pps: a.rx_packets.saturating_sub(b.rx_packets) as f64 / dt,
                    rx_bps: a.rx_bytes.saturating_sub(b.rx_bytes) as f64 * 8.0 / dt,
                    tx_pps: a.tx_packets.saturating_sub(b.tx_packets) as f64 / dt,
                    tx_bps: a.tx_bytes.saturating_sub(b.tx_bytes) as f64 * 8.0 / dt,
                    secs: dt,
                })
                .collect();
        }
    }
    live.last_sample = Some((now, m.interfaces.clone()));
    // Per interface and queue (one queue per worker).
    let interfaces = samples
        .iter()
        .enumerate()
        .flat_map(|(q, s)| {
            s.interfaces
                .iter()
                .map(move |i| fastables_stats::IfaceSample {
                    queue: Some(q as u32),
                    ..i.clone()
                })
        })
        .collect();
    let (ct_entries, ct_max, st) = m.ct.unwrap_or_default();
    let ct_counters = vec![
        ("found", st.found),
        ("invalid", st.invalid),
        ("insert", st.insert),
        ("insert_failed", st.insert_failed),
        ("drop", st.drop),
        ("early_drop", st.early_drop),
        ("error", st.error),
        ("expired", st.expired),
        ("chaintoolong", st.chaintoolong),
    ];
    let Ok(mut s) = shared.lock() else { return };
    s.interfaces = interfaces;
    s.drops = m.drops.iter().map(|(r, n)| (r.name(), *n)).collect();
    s.ct_entries = ct_entries;
    s.ct_max = ct_max;
    s.ct_counters = ct_counters;
    s.held = m.held;
    s.counters = vec![
        (
            "fastables_arp_received_total",
            "ARP packets received.",
            m.arp.received,
        ),
        (
            "fastables_arp_replies_sent_total",
            "ARP replies sent for our addresses.",
            m.arp.replies_sent,
        ),
        (
            "fastables_arp_requests_sent_total",
            "ARP requests sent for next hops.",
            m.arp.requests_sent,
        ),
        (
            "fastables_neighbors_learned_total",
            "Neighbor entries that got a MAC address.",
            m.arp.learned,
        ),
        (
            "fastables_handoffs_total",
            "Frames handed to the worker that owns their connection.",
            m.steer.handed_out,
        ),
        (
            "fastables_handoffs_dropped_total",
            "Frames lost on the way to their owner (queue full).",
            m.steer.handoff_dropped,
        ),
        (
            "fastables_flow_cache_hits_total",
            "Frames forwarded by their connection's cached decision (no chain run).",
            m.flow_cache.1,
        ),
    ];
    s.batch_latency.add(&m.batch_lat);
    s.packet_latency.add(&m.pkt_lat);
    s.uptime_s = started.elapsed().as_secs_f64();
}

/// `fastables trace`: the finished records of every worker to the
/// listener; the trace stops when the listener goes or its count is
/// reached (the stream then closes).
fn publish_trace(live: &mut Live, workers: &Workers) {
    let Some((tx, left)) = live.trace_sub.as_mut() else {
        return;
    };
    let records = workers.map(|c| {
        let mut v = Vec::new();
        c.worker
            .pipeline_mut()
            .drain_trace(|r| v.push(r.to_string()));
        (v, c.worker.pipeline().tracing())
    });
    let mut gone = false;
    let mut tracing = false;
    for (lines, on) in records {
        tracing |= on;
        for l in lines {
            if gone || *left == Some(0) {
                break;
            }
            if matches!(tx.try_send(l), Err(mpsc::TrySendError::Disconnected(_))) {
                gone = true;
            }
            if let Some(n) = left.as_mut() {
                *n -= 1;
            }
        }
    }
    if gone || !tracing || *left == Some(0) {
        workers.map(|c| c.worker.pipeline_mut().set_trace(None));
        live.trace_sub = None;
    }
}

/// Sets a new ruleset on every worker.
fn set_ruleset(workers: &Workers, c: &Arc<CompiledRuleset>) {
    let c = Arc::clone(c);
    workers.map(move |x| {
        let p = x.worker.pipeline_mut();
        let had_ct = p.conntrack().is_some();
        p.set_ruleset(Arc::clone(&c));
        if !had_ct {
            // The first ruleset that needs conntrack made its table.
            advise_huge_pages(p);
        }
    });
}

/// Huge pages for the pipeline's conntrack table and flow cache (where the
/// system's transparent huge pages are `madvise`); a refusal only costs
/// speed, so it is not an error.
fn advise_huge_pages(p: &Pipeline) {
    for (addr, len) in p.regions() {
        let _ = fastables_xdp::advise_huge_pages(addr, len);
    }
}

/// SIGHUP: the rules file again, all or nothing (counters start afresh, as
/// after `iptables-restore` without `-c`).
fn reload(workers: &Workers, live: &mut Live, file: Option<&PathBuf>) {
    let Some(file) = file else {
        eprintln!("reload: the configuration names no rules file; nothing to reload");
        return;
    };
    let res = load_rules(file)
        .and_then(|rs| compile(&rs, &live.names(), &file.display().to_string()).map(|c| (rs, c)));
    match res {
        Ok((rs, c)) => {
            let c = Arc::new(c);
            set_ruleset(workers, &c);
            live.rs = rs;
            live.compiled = c;
            eprintln!("reload: {} loaded", file.display());
        }
        Err(e) => eprintln!("reload: {e}\nreload: the running ruleset is unchanged"),
    }
}

/// Each interface's counters and the kernel's statistics of its socket.
fn iface_samples(port: &XdpPort, cfg: &Config) -> Vec<fastables_stats::IfaceSample> {
    cfg.interfaces
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let k = port.counters(i as IfIndex);
            let x = port.kernel_stats(i as IfIndex).unwrap_or_default();
            fastables_stats::IfaceSample {
                name: c.name.clone(),
                queue: None,
                rx_packets: k.rx,
                rx_bytes: k.rx_bytes,
                tx_packets: k.tx,
                tx_bytes: k.tx_bytes,
                xdp_rx_dropped: x.rx_dropped,
                xdp_rx_ring_full: x.rx_ring_full,
                xdp_fill_ring_empty: x.rx_fill_ring_empty_descs,
                xdp_rx_invalid: x.rx_invalid_descs,
                xdp_tx_invalid: x.tx_invalid_descs,
            }
        })
        .collect()
}

/// The table `sim` prints too: packets per interface, drops by reason.
fn summary(s: &Sample) -> Summary {
    let interfaces = s
        .interfaces
        .iter()
        .map(|x| IfaceTotals {
            name: x.name.clone(),
            rx_packets: x.rx_packets,
            rx_bytes: x.rx_bytes,
            tx_packets: x.tx_packets,
            tx_bytes: x.tx_bytes,
            rx_too_long: 0,
        })
        .collect();
    let drops = s.drops.iter().copied().filter(|(_, n)| *n > 0).collect();
    Summary {
        interfaces,
        drops,
        last_ns: 0,
    }
}

/// What the control thread keeps to answer requests.
struct Live {
    /// The ruleset as loaded (counters: the base that live counters add to).
    rs: Ruleset,
    compiled: Arc<CompiledRuleset>,
    names: Vec<String>,
    /// `conntrack -E` listeners.
    subs: Vec<(mpsc::SyncSender<String>, TraceFilter)>,
    /// Per worker, the latency since start (per batch, per packet).
    latency: Vec<(Latency, Latency)>,
    /// The `fastables trace` listener and how many records it still wants.
    trace_sub: Option<(mpsc::SyncSender<String>, Option<u64>)>,
    cfg: Arc<Config>,
    /// The interfaces' counters at the last interval, for the rates.
    last_sample: Option<(Instant, Vec<fastables_stats::IfaceSample>)>,
    /// Packets and bits per second over the last interval.
    rates: Vec<IfaceRate>,
}

/// One interface's rates over the last stats interval.
struct IfaceRate {
    name: String,
    rx_pps: f64,
    rx_bps: f64,
    tx_pps: f64,
    tx_bps: f64,
    secs: f64,
}

impl Live {
    fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// The ruleset with every worker's live counters folded in.
    fn with_counters(&self, workers: &Workers) -> Ruleset {
        let states = workers.map(|c| c.worker.pipeline().rule_state().clone());
        let refs: Vec<&fastables_rules::compile::RuleState> = states.iter().collect();
        self.compiled.counters_into(&self.rs, &refs)
    }
}

fn answer(req: &control::Request, live: &mut Live, workers: &Workers) -> control::Reply {
    let args: Vec<&str> = req.args.iter().map(String::as_str).collect();
    match args.split_first() {
        Some((&"save", rest)) => save_cmd(rest, live, workers),
        Some((&"list", rest)) => list_cmd(rest, live, workers),
        Some((&"restore", rest)) => restore_cmd(rest, &req.body, live, workers),
        Some((&"conntrack", rest)) => match (&req.stream, parse_ct_args(rest)) {
            (Some(tx), Ok((CtOp::Events, f))) => {
                live.subs.push((tx.clone(), f));
                workers.map(|c| c.worker.pipeline_mut().set_ct_events(true));
                control::Reply::ok(String::new())
            }
            _ => conntrack_cmd(rest, workers),
        },
        Some((&"trace", rest)) => match (&req.stream, parse_trace_args(rest, &live.cfg)) {
            (_, Err(m)) => control::Reply {
                code: 2,
                out: String::new(),
                err: format!("fastables trace: {m}\n"),
            },
            (None, Ok(_)) => {
                control::Reply::fail("fastables trace: needs a streaming connection\n")
            }
            (Some(tx), Ok((filter, count))) => {
                if live.trace_sub.is_some() {
                    control::Reply::fail("fastables trace: another trace is running\n")
                } else {
                    live.trace_sub = Some((tx.clone(), count));
                    workers.map(move |c| c.worker.pipeline_mut().set_trace(Some((filter, count))));
                    control::Reply::ok(String::new())
                }
            }
        },
        Some((&"stats", rest)) => stats_cmd(rest, live, workers),
        _ => control::Reply::fail(format!("fastables: unknown request {:?}", req.args)),
    }
}

/// `iptables -L` of the running ruleset, with the live counters.
fn list_cmd(args: &[&str], live: &Live, workers: &Workers) -> control::Reply {
    match crate::rulescmd::parse_list_request(args) {
        Err(m) => control::Reply {
            code: 2,
            out: String::new(),
            err: format!("fastables: {m}\n"),
        },
        Ok((table, chain, o)) => {
            let rs = live.with_counters(workers);
            match fastables_rules::print_list(&rs, table, chain.as_deref(), o) {
                Ok(text) => control::Reply::ok(text),
                Err(m) => control::Reply::fail(format!("fastables: {m}\n")),
            }
        }
    }
}

fn save_cmd(args: &[&str], live: &Live, workers: &Workers) -> control::Reply {
    let mut counters = false;
    let mut table = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-c" | "--counters" => counters = true,
            "-t" | "--table" => match it
                .next()
                .and_then(|t| Table::ALL.into_iter().find(|x| x.name() == *t))
            {
                Some(t) => table = Some(t),
                None => {
                    return control::Reply::fail(
                        "fastables: -t: expected one of raw, mangle, nat, filter\n",
                    )
                }
            },
            other => {
                return control::Reply::fail(format!("fastables: save: unknown option `{other}`\n"))
            }
        }
    }
    let mut rs = live.with_counters(workers);
    if let Some(t) = table {
        rs.tables.retain(|x| x.table == t);
    }
    control::Reply::ok(print::print_save(&rs, counters))
}

/// iptables-restore on the running instance: the tables in the input replace
/// theirs, the others stay (with their counters); all or nothing.
fn restore_cmd(args: &[&str], body: &str, live: &mut Live, workers: &Workers) -> control::Reply {
    let (mut test, mut counters, mut noflush) = (false, false, false);
    let mut name = "<stdin>";
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--name" => name = it.next().copied().unwrap_or(name),
            "-t" | "--test" => test = true,
            "-c" | "--counters" => counters = true,
            "-n" | "--noflush" => noflush = true,
            other => {
                return control::Reply::fail(format!(
                    "fastables: restore: unknown option `{other}`\n"
                ))
            }
        }
    }
    if noflush {
        // The file's commands on top of the running tables (their rules
        // keep their counters; the file's count only with -c).
        let opts = fastables_rules::RestoreOptions {
            noflush: true,
            counters,
        };
        let current = live.with_counters(workers);
        let merged = match fastables_rules::apply_restore_opts(&current, body, name, opts) {
            Ok(rs) => rs,
            Err(e) => {
                return control::Reply {
                    code: e.kind.restore_exit_code(),
                    out: String::new(),
                    err: format!("{e}\n"),
                }
            }
        };
        return commit_restore(merged, name, test, live, workers);
    }
    let mut new = match fastables_rules::parse::parse_restore_all(body, name) {
        Ok(rs) => rs,
        Err(e) => {
            return control::Reply {
                code: e.restore_exit_code(),
                out: String::new(),
                err: format!("{e}\n"),
            }
        }
    };
    if !counters {
        for t in &mut new.tables {
            for c in &mut t.chains {
                c.counters = Default::default();
                for r in &mut c.rules {
                    r.counters = Default::default();
                }
            }
        }
    }
    let mut merged = live.with_counters(workers);
    for t in new.tables {
        match merged.tables.iter_mut().find(|x| x.table == t.table) {
            Some(slot) => *slot = t,
            None => merged.tables.push(t),
        }
    }
    merged
        .tables
        .sort_by_key(|t| Table::ALL.iter().position(|x| *x == t.table));
    commit_restore(merged, name, test, live, workers)
}

/// Compiles a restored ruleset and, unless `test`, sets it on every worker.
fn commit_restore(
    merged: Ruleset,
    name: &str,
    test: bool,
    live: &mut Live,
    workers: &Workers,
) -> control::Reply {
    let compiled = match CompiledRuleset::compile(&merged, &live.names()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            return control::Reply {
                code: e.restore_exit_code(),
                out: String::new(),
                err: format!("{name}: {e}\n"),
            }
        }
    };
    if !test {
        set_ruleset(workers, &compiled);
        live.rs = merged;
        live.compiled = compiled;
    }
    control::Reply::ok(String::new())
}

/// Source NAT in use: translated ports (ICMP ids) per address and
/// protocol, and for each SNAT/MASQUERADE rule with a port range how many
/// of its ports connections hold (of that rule's protocol, any address).
struct NatPorts {
    addresses: Vec<((u32, u8), u64)>,
    ranges: Vec<NatRangeUse>,
}

struct NatRangeUse {
    rule: String,
    lo: u16,
    hi: u16,
    in_use: u64,
}

fn nat_ports(live: &Live, workers: &Workers) -> NatPorts {
    use fastables_rules::model::Target;
    // (address, protocol, port) of every source-NATed connection.
    let held = workers.map(|c| {
        let now = c.port.now_ns();
        c.worker.pipeline().conntrack().map_or_else(Vec::new, |t| {
            t.iter()
                .filter(|(_, e)| {
                    e.status & fastables_conntrack::status::SRC_NAT != 0 && !e.is_expired(now)
                })
                .map(|(_, e)| {
                    let r = e.reply();
                    (r.dst, r.proto, r.dport)
                })
                .collect::<Vec<_>>()
        })
    });
    let held: Vec<(u32, u8, u16)> = held.into_iter().flatten().collect();
    let mut addresses: std::collections::BTreeMap<(u32, u8), u64> = Default::default();
    for (a, p, _) in &held {
        *addresses.entry((*a, *p)).or_default() += 1;
    }
    let mut ranges = Vec::new();
    for t in live.rs.tables.iter().filter(|t| t.table == Table::Nat) {
        for c in &t.chains {
            for (i, r) in c.rules.iter().enumerate() {
                let ports = match &r.target {
                    Target::Snat { range, .. } => range.ports,
                    Target::Masquerade { ports, .. } => *ports,
                    _ => None,
                };
                let Some(p) = ports else { continue };
                let proto = r.proto.filter(|x| !x.inv).map(|x| x.val);
                let in_use = held
                    .iter()
                    .filter(|(_, pr, port)| {
                        proto.is_none_or(|x| x == *pr) && (p.lo..=p.hi).contains(port)
                    })
                    .count() as u64;
                ranges.push(NatRangeUse {
                    rule: format!("nat {} rule {}", c.name, i + 1),
                    lo: p.lo,
                    hi: p.hi,
                    in_use,
                });
            }
        }
    }
    NatPorts {
        addresses: addresses.into_iter().collect(),
        ranges,
    }
}

/// One worker's part of a conntrack command: the listed (or deleted)
/// entries with their sort keys, how many matched, its statistics line.
struct CtPart {
    lines: Vec<(OrigKey, String)>,
    matched: usize,
    stats: String,
}

/// `conntrack -L/-C/-F/-D/-S` with the `-s -d -p --sport --dport` filters
/// (on the ORIGINAL tuple, as conntrack-tools has them), over every
/// worker's shard. `-E` is answered in [`answer`], which keeps the listener.
fn conntrack_cmd(args: &[&str], workers: &Workers) -> control::Reply {
    let (op, filter) = match parse_ct_args(args) {
        Ok(x) => x,
        Err(m) => return ct_usage(&m),
    };
    if op == CtOp::Events {
        return ct_usage("-E needs a streaming connection");
    }
    let parts = workers.map(move |c| {
        let now_ns = c.port.now_ns();
        ct_local(op, &filter, c.worker.pipeline_mut(), now_ns, c.index)
    });
    let matched: usize = parts.iter().map(|p| p.matched).sum();
    let mut lines: Vec<(OrigKey, String)> = parts.iter().flat_map(|p| p.lines.clone()).collect();
    lines.sort_by_key(|x| x.0);
    let mut out = String::new();
    for (_, l) in &lines {
        out.push_str(l);
        out.push('\n');
    }
    match op {
        CtOp::List => control::Reply {
            code: 0,
            out,
            err: format!("{}\n", fastables_conntrack::format_summary(matched)),
        },
        CtOp::Count => {
            control::Reply::ok(format!("{}\n", fastables_conntrack::format_count(matched)))
        }
        CtOp::Flush => control::Reply {
            code: 0,
            out: String::new(),
            err:
                "conntrack v1.4.7 (conntrack-tools): connection tracking table has been emptied.\n"
                    .into(),
        },
        CtOp::Delete => control::Reply {
            code: 0,
            out,
            err: format!(
                "conntrack v1.4.7 (conntrack-tools): {matched} flow entries have been deleted.\n"
            ),
        },
        CtOp::Stats => control::Reply::ok(parts.iter().map(|p| p.stats.as_str()).collect()),
        CtOp::Events => ct_usage("-E needs a streaming connection"),
    }
}

/// A conntrack command on one worker's shard (`cpu` = the worker, as
/// `conntrack -S` numbers its lines).
fn ct_local(op: CtOp, filter: &TraceFilter, p: &mut Pipeline, now_ns: u64, cpu: usize) -> CtPart {
    let matches = |e: &fastables_conntrack::Entry| entry_matches(filter, e);
    let ids: Vec<(fastables_conntrack::EntryId, OrigKey)> = p
        .conntrack()
        .map(|t| {
            t.iter()
                .filter(|(_, e)| !e.is_expired(now_ns) && matches(e))
                .map(|(id, e)| {
                    let o = e.orig();
                    (id, (o.proto, o.src, o.dst, o.sport, o.dport))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut part = CtPart {
        lines: Vec::new(),
        matched: ids.len(),
        stats: String::new(),
    };
    match op {
        CtOp::List => {
            if let Some(t) = p.conntrack() {
                for (id, key) in &ids {
                    if let Some(e) = t.entry(*id) {
                        part.lines
                            .push((*key, fastables_conntrack::format_entry(e, now_ns)));
                    }
                }
            }
        }
        CtOp::Flush => {
            let mut gone = Vec::new();
            if let Some(t) = p.conntrack_mut() {
                gone = t.iter().map(|(_, e)| *e).collect();
                t.clear();
            }
            for e in &gone {
                p.note_destroyed(e, now_ns);
            }
        }
        CtOp::Delete => {
            let mut gone = Vec::new();
            if let Some(t) = p.conntrack_mut() {
                for (id, key) in &ids {
                    if let Some(e) = t.remove(*id) {
                        part.lines
                            .push((*key, fastables_conntrack::format_entry(&e, now_ns)));
                        gone.push(e);
                    }
                }
            }
            for e in &gone {
                p.note_destroyed(e, now_ns);
            }
        }
        CtOp::Stats => {
            let st = p.conntrack().map(|t| t.stats()).unwrap_or_default();
            part.stats = format!("{}\n", fastables_conntrack::format_stats(cpu, &st));
        }
        CtOp::Count | CtOp::Events => {}
    }
    part
}

fn stats_cmd(args: &[&str], live: &Live, workers: &Workers) -> control::Reply {
    let json = match args {
        [] => false,
        ["--json"] => true,
        _ => return control::Reply::fail(format!("fastables: stats: unknown options {args:?}\n")),
    };
    let cfg = Arc::clone(&live.cfg);
    let per_worker = workers.map(move |c| Sample::of(c, &cfg, false));
    let m = Sample::merge(&per_worker);
    let nat = nat_ports(live, workers);
    let samples = &m.interfaces;
    let s = summary(&m);
    let (entries, max, _) = m.ct.unwrap_or_default();
    let xdp = |x: &fastables_stats::IfaceSample| {
        [
            ("rx_dropped", x.xdp_rx_dropped),
            ("rx_ring_full", x.xdp_rx_ring_full),
            ("fill_ring_empty", x.xdp_fill_ring_empty),
            ("rx_invalid", x.xdp_rx_invalid),
            ("tx_invalid", x.xdp_tx_invalid),
        ]
    };
    let steer = |st: &SteerStats| {
        [
            ("handed_out", st.handed_out),
            ("handed_in", st.handed_in),
            ("handoff_dropped", st.handoff_dropped),
            ("arp_copies", st.arp_copies),
            ("redirects_sent", st.redirects_sent),
            ("redirects_dropped", st.redirects_dropped),
            ("redirects_known", st.redirects_known),
        ]
    };
    if json {
        let list = |items: Vec<String>| items.join(",");
        let interfaces = list(
            samples
                .iter()
                .map(|x| {
                    let rate = live.rates.iter().find(|r| r.name == x.name).map_or(
                        String::new(),
                        |r| {
                            format!(
                                ",\"rx_pps\":{:.1},\"tx_pps\":{:.1},\"rx_bps\":{:.0},\"tx_bps\":{:.0}",
                                r.rx_pps, r.tx_pps, r.rx_bps, r.tx_bps
                            )
                        },
                    );
                    format!(
                        "{{\"name\":\"{}\",\"rx_packets\":{},\"rx_bytes\":{},\"tx_packets\":{},\"tx_bytes\":{}{rate}}}",
                        x.name, x.rx_packets, x.rx_bytes, x.tx_packets, x.tx_bytes
                    )
                })
                .collect(),
        );
        let drops = list(
            s.drops
                .iter()
                .map(|(r, n)| format!("\"{}\":{n}", r.name()))
                .collect(),
        );
        let xdp = list(
            samples
                .iter()
                .map(|x| {
                    let f = list(xdp(x).iter().map(|(k, v)| format!("\"{k}\":{v}")).collect());
                    format!("\"{}\":{{{f}}}", x.name)
                })
                .collect(),
        );
        let workers_json = list(
            per_worker
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let st = list(
                        steer(&w.steer)
                            .iter()
                            .map(|(k, v)| format!("\"{k}\":{v}"))
                            .collect(),
                    );
                    let rx: u64 = w.interfaces.iter().map(|x| x.rx_packets).sum();
                    let tx: u64 = w.interfaces.iter().map(|x| x.tx_packets).sum();
                    let ct = w.ct.map_or(0, |c| c.0);
                    format!(
                        "{{\"worker\":{i},\"core\":{},\"rx_packets\":{rx},\"tx_packets\":{tx},\"conntrack_entries\":{ct},{st}}}",
                        live.cfg.workers.cores.get(i).copied().unwrap_or(0)
                    )
                })
                .collect(),
        );
        let nat_json = list(
            nat.addresses
                .iter()
                .map(|((a, p), n)| {
                    format!(
                        "{{\"address\":\"{}\",\"proto\":{p},\"ports\":{n}}}",
                        std::net::Ipv4Addr::from(*a)
                    )
                })
                .collect(),
        );
        let range_json = list(
            nat.ranges
                .iter()
                .map(|r| {
                    format!(
                        "{{\"rule\":\"{}\",\"lo\":{},\"hi\":{},\"in_use\":{}}}",
                        r.rule, r.lo, r.hi, r.in_use
                    )
                })
                .collect(),
        );
        return control::Reply::ok(format!(
            "{{\"interfaces\":[{interfaces}],\"drops\":{{{drops}}},\"xdp\":{{{xdp}}},\"conntrack\":{{\"entries\":{entries},\"max\":{max}}},\"arp\":{{\"received\":{},\"replies_sent\":{},\"requests_sent\":{},\"learned\":{}}},\"flow_cache\":{{\"usable\":{},\"hits\":{}}},\"nat\":{{\"addresses\":[{nat_json}],\"ranges\":[{range_json}]}},\"workers\":[{workers_json}]}}\n",
            m.arp.received,
            m.arp.replies_sent,
            m.arp.requests_sent,
            m.arp.learned,
            m.flow_cache.0,
            m.flow_cache.1
        ));
    }
    let mut o = s.to_string();
    for r in &live.rates {
        o.push_str(&format!(
            "rate {} (last {:.1} s): rx {:.0} pps {:.1} Mbit/s, tx {:.0} pps {:.1} Mbit/s\n",
            r.name,
            r.secs,
            r.rx_pps,
            r.rx_bps / 1e6,
            r.tx_pps,
            r.tx_bps / 1e6
        ));
    }
    // What the kernel side of each AF_XDP socket dropped (XDP_STATISTICS).
    for x in samples {
        let f: Vec<String> = xdp(x).iter().map(|(k, v)| format!("{k} {v}")).collect();
        o.push_str(&format!("xdp {}: {}\n", x.name, f.join(" ")));
    }
    let a = &m.arp;
    o.push_str(&format!(
        "arp: received {} replies_sent {} requests_sent {} learned {}\n",
        a.received, a.replies_sent, a.requests_sent, a.learned
    ));
    o.push_str(&match m.flow_cache {
        (true, hits) => {
            format!("flow cache: on, {hits} frames forwarded by their connection's decision\n")
        }
        (false, _) => {
            "flow cache: off (a chain of the forward path is not flow-invariant, or no conntrack)\n"
                .to_string()
        }
    });
    if max > 0 {
        let fill = entries as f64 * 100.0 / max as f64;
        o.push_str(&format!(
            "conntrack: {entries} entries of {max} ({fill:.1}%)"
        ));
        if fill > 90.0 {
            o.push_str("  WARNING: above 90%, new connections will soon be dropped");
        }
        o.push('\n');
    } else {
        o.push_str("conntrack: not loaded (no rule needs it)\n");
    }
    for ((a, p), n) in &nat.addresses {
        let proto = match p {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            1 => "icmp ids".to_string(),
            p => format!("proto {p}"),
        };
        o.push_str(&format!(
            "nat: {} {proto}: {n} in use\n",
            std::net::Ipv4Addr::from(*a)
        ));
    }
    for r in &nat.ranges {
        o.push_str(&format!(
            "nat range {}-{} ({}): {} of {} ports in use\n",
            r.lo,
            r.hi,
            r.rule,
            r.in_use,
            u32::from(r.hi) - u32::from(r.lo) + 1
        ));
    }
    let mut total = (Latency::new(), Latency::new());
    for (b, p) in &live.latency {
        total.0.add(b);
        total.1.add(p);
    }
    if total.0.count() > 0 {
        o.push_str(&format!(
            "latency per batch:  {}\nlatency per packet: {}\n",
            total.0.summary(),
            total.1.summary()
        ));
    }
    if per_worker.len() > 1 {
        for (i, w) in per_worker.iter().enumerate() {
            let rx: u64 = w.interfaces.iter().map(|x| x.rx_packets).sum();
            let tx: u64 = w.interfaces.iter().map(|x| x.tx_packets).sum();
            let ct = w.ct.map_or(0, |c| c.0);
            let st: Vec<String> = steer(&w.steer)
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            o.push_str(&format!(
                "worker {i} (core {}): rx {rx} tx {tx} conntrack {ct} {}\n",
                live.cfg.workers.cores.get(i).copied().unwrap_or(0),
                st.join(" ")
            ));
            if let Some((b, p)) = live.latency.get(i).filter(|(b, _)| b.count() > 0) {
                o.push_str(&format!(
                    "worker {i} latency per batch:  {}\nworker {i} latency per packet: {}\n",
                    b.summary(),
                    p.summary()
                ));
            }
        }
    }
    control::Reply::ok(o)
}

/// An entry's ORIGINAL tuple as a sort key (protocol, addresses, ports).
type OrigKey = (u8, u32, u32, u16, u16);

/// A conntrack-tools command.
#[derive(PartialEq, Clone, Copy, Debug)]
enum CtOp {
    List,
    Count,
    Flush,
    Delete,
    Stats,
    Events,
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// bpffs on /sys/fs/bpf for libxdp (a warning when it cannot be mounted).
pub(crate) fn mount_bpffs() {
    if let Err(e) = fastables_xdp::ensure_bpffs() {
        eprintln!("warning: cannot mount bpffs on /sys/fs/bpf ({e}); libxdp loads its program without the dispatcher");
    }
}

/// A seed from the kernel's random pool, else from the clock.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read as _;
        f.read_exact(&mut b)
    }) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// Fills in what `run` reads from the devices (MACs) and checks the devices.
fn complete_config(cfg: &mut Config) -> Result<(), CliError> {
    // One address on two interfaces: ARP and the local table would answer
    // for it on both; a configuration mistake here.
    for (i, a) in cfg.interfaces.iter().enumerate() {
        for b in &cfg.interfaces[i + 1..] {
            for x in &a.addresses {
                if b.addresses.iter().any(|y| y.addr == x.addr) {
                    return Err(CliError::Start(format!(
                        "{}: address {} is configured on both `{}` and `{}`",
                        cfg.path.display(),
                        x.addr,
                        a.name,
                        b.name
                    )));
                }
            }
        }
    }
    for i in &mut cfg.interfaces {
        if !fastables_xdp::device_exists(&i.name) {
            return Err(CliError::Start(format!(
                "{}: interface `{}` does not exist (see `ip link`)",
                cfg.path.display(),
                i.name
            )));
        }
        let dev_mac = fastables_xdp::device_mac(&i.name).map(MacAddr);
        match (i.mac, dev_mac) {
            (None, Some(m)) => i.mac = Some(m),
            (Some(c), Some(d)) if c != d => {
                return Err(CliError::Start(format!(
                    "{}: interface `{}` has MAC {d} but the configuration says {c}: \
                     remove `mac` to use the device's, or set the device's (`ip link set {} address {c}`)",
                    cfg.path.display(),
                    i.name,
                    i.name
                )))
            }
            _ => {}
        }
        let kernel = fastables_xdp::device_ipv4_addrs(&i.name);
        if !kernel.is_empty() {
            let list: Vec<String> = kernel.iter().map(|a| a.to_string()).collect();
            eprintln!(
                "warning: {}: the kernel also has {} on it; fastables takes all its traffic, \
                 so the kernel's stack will not hear from that network (`ip addr flush dev {}`)",
                i.name,
                list.join(", "),
                i.name
            );
        }
        if let Some(mtu) = fastables_xdp::device_mtu(&i.name) {
            if mtu != u32::from(i.mtu) {
                eprintln!(
                    "warning: {}: the device's MTU is {mtu}, the configuration's {}: \
                     fastables uses {} for fragmentation and frag-needed",
                    i.name, i.mtu, i.mtu
                );
            }
        }
    }
    Ok(())
}

/// `fastables trace` arguments: `--count N`, `-p PROTO`, `-s ADDR`,
/// `-d ADDR`, `--sport N`, `--dport N`, `-i IFACE` (as iptables writes them).
fn parse_trace_args(args: &[&str], cfg: &Config) -> Result<(TraceFilter, Option<u64>), String> {
    let mut f = TraceFilter::default();
    let mut count = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .copied()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        if let Some(r) = tuple_option(&mut f, a, &mut value) {
            r?;
            continue;
        }
        match *a {
            "--count" | "-c" => {
                let v = value()?;
                count = Some(v.parse::<u64>().map_err(|_| format!("bad count `{v}`"))?);
            }
            "-i" | "--in-interface" => {
                let v = value()?;
                let i = cfg
                    .interfaces
                    .iter()
                    .position(|c| c.name == v)
                    .ok_or_else(|| format!("no interface `{v}` in the configuration"))?;
                f.in_if = Some(i as IfIndex);
            }
            // The packets `-j TRACE` marked (`xtables-monitor --trace`).
            "--marked" => f.marked = true,
            // `-m tcp`/`-m udp` as iptables writes them: implied by -p.
            "-m" => {
                value()?;
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok((f, count))
}

/// The tuple options `conntrack` and `trace` share (`-s -d -p --sport
/// --dport` and their long forms), into `f`; `None` for any other option.
fn tuple_option<'a>(
    f: &mut TraceFilter,
    opt: &str,
    value: &mut impl FnMut() -> Result<&'a str, String>,
) -> Option<Result<(), String>> {
    let addr = |v: &str| {
        v.parse::<std::net::Ipv4Addr>()
            .map(u32::from)
            .map_err(|_| format!("bad address `{v}'"))
    };
    let port = |v: &str| v.parse::<u16>().map_err(|_| format!("bad port `{v}'"));
    let proto = |v: &str| match v {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        _ => v
            .parse::<u8>()
            .map_err(|_| format!("unknown protocol `{v}'")),
    };
    let r = match opt {
        "-s" | "--src" | "--orig-src" | "--source" => {
            value().and_then(addr).map(|x| f.src = Some(x))
        }
        "-d" | "--dst" | "--orig-dst" | "--destination" => {
            value().and_then(addr).map(|x| f.dst = Some(x))
        }
        "-p" | "--proto" | "--protocol" => value().and_then(proto).map(|x| f.proto = Some(x)),
        "--sport" | "--orig-port-src" | "--source-port" => {
            value().and_then(port).map(|x| f.sport = Some(x))
        }
        "--dport" | "--orig-port-dst" | "--destination-port" => {
            value().and_then(port).map(|x| f.dport = Some(x))
        }
        _ => return None,
    };
    Some(r)
}

/// Whether a connection's ORIGINAL tuple passes the filter (conntrack-tools'
/// `-s -d -p --sport --dport`).
fn entry_matches(f: &TraceFilter, e: &fastables_conntrack::Entry) -> bool {
    let o = e.orig();
    let ports = fastables_conntrack::tuple::proto_has_ports(o.proto);
    f.matches(o.proto, o.src, o.dst, o.sport, o.dport, ports, 0)
}

/// A conntrack-tools usage error, as the tool words it (exit 2).
fn ct_usage(m: &str) -> control::Reply {
    control::Reply {
        code: 2,
        out: String::new(),
        err: format!("conntrack v1.4.7 (conntrack-tools): {m}\n"),
    }
}

fn parse_ct_args(args: &[&str]) -> Result<(CtOp, TraceFilter), String> {
    let mut op = None;
    let mut f = TraceFilter::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .copied()
                .ok_or_else(|| format!("option `{a}' requires an argument"))
        };
        if let Some(r) = tuple_option(&mut f, a, &mut value) {
            r?;
            continue;
        }
        let o = match *a {
            "-L" | "--dump" => CtOp::List,
            "-C" | "--count" => CtOp::Count,
            "-F" | "--flush" => CtOp::Flush,
            "-D" | "--delete" => CtOp::Delete,
            "-S" | "--stats" => CtOp::Stats,
            "-E" | "--event" => CtOp::Events,
            other => return Err(format!("unknown option `{other}'")),
        };
        if op.is_some_and(|x| x != o) {
            return Err("only one command at a time".to_string());
        }
        op = Some(o);
    }
    let op = op.ok_or("no command specified (use -L, -C, -F, -D, -S or -E)")?;
    Ok((op, f))
}
