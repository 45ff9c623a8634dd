//! The packet's way through, in the kernel's order.
//!
//! ```text
//! parse ─ L2 (ours / broadcast / multicast, else OTHERHOST drop) ─ ARP → arp_process
//!   (conntrack loaded: fragments held until their datagram is whole, reasm)
//!   PREROUTING raw ─ conntrack in ─ mangle ─ nat (DNAT, first packet only)
//!   route_input (martians, local table, LPM)
//!   ├─ local / broadcast → INPUT mangle ─ filter ─ nat → local delivery
//!   │     ICMP echo → echo reply; TCP → RST; UDP → port unreachable;
//!   │     other protocols → protocol unreachable; IGMP / other ICMP consumed
//!   └─ forward (ip_forward): TTL <= 1 → time exceeded; DF and > MTU → frag needed;
//!         TTL-1; FORWARD mangle ─ filter; POSTROUTING mangle ─ nat (SNAT) ─ confirm;
//!         NAT rewrite ─ neighbor → L2 rewrite → (> MTU without DF: fragments) → tx
//! generated (ICMP errors, RSTs, echo replies): OUTPUT raw ─ mangle ─ nat ─ filter,
//!   POSTROUTING mangle ─ nat, neighbor (unresolved → ARP request instead) → tx
//! ```
//!
//! As in `ip_forward`, the TTL check, the DF/MTU check and the TTL decrement come
//! before the FORWARD hook (FORWARD rules and LOG see the decremented TTL, a
//! REJECT in FORWARD quotes it). Rule effects are applied to the frame right
//! after the table that produced them: `-j TTL` (header rewritten with an
//! incremental checksum), `-j TCPMSS` (MSS option lowered on SYNs, never raised
//! or added; `--clamp-mss-to-pmtu` uses min(egress MTU, MTU towards the source) - 40),
//! `-j LOG` (a line into the [`LogQueue`]), `MARK` (kept in the context across
//! hooks).
//!
//! Conntrack (the `fastables-conntrack` table) is loaded when the ruleset
//! needs it (a state/conntrack match, a NAT target, ...; see [`Needs`]) and
//! stays loaded, as the kernel module does. The nat table runs for a
//! connection's first packet only; the binding it chose lives in the entry and
//! every later packet of the connection (and ICMP errors RELATED to it, outer
//! and quoted headers) is rewritten from it ([`nat`]).
//!
//! Not done (and counted where it applies): reassembly for local delivery
//! (fragments to us are dropped), fragmentation of locally generated packets,
//! ICMP redirects (`send_redirects`), IP options processing (forwarded as they
//! are, not echoed in replies), ARP hold queues (one ARP request per neighbor
//! per second, the packet is dropped), the ICMP rate limits are approximate (see [`icmp::IcmpRateLimiter`]), VLANs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fastables_conntrack::{
    CtState, Dir, Entry, EntryId, EventKind, Hint, InsertError, Manip, NatRange, NewConn,
    Table as CtTable, TableConfig, TableFullLog, Track, Tuple, LOOKUP_BATCH, PREFETCH_AHEAD,
};
use fastables_packet::ipv4::{Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use fastables_packet::parse::{
    ipv4_l4_checksum_ok, l4_checksum_ok, parse_ipv4_simple, Ipv4Info, L3, L4,
};
use fastables_packet::tcp::{flags as tcpf, TcpPacket};
use fastables_packet::{parse_frame, MacAddr, ParseError};
use fastables_rules::compile::{CompiledRuleset, RuleState, Shortcut};
use fastables_rules::ctx::{tcp_option_kinds, CtCtx, IfIndex, Needs, PacketCtx, Verdict};
use fastables_rules::model::{CtStateSet, Hook, RejectWith, Table, Target, TtlTarget};

use self::flow::{Decision, FlowCache};
use self::fragment as frag;
use self::reasm as defrag;
use self::reasm::Defrag;
use self::trace::Tracer;
use crate::config::Config;
use crate::drop::{DropCounters, DropReason};
use crate::rss::Rss;

mod flow;
pub mod fragment;
pub mod nat;
pub mod reasm;
pub mod trace;

pub use self::trace::TraceFilter;

use crate::icmp::{self, codes};
use crate::iface::{IfaceError, Interfaces};
use crate::log::{format_ipv4, LogQueue};
use crate::neigh::{self, ArpOutcome, HeldEvent, Neighbors};
use crate::port::{Frame, FrameAddr, FRAME_SIZE};
use crate::route::{Fib, RouteResult, RouteType};
use crate::worker::{Action, Batch};

const ETH_LEN: usize = 14;

/// Tunables of a pipeline (defaults are the kernel's where it has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineOptions {
    /// LOG lines per second (token bucket rate).
    pub log_rate_per_sec: u32,
    /// LOG burst.
    pub log_burst: u32,
    /// LOG lines queued until drained.
    pub log_queue: usize,
    /// Bound of the learned neighbor table (gc_thresh3, 1024).
    pub neigh_dynamic_max: usize,
    /// Global ICMP error rate (net.ipv4.icmp_msgs_per_sec, 1000).
    pub icmp_msgs_per_sec: u32,
    /// Global ICMP error burst (net.ipv4.icmp_msgs_burst, 50).
    pub icmp_msgs_burst: u32,
    /// Seed of the conntrack table (hash keys, NAT port choice): `--seed` in
    /// `sim`; a live instance should pass a random value.
    pub conntrack_seed: u64,
    /// Conntrack slots examined for expiry per batch, at most: the sweep
    /// visits the whole table once a second ([`SWEEP_PERIOD_NS`]), at least
    /// [`SWEEP_MIN`] slots a batch, and never more than this.
    pub conntrack_expire_budget: usize,
    /// From this many connections on, the conntrack entries of a batch's
    /// frames are looked up together before the frames are processed
    /// (`Table::lookup_batch`: the cache misses of a large table overlap;
    /// a small one is in the cache, where the extra pass only costs
    /// instructions). Decisions are the same either way. `usize::MAX`: never.
    pub conntrack_lookup_ahead: usize,
    /// The flow cache ([`flow`]): when every chain a forwarded
    /// packet crosses is flow-invariant, the packets of an ESTABLISHED
    /// connection replay the rule counters and the route recorded from its
    /// first such packet instead of running the chains. Decisions, counters
    /// and output are the same either way.
    pub flow_cache: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            log_rate_per_sec: 100,
            log_burst: 100,
            log_queue: 256,
            neigh_dynamic_max: neigh::DEFAULT_DYNAMIC_MAX,
            icmp_msgs_per_sec: 1000,
            icmp_msgs_burst: 50,
            conntrack_seed: 0,
            conntrack_expire_budget: 1024,
            conntrack_lookup_ahead: LOOKUP_AHEAD_MIN,
            flow_cache: true,
        }
    }
}

/// Errors building a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An interface cannot be used (e.g. no MAC address).
    #[error(transparent)]
    Iface(#[from] IfaceError),
    /// The `[conntrack]` section is out of range.
    #[error("[conntrack]: {0}")]
    Conntrack(#[from] fastables_conntrack::ConfigError),
}

/// Totals of one pipeline (per worker), `Relaxed` atomics for a stats reader.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    /// Frames received.
    pub rx: AtomicU64,
    /// Frames forwarded.
    pub forwarded: AtomicU64,
    /// Frames consumed by the local stack (answered ARP/echo, other ICMP, IGMP).
    pub consumed: AtomicU64,
    /// Frames dropped (sum of the drop counters for received frames).
    pub dropped: AtomicU64,
    /// Packets generated and handed to the port (ICMP, RST, ARP, and the
    /// fragments after the first of a forwarded datagram).
    pub generated: AtomicU64,
}

