//! The pipeline of one worker: a packet's way through, in the kernel's
//! order, as stages that own their state, one file each. In the order a
//! packet meets them:
//!
//! - `batch.rs`: the batch loop; each frame in, its verdict carried out.
//! - `input.rs`: the input walk, top to bottom: L2, parse, ARP, PREROUTING,
//!   routing, FORWARD, POSTROUTING, the neighbour.
//! - `reasm.rs`: conntrack's reassembly, fragments held until their
//!   datagram is whole.
//! - `flow.rs`: the flow cache, a connection's recorded decision instead of
//!   the chains (the fast path).
//! - `tables.rs`: table runs, one chain for the packet, then its rules' effects.
//! - `conntrack.rs`: conntrack: classification, confirmation, events,
//!   expiry, lookups ahead.
//! - `nat.rs`: NAT: the nat table for a connection's first packet, the
//!   rewrites for all.
//! - `routing.rs`: the FIB behind a cache.
//! - `local.rs`: local delivery: INPUT and the local stack's answers.
//! - `fragment.rs`: fragmentation of forwarded datagrams larger than the MTU.
//! - `output.rs`: generated packets and their output path; the neighbour
//!   hold queue.
//! - `trace.rs`: `fastables trace`, a record per traced packet.
//! - `pkt.rs`: what travels with a packet (`Pkt`) and a frame's verdict (`Fate`).
//!
//! ```text
//! parse ─ L2 (ours / broadcast / multicast, else OTHERHOST drop) ─ ARP → arp_process
//!   (conntrack loaded: fragments held until their datagram is whole)
//!   (flow cache: a connection's decision replayed, else on)
//!   PREROUTING raw ─ conntrack in ─ mangle ─ nat (DNAT, first packet only)
//!   route_input (martians, local table, LPM)
//!   ├─ local / broadcast → INPUT mangle ─ filter ─ nat → local delivery
//!   │     ICMP echo → echo reply; TCP → RST; UDP → port unreachable;
//!   │     other protocols → protocol unreachable; IGMP / other ICMP consumed
//!   └─ forward (ip_forward): TTL <= 1 → time exceeded; DF and > MTU → frag needed;
//!         TTL-1; FORWARD mangle ─ filter; POSTROUTING mangle ─ nat (SNAT) ─ confirm;
//!         NAT rewrite ─ neighbor → L2 rewrite → (> MTU without DF: fragments) → tx
//!         (neighbor unknown: held until it answers an ARP request)
//! generated (ICMP errors, RSTs, echo replies): OUTPUT raw ─ mangle ─ nat ─ filter,
//!   POSTROUTING mangle ─ nat, neighbor (unresolved → ARP request instead) → tx
//! ```
//!
//! Per packet, the stages pass one value along, a `Pkt` (the frame, its
//! parse, the rules' context, its connection, what the flow cache and the
//! trace carry for it); `process_rx` returns the frame's whole verdict (a
//! `Fate`: forward, drop, consume, hold for the neighbour, hold for
//! reassembly) and what to generate. The batch loop carries the verdict
//! out. No field of the pipeline holds a packet's state between stages.
//!
//! Conntrack (the `fastables-conntrack` table) is loaded when the ruleset
//! needs it (a state/conntrack match, a NAT target, ...; see
//! [`Needs`](fastables_rules::ctx::Needs)) and stays loaded, as the kernel
//! module does. The nat table runs for a connection's first packet only;
//! the binding it chose lives in the entry and every later packet of the
//! connection (and ICMP errors RELATED to it, outer and quoted headers) is
//! rewritten from it ([`nat`]).
//!
//! Not done (and counted where it applies): reassembly for local delivery
//! (fragments to us are dropped; forwarded fragments are reassembled for
//! conntrack, [`reasm`]), fragmentation of locally generated packets, ICMP
//! redirects (`send_redirects`), IP options processing (forwarded as they
//! are, not echoed in replies), VLANs; the ICMP rate limits are approximate
//! (see [`icmp::IcmpRateLimiter`](crate::icmp::IcmpRateLimiter)).

mod batch;
mod conntrack;
mod flow;
pub mod fragment;
mod input;
mod local;
pub mod nat;
mod output;
mod pkt;
pub mod reasm;
mod routing;
mod tables;
pub mod trace;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use fastables_rules::compile::{CompiledRuleset, RuleState};

pub use self::conntrack::{
    CT_EVENT_QUEUE, HANDOFF_QUEUE, LOOKUP_AHEAD_MIN, SWEEP_MIN, SWEEP_PERIOD_NS,
};
pub use self::trace::TraceFilter;

