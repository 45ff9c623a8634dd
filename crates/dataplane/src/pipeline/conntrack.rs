//! Conntrack in the pipeline: the packet's connection ([`Ct`], the kernel's
//! `skb->_nfct`), `nf_conntrack_in` (what the `fastables-conntrack` table
//! makes of the packet, then applied to it), confirmation when the packet
//! leaves, the facts the table is given and the context the rules get,
//! events for `conntrack -E`, the expiry sweep, the lookups ahead of a
//! batch, and the hand-offs between workers under RSS.
//!
//! The table is loaded when a ruleset first needs conntrack (a state
//! match, a NAT target, ...) and stays loaded, as the kernel module does.

use std::sync::Arc;

use fastables_conntrack::{
    status, CtState, Dir, Entry, EntryId, EventKind, Hint, IcmpFacts, InsertError, NatRange,
    NewConn, PacketFacts, Table as CtTable, TableConfig, TableFullLog, TcpSeg, Track, Tuple,
    LOOKUP_BATCH, PREFETCH_AHEAD,
};
use fastables_packet::icmp as picmp;
use fastables_packet::ipv4::{
    self, Ipv4Packet, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PROTO_UDPLITE,
};
use fastables_packet::parse::{ipv4_l4_checksum_ok, Ipv4Info, L4};
use fastables_packet::{ethernet, read_be16, read_be32};
use fastables_rules::ctx::CtCtx;
use fastables_rules::model::CtStateSet;

use super::flow::FlowCache;
use super::pkt::{CtSeen, Pkt, ETH_LEN};
use super::Pipeline;
use crate::drop::DropReason;
use fastables_port::rss::Rss;
use fastables_port::{Frame, FRAME_SIZE};

/// The connection of the packet being processed (the kernel's `skb->_nfct`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Ct {
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

/// The expiry sweep visits every connection once in this time.
pub const SWEEP_PERIOD_NS: u64 = 1_000_000_000;

/// The least the sweep examines per batch (a table this small: all of it),
/// so that it moves on when batches come faster than the clock's steps.
/// Small: at a high packet rate a larger floor, not the time share, sets
/// the pace.
pub const SWEEP_MIN: usize = 16;

/// Default [`PipelineOptions::conntrack_lookup_ahead`](super::PipelineOptions::conntrack_lookup_ahead):
/// about where the table (some 200 bytes per entry) outgrows a core's share
/// of the cache.
pub const LOOKUP_AHEAD_MIN: usize = 16 * 1024;

/// Hand-off requests kept between two drains ([`Pipeline::take_handoffs`]).
pub const HANDOFF_QUEUE: usize = 1024;

/// Conntrack events kept between two drains (`conntrack -E`).
pub const CT_EVENT_QUEUE: usize = 4096;

/// The connection table and what the pipeline keeps beside it.
pub(super) struct Conntrack {
    /// The table, present once a ruleset needed conntrack.
    pub table: Option<CtTable>,
    /// Its settings, for loading it later.
    cfg: TableConfig,
    /// `[conntrack] checksum` (`nf_conntrack_checksum`): PREROUTING
    /// verifies the transport checksum.
    pub checksum: bool,
    /// Events for `conntrack -E`, collected only while someone listens;
    /// bounded, the excess counted.
    events: Vec<(EventKind, Entry, u64)>,
    pub events_on: bool,
    events_lost: u64,
    /// With several workers: the NIC's RSS and this worker's queue.
    rss: Option<(Arc<Rss>, u16)>,
    /// Reply tuples of connections confirmed here whose replies land on
    /// another queue (DNAT): the owner's hand-off requests.
    handoffs: Vec<Tuple>,
    /// What one `lookup_batch` found for each frame of the current run of
    /// [`LOOKUP_BATCH`] frames (index: position in the run).
    ahead: [Ahead; LOOKUP_BATCH],
    /// The address source NAT gave the last new connection (not a null
    /// binding): the guess of [`CtTable::prefetch_new`].
    pub last_snat: Option<u32>,
    /// When the expiry sweep ran last.
    last_sweep_ns: u64,
}