impl PipelineCounters {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// [`PipelineCounters`] of one batch's received frames, kept in plain
/// integers while the batch runs.
#[derive(Default)]
struct BatchTotals {
    rx: u64,
    forwarded: u64,
    consumed: u64,
    dropped: u64,
}

impl BatchTotals {
    fn add_to(&self, c: &PipelineCounters) {
        for (n, c) in [
            (self.rx, &c.rx),
            (self.forwarded, &c.forwarded),
            (self.consumed, &c.consumed),
            (self.dropped, &c.dropped),
        ] {
            if n != 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// What to generate after a received frame has its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gen {
    /// An ICMP error quoting the frame's datagram. `src`: the source address to
    /// use (the original destination for locally delivered packets), else the
    /// route's.
    IcmpError {
        ty: u8,
        code: u8,
        rest: u32,
        src: Option<u32>,
    },
    /// A TCP reset; `reject`: from REJECT (TOS 0) rather than the stack (TOS copied).
    /// `related_new`: REJECT's reset carries the rejected packet's connection
    /// (`nf_ct_attach`, RELATED in the reply direction); when that connection
    /// is still unconfirmed, this is its context for the rules.
    TcpReset {
        reject: bool,
        related_new: Option<CtCtx>,
    },
    /// An echo reply.
    EchoReply,
    /// An ARP reply on the ingress port.
    ArpReply(fastables_packet::arp::ArpRepr),
    /// An ARP request for `target` on `dev`.
    ArpRequest {
        dev: IfIndex,
        target: u32,
        sender: u32,
    },
    /// A unicast ARP request to `mac` for `target` on `dev` (probing a
    /// stale entry).
    ArpProbe {
        dev: IfIndex,
        target: u32,
        sender: u32,
        mac: MacAddr,
    },
    /// Fragment the (forwarded, L2-rewritten) frame for `mtu`.
    Fragment { mtu: u16 },
}

/// The connection of the packet being processed (the kernel's `skb->_nfct`).
#[derive(Debug, Clone, Copy)]
enum Ct {
    /// Not tracked: conntrack off, NOTRACK, or INVALID.
    None,
    /// A packet of a confirmed connection, in `dir`.
    Conn { id: EntryId, dir: Dir },
    /// An ICMP error RELATED to a connection, travelling in `dir`.
    Related { id: EntryId, dir: Dir },
    /// The last packet of a connection deleted by it (a RST).
    Killed { entry: Entry, dir: Dir },
    /// The first packet of a connection, confirmed when it leaves.
    New(NewConn),
}

/// The pipeline of one worker.
pub struct Pipeline {
    ifs: Interfaces,
    fib: Fib,
    neigh: Neighbors,
    rules: Arc<CompiledRuleset>,
    state: RuleState,
    /// `rules.shortcut(table, hook)` for every table and hook: the chains
    /// whose run is known without the packet.
    shortcuts: Shortcuts,
    needs: Needs,
    drops: Arc<DropCounters>,
    counters: Arc<PipelineCounters>,
    logs: LogQueue,
    opts: PipelineOptions,
    icmp_rl: icmp::IcmpRateLimiter,
    /// IP ID of the next generated packet that carries one.
    next_ident: u16,
    /// Set by `process_rx` when it returns [`Action::Held`]: the frame's
    /// interface and next hop.
    pending_hold: Option<(IfIndex, u32)>,
    /// Scratch for [`Neighbors::service`] (capacity allocated once).
    held_events: Vec<HeldEvent>,
    /// Datagrams under reassembly (while conntrack is loaded).
    defrag: Defrag,
    /// Set by `process_rx` when it holds a fragment.
    pending_frag: Option<(defrag::Key, defrag::Piece)>,
    /// While the first fragment of a reassembled datagram goes through
    /// `process_rx`: the datagram's length.
    reasm: Option<u16>,
    /// Scratch for the pieces of a reassembled datagram.
    frag_scratch: Vec<defrag::Piece>,
    /// Recent `route_input` decisions (the FIB and the interfaces do not
    /// change while the pipeline lives, so nothing invalidates them).
    route_cache: Box<[RouteSlot]>,
    /// `fastables trace`: the tracer while one is set.
    tracer: Option<Tracer>,
    /// The packet being processed is traced.
    tracing: bool,
    /// With several workers: the NIC's RSS and this worker's queue.
    rss: Option<(Arc<Rss>, u16)>,
    /// Reply tuples of connections confirmed here whose replies land on
    /// another queue (DNAT): the owner's hand-off requests.
    handoffs: Vec<fastables_conntrack::Tuple>,
    /// Conntrack events for `conntrack -E`, collected only while someone
    /// listens ([`Pipeline::set_ct_events`]); bounded, the excess counted.
    ct_events: Vec<(EventKind, Entry, u64)>,
    ct_events_on: bool,
    ct_events_lost: u64,
    /// The connection table, present while the ruleset needs conntrack.
    ct: Option<CtTable>,
    ct_cfg: TableConfig,
    /// What one `lookup_batch` found for each frame of the current run of
    /// [`LOOKUP_BATCH`] frames (index: position in the run).
    ct_ahead: [Ahead; LOOKUP_BATCH],
    /// The address source NAT gave the last new connection (not a null
    /// binding): the guess of [`CtTable::prefetch_new`].
    last_snat: Option<u32>,
    /// The hint of the frame being processed, taken by its PREROUTING `ct_in`.
    ct_hint: Option<Hint>,
    /// The flow cache ([`flow`]), sized for the conntrack table.
    flow: FlowCache,
    /// The flow cache is on and every chain of the forward path is
    /// flow-invariant ([`CompiledRuleset::flow_invariant`]).
    fast_ok: bool,
    /// The frame being processed was tracked by [`Pipeline::fast_forward`],
    /// which then gave it to the slow path: its PREROUTING `ct_in` takes
    /// this instead of tracking again.
    pretracked: Option<Track>,
    /// The frame being processed records its decision for this connection
    /// and direction (its rule counters are being recorded).
    fast_rec: Option<(EntryId, Dir, CtState)>,
    /// Set by the slow path when the recorded frame was forwarded as an
    /// ESTABLISHED packet of `fast_rec`: its route.
    fast_route: Option<(IfIndex, u32, u16)>,
    /// Frames forwarded by [`Pipeline::fast_forward`].
    fast_hits: u64,
    /// When the expiry sweep ran last.
    last_sweep_ns: u64,
    /// While recording: the path's length after PREROUTING.
    fast_pre_len: usize,
    /// `[conntrack] checksum` (nf_conntrack_checksum).
    ct_checksum: bool,
    /// The policy entries the chains of [`FORWARD_PATH`] without rules
    /// count for every forwarded packet (not recorded in decisions).
    fast_policies: ([u32; 5], usize),
    /// raw PREROUTING is absent or a policy ACCEPT without rules: it lets
    /// every packet reach conntrack.
    raw_continues: bool,
}

/// The tables and hooks a forwarded packet crosses after conntrack has
/// seen it as ESTABLISHED (nat runs only for a connection's first packet).
const FORWARD_PATH: [(Table, Hook); 5] = [
    (Table::Raw, Hook::Prerouting),
    (Table::Mangle, Hook::Prerouting),
    (Table::Mangle, Hook::Forward),
    (Table::Filter, Hook::Forward),
    (Table::Mangle, Hook::Postrouting),
];

/// The policy entries of the chains without rules of [`FORWARD_PATH`]
/// (their counts are not in recorded paths).
fn forward_policies(s: &Shortcuts) -> ([u32; 5], usize) {
    let mut out = ([0; 5], 0);
    for (t, h) in FORWARD_PATH {
        if let Some(Shortcut::Policy { entry, .. }) = s[t as usize][h as usize] {
            if let Some(slot) = out.0.get_mut(out.1) {
                *slot = entry;
                out.1 += 1;
            }
        }
    }
    out
}

/// The expiry sweep visits every connection once in this time.
pub const SWEEP_PERIOD_NS: u64 = 1_000_000_000;

/// The least the sweep examines per batch (a table this small: all of it),
/// so that it moves on when batches come faster than the clock's steps.
/// Small: at a high packet rate a larger floor, not the time share, sets
/// the pace (256 made a table of a million entries swept 4 slots per packet
/// at any rate, a full pass every quarter second at 1 M packets/s).
pub const SWEEP_MIN: usize = 16;

/// The slots the expiry sweep examines in a batch at `now_ns` for a table of
/// `entries`: its share of a pass a [`SWEEP_PERIOD_NS`] since the last
/// batch, at least [`SWEEP_MIN`], at most `max`. (A table of a million
/// entries under load was swept 1024 slots per 64 packets, 16 KiB of
/// entries read per packet: a full pass every few milliseconds.)
fn sweep_budget(last: &mut u64, now_ns: u64, entries: usize, max: usize) -> usize {
    let dt = now_ns.saturating_sub(*last);
    *last = now_ns;
    let share = (entries as u128 * u128::from(dt)).div_ceil(u128::from(SWEEP_PERIOD_NS));
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(SWEEP_MIN.min(max), max)
}

/// Whether raw PREROUTING lets every packet through unseen.
fn raw_continues(s: &Shortcuts) -> bool {
    matches!(
        s[Table::Raw as usize][Hook::Prerouting as usize],
        Some(Shortcut::Absent)
            | Some(Shortcut::Policy {
                verdict: Verdict::Accept,
                ..
            })
    )
}

/// Whether `rules` lets the flow cache replay the forward path (the
/// decisions whose counted entries act on the packet are not kept:
/// [`CompiledRuleset::replayable`]).
fn fast_ok(rules: &CompiledRuleset, opts: &PipelineOptions) -> bool {
    opts.flow_cache
        && rules.needs().conntrack
        && FORWARD_PATH
            .iter()
            .all(|&(t, h)| rules.flow_invariant(t, h))
}

/// Two disjoint frame buffers of `mem`.
fn frame_pair(mem: &mut [u8], a: usize, b: usize) -> Option<(&mut [u8], &mut [u8])> {
    if a.abs_diff(b) < FRAME_SIZE || a.max(b) > mem.len() {
        return None;
    }
    if a < b {
        let (lo, hi) = mem.split_at_mut(b);
        Some((lo.get_mut(a..a + FRAME_SIZE)?, hi.get_mut(..FRAME_SIZE)?))
    } else {
        let (lo, hi) = mem.split_at_mut(a);
        let fb = lo.get_mut(b..b + FRAME_SIZE)?;
        Some((hi.get_mut(..FRAME_SIZE)?, fb))
    }
}

fn drop_of_parse(e: ParseError) -> DropReason {
    match e {
        ParseError::Truncated => DropReason::Truncated,
        ParseError::BadHeaderChecksum => DropReason::BadIpChecksum,
        ParseError::BadArp => DropReason::BadArp,
        _ => DropReason::BadIpHeader,
    }
}

fn reject_code(r: RejectWith) -> u8 {
    match r {
        RejectWith::IcmpNetUnreachable => codes::NET_UNREACH,
        RejectWith::IcmpHostUnreachable => codes::HOST_UNREACH,
        RejectWith::IcmpPortUnreachable => codes::PORT_UNREACH,
        RejectWith::IcmpProtoUnreachable => codes::PROT_UNREACH,
        RejectWith::IcmpNetProhibited => codes::NET_ANO,
        RejectWith::IcmpHostProhibited => codes::HOST_ANO,
        RejectWith::IcmpAdminProhibited => codes::PKT_FILTERED,
        RejectWith::TcpReset => 0,
    }
}

/// Fill the packet fields of `ctx` from a parsed datagram (`frame` is the whole frame).
#[inline(always)]
fn fill_ctx(ctx: &mut PacketCtx, info: &Ipv4Info, frame: &[u8], needs: Needs, ifs: &Interfaces) {
    ctx.src = u32::from(info.src);
    ctx.dst = u32::from(info.dst);
    ctx.proto = info.protocol;
    ctx.set_frag_offset(info.frag_offset >> 3);
    ctx.ttl = info.ttl;
    ctx.len = info.total_len;
    ctx.has_l4 = info.l4_complete();
    ctx.sport = 0;
    ctx.dport = 0;
    ctx.tcp_flags = 0;
    ctx.icmp_type = 0;
    ctx.icmp_code = 0;
    match info.l4 {
        L4::Tcp {
            src_port,
            dst_port,
            flags,
            header_len,
        } => {
            ctx.sport = src_port;
            ctx.dport = dst_port;
            ctx.tcp_flags = flags;
            if needs.tcp_options {
                let seg_end = ETH_LEN + usize::from(info.total_len);
                let opts = frame.get(
                    info.l4_offset + 20..(info.l4_offset + usize::from(header_len)).min(seg_end),
                );
                match opts {
                    Some(o)
                        if header_len >= 20
                            && info.l4_offset + usize::from(header_len) <= seg_end =>
                    {
                        ctx.tcp_options = tcp_option_kinds(o);
                        ctx.tcp_options_bad = false;
                    }
                    _ => {
                        ctx.tcp_options = [0; 4];
                        ctx.tcp_options_bad = true;
                    }
                }
            }
        }
        L4::Udp {
            src_port, dst_port, ..
        } => {
            ctx.sport = src_port;
            ctx.dport = dst_port;
        }
        L4::Icmp {
            icmp_type, code, ..
        } => {
            ctx.icmp_type = icmp_type;
            ctx.icmp_code = code;
        }
        _ => {}
    }
    if needs.addrtype {
        ctx.src_type = ifs.addr_type(ctx.src);
        ctx.dst_type = ifs.addr_type(ctx.dst);
    }
}

/// How a table run ended for the packet.
enum Outcome {
    Continue,
    Drop(DropReason),
    Reject(RejectWith),
    /// A NAT target fired (nat table): the rule id holding the range.
    Nat(u32),
}

impl Pipeline {
    /// A pipeline for `config` with `rules` and default options.
    pub fn new(config: &Config, rules: Arc<CompiledRuleset>) -> Result<Pipeline, PipelineError> {
        Self::with_options(config, rules, PipelineOptions::default())
    }

    /// A pipeline for `config` with `rules` and `opts`. Every interface needs a MAC.
    pub fn with_options(
        config: &Config,
        rules: Arc<CompiledRuleset>,
        opts: PipelineOptions,
    ) -> Result<Pipeline, PipelineError> {
        let opts = PipelineOptions {
            flow_cache: opts.flow_cache && config.workers.flow_cache,
            ..opts
        };
        let ifs = Interfaces::new(config)?;
        let fib = Fib::new(&ifs, &config.routes);
        let neigh = Neighbors::new(&config.neighbors, opts.neigh_dynamic_max);
        let state = RuleState::new(&rules);
        let needs = rules.needs();
        let shortcuts = shortcuts(&rules);
        let ct_cfg = nat::table_config(&config.conntrack, opts.conntrack_seed);
        // Validate `[conntrack]` even when the ruleset does not need conntrack yet.
        if ct_cfg.max == 0 || ct_cfg.max > 0x7fff_ffff {
            return Err(fastables_conntrack::ConfigError::Max(ct_cfg.max).into());
        }
        if ct_cfg.buckets == 0 {
            return Err(fastables_conntrack::ConfigError::Buckets.into());
        }
        let ct = if needs.conntrack {
            Some(CtTable::new(ct_cfg.clone())?)
        } else {
            None
        };
        let flow = FlowCache::new(if ct.is_some() { ct_cfg.max as usize } else { 0 });
        Ok(Pipeline {
            fast_ok: fast_ok(&rules, &opts),
            flow,
            pretracked: None,
            fast_rec: None,
            fast_route: None,
            fast_hits: 0,
            last_sweep_ns: 0,
            fast_pre_len: 0,
            ct_checksum: config.conntrack.checksum,
            fast_policies: forward_policies(&shortcuts),
            raw_continues: raw_continues(&shortcuts),
            pending_hold: None,
            held_events: Vec::with_capacity(2 * neigh::HOLD_MAX),
            defrag: Defrag::new(),
            pending_frag: None,
            reasm: None,
            frag_scratch: Vec::with_capacity(defrag::MAX_FRAGS),
            rss: None,
            handoffs: Vec::new(),
            tracer: None,
            tracing: false,
            route_cache: vec![RouteSlot::EMPTY; ROUTE_CACHE].into_boxed_slice(),
            ct_events: Vec::new(),
            ct_events_on: false,
            ct_events_lost: 0,
            ct,
            ct_cfg,
            ct_ahead: [Ahead::None; LOOKUP_BATCH],
            last_snat: None,
            ct_hint: None,
            ifs,
            fib,
            neigh,
            state,
            shortcuts,
            needs,
            rules,
            drops: Arc::new(DropCounters::new()),
            counters: Arc::new(PipelineCounters::default()),
            logs: LogQueue::new(opts.log_queue, opts.log_rate_per_sec, opts.log_burst),
            icmp_rl: icmp::IcmpRateLimiter::new(opts.icmp_msgs_per_sec, opts.icmp_msgs_burst),
            next_ident: 1,
            opts,
        })
    }

    /// Replace the ruleset (between batches). Rule counters start from zero in
    /// a fresh [`RuleState`]: to carry them over, fold the old ones into the
    /// ruleset with `CompiledRuleset::counters_into` before compiling the new one.
    pub fn set_ruleset(&mut self, rules: Arc<CompiledRuleset>) {
        self.state = RuleState::new(&rules);
        self.needs = rules.needs();
        self.shortcuts = shortcuts(&rules);
        self.rules = rules;
        // Conntrack is loaded when a ruleset first needs it and stays (as the
        // kernel's module does); existing connections keep their NAT bindings.
        if self.needs.conntrack && self.ct.is_none() {
            self.ct = CtTable::new(self.ct_cfg.clone()).ok();
            self.flow = FlowCache::new(self.ct_cfg.max as usize);
            self.install_rss_filter();
        }
        self.fast_ok = fast_ok(&self.rules, &self.opts);
        self.raw_continues = raw_continues(&self.shortcuts);
        self.fast_policies = forward_policies(&self.shortcuts);
        self.flow.invalidate();
    }

    /// This pipeline is the worker of RX queue `queue` under `rss`: source
    /// NAT then picks only tuples whose replies land on `queue`, and
    /// connections whose replies land elsewhere (DNAT) are reported by
    /// [`Pipeline::take_handoffs`].
    pub fn set_rss(&mut self, rss: Arc<Rss>, queue: u16) {
        self.rss = Some((rss, queue));
        if self.handoffs.capacity() == 0 {
            self.handoffs.reserve_exact(HANDOFF_QUEUE);
        }
        self.install_rss_filter();
    }

    fn install_rss_filter(&mut self) {
        if let (Some((rss, q)), Some(t)) = (&self.rss, self.ct.as_mut()) {
            let (rss, q) = (Arc::clone(rss), *q);
            t.set_nat_reply_filter(Some(Box::new(move |r: &fastables_conntrack::Tuple| {
                rss.queue(r.proto, r.src, r.dst, r.sport, r.dport) == q
            })));
        }
    }

    /// Moves the hand-off requests collected since the last call into `out`:
    /// reply tuples (as the replies arrive) of connections owned here.
    pub fn take_handoffs(&mut self, out: &mut Vec<fastables_conntrack::Tuple>) {
        out.append(&mut self.handoffs);
    }

    /// The connection table (`None` while no ruleset needed conntrack).
    pub fn conntrack(&self) -> Option<&CtTable> {
        self.ct.as_ref()
    }

    /// The large arrays of this pipeline (the conntrack table's and the
    /// flow cache's tags) as (address, bytes), for huge pages
    /// (`fastables_xdp::advise_huge_pages`). Empty without conntrack.
    pub fn regions(&self) -> Vec<(usize, usize)> {
        match &self.ct {
            Some(t) => {
                let mut v = t.regions().to_vec();
                v.push(self.flow.region());
                v
            }
            None => Vec::new(),
        }
    }

    /// The connection table, mutable (flush, delete, NAT reply filter).
    pub fn conntrack_mut(&mut self) -> Option<&mut CtTable> {
        self.ct.as_mut()
    }

    /// The ruleset in use.
    pub fn ruleset(&self) -> &Arc<CompiledRuleset> {
        &self.rules
    }

    /// Frames the flow cache forwarded ([`PipelineOptions::flow_cache`]):
    /// their connection's recorded decision stood for the chains.
    pub fn flow_cache_hits(&self) -> u64 {
        self.fast_hits
    }

    /// Whether the flow cache can forward with this ruleset: it is on and
    /// every chain of the forward path is flow-invariant.
    pub fn flow_cache_usable(&self) -> bool {
        self.fast_ok
    }

    /// Rule counters and limit state (for `CompiledRuleset::counters_into`, `save -c`).
    pub fn rule_state(&self) -> &RuleState {
        &self.state
    }

    /// The interfaces.
    pub fn interfaces(&self) -> &Interfaces {
        &self.ifs
    }

    /// The routing table.
    pub fn fib(&self) -> &Fib {
        &self.fib
    }

    /// The neighbor table.
    pub fn neighbors(&self) -> &Neighbors {
        &self.neigh
    }

    /// Drop counters (shareable with a stats reader).
    pub fn drops(&self) -> &Arc<DropCounters> {
        &self.drops
    }

    /// Totals (shareable with a stats reader).
    pub fn counters(&self) -> &Arc<PipelineCounters> {
        &self.counters
    }

    /// The options in use.
    pub fn options(&self) -> PipelineOptions {
        self.opts
    }

    /// Hand every queued LOG line to `f` (oldest first) and empty the queue.
    pub fn drain_logs(&mut self, f: impl FnMut(&str)) {
        self.logs.drain(f);
    }

    /// LOG lines lost to the rate limit or a full queue.
    pub fn logs_dropped(&self) -> u64 {
        self.logs.dropped()
    }

    /// Run every frame of `batch` through the pipeline. Each frame's `action` is
    /// set (frames are rewritten in place, `len` may shrink: Ethernet padding
    /// is removed); generated packets are written into buffers popped from
    /// `batch.spare` and appended to `batch.generated`. `mem` is the port's frame
    /// memory. Never allocates, never panics.
    pub fn process_batch(&mut self, now_ns: u64, mem: &mut [u8], batch: &mut Batch) {
        self.neigh.set_now(now_ns);
        self.defrag_expire(now_ns, batch);
        if let Some(t) = self.ct.as_mut() {
            let budget = sweep_budget(
                &mut self.last_sweep_ns,
                now_ns,
                t.len(),
                self.opts.conntrack_expire_budget,
            );
            if self.ct_events_on {
                let (q, lost) = (&mut self.ct_events, &mut self.ct_events_lost);
                t.expire_with(now_ns, budget, |_, e| {
                    push_event(q, lost, EventKind::Destroy, e, now_ns)
                });
            } else {
                t.expire(now_ns, budget);
            }
        }
        // The totals of this batch's frames, added to the shared counters
        // once at the end (one atomic add per counter and batch, not per frame).
        let mut n = BatchTotals::default();
        let mut ahead = false;
        batch.verdicts.clear();
        for i in 0..batch.frames.len() {
            if i % LOOKUP_BATCH == 0 && self.ct.is_some() {
                let end = batch.frames.len().min(i + LOOKUP_BATCH);
                ahead = self.lookup_ahead(now_ns, mem, batch.frames.get(i..end).unwrap_or(&[]));
            }
            let Some(mut f) = batch.frames.get(i).copied() else {
                break;
            };
            n.rx += 1;
            if ahead {
                self.ct_hint = match self.ct_ahead.get(i % LOOKUP_BATCH) {
                    Some(Ahead::Found(h)) => Some(*h),
                    _ => None,
                };
                // The frame that many later in this run of lookups.
                self.prefetch_new_at(i % LOOKUP_BATCH + PREFETCH_AHEAD);
            }
            let (mut action, gen) = self.rx_and_fragment(now_ns, mem, &mut f, batch);
            self.ct_hint = None;
            if action == Action::Held {
                if let Some((key, piece)) = self.pending_frag.take() {
                    if let Some(slot) = batch.frames.get_mut(i) {
                        *slot = f;
                    }
                    batch.verdicts.push(action);
                    self.defrag_add(now_ns, mem, batch, key, piece, f.port);
                    continue;
                }
                match self.pending_hold.take() {
                    Some((dev, ip)) => {
                        let h = neigh::Held {
                            dev,
                            ip,
                            addr: f.addr,
                            len: f.len,
                        };
                        if let Some(old) = self.neigh.hold(h) {
                            // Its buffer is given back with the spares.
                            batch.spare.push(old.addr);
                            n.dropped += 1;
                            self.drops.inc(DropReason::NeighborHoldFull);
                        }
                    }
                    None => action = Action::Drop(DropReason::InvalidFrame),
                }
            }
            match action {
                Action::Forward { .. } => n.forwarded += 1,
                Action::Consumed => n.consumed += 1,
                Action::Drop(r) => {
                    n.dropped += 1;
                    self.drops.inc(r);
                }
                Action::Held => {}
            }
            if let Some(slot) = batch.frames.get_mut(i) {
                *slot = f;
            }
            batch.verdicts.push(action);
            if let Some(g) = gen {
                self.generate(now_ns, mem, &f, g, &mut batch.spare, &mut batch.generated);
            }
        }
        n.add_to(&self.counters);
        self.service_held(now_ns, mem, batch);
    }

    /// The conntrack lookups of up to [`LOOKUP_BATCH`] received frames at
    /// once, before any of them is processed: `lookup_batch` overlaps their
    /// cache misses (in a large table, one on the bucket and one on the
    /// entry per frame), and `ct_in` starts from what it found
    /// ([`CtTable::track_hinted`], which walks the chain again if anything
    /// was inserted or removed in between). TCP and UDP frames that are not
    /// fragments only; the others get no hint. Returns whether it looked
    /// (the table is large enough, [`PipelineOptions::conntrack_lookup_ahead`]).
    fn lookup_ahead(&mut self, now_ns: u64, mem: &[u8], frames: &[Frame]) -> bool {
        let Some(t) = self.ct.as_ref() else {
            return false;
        };
        if t.len() < self.opts.conntrack_lookup_ahead {
            return false;
        }
        self.ct_ahead = [Ahead::None; LOOKUP_BATCH];
        let mut tuples = [Tuple::default(); LOOKUP_BATCH];
        let mut at = [0u8; LOOKUP_BATCH];
        let mut n = 0;
        for (i, f) in frames.iter().take(LOOKUP_BATCH).enumerate() {
            if let (Some(tuple), Some(slot), Some(pos)) =
                (frame_tuple(mem, f), tuples.get_mut(n), at.get_mut(n))
            {
                *slot = tuple;
                *pos = i as u8;
                n += 1;
            }
        }
        let mut found = [None; LOOKUP_BATCH];
        t.lookup_batch(tuples.get(..n).unwrap_or(&[]), now_ns, &mut found);
        let changes = t.changes();
        for ((&pos, hit), tuple) in at.iter().zip(found).zip(&tuples).take(n) {
            let Some(slot) = self.ct_ahead.get_mut(usize::from(pos)) else {
                continue;
            };
            *slot = match hit {
                Some(found) => {
                    t.warm(found.0);
                    if self.fast_ok {
                        self.flow.warm(found.0);
                    }
                    Ahead::Found(Hint { found, changes })
                }
                // A new connection, most likely: what its NAT and insertion
                // will read is prefetched a few frames before its turn.
                None => Ahead::New(*tuple),
            };
        }
        for pos in 0..PREFETCH_AHEAD {
            self.prefetch_new_at(pos);
        }
        true
    }

    /// [`CtTable::prefetch_new`] for the frame at `pos` of the current run
    /// of lookups, if its tuple was not found.
    #[inline]
    fn prefetch_new_at(&mut self, pos: usize) {
        if let (Some(t), Some(Ahead::New(tuple))) = (self.ct.as_ref(), self.ct_ahead.get(pos)) {
            t.prefetch_new(tuple, self.last_snat);
        }
    }

    /// One received frame through the pipeline (`process_rx`), the end of
    /// its trace, and the fragmentation its egress MTU asks for.
    fn rx_and_fragment(
        &mut self,
        now_ns: u64,
        mem: &mut [u8],
        f: &mut Frame,
        batch: &mut Batch,
    ) -> (Action, Option<Gen>) {
        let in_if = f.port;
        let (mut action, mut gen) = self.process_rx(now_ns, mem, f);
        if self.fast_rec.is_some() {
            if !matches!(action, Action::Forward { .. }) {
                self.fast_route = None;
            }
            self.fast_record(in_if);
        }
        // Taken by the PREROUTING `ct_in` of the slow path (its raw chain,
        // flow-invariant, let the recorded packet through, so it lets this one).
        debug_assert!(self.pretracked.is_none());
        self.pretracked = None;
        if self.tracing {
            self.trace_end(mem, f, action);
        }
        if let (Some(Gen::Fragment { mtu }), Action::Forward { port }) = (gen, action) {
            gen = None;
            if let Err(r) = self.fragment(mem, f, mtu, port, &mut batch.spare, &mut batch.generated)
            {
                action = Action::Drop(r);
            }
        }
        (action, gen)
    }

    /// `Fib::route_input`, through a direct-mapped cache of its decisions
    /// keyed by (ingress, source, destination): the same answer without the
    /// martian checks and the longest-prefix match on a hit.
    #[inline]
    fn route_input_cached(
        &mut self,
        in_if: IfIndex,
        src: u32,
        dst: u32,
    ) -> Result<RouteResult, DropReason> {
        let h = (src.wrapping_mul(0x9e37_79b1) ^ dst.wrapping_mul(0x85eb_ca77) ^ u32::from(in_if))
            .rotate_left(13);
        let i = (h as usize) & (ROUTE_CACHE - 1);
        if let Some(slot) = self.route_cache.get(i) {
            if slot.used && slot.in_if == in_if && slot.src == src && slot.dst == dst {
                return slot.res;
            }
        }
        let res = self.fib.route_input(&self.ifs, in_if, src, dst);
        if let Some(slot) = self.route_cache.get_mut(i) {
            *slot = RouteSlot {
                used: true,
                in_if,
                src,
                dst,
                res,
            };
        }
        res
    }

    /// Drops the datagram of defrag slot `n` (its buffers back with the
    /// spares), counting each of its frames.
    fn defrag_drop(&mut self, n: usize, batch: &mut Batch, r: DropReason) {
        let pieces = self.defrag.pieces(n);
        for p in pieces {
            batch.spare.push(p.addr);
        }
        self.count_drops(r, pieces.len());
        self.defrag.release(n);
    }

    /// `frames` received frames dropped for `r`.
    fn count_drops(&self, r: DropReason, frames: usize) {
        let n = frames as u64;
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        self.drops.add(r, n);
    }

    /// Datagrams that waited too long for their fragments (no ICMP: the
    /// kernel sends none for conntrack's reassembly, `frag_expire_skip_icmp`).
    fn defrag_expire(&mut self, now_ns: u64, batch: &mut Batch) {
        for _ in 0..defrag::MAX_DATAGRAMS {
            match self.defrag.expired(now_ns) {
                Some(n) => self.defrag_drop(n, batch, DropReason::FragmentTimeout),
                None => break,
            }
        }
    }

    fn defrag_add(
        &mut self,
        now_ns: u64,
        mem: &mut [u8],
        batch: &mut Batch,
        key: defrag::Key,
        piece: defrag::Piece,
        in_if: IfIndex,
    ) {
        if let Some(n) = self.defrag.must_evict(&key) {
            self.defrag_drop(n, batch, DropReason::FragmentEvicted);
        }
        match self.defrag.add(key, in_if, now_ns, piece) {
            defrag::Added::Held => {}
            defrag::Added::Rejected(why) => {
                batch.spare.push(piece.addr);
                let r = match why {
                    defrag::DefragDrop::Duplicate => DropReason::FragmentDuplicate,
                    defrag::DefragDrop::TooLong => DropReason::FragmentTooLong,
                };
                self.count_drops(r, 1);
            }
            defrag::Added::Overlap(n) => {
                batch.spare.push(piece.addr);
                self.count_drops(DropReason::FragmentOverlap, 1);
                self.defrag_drop(n, batch, DropReason::FragmentOverlap);
            }
            defrag::Added::Complete(n) => self.reassembled(now_ns, mem, batch, n),
        }
    }

    /// A complete datagram: its first fragment through the pipeline for the
    /// whole datagram, then every fragment the way the first went.
    fn reassembled(&mut self, now_ns: u64, mem: &mut [u8], batch: &mut Batch, n: usize) {
        let mut pieces = std::mem::take(&mut self.frag_scratch);
        pieces.clear();
        pieces.extend_from_slice(self.defrag.pieces(n));
        let in_if = self.defrag.in_if(n);
        self.defrag.release(n);
        let Some(first) = pieces.first().copied() else {
            self.frag_scratch = pieces;
            return;
        };
        let at = usize::try_from(first.addr).unwrap_or(usize::MAX);
        let hl = mem
            .get(at.saturating_add(ETH_LEN))
            .map_or(20, |b| u32::from(b & 0x0f) * 4);
        let total = hl + pieces.iter().map(|p| u32::from(p.plen)).sum::<u32>();
        let mut f = Frame::rx(first.addr, first.len, in_if);
        self.reasm = Some(u16::try_from(total).unwrap_or(u16::MAX));
        let (action, gen) = self.rx_and_fragment(now_ns, mem, &mut f, batch);
        self.reasm = None;
        let rest = pieces.get(1..).unwrap_or(&[]);
        // Every fragment is a received frame, counted with the first one's fate.
        let frames = pieces.len() as u64;
        match action {
            Action::Forward { port } => {
                self.counters.forwarded.fetch_add(frames, Ordering::Relaxed);
                batch.generated.push(Frame { port, ..f });
                for p in rest {
                    copy_rewritten_header(mem, first.addr, p.addr);
                    batch.generated.push(Frame {
                        addr: p.addr,
                        len: p.len,
                        port,
                    });
                }
            }
            Action::Held => {
                // Waiting for the next hop's MAC, all of them.
                if let Some((dev, ip)) = self.pending_hold.take() {
                    for (k, (addr, len)) in std::iter::once((f.addr, f.len))
                        .chain(rest.iter().map(|p| (p.addr, p.len)))
                        .enumerate()
                    {
                        if k > 0 {
                            copy_rewritten_header(mem, first.addr, addr);
                        }
                        if let Some(old) = self.neigh.hold(neigh::Held { dev, ip, addr, len }) {
                            batch.spare.push(old.addr);
                            self.count_drops(DropReason::NeighborHoldFull, 1);
                        }
                    }
                } else {
                    self.count_drops(DropReason::InvalidFrame, pieces.len());
                    batch.spare.push(f.addr);
                    batch.spare.extend(rest.iter().map(|p| p.addr));
                }
            }
            Action::Drop(r) => {
                self.count_drops(r, pieces.len());
                batch.spare.push(f.addr);
                batch.spare.extend(rest.iter().map(|p| p.addr));
            }
            Action::Consumed => {
                self.counters.consumed.fetch_add(frames, Ordering::Relaxed);
                batch.spare.push(f.addr);
                batch.spare.extend(rest.iter().map(|p| p.addr));
            }
        }
        if let Some(g) = gen {
            self.generate(now_ns, mem, &f, g, &mut batch.spare, &mut batch.generated);
        }
        self.frag_scratch = pieces;
    }

    /// Frames waiting for a neighbor ([`Action::Held`]).
    pub fn held(&self) -> usize {
        self.neigh.held_len()
    }

    /// What the ARP side did so far.
    pub fn arp_counters(&self) -> neigh::ArpCounters {
        self.neigh.counters()
    }

    /// Traces the packets `filter` matches (at most `count`), or stops
    /// tracing (`None`).
    pub fn set_trace(&mut self, t: Option<(TraceFilter, Option<u64>)>) {
        self.tracer = t.map(|(f, n)| Tracer::new(f, n));
    }

    /// Hands the finished trace records to `f`.
    pub fn drain_trace(&mut self, f: impl FnMut(&str)) {
        if let Some(t) = self.tracer.as_mut() {
            t.drain(f);
        }
    }

    /// Whether a trace is set and has packets or records left.
    pub fn tracing(&self) -> bool {
        self.tracer
            .as_ref()
            .is_some_and(|t| t.active() || t.pending())
    }

    /// Trace records dropped because their queue was full.
    pub fn trace_lost(&self) -> u64 {
        self.tracer.as_ref().map_or(0, Tracer::lost)
    }

    fn trace_begin(&mut self, info: &Ipv4Info, in_if: IfIndex) {
        let (sport, dport, ports) = match info.l4 {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp {
                src_port, dst_port, ..
            } => (src_port, dst_port, true),
            _ => (0, 0, false),
        };
        // The filter first: a set trace costs a packet it does not match
        // only this test.
        let wanted = self.tracer.as_ref().is_some_and(|t| {
            !t.filter.marked
                && t.active()
                && t.filter.matches(
                    info.protocol,
                    u32::from(info.src),
                    u32::from(info.dst),
                    sport,
                    dport,
                    ports,
                    in_if,
                )
        });
        if wanted {
            self.trace_start(&TraceHead {
                proto: info.protocol,
                src: u32::from(info.src),
                dst: u32::from(info.dst),
                sport,
                dport,
                ports,
                in_if,
                len: info.total_len,
                ttl: info.ttl,
            });
        }
    }

    /// `-j TRACE` marked the packet: its record starts here, for a
    /// `--marked` trace.
    fn trace_marked(&mut self, ctx: &PacketCtx) {
        if self.tracer.as_ref().is_some_and(|t| t.filter.marked) {
            self.trace_start(&TraceHead {
                proto: ctx.proto,
                src: ctx.src,
                dst: ctx.dst,
                sport: ctx.sport,
                dport: ctx.dport,
                ports: ctx.has_l4 && matches!(ctx.proto, 6 | 17),
                in_if: ctx.in_if.unwrap_or(IfIndex::MAX),
                len: ctx.len,
                ttl: ctx.ttl,
            });
        }
    }

    #[cold]
    fn trace_start(&mut self, h: &TraceHead) {
        let Some(t) = self.tracer.as_mut() else {
            return;
        };
        if !t.active()
            || !t
                .filter
                .matches(h.proto, h.src, h.dst, h.sport, h.dport, h.ports, h.in_if)
        {
            return;
        }
        let dev = self.ifs.get(h.in_if).map_or("local", |d| d.name.as_str());
        let (src, dst) = (
            std::net::Ipv4Addr::from(h.src),
            std::net::Ipv4Addr::from(h.dst),
        );
        let head = if h.ports {
            format!(
                "in {dev}: {src}:{} > {dst}:{} proto {} len {} ttl {}",
                h.sport, h.dport, h.proto, h.len, h.ttl
            )
        } else {
            format!(
                "in {dev}: {src} > {dst} proto {} len {} ttl {}",
                h.proto, h.len, h.ttl
            )
        };
        t.begin(&head);
        self.tracing = true;
    }

    fn trace_table(&mut self, table: Table, hook: Hook, v: Verdict, last: u32) {
        let info = self.rules.rule_info(last);
        let by = if info.index == 0 {
            format!("policy of {}", info.chain)
        } else {
            format!("{} rule {} (line {})", info.chain, info.index, info.line)
        };
        let verdict = match v {
            Verdict::Accept => "ACCEPT".to_string(),
            Verdict::Drop => "DROP".to_string(),
            Verdict::Reject(_) => "REJECT".to_string(),
            // The target's name, as the rules file writes it.
            Verdict::Nat(id) => fastables_rules::print::target_text(self.rules.target(id))
                .split(' ')
                .nth(1)
                .unwrap_or("NAT")
                .to_string(),
        };
        let line = format!("{} {}: {verdict} by {by}", table.name(), hook.chain_name());
        if let Some(t) = self.tracer.as_mut() {
            t.line(&line);
        }
    }

    fn trace_ct(&mut self, what: &str, ct: &Ct) {
        let line = match ct {
            Ct::None => format!("{what}: untracked or INVALID"),
            Ct::New(nc) => format!("{what}: NEW {}", trace::tuples(&nc.entry)),
            Ct::Killed { entry, .. } => format!("{what}: closed {}", trace::tuples(entry)),
            _ => match self.ct_entry(ct) {
                Some((e, dir, state)) => {
                    let state = match state {
                        CtState::New => "NEW",
                        CtState::Established => "ESTABLISHED",
                        CtState::Related => "RELATED",
                        CtState::Invalid => "INVALID",
                    };
                    let dir = match dir {
                        Dir::Original => "original direction",
                        Dir::Reply => "reply direction",
                    };
                    format!("{what}: {state}, {dir}, {}", trace::tuples(e))
                }
                None => format!("{what}: gone"),
            },
        };
        if let Some(t) = self.tracer.as_mut() {
            t.line(&line);
        }
    }

    fn trace_end(&mut self, mem: &[u8], f: &Frame, action: Action) {
        self.tracing = false;
        let at = usize::try_from(f.addr).unwrap_or(usize::MAX);
        let frame = mem
            .get(at..at.saturating_add(usize::from(f.len)))
            .unwrap_or(&[]);
        let line = match action {
            Action::Forward { port } => {
                let dev = self.ifs.get(port).map_or("?", |d| d.name.as_str());
                match parse_frame(frame).ok().map(|p| p.l3) {
                    Some(L3::Ipv4(i)) => match i.l4 {
                        L4::Tcp {
                            src_port, dst_port, ..
                        }
                        | L4::Udp {
                            src_port, dst_port, ..
                        } => format!(
                            "out {dev}: {}:{src_port} > {}:{dst_port} ttl {}",
                            i.src, i.dst, i.ttl
                        ),
                        _ => format!("out {dev}: {} > {} ttl {}", i.src, i.dst, i.ttl),
                    },
                    _ => format!("out {dev}"),
                }
            }
            Action::Drop(r) => format!("dropped: {}", r.name()),
            Action::Consumed => "delivered locally".to_string(),
            Action::Held => "held (waiting for ARP or for the rest of the datagram)".to_string(),
        };
        if let Some(t) = self.tracer.as_mut() {
            t.line(&line);
            t.end();
        }
    }

    /// Fragments waiting for the rest of their datagram ([`Action::Held`]).
    pub fn reassembling(&self) -> usize {
        self.defrag.held()
    }

    /// Collect conntrack events (NEW at confirmation, UPDATE, DESTROY) for
    /// `conntrack -E`, or stop. While off the cost is one branch per tracked
    /// packet; while on, at most [`CT_EVENT_QUEUE`] wait to be drained, more
    /// are counted as lost.
    pub fn set_ct_events(&mut self, on: bool) {
        self.ct_events_on = on;
        if on && self.ct_events.capacity() == 0 {
            self.ct_events.reserve_exact(CT_EVENT_QUEUE);
        }
        if !on {
            self.ct_events.clear();
        }
    }

    /// Hands the collected conntrack events to `f`, oldest first, each with
    /// the time it happened.
    pub fn drain_ct_events(&mut self, mut f: impl FnMut(EventKind, &Entry, u64)) {
        for (k, e, t) in &self.ct_events {
            f(*k, e, *t);
        }
        self.ct_events.clear();
    }

    /// Events that did not fit the queue.
    pub fn ct_events_lost(&self) -> u64 {
        self.ct_events_lost
    }

    /// Records a DESTROY event for an entry removed from outside the data
    /// path (`conntrack -D`, `-F`).
    pub fn note_destroyed(&mut self, e: &Entry, now_ns: u64) {
        if self.ct_events_on {
            push_event(
                &mut self.ct_events,
                &mut self.ct_events_lost,
                EventKind::Destroy,
                e,
                now_ns,
            );
        }
    }

    /// The hold queue at `now_ns` (also run at the end of every batch):
    /// frames whose neighbor answered go out in `batch.generated`, ARP
    /// requests are repeated once a second, and frames whose neighbor never
    /// answered are dropped with an ICMP host unreachable each, their buffers
    /// given back in `batch.spare`. Call it between batches while
    /// [`Pipeline::held`] is not zero, with spare buffers in `batch`.
    pub fn service_held(&mut self, now_ns: u64, mem: &mut [u8], batch: &mut Batch) {
        if self.neigh.held_len() == 0 {
            return;
        }
        let mut events = std::mem::take(&mut self.held_events);
        events.clear();
        self.neigh.service(now_ns, |e| {
            if events.len() < events.capacity() {
                events.push(e);
            }
        });
        for e in events.iter().copied() {
            match e {
                HeldEvent::Resolved(h, mac) => {
                    let at = usize::try_from(h.addr).unwrap_or(usize::MAX);
                    match mem.get_mut(at..at.saturating_add(6)) {
                        Some(d) => {
                            d.copy_from_slice(&mac.0);
                            PipelineCounters::inc(&self.counters.forwarded);
                            batch.generated.push(Frame {
                                addr: h.addr,
                                len: h.len,
                                port: h.dev,
                            });
                        }
                        None => {
                            batch.spare.push(h.addr);
                            self.count_drops(DropReason::InvalidFrame, 1);
                        }
                    }
                }
                HeldEvent::Solicit { dev, ip } => {
                    let sender = self.ifs.select_addr(dev, ip).unwrap_or(0);
                    let rx = Frame::rx(0, 0, dev);
                    self.generate(
                        now_ns,
                        mem,
                        &rx,
                        Gen::ArpRequest {
                            dev,
                            target: ip,
                            sender,
                        },
                        &mut batch.spare,
                        &mut batch.generated,
                    );
                }
                HeldEvent::Failed(h) => {
                    self.count_drops(DropReason::NeighborUnresolved, 1);
                    // ip_forward's error report for a failed neighbor.
                    let rx = Frame::rx(h.addr, h.len, h.dev);
                    let info = parse_frame(
                        mem.get(usize::try_from(h.addr).unwrap_or(usize::MAX)..)
                            .and_then(|m| m.get(..usize::from(h.len)))
                            .unwrap_or(&[]),
                    )
                    .ok()
                    .and_then(|p| match p.l3 {
                        L3::Ipv4(i) => Some(i),
                        _ => None,
                    });
                    if info.is_some_and(|i| icmp::icmp_error_allowed(&i)) {
                        self.generate(
                            now_ns,
                            mem,
                            &rx,
                            Gen::IcmpError {
                                ty: codes::DEST_UNREACH,
                                code: codes::HOST_UNREACH,
                                rest: 0,
                                src: None,
                            },
                            &mut batch.spare,
                            &mut batch.generated,
                        );
                    }
                    batch.spare.push(h.addr);
                }
            }
        }
        self.held_events = events;
    }

    /// Run one table, apply its effects to the frame, and say how it ended.
    /// A chain that is absent or has no rules ([`Shortcut`]) is decided here
    /// without the call (no rule ran, so there are no effects to apply);
    /// while tracing, every table takes the full way for its trace line.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run_table(
        &mut self,
        now_ns: u64,
        table: Table,
        hook: Hook,
        ctx: &mut PacketCtx,
        ct: &mut Ct,
        buf: &mut [u8],
        ip_len: usize,
        route_mtu: Option<u16>,
    ) -> Outcome {
        if !self.tracing {
            match self.shortcuts[table as usize][hook as usize] {
                Some(Shortcut::Absent) => return Outcome::Continue,
                Some(Shortcut::Policy { entry, verdict }) => {
                    self.state.count(entry, ctx.len);
                    ctx.effects.last = entry;
                    return match verdict {
                        Verdict::Drop => Outcome::Drop(DropReason::FilterDrop),
                        _ => Outcome::Continue,
                    };
                }
                None => {}
            }
        }
        self.run_rules(now_ns, table, hook, ctx, ct, buf, ip_len, route_mtu)
    }

    /// [`Pipeline::run_table`] for a chain whose rules must run.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn run_rules(
        &mut self,
        now_ns: u64,
        table: Table,
        hook: Hook,
        ctx: &mut PacketCtx,
        ct: &mut Ct,
        buf: &mut [u8],
        ip_len: usize,
        route_mtu: Option<u16>,
    ) -> Outcome {
        let v = self.rules.run(table, hook, ctx, &mut self.state, now_ns);
        if ctx.effects.trace && !self.tracing {
            self.trace_marked(ctx);
        }
        if self.tracing {
            self.trace_table(table, hook, v, ctx.effects.last);
        }
        self.apply_effects(now_ns, ctx, buf, ip_len, route_mtu);
        if ctx.effects.ctmark_changed {
            ctx.effects.ctmark_changed = false;
            self.store_ctmark(ct, ctx.ct.mark);
        }
        match v {
            Verdict::Accept => Outcome::Continue,
            Verdict::Drop => Outcome::Drop(DropReason::FilterDrop),
            Verdict::Reject(r) => Outcome::Reject(r),
            Verdict::Nat(id) => Outcome::Nat(id),
        }
    }

