//! The flow cache: a forwarding decision cached per connection and
//! direction (DESIGN.md: "filter runs on every packet unless the ruleset is
//! proven flow-invariant (then a verdict may be cached per connection; an
//! optimisation, never a change in meaning)").
//!
//! When every chain a forwarded packet crosses is flow-invariant
//! ([`fastables_rules::compile::CompiledRuleset::flow_invariant`]), the first
//! packet of a confirmed connection in each direction and conntrack state
//! (NEW until the first reply, then ESTABLISHED) goes the slow way while
//! its rule counters are recorded; the [`Decision`] (the counted entries,
//! the input interface, the state, the route) is kept, and the
//! connection's [`Tag`] for that direction points at it. Later packets of
//! that direction that conntrack finds in the same state replay the
//! counters and take the route without running the chains. Conntrack itself (the tracker, the
//! timeouts, the checksum check), the NAT rewrite, the TTL, the MTU and the
//! neighbour are still done for every packet.
//!
//! Decisions are shared by every connection that takes the same way (most
//! do), interned in a bounded table. A ruleset change or a full table
//! starts a new generation: every tag becomes stale, and each connection
//! records again on its next packet.
//!
//! Here too is the fast path itself ([`Pipeline::fast_forward`]), kept
//! apart from the slow path as VPP's NAT plugin keeps its fast path: it
//! either forwards the packet from the decision or answers "go slow",
//! handing on in the [`Pkt`] what it learned (conntrack's answer, the
//! recording to make).

use std::collections::HashMap;

use fastables_conntrack::{CtState, Dir, EntryId, Hint, Manip, Track, Tuple};
use fastables_packet::ipv4::Ipv4Packet;
use fastables_packet::parse::L4;
use fastables_packet::IfIndex;
use fastables_rules::compile::{CompiledRuleset, Path, Shortcut};
use fastables_rules::model::{Hook, Table, TtlTarget};

use super::nat;
use super::output::Generate;
use super::pkt::{set_macs, CtSeen, Fate, Pkt, ETH_LEN};
use super::tables::Tables;
use super::Pipeline;
use crate::neigh;

/// The tables and hooks a forwarded packet crosses after conntrack has
/// seen it as ESTABLISHED (nat runs only for a connection's first packet).
const FORWARD_PATH: [(Table, Hook); 5] = [
    (Table::Raw, Hook::Prerouting),
    (Table::Mangle, Hook::Prerouting),
    (Table::Mangle, Hook::Forward),
    (Table::Filter, Hook::Forward),
    (Table::Mangle, Hook::Postrouting),
];

/// Decisions kept per generation.
pub(crate) const DECISIONS_MAX: usize = 4096;

/// How packets of one direction of a connection are forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Decision {
    /// The entries the chains counted.
    pub path: Path,
    /// How many of them PREROUTING counted, and whether a `-j TTL` is
    /// among those (applied again; TTL targets later on the way are not
    /// kept: [`fastables_rules::compile::CompiledRuleset::replayable`]).
    pub pre_len: u8,
    pub ttl: bool,
    /// The interface the packets arrive on (another one goes the slow way).
    pub in_if: IfIndex,
    /// Their conntrack state: NEW until the first reply, then ESTABLISHED
    /// (a packet in another state goes the slow way).
    pub state: CtState,
    /// The route's output device, next hop and MTU.
    pub out_dev: IfIndex,
    pub next_hop: u32,
    pub mtu: u16,
}

/// A connection's decisions: `[u32; 3]` = the entry's generation (its slot
/// is reused under another), the cache generation, and the decision of each
/// direction (index + 1; 0 = none) in two halves.
type Tag = [u32; 3];

/// Decisions and the tags of the connections, by conntrack slot.
pub(crate) struct FlowCache {
    /// The cache is on and every chain of [`FORWARD_PATH`] is
    /// flow-invariant ([`CompiledRuleset::flow_invariant`]).
    pub usable: bool,
    /// Frames forwarded from a decision.
    pub hits: u64,
    /// The policy entries the chains of [`FORWARD_PATH`] without rules
    /// count for every forwarded packet (not recorded in decisions).
    policies: ([u32; 5], usize),
    gen: u32,
    decisions: Vec<Decision>,
    index: HashMap<Decision, u32, ahash::RandomState>,
    tags: Vec<Tag>,
}

