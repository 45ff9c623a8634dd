//! The connection table of one worker (nf_conntrack_core.c): a preallocated
//! slab of entries, a hash index of both directions (cache-line buckets of
//! tagged links, `index.rs`), kernel early drop, incremental expiry, and the
//! per-packet classification (`nf_conntrack_in`).

use std::hash::{BuildHasher, Hasher};

use crate::entry::{status, Entry, ProtoInfo, NIL};
use crate::index::{Index, SLOTS};
use crate::tcp::{self, TcpCfg, TcpSeg, TcpVerdict};
use crate::tuple::{
    proto_has_ports, Dir, Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, NR_ICMP_TYPES,
};
use crate::{ConfigError, Events, InsertError, Stats, TableConfig, Timeouts};

const NS: u64 = 1_000_000_000;
/// `NF_CT_EVICTION_RANGE`: hash chains scanned by early drop.
const EVICTION_RANGE: usize = 8;

/// `GC_SCAN_INTERVAL_MIN`, `GC_SCAN_INTERVAL_MAX`, `GC_SCAN_INTERVAL_CLAMP`,
/// `GC_SCAN_INITIAL_COUNT` of nf_conntrack_core.c, and one jiffy (250 Hz).
const GC_INTERVAL_MIN_NS: u64 = NS;
const GC_INTERVAL_MAX_NS: u64 = 60 * NS;
const GC_TIMEOUT_CLAMP_NS: u64 = 300 * NS;
const GC_INITIAL_COUNT: u64 = 100;
const GC_JIFFY_NS: u64 = 4_000_000;

/// One run of the kernel's gc worker: when it started, the running average
/// of the entries' timeouts it computes for its next run (biased as if 100
/// entries had the maximum), and whether it evicts unassured entries (the
/// table was full when it started).
#[derive(Debug, Clone, Copy)]
struct GcRun {
    start: u64,
    avg: u64,
    count: u64,
    early: bool,
}

impl GcRun {
    /// `expires = clamp(...); expires = (expires - next_run) / ++count;
    /// next_run += expires;`
    fn add(&mut self, expires_in: u64) {
        let e = expires_in.clamp(GC_INTERVAL_MIN_NS, GC_TIMEOUT_CLAMP_NS) as i128;
        self.count += 1;
        let d = (e - self.avg as i128) / self.count as i128;
        self.avg = (self.avg as i128 + d).max(0) as u64;
    }
}
/// Index buckets a kernel chain may span before its nodes are counted.
const CHAIN_RUN_MAX: usize = 16;

/// Hard cap on expired copies of one tuple collected in one go.
const CHAIN_WALK_CAP: usize = 1024;

/// Handle of an entry; stale handles (entry removed) are detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryId {
    idx: u32,
    gen: u32,
}

impl EntryId {
    /// Slot index (stable while the entry lives).
    pub fn index(self) -> u32 {
        self.idx
    }

    /// The slot's generation: it changes when the slot is reused.
    pub fn generation(self) -> u32 {
        self.gen
    }
}

/// `ip_conntrack_info` as seen by `-m state` / `-m conntrack --ctstate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
}

/// ICMP facts of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpFacts {
    pub icmp_type: u8,
    pub code: u8,
    /// Echo id (meaningful for echo/timestamp/info/address types).
    pub id: u16,
    /// For ICMP errors: the tuple of the quoted packet (`nf_ct_get_tuplepr` on
    /// the inner header), `None` if it could not be read (too short, fragment).
    pub inner: Option<Tuple>,
}

/// What conntrack needs to know of one IPv4 packet, in host byte order.
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketFacts<'a> {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    /// Non-first fragment (offset != 0): the kernel cannot track it.
    pub fragment: bool,
    /// The transport header is present: 8 bytes for UDP/ICMP/ports, 20 for TCP.
    pub l4_ok: bool,
    /// The transport checksum was verified and is wrong (only on PREROUTING,
    /// like `nf_conntrack_checksum`; UDP with checksum 0 is never bad).
    pub csum_bad: bool,
    /// Bytes from the transport header to the end of the IP payload.
    pub l4_len: u32,
    pub sport: u16,
    pub dport: u16,
    /// TCP header facts (TCP only).
    pub tcp: TcpSeg<'a>,
    /// UDP length field (UDP only).
    pub udp_len: u16,
    /// ICMP facts (ICMP only).
    pub icmp: IcmpFacts,
}

impl<'a> PacketFacts<'a> {
    /// A TCP segment with `payload` data bytes and the given option bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
        payload: u32,
        options: &'a [u8],
    ) -> Self {
        let hdr_len = (20 + options.len()).min(60) as u16;
        PacketFacts {
            src,
            dst,
            proto: IPPROTO_TCP,
            l4_ok: true,
            l4_len: u32::from(hdr_len) + payload,
            sport,
            dport,
            tcp: TcpSeg {
                flags,
                seq,
                ack,
                window,
                hdr_len,
                l4_len: u32::from(hdr_len) + payload,
                options,
            },
            ..Default::default()
        }
    }

    /// A UDP datagram with `payload` data bytes.
    pub fn udp(src: u32, sport: u16, dst: u32, dport: u16, payload: u16) -> Self {
        PacketFacts {
            src,
            dst,
            proto: IPPROTO_UDP,
            l4_ok: true,
            l4_len: 8 + u32::from(payload),
            sport,
            dport,
            udp_len: 8 + payload,
            ..Default::default()
        }
    }

    /// An ICMP message (echo etc.).
    pub fn icmp(src: u32, dst: u32, icmp_type: u8, code: u8, id: u16) -> Self {
        PacketFacts {
            src,
            dst,
            proto: IPPROTO_ICMP,
            l4_ok: true,
            l4_len: 8,
            icmp: IcmpFacts {
                icmp_type,
                code,
                id,
                inner: None,
            },
            ..Default::default()
        }
    }

    /// An ICMP error quoting a packet whose tuple is `inner`.
    pub fn icmp_error(src: u32, dst: u32, icmp_type: u8, code: u8, inner: Option<Tuple>) -> Self {
        let mut p = Self::icmp(src, dst, icmp_type, code, 0);
        p.icmp.inner = inner;
        p
    }

    /// `nf_ct_get_tuple()`: `None` when the transport header cannot be read.
    pub fn tuple(&self) -> Option<Tuple> {
        if self.proto == IPPROTO_ICMP {
            if !self.l4_ok {
                return None;
            }
            return Some(Tuple::icmp(
                self.src,
                self.dst,
                self.icmp.id,
                self.icmp.icmp_type,
                self.icmp.code,
            ));
        }
        if proto_has_ports(self.proto) {
            if !self.l4_ok {
                return None;
            }
            return Some(Tuple::new(
                self.proto, self.src, self.sport, self.dst, self.dport,
            ));
        }
        Some(Tuple::new(self.proto, self.src, 0, self.dst, 0))
    }
}