    /// CONNMARK: the connection mark into the entry.
    fn store_ctmark(&mut self, ct: &mut Ct, mark: u32) {
        match ct {
            Ct::New(nc) => nc.entry.mark = mark,
            Ct::Conn { id, .. } | Ct::Related { id, .. } => {
                if let Some(t) = self.ct.as_mut() {
                    t.set_mark(*id, mark);
                }
            }
            Ct::Killed { entry, .. } => entry.mark = mark,
            Ct::None => {}
        }
    }

    /// The entry of `ct` and the packet's direction.
    fn ct_entry<'a>(&'a self, ct: &'a Ct) -> Option<(&'a Entry, Dir, CtState)> {
        match ct {
            Ct::None => None,
            Ct::New(nc) => Some((&nc.entry, Dir::Original, CtState::New)),
            Ct::Killed { entry, dir } => Some((entry, *dir, CtState::Established)),
            Ct::Conn { id, dir } => {
                let e = self.ct.as_ref()?.entry(*id)?;
                Some((e, *dir, e.state_in(*dir)))
            }
            Ct::Related { id, dir } => {
                Some((self.ct.as_ref()?.entry(*id)?, *dir, CtState::Related))
            }
        }
    }

    /// Conntrack in (`nf_conntrack_in`) for the datagram at `buf[14..]`:
    /// classify, set `*ct` (written in place: a `Ct` is large) and `ctx.ct`.
    /// `csum`: verify the transport checksum (PREROUTING, as
    /// `nf_conntrack_checksum`). On an error `*ct` is left as it was.
    #[inline(always)]
    fn ct_in(
        &mut self,
        now_ns: u64,
        info: &Ipv4Info,
        buf: &[u8],
        cc: &mut CtCtx,
        csum: bool,
        ct: &mut Ct,
    ) -> Result<(), DropReason> {
        if self.ct.is_none() {
            *cc = CtCtx::untracked();
            *ct = Ct::None;
            return Ok(());
        }
        self.ct_track(now_ns, info, buf, cc, csum, ct)
    }