/// A packet whose way through the slow path is recorded as its
/// connection's decision for `dir` in `state`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recording {
    id: EntryId,
    dir: Dir,
    state: CtState,
    /// The path's length after PREROUTING.
    pub pre_len: usize,
    /// The route (output device, next hop, MTU), set when the packet was
    /// forwarded as a packet of the connection in `state`.
    pub route: Option<(IfIndex, u32, u16)>,
}

impl Recording {
    /// Whether the slow path's connection `(id, dir)` in `state` is the
    /// one recorded.
    pub(super) fn is(&self, id: EntryId, dir: Dir, state: CtState) -> bool {
        (self.id, self.dir, self.state) == (id, dir, state)
    }
}

impl FlowCache {
    /// A cache for a table of at most `slots` entries, off until
    /// [`FlowCache::configure`]. The tags are zeroed memory the system
    /// provides as it is touched.
    pub(crate) fn new(slots: usize) -> FlowCache {
        FlowCache {
            usable: false,
            hits: 0,
            policies: ([0; 5], 0),
            gen: 1,
            decisions: Vec::with_capacity(DECISIONS_MAX),
            index: HashMap::with_capacity_and_hasher(
                DECISIONS_MAX,
                ahash::RandomState::with_seeds(1, 2, 3, 4),
            ),
            tags: vec![[0; 3]; slots],
        }
    }

    /// Room for the tags of a table of `slots` entries (conntrack was
    /// just loaded); every tag is stale.
    pub(crate) fn resize(&mut self, slots: usize) {
        self.tags = vec![[0; 3]; slots];
        self.invalidate();
    }

    /// For the ruleset of `tables` (a new generation): whether the cache
    /// can be used (`on`, conntrack loaded, every chain of the forward
    /// path flow-invariant), and the policies it counts.
    pub(super) fn configure(&mut self, tables: &Tables, on: bool) {
        let rules: &CompiledRuleset = &tables.rules;
        self.usable = on
            && rules.needs().conntrack
            && FORWARD_PATH
                .iter()
                .all(|&(t, h)| rules.flow_invariant(t, h));
        self.policies = ([0; 5], 0);
        for (t, h) in FORWARD_PATH {
            if let Some(Shortcut::Policy { entry, .. }) = tables.shortcut(t, h) {
                if let Some(slot) = self.policies.0.get_mut(self.policies.1) {
                    *slot = entry;
                    self.policies.1 += 1;
                }
            }
        }
        self.invalidate();
    }

    /// The tags' allocation as (address, bytes) (see
    /// [`fastables_conntrack::Table::regions`]).
    pub(crate) fn region(&self) -> (usize, usize) {
        (
            self.tags.as_ptr() as usize,
            self.tags.capacity() * std::mem::size_of::<Tag>(),
        )
    }

    /// A new generation: every tag is stale.
    pub(crate) fn invalidate(&mut self) {
        self.gen = self.gen.wrapping_add(1).max(1);
        self.decisions.clear();
        self.index.clear();
    }

    /// The decision of `dir` of connection `id`, if it has a current one,
    /// and its number ([`FlowCache::decision`]).
    #[inline]
    pub(crate) fn get(&self, id: EntryId, dir: Dir) -> Option<(usize, &Decision)> {
        let t = self.tags.get(id.index() as usize)?;
        if t[0] != id.generation() || t[1] != self.gen {
            return None;
        }
        let d = match dir {
            Dir::Original => t[2] & 0xffff,
            Dir::Reply => t[2] >> 16,
        };
        let n = (d as usize).checked_sub(1)?;
        Some((n, self.decisions.get(n)?))
    }

    /// Starts loading the tag of `id` (a cache miss in a large table), so
    /// that a batch's misses overlap (the lookups ahead).
    #[inline]
    pub(crate) fn warm(&self, id: EntryId) {
        if let Some(t) = self.tags.get(id.index() as usize) {
            fastables_conntrack::prefetch(t);
        }
    }

    /// Decision number `n` of the current generation.
    #[inline]
    pub(crate) fn decision(&self, n: usize) -> Option<&Decision> {
        self.decisions.get(n)
    }