/// A connection seen for the first time, not yet in the table (the kernel's
/// unconfirmed conntrack). Give it to [`Table::confirm`] when the packet
/// leaves (or drop it with the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConn {
    /// The prospective entry; its `timeout` is relative until confirmed.
    pub entry: Entry,
    /// The original tuple's hash, and [`Table::changes`] when tracking
    /// found no live entry with that tuple: while nothing was linked or
    /// unlinked since, insertion need not look again.
    seen: (u64, u64),
}

/// Rate-limited "table full" message: log "nf_conntrack: table full, dropping
/// packet" (and `suppressed` more drops since the previous message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFullLog {
    pub suppressed: u64,
}

impl TableFullLog {
    /// The kernel's message text.
    pub const MESSAGE: &'static str = "nf_conntrack: table full, dropping packet";
}

/// A packet of an existing connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub id: EntryId,
    pub dir: Dir,
    pub state: CtState,
    /// Events for `conntrack -E` (`Events::kind`).
    pub events: Events,
}

/// Result of [`Table::track`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    /// The packet belongs to an entry in the table.
    Tracked(Tracked),
    /// The packet belongs to this connection, which was deleted just now (a RST
    /// before any reply): NAT the packet with `entry`; a DESTROY event.
    Killed {
        entry: Entry,
        dir: Dir,
        state: CtState,
    },
    /// An ICMP error about this connection (RELATED).
    Related { id: EntryId, dir: Dir },
    /// First packet of a connection (NEW): confirm it when the packet leaves.
    New(NewConn),
    /// No connection: the packet is INVALID.
    Invalid,
    /// The table is full: drop the packet (counted in `drop`).
    Drop { log: Option<TableFullLog> },
}

/// Small deterministic PRNG (splitmix64) owned by the table.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `get_random_u16()`.
    pub(crate) fn u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }
}

/// Derived per-table settings.
#[derive(Clone, Debug)]
pub(crate) struct Cfg {
    pub tcp: TcpCfg,
    pub udp: u64,
    pub udp_stream: u64,
    pub icmp: u64,
    pub generic: u64,
    pub max_chainlen: usize,
}

impl Cfg {
    fn new(c: &TableConfig) -> Cfg {
        let t: &Timeouts = &c.timeouts;
        Cfg {
            tcp: TcpCfg::from_timeouts(
                t,
                c.tcp_loose,
                c.tcp_be_liberal,
                c.tcp_ignore_invalid_rst,
                c.tcp_max_retrans,
            ),
            udp: u64::from(t.udp) * NS,
            udp_stream: u64::from(t.udp_stream) * NS,
            icmp: u64::from(t.icmp) * NS,
            generic: u64::from(t.generic) * NS,
            max_chainlen: c.max_chainlen as usize,
        }
    }
}

/// Predicate on a source-NAT candidate's reply tuple; see [`Table::set_nat_reply_filter`].
pub type ReplyFilter = Box<dyn Fn(&Tuple) -> bool + Send>;

/// One worker's connection table.
pub struct Table {
    pub(crate) entries: Vec<Entry>,
    free_head: u32,
    /// Both tuples of every entry: link `(slot << 1) | dir`.
    pub(crate) index: Index,
    /// `nf_nat_bysource`: source-NATed entries by original source
    /// (`same_src()`), one link per source: the slot of its newest entry,
    /// whose [`Entry::next`] leads to the older ones.
    pub(crate) src_index: Index,
    /// `nf_conntrack_buckets`, the kernel's number of hash chains: the
    /// index has its own buckets, and early drop evicts from the kernel's
    /// chains (the nodes whose hash the kernel would put there).
    chains: usize,
    /// Nodes per kernel chain, kept only when a chain spans more than
    /// `CHAIN_RUN_MAX` index buckets (`buckets` far below `max`): then
    /// the buckets of a chain are too many to count its nodes from.
    chain_count: Vec<u16>,
    /// The last tuple NAT's uniqueness probe looked for, its hash, and
    /// [`Table::changes`] when the probe found no entry carrying it (the
    /// candidate chosen is the reply tuple inserted next).
    pub(crate) probed: Option<(Tuple, u64, Option<u64>)>,
    /// The last original tuple NAT's source lookup hashed, its hash, the
    /// newest entry from its source then, and [`Table::changes`] then.
    pub(crate) src_probed: Option<SrcProbe>,
    /// Buckets past its home an inserted link may go.
    max_probe: usize,
    len: u32,
    max: u32,
    pub(crate) cfg: Cfg,
    hs: ahash::RandomState,
    hs_src: ahash::RandomState,
    pub(crate) rng: Rng,
    pub(crate) stats: Stats,
    sweep: usize,
    gc_early_drop: bool,
    /// The gc worker's run in progress (a pass of the sweep), if any.
    gc_run: Option<GcRun>,
    /// When the gc worker runs next (its `queue_delayed_work`).
    gc_next_run_ns: u64,
    full_log_at: Option<u64>,
    full_suppressed: u64,
    pub(crate) reserved: Box<[u64; 1024]>,
    pub(crate) reply_filter: Option<ReplyFilter>,
    /// Bumped whenever an entry is linked into or unlinked from the hash
    /// chains: a [`Hint`] taken at another value may be stale.
    changes: u64,
}

/// What [`Table::lookup_batch`] found for one tuple, handed to
/// [`Table::track_hinted`] so that the packet's classification need not walk
/// the chain again. Only used while no entry was inserted or removed since
/// ([`Table::changes`] unchanged): otherwise the chain is walked as usual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The live entry carrying the tuple, and in which direction.
    pub found: (EntryId, Dir),
    /// [`Table::changes`] when it was found.
    pub changes: u64,
}

/// What NAT's source lookup found for an original tuple (kept for the
/// insertion that follows it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SrcProbe {
    pub(crate) tuple: Tuple,
    pub(crate) hash: u64,
    pub(crate) head: Option<u32>,
    pub(crate) changes: u64,
}

/// `same_src()`: two original tuples from the same source (protocol,
/// address, port or ICMP id): the key of the NAT source index.
#[inline]
pub(crate) fn same_src(a: &Tuple, b: &Tuple) -> bool {
    a.proto == b.proto && a.src == b.src && a.sport == b.sport
}

#[inline]
fn node(link: u32) -> (usize, Dir) {
    ((link >> 1) as usize, Dir::from_bit(link))
}