    /// [`Pipeline::ct_in`] with the table loaded.
    #[inline(never)]
    fn ct_track(
        &mut self,
        now_ns: u64,
        info: &Ipv4Info,
        buf: &[u8],
        cc: &mut CtCtx,
        csum: bool,
        ct: &mut Ct,
    ) -> Result<(), DropReason> {
        if let Some(t) = self.pretracked.take() {
            return self.ct_apply(now_ns, &t, cc, ct);
        }
        let t = self.ct_classify(now_ns, info, buf, csum);
        self.ct_apply(now_ns, &t, cc, ct)
    }

    /// What conntrack made of the packet (`track`) into `*ct` and `ctx.ct`,
    /// with its event.
    #[inline(always)]
    fn ct_apply(
        &mut self,
        now_ns: u64,
        track: &Track,
        cc: &mut CtCtx,
        ct: &mut Ct,
    ) -> Result<(), DropReason> {
        let Some(table) = self.ct.as_mut() else {
            *cc = CtCtx::untracked();
            *ct = Ct::None;
            return Ok(());
        };
        let state = match *track {
            Track::Tracked(t) => {
                if self.ct_events_on {
                    if let (Some(kind), Some(e)) = (t.events.kind(), table.entry(t.id)) {
                        push_event(
                            &mut self.ct_events,
                            &mut self.ct_events_lost,
                            kind,
                            e,
                            now_ns,
                        );
                    }
                }
                *ct = Ct::Conn {
                    id: t.id,
                    dir: t.dir,
                };
                t.state
            }
            Track::Killed {
                ref entry,
                dir,
                state,
            } => {
                if self.ct_events_on {
                    push_event(
                        &mut self.ct_events,
                        &mut self.ct_events_lost,
                        EventKind::Destroy,
                        entry,
                        now_ns,
                    );
                }
                *ct = Ct::Killed { entry: *entry, dir };
                state
            }
            Track::Related { id, dir } => {
                *ct = Ct::Related { id, dir };
                CtState::Related
            }
            Track::New(ref nc) => {
                *ct = Ct::New(*nc);
                CtState::New
            }
            Track::Invalid => {
                *cc = nat::invalid_ctx();
                *ct = Ct::None;
                return Ok(());
            }
            Track::Drop { log } => {
                self.log_table_full(now_ns, log);
                return Err(DropReason::ConntrackFull);
            }
        };
        if let Some((e, _, _)) = self.ct_entry(ct) {
            *cc = nat::ct_ctx(e, state);
        }
        Ok(())
    }

