//! What the pipeline benchmarks run: the seed topology, generated filter
//! rulesets, batches of 64 frames and a harness that restores the frames
//! before each batch. Shared by `benches/pipeline.rs` (criterion) and
//! `examples/pipeline_count.rs` (callgrind, see `perf/callgrind.sh`), so the
//! two measure the same thing.
//!
//! The forwarded packet: from the container 172.18.0.2 on docker0 to
//! 93.184.216.34 (a host behind the default gateway 10.0.2.2 on eth0), one flow
//! per frame (source ports 40000..40064). Every frame is checked to come out
//! forwarded on eth0 before anything is measured.

// Each user (bench, example) uses a part of this module.
#![allow(dead_code)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastables_config::Config;
use fastables_conntrack::Tuple;
use fastables_dataplane::pipeline::{Pipeline, PipelineOptions};
use fastables_dataplane::worker::{Action, Batch};
use fastables_packet::builder::{self, EthSpec, IpSpec, TcpSpec, UdpSpec};
use fastables_packet::ipv4::{PROTO_TCP, PROTO_UDP};
use fastables_packet::{IfIndex, MacAddr};
use fastables_port::{Frame, FrameAddr, FRAME_SIZE};
use fastables_rules::compile::{CompiledRuleset, RuleState};
use fastables_rules::ctx::{PacketCtx, Verdict};
use fastables_rules::model::{Hook, Table};

/// The seed topology: eth0 10.0.2.15/24 + 1.2.3.56/24, docker0 172.18.0.1/16,
/// default via 10.0.2.2, 1.1.1.1/32 via 1.2.3.4, static neighbors.
pub const SEED_CONFIG: &str = include_str!("../../../demo/fastables.toml");
/// The seed's own rules (mangle PREROUTING TTL, filter INPUT); a forwarded
/// packet from docker0 walks the one mangle rule and no filter rule.
pub const SEED_RULES: &str = include_str!("../../../demo/rules.v4");

/// Frames per batch, as the worker's default burst.
pub const BATCH: usize = 64;

const ETH0_IF: IfIndex = 0;
const DOCKER0_IF: IfIndex = 1;
const DOCKER0_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x01]);
const CONTAINER_MAC: MacAddr = MacAddr([0x02, 0x42, 0xac, 0x12, 0x00, 0x02]);
const CONTAINER_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

/// The frame size of a benchmark case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// UDP to port 53, 60 bytes (64 on the wire with the FCS; the pipeline
    /// trims the Ethernet padding).
    Udp64,
    /// TCP ACK|PSH to port 443 with 1460 bytes of data: a 1500-byte datagram,
    /// a 1514-byte frame (eth0's MTU is 1500, DF set: no fragmentation).
    Tcp1500,
}

impl FrameKind {
    /// Name used in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Udp64 => "udp_64B",
            FrameKind::Tcp1500 => "tcp_1500B",
        }
    }
}

/// The Ethernet and IP headers of a frame from the container to `dst`.
fn from_container(dst: Ipv4Addr, ident: u16) -> (EthSpec, IpSpec) {
    let eth = EthSpec {
        src: CONTAINER_MAC,
        dst: DOCKER0_MAC,
        vlan: None,
        pad: true,
    };
    let ip = IpSpec {
        src: CONTAINER_IP,
        dst,
        ident,
        ..IpSpec::default()
    };
    (eth, ip)
}

/// A 60-byte UDP frame (64 on the wire) from the container to `dst`:53.
fn dns_query(dst: Ipv4Addr, ident: u16, sport: u16) -> Vec<u8> {
    let (eth, ip) = from_container(dst, ident);
    let udp = UdpSpec {
        src_port: sport,
        dst_port: 53,
    };
    let f = builder::udp_frame(&eth, &ip, &udp, &[0u8; 18]);
    assert_eq!(f.len(), 60, "64 bytes on the wire with the FCS");
    f
}

/// Frame `i` of a batch of `kind`.
pub fn frame(kind: FrameKind, i: usize) -> Vec<u8> {
    let sport = 40000 + i as u16;
    match kind {
        FrameKind::Udp64 => dns_query(REMOTE_IP, i as u16, sport),
        FrameKind::Tcp1500 => {
            let (eth, ip) = from_container(REMOTE_IP, i as u16);
            let f = builder::tcp_frame(
                &eth,
                &ip,
                &TcpSpec {
                    src_port: sport,
                    dst_port: 443,
                    seq: 1_000_000,
                    ack: 2_000_000,
                    flags: 0x18, // ACK | PSH
                    window: 502,
                    ..TcpSpec::default()
                },
                &[0x5a; 1460],
            );
            assert_eq!(f.len(), 1514, "a 1500-byte datagram");
            f
        }
    }
}