/// Tuples looked up together by [`Table::lookup_batch`] (the worker's burst).
pub const LOOKUP_BATCH: usize = 64;

/// How many new connections ahead of its turn [`Table::prefetch_new`] is
/// best called: a whole burst's at once are more misses than the core keeps
/// in flight, and the first would wait behind the last.
pub const PREFETCH_AHEAD: usize = 8;

fn splitmix(x: &mut u64) -> u64 {
    let mut r = Rng(*x);
    let v = r.next_u64();
    *x = r.0;
    v
}

impl Table {
    /// A table for `cfg.max` entries; memory for all of them is reserved now.
    pub fn new(cfg: TableConfig) -> Result<Table, ConfigError> {
        if cfg.max == 0 || cfg.max > (u32::MAX >> 1) {
            return Err(ConfigError::Max(cfg.max));
        }
        if cfg.buckets == 0 {
            return Err(ConfigError::Buckets);
        }
        let mut reserved = Box::new([0u64; 1024]);
        for &(lo, hi) in &cfg.reserved_ports {
            if lo > hi {
                return Err(ConfigError::ReservedRange(lo, hi));
            }
            for p in lo..=hi {
                reserved[usize::from(p >> 6)] |= 1u64 << (p & 63);
            }
        }
        let mut s = cfg.seed;
        let k: [u64; 8] = std::array::from_fn(|_| splitmix(&mut s));
        let rng_seed = splitmix(&mut s);
        let chains = cfg.buckets as usize;
        // Two links per entry at most half of the slots used when full, and
        // no fewer buckets than a quarter of the kernel's chains.
        let buckets = (cfg.max as usize * 2)
            .div_ceil(SLOTS / 2)
            .max(chains.div_ceil(4));
        let src_buckets = (cfg.max as usize)
            .div_ceil(SLOTS / 2)
            .max(chains.div_ceil(8));
        let max_probe = (cfg.max_chainlen as usize / SLOTS).max(1);
        let chain_count = if buckets.div_ceil(chains) > CHAIN_RUN_MAX {
            vec![0; chains]
        } else {
            Vec::new()
        };
        Ok(Table {
            entries: Vec::with_capacity(cfg.max as usize),
            free_head: NIL,
            index: Index::new(buckets),
            src_index: Index::new(src_buckets),
            chains,
            chain_count,
            probed: None,
            src_probed: None,
            max_probe,
            len: 0,
            max: cfg.max,
            cfg: Cfg::new(&cfg),
            hs: ahash::RandomState::with_seeds(k[0], k[1], k[2], k[3]),
            hs_src: ahash::RandomState::with_seeds(k[4], k[5], k[6], k[7]),
            rng: Rng(rng_seed),
            stats: Stats::default(),
            sweep: 0,
            gc_early_drop: false,
            gc_run: None,
            gc_next_run_ns: 0,
            full_log_at: None,
            full_suppressed: 0,
            reserved,
            reply_filter: None,
            changes: 0,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `nf_conntrack_max`.
    pub fn max(&self) -> usize {
        self.max as usize
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes reserved for `max` entries plus both indexes.
    pub fn reserved_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.index.bytes()
            + self.src_index.bytes()
    }

    #[inline]
    pub(crate) fn hash(&self, t: &Tuple) -> u64 {
        let (a, b) = t.words();
        let mut h = self.hs.build_hasher();
        h.write_u64(a);
        h.write_u64(b);
        h.finish()
    }

    /// `hash_by_src()`: original source address, port/id and protocol.
    #[inline]
    pub(crate) fn src_hash(&self, t: &Tuple) -> u64 {
        let mut h = self.hs_src.build_hasher();
        h.write_u64((u64::from(t.src) << 32) | (u64::from(t.sport) << 8) | u64::from(t.proto));
        h.finish()
    }

    /// Live entries carrying `t` (either direction).
    pub(crate) fn find(&self, t: &Tuple, now: u64) -> Option<(usize, Dir)> {
        self.find_h(self.hash(t), t, now)
    }

    #[inline]
    fn find_h(&self, h: u64, t: &Tuple, now: u64) -> Option<(usize, Dir)> {
        self.index
            .find(h, |l| {
                let (i, d) = node(l);
                self.entries
                    .get(i)
                    .is_some_and(|e| e.tuple[d.idx()] == *t && !e.is_expired(now))
            })
            .map(node)
    }

    /// The index nodes of tuple `t` (hash `h`): (a live match, an expired match).
    pub(crate) fn scan(
        &self,
        h: u64,
        t: &Tuple,
        now: u64,
    ) -> (Option<(usize, Dir)>, Option<usize>) {
        let mut live = None;
        let mut dead = None;
        self.index.find(h, |l| {
            let (i, d) = node(l);
            if let Some(e) = self.entries.get(i) {
                if e.tuple[d.idx()] == *t {
                    if e.is_expired(now) {
                        dead = Some(i);
                    } else if live.is_none() {
                        live = Some((i, d));
                    }
                }
            }
            false
        });
        (live, dead)
    }

    /// Remove expired entries carrying `t` (the kernel's `nf_ct_gc_expired` on lookup).
    pub(crate) fn gc_tuple(&mut self, t: &Tuple, now: u64) {
        let h = self.hash(t);
        for _ in 0..CHAIN_WALK_CAP {
            let hit = self
                .index
                .find(h, |l| {
                    let (i, d) = node(l);
                    self.entries
                        .get(i)
                        .is_some_and(|e| e.tuple[d.idx()] == *t && e.is_expired(now))
                })
                .map(node);
            match hit {
                Some((i, _)) => {
                    self.remove_idx(i);
                    self.stats.expired += 1;
                }
                None => return,
            }
        }
    }

    #[inline]
    fn id_of(&self, i: usize) -> EntryId {
        EntryId {
            idx: i as u32,
            gen: self.entries.get(i).map_or(0, |e| e.gen),
        }
    }

    /// Find the live entry carrying `t` in either direction.
    pub fn lookup(&self, t: &Tuple, now_ns: u64) -> Option<(EntryId, Dir)> {
        self.find(t, now_ns).map(|(i, d)| (self.id_of(i), d))
    }

    /// [`Table::lookup`] for a batch of tuples (`out[i]` for `tuples[i]`;
    /// `out` at least as long). In a large table every lookup is a cache
    /// miss on the bucket and one on the entry; here the buckets of up to
    /// [`LOOKUP_BATCH`] tuples are read first and then the entries their
    /// tags point to, loads that do not depend on each other, so the misses
    /// overlap (what a prefetch buys) instead of following one another.
    pub fn lookup_batch(&self, tuples: &[Tuple], now_ns: u64, out: &mut [Option<(EntryId, Dir)>]) {
        for (tc, oc) in tuples
            .chunks(LOOKUP_BATCH)
            .zip(out.chunks_mut(LOOKUP_BATCH))
        {
            // The hashes first, then the bucket prefetches in a tight loop:
            // the loads (cache misses in a large table) are not spread over
            // the hashing's instructions, so more of them are in flight.
            let mut hashes = [0u64; LOOKUP_BATCH];
            for (h, t) in hashes.iter_mut().zip(tc) {
                *h = self.hash(t);
            }
            let hashes = &hashes[..tc.len()];
            for &h in hashes {
                self.index.prefetch(h);
            }
            // Then the first entry each tag points to (the one compared).
            let mut first = [NIL; LOOKUP_BATCH];
            for (f, &h) in first.iter_mut().zip(hashes) {
                *f = self.index.find(h, |_| true).unwrap_or(NIL);
                if let Some(e) = self.entries.get((*f >> 1) as usize) {
                    crate::prefetch(e);
                }
            }
            for (((o, t), &h), &f) in oc.iter_mut().zip(tc).zip(hashes).zip(&first) {
                let (i, d) = node(f);
                let hit = self
                    .entries
                    .get(i)
                    .is_some_and(|e| e.tuple[d.idx()] == *t && !e.is_expired(now_ns));
                *o = if hit {
                    Some((i, d))
                } else if f == NIL {
                    // The probe found no tag: nothing to walk.
                    None
                } else {
                    self.find_h(h, t, now_ns)
                }
                .map(|(i, d)| (self.id_of(i), d));
            }
        }
    }

    /// Loads what a new connection of `orig` reads before it is inserted,
    /// as far as it can be guessed: the index bucket of its reply tuple as
    /// it is (the probe of a null binding, or the insertion without NAT),
    /// and with `snat` (the address source NAT gave the last new
    /// connection) the bucket of the reply with the source rewritten to it,
    /// the port kept (the uniqueness probe and the insertion), and the NAT
    /// source bucket. After the burst's [`Table::lookup_batch`] (which
    /// loads the original tuple's bucket), the cache misses of a burst of
    /// new connections overlap. A wrong guess costs a prefetch.
    #[inline]
    pub fn prefetch_new(&self, orig: &Tuple, snat: Option<u32>) {
        let Some(reply) = orig.invert() else {
            return;
        };
        self.index.prefetch(self.hash(&reply));
        if let Some(a) = snat {
            self.src_index.prefetch(self.src_hash(orig));
            let mut t = *orig;
            t.src = a;
            if let Some(reply) = t.invert() {
                self.index.prefetch(self.hash(&reply));
            }
        }
    }

    /// The table's large arrays as (address, bytes) of their allocations:
    /// the entries (allocated for `max` at start, never moved), the index
    /// and the NAT source index. For the caller to ask the system
    /// for huge pages there (`fastables_xdp::advise_huge_pages`): a table
    /// of a million entries is 128 MiB, and its random accesses otherwise
    /// miss the TLB as well as the caches.
    pub fn regions(&self) -> [(usize, usize); 3] {
        fn of<T>(v: &[T], cap: usize) -> (usize, usize) {
            (v.as_ptr() as usize, cap * std::mem::size_of::<T>())
        }
        [
            of(&self.entries, self.entries.capacity()),
            self.index.region(),
            self.src_index.region(),
        ]
    }

    /// Starts loading the second cache line of entry `id` (its protocol
    /// state, which tracking reads and writes), so that the cache misses of
    /// a batch's entries overlap: [`Table::lookup_batch`] loads the first.
    #[inline]
    pub fn warm(&self, id: EntryId) {
        if let Some(e) = self.entries.get(id.idx as usize) {
            crate::prefetch(&e.proto);
        }
    }

    /// A counter of the insertions into and removals from the table (it
    /// wraps): while it stays the same, a lookup gives the same answer.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The live entry of `h` when it still is what a walk of the chain of
    /// `t` would find first at `now`: nothing was linked or unlinked since
    /// the hint was taken, and the entry still carries `t` and is live.
    #[inline]
    fn hinted(&self, h: Hint, t: &Tuple, now: u64) -> Option<(usize, Dir)> {
        if h.changes != self.changes {
            return None;
        }
        let (id, d) = h.found;
        let e = self.entries.get(id.idx as usize)?;
        (e.gen == id.gen
            && e.status & status::CONFIRMED != 0
            && e.tuple[d.idx()] == *t
            && !e.is_expired(now))
        .then_some((id.idx as usize, d))
    }

    /// The entry behind `id`, if it still exists.
    pub fn entry(&self, id: EntryId) -> Option<&Entry> {
        self.entries
            .get(id.idx as usize)
            .filter(|e| e.gen == id.gen && e.status & status::CONFIRMED != 0)
    }

    /// Mutable access to mark, status and timeout. Do not change `tuple`: the
    /// index would no longer find the entry (remove and insert instead).
    pub fn entry_mut(&mut self, id: EntryId) -> Option<&mut Entry> {
        self.entries
            .get_mut(id.idx as usize)
            .filter(|e| e.gen == id.gen && e.status & status::CONFIRMED != 0)
    }

    /// Set the connection mark (CONNMARK); returns the MARK event when it changed.
    pub fn set_mark(&mut self, id: EntryId, mark: u32) -> Events {
        match self.entry_mut(id) {
            Some(e) if e.mark != mark => {
                e.mark = mark;
                Events(Events::MARK)
            }
            _ => Events::default(),
        }
    }

    /// All entries, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (EntryId, &Entry)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.status & status::CONFIRMED != 0)
            .map(|(i, e)| {
                (
                    EntryId {
                        idx: i as u32,
                        gen: e.gen,
                    },
                    e,
                )
            })
    }

    fn unlink_node(&mut self, i: usize, d: Dir) {
        let Some(e) = self.entries.get(i) else { return };
        let h = self.hash(&e.tuple[d.idx()]);
        if self.index.remove(h, ((i as u32) << 1) | d as u32) {
            self.count_chain(h, false);
        }
    }

    /// The newest entry from the source of original tuple `t` (hash `h`).
    pub(crate) fn src_head(&self, h: u64, t: &Tuple) -> Option<u32> {
        self.src_index.find(h, |l| {
            self.entries
                .get(l as usize)
                .is_some_and(|e| same_src(&e.tuple[0], t))
        })
    }

    /// Take entry `i` out of its source's list (and the newest one's place
    /// in the NAT source index to the next older).
    fn unlink_src(&mut self, i: usize) {
        let Some(e) = self.entries.get(i) else { return };
        let (prev, next) = (e.src_prev, e.next);
        if prev != NIL {
            if let Some(p) = self.entries.get_mut(prev as usize) {
                p.next = next;
            }
        } else {
            let h = self.src_hash(&e.tuple[0]);
            if next != NIL {
                self.src_index.replace(h, i as u32, next);
            } else {
                self.src_index.remove(h, i as u32);
            }
        }
        if next != NIL {
            if let Some(n) = self.entries.get_mut(next as usize) {
                n.src_prev = prev;
            }
        }
    }

    /// Unlink and free slot `i`, returning the entry as it was (DYING set).
    pub(crate) fn remove_idx(&mut self, i: usize) -> Entry {
        self.changes = self.changes.wrapping_add(1);
        self.unlink_node(i, Dir::Original);
        self.unlink_node(i, Dir::Reply);
        if self
            .entries
            .get(i)
            .is_some_and(|e| e.status & status::SRC_NAT_DONE != 0)
        {
            self.unlink_src(i);
        }
        let free_head = self.free_head;
        let Some(e) = self.entries.get_mut(i) else {
            return Entry::EMPTY;
        };
        let mut old = *e;
        old.status |= status::DYING;
        e.status = 0;
        e.gen = e.gen.wrapping_add(1);
        e.next = free_head;
        e.src_prev = NIL;
        self.free_head = i as u32;
        self.len -= 1;
        old
    }

    /// Remove an entry (`conntrack -D`); returns it for the DESTROY event.
    pub fn remove(&mut self, id: EntryId) -> Option<Entry> {
        self.entry(id)?;
        Some(self.remove_idx(id.idx as usize))
    }

    /// Remove every entry (`conntrack -F`). Returns how many were removed.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        let ids: Vec<usize> = self.iter().map(|(id, _)| id.idx as usize).collect();
        for i in ids {
            self.remove_idx(i);
        }
        n
    }

    /// The kernel's hash chain of hash `h`: `reciprocal_scale(hash,
    /// nf_conntrack_buckets)`.
    #[inline]
    fn kernel_chain(&self, h: u64) -> usize {
        (((h >> 32) * self.chains as u64) >> 32) as usize
    }

    /// The index buckets that hold the nodes of the kernel's chain `c`:
    /// the nodes of one chain have neighbouring hashes, so their home
    /// buckets are a run (first, and how many after it), and the buckets
    /// their overflow reached follow it. A chain is a bucket or two unless
    /// `buckets` is set far below `max`; then early drop looks at the
    /// first 64 buckets of the run only.
    fn chain_run(&self, c: usize) -> (usize, usize) {
        let n = self.chains as u64;
        let c = c as u64;
        // The 32-bit hash values x with c = (x * n) >> 32.
        let lo = (c << 32).div_ceil(n);
        let hi = ((c + 1) << 32)
            .div_ceil(n)
            .saturating_sub(1)
            .min(u64::from(u32::MAX));
        let first = self.index.home(lo << 32);
        let last = self.index.home(hi << 32);
        (first, (last - first).min(64))
    }

    /// Calls `f` with each node of the kernel's chain `c` (slot, direction)
    /// until it returns false.
    fn chain_nodes(&self, c: usize, mut f: impl FnMut(usize, Dir, &Entry) -> bool) {
        let (first, span) = self.chain_run(c);
        for d in 0..=span + self.max_probe {
            if d > span && self.index.overflow_at(first, d - 1) == 0 {
                return;
            }
            for l in self.index.links_at(first, d) {
                let (i, dir) = node(l);
                let Some(e) = self.entries.get(i) else {
                    continue;
                };
                if self.kernel_chain(self.hash(&e.tuple[dir.idx()])) == c && !f(i, dir, e) {
                    return;
                }
            }
        }
    }

    /// A node of hash `h` was linked (`add`) or unlinked: the count of its
    /// kernel chain, when kept.
    #[inline]
    fn count_chain(&mut self, h: u64, add: bool) {
        if self.chain_count.is_empty() {
            return;
        }
        let c = self.kernel_chain(h);
        if let Some(n) = self.chain_count.get_mut(c) {
            *n = if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            };
        }
    }