    /// `nf_conntrack_in`'s classification of the datagram at `buf[14..]`
    /// (the transport checksum verified when `csum`), with the hint of the
    /// frame: what the table makes of it (INVALID without a table: the
    /// callers check there is one).
    #[inline(always)]
    fn ct_classify(&mut self, now_ns: u64, info: &Ipv4Info, buf: &[u8], csum: bool) -> Track {
        let Some(table) = self.ct.as_mut() else {
            return Track::Invalid;
        };
        let ip_len = usize::from(info.total_len);
        let ip = buf.get(ETH_LEN..ETH_LEN + ip_len).unwrap_or(&[]);
        let csum_bad = csum
            && !info.is_fragment()
            && matches!(info.protocol, PROTO_TCP | PROTO_UDP | PROTO_ICMP)
            && !ipv4_l4_checksum_ok(ip, info);
        let mut facts = nat::facts(info, ip, usize::from(info.header_len), csum_bad);
        if let Some(total) = self.reasm {
            // The first fragment of a reassembled datagram: conntrack sees
            // the whole datagram's length.
            let l4 = u32::from(total).saturating_sub(u32::from(info.header_len));
            facts.l4_len = l4;
            facts.tcp.l4_len = l4;
        }
        table.track_hinted(&facts, now_ns, self.ct_hint.take())
    }

    /// The flow cache's way ([`flow`]) for a received TCP or UDP
    /// datagram that is not a fragment, with TTL above 1, addressed to
    /// `in_if`'s MAC, when raw PREROUTING has rules: the connection's
    /// decision is looked up first (it says whether raw lets the packet
    /// reach conntrack), then conntrack sees the packet, then
    /// [`Pipeline::fast_finish`]. `None`: take the slow path, with
    /// [`Pipeline::pretracked`] set when conntrack already saw the packet,
    /// and [`Pipeline::fast_rec`] when its decision is to be recorded.
    #[inline(never)]
    fn fast_forward(
        &mut self,
        now_ns: u64,
        buf: &mut [u8],
        info: &Ipv4Info,
        in_if: IfIndex,
    ) -> Option<(Action, Option<Gen>)> {
        let (id, dir, n) = self.fast_decision(now_ns, info, in_if)?;
        let track = self.ct_classify(now_ns, info, buf, self.ct_checksum);
        if let Track::Tracked(t) = &track {
            let same = matches!(self.flow.decision(n), Some(d) if d.state == t.state);
            if t.id == id && t.dir == dir && same {
                let events = t.events;
                if let Some(done) = self.fast_finish(now_ns, buf, info, id, dir, n) {
                    if self.ct_events_on {
                        if let (Some(kind), Some(e)) =
                            (events.kind(), self.ct.as_ref().and_then(|t| t.entry(id)))
                        {
                            push_event(
                                &mut self.ct_events,
                                &mut self.ct_events_lost,
                                kind,
                                e,
                                now_ns,
                            );
                        }
                    }
                    return Some(done);
                }
            }
        }
        self.pretracked = Some(track);
        None
    }

    /// The flow cache for a packet conntrack has seen (`ct`, `cc`)
    /// before raw PREROUTING, which lets every packet through: its
    /// decision, else the slow path goes on ([`Pipeline::fast_rec`] set when
    /// it is to record one).
    #[inline(always)]
    fn fast_after_ct(
        &mut self,
        now_ns: u64,
        buf: &mut [u8],
        info: &Ipv4Info,
        in_if: IfIndex,
        cc: &CtCtx,
        ct: &Ct,
    ) -> Option<(Action, Option<Gen>)> {
        let Ct::Conn { id, dir } = *ct else {
            return None;
        };
        let state = if cc.state & CtStateSet::ESTABLISHED != 0 {
            CtState::Established
        } else if cc.state & CtStateSet::NEW != 0 {
            CtState::New
        } else {
            return None;
        };
        match self.flow.get(id, dir) {
            Some((n, d)) if d.in_if == in_if && d.state == state => {
                self.fast_finish(now_ns, buf, info, id, dir, n)
            }
            _ => {
                self.fast_rec = Some((id, dir, state));
                self.state.record();
                None
            }
        }
    }

    /// The rest of the way of a packet conntrack found in connection `id`,
    /// `dir`, in the state of decision `n`: the rule counters replayed, the
    /// NAT rewrite, the TTL and the L2 rewrite, as the slow path does them.
    /// `None`, having changed nothing, when the route's MTU or the
    /// neighbour asks for the slow path.
    #[inline(always)]
    fn fast_finish(
        &mut self,
        now_ns: u64,
        buf: &mut [u8],
        info: &Ipv4Info,
        id: EntryId,
        dir: Dir,
        n: usize,
    ) -> Option<(Action, Option<Gen>)> {
        let ip_len = usize::from(info.total_len);
        let d = self.flow.decision(n)?;
        let (out_dev, next_hop) = (d.out_dev, d.next_hop);
        if ip_len > usize::from(d.mtu) {
            return None;
        }
        let out_mac = self.ifs.get(out_dev)?.mac;
        let e = self.ct.as_ref()?.entry(id)?;
        // mangle PREROUTING's TTL targets, as apply_effects writes them: once
        // if any changed the TTL; then the forwarding check on the result.
        let mut ttl = info.ttl;
        let mut ttl_changed = false;
        if d.ttl {
            for &x in d.path.entries().iter().take(usize::from(d.pre_len)) {
                let new = match self.rules.ttl_target(x) {
                    Some(TtlTarget::Set(v)) => v,
                    Some(TtlTarget::Inc(v)) => ttl.saturating_add(v),
                    Some(TtlTarget::Dec(v)) => ttl.saturating_sub(v),
                    None => continue,
                };
                if new != ttl {
                    ttl = new;
                    ttl_changed = true;
                }
            }
            if ttl <= 1 {
                return None;
            }
        }
        let (nh_mac, probe) = match self.neigh.resolve(out_dev, next_hop, now_ns) {
            neigh::Resolve::Mac(m) => (m, false),
            neigh::Resolve::Probe(m) => (m, true),
            neigh::Resolve::Unresolved => return None,
        };
        self.state.replay(&d.path, info.total_len);
        let (policies, n) = self.fast_policies;
        for &p in policies.iter().take(n) {
            self.state.count(p, info.total_len);
        }
        // As the slow path: the destination before routing, the TTL, the
        // source after POSTROUTING.
        if ttl_changed {
            set_parsed_ttl(buf, ttl);
        }
        let target = e.nat_target(dir);
        let manip = |ip: &mut [u8], m: Manip| {
            if info.header_len != 20 || !nat::manip_simple(ip, m, &target) {
                nat::manip_pkt(ip, m, &target);
            }
        };
        if nat::needs_manip(e, dir, Manip::Dst) {
            if let Some(ip) = buf.get_mut(ETH_LEN..ETH_LEN + ip_len) {
                manip(ip, Manip::Dst);
            }
        }
        set_parsed_ttl(buf, ttl - 1);
        if nat::needs_manip(e, dir, Manip::Src) {
            if let Some(ip) = buf.get_mut(ETH_LEN..ETH_LEN + ip_len) {
                manip(ip, Manip::Src);
            }
        }
        buf[0..6].copy_from_slice(&nh_mac.0);
        buf[6..12].copy_from_slice(&out_mac.0);
        let gen = probe.then(|| Gen::ArpProbe {
            dev: out_dev,
            target: next_hop,
            sender: self.ifs.select_addr(out_dev, next_hop).unwrap_or(0),
            mac: nh_mac,
        });
        self.fast_hits += 1;
        Some((Action::Forward { port: out_dev }, gen))
    }

    /// The connection of the datagram and its current decision for
    /// `in_if`, found before conntrack sees the packet. `None` (the slow
    /// path) without one; [`Pipeline::fast_rec`] set when the packet is to
    /// record it.
    #[inline(always)]
    fn fast_decision(
        &mut self,
        now_ns: u64,
        info: &Ipv4Info,
        in_if: IfIndex,
    ) -> Option<(EntryId, Dir, usize)> {
        let table = self.ct.as_ref()?;
        let (sport, dport) = match info.l4 {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp {
                src_port, dst_port, ..
            } => (src_port, dst_port),
            _ => return None,
        };
        let changes = table.changes();
        let (id, dir) = match self.ct_hint {
            Some(h) if h.changes == changes => h.found,
            _ => {
                let tuple = Tuple::new(
                    info.protocol,
                    u32::from(info.src),
                    sport,
                    u32::from(info.dst),
                    dport,
                );
                let found = table.lookup(&tuple, now_ns)?;
                self.ct_hint = Some(Hint { found, changes });
                found
            }
        };
        // The state conntrack will give the packet (as `track` does).
        let state = table.entry(id)?.state_in(dir);
        if state == CtState::Related {
            return None;
        }
        match self.flow.get(id, dir) {
            Some((n, d)) if d.in_if == in_if && d.state == state => Some((id, dir, n)),
            _ => {
                self.fast_rec = Some((id, dir, state));
                self.state.record();
                None
            }
        }
    }

    /// After the slow path of a frame that recorded its rule counters
    /// ([`Pipeline::fast_rec`]): the decision, if it was forwarded as an
    /// ESTABLISHED packet of that connection.
    fn fast_record(&mut self, in_if: IfIndex) {
        let Some((id, dir, state)) = self.fast_rec.take() else {
            return;
        };
        let pre_len = std::mem::take(&mut self.fast_pre_len);
        let path = self
            .state
            .take_path()
            .filter(|p| self.rules.replayable(p, pre_len));
        if let (Some(path), Some((out_dev, next_hop, mtu))) = (path, self.fast_route.take()) {
            let ttl = path
                .entries()
                .iter()
                .take(pre_len)
                .any(|&e| self.rules.ttl_target(e).is_some());
            self.flow.set(
                id,
                dir,
                Decision {
                    path,
                    pre_len: pre_len as u8,
                    ttl,
                    in_if,
                    state,
                    out_dev,
                    next_hop,
                    mtu,
                },
            );
        }
    }

    fn log_table_full(&mut self, now_ns: u64, log: Option<TableFullLog>) {
        if log.is_some() {
            if let Some(line) = self.logs.slot(now_ns) {
                line.push_str(TableFullLog::MESSAGE);
            }
        }
    }