/// Rule `i` of the filler: realistic FORWARD rules (port forwards to
/// containers, per-subnet service rules, a blocklist, per-host REJECTs) that
/// the benchmark packets never match.
fn filler(i: usize) -> String {
    let a = (i / 250) % 250;
    let b = i % 250;
    let port = 2000 + (i % 3000);
    let host = 10 + i % 240;
    match i % 5 {
        0 => format!(
            "-A FORWARD -s 10.{a}.{b}.0/24 -d 172.18.{b}.0/24 -p tcp -m tcp --dport {port} -j ACCEPT"
        ),
        1 => format!(
            "-A FORWARD -d 172.18.{a}.{host}/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport {port} -j ACCEPT"
        ),
        2 => format!("-A FORWARD -s 172.18.0.0/16 -p udp -m udp --dport {port} -j ACCEPT"),
        3 => format!("-A FORWARD -d 198.51.{a}.{b}/32 -j DROP"),
        _ => format!(
            "-A FORWARD -s 172.18.{a}.{host}/32 -p tcp -m multiport --dports {port},{} -j REJECT --reject-with icmp-port-unreachable",
            port + 1
        ),
    }
}

/// A filter table whose FORWARD chain (policy DROP) has `n >= 2` rules; the
/// packets match rule `n - 1` (second to last), so they walk `n - 1` rules.
pub fn filter_rules(n: usize) -> String {
    assert!(n >= 2, "the hit rule is second to last");
    let mut s =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..n - 2 {
        s.push_str(&filler(i));
        s.push('\n');
    }
    s.push_str("-A FORWARD -s 172.18.0.0/16 -i docker0 -o eth0 -j ACCEPT\n");
    s.push_str(&filler(n - 2));
    s.push_str("\nCOMMIT\n");
    s
}

/// The rule text of a case name: `empty`, `seed`, or a number of filter rules.
pub fn rules_text(name: &str) -> String {
    match name {
        "empty" => String::new(),
        "seed" => SEED_RULES.to_string(),
        n => filter_rules(
            n.parse()
                .expect("a ruleset name: empty, seed or a rule count"),
        ),
    }
}

/// The seed configuration.
pub fn seed_config() -> Config {
    Config::parse(SEED_CONFIG, "demo/fastables.toml").expect("the seed config parses")
}

/// `text` compiled for the seed's interfaces.
pub fn compile(text: &str) -> Arc<CompiledRuleset> {
    let cfg = seed_config();
    let rs = fastables_rules::parse::parse_restore(text, "bench.rules").expect("bench rules parse");
    Arc::new(CompiledRuleset::compile(&rs, &cfg.iface_names()).expect("bench rules compile"))
}

/// A pipeline, its frame memory and the batch it runs: what both harnesses
/// measure.
struct Rig {
    pipeline: Pipeline,
    mem: Vec<u8>,
    batch: Batch,
}

impl Rig {
    /// One batch through the pipeline.
    #[inline(always)]
    fn run(&mut self, now_ns: u64) {
        self.pipeline
            .process_batch(black_box(now_ns), &mut self.mem, &mut self.batch);
        black_box(&self.batch.frames);
    }

    /// Panics unless every frame of the last run was forwarded on eth0.
    fn check(&self) {
        assert_eq!(self.batch.frames.len(), BATCH);
        assert_eq!(self.batch.verdicts.len(), BATCH);
        for v in &self.batch.verdicts {
            assert_eq!(
                *v,
                Action::Forward { port: ETH0_IF },
                "every bench frame must be forwarded on eth0"
            );
        }
    }
}

/// A harness that criterion times batch by batch ([`time_batches`]).
pub trait Batches {
    /// The frames of the next batch into place (not timed).
    fn restore(&mut self);
    /// The measured part: one batch through the pipeline.
    fn run(&mut self, now_ns: u64);
}

/// The time of `iters` batches of `h`, each restored first (untimed), at
/// `now` 1 s + the batch's number.
pub fn time_batches(h: &mut impl Batches, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..iters {
        h.restore();
        let t = Instant::now();
        h.run(1_000_000_000 + i);
        total += t.elapsed();
    }
    total
}

/// A pipeline over a batch of 64 frames, with the pristine frames to put back
/// before each run (the pipeline rewrites TTL, checksum and MACs in place and
/// trims padding).
pub struct Harness {
    rig: Rig,
    pristine: Vec<Vec<u8>>,
    frames: Vec<Frame>,
    spares: Vec<FrameAddr>,
}