/// What the lookups ahead found for a frame.
#[derive(Clone, Copy, Debug)]
enum Ahead {
    /// Not looked up (not TCP/UDP, a fragment).
    None,
    /// The entry, for conntrack's lookup to start from.
    Found(Hint),
    /// No entry: a new connection, most likely, whose buckets are
    /// prefetched [`PREFETCH_AHEAD`] frames before its turn.
    New(Tuple),
}

impl Conntrack {
    /// The conntrack of a pipeline with `cfg`, its table loaded when `load`.
    pub(super) fn new(
        cfg: TableConfig,
        checksum: bool,
        load: bool,
    ) -> Result<Conntrack, fastables_conntrack::ConfigError> {
        // `[conntrack]` is validated even when the ruleset does not need
        // conntrack yet.
        if cfg.max == 0 || cfg.max > 0x7fff_ffff {
            return Err(fastables_conntrack::ConfigError::Max(cfg.max));
        }
        if cfg.buckets == 0 {
            return Err(fastables_conntrack::ConfigError::Buckets);
        }
        let table = if load {
            Some(CtTable::new(cfg.clone())?)
        } else {
            None
        };
        Ok(Conntrack {
            table,
            cfg,
            checksum,
            events: Vec::new(),
            events_on: false,
            events_lost: 0,
            rss: None,
            handoffs: Vec::new(),
            ahead: [Ahead::None; LOOKUP_BATCH],
            last_snat: None,
            last_sweep_ns: 0,
        })
    }

    /// The connections the table holds at most.
    pub(super) fn max(&self) -> usize {
        self.cfg.max as usize
    }

    /// Loads the table if it is not yet (a ruleset needs it now); returns
    /// whether it did.
    pub(super) fn load(&mut self) -> bool {
        if self.table.is_some() {
            return false;
        }
        self.table = CtTable::new(self.cfg.clone()).ok();
        self.install_rss_filter();
        true
    }

    /// This pipeline is the worker of RX queue `queue` under `rss`.
    pub(super) fn set_rss(&mut self, rss: Arc<Rss>, queue: u16) {
        self.rss = Some((rss, queue));
        if self.handoffs.capacity() == 0 {
            self.handoffs.reserve_exact(HANDOFF_QUEUE);
        }
        self.install_rss_filter();
    }

    /// Source NAT picks only tuples whose replies land on this worker's queue.
    fn install_rss_filter(&mut self) {
        if let (Some((rss, q)), Some(t)) = (&self.rss, self.table.as_mut()) {
            let (rss, q) = (Arc::clone(rss), *q);
            t.set_nat_reply_filter(Some(Box::new(move |r: &Tuple| {
                rss.queue(r.proto, r.src, r.dst, r.sport, r.dport) == q
            })));
        }
    }