    /// The nat table of `hook` for a NEW connection: the range of the NAT
    /// target that fired, else the null binding. `dev`/`next_hop`: MASQUERADE's
    /// output device and next hop; REDIRECT uses the input device.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn nat_rules(
        &mut self,
        now_ns: u64,
        hook: Hook,
        ctx: &mut PacketCtx,
        ct: &mut Ct,
        buf: &mut [u8],
        ip_len: usize,
        route: Option<(IfIndex, u32, u16)>,
        manip: Manip,
    ) -> Result<Option<NatRange>, (DropReason, Option<RejectWith>)> {
        if !matches!(ct, Ct::New(_)) {
            return Ok(None);
        }
        self.nat_rules_new(now_ns, hook, ctx, ct, buf, ip_len, route, manip)
    }

    /// [`Pipeline::nat_rules`] for a NEW connection.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn nat_rules_new(
        &mut self,
        now_ns: u64,
        hook: Hook,
        ctx: &mut PacketCtx,
        ct: &mut Ct,
        buf: &mut [u8],
        ip_len: usize,
        route: Option<(IfIndex, u32, u16)>,
        manip: Manip,
    ) -> Result<Option<NatRange>, (DropReason, Option<RejectWith>)> {
        let Ct::New(nc) = ct else {
            return Ok(None);
        };
        let orig_src = nc.entry.orig().src;
        let null = match manip {
            Manip::Src => NatRange::null_binding(nc.entry.reply().dst),
            Manip::Dst => NatRange::null_binding(nc.entry.reply().src),
        };
        let mtu = route.map(|r| r.2);
        let range = match self.run_table(now_ns, Table::Nat, hook, ctx, ct, buf, ip_len, mtu) {
            Outcome::Continue => null,
            Outcome::Drop(r) => return Err((r, None)),
            Outcome::Reject(rw) => return Err((DropReason::Rejected, Some(rw))),
            Outcome::Nat(id) => {
                let target = self.rules.target(id);
                let addr = match target {
                    Target::Masquerade { .. } => {
                        route.and_then(|(dev, nh, _)| self.ifs.select_addr(dev, nh))
                    }
                    Target::Redirect { .. } => ctx
                        .in_if
                        .and_then(|i| self.ifs.get(i))
                        .and_then(|i| i.primaries().next().map(|a| a.addr))
                        // OUTPUT: the loopback address.
                        .or(ctx.in_if.is_none().then_some(0x7f00_0001)),
                    _ => None,
                };
                match nat::range_of(target, addr) {
                    Some(r) => r,
                    None => return Err((DropReason::NatNoAddress, None)),
                }
            }
        };
        if manip == Manip::Src {
            // For the next bursts' lookups ahead (`CtTable::prefetch_new`).
            self.last_snat = (range.flags & NatRange::MAP_IPS != 0 && range.min_addr != orig_src)
                .then_some(range.min_addr);
        }
        Ok(Some(range))
    }

    /// NAT of the destination for a NEW connection in PREROUTING/OUTPUT, then
    /// the packet rewrite of `manip` for any tracked packet. Refreshes `ctx`.
    #[inline(always)]
    fn nat_dst(
        &mut self,
        now_ns: u64,
        ct: &mut Ct,
        range: Option<NatRange>,
        ctx: &mut PacketCtx,
        buf: &mut [u8],
        ip_len: usize,
    ) {
        if let (Ct::New(_), Some(r)) = (&*ct, range) {
            self.dnat_setup(now_ns, ct, &r, ctx);
        }
        self.nat_packet(ct, Manip::Dst, ctx, buf, ip_len);
    }

    /// The destination NAT binding of a NEW connection.
    #[inline(never)]
    fn dnat_setup(&mut self, now_ns: u64, ct: &mut Ct, r: &NatRange, ctx: &mut PacketCtx) {
        if let Ct::New(nc) = ct {
            if let Some(t) = self.ct.as_mut() {
                t.nat_setup(nc, r, Manip::Dst, now_ns);
            }
            ctx.ct = nat::ct_ctx(&nc.entry, CtState::New);
        }
    }

    /// Confirm a NEW connection (with its source manip) when the packet leaves
    /// (POSTROUTING, INPUT), then rewrite the packet's source.
    #[inline(always)]
    fn confirm_and_snat(
        &mut self,
        now_ns: u64,
        ct: &mut Ct,
        snat: Option<NatRange>,
        ctx: &mut PacketCtx,
        buf: &mut [u8],
        ip_len: usize,
    ) -> Result<(), DropReason> {
        if let Ct::New(_) = ct {
            if !self.confirm(now_ns, ct, snat)? {
                return Ok(());
            }
        }
        self.nat_packet(ct, Manip::Src, ctx, buf, ip_len);
        Ok(())
    }

    /// Confirm the NEW connection of `ct` with its source binding `snat`;
    /// `ct` becomes its entry. `Ok(false)` without a table (nothing to
    /// confirm, nothing to rewrite).
    #[inline(never)]
    fn confirm(
        &mut self,
        now_ns: u64,
        ct: &mut Ct,
        snat: Option<NatRange>,
    ) -> Result<bool, DropReason> {
        if let Ct::New(nc) = *ct {
            let Some(t) = self.ct.as_mut() else {
                return Ok(false);
            };
            match t.confirm(nc, None, snat.as_ref(), now_ns) {
                Ok(id) => {
                    if let (Some((rss, q)), Some(e)) = (&self.rss, t.entry(id)) {
                        let r = e.reply();
                        if rss.queue(r.proto, r.src, r.dst, r.sport, r.dport) != *q
                            && self.handoffs.len() < self.handoffs.capacity()
                        {
                            self.handoffs.push(*r);
                        }
                    }
                    if self.ct_events_on {
                        if let Some(e) = t.entry(id) {
                            push_event(
                                &mut self.ct_events,
                                &mut self.ct_events_lost,
                                EventKind::New,
                                e,
                                now_ns,
                            );
                        }
                    }
                    *ct = Ct::Conn {
                        id,
                        dir: Dir::Original,
                    }
                }
                Err(InsertError::TableFull { log }) => {
                    self.log_table_full(now_ns, log);
                    return Err(DropReason::ConntrackFull);
                }
                Err(_) => return Err(DropReason::ConntrackInsertFailed),
            }
        }
        Ok(true)
    }

    /// `nf_nat_packet` / `nf_nat_icmp_reply_translation` for `manip` on the
    /// datagram at `buf[14..14 + ip_len]`; the context follows the rewrite.
    /// Untracked packets and connections without this manip return here.
    #[inline(always)]
    fn nat_packet(
        &mut self,
        ct: &Ct,
        manip: Manip,
        ctx: &mut PacketCtx,
        buf: &mut [u8],
        ip_len: usize,
    ) {
        match ct {
            Ct::None => return,
            Ct::Conn { id, dir } => match self.ct.as_ref().and_then(|t| t.entry(*id)) {
                Some(e) if nat::needs_manip(e, *dir, manip) => {}
                _ => return,
            },
            _ => {}
        }
        self.nat_rewrite(ct, manip, ctx, buf, ip_len);
    }

    /// [`Pipeline::nat_packet`] past its early returns.
    #[inline(never)]
    fn nat_rewrite(
        &mut self,
        ct: &Ct,
        manip: Manip,
        ctx: &mut PacketCtx,
        buf: &mut [u8],
        ip_len: usize,
    ) {
        let Some(ip) = buf.get_mut(ETH_LEN..ETH_LEN + ip_len) else {
            return;
        };
        let changed = match ct {
            Ct::None => false,
            Ct::Related { id, dir } => match self.ct.as_ref().and_then(|t| t.entry(*id)) {
                Some(e) if nat::needs_manip(e, *dir, manip) => {
                    nat::icmp_reply_translation(ip, e, *dir, manip)
                }
                _ => false,
            },
            _ => {
                let Some((e, dir, _)) = self.ct_entry(ct) else {
                    return;
                };
                if nat::needs_manip(e, dir, manip) {
                    let target = e.nat_target(dir);
                    nat::manip_pkt(ip, manip, &target);
                    true
                } else {
                    false
                }
            }
        };
        if changed {
            ctx.src = read_u32(ip, 12);
            ctx.dst = read_u32(ip, 16);
            if matches!(ctx.proto, PROTO_TCP | PROTO_UDP) && ctx.has_l4 && !ctx.fragment {
                let hl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
                ctx.sport = u16::from_be_bytes([
                    ip.get(hl).copied().unwrap_or(0),
                    ip.get(hl + 1).copied().unwrap_or(0),
                ]);
                ctx.dport = u16::from_be_bytes([
                    ip.get(hl + 2).copied().unwrap_or(0),
                    ip.get(hl + 3).copied().unwrap_or(0),
                ]);
            }
            if self.needs.addrtype {
                ctx.src_type = self.ifs.addr_type(ctx.src);
                ctx.dst_type = self.ifs.addr_type(ctx.dst);
            }
        }
    }

    fn apply_effects(
        &mut self,
        now_ns: u64,
        ctx: &mut PacketCtx,
        buf: &mut [u8],
        ip_len: usize,
        route_mtu: Option<u16>,
    ) {
        let e = &mut ctx.effects;
        if e.ttl_changed {
            e.ttl_changed = false;
            if let Some(ip) = buf.get_mut(ETH_LEN..ETH_LEN + ip_len) {
                if let Ok(mut p) = Ipv4Packet::new_checked(ip) {
                    p.set_ttl(ctx.ttl);
                }
            }
        }
        if let Some(mss) = e.tcpmss.take() {
            let mss = if mss == 0 {
                // --clamp-mss-to-pmtu: min(egress MTU, MTU of the route back) - 40.
                let back = self.fib.route_output(&self.ifs, ctx.src).map(|r| r.mtu);
                match (route_mtu, back) {
                    (Some(a), Some(b)) => Some(a.min(b).saturating_sub(40)),
                    (Some(a), None) => Some(a.saturating_sub(40)),
                    _ => None,
                }
            } else {
                Some(mss)
            };
            if let Some(mss) = mss {
                if ctx.proto == PROTO_TCP && !ctx.fragment && ctx.tcp_flags & tcpf::SYN != 0 {
                    if let Some(ip) = buf.get_mut(ETH_LEN..ETH_LEN + ip_len) {
                        let hl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
                        if let Some(seg) = ip.get_mut(hl..) {
                            if let Ok(mut t) = TcpPacket::new_checked(seg) {
                                t.clamp_mss(mss);
                            }
                        }
                    }
                }
            }
        }
        let e = &mut ctx.effects;
        if e.log_overflow > 0 {
            self.logs.add_dropped(u64::from(e.log_overflow));
            e.log_overflow = 0;
        }
        let n = usize::from(e.log_count).min(e.logs.len());
        let ids = e.logs;
        e.log_count = 0;
        for id in ids.iter().take(n) {
            let Target::Log(lt) = self.rules.target(*id) else {
                continue;
            };
            let prefix = lt.prefix.as_deref().unwrap_or("");
            let in_name = ctx
                .in_if
                .and_then(|i| self.ifs.get(i))
                .map_or("", |i| i.name.as_str());
            let out_name = ctx
                .out_if
                .and_then(|i| self.ifs.get(i))
                .map_or("", |i| i.name.as_str());
            let mac = if ctx.in_if.is_some() {
                buf.get(..ETH_LEN)
            } else {
                None
            };
            let ip = buf.get(ETH_LEN..ETH_LEN + ip_len).unwrap_or(&[]);
            if let Some(line) = self.logs.slot(now_ns) {
                format_ipv4(line, prefix, in_name, out_name, mac, ip, ctx.mark);
            }
        }
    }

    /// One received frame: its action, and what to generate.
    fn process_rx(&mut self, now_ns: u64, mem: &mut [u8], f: &mut Frame) -> (Action, Option<Gen>) {
        let start = usize::try_from(f.addr).unwrap_or(usize::MAX);
        let len = usize::from(f.len);
        if len > FRAME_SIZE {
            return (Action::Drop(DropReason::InvalidFrame), None);
        }
        let Some(buf) = start
            .checked_add(FRAME_SIZE)
            .and_then(|end| mem.get_mut(start..end))
        else {
            return (Action::Drop(DropReason::InvalidFrame), None);
        };
        let in_if = f.port;
        let Some(in_dev) = self.ifs.get(in_if) else {
            return (Action::Drop(DropReason::InvalidFrame), None);
        };
        let in_mac = in_dev.mac;
        // L2: the kernel's pkt_type, before any L3 check (ip_rcv_core and
        // arp_rcv drop PACKET_OTHERHOST first).
        let dst_mac = MacAddr([buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]]);
        let to_host = dst_mac == in_mac;
        if len >= ETH_LEN && !to_host && !dst_mac.is_multicast() {
            return (Action::Drop(DropReason::OtherHost), None);
        }
        // Matched by reference: the parse result is not copied again. Plain
        // IPv4 (untagged, no options) takes the shorter parse.
        let simple;
        let res;
        let info = if let Some(i) = parse_ipv4_simple(buf.get(..len).unwrap_or(&[])) {
            simple = i;
            &simple
        } else {
            res = parse_frame(buf.get(..len).unwrap_or(&[]));
            let parsed = match &res {
                Ok(p) => p,
                Err(e) => return (Action::Drop(drop_of_parse(*e)), None),
            };
            if parsed.vlan_id.is_some() {
                return (Action::Drop(DropReason::NotIpv4), None);
            }
            match &parsed.l3 {
                L3::Ipv4(i) => i,
                L3::Arp(arp) => {
                    let fib = &self.fib;
                    let ifs = &self.ifs;
                    let out = neigh::process_arp(&mut self.neigh, in_if, in_mac, arp, |tip| {
                        matches!(
                            fib.route_input(ifs, in_if, u32::from(arp.spa), tip),
                            Ok(r) if r.kind == RouteType::Local
                        )
                    });
                    return match out {
                        ArpOutcome::Reply(r) => (Action::Consumed, Some(Gen::ArpReply(r))),
                        ArpOutcome::Consumed => (Action::Consumed, None),
                        ArpOutcome::NotForUs => (Action::Drop(DropReason::ArpNotForUs), None),
                    };
                }
                L3::Other => return (Action::Drop(DropReason::NotIpv4), None),
            }
        };
        let ip_len = usize::from(info.total_len);
        // Trim Ethernet padding, as the kernel trims the skb to the IP total length.
        f.len = (ETH_LEN + ip_len) as u16;

        // The flow cache's candidates.
        let fast = self.fast_ok
            && to_host
            && info.ttl > 1
            && !info.is_fragment()
            && matches!(info.protocol, PROTO_TCP | PROTO_UDP)
            && self.reasm.is_none()
            && self.tracer.is_none();
        if fast && !self.raw_continues {
            if let Some(done) = self.fast_forward(now_ns, buf, info, in_if) {
                return done;
            }
        }

        // nf_defrag_ipv4 runs before raw PREROUTING whenever conntrack is
        // loaded: a fragment waits for the rest of its datagram.
        if self.ct.is_some() && info.is_fragment() && self.reasm.is_none() {
            let hl = u16::from(info.header_len);
            self.pending_frag = Some((
                defrag::Key {
                    src: u32::from(info.src),
                    dst: u32::from(info.dst),
                    proto: info.protocol,
                    id: info.ident,
                },
                defrag::Piece {
                    addr: f.addr,
                    len: f.len,
                    off: info.frag_offset,
                    plen: info.total_len.saturating_sub(hl),
                    mf: info.more_frags,
                },
            ));
            return (Action::Held, None);
        }

        if self.tracer.is_some() {
            self.trace_begin(info, in_if);
        }

        let mut ct = Ct::None;
        let mut ct_ctx = CtCtx::untracked();
        // raw PREROUTING lets every packet through unseen: a candidate of
        // the flow cache meets conntrack first, and perhaps its decision.
        let ct_first = fast && self.raw_continues;
        // Its drop (a full table) waits for raw's count, as when raw runs first.
        let mut ct_drop = None;
        if ct_first {
            match self.ct_in(now_ns, info, buf, &mut ct_ctx, self.ct_checksum, &mut ct) {
                Err(r) => ct_drop = Some(r),
                Ok(()) => {
                    if let Some(done) = self.fast_after_ct(now_ns, buf, info, in_if, &ct_ctx, &ct) {
                        return done;
                    }
                }
            }
        }
        let mut ctx = PacketCtx::new();
        fill_ctx(&mut ctx, info, buf, self.needs, &self.ifs);
        if let Some(total) = self.reasm {
            // The first fragment stands for the reassembled datagram.
            ctx.len = total;
        }
        ctx.in_if = Some(in_if);
        // raw runs before conntrack: no connection yet, `-m state` says INVALID.
        ctx.ct = if ct_first {
            ct_ctx
        } else if self.ct.is_some() {
            nat::invalid_ctx()
        } else {
            CtCtx::untracked()
        };

        // PREROUTING.
        match self.run_table(
            now_ns,
            Table::Raw,
            Hook::Prerouting,
            &mut ctx,
            &mut ct,
            buf,
            ip_len,
            None,
        ) {
            Outcome::Continue | Outcome::Nat(_) => {}
            Outcome::Drop(r) => return (Action::Drop(r), None),
            Outcome::Reject(_) => return (Action::Drop(DropReason::Rejected), None),
        }
        if let Some(r) = ct_drop {
            return (Action::Drop(r), None);
        }
        let notrack = ctx.effects.notrack;
        if notrack {
            ctx.ct = CtCtx::untracked();
        } else if !ct_first {
            if let Err(r) = self.ct_in(now_ns, info, buf, &mut ctx.ct, self.ct_checksum, &mut ct) {
                return (Action::Drop(r), None);
            }
            if self.tracing {
                self.trace_ct("conntrack", &ct);
            }
        }
        match self.run_table(
            now_ns,
            Table::Mangle,
            Hook::Prerouting,
            &mut ctx,
            &mut ct,
            buf,
            ip_len,
            None,
        ) {
            Outcome::Continue | Outcome::Nat(_) => {}
            Outcome::Drop(r) => return (Action::Drop(r), None),
            Outcome::Reject(_) => return (Action::Drop(DropReason::Rejected), None),
        }
        if self.fast_rec.is_some() {
            self.fast_pre_len = self.state.path_len();
        }
        // nat PREROUTING (NEW only), then the destination rewrite before routing.
        let dnat = match self.nat_rules(
            now_ns,
            Hook::Prerouting,
            &mut ctx,
            &mut ct,
            buf,
            ip_len,
            None,
            Manip::Dst,
        ) {
            Ok(r) => r,
            Err((r, _)) => return (Action::Drop(r), None),
        };
        self.nat_dst(now_ns, &mut ct, dnat, &mut ctx, buf, ip_len);

        // Routing (on the header as PREROUTING left it).
        let src = ctx.src;
        let dst = ctx.dst;
        let route = match self.route_input_cached(in_if, src, dst) {
            Ok(r) => r,
            Err(DropReason::NoRoute) => {
                // ip_error: net unreachable (forwarding on), not for non-unicast frames.
                let g = (to_host && icmp::icmp_error_allowed(info)).then_some(Gen::IcmpError {
                    ty: codes::DEST_UNREACH,
                    code: codes::NET_UNREACH,
                    rest: 0,
                    src: None,
                });
                return (Action::Drop(DropReason::NoRoute), g);
            }
            Err(r) => return (Action::Drop(r), None),
        };

        if route.kind != RouteType::Unicast {
            return self.local_in(
                now_ns, buf, info, &mut ctx, &mut ct, ip_len, route.kind, to_host,
            );
        }

        // ip_forward.
        if !to_host {
            return (Action::Drop(DropReason::OtherHost), None);
        }
        if ctx.ttl <= 1 {
            let g = icmp::icmp_error_allowed(info).then_some(Gen::IcmpError {
                ty: codes::TIME_EXCEEDED,
                code: codes::EXC_TTL,
                rest: 0,
                src: None,
            });
            return (Action::Drop(DropReason::TtlExpired), g);
        }
        let mtu = route.mtu;
        if ip_len > usize::from(mtu) && info.dont_frag {
            let g = icmp::icmp_error_allowed(info).then_some(Gen::IcmpError {
                ty: codes::DEST_UNREACH,
                code: codes::FRAG_NEEDED,
                rest: u32::from(mtu),
                src: None,
            });
            return (Action::Drop(DropReason::FragNeeded), g);
        }
        ctx.ttl -= 1;
        set_parsed_ttl(buf, ctx.ttl);
        ctx.out_if = Some(route.dev);
        for (table, hook) in [
            (Table::Mangle, Hook::Forward),
            (Table::Filter, Hook::Forward),
            (Table::Mangle, Hook::Postrouting),
        ] {
            match self.run_table(
                now_ns,
                table,
                hook,
                &mut ctx,
                &mut ct,
                buf,
                ip_len,
                Some(mtu),
            ) {
                Outcome::Continue | Outcome::Nat(_) => {}
                Outcome::Drop(r) => return (Action::Drop(r), None),
                Outcome::Reject(rw) => {
                    return (
                        Action::Drop(DropReason::Rejected),
                        self.reject_gen(rw, info, None, &ct),
                    )
                }
            }
        }
        // nat POSTROUTING (NEW only), confirm, the source rewrite.
        let snat = match self.nat_rules(
            now_ns,
            Hook::Postrouting,
            &mut ctx,
            &mut ct,
            buf,
            ip_len,
            Some((route.dev, route.next_hop, mtu)),
            Manip::Src,
        ) {
            Ok(r) => r,
            Err((r, rw)) => {
                let g = rw.and_then(|rw| self.reject_gen(rw, info, None, &ct));
                return (Action::Drop(r), g);
            }
        };
        if let Err(r) = self.confirm_and_snat(now_ns, &mut ct, snat, &mut ctx, buf, ip_len) {
            return (Action::Drop(r), None);
        }
        if self.tracing {
            self.trace_ct("conntrack after NAT", &ct);
        }
        let out_dev = route.dev;
        let Some(out_mac) = self.ifs.get(out_dev).map(|i| i.mac) else {
            return (Action::Drop(DropReason::InvalidFrame), None);
        };
        if let Some((id, dir, state)) = self.fast_rec {
            // The decision recorded for this connection, if this packet
            // went through the chains as one of its packets in `state`.
            if matches!(ct, Ct::Conn { id: i, dir: d } if i == id && d == dir)
                && matches!(self.ct_entry(&ct), Some((_, _, st)) if st == state)
                && ip_len <= usize::from(mtu)
            {
                self.fast_route = Some((out_dev, route.next_hop, mtu));
            }
        }
        match self.neigh.resolve(out_dev, route.next_hop, now_ns) {
            neigh::Resolve::Mac(nh_mac) | neigh::Resolve::Probe(nh_mac)
                if ip_len > usize::from(mtu) =>
            {
                buf[0..6].copy_from_slice(&nh_mac.0);
                buf[6..12].copy_from_slice(&out_mac.0);
                // Larger than the MTU without DF: ip_fragment after POSTROUTING
                // (a due probe waits for the next packet).
                (
                    Action::Forward { port: out_dev },
                    Some(Gen::Fragment { mtu }),
                )
            }
            neigh::Resolve::Mac(nh_mac) => {
                buf[0..6].copy_from_slice(&nh_mac.0);
                buf[6..12].copy_from_slice(&out_mac.0);
                (Action::Forward { port: out_dev }, None)
            }
            neigh::Resolve::Probe(nh_mac) => {
                buf[0..6].copy_from_slice(&nh_mac.0);
                buf[6..12].copy_from_slice(&out_mac.0);
                let sender = self.ifs.select_addr(out_dev, route.next_hop).unwrap_or(0);
                (
                    Action::Forward { port: out_dev },
                    Some(Gen::ArpProbe {
                        dev: out_dev,
                        target: route.next_hop,
                        sender,
                        mac: nh_mac,
                    }),
                )
            }
            neigh::Resolve::Unresolved => {
                // arp_solicit with arp_announce 0: the packet's source is not ours,
                // so the device's address towards the target.
                let sender = self.ifs.select_addr(out_dev, route.next_hop).unwrap_or(0);
                let arp = Some(Gen::ArpRequest {
                    dev: out_dev,
                    target: route.next_hop,
                    sender,
                });
                if ip_len > usize::from(mtu) {
                    // Held frames are sent as they are: not one that needs fragments.
                    return (Action::Drop(DropReason::NeighborUnresolved), arp);
                }
                buf[6..12].copy_from_slice(&out_mac.0);
                self.pending_hold = Some((out_dev, route.next_hop));
                (Action::Held, arp)
            }
        }
    }

    /// The generated answer to a REJECT of this packet.
    fn reject_gen(
        &self,
        rw: RejectWith,
        info: &Ipv4Info,
        local_src: Option<u32>,
        ct: &Ct,
    ) -> Option<Gen> {
        if rw == RejectWith::TcpReset {
            // nf_send_reset: complete TCP header, not a fragment, not a RST.
            let related_new = match ct {
                Ct::New(nc) => Some(nat::ct_ctx(&nc.entry, CtState::Related)),
                _ => None,
            };
            return match info.l4 {
                L4::Tcp { flags, .. } if info.frag_offset == 0 && flags & tcpf::RST == 0 => {
                    Some(Gen::TcpReset {
                        reject: true,
                        related_new,
                    })
                }
                _ => None,
            };
        }
        icmp::icmp_error_allowed(info).then_some(Gen::IcmpError {
            ty: codes::DEST_UNREACH,
            code: reject_code(rw),
            rest: 0,
            src: local_src,
        })
    }

    /// INPUT and local delivery.
    #[allow(clippy::too_many_arguments)]
    fn local_in(
        &mut self,
        now_ns: u64,
        buf: &mut [u8],
        info: &Ipv4Info,
        ctx: &mut PacketCtx,
        ct: &mut Ct,
        ip_len: usize,
        kind: RouteType,
        to_host: bool,
    ) -> (Action, Option<Gen>) {
        let unicast = kind == RouteType::Local && to_host;
        let local_src = Some(ctx.dst);
        if info.is_fragment() {
            // ip_local_deliver reassembles before INPUT; we do not.
            return (Action::Drop(DropReason::LocalFragment), None);
        }
        for (table, hook) in [(Table::Mangle, Hook::Input), (Table::Filter, Hook::Input)] {
            match self.run_table(now_ns, table, hook, ctx, ct, buf, ip_len, None) {
                Outcome::Continue | Outcome::Nat(_) => {}
                Outcome::Drop(r) => return (Action::Drop(r), None),
                Outcome::Reject(rw) => {
                    let g = if kind == RouteType::Local && to_host {
                        self.reject_gen(rw, info, local_src, ct)
                    } else {
                        None
                    };
                    return (Action::Drop(DropReason::Rejected), g);
                }
            }
        }
        // nat INPUT (NEW only), confirm, the source rewrite.
        let snat = match self.nat_rules(now_ns, Hook::Input, ctx, ct, buf, ip_len, None, Manip::Src)
        {
            Ok(r) => r,
            Err((r, _)) => return (Action::Drop(r), None),
        };
        if let Err(r) = self.confirm_and_snat(now_ns, ct, snat, ctx, buf, ip_len) {
            return (Action::Drop(r), None);
        }
        // The checksum over the header as NAT left it.
        let mut cur = *info;
        cur.src = std::net::Ipv4Addr::from(ctx.src);
        cur.dst = std::net::Ipv4Addr::from(ctx.dst);
        let ok_csum = l4_checksum_ok(
            buf.get(..ETH_LEN + ip_len).unwrap_or(&[]),
            &parse_frame_lite(&cur),
        );
        match info.protocol {
            PROTO_ICMP => {
                let L4::Icmp { icmp_type, .. } = info.l4 else {
                    return (Action::Drop(DropReason::Truncated), None);
                };
                if !ok_csum {
                    return (Action::Drop(DropReason::BadL4Checksum), None);
                }
                // icmp_echo_ignore_broadcasts = 1.
                if icmp_type == codes::ECHO_REQUEST && unicast {
                    return (Action::Consumed, Some(Gen::EchoReply));
                }
                (Action::Consumed, None)
            }
            PROTO_TCP => {
                let L4::Tcp {
                    flags, header_len, ..
                } = info.l4
                else {
                    return (Action::Drop(DropReason::Truncated), None);
                };
                if header_len < 20 || usize::from(header_len) > info.payload_len() {
                    return (Action::Drop(DropReason::Truncated), None);
                }
                if !ok_csum {
                    return (Action::Drop(DropReason::BadL4Checksum), None);
                }
                let g = (unicast && flags & tcpf::RST == 0).then_some(Gen::TcpReset {
                    reject: false,
                    related_new: None,
                });
                (Action::Drop(DropReason::NoSocket), g)
            }
            PROTO_UDP => {
                let L4::Udp { len, .. } = info.l4 else {
                    return (Action::Drop(DropReason::Truncated), None);
                };
                if usize::from(len) > info.payload_len() || len < 8 {
                    return (Action::Drop(DropReason::Truncated), None);
                }
                if !ok_csum {
                    return (Action::Drop(DropReason::BadL4Checksum), None);
                }
                let g = unicast.then_some(Gen::IcmpError {
                    ty: codes::DEST_UNREACH,
                    code: codes::PORT_UNREACH,
                    rest: 0,
                    src: local_src,
                });
                (Action::Drop(DropReason::NoSocket), g)
            }
            // IGMP is handled by the kernel's igmp_rcv: consumed.
            2 => (Action::Consumed, None),
            _ => {
                let g = unicast.then_some(Gen::IcmpError {
                    ty: codes::DEST_UNREACH,
                    code: codes::PROT_UNREACH,
                    rest: 0,
                    src: local_src,
                });
                (Action::Drop(DropReason::NoSocket), g)
            }
        }
    }

    fn ident(&mut self) -> u16 {
        let i = self.next_ident;
        self.next_ident = self.next_ident.wrapping_add(1);
        i
    }

    /// Split the forwarded frame `rx` (L2 already rewritten) into fragments for
    /// `mtu`: the first stays in `rx`, the others go into spare buffers, in order.
    /// Fails (nothing sent) when there are not enough spare buffers.
    fn fragment(
        &mut self,
        mem: &mut [u8],
        rx: &mut Frame,
        mtu: u16,
        port: IfIndex,
        spare: &mut Vec<FrameAddr>,
        generated: &mut Vec<Frame>,
    ) -> Result<(), DropReason> {
        let a = usize::try_from(rx.addr).map_err(|_| DropReason::InvalidFrame)?;
        let ip_len = usize::from(rx.len).saturating_sub(ETH_LEN);
        let head = mem
            .get(a + ETH_LEN..a + ETH_LEN + 20)
            .ok_or(DropReason::InvalidFrame)?;
        let hl = usize::from(head[0] & 0x0f) * 4;
        let ff = u16::from_be_bytes([head[6], head[7]]);
        let orig_off = usize::from(ff & 0x1fff) * 8;
        let orig_mf = ff & 0x2000 != 0;
        let (chunk, count) =
            frag::plan(hl, ip_len, usize::from(mtu)).ok_or(DropReason::FragmentationUnsupported)?;
        if spare.len() < count - 1 {
            return Err(DropReason::NoBuffer);
        }
        let payload = ip_len - hl;
        let first_gen = generated.len();
        for k in 1..count {
            let Some(b) = spare.pop().and_then(|x| usize::try_from(x).ok()) else {
                return Err(DropReason::NoBuffer);
            };
            let Some((rxb, out)) = frame_pair(mem, a, b) else {
                spare.push(b as FrameAddr);
                // Give back the buffers of the fragments already written.
                while generated.len() > first_gen {
                    if let Some(g) = generated.pop() {
                        spare.push(g.addr);
                    }
                }
                return Err(DropReason::InvalidFrame);
            };
            let off = k * chunk;
            let len = chunk.min(payload - off);
            out[..ETH_LEN + hl].copy_from_slice(&rxb[..ETH_LEN + hl]);
            let data = ETH_LEN + hl + off..ETH_LEN + hl + off + len;
            out[ETH_LEN + hl..ETH_LEN + hl + len].copy_from_slice(&rxb[data]);
            let h = &mut out[ETH_LEN..ETH_LEN + hl];
            frag::noop_uncopied_options(h);
            let last = k == count - 1;
            frag::set_fragment_header(h, hl + len, orig_off + off, !last || orig_mf);
            generated.push(Frame {
                addr: b as FrameAddr,
                len: (ETH_LEN + hl + len) as u16,
                port,
            });
        }
        self.counters
            .generated
            .fetch_add((count - 1) as u64, Ordering::Relaxed);
        let h = mem
            .get_mut(a + ETH_LEN..a + ETH_LEN + hl)
            .ok_or(DropReason::InvalidFrame)?;
        frag::set_fragment_header(h, hl + chunk, orig_off, true);
        rx.len = (ETH_LEN + hl + chunk) as u16;
        Ok(())
    }

    /// Build a generated packet for the received frame `rx` into a spare buffer.
    fn generate(
        &mut self,
        now_ns: u64,
        mem: &mut [u8],
        rx: &Frame,
        g: Gen,
        spare: &mut Vec<FrameAddr>,
        generated: &mut Vec<Frame>,
    ) {
        let Some(addr) = spare.pop() else {
            self.drops.inc(DropReason::NoBuffer);
            return;
        };
        let (Ok(a), Ok(b)) = (usize::try_from(rx.addr), usize::try_from(addr)) else {
            self.drops.inc(DropReason::InvalidFrame);
            return;
        };
        let Some((rxb, out)) = frame_pair(mem, a, b) else {
            spare.push(addr);
            self.drops.inc(DropReason::InvalidFrame);
            return;
        };
        let rx_len = usize::from(rx.len).min(FRAME_SIZE);
        match self.build(now_ns, rxb.get(..rx_len).unwrap_or(&[]), rx.port, g, out) {
            Ok((port, len)) => {
                PipelineCounters::inc(&self.counters.generated);
                generated.push(Frame {
                    addr,
                    len: len as u16,
                    port,
                });
            }
            Err(r) => {
                spare.push(addr);
                self.drops.inc(r);
            }
        }
    }

    /// Write the generated packet into `out`; returns (egress port, frame length).
    fn build(
        &mut self,
        now_ns: u64,
        rx: &[u8],
        in_port: IfIndex,
        g: Gen,
        out: &mut [u8],
    ) -> Result<(IfIndex, usize), DropReason> {
        match g {
            Gen::ArpReply(r) => {
                let mac = self.ifs.get(in_port).ok_or(DropReason::InvalidFrame)?.mac;
                let n = neigh::emit_arp(out, mac, r.tha, &r).ok_or(DropReason::NoBuffer)?;
                Ok((in_port, n))
            }
            Gen::ArpRequest {
                dev,
                target,
                sender,
            } => self.arp_request(now_ns, out, dev, target, sender),
            Gen::ArpProbe {
                dev,
                target,
                sender,
                mac,
            } => {
                let us = self.ifs.get(dev).ok_or(DropReason::InvalidFrame)?.mac;
                let req = fastables_packet::arp::ArpRepr::request(
                    us,
                    std::net::Ipv4Addr::from(sender),
                    std::net::Ipv4Addr::from(target),
                );
                let n = neigh::emit_arp(out, us, mac, &req).ok_or(DropReason::NoBuffer)?;
                Ok((dev, n))
            }
            // Handled in process_batch.
            Gen::Fragment { .. } => Err(DropReason::InvalidFrame),
            Gen::IcmpError {
                ty,
                code,
                rest,
                src,
            } => {
                let quoted = rx.get(ETH_LEN..).ok_or(DropReason::Truncated)?;
                let orig_src = read_u32(quoted, 12);
                let route = self
                    .fib
                    .route_output(&self.ifs, orig_src)
                    .ok_or(DropReason::NoRoute)?;
                if !self.icmp_rl.allow(now_ns, orig_src, ty, code) {
                    return Err(DropReason::IcmpRateLimited);
                }
                let s = src.unwrap_or(route.src);
                let ident = self.ident();
                let tos = quoted.get(1).copied().unwrap_or(0);
                let ip_out = out.get_mut(ETH_LEN..).ok_or(DropReason::NoBuffer)?;
                let n =
                    icmp::build_icmp_error(ip_out, s, orig_src, ident, tos, ty, code, rest, quoted)
                        .ok_or(DropReason::NoBuffer)?;
                self.output_attached(now_ns, out, n, (route.dev, route.next_hop, route.mtu), None)
            }
            Gen::EchoReply => {
                let ip = rx.get(ETH_LEN..).ok_or(DropReason::Truncated)?;
                let hl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([
                    ip.get(2).copied().unwrap_or(0),
                    ip.get(3).copied().unwrap_or(0),
                ]));
                let req = ip.get(hl..total).ok_or(DropReason::Truncated)?;
                let (orig_src, orig_dst) = (read_u32(ip, 12), read_u32(ip, 16));
                let route = self
                    .fib
                    .route_output(&self.ifs, orig_src)
                    .ok_or(DropReason::NoRoute)?;
                let ident = self.ident();
                let tos = ip.get(1).copied().unwrap_or(0);
                let ip_out = out.get_mut(ETH_LEN..).ok_or(DropReason::NoBuffer)?;
                let n = icmp::build_echo_reply(ip_out, orig_dst, orig_src, tos, ident, req)
                    .ok_or(DropReason::NoBuffer)?;
                self.output_attached(now_ns, out, n, (route.dev, route.next_hop, route.mtu), None)
            }
            Gen::TcpReset {
                reject,
                related_new,
            } => {
                let ip = rx.get(ETH_LEN..).ok_or(DropReason::Truncated)?;
                let hl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([
                    ip.get(2).copied().unwrap_or(0),
                    ip.get(3).copied().unwrap_or(0),
                ]));
                let seg = ip.get(hl..total).ok_or(DropReason::Truncated)?;
                let doff = usize::from(seg.get(12).copied().unwrap_or(0) >> 4) * 4;
                let payload = seg.len().saturating_sub(doff);
                let (orig_src, orig_dst) = (read_u32(ip, 12), read_u32(ip, 16));
                let route = self
                    .fib
                    .route_output(&self.ifs, orig_src)
                    .ok_or(DropReason::NoRoute)?;
                let tos = if reject {
                    0
                } else {
                    ip.get(1).copied().unwrap_or(0)
                };
                let ip_out = out.get_mut(ETH_LEN..).ok_or(DropReason::NoBuffer)?;
                let n = icmp::build_tcp_reset(ip_out, orig_dst, orig_src, tos, seg, payload)
                    .ok_or(DropReason::NoBuffer)?;
                self.output_attached(
                    now_ns,
                    out,
                    n,
                    (route.dev, route.next_hop, route.mtu),
                    related_new,
                )
            }
        }
    }

    fn arp_request(
        &mut self,
        now_ns: u64,
        out: &mut [u8],
        dev: IfIndex,
        target: u32,
        sender: u32,
    ) -> Result<(IfIndex, usize), DropReason> {
        let mac = self.ifs.get(dev).ok_or(DropReason::InvalidFrame)?.mac;
        if !self.neigh.solicit(dev, target, now_ns) {
            return Err(DropReason::ArpSolicitLimited);
        }
        let n = neigh::arp_request(out, mac, sender, target).ok_or(DropReason::NoBuffer)?;
        self.neigh.count_request();
        Ok((dev, n))
    }

    /// The local output path of a generated IP datagram at `out[14..14 + ip_len]`:
    /// OUTPUT raw, mangle, nat, filter; POSTROUTING mangle, nat; MTU; neighbor
    /// (unresolved: the buffer is reused for an ARP request); Ethernet header.
    ///
    /// `related_new`: the packet carries an unconfirmed connection as RELATED
    /// (REJECT's reset, see [`Gen::TcpReset`]): no conntrack lookup; nat OUTPUT
    /// is skipped (that connection's destination manip was set in
    /// PREROUTING) and nat POSTROUTING runs, as `nf_nat_inet_fn` does for a
    /// manip not yet initialised. Its choice binds nothing: the connection is
    /// never confirmed, and a source binding does not rewrite the reply
    /// direction.
    fn output_attached(
        &mut self,
        now_ns: u64,
        out: &mut [u8],
        ip_len: usize,
        (dev, next_hop, mtu): (IfIndex, u32, u16),
        related_new: Option<CtCtx>,
    ) -> Result<(IfIndex, usize), DropReason> {
        let dev_mac = self.ifs.get(dev).ok_or(DropReason::InvalidFrame)?.mac;
        // A provisional Ethernet header so that the frame parses.
        out.get_mut(..ETH_LEN)
            .ok_or(DropReason::NoBuffer)?
            .copy_from_slice(&[
                0,
                0,
                0,
                0,
                0,
                0,
                dev_mac.0[0],
                dev_mac.0[1],
                dev_mac.0[2],
                dev_mac.0[3],
                dev_mac.0[4],
                dev_mac.0[5],
                0x08,
                0x00,
            ]);
        let info = match parse_frame(out.get(..ETH_LEN + ip_len).unwrap_or(&[])) {
            Ok(p) => match p.l3 {
                L3::Ipv4(i) => i,
                _ => return Err(DropReason::BadIpHeader),
            },
            Err(e) => return Err(drop_of_parse(e)),
        };
        let mut ctx = PacketCtx::new();
        fill_ctx(&mut ctx, &info, out, self.needs, &self.ifs);
        ctx.in_if = None;
        ctx.out_if = Some(dev);
        let related_new = related_new.filter(|_| self.ct.is_some());
        ctx.ct = match related_new {
            Some(c) => c,
            None if self.ct.is_some() => nat::invalid_ctx(),
            None => CtCtx::untracked(),
        };
        let mut ct = Ct::None;
        for (table, hook) in [
            (Table::Raw, Hook::Output),
            (Table::Mangle, Hook::Output),
            (Table::Nat, Hook::Output),
            (Table::Filter, Hook::Output),
            (Table::Mangle, Hook::Postrouting),
            (Table::Nat, Hook::Postrouting),
        ] {
            let outcome = if table == Table::Nat && related_new.is_some() {
                if hook == Hook::Output {
                    continue;
                }
                let o = match self.run_table(
                    now_ns,
                    table,
                    hook,
                    &mut ctx,
                    &mut ct,
                    out,
                    ip_len,
                    Some(mtu),
                ) {
                    Outcome::Drop(r) => return Err(r),
                    _ => Outcome::Continue,
                };
                // nf_nat_packet in the reply direction: a DNATed connection's
                // reset leaves from the address and port the client used.
                if let Some(c) = related_new {
                    if c.status & fastables_conntrack::status::DST_NAT != 0 {
                        if let Some(ip) = out.get_mut(ETH_LEN..ETH_LEN + ip_len) {
                            let t = fastables_conntrack::Tuple::new(
                                PROTO_TCP,
                                c.orig_dst,
                                c.orig_dport,
                                c.orig_src,
                                c.orig_sport,
                            );
                            nat::manip_pkt(ip, Manip::Src, &t);
                        }
                    }
                }
                o
            } else if table == Table::Nat {
                let (manip, route) = if hook == Hook::Output {
                    (Manip::Dst, None)
                } else {
                    (Manip::Src, Some((dev, next_hop, mtu)))
                };
                let range = match self
                    .nat_rules(now_ns, hook, &mut ctx, &mut ct, out, ip_len, route, manip)
                {
                    Ok(r) => r,
                    Err((r, _)) => return Err(r),
                };
                if manip == Manip::Dst {
                    // The route is not looked up again after a DNAT in OUTPUT
                    // (our generated packets answer their source).
                    self.nat_dst(now_ns, &mut ct, range, &mut ctx, out, ip_len);
                } else {
                    self.confirm_and_snat(now_ns, &mut ct, range, &mut ctx, out, ip_len)?;
                }
                Outcome::Continue
            } else {
                self.run_table(
                    now_ns,
                    table,
                    hook,
                    &mut ctx,
                    &mut ct,
                    out,
                    ip_len,
                    Some(mtu),
                )
            };
            match outcome {
                Outcome::Continue | Outcome::Nat(_) => {}
                Outcome::Drop(r) => return Err(r),
                // No answer to an answer.
                Outcome::Reject(_) => return Err(DropReason::Rejected),
            }
            if table == Table::Raw && related_new.is_none() {
                if ctx.effects.notrack {
                    ctx.ct = CtCtx::untracked();
                } else {
                    self.ct_in(now_ns, &info, out, &mut ctx.ct, false, &mut ct)?;
                }
            }
        }
        if ip_len > usize::from(mtu) {
            return Err(DropReason::FragmentationUnsupported);
        }
        match self.neigh.lookup(dev, next_hop) {
            Some(m) => {
                out[0..6].copy_from_slice(&m.0);
                Ok((dev, ETH_LEN + ip_len))
            }
            None => {
                // arp_solicit, arp_announce 0: our packet's source address is local.
                self.drops.inc(DropReason::NeighborUnresolved);
                let sender = u32::from(info.src);
                self.arp_request(now_ns, out, dev, next_hop, sender)
            }
        }
    }
}

