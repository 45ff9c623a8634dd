//! The worker threads: each owns its pipeline and AF_XDP port, polls them
//! until the stop flag, and runs the control thread's jobs between two
//! batches ([`Workers::map`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fastables_config::{Config, Queues};
use fastables_dataplane::pipeline::{Pipeline, PipelineOptions};
use fastables_dataplane::worker::Worker;
use fastables_port::rss::Rss;
use fastables_port::steer::{Mesh, Steered};
use fastables_port::PacketIo;
use fastables_rules::compile::CompiledRuleset;
use fastables_rules::ctx::IfIndex;
use fastables_stats::{Health, Latency};
use fastables_xdp::{Options, PortSpec, XdpPort};

use super::sample::Sample;
use crate::CliError;

/// A worker thread's state. Jobs from the control thread run on it between
/// two batches.
pub(super) struct WorkerState {
    /// The worker's number (its RX queue on every interface).
    pub(super) index: usize,
    pub(super) worker: Worker,
    pub(super) port: Steered<XdpPort>,
    /// Latency since the metrics last took it: per batch, per packet.
    pub(super) batch_lat: Latency,
    pub(super) pkt_lat: Latency,
}

/// A job the control thread runs on a worker.
type Job = Box<dyn FnOnce(&mut WorkerState) + Send>;

/// What a worker hands over when it starts: its interfaces' lines, or why
/// it could not start.
type Ready = Result<Vec<String>, CliError>;

/// What every worker starts from; each takes its own queue, core and seed.
#[derive(Clone)]
pub(super) struct WorkerShared {
    /// Workers in all.
    pub(super) n: usize,
    pub(super) cfg: Arc<Config>,
    pub(super) compiled: Arc<CompiledRuleset>,
    /// The instance's seed; worker `k`'s conntrack seed is derived from it.
    pub(super) seed: u64,
    /// Descriptors per AF_XDP ring.
    pub(super) ring: u32,
    pub(super) rss: Arc<Rss>,
    /// The hand-off queues between workers (several workers only).
    pub(super) mesh: Option<Arc<Mesh>>,
    pub(super) stop: Arc<AtomicBool>,
    /// The NAT event log's queues, one per worker (`[nat_log]`).
    pub(super) nat_sinks: Vec<fastables_natlog::Sink>,
    /// Where each worker stamps its heartbeat.
    pub(super) health: Arc<Health>,
}