impl Harness {
    /// A pipeline for the seed topology with `rules`, and a batch of `kind` frames.
    pub fn new(rules: &str, kind: FrameKind) -> Harness {
        Harness::with_options(rules, kind, PipelineOptions::default())
    }

    /// [`Harness::new`] with these pipeline options.
    pub fn with_options(rules: &str, kind: FrameKind, opts: PipelineOptions) -> Harness {
        Harness::with_config(rules, kind, opts, seed_config())
    }

    /// [`Harness::new`] with these pipeline options and configuration.
    pub fn with_config(
        rules: &str,
        kind: FrameKind,
        opts: PipelineOptions,
        cfg: Config,
    ) -> Harness {
        let pipeline = Pipeline::with_options(&cfg, compile(rules), opts).expect("pipeline");
        let pristine: Vec<Vec<u8>> = (0..BATCH).map(|i| frame(kind, i)).collect();
        let frames = pristine
            .iter()
            .enumerate()
            .map(|(i, f)| Frame::rx((i * FRAME_SIZE) as FrameAddr, f.len() as u16, DOCKER0_IF))
            .collect();
        // Spare buffers for generated packets (none expected when forwarding).
        let spares = (BATCH..3 * BATCH)
            .map(|i| (i * FRAME_SIZE) as FrameAddr)
            .collect();
        let mut h = Harness {
            rig: Rig {
                pipeline,
                mem: vec![0u8; 3 * BATCH * FRAME_SIZE],
                batch: Batch::with_capacity(BATCH),
            },
            pristine,
            frames,
            spares,
        };
        h.restore();
        h.run(1);
        h.check();
        h
    }

    /// The pipeline (to set a trace).
    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.rig.pipeline
    }

    /// Put the pristine frames and descriptors back (no allocation).
    pub fn restore(&mut self) {
        let r = &mut self.rig;
        for (f, p) in self.frames.iter().zip(&self.pristine) {
            let at = f.addr as usize;
            r.mem[at..at + p.len()].copy_from_slice(p);
        }
        r.batch.clear();
        r.batch.frames.extend_from_slice(&self.frames);
        r.batch.spare.extend_from_slice(&self.spares);
    }

    /// The measured part: one batch through the pipeline.
    #[inline(always)]
    pub fn run(&mut self, now_ns: u64) {
        self.rig.run(now_ns);
    }

    /// Panics unless every frame of the last run was forwarded on eth0 with
    /// nothing generated.
    pub fn check(&self) {
        self.rig.check();
        assert!(self.rig.batch.generated.is_empty(), "nothing generated");
    }
}

impl Batches for Harness {
    fn restore(&mut self) {
        Harness::restore(self);
    }
    #[inline(always)]
    fn run(&mut self, now_ns: u64) {
        Harness::run(self, now_ns);
    }
}

/// UDP frame of flow `k` of a large set: from the container 172.18.0.2,
/// source port 1024 + k % 60000, to 93.184.(216 + k / 60000 / 250).(k / 60000 % 250 + 1):53
/// (so that MASQUERADE keeps every source port: the reply tuples differ by
/// the remote address).
pub fn flow_frame(k: usize) -> Vec<u8> {
    let d = k / 60000;
    let dst = Ipv4Addr::new(93, 184, (216 + d / 250) as u8, (d % 250 + 1) as u8);
    dns_query(dst, k as u16, 1024 + (k % 60000) as u16)
}

/// A pipeline with the seed rules (MASQUERADE) and a set of UDP flows
/// ([`flow_frame`]). [`SpreadHarness::new`]: the connection table holds
/// every flow's connection and each batch carries 64 of them picked at
/// random, so that their conntrack entries are not in the cache (with a
/// million flows the table is far larger than the LLC).
/// [`SpreadHarness::fresh`]: no connection yet, each batch carries the next
/// 64 flows, every packet a new MASQUERADEd connection.
pub struct SpreadHarness {
    rig: Rig,
    /// The frames of every flow, `FRAME_LEN` bytes each.
    all: Vec<u8>,
    flows: usize,
    /// Random flows (`Some(xorshift state)`) or the next ones (`None`).
    rng: Option<u64>,
    next: usize,
    /// [`SpreadHarness::churn`]: the flows after the first `flows` that
    /// carry the new connections, and the first of the last batch's.
    churn: Option<(usize, Option<usize>)>,
    /// Batches run so far (the churn's clock).
    batches: u64,
    /// [`SpreadHarness::churn_timed`]: the removal is timed, in the run.
    timed_removal: bool,
    /// The first churn flow of the batch whose connections the next run
    /// removes first (with `timed_removal`).
    to_remove: Option<usize>,
    frames: Vec<Frame>,
}