    /// Whether the kernel's chain of hash `h` holds more than
    /// `max_chainlen` nodes, when chains are counted (`buckets` far below
    /// `max`). Otherwise a chain is a bucket or two of the index, far
    /// shorter than `max_chainlen`, and what stands for it is the index's
    /// own bound: an insert that finds no free slot within `max_probe`
    /// buckets (`max_chainlen` links) of its home fails as too long.
    #[inline]
    fn chain_too_long_at(&self, h: u64) -> bool {
        !self.chain_count.is_empty()
            && self
                .chain_count
                .get(self.kernel_chain(h))
                .is_some_and(|&n| usize::from(n) > self.cfg.max_chainlen)
    }

    /// `early_drop_list()` of the kernel's chain `c`: evict every
    /// non-assured entry with a tuple in that chain (expired ones are
    /// collected without counting). Returns the drops.
    fn early_drop_list(&mut self, c: usize, now: u64) -> u64 {
        let mut victims = [0u32; 64];
        let mut k = 0;
        self.chain_nodes(c, |i, _, e| {
            let gone = e.is_expired(now) || e.status & (status::ASSURED | status::DYING) == 0;
            if gone && !victims[..k].contains(&(i as u32)) {
                let Some(v) = victims.get_mut(k) else {
                    return false;
                };
                *v = i as u32;
                k += 1;
            }
            true
        });
        let mut drops = 0;
        for &v in &victims[..k] {
            let i = v as usize;
            let expired = self.entries.get(i).is_some_and(|e| e.is_expired(now));
            self.remove_idx(i);
            if expired {
                self.stats.expired += 1;
            } else {
                drops += 1;
            }
        }
        drops
    }