/// What the lookups ahead found for a frame.
#[derive(Clone, Copy, Debug)]
enum Ahead {
    /// Not looked up (not TCP/UDP, a fragment).
    None,
    /// The entry, for `ct_in` to start from.
    Found(Hint),
    /// No entry: a new connection, most likely, whose buckets are
    /// prefetched [`PREFETCH_AHEAD`] frames before its turn.
    New(Tuple),
}

/// Default [`PipelineOptions::conntrack_lookup_ahead`]: about where the
/// table (some 200 bytes per entry) outgrows a core's share of the cache.
pub const LOOKUP_AHEAD_MIN: usize = 16 * 1024;

/// [`CompiledRuleset::shortcut`] of every (table, hook).
type Shortcuts = [[Option<Shortcut>; 5]; 4];

fn shortcuts(rules: &CompiledRuleset) -> Shortcuts {
    let mut s = [[None; 5]; 4];
    for t in Table::ALL {
        for h in Hook::ALL {
            s[t as usize][h as usize] = rules.shortcut(t, h);
        }
    }
    s
}

/// Slots of the route cache (a power of two).
const ROUTE_CACHE: usize = 1024;

/// One remembered `route_input` decision.
#[derive(Clone, Copy)]
struct RouteSlot {
    used: bool,
    in_if: IfIndex,
    src: u32,
    dst: u32,
    res: Result<RouteResult, DropReason>,
}