/// The churn's virtual time per batch: 64 packets at 2 M/s (the new
/// connection rate issue 3 asks for), so that the expiry sweep does the
/// share of its pass a second that it does at that rate.
pub const CHURN_BATCH_NS: u64 = 32_000;

const FRAME_LEN: usize = 60;

/// Flows that [`SpreadHarness::churn`] turns into new connections in turn.
pub const CHURN: usize = 65_536;

impl SpreadHarness {
    /// The table filled with `flows` connections (each flow's first packet
    /// sent through the pipeline once). `ahead`: conntrack lookups of a
    /// batch together (`PipelineOptions::conntrack_lookup_ahead` default) or
    /// one at a time.
    pub fn new(flows: usize, ahead: bool) -> SpreadHarness {
        SpreadHarness::with_cache(flows, ahead, true)
    }

    /// [`SpreadHarness::new`] with the flow cache on or off.
    pub fn with_cache(flows: usize, ahead: bool, cache: bool) -> SpreadHarness {
        let mut h = SpreadHarness::fresh_with_cache(flows, ahead, cache);
        for first in (0..flows).step_by(BATCH) {
            h.load(|i| (first + i) % flows);
            h.rig.run(1);
            h.rig.check();
        }
        assert!(
            h.rig.pipeline.conntrack().expect("conntrack").len() >= flows,
            "every flow has its connection"
        );
        h.rng = Some(0x9e37_79b9_7f4a_7c15);
        h
    }

    /// `flows` flows and an empty connection table: batches of the next 64
    /// flows, each packet a new connection (the table has room for all).
    pub fn fresh(flows: usize, ahead: bool) -> SpreadHarness {
        SpreadHarness::fresh_with_cache(flows, ahead, true)
    }

    fn fresh_with_cache(flows: usize, ahead: bool, cache: bool) -> SpreadHarness {
        let mut cfg = seed_config();
        cfg.conntrack.max = (flows + flows / 4 + 1024) as u32;
        cfg.conntrack.buckets = flows.next_power_of_two() as u32;
        let opts = PipelineOptions {
            conntrack_lookup_ahead: if ahead {
                PipelineOptions::default().conntrack_lookup_ahead
            } else {
                usize::MAX
            },
            flow_cache: cache,
            ..PipelineOptions::default()
        };
        let pipeline = Pipeline::with_options(&cfg, compile(SEED_RULES), opts).expect("pipeline");
        // Huge pages for the table, as `fastables run` asks
        // (FASTABLES_BENCH_HUGE=0: the system's default, 4 KiB pages).
        if std::env::var("FASTABLES_BENCH_HUGE").as_deref() != Ok("0") {
            for (addr, len) in pipeline.regions() {
                let _ = fastables_xdp::advise_huge_pages(addr, len);
            }
        }
        let mut all = Vec::with_capacity(flows * FRAME_LEN);
        for k in 0..flows {
            let f = flow_frame(k);
            assert_eq!(f.len(), FRAME_LEN);
            all.extend_from_slice(&f);
        }
        let frames = (0..BATCH)
            .map(|i| Frame::rx((i * FRAME_SIZE) as FrameAddr, FRAME_LEN as u16, DOCKER0_IF))
            .collect();
        SpreadHarness {
            rig: Rig {
                pipeline,
                mem: vec![0u8; BATCH * FRAME_SIZE],
                batch: Batch::with_capacity(BATCH),
            },
            all,
            flows,
            rng: None,
            next: 0,
            churn: None,
            batches: 0,
            timed_removal: false,
            to_remove: None,
            frames,
        }
    }

    /// The table holding `flows` connections as with
    /// [`SpreadHarness::new`]; then each batch carries 64 flows without
    /// a connection (the next of [`CHURN`] more), every packet a new
    /// MASQUERADEd connection in a table of `flows`. Before the next batch
    /// (untimed) its connections are removed again: the table keeps its
    /// size, and the flows come round again as new ones. Its clock moves
    /// [`CHURN_BATCH_NS`] a batch.
    pub fn churn(flows: usize) -> SpreadHarness {
        let mut h = SpreadHarness::with_cache(flows, true, true);
        h.rng = None;
        h.all.reserve(CHURN * FRAME_LEN);
        for k in flows..flows + CHURN {
            h.all.extend_from_slice(&flow_frame(k));
        }
        h.churn = Some((0, None));
        h
    }