    /// `early_drop()`: scan `NF_CT_EVICTION_RANGE` kernel chains from the
    /// new tuple's.
    fn early_drop(&mut self, h: u64, now: u64) -> bool {
        let mut c = self.kernel_chain(h);
        for i in 0..EVICTION_RANGE {
            if i > 0 {
                c = (c + 1) % self.chains;
            }
            let drops = self.early_drop_list(c, now);
            if drops > 0 {
                self.stats.early_drop += drops;
                return true;
            }
        }
        false
    }

    fn full_log(&mut self, now: u64) -> Option<TableFullLog> {
        match self.full_log_at {
            Some(t) if now < t.saturating_add(NS) => {
                self.full_suppressed += 1;
                None
            }
            _ => {
                let suppressed = self.full_suppressed;
                self.full_suppressed = 0;
                self.full_log_at = Some(now);
                Some(TableFullLog { suppressed })
            }
        }
    }

    /// `__nf_conntrack_alloc()`'s limit: make room for one more entry near `h`.
    fn make_room(&mut self, h: u64, now: u64) -> Result<(), Option<TableFullLog>> {
        if self.len < self.max {
            return Ok(());
        }
        if self.early_drop(h, now) {
            return Ok(());
        }
        self.gc_early_drop = true;
        self.stats.drop += 1;
        Err(self.full_log(now))
    }

