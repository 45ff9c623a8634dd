//! `fastables run`: the live data plane on AF_XDP.
//!
//! One worker (the first core of `[workers] cores`, pinned), one AF_XDP
//! socket per configured interface over a shared UMEM, the same pipeline as
//! `sim`. SIGTERM or SIGINT stop it cleanly (sockets closed, XDP programs
//! detached, counters printed); SIGHUP reloads the rules file: the new
//! ruleset is parsed, validated and compiled first, and a bad file changes
//! nothing; connections keep their NAT bindings.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use fastables_dataplane::config::{Config, Queues};
use fastables_dataplane::io::{PacketIo, Worker};
use fastables_dataplane::offline::{IfaceTotals, Summary};
use fastables_dataplane::pipeline::{Pipeline, PipelineOptions};
use fastables_dataplane::trace::TraceFilter;
use fastables_packet::MacAddr;
use fastables_rules::ctx::IfIndex;
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

fn pin(cores: &[u32]) {
    let Some(&core) = cores.first() else {
        return;
    };
    if cores.len() > 1 {
        eprintln!(
            "warning: [workers] cores lists {} cores; this version runs one worker, on core {core}",
            cores.len()
        );
    }
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == core as usize) {
        Some(id) if core_affinity::set_for_current(id) => {}
        _ => eprintln!("warning: cannot pin the worker to core {core}; it runs unpinned"),
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
    let names = cfg.iface_names();
    let compiled = Arc::new(compile(&rs, &names, &rules_name)?);
    let opts = PipelineOptions {
        conntrack_seed: a.seed.unwrap_or_else(random_seed),
        ..PipelineOptions::default()
    };
    let pipeline = Pipeline::with_options(&cfg, Arc::clone(&compiled), opts).map_err(|e| {
        CliError::Pipeline {
            file: a.config.display().to_string(),
            source: e,
        }
    })?;

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
    mount_bpffs();
    let mut port = XdpPort::open(&specs, Options { ring: a.ring })?;
    for info in port.info() {
        println!("{info}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| CliError::Start(format!("cannot install the signal handler: {e}")))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .map_err(|e| CliError::Start(format!("cannot install the signal handler: {e}")))?;

    let server = control::serve(&cfg.control.socket)?;
    let mut live = Live {
        rs,
        compiled,
        names: names.iter().map(|s| s.to_string()).collect(),
        subs: Vec::new(),
        latency: None,
        trace_sub: None,
    };
    pin(&cfg.workers.cores);
    let mut worker = Worker::new(pipeline, cfg.workers.batch);
    announce(&mut port, worker.pipeline());
    println!("control socket: {}", cfg.control.socket.display());
    println!("running");
    let _ = std::io::stdout().flush();

    // Observability: this worker's histograms (recorded without allocating),
    // merged into the published snapshot once per interval.
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
    let mut batch_lat = fastables_stats::Latency::new();
    let mut pkt_lat = fastables_stats::Latency::new();

    let mut idle = 0u32;
    let mut last_service = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let n = worker.poll(&mut port);
        if n > 0 {
            let ns = t0.elapsed().as_nanos() as u64;
            batch_lat.record(ns);
            pkt_lat.record(ns / n as u64);
        }
        if n == 0 {
            idle = idle.saturating_add(1);
            // Poll mode while there is traffic; an idle worker sleeps in
            // poll(2) so that an idle appliance does not burn its core.
            if idle > 256 {
                port.wait(5);
            }
        } else {
            idle = 0;
        }
        if last_service.elapsed() >= Duration::from_millis(2) {
            last_service = Instant::now();
            worker.pipeline_mut().drain_logs(|l| eprintln!("log: {l}"));
            if hup.swap(false, Ordering::Relaxed) {
                reload(&mut worker, &mut live, rules_file.as_ref());
            }
            // Control requests, between two batches.
            while let Ok(req) = server.requests.try_recv() {
                let r = answer(&req, &mut live, &mut worker, &port, &cfg);
                let _ = req.reply.send(r);
            }
            if !live.subs.is_empty() {
                publish_events(&mut live, worker.pipeline_mut());
            }
            if live.trace_sub.is_some() {
                publish_trace(&mut live, worker.pipeline_mut());
            }
            if last_publish.elapsed() >= interval {
                last_publish = Instant::now();
                publish(
                    &shared,
                    &port,
                    &worker,
                    &cfg,
                    started,
                    &mut batch_lat,
                    &mut pkt_lat,
                );
                live.latency = shared
                    .lock()
                    .ok()
                    .map(|s| (s.batch_latency.summary(), s.packet_latency.summary()));
            }
        }
    }
    worker.pipeline_mut().drain_logs(|l| eprintln!("log: {l}"));
    let summary = summary(&iface_samples(&port, &cfg), &worker);
    drop(server);
    drop(port);
    eprintln!("stopped");
    eprint!("{summary}");
    Ok(())
}

/// `conntrack -E`: the events collected since last time to each listener
/// whose filters they pass. A listener that is gone is dropped; when none is
/// left the pipeline stops collecting.
fn publish_events(live: &mut Live, p: &mut Pipeline) {
    let subs = &mut live.subs;
    let mut gone = vec![false; subs.len()];
    p.drain_ct_events(|kind, e, at| {
        let line = format!("{}\n", fastables_conntrack::format_event(kind, e, at));
        for (i, (tx, f)) in subs.iter().enumerate() {
            if !gone[i] && entry_matches(f, e) {
                match tx.try_send(line.clone()) {
                    Ok(()) | Err(std::sync::mpsc::TrySendError::Full(_)) => {}
                    Err(std::sync::mpsc::TrySendError::Disconnected(_)) => gone[i] = true,
                }
            }
        }
    });
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
        p.set_ct_events(false);
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
                .get_mut(at..at + fastables_dataplane::io::FRAME_SIZE);
            let n =
                frame.and_then(|f| fastables_dataplane::neigh::arp_request(f, dev.mac, addr, addr));
            match n {
                Some(n) => {
                    let f = fastables_dataplane::io::Frame {
                        addr: b,
                        len: n as u16,
                        port: i as IfIndex,
                        action: fastables_dataplane::io::Action::Forward { port: i as IfIndex },
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

/// Merges this interval's histograms into the published snapshot and
/// refreshes its counters (once per `[stats] interval_ms`, off the data path).
fn publish(
    shared: &std::sync::Mutex<fastables_stats::Snapshot>,
    port: &XdpPort,
    worker: &Worker,
    cfg: &Config,
    started: Instant,
    batch_lat: &mut fastables_stats::Latency,
    pkt_lat: &mut fastables_stats::Latency,
) {
    let p = worker.pipeline();
    let interfaces = iface_samples(port, cfg);
    let drops = p
        .drops()
        .snapshot()
        .into_iter()
        .map(|(r, n)| (r.name(), n))
        .collect();
    let (ct_entries, ct_max, st) = p.conntrack().map_or((0, 0, Default::default()), |t| {
        (t.len() as u64, t.max() as u64, t.stats())
    });
    let st: fastables_conntrack::Stats = st;
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
    s.drops = drops;
    s.ct_entries = ct_entries;
    s.ct_max = ct_max;
    s.ct_counters = ct_counters;
    s.held = (p.held() + p.reassembling()) as u64;
    s.batch_latency.add(batch_lat);
    s.packet_latency.add(pkt_lat);
    s.uptime_s = started.elapsed().as_secs_f64();
    batch_lat.reset();
    pkt_lat.reset();
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
            // `-m tcp`/`-m udp` as iptables writes them: implied by -p.
            "-m" => {
                value()?;
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok((f, count))
}

/// `fastables trace`: the finished records to the listener; the trace
/// stops when the listener goes or its count is reached (the stream then
/// closes).
fn publish_trace(live: &mut Live, p: &mut Pipeline) {
    let Some(tx) = live.trace_sub.as_ref() else {
        return;
    };
    let mut gone = false;
    p.drain_trace(|r| {
        if !gone
            && matches!(
                tx.try_send(r.to_string()),
                Err(std::sync::mpsc::TrySendError::Disconnected(_))
            )
        {
            gone = true;
        }
    });
    if gone || !p.tracing() {
        p.set_trace(None);
        live.trace_sub = None;
    }
}

/// SIGHUP: the rules file again, all or nothing (counters start afresh, as
/// after `iptables-restore` without `-c`).
fn reload(worker: &mut Worker, live: &mut Live, file: Option<&PathBuf>) {
    let Some(file) = file else {
        eprintln!("reload: the configuration names no rules file; nothing to reload");
        return;
    };
    let res = load_rules(file)
        .and_then(|rs| compile(&rs, &live.names(), &file.display().to_string()).map(|c| (rs, c)));
    match res {
        Ok((rs, c)) => {
            let c = Arc::new(c);
            worker.pipeline_mut().set_ruleset(Arc::clone(&c));
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
fn summary(samples: &[fastables_stats::IfaceSample], worker: &Worker) -> Summary {
    let interfaces = samples
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
    let drops = worker
        .pipeline()
        .drops()
        .snapshot()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    Summary {
        interfaces,
        drops,
        last_ns: 0,
    }
}

/// What the worker keeps to answer control requests.
struct Live {
    /// The ruleset as loaded (counters: the base that live counters add to).
    rs: Ruleset,
    compiled: Arc<CompiledRuleset>,
    names: Vec<String>,
    /// `conntrack -E` listeners.
    subs: Vec<(std::sync::mpsc::SyncSender<String>, TraceFilter)>,
    /// The latest latency summaries (batch, per packet), since start.
    latency: Option<(String, String)>,
    /// The `fastables trace` listener.
    trace_sub: Option<std::sync::mpsc::SyncSender<String>>,
}

impl Live {
    fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    /// The ruleset with the live counters folded in.
    fn with_counters(&self, p: &Pipeline) -> Ruleset {
        self.compiled.counters_into(&self.rs, &[p.rule_state()])
    }
}

fn answer(
    req: &control::Request,
    live: &mut Live,
    worker: &mut Worker,
    port: &XdpPort,
    cfg: &Config,
) -> control::Reply {
    let args: Vec<&str> = req.args.iter().map(String::as_str).collect();
    match args.split_first() {
        Some((&"save", rest)) => save_cmd(rest, live, worker.pipeline()),
        Some((&"restore", rest)) => restore_cmd(rest, &req.body, live, worker),
        Some((&"conntrack", rest)) => match (&req.stream, parse_ct_args(rest)) {
            (Some(tx), Ok((CtOp::Events, f))) => {
                live.subs.push((tx.clone(), f));
                worker.pipeline_mut().set_ct_events(true);
                control::Reply::ok(String::new())
            }
            _ => conntrack_cmd(rest, worker.pipeline_mut(), port.now_ns()),
        },
        Some((&"trace", rest)) => match (&req.stream, parse_trace_args(rest, cfg)) {
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
                    live.trace_sub = Some(tx.clone());
                    worker.pipeline_mut().set_trace(Some((filter, count)));
                    control::Reply::ok(String::new())
                }
            }
        },
        Some((&"stats", rest)) => {
            let mut r = stats_cmd(rest, worker, port, cfg);
            if r.code == 0 && !rest.contains(&"--json") {
                if let Some((b, p)) = &live.latency {
                    r.out.push_str(&format!(
                        "latency per batch:  {b}\nlatency per packet: {p}\n"
                    ));
                }
            }
            r
        }
        _ => control::Reply::fail(format!("fastables: unknown request {:?}", req.args)),
    }
}

fn save_cmd(args: &[&str], live: &Live, p: &Pipeline) -> control::Reply {
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
    let mut rs = live.with_counters(p);
    if let Some(t) = table {
        rs.tables.retain(|x| x.table == t);
    }
    control::Reply::ok(print::print_save(&rs, counters))
}

/// iptables-restore on the running instance: the tables in the input replace
/// theirs, the others stay (with their counters); all or nothing.
fn restore_cmd(args: &[&str], body: &str, live: &mut Live, worker: &mut Worker) -> control::Reply {
    let (mut test, mut counters) = (false, false);
    let mut name = "<stdin>";
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--name" => name = it.next().copied().unwrap_or(name),
            "-t" | "--test" => test = true,
            "-c" | "--counters" => counters = true,
            "-n" | "--noflush" => return control::Reply {
                code: crate::EXIT_UNSUPPORTED,
                out: String::new(),
                err:
                    "fastables: restore -n (--noflush) on a running instance is not supported yet\n"
                        .into(),
            },
            other => {
                return control::Reply::fail(format!(
                    "fastables: restore: unknown option `{other}`\n"
                ))
            }
        }
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
    let mut merged = live.with_counters(worker.pipeline());
    for t in new.tables {
        match merged.tables.iter_mut().find(|x| x.table == t.table) {
            Some(slot) => *slot = t,
            None => merged.tables.push(t),
        }
    }
    merged
        .tables
        .sort_by_key(|t| Table::ALL.iter().position(|x| *x == t.table));
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
        worker.pipeline_mut().set_ruleset(Arc::clone(&compiled));
        live.rs = merged;
        live.compiled = compiled;
    }
    control::Reply::ok(String::new())
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

/// `conntrack -L/-C/-F/-D/-S` with the `-s -d -p --sport --dport` filters
/// (on the ORIGINAL tuple, as conntrack-tools has them). `-E` is answered
/// in [`answer`], which keeps the listener.
fn conntrack_cmd(args: &[&str], p: &mut Pipeline, now_ns: u64) -> control::Reply {
    let (op, filter) = match parse_ct_args(args) {
        Ok(x) => x,
        Err(m) => return ct_usage(&m),
    };
    if op == CtOp::Events {
        return ct_usage("-E needs a streaming connection");
    }
    let matches = |e: &fastables_conntrack::Entry| entry_matches(&filter, e);
    let mut ids: Vec<(fastables_conntrack::EntryId, OrigKey)> = p
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
    ids.sort_by_key(|x| x.1);
    let mut out = String::new();
    match op {
        CtOp::List => {
            if let Some(t) = p.conntrack() {
                for (id, _) in &ids {
                    if let Some(e) = t.entry(*id) {
                        out.push_str(&fastables_conntrack::format_entry(e, now_ns));
                        out.push('\n');
                    }
                }
            }
            control::Reply {
                code: 0,
                out,
                err: format!("{}\n", fastables_conntrack::format_summary(ids.len())),
            }
        }
        CtOp::Count => control::Reply::ok(format!(
            "{}\n",
            fastables_conntrack::format_count(ids.len())
        )),
        CtOp::Flush => {
            let mut gone = Vec::new();
            if let Some(t) = p.conntrack_mut() {
                gone = t.iter().map(|(_, e)| *e).collect();
                t.clear();
            }
            for e in &gone {
                p.note_destroyed(e, now_ns);
            }
            control::Reply {
                code: 0,
                out,
                err: "conntrack v1.4.7 (conntrack-tools): connection tracking table has been emptied.\n".into(),
            }
        }
        CtOp::Delete => {
            let mut gone = Vec::new();
            if let Some(t) = p.conntrack_mut() {
                for (id, _) in &ids {
                    if let Some(e) = t.remove(*id) {
                        out.push_str(&fastables_conntrack::format_entry(&e, now_ns));
                        out.push('\n');
                        gone.push(e);
                    }
                }
            }
            for e in &gone {
                p.note_destroyed(e, now_ns);
            }
            control::Reply {
                code: 0,
                out,
                err: format!(
                    "conntrack v1.4.7 (conntrack-tools): {} flow entries have been deleted.\n",
                    ids.len()
                ),
            }
        }
        CtOp::Events => ct_usage("-E needs a streaming connection"),
        CtOp::Stats => {
            let st = p.conntrack().map(|t| t.stats()).unwrap_or_default();
            control::Reply::ok(format!("{}\n", fastables_conntrack::format_stats(0, &st)))
        }
    }
}

fn stats_cmd(args: &[&str], worker: &Worker, port: &XdpPort, cfg: &Config) -> control::Reply {
    let json = match args {
        [] => false,
        ["--json"] => true,
        _ => return control::Reply::fail(format!("fastables: stats: unknown options {args:?}\n")),
    };
    let samples = iface_samples(port, cfg);
    let s = summary(&samples, worker);
    let (entries, max) = worker
        .pipeline()
        .conntrack()
        .map_or((0, 0), |t| (t.len(), t.max()));
    let xdp = |x: &fastables_stats::IfaceSample| {
        [
            ("rx_dropped", x.xdp_rx_dropped),
            ("rx_ring_full", x.xdp_rx_ring_full),
            ("fill_ring_empty", x.xdp_fill_ring_empty),
            ("rx_invalid", x.xdp_rx_invalid),
            ("tx_invalid", x.xdp_tx_invalid),
        ]
    };
    if json {
        let list = |items: Vec<String>| items.join(",");
        let interfaces = list(
            samples
                .iter()
                .map(|x| {
                    format!(
                        "{{\"name\":\"{}\",\"rx_packets\":{},\"rx_bytes\":{},\"tx_packets\":{},\"tx_bytes\":{}}}",
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
        return control::Reply::ok(format!(
            "{{\"interfaces\":[{interfaces}],\"drops\":{{{drops}}},\"xdp\":{{{xdp}}},\"conntrack\":{{\"entries\":{entries},\"max\":{max}}}}}\n"
        ));
    }
    let mut o = s.to_string();
    // What the kernel side of each AF_XDP socket dropped (XDP_STATISTICS).
    for x in &samples {
        let f: Vec<String> = xdp(x).iter().map(|(k, v)| format!("{k} {v}")).collect();
        o.push_str(&format!("xdp {}: {}\n", x.name, f.join(" ")));
    }
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
    control::Reply::ok(o)
}
