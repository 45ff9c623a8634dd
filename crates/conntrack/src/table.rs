//! The connection table of one worker (nf_conntrack_core.c): a preallocated
//! slab of entries, a hash index of both directions (cache-line buckets of
//! tagged links, `index.rs`), kernel early drop, incremental expiry, and the
//! per-packet classification (`nf_conntrack_in`).
//!
//! This file holds the table itself: its state, construction, entry access
//! and removal. The rest, by subject:
//! - `facts.rs`: what a packet tells the table ([`PacketFacts`]) and what it
//!   answers ([`Track`]);
//! - `lookup.rs`: finding a tuple, one or a burst at a time, and prefetching;
//! - `track.rs`: classifying a packet and running its protocol tracker;
//! - `insert.rs`: confirming a new connection (capacity, clash and chain
//!   checks, linking, the NAT source index);
//! - `early_drop.rs`: the kernel's hash chains, early drop and "table full";
//! - `expire.rs`: the incremental sweep and the gc worker's runs.
//!
//! NAT's port search is in `crate::nat`.

use std::hash::{BuildHasher, Hasher};

use crate::entry::{status, Entry, NIL};
use crate::index::{Index, SLOTS};
use crate::tcp::TcpCfg;
use crate::tuple::{Dir, Tuple};
use crate::{ConfigError, Events, Stats, TableConfig, Timeouts};

mod early_drop;
mod expire;
mod facts;
mod insert;
mod lookup;
mod track;

use early_drop::CHAIN_RUN_MAX;
use expire::GcRun;
pub use facts::{CtState, IcmpFacts, NewConn, PacketFacts, TableFullLog, Track, Tracked};

const NS: u64 = 1_000_000_000;

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

    #[inline]
    fn id_of(&self, i: usize) -> EntryId {
        EntryId {
            idx: i as u32,
            gen: self.entries.get(i).map_or(0, |e| e.gen),
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