    fn alloc_slot(&mut self) -> usize {
        if self.free_head != NIL {
            let i = self.free_head as usize;
            self.free_head = self.entries.get(i).map_or(NIL, |e| e.next);
            i
        } else {
            self.entries.push(Entry::EMPTY);
            self.entries.len() - 1
        }
    }

    /// A clash on insert that cannot be resolved: `nf_ct_resolve_clash()`
    /// drops the packet, counting both `drop` and `insert_failed`.
    fn clash(&mut self, d: Dir) -> InsertError {
        self.stats.drop += 1;
        self.stats.insert_failed += 1;
        InsertError::Clash(d)
    }

    /// `__nf_conntrack_confirm()`: capacity, clash and chain checks, then link.
    /// `e.timeout` is relative and becomes absolute here.
    /// `seen`: [`NewConn::seen`], when the entry comes from tracking.
    pub(crate) fn insert_entry(
        &mut self,
        e: Entry,
        now: u64,
        seen: Option<(u64, u64)>,
    ) -> Result<EntryId, InsertError> {
        let (h0, fresh) = match seen {
            Some((h, changes)) => (h, changes == self.changes),
            None => (self.hash(&e.tuple[0]), false),
        };
        self.make_room(h0, now)
            .map_err(|log| InsertError::TableFull { log })?;
        let (h1, fresh1) = match self.probed {
            Some((t, h, clean)) if t == e.tuple[1] => (h, clean == Some(self.changes)),
            _ => (self.hash(&e.tuple[1]), false),
        };
        let (live0, dead0) = if fresh {
            (None, None)
        } else {
            self.scan(h0, &e.tuple[0], now)
        };
        // NAT's probe found no entry with the reply tuple, and nothing was
        // linked or unlinked since.
        let (live1, dead1) = if fresh1 {
            (None, None)
        } else {
            self.scan(h1, &e.tuple[1], now)
        };
        if dead0.is_some() || dead1.is_some() {
            self.gc_tuple(&e.tuple[0], now);
            self.gc_tuple(&e.tuple[1], now);
        }
        if live0.is_some() {
            return Err(self.clash(Dir::Original));
        }
        if live1.is_some() {
            return Err(self.clash(Dir::Reply));
        }
        if self.chain_too_long_at(h0) || self.chain_too_long_at(h1) {
            return Err(self.chain_too_long());
        }
        let i = self.alloc_slot();
        let link0 = (i as u32) << 1;
        let link1 = link0 | 1;
        if self.index.insert(h0, link0, self.max_probe).is_none() {
            self.free_slot(i);
            return Err(self.chain_too_long());
        }
        if self.index.insert(h1, link1, self.max_probe).is_none() {
            self.index.remove(h0, link0);
            self.free_slot(i);
            return Err(self.chain_too_long());
        }
        self.count_chain(h0, true);
        self.count_chain(h1, true);
        let next = if e.status & status::SRC_NAT_DONE != 0 {
            self.link_src(i as u32, &e.tuple[0])
        } else {
            NIL
        };
        self.changes = self.changes.wrapping_add(1);
        let Some(slot) = self.entries.get_mut(i) else {
            return Err(InsertError::ChainTooLong);
        };
        let gen = slot.gen;
        *slot = e;
        slot.gen = gen;
        slot.next = next;
        slot.src_prev = NIL;
        // Timeout is relative to confirmation time.
        slot.timeout = slot.timeout.saturating_add(now);
        slot.status |= status::CONFIRMED;
        self.len += 1;
        self.stats.insert += 1;
        Ok(EntryId { idx: i as u32, gen })
    }

    /// Link entry `i` (original tuple `orig`) as the newest from its source
    /// (`hlist_add_head_rcu()` on the bysource chain): in the NAT source
    /// index, in the place of the one before it if any. Returns that one
    /// (the entry's [`Entry::next`]), or `NIL`.
    #[inline(always)]
    fn link_src(&mut self, i: u32, orig: &Tuple) -> u32 {
        // NAT's source lookup for this connection, if it made one.
        let (hash, head) = match &self.src_probed {
            Some(p) if same_src(&p.tuple, orig) && p.changes == self.changes => (p.hash, p.head),
            Some(p) if same_src(&p.tuple, orig) => (p.hash, self.src_head(p.hash, orig)),
            _ => {
                let hash = self.src_hash(orig);
                (hash, self.src_head(hash, orig))
            }
        };
        if let Some(hd) = head {
            if self.src_index.replace(hash, hd, i) {
                if let Some(old) = self.entries.get_mut(hd as usize) {
                    old.src_prev = i;
                }
                return hd;
            }
        }
        // Not found by find_appropriate_src() if the index has no room near
        // its home: a later connection from the same source then picks its
        // mapping afresh, as after the entry's removal.
        let _ = self.src_index.insert(hash, i, self.max_probe);
        NIL
    }

    fn chain_too_long(&mut self) -> InsertError {
        self.stats.chaintoolong += 1;
        self.stats.insert_failed += 1;
        InsertError::ChainTooLong
    }

    /// Give back a slot `alloc_slot` handed out and nothing used.
    fn free_slot(&mut self, i: usize) {
        let free_head = self.free_head;
        if let Some(e) = self.entries.get_mut(i) {
            e.next = free_head;
            self.free_head = i as u32;
        }
    }

    /// Insert a connection with the given tuples and an empty tracker state
    /// (TCP state NONE), timing out after the protocol's "new" timeout.
    pub fn insert(
        &mut self,
        orig: Tuple,
        reply: Tuple,
        now_ns: u64,
    ) -> Result<EntryId, InsertError> {
        let mut e = Entry::new(orig, reply);
        e.timeout = match orig.proto {
            IPPROTO_TCP => self.cfg.tcp.timeouts[0],
            IPPROTO_UDP => self.cfg.udp,
            IPPROTO_ICMP => self.cfg.icmp,
            _ => self.cfg.generic,
        };
        if let ProtoInfo::Udp { stream_ts } = &mut e.proto {
            *stream_ts = now_ns + 2 * NS;
        }
        self.insert_entry(e, now_ns, None)
    }