    /// [`SpreadHarness::churn`], but the removal of the last batch's
    /// connections is timed: done at the start of the next run, as the
    /// expiry sweep would remove them (the steady state of a NAT whose
    /// connections come and go at the rate they are made).
    pub fn churn_timed(flows: usize) -> SpreadHarness {
        let mut h = SpreadHarness::churn(flows);
        h.timed_removal = true;
        h
    }

    /// Remove the connections of the churn flows `first..first + 64`.
    fn remove_churned(&mut self, first: usize) {
        let flows = self.flows;
        let Some(t) = self.rig.pipeline.conntrack_mut() else {
            return;
        };
        for i in 0..BATCH {
            let k = flows + (first + i) % CHURN;
            let f = &self.all[k * FRAME_LEN..(k + 1) * FRAME_LEN];
            // Ethernet + IPv4 (20 bytes) + UDP ports.
            let word = |at: usize| u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
            let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
            let o = Tuple::new(17, word(26), port(34), word(30), port(36));
            let (id, _) = t
                .lookup(&o, 0)
                .expect("the churned flow has its connection");
            t.remove(id);
        }
    }

    fn load(&mut self, mut flow: impl FnMut(usize) -> usize) {
        let r = &mut self.rig;
        for (i, f) in self.frames.iter().enumerate() {
            let k = flow(i);
            let at = f.addr as usize;
            r.mem[at..at + FRAME_LEN]
                .copy_from_slice(&self.all[k * FRAME_LEN..(k + 1) * FRAME_LEN]);
        }
        r.batch.clear();
        r.batch.frames.extend_from_slice(&self.frames);
    }

    /// Panics unless every frame of the last run was forwarded on eth0.
    pub fn check(&self) {
        self.rig.check();
    }

    /// Connections in the table.
    pub fn connections(&self) -> usize {
        self.rig.pipeline.conntrack().map_or(0, |t| t.len())
    }
}

impl Batches for SpreadHarness {
    /// The next batch: 64 random flows' frames, or the next 64 flows' (no
    /// allocation).
    fn restore(&mut self) {
        let n = self.flows;
        if let Some((next, last)) = self.churn {
            if self.timed_removal {
                self.to_remove = last;
            } else if let Some(first) = last {
                self.remove_churned(first);
            }
            self.load(|i| n + (next + i) % CHURN);
            self.churn = Some(((next + BATCH) % CHURN, Some(next)));
            return;
        }
        match self.rng {
            Some(mut x) => {
                self.load(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % n as u64) as usize
                });
                self.rng = Some(x);
            }
            None => {
                let first = self.next;
                self.load(|i| (first + i) % n);
                self.next = (first + BATCH) % n;
            }
        }
    }

    #[inline(always)]
    fn run(&mut self, now_ns: u64) {
        if let Some(first) = self.to_remove.take() {
            self.remove_churned(first);
        }
        if self.churn.is_some() {
            // From 1 s on, [`CHURN_BATCH_NS`] a batch; back to 1 s every
            // 500 000 batches (16 s), before the table's unreplied UDP
            // entries (30 s) would expire.
            self.batches += 1;
            self.rig
                .run(1_000_000_000 + (self.batches % 500_000) * CHURN_BATCH_NS);
        } else {
            self.rig.run(now_ns);
        }
    }
}

/// The rule-evaluation part alone: filter FORWARD on the context the pipeline
/// builds for frame `i` (after the TTL decrement).
pub fn forward_ctx(kind: FrameKind, i: usize) -> PacketCtx {
    let mut p = PacketCtx::new();
    p.src = u32::from(CONTAINER_IP);
    p.dst = u32::from(REMOTE_IP);
    p.ttl = 63;
    p.has_l4 = true;
    p.sport = 40000 + i as u16;
    match kind {
        FrameKind::Udp64 => {
            p.proto = PROTO_UDP;
            p.len = 46;
            p.dport = 53;
        }
        FrameKind::Tcp1500 => {
            p.proto = PROTO_TCP;
            p.len = 1500;
            p.dport = 443;
            p.tcp_flags = 0x18;
        }
    }
    p.in_if = Some(DOCKER0_IF);
    p.out_if = Some(ETH0_IF);
    p
}

/// Panics unless filter FORWARD accepts `ctx` under `rules` (the hit rule or
/// the empty ruleset's ACCEPT).
pub fn check_forward_accept(rules: &CompiledRuleset, ctx: &PacketCtx) {
    let mut state = RuleState::new(rules);
    let mut c = *ctx;
    let v = rules.run(Table::Filter, Hook::Forward, &mut c, &mut state, 0);
    assert_eq!(v, Verdict::Accept, "the bench packet must be accepted");
}