/// The running workers, as the control thread sees them. Dropped without
/// [`Workers::join`] (an error after start), they are stopped all the
/// same: sockets closed, XDP programs detached.
pub(super) struct Workers {
    jobs: Vec<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<Sample>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Workers {
    /// Starts the workers one after the other (libxdp attaches its program
    /// to an interface with its first socket), printing what each one's
    /// interfaces got. When one cannot start, those started are stopped and
    /// its error is returned.
    pub(super) fn start(shared: &WorkerShared) -> Result<Workers, CliError> {
        let n = shared.n;
        let mut workers = Workers {
            jobs: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
            stop: Arc::clone(&shared.stop),
        };
        let mut started_err = None;
        for k in 0..n {
            let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
            let (job_tx, job_rx) = mpsc::channel::<Job>();
            let w = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("fastables-worker-{k}"))
                .spawn(move || worker_main(k, w, &ready_tx, &job_rx))
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
        match started_err {
            Some(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                workers.join();
                Err(e)
            }
            None => Ok(workers),
        }
    }

    /// Runs `f` on every worker (between two of its batches) and returns
    /// the answers in worker order; a worker that is gone gives none.
    pub(super) fn map<R: Send + 'static>(
        &self,
        f: impl Fn(&mut WorkerState) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel();
        for (i, j) in self.jobs.iter().enumerate() {
            let (f, tx) = (Arc::clone(&f), tx.clone());
            let _ = j.send(Box::new(move |c: &mut WorkerState| {
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

    /// Runs `job` on worker `k` between two of its batches, without
    /// waiting for it.
    #[cfg(debug_assertions)]
    pub(super) fn post(&self, k: usize, job: impl FnOnce(&mut WorkerState) + Send + 'static) {
        if let Some(j) = self.jobs.get(k) {
            let _ = j.send(Box::new(job));
        }
    }

    /// Stops every worker (the caller set the stop flag) and collects their
    /// last samples.
    pub(super) fn join(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs.clear();
        self.threads
            .drain(..)
            .filter_map(|t| t.join().ok())
            .collect()
    }

    /// Sets a new ruleset on every worker.
    pub(super) fn set_ruleset(&self, c: &Arc<CompiledRuleset>) {
        let c = Arc::clone(c);
        self.map(move |x| {
            let p = x.worker.pipeline_mut();
            let had_ct = p.conntrack().is_some();
            p.set_ruleset(Arc::clone(&c));
            if !had_ct {
                // The first ruleset that needs conntrack made its table.
                advise_huge_pages(p);
            }
        });
    }
}

fn pin(k: usize, core: u32) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == core as usize) {
        Some(id) if core_affinity::set_for_current(id) => {}
        _ => eprintln!("warning: cannot pin worker {k} to core {core}; it runs unpinned"),
    }
}

/// A worker thread: its pipeline and port (created here, where they state),
/// then the poll loop until the stop flag; returns its last counters.
fn worker_main(
    k: usize,
    w: WorkerShared,
    ready: &mpsc::Sender<Ready>,
    jobs: &mpsc::Receiver<Job>,
) -> Sample {
    let cfg = &*w.cfg;
    if let Some(&core) = cfg.workers.cores.get(k) {
        pin(k, core);
    }
    let pipeline_opts = PipelineOptions {
        conntrack_seed: w.seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        ..PipelineOptions::default()
    };
    let mut pipeline = match Pipeline::with_options(cfg, Arc::clone(&w.compiled), pipeline_opts) {
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
        pipeline.set_rss(Arc::clone(&w.rss), k as u16);
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
        queue: k as u32,
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
    let mut c = WorkerState {
        index: k,
        worker: Worker::new(pipeline, batch),
        port: Steered::new(port, k as u16, w.rss, w.mesh, batch),
        batch_lat: Latency::new(),
        pkt_lat: Latency::new(),
    };
    if k == 0 {
        announce(c.port.inner_mut(), c.worker.pipeline());
    }
    let _ = ready.send(Ok(lines));
    let nat_sink = w.nat_sinks.get(k).cloned();
    if nat_sink.is_some() {
        crate::natlog::attach(cfg, c.worker.pipeline_mut());
    }

    let mut idle = 0u32;
    let mut last_service = Instant::now();
    let latency = cfg.stats.latency;
    while !w.stop.load(Ordering::Relaxed) {
        let t0 = latency.then(Instant::now);
        let n = c.worker.poll(&mut c.port);
        if let (Some(s), Some(t)) = (&nat_sink, c.worker.pipeline_mut().conntrack_mut()) {
            s.drain(t);
        }
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
            w.health.beat(k, last_service);
            c.worker
                .pipeline_mut()
                .drain_logs(|l| eprintln!("log: {l}"));
        }
    }
    c.worker
        .pipeline_mut()
        .drain_logs(|l| eprintln!("log: {l}"));
    if let (Some(s), Some(t)) = (&nat_sink, c.worker.pipeline_mut().conntrack_mut()) {
        s.drain(t);
    }
    Sample::of(&mut c, cfg, true)
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
            let frame = port.memory().get_mut(at..at + fastables_port::FRAME_SIZE);
            let n =
                frame.and_then(|f| fastables_dataplane::neigh::arp_request(f, dev.mac, addr, addr));
            match n {
                Some(n) => {
                    let f = fastables_port::Frame {
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

/// Huge pages for the pipeline's conntrack table and flow cache (where the
/// system's transparent huge pages are `madvise`); a refusal only costs
/// speed, so it is not an error.
pub(super) fn advise_huge_pages(p: &Pipeline) {
    for (addr, len) in p.regions() {
        let _ = fastables_xdp::advise_huge_pages(addr, len);
    }
}