    /// Incremental expiry: examine at most `budget` slots from where the last
    /// call stopped, removing expired entries. Returns the number removed.
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        self.expire_with(now_ns, budget, |_, _| {})
    }

    /// `expire`, calling `on_destroy` with each removed entry (DESTROY events).
    /// After a failed early drop, the next run of the gc worker (see below)
    /// also evicts non-assured and closing TCP entries while the table is at
    /// least 95% full (`gc_worker`).
    pub fn expire_with(
        &mut self,
        now_ns: u64,
        budget: usize,
        mut on_destroy: impl FnMut(EntryId, &Entry),
    ) -> usize {
        let n = self.entries.len();
        if n == 0 {
            return 0;
        }
        let max95 = u64::from(self.max) / 100 * 95;
        let mut removed = 0;
        let mut left = budget.min(n);
        // Slot by slot as the kernel's gc worker, but the slots up to the next
        // one to remove are tested in one tight pass over the slice. Expired
        // entries go whenever the sweep passes them (the kernel also reaps
        // them on lookup); the eviction of unassured entries after a failed
        // early_drop happens only in a gc worker run: a pass that starts at
        // the worker's next run time, which the pass before derived from the
        // entries' timeouts (`gc_worker`'s `next_run`, 1 to 60 s).
        while left > 0 {
            if self.sweep >= n {
                self.sweep = 0;
                if let Some(run) = self.gc_run.take() {
                    let next = run.avg.clamp(GC_INTERVAL_MIN_NS, GC_INTERVAL_MAX_NS);
                    let took = now_ns.saturating_sub(run.start).max(1);
                    let next = if next > took {
                        next - took
                    } else {
                        GC_JIFFY_NS
                    };
                    self.gc_next_run_ns = now_ns.saturating_add(next);
                    if run.early {
                        self.gc_early_drop = false;
                    }
                }
            }
            if self.sweep == 0 && self.gc_run.is_none() && now_ns >= self.gc_next_run_ns {
                self.gc_run = Some(GcRun {
                    start: now_ns,
                    avg: GC_INTERVAL_MAX_NS,
                    count: GC_INITIAL_COUNT,
                    early: self.gc_early_drop,
                });
            }
            // The worker reads the flag at each of its invocations (a run
            // is cut into slices of at most 10 ms): a table that fills
            // during a run is seen by it.
            if let Some(run) = self.gc_run.as_mut() {
                run.early |= self.gc_early_drop;
            }
            let start = self.sweep;
            let end = n.min(start + left);
            // Holds until an entry is removed (`len` changes).
            let early =
                self.gc_run.as_ref().is_some_and(|r| r.early) && u64::from(self.len) >= max95;
            let slice = self.entries.get(start..end).unwrap_or(&[]);
            let hit = match self.gc_run.as_mut() {
                // A run also averages the entries' timeouts for the next.
                Some(run) => slice.iter().position(|e| {
                    let gone = e.status & status::CONFIRMED != 0
                        && (e.is_expired(now_ns)
                            || (early
                                && (e.status & status::ASSURED == 0
                                    || e.tcp_state().is_some_and(tcp::tcp_can_early_drop))));
                    if !gone && e.status & status::CONFIRMED != 0 {
                        run.add(e.expires_in(now_ns));
                    }
                    gone
                }),
                None => slice
                    .iter()
                    .position(|e| e.status & status::CONFIRMED != 0 && e.is_expired(now_ns)),
            };
            let Some(k) = hit else {
                left -= end - start;
                self.sweep = end;
                continue;
            };
            let i = start + k;
            left -= k + 1;
            self.sweep = i + 1;
            let Some(e) = self.entries.get(i) else {
                continue;
            };
            let id = EntryId {
                idx: i as u32,
                gen: e.gen,
            };
            if e.is_expired(now_ns) {
                self.stats.expired += 1;
            }
            let old = self.remove_idx(i);
            on_destroy(id, &old);
            removed += 1;
        }
        removed
    }

    /// Classify one packet and update its connection (`nf_conntrack_in`).
    pub fn track(&mut self, p: &PacketFacts, now_ns: u64) -> Track {
        self.track_hinted(p, now_ns, None)
    }

    /// [`Table::track`] with what a [`Table::lookup_batch`] of the packet's
    /// tuple found: when the hint still holds ([`Hint`]) the chain is not
    /// walked again; the result is the same either way.
    pub fn track_hinted(&mut self, p: &PacketFacts, now_ns: u64, hint: Option<Hint>) -> Track {
        if p.fragment {
            // get_l4proto() fails for non-first fragments
            self.stats.invalid += 1;
            return Track::Invalid;
        }
        if p.proto == IPPROTO_ICMP {
            // nf_conntrack_handle_icmp() -> nf_conntrack_icmpv4_error()
            if !p.l4_ok || p.csum_bad || p.icmp.icmp_type > NR_ICMP_TYPES {
                self.stats.error += 1;
                return Track::Invalid;
            }
            if fastables_packet::icmp::is_error(p.icmp.icmp_type) {
                return self.icmp_error(p, now_ns);
            }
        }
        let Some(tuple) = p.tuple() else {
            self.stats.invalid += 1;
            return Track::Invalid;
        };
        let mut hint = hint;
        let mut hashed = None;
        // At most one repeat (TCP reopen of a closed connection).
        for _ in 0..2 {
            let (live, dead) = match hint.take().and_then(|h| self.hinted(h, &tuple, now_ns)) {
                // A live match: the walk would not look at expired ones.
                Some(l) => (Some(l), None),
                None => {
                    let h = self.hash(&tuple);
                    hashed = Some(h);
                    self.scan(h, &tuple, now_ns)
                }
            };
            match live {
                Some((i, dir)) => {
                    let cfg = &self.cfg;
                    let Some(e) = self.entries.get_mut(i) else {
                        break;
                    };
                    let state = e.state_in(dir);
                    let mut ev = Events::default();
                    match l4_packet(cfg, e, dir, p, now_ns, &mut ev) {
                        TcpVerdict::Accept => {
                            if dir == Dir::Reply && e.status & status::SEEN_REPLY == 0 {
                                e.status |= status::SEEN_REPLY;
                                ev.0 |= Events::REPLY;
                            }
                            return Track::Tracked(Tracked {
                                id: EntryId {
                                    idx: i as u32,
                                    gen: e.gen,
                                },
                                dir,
                                state,
                                events: ev,
                            });
                        }
                        TcpVerdict::Invalid => {
                            self.stats.invalid += 1;
                            return Track::Invalid;
                        }
                        TcpVerdict::Kill => {
                            let entry = self.remove_idx(i);
                            return Track::Killed { entry, dir, state };
                        }
                        TcpVerdict::Repeat => {
                            self.remove_idx(i);
                            continue;
                        }
                    }
                }
                None => {
                    if dead.is_some() {
                        self.gc_tuple(&tuple, now_ns);
                    }
                    let h = hashed.unwrap_or_else(|| self.hash(&tuple));
                    return self.track_new(p, tuple, h, now_ns);
                }
            }
        }
        self.stats.invalid += 1;
        Track::Invalid
    }

    /// `init_conntrack()` + the protocol's first-packet handling.
    /// `h`: the hash of `tuple`.
    fn track_new(&mut self, p: &PacketFacts, tuple: Tuple, h: u64, now: u64) -> Track {
        let Some(reply) = tuple.invert() else {
            self.stats.invalid += 1;
            return Track::Invalid;
        };
        if let Err(log) = self.make_room(h, now) {
            return Track::Drop { log };
        }
        let mut e = Entry::new(tuple, reply);
        let mut ev = Events::default();
        match l4_packet(&self.cfg, &mut e, Dir::Original, p, now, &mut ev) {
            TcpVerdict::Accept => Track::New(NewConn {
                entry: e,
                seen: (h, self.changes),
            }),
            _ => {
                self.stats.invalid += 1;
                Track::Invalid
            }
        }
    }

    /// `nf_conntrack_inet_error()`: find the connection an ICMP error is about.
    fn icmp_error(&mut self, p: &PacketFacts, now: u64) -> Track {
        let found = p
            .icmp
            .inner
            .and_then(|inner| inner.invert())
            .and_then(|inv| self.find(&inv, now));
        let Some((i, dir)) = found else {
            self.stats.error += 1;
            return Track::Invalid;
        };
        let Some(e) = self.entries.get(i) else {
            self.stats.error += 1;
            return Track::Invalid;
        };
        // The outer destination must be the connection's destination in that direction.
        if e.tuple[dir.idx()].dst != p.dst {
            self.stats.error += 1;
            return Track::Invalid;
        }
        Track::Related {
            id: EntryId {
                idx: i as u32,
                gen: e.gen,
            },
            dir,
        }
    }

    /// Confirm a new connection when its first packet leaves: apply the
    /// destination manip (`dnat`, PREROUTING/OUTPUT) then the source manip
    /// (`snat`, POSTROUTING/INPUT) as `nf_nat_setup_info` does, then insert.
    /// `None` means the nat table was not consulted for that manip; pass
    /// [`NatRange::null_binding`] when it was and no rule matched.
    pub fn confirm(
        &mut self,
        new: NewConn,
        dnat: Option<&crate::NatRange>,
        snat: Option<&crate::NatRange>,
        now_ns: u64,
    ) -> Result<EntryId, InsertError> {
        let NewConn { entry: mut e, seen } = new;
        if let Some(r) = dnat {
            self.nat_setup_info(&mut e, r, crate::Manip::Dst, now_ns);
        }
        if let Some(r) = snat {
            self.nat_setup_info(&mut e, r, crate::Manip::Src, now_ns);
            // The port search gave up on a reserved port: nothing clashes in
            // the table, but the port may not be used.
            if let Some(t) = e.tuple[1].invert() {
                if self.reserved_hit(&t, &e, crate::Manip::Src) {
                    return Err(self.clash(Dir::Reply));
                }
            }
        }
        self.insert_entry(e, now_ns, Some(seen))
    }

    /// Apply one manip to a new connection now (`nf_nat_setup_info`): the
    /// destination manip in PREROUTING/OUTPUT, so that routing sees the new
    /// destination before the source manip is chosen in POSTROUTING.
    /// [`Table::confirm`] skips a manip that is already done.
    pub fn nat_setup(
        &mut self,
        new: &mut NewConn,
        range: &crate::NatRange,
        manip: crate::Manip,
        now_ns: u64,
    ) {
        self.nat_setup_info(&mut new.entry, range, manip, now_ns);
    }

    /// Restrict source-NAT choices to candidates whose reply tuple passes `f`
    /// (for RSS: replies must hash to this worker's queue). Rejected candidates
    /// count as taken in the kernel's port search; `None` removes the filter.
    pub fn set_nat_reply_filter(&mut self, f: Option<ReplyFilter>) {
        self.reply_filter = f;
    }

    /// Whether NAT may hand out `port` (not in the reserved list).
    pub(crate) fn port_reserved(&self, port: u16) -> bool {
        self.reserved[usize::from(port >> 6)] & (1u64 << (port & 63)) != 0
    }
}