    /// Records `d` as the decision of `dir` of connection `id`.
    pub(crate) fn set(&mut self, id: EntryId, dir: Dir, d: Decision) {
        let n = match self.index.get(&d) {
            Some(&n) => n,
            None => {
                if self.decisions.len() >= DECISIONS_MAX {
                    self.invalidate();
                }
                let n = self.decisions.len() as u32 + 1;
                self.decisions.push(d);
                self.index.insert(d, n);
                n
            }
        };
        let gen = self.gen;
        let Some(t) = self.tags.get_mut(id.index() as usize) else {
            return;
        };
        if t[0] != id.generation() || t[1] != gen {
            *t = [id.generation(), gen, 0];
        }
        t[2] = match dir {
            Dir::Original => (t[2] & 0xffff_0000) | n,
            Dir::Reply => (t[2] & 0xffff) | (n << 16),
        };
    }
}

impl Pipeline {
    /// The fast path for a candidate (a TCP or UDP datagram to our MAC, not
    /// a fragment, TTL above 1, no trace set): conntrack sees the packet,
    /// then its connection's decision stands for the chains
    /// ([`Pipeline::fast_finish`]). When raw PREROUTING has rules, the
    /// decision is looked up first: it says whether they let the packet
    /// reach conntrack. [`Fast::Slow`] otherwise, with what was learned in
    /// `pkt`: conntrack's answer ([`Pkt::ct_seen`]) when it was asked, the
    /// recording ([`Pkt::rec`]) when the packet is to record its way.
    #[inline(never)]
    pub(super) fn fast_forward(&mut self, now_ns: u64, pkt: &mut Pkt, in_if: IfIndex) -> Fast {
        let expected = if self.tables.raw_continues {
            None
        } else {
            match self.fast_decision(now_ns, pkt, in_if) {
                Some(d) => Some(d),
                None => return Fast::Slow,
            }
        };
        let csum = self.ct.checksum;
        let track = self.ct_classify(now_ns, pkt, csum);
        if let Track::Tracked(t) = track {
            let n = match expected {
                Some((id, dir, n)) => {
                    let same = matches!(self.fast.decision(n), Some(d) if d.state == t.state);
                    (t.id == id && t.dir == dir && same).then_some(n)
                }
                None => match self.fast.get(t.id, t.dir) {
                    Some((n, d)) if d.in_if == in_if && d.state == t.state => Some(n),
                    _ => {
                        if matches!(t.state, CtState::New | CtState::Established) {
                            self.record(pkt, t.id, t.dir, t.state);
                        }
                        None
                    }
                },
            };
            let done = n.and_then(|n| self.fast_finish(now_ns, pkt, t.id, t.dir, n));
            if let Some((fate, generate)) = done {
                self.ct.event_of(t.events.kind(), t.id, now_ns);
                return Fast::Done(fate, generate);
            }
        }
        pkt.ct_seen = if self.tables.raw_continues {
            // raw PREROUTING lets every packet through unseen: conntrack
            // may as well have come first.
            let applied = self.ct_apply(now_ns, &track, &mut pkt.ctx.ct, &mut pkt.ct);
            CtSeen::Applied(applied)
        } else {
            CtSeen::Asked(track)
        };
        Fast::Slow
    }

    /// The packet records its way as the decision of `(id, dir)` in `state`.
    fn record(&mut self, pkt: &mut Pkt, id: EntryId, dir: Dir, state: CtState) {
        pkt.rec = Some(Recording {
            id,
            dir,
            state,
            pre_len: 0,
            route: None,
        });
        self.tables.state.record();
    }