    /// The entry of `ct` and the packet's direction and state.
    pub(super) fn entry<'a>(&'a self, ct: &'a Ct) -> Option<(&'a Entry, Dir, CtState)> {
        match ct {
            Ct::None => None,
            Ct::New(nc) => Some((&nc.entry, Dir::Original, CtState::New)),
            Ct::Killed { entry, dir } => Some((entry, *dir, CtState::Established)),
            Ct::Conn { id, dir } => {
                let e = self.table.as_ref()?.entry(*id)?;
                Some((e, *dir, e.state_in(*dir)))
            }
            Ct::Related { id, dir } => {
                Some((self.table.as_ref()?.entry(*id)?, *dir, CtState::Related))
            }
        }
    }

    /// CONNMARK: the connection mark into the entry.
    pub(super) fn set_mark(&mut self, ct: &mut Ct, mark: u32) {
        match ct {
            Ct::New(nc) => nc.entry.mark = mark,
            Ct::Conn { id, .. } | Ct::Related { id, .. } => {
                if let Some(t) = self.table.as_mut() {
                    t.set_mark(*id, mark);
                }
            }
            Ct::Killed { entry, .. } => entry.mark = mark,
            Ct::None => {}
        }
    }

    /// An event for `conntrack -E` (the caller checked `events_on`).
    pub(super) fn event(&mut self, kind: EventKind, e: &Entry, now_ns: u64) {
        push_event(&mut self.events, &mut self.events_lost, kind, e, now_ns);
    }

    /// The event of entry `id`, if there is one and someone listens.
    #[inline]
    pub(super) fn event_of(&mut self, kind: Option<EventKind>, id: EntryId, now_ns: u64) {
        if !self.events_on {
            return;
        }
        if let (Some(kind), Some(e)) = (kind, self.table.as_ref().and_then(|t| t.entry(id))) {
            push_event(&mut self.events, &mut self.events_lost, kind, e, now_ns);
        }
    }

    /// The expiry sweep of one batch at `now_ns`: its share of a pass a
    /// [`SWEEP_PERIOD_NS`], at most `max` slots.
    pub(super) fn expire(&mut self, now_ns: u64, max: usize) {
        let Some(t) = self.table.as_mut() else {
            return;
        };
        let budget = sweep_budget(&mut self.last_sweep_ns, now_ns, t.len(), max);
        if self.events_on {
            let (q, lost) = (&mut self.events, &mut self.events_lost);
            t.expire_with(now_ns, budget, |_, e| {
                push_event(q, lost, EventKind::Destroy, e, now_ns)
            });
        } else {
            t.expire(now_ns, budget);
        }
    }

    /// The conntrack lookups of up to [`LOOKUP_BATCH`] received frames at
    /// once, before any of them is processed: `lookup_batch` overlaps their
    /// cache misses (in a large table, one on the bucket and one on the
    /// entry per frame), and conntrack's lookup starts from what it found
    /// ([`CtTable::track_hinted`], which walks the chain again if anything
    /// was inserted or removed in between). TCP and UDP frames that are not
    /// fragments only; the others get no hint. The flow cache's tags of the
    /// entries found are warmed too, when it is in use. Returns whether it
    /// looked (the table has at least `min` entries).
    pub(super) fn lookup_ahead(
        &mut self,
        now_ns: u64,
        mem: &[u8],
        frames: &[Frame],
        min: usize,
        flow: Option<&FlowCache>,
    ) -> bool {
        let Some(t) = self.table.as_ref() else {
            return false;
        };
        if t.len() < min {
            return false;
        }
        self.ahead = [Ahead::None; LOOKUP_BATCH];
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
            let Some(slot) = self.ahead.get_mut(usize::from(pos)) else {
                continue;
            };
            *slot = match hit {
                Some(found) => {
                    t.warm(found.0);
                    if let Some(flow) = flow {
                        flow.warm(found.0);
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

    /// The hint the lookups ahead found for the frame at `pos` of the
    /// current run; the frame [`PREFETCH_AHEAD`] later gets its prefetch.
    #[inline]
    pub(super) fn hint_at(&self, pos: usize) -> Option<Hint> {
        self.prefetch_new_at(pos + PREFETCH_AHEAD);
        match self.ahead.get(pos) {
            Some(Ahead::Found(h)) => Some(*h),
            _ => None,
        }
    }

    /// [`CtTable::prefetch_new`] for the frame at `pos` of the current run
    /// of lookups, if its tuple was not found.
    #[inline]
    fn prefetch_new_at(&self, pos: usize) {
        if let (Some(t), Some(Ahead::New(tuple))) = (self.table.as_ref(), self.ahead.get(pos)) {
            t.prefetch_new(tuple, self.last_snat);
        }
    }
}

impl Pipeline {
    /// Conntrack in (`nf_conntrack_in`) for the packet: classify (or take
    /// what the flow cache found, [`Pkt::ct_seen`]), set `pkt.ct` and the
    /// rules' `ctx.ct`. `csum`: verify the transport checksum (PREROUTING,
    /// as `nf_conntrack_checksum`). On an error `pkt.ct` is left as it was.
    #[inline(always)]
    pub(super) fn ct_in(
        &mut self,
        now_ns: u64,
        pkt: &mut Pkt,
        csum: bool,
    ) -> Result<(), DropReason> {
        if self.ct.table.is_none() {
            pkt.ctx.ct = CtCtx::untracked();
            pkt.ct = Ct::None;
            return Ok(());
        }
        self.ct_track(now_ns, pkt, csum)
    }

    /// [`Pipeline::ct_in`] with the table loaded.
    #[inline(never)]
    fn ct_track(&mut self, now_ns: u64, pkt: &mut Pkt, csum: bool) -> Result<(), DropReason> {
        if let CtSeen::Asked(t) = &pkt.ct_seen {
            let r = self.ct_apply(now_ns, t, &mut pkt.ctx.ct, &mut pkt.ct);
            pkt.ct_seen = CtSeen::Applied(r);
            return r;
        }
        let t = self.ct_classify(now_ns, pkt, csum);
        self.ct_apply(now_ns, &t, &mut pkt.ctx.ct, &mut pkt.ct)
    }

    /// What conntrack made of the packet (`track`) into `*ct` and the
    /// rules' context `cc`, with its event.
    #[inline(always)]
    pub(super) fn ct_apply(
        &mut self,
        now_ns: u64,
        track: &Track,
        cc: &mut CtCtx,
        ct: &mut Ct,
    ) -> Result<(), DropReason> {
        let c = &mut self.ct;
        if c.table.is_none() {
            *cc = CtCtx::untracked();
            *ct = Ct::None;
            return Ok(());
        }
        let state = match *track {
            Track::Tracked(t) => {
                c.event_of(t.events.kind(), t.id, now_ns);
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
                if c.events_on {
                    c.event(EventKind::Destroy, entry, now_ns);
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
                *cc = invalid_ctx();
                *ct = Ct::None;
                return Ok(());
            }
            Track::Drop { log } => {
                self.log_table_full(now_ns, log);
                return Err(DropReason::ConntrackFull);
            }
        };
        if let Some((e, _, _)) = self.ct.entry(ct) {
            *cc = ct_ctx(e, state);
        }
        Ok(())
    }

    /// `nf_conntrack_in`'s classification of the packet (the transport
    /// checksum verified when `csum`), starting from its hint: what the
    /// table makes of it (INVALID without a table: the callers check there
    /// is one).
    #[inline(always)]
    pub(super) fn ct_classify(&mut self, now_ns: u64, pkt: &mut Pkt, csum: bool) -> Track {
        let Some(table) = self.ct.table.as_mut() else {
            return Track::Invalid;
        };
        let info = pkt.info;
        let ip = pkt
            .buf
            .get(ETH_LEN..ETH_LEN + usize::from(info.total_len))
            .unwrap_or(&[]);
        let csum_bad = csum
            && !info.is_fragment()
            && matches!(info.protocol, PROTO_TCP | PROTO_UDP | PROTO_ICMP)
            && !ipv4_l4_checksum_ok(ip, info);
        let mut facts = facts(info, ip, usize::from(info.header_len), csum_bad);
        if let Some(total) = pkt.reasm {
            // The first fragment of a reassembled datagram: conntrack sees
            // the whole datagram's length.
            let l4 = u32::from(total).saturating_sub(u32::from(info.header_len));
            facts.l4_len = l4;
            facts.tcp.l4_len = l4;
        }
        table.track_hinted(&facts, now_ns, pkt.hint.take())
    }

    /// Confirms the NEW connection of `ct` with its source binding `snat`
    /// (`__nf_conntrack_confirm`, as the packet leaves); `ct` becomes its
    /// entry. `Ok(false)` without a table (nothing to confirm, nothing to
    /// rewrite).
    #[inline(never)]
    pub(super) fn confirm(
        &mut self,
        now_ns: u64,
        ct: &mut Ct,
        snat: Option<NatRange>,
    ) -> Result<bool, DropReason> {
        if let Ct::New(nc) = *ct {
            let c = &mut self.ct;
            let Some(t) = c.table.as_mut() else {
                return Ok(false);
            };
            match t.confirm(nc, None, snat.as_ref(), now_ns) {
                Ok(id) => {
                    if let (Some((rss, q)), Some(e)) = (&c.rss, t.entry(id)) {
                        let r = e.reply();
                        if rss.queue(r.proto, r.src, r.dst, r.sport, r.dport) != *q
                            && c.handoffs.len() < c.handoffs.capacity()
                        {
                            c.handoffs.push(*r);
                        }
                    }
                    c.event_of(Some(EventKind::New), id, now_ns);
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

    /// "nf_conntrack: table full, dropping packet", when the table's rate
    /// limit lets it through.
    fn log_table_full(&mut self, now_ns: u64, log: Option<TableFullLog>) {
        if log.is_some() {
            if let Some(line) = self.logs.slot(now_ns) {
                line.push_str(TableFullLog::MESSAGE);
            }
        }
    }

    /// The connection table (`None` while no ruleset needed conntrack).
    pub fn conntrack(&self) -> Option<&CtTable> {
        self.ct.table.as_ref()
    }

    /// The connection table, mutable (flush, delete, NAT reply filter).
    pub fn conntrack_mut(&mut self) -> Option<&mut CtTable> {
        self.ct.table.as_mut()
    }

    /// This pipeline is the worker of RX queue `queue` under `rss`: source
    /// NAT then picks only tuples whose replies land on `queue`, and
    /// connections whose replies land elsewhere (DNAT) are reported by
    /// [`Pipeline::take_handoffs`].
    pub fn set_rss(&mut self, rss: Arc<Rss>, queue: u16) {
        self.ct.set_rss(rss, queue);
    }

    /// Moves the hand-off requests collected since the last call into `out`:
    /// reply tuples (as the replies arrive) of connections owned here.
    pub fn take_handoffs(&mut self, out: &mut Vec<Tuple>) {
        out.append(&mut self.ct.handoffs);
    }

    /// Collect conntrack events (NEW at confirmation, UPDATE, DESTROY) for
    /// `conntrack -E`, or stop. While off the cost is one branch per tracked
    /// packet; while on, at most [`CT_EVENT_QUEUE`] wait to be drained, more
    /// are counted as lost.
    pub fn set_ct_events(&mut self, on: bool) {
        let c = &mut self.ct;
        c.events_on = on;
        if on && c.events.capacity() == 0 {
            c.events.reserve_exact(CT_EVENT_QUEUE);
        }
        if !on {
            c.events.clear();
        }
    }

    /// Hands the collected conntrack events to `f`, oldest first, each with
    /// the time it happened.
    pub fn drain_ct_events(&mut self, mut f: impl FnMut(EventKind, &Entry, u64)) {
        for (k, e, t) in &self.ct.events {
            f(*k, e, *t);
        }
        self.ct.events.clear();
    }

    /// Events that did not fit the queue.
    pub fn ct_events_lost(&self) -> u64 {
        self.ct.events_lost
    }

    /// Records a DESTROY event for an entry removed from outside the data
    /// path (`conntrack -D`, `-F`).
    pub fn note_destroyed(&mut self, e: &Entry, now_ns: u64) {
        if self.ct.events_on {
            self.ct.event(EventKind::Destroy, e, now_ns);
        }
    }
}

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

/// The slots the expiry sweep examines in a batch at `now_ns` for a table of
/// `entries`: its share of a pass a [`SWEEP_PERIOD_NS`] since the last
/// batch, at least [`SWEEP_MIN`], at most `max`.
fn sweep_budget(last: &mut u64, now_ns: u64, entries: usize, max: usize) -> usize {
    let dt = now_ns.saturating_sub(*last);
    *last = now_ns;
    let share = (entries as u128 * u128::from(dt)).div_ceil(u128::from(SWEEP_PERIOD_NS));
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .clamp(SWEEP_MIN.min(max), max)
}

/// The conntrack tuple of a received untagged IPv4 TCP or UDP frame that is
/// not a fragment, read from its bytes before the parse (`None` for anything
/// else; conntrack then looks up the tuple of the parse itself).
#[inline]
fn frame_tuple(mem: &[u8], f: &Frame) -> Option<Tuple> {
    let at = usize::try_from(f.addr).ok()?;
    let b = mem.get(at..at.checked_add(usize::from(f.len).min(FRAME_SIZE))?)?;
    if read_be16(b, ethernet::field::ETHERTYPE.start)? != ethernet::ETHERTYPE_IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(b.get(ETH_LEN..)?).ok()?;
    let proto = ip.protocol();
    if ip.is_fragment() || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    // TCP and UDP alike: the ports are the first two fields.
    let l4 = ip.payload().get(..4)?;
    Some(Tuple::new(
        proto,
        u32::from(ip.src()),
        read_be16(l4, 0)?,
        u32::from(ip.dst()),
        read_be16(l4, 2)?,
    ))
}

/// The tuple of the datagram quoted by an ICMP error (`quoted`: the ICMP
/// message after its 8-byte header), as `nf_ct_get_tuplepr` reads it:
/// `None` when the inner header is short, or a fragment.
fn quoted_tuple(quoted: &[u8]) -> Option<Tuple> {
    use ipv4::field;
    let first = *quoted.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let hl = usize::from(first & 0x0f) * 4;
    if hl < ipv4::MIN_HEADER_LEN || quoted.len() < hl {
        return None;
    }
    if read_be16(quoted, field::FLAGS_FRAG.start)? & ipv4::FRAG_OFFSET_MASK != 0 {
        return None;
    }
    let proto = *quoted.get(field::PROTOCOL)?;
    let (src, dst) = (
        read_be32(quoted, field::SRC.start)?,
        read_be32(quoted, field::DST.start)?,
    );
    let l4 = quoted.get(hl..)?;
    match proto {
        PROTO_ICMP => {
            // Type, code, and the identifier (queries).
            let h = l4.get(..picmp::HEADER_LEN)?;
            Some(Tuple::icmp(src, dst, read_be16(h, 4)?, h[0], h[1]))
        }
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE => {
            // The ports are the first two fields of each of these headers.
            let h = l4.get(..8)?;
            Some(Tuple::new(
                proto,
                src,
                read_be16(h, 0)?,
                dst,
                read_be16(h, 2)?,
            ))
        }
        _ => Some(Tuple::new(proto, src, 0, dst, 0)),
    }
}

/// What conntrack needs of the datagram `ip` (from the IP header), parsed as `info`.
/// `csum_bad`: the transport checksum was verified and is wrong (PREROUTING only).
pub(super) fn facts<'a>(
    info: &Ipv4Info,
    ip: &'a [u8],
    l4_off: usize,
    csum_bad: bool,
) -> PacketFacts<'a> {
    let total = usize::from(info.total_len).min(ip.len());
    let l4 = ip.get(l4_off..total).unwrap_or(&[]);
    let mut f = PacketFacts {
        src: u32::from(info.src),
        dst: u32::from(info.dst),
        proto: info.protocol,
        fragment: info.frag_offset != 0,
        csum_bad,
        l4_len: l4.len() as u32,
        ..Default::default()
    };
    match info.l4 {
        L4::Tcp {
            src_port,
            dst_port,
            flags,
            header_len,
        } => {
            use fastables_packet::tcp::field;
            f.l4_ok = true;
            f.sport = src_port;
            f.dport = dst_port;
            let hl = usize::from(header_len);
            let options = if hl >= 20 { l4.get(20..hl) } else { None };
            f.tcp = TcpSeg {
                flags,
                seq: read_be32(l4, field::SEQ.start).unwrap_or(0),
                ack: read_be32(l4, field::ACK.start).unwrap_or(0),
                window: read_be16(l4, field::WINDOW.start).unwrap_or(0),
                hdr_len: u16::from(header_len),
                l4_len: l4.len() as u32,
                options: options.unwrap_or(&[]),
            };
        }
        L4::Udp {
            src_port,
            dst_port,
            len,
        } => {
            f.l4_ok = true;
            f.sport = src_port;
            f.dport = dst_port;
            f.udp_len = len;
        }
        L4::Icmp {
            icmp_type,
            code,
            ident,
            ..
        } => {
            f.l4_ok = true;
            f.icmp = IcmpFacts {
                icmp_type,
                code,
                id: ident,
                inner: if picmp::is_error(icmp_type) {
                    l4.get(picmp::HEADER_LEN..).and_then(quoted_tuple)
                } else {
                    None
                },
            };
        }
        L4::Fragment | L4::Other => f.l4_ok = true,
        L4::Truncated => {}
    }
    f
}

/// The conntrack part of the rules' context for a packet of `e` with `state`.
pub(super) fn ct_ctx(e: &Entry, state: CtState) -> CtCtx {
    let mut s = match state {
        CtState::New => CtStateSet::NEW,
        CtState::Established => CtStateSet::ESTABLISHED,
        CtState::Related => CtStateSet::RELATED,
        CtState::Invalid => CtStateSet::INVALID,
    };
    if e.status & status::SRC_NAT != 0 {
        s |= CtStateSet::SNAT;
    }
    if e.status & status::DST_NAT != 0 {
        s |= CtStateSet::DNAT;
    }
    let (o, r) = (e.orig(), e.reply());
    CtCtx {
        state: s,
        status: e.status,
        mark: e.mark,
        orig_src: o.src,
        orig_dst: o.dst,
        repl_src: r.src,
        repl_dst: r.dst,
        orig_sport: o.sport,
        orig_dport: o.dport,
        has_ports: fastables_conntrack::tuple::proto_has_ports(o.proto),
    }
}

/// The context of a packet conntrack knows nothing of (INVALID): also what
/// the raw table sees, which runs before conntrack (`nf_ct_get` is NULL there).
pub(super) fn invalid_ctx() -> CtCtx {
    CtCtx {
        state: CtStateSet::INVALID,
        ..CtCtx::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::nat::tests::{info_of, ip4, udp_dgram};
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

    #[test]
    fn facts_read_the_quoted_tuple_of_an_icmp_error() {
        let inner = udp_dgram([10, 0, 2, 15], 33894, [8, 8, 8, 8], 53);
        let mut d = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 8, 8, 8, 8, 10, 0, 2, 15, 3, 3, 0, 0, 0, 0, 0,
            0,
        ];
        d.extend_from_slice(&inner[..28]);
        let n = d.len() as u16;
        d[2..4].copy_from_slice(&n.to_be_bytes());
        let c = fastables_packet::checksum::checksum(&d[..20]);
        d[10..12].copy_from_slice(&c.to_be_bytes());
        let i = info_of(&d);
        let f = facts(&i, &d, 20, false);
        assert_eq!(
            f.icmp.inner,
            Some(Tuple::new(
                PROTO_UDP,
                ip4([10, 0, 2, 15]),
                33894,
                ip4([8, 8, 8, 8]),
                53
            ))
        );
    }
}