/// Dispatch to the protocol tracker (`nf_conntrack_handle_packet`).
fn l4_packet(
    cfg: &Cfg,
    e: &mut Entry,
    dir: Dir,
    p: &PacketFacts,
    now: u64,
    ev: &mut Events,
) -> TcpVerdict {
    let Entry {
        status: st,
        timeout,
        proto,
        tuple,
        ..
    } = e;
    match tuple[0].proto {
        IPPROTO_TCP => {
            if p.csum_bad {
                return TcpVerdict::Invalid;
            }
            tcp::tcp_packet(st, timeout, proto, dir, &p.tcp, &cfg.tcp, now, ev)
        }
        IPPROTO_UDP => {
            // udp_error()
            if !p.l4_ok || u32::from(p.udp_len) > p.l4_len || p.udp_len < 8 || p.csum_bad {
                return TcpVerdict::Invalid;
            }
            // nf_conntrack_udp_packet()
            let ProtoInfo::Udp { stream_ts } = proto else {
                return TcpVerdict::Invalid;
            };
            if *st & status::CONFIRMED == 0 {
                *stream_ts = now + 2 * NS;
            }
            if *st & status::SEEN_REPLY != 0 {
                let mut extra = cfg.udp;
                let mut stream = false;
                // Still active after two seconds? Extend timeout.
                if now > *stream_ts {
                    extra = cfg.udp_stream;
                    stream = *st & status::ASSURED == 0;
                }
                tcp::refresh(*st, timeout, extra, now);
                if *st & status::NAT_CLASH != 0 {
                    return TcpVerdict::Accept;
                }
                if stream {
                    *st |= status::ASSURED;
                    ev.0 |= Events::ASSURED;
                }
            } else {
                tcp::refresh(*st, timeout, cfg.udp, now);
            }
            TcpVerdict::Accept
        }
        IPPROTO_ICMP => {
            // nf_conntrack_icmp_packet(): only request types create connections.
            if !matches!(tuple[0].icmp_type(), 8 | 13 | 15 | 17) {
                return TcpVerdict::Invalid;
            }
            tcp::refresh(*st, timeout, cfg.icmp, now);
            TcpVerdict::Accept
        }
        _ => {
            // generic_packet()
            tcp::refresh(*st, timeout, cfg.generic, now);
            TcpVerdict::Accept
        }
    }
}