use self::conntrack::Conntrack;
use self::flow::FlowCache;
use self::output::Output;
use self::reasm::Reassembly;
use self::routing::Routes;
use self::tables::Tables;
use self::trace::Tracer;
use crate::drop::DropCounters;
use crate::iface::{IfaceError, Interfaces};
use crate::log::LogQueue;
use crate::neigh::{self, Neighbors};
use crate::route::Fib;
use fastables_config::Config;

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
    /// The flow cache: when every chain a forwarded
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

/// The pipeline of one worker: its stages, each owning its state.
pub struct Pipeline {
    /// The interfaces and their addresses.
    ifs: Interfaces,
    /// The routing table and its cache.
    routes: Routes,
    /// Neighbours, ARP and the hold queue.
    neigh: Neighbors,
    /// The ruleset, its counters and shortcuts.
    tables: Tables,
    /// The connection table and what goes with it.
    ct: Conntrack,
    /// The flow cache.
    fast: FlowCache,
    /// Datagrams under reassembly.
    reasm: Reassembly,
    /// ICMP rate limits, IP IDs of generated packets.
    out: Output,
    /// `fastables trace`: the tracer while one is set.
    trace: Option<Tracer>,
    /// LOG lines and conntrack's "table full".
    logs: LogQueue,
    drops: Arc<DropCounters>,
    counters: Arc<PipelineCounters>,
    opts: PipelineOptions,
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
        let tables = Tables::new(rules);
        let ct_cfg = nat::table_config(&config.conntrack, opts.conntrack_seed);
        let ct = Conntrack::new(ct_cfg, config.conntrack.checksum, tables.needs.conntrack)?;
        let mut fast = FlowCache::new(if ct.table.is_some() { ct.max() } else { 0 });
        fast.configure(&tables, opts.flow_cache);
        Ok(Pipeline {
            routes: Routes::new(fib),
            neigh: Neighbors::new(&config.neighbors, opts.neigh_dynamic_max),
            ifs,
            tables,
            ct,
            fast,
            reasm: Reassembly::new(),
            out: Output::new(opts.icmp_msgs_per_sec, opts.icmp_msgs_burst),
            trace: None,
            logs: LogQueue::new(opts.log_queue, opts.log_rate_per_sec, opts.log_burst),
            drops: Arc::new(DropCounters::new()),
            counters: Arc::new(PipelineCounters::default()),
            opts,
        })
    }

    /// Replace the ruleset (between batches). Rule counters start from zero in
    /// a fresh [`RuleState`]: to carry them over, fold the old ones into the
    /// ruleset with `CompiledRuleset::counters_into` before compiling the new one.
    pub fn set_ruleset(&mut self, rules: Arc<CompiledRuleset>) {
        self.tables = Tables::new(rules);
        // Conntrack is loaded when a ruleset first needs it and stays (as the
        // kernel's module does); existing connections keep their NAT bindings.
        if self.tables.needs.conntrack && self.ct.load() {
            self.fast.resize(self.ct.max());
        }
        self.fast.configure(&self.tables, self.opts.flow_cache);
    }

    /// The large arrays of this pipeline (the conntrack table's and the
    /// flow cache's tags) as (address, bytes), for huge pages
    /// (`fastables_xdp::advise_huge_pages`). Empty without conntrack.
    pub fn regions(&self) -> Vec<(usize, usize)> {
        match &self.ct.table {
            Some(t) => {
                let mut v = t.regions().to_vec();
                v.push(self.fast.region());
                v
            }
            None => Vec::new(),
        }
    }

    /// The ruleset in use.
    pub fn ruleset(&self) -> &Arc<CompiledRuleset> {
        &self.tables.rules
    }

    /// Frames the flow cache forwarded ([`PipelineOptions::flow_cache`]):
    /// their connection's recorded decision stood for the chains.
    pub fn flow_cache_hits(&self) -> u64 {
        self.fast.hits
    }

    /// Whether the flow cache can forward with this ruleset: it is on and
    /// every chain of the forward path is flow-invariant.
    pub fn flow_cache_usable(&self) -> bool {
        self.fast.usable
    }

    /// Rule counters and limit state (for `CompiledRuleset::counters_into`, `save -c`).
    pub fn rule_state(&self) -> &RuleState {
        &self.tables.state
    }

    /// The interfaces.
    pub fn interfaces(&self) -> &Interfaces {
        &self.ifs
    }

    /// The routing table.
    pub fn fib(&self) -> &Fib {
        self.routes.fib()
    }

    /// The neighbor table.
    pub fn neighbors(&self) -> &Neighbors {
        &self.neigh
    }

    /// What the ARP side did so far.
    pub fn arp_counters(&self) -> neigh::ArpCounters {
        self.neigh.counters()
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
}