    /// The connection of the datagram and its current decision for
    /// `in_if`, found before conntrack sees the packet (its hint kept in
    /// `pkt` for conntrack). `None` (the slow path) without one; the
    /// recording set when the packet is to record it.
    #[inline(always)]
    fn fast_decision(
        &mut self,
        now_ns: u64,
        pkt: &mut Pkt,
        in_if: IfIndex,
    ) -> Option<(EntryId, Dir, usize)> {
        let table = self.ct.table.as_ref()?;
        let info = pkt.info;
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
        let (id, dir) = match pkt.hint {
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
                pkt.hint = Some(Hint { found, changes });
                found
            }
        };
        // The state conntrack will give the packet (as `track` does).
        let state = table.entry(id)?.state_in(dir);
        if state == CtState::Related {
            return None;
        }
        match self.fast.get(id, dir) {
            Some((n, d)) if d.in_if == in_if && d.state == state => Some((id, dir, n)),
            _ => {
                self.record(pkt, id, dir, state);
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
        pkt: &mut Pkt,
        id: EntryId,
        dir: Dir,
        n: usize,
    ) -> Option<(Fate, Option<Generate>)> {
        let info = pkt.info;
        let ip_len = usize::from(info.total_len);
        let d = self.fast.decision(n)?;
        let (out_dev, next_hop) = (d.out_dev, d.next_hop);
        if ip_len > usize::from(d.mtu) {
            return None;
        }
        let out_mac = self.ifs.get(out_dev)?.mac;
        let e = self.ct.table.as_ref()?.entry(id)?;
        // mangle PREROUTING's TTL targets, as apply_effects writes them: once
        // if any changed the TTL; then the forwarding check on the result.
        let mut ttl = info.ttl;
        let mut ttl_changed = false;
        if d.ttl {
            for &x in d.path.entries().iter().take(usize::from(d.pre_len)) {
                let new = match self.tables.rules.ttl_target(x) {
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
        let ip = pkt.buf.get_mut(ETH_LEN..ETH_LEN + ip_len)?;
        self.tables.state.replay(&d.path, info.total_len);
        let (policies, n) = self.fast.policies;
        for &p in policies.iter().take(n) {
            self.tables.state.count(p, info.total_len);
        }
        // As the slow path: the destination before routing, the TTL, the
        // source after POSTROUTING.
        if ttl_changed {
            set_ttl(ip, ttl);
        }
        let target = e.nat_target(dir);
        let manip = |ip: &mut [u8], m: Manip| {
            if info.header_len != 20 || !nat::manip_simple(ip, m, &target) {
                nat::manip_pkt(ip, m, &target);
            }
        };
        if nat::needs_manip(e, dir, Manip::Dst) {
            manip(ip, Manip::Dst);
        }
        set_ttl(ip, ttl - 1);
        if nat::needs_manip(e, dir, Manip::Src) {
            manip(ip, Manip::Src);
        }
        set_macs(pkt.buf, nh_mac, out_mac);
        let generate = probe.then(|| Generate::ArpProbe {
            dev: out_dev,
            target: next_hop,
            sender: self.ifs.select_addr(out_dev, next_hop).unwrap_or(0),
            mac: nh_mac,
        });
        self.fast.hits += 1;
        Some((Fate::forward(out_dev), generate))
    }

    /// After the slow path of a frame that recorded its way (`rec`): the
    /// decision, if it was forwarded as a packet of the recorded
    /// connection. Recording stops here either way.
    pub(super) fn fast_record(&mut self, rec: Recording, in_if: IfIndex, fate: Fate) {
        let route = match fate {
            Fate::Forward { .. } => rec.route,
            _ => None,
        };
        let rules = &self.tables.rules;
        let path = self
            .tables
            .state
            .take_path()
            .filter(|p| rules.replayable(p, rec.pre_len));
        if let (Some(path), Some((out_dev, next_hop, mtu))) = (path, route) {
            let ttl = path
                .entries()
                .iter()
                .take(rec.pre_len)
                .any(|&e| rules.ttl_target(e).is_some());
            self.fast.set(
                rec.id,
                rec.dir,
                Decision {
                    path,
                    pre_len: rec.pre_len as u8,
                    ttl,
                    in_if,
                    state: rec.state,
                    out_dev,
                    next_hop,
                    mtu,
                },
            );
        }
    }
}

/// The fast path's answer.
pub(super) enum Fast {
    /// Forwarded from the connection's decision.
    Done(Fate, Option<Generate>),
    /// Go the slow way (with what was learned in the [`Pkt`]).
    Slow,
}

/// `Ipv4Packet::set_ttl` on the datagram `ip`.
#[inline(always)]
pub(super) fn set_ttl(ip: &mut [u8], ttl: u8) {
    if let Ok(mut p) = Ipv4Packet::new_checked(ip) {
        p.set_ttl(ttl);
    }
}