impl RouteSlot {
    const EMPTY: RouteSlot = RouteSlot {
        used: false,
        in_if: 0,
        src: 0,
        dst: 0,
        res: Err(DropReason::NoRoute),
    };
}

/// What a trace record's first line says about the packet.
struct TraceHead {
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    ports: bool,
    in_if: IfIndex,
    len: u16,
    ttl: u8,
}

/// Hand-off requests kept between two drains ([`Pipeline::take_handoffs`]).
pub const HANDOFF_QUEUE: usize = 1024;

/// Conntrack events kept between two drains (`conntrack -E`).
pub const CT_EVENT_QUEUE: usize = 4096;

fn push_event(
    q: &mut Vec<(EventKind, Entry, u64)>,
    lost: &mut u64,
    kind: EventKind,
    e: &Entry,
    now_ns: u64,
) {
    if q.len() < q.capacity() {
        q.push((kind, *e, now_ns));
    } else {
        *lost += 1;
    }
}

/// Gives the fragment at `to` the header fields the pipeline rewrote in the
/// first fragment at `from`: the Ethernet addresses, TOS, TTL, IP addresses;
/// then its header checksum.
fn copy_rewritten_header(mem: &mut [u8], from: FrameAddr, to: FrameAddr) {
    let (Ok(a), Ok(b)) = (usize::try_from(from), usize::try_from(to)) else {
        return;
    };
    let Some((src, dst)) = frame_pair(mem, a, b) else {
        return;
    };
    dst[..12].copy_from_slice(&src[..12]);
    let (si, di) = (&src[ETH_LEN..], &mut dst[ETH_LEN..]);
    di[1] = si[1];
    di[8] = si[8];
    di[12..20].copy_from_slice(&si[12..20]);
    let hl = usize::from(di[0] & 0x0f) * 4;
    if (20..=60).contains(&hl) {
        di[10] = 0;
        di[11] = 0;
        let c = fastables_packet::checksum::checksum(&di[..hl]);
        di[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// `Ipv4Packet::set_ttl` (incremental checksum) on the datagram at
/// `frame[14..]`, whose header `parse_frame` validated.
#[inline]
fn set_parsed_ttl(frame: &mut [u8], ttl: u8) {
    let Some(h) = frame.get_mut(ETH_LEN..ETH_LEN + 20) else {
        return;
    };
    let old = u16::from_be_bytes([h[8], h[9]]);
    let new = (u16::from(ttl) << 8) | (old & 0xff);
    let c = fastables_packet::checksum::update16(u16::from_be_bytes([h[10], h[11]]), old, new);
    h[8] = ttl;
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The conntrack tuple of a received untagged IPv4 TCP or UDP frame that is
/// not a fragment, read from its bytes before the parse (`None` for anything
/// else; `ct_in` then looks up the tuple of the parse itself).
#[inline]
fn frame_tuple(mem: &[u8], f: &Frame) -> Option<Tuple> {
    let at = usize::try_from(f.addr).ok()?;
    let b = mem.get(at..at.checked_add(usize::from(f.len).min(FRAME_SIZE))?)?;
    let (eth, h) = (b.get(12..14)?, b.get(ETH_LEN..ETH_LEN + 20)?);
    if eth != [0x08, 0x00] || h[0] >> 4 != 4 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    let proto = h[9];
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let l4 = ETH_LEN + usize::from(h[0] & 0x0f) * 4;
    let p = b.get(l4..l4 + 4)?;
    Some(Tuple::new(
        proto,
        read_u32(h, 12),
        u16::from_be_bytes([p[0], p[1]]),
        read_u32(h, 16),
        u16::from_be_bytes([p[2], p[3]]),
    ))
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// A `ParsedFrame` for an untagged IPv4 frame with this header (for `l4_checksum_ok`).
fn parse_frame_lite(info: &Ipv4Info) -> fastables_packet::ParsedFrame {
    fastables_packet::ParsedFrame {
        vlan_id: None,
        ethertype: fastables_packet::ethernet::ETHERTYPE_IPV4,
        l3_offset: ETH_LEN,
        l3: L3::Ipv4(*info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_passes_the_table_once_a_second() {
        let mut last = 0;
        // A million entries, a batch every 32 us (2 M packets/s): 32 slots.
        assert_eq!(sweep_budget(&mut last, 32_000, 1_000_000, 1024), 32);
        assert_eq!(last, 32_000);
        // Over a second of such batches: the whole table (rounded up).
        let mut swept = 0;
        for i in 2..=31_251u64 {
            swept += sweep_budget(&mut last, i * 32_000, 1_000_000, 1024);
        }
        assert!((1_000_000..1_001_000).contains(&(swept + 32)), "{swept}");
        // Batches in the same nanosecond still move it on; a long gap is
        // capped at the configured budget.
        let t = last;
        assert_eq!(sweep_budget(&mut last, t, 1_000_000, 1024), SWEEP_MIN);
        assert_eq!(
            sweep_budget(&mut last, t + 1_000_000_000, 1_000_000, 1024),
            1024
        );
        let t = last;
        assert_eq!(
            sweep_budget(&mut last, t + 1, 100, 8),
            8,
            "max below the floor"
        );
        assert_eq!(sweep_budget(&mut last, t + 2, 100, 1024), SWEEP_MIN);
    }
}
