//! Neighbors (the ARP table) and ARP processing.
//!
//! - Static entries come from `[[neighbor]]` and never change.
//! - Dynamic entries are learned as the kernel's `arp_process` does with the
//!   default sysctls (arp_ignore 0, arp_accept 0): an ARP request aimed at one
//!   of our addresses creates or updates the requester's entry; an ARP reply
//!   (or any ARP packet) only updates an entry that exists, which includes the
//!   incomplete entry left by our own request. The table is bounded (oldest
//!   entry evicted first), allocated once.
//! - A forwarded packet whose next hop is unresolved waits in a bounded hold
//!   queue ([`Neighbors::hold`]; the kernel's arp_queue) while ARP requests go
//!   out, one a second, [`SOLICIT_TRIES`] in all (mcast_solicit). The reply
//!   releases the packets; when the last request goes unanswered for a second
//!   they are dropped ([`crate::drop::DropReason::NeighborUnresolved`]) with an
//!   ICMP host unreachable each, as `neigh_invalidate` does. Packets the
//!   router generates itself are not held: they are dropped while the request
//!   goes out.
//! - Learned entries age as [`Neighbors::resolve`] says: used freely for 35 s
//!   after the neighbor last confirmed its MAC, then probed by unicast ARP
//!   while in use, and forgotten when three probes go unanswered (the
//!   kernel's REACHABLE, STALE/DELAY, PROBE and FAILED, simplified: no
//!   upper-layer confirmations, which a router does not get for forwarded
//!   traffic anyway).

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use ahash::AHashMap;
use fastables_packet::arp::{ArpRepr, OP_REPLY, OP_REQUEST};
use fastables_packet::{IfIndex, MacAddr};

use fastables_config::NeighborConfig;

/// Up to this many static entries, [`Neighbors::resolve`] scans them.
const FEW_STATICS: usize = 8;

/// Default bound of the dynamic table (the kernel's gc_thresh3).
pub const DEFAULT_DYNAMIC_MAX: usize = 1024;

/// Length of an ARP frame as the kernel sends it (Ethernet 14 + ARP 28; the NIC pads).
pub const ARP_FRAME_LEN: usize = 42;

/// At most one ARP request per unresolved neighbor per this interval
/// (the kernel's retrans_time, 1 s).
pub const SOLICIT_INTERVAL_NS: u64 = 1_000_000_000;

/// ARP requests sent for a neighbor before its held packets are given up
/// (the kernel's mcast_solicit).
pub const SOLICIT_TRIES: u8 = 3;

/// Packets held for one unresolved neighbor; beyond it the oldest is dropped
/// (the kernel bounds its arp_queue by bytes, unres_qlen_bytes).
pub const HOLD_PER_NEIGHBOR: usize = 32;

/// Packets held in all.
pub const HOLD_MAX: usize = 256;

/// A forwarded frame waiting for the MAC of its next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Egress interface.
    pub dev: IfIndex,
    /// Next hop (host order).
    pub ip: u32,
    /// The frame's buffer.
    pub addr: u64,
    /// Its length.
    pub len: u16,
}

/// What became of held frames ([`Neighbors::service`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldEvent {
    /// The neighbor answered: send the frame to this MAC.
    Resolved(Held, MacAddr),
    /// Ask again (an ARP request for `ip` on `dev`).
    Solicit {
        /// Interface.
        dev: IfIndex,
        /// Neighbor.
        ip: u32,
    },
    /// Nobody answered: drop it (and say host unreachable).
    Failed(Held),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// `None`: incomplete (we asked, no answer yet).
    mac: Option<MacAddr>,
    /// When we last sent an ARP request for it.
    asked_ns: Option<u64>,
    /// ARP requests sent since it was last resolved.
    probes: u8,
    /// When an ARP packet from it last confirmed the MAC.
    confirmed_ns: u64,
    /// Unicast probes sent since then (once it went stale).
    ucast: u8,
    /// When the last unicast probe went out.
    probe_ns: u64,
}

/// A learned entry is used without question this long after an ARP packet
/// from the neighbor confirmed it (the kernel's base_reachable_time, 30 s,
/// plus delay_first_probe_time, 5 s); then each use may send a unicast probe.
pub const REACHABLE_NS: u64 = 35_000_000_000;

/// Unicast probes of a stale entry before it is given up (ucast_solicit).
pub const UCAST_PROBES: u8 = 3;

/// What the next hop's entry says ([`Neighbors::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Send to this MAC.
    Mac(MacAddr),
    /// Send to this MAC, and probe it with a unicast ARP request (the entry
    /// is stale).
    Probe(MacAddr),
    /// No MAC (never learned, or the stale entry went unanswered).
    Unresolved,
}

/// What the ARP side of one worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArpCounters {
    /// ARP packets received (requests and replies, valid or not for us).
    pub received: u64,
    /// Replies sent for our addresses.
    pub replies_sent: u64,
    /// Requests sent to resolve (or probe) a next hop.
    pub requests_sent: u64,
    /// Neighbor entries that got a MAC address (new, or a changed address).
    pub learned: u64,
}

impl ArpCounters {
    /// Adds another worker's counters to these.
    pub fn add(&mut self, o: &ArpCounters) {
        self.received += o.received;
        self.replies_sent += o.replies_sent;
        self.requests_sent += o.requests_sent;
        self.learned += o.learned;
    }
}

/// The neighbor table.
#[derive(Debug, Clone)]
pub struct Neighbors {
    statics: AHashMap<(IfIndex, u32), MacAddr>,
    /// The same entries while there are at most [`FEW_STATICS`] (a scan of
    /// a few is cheaper than hashing); empty otherwise. Statics never change.
    few_statics: Vec<((IfIndex, u32), MacAddr)>,
    dynamic: AHashMap<(IfIndex, u32), Entry>,
    order: VecDeque<(IfIndex, u32)>,
    max: usize,
    /// The hold queue, oldest first (at most [`HOLD_MAX`]).
    held: Vec<Held>,
    /// The time of the batch being processed ([`Neighbors::set_now`]).
    now_ns: u64,
    counters: ArpCounters,
}

impl Neighbors {
    /// A table with the configured static entries and room for `dynamic_max` learned ones.
    pub fn new(statics: &[NeighborConfig], dynamic_max: usize) -> Neighbors {
        let max = dynamic_max.max(1);
        let mut s = AHashMap::with_capacity(statics.len());
        for n in statics {
            s.insert((n.dev, u32::from(n.ip)), n.mac);
        }
        let few_statics = if s.len() <= FEW_STATICS {
            s.iter().map(|(k, m)| (*k, *m)).collect()
        } else {
            Vec::new()
        };
        Neighbors {
            statics: s,
            few_statics,
            dynamic: AHashMap::with_capacity(max + 1),
            order: VecDeque::with_capacity(max + 1),
            max,
            held: Vec::with_capacity(HOLD_MAX),
            now_ns: 0,
            counters: ArpCounters::default(),
        }
    }

    /// What the ARP side did so far.
    pub fn counters(&self) -> ArpCounters {
        self.counters
    }

    /// A request went out (counted by the caller once it is on its way).
    pub fn count_request(&mut self) {
        self.counters.requests_sent += 1;
    }

    /// The current time, for the entries learned from now on.
    pub fn set_now(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
    }

    /// The next hop `ip` on `dev` at `now_ns`, with the kernel's aging in
    /// brief: a learned entry is used for [`REACHABLE_NS`] after its last
    /// confirmation; after that, uses probe it by unicast ARP, one a second,
    /// [`UCAST_PROBES`] in all, and an entry still unconfirmed a second after
    /// the last probe is forgotten (its packets then wait for a broadcast
    /// request, [`Neighbors::hold`]). Static entries never age.
    #[inline]
    pub fn resolve(&mut self, dev: IfIndex, ip: u32, now_ns: u64) -> Resolve {
        if self.statics.len() <= FEW_STATICS {
            if let Some((_, m)) = self.few_statics.iter().find(|(k, _)| *k == (dev, ip)) {
                return Resolve::Mac(*m);
            }
        } else if let Some(m) = self.statics.get(&(dev, ip)) {
            return Resolve::Mac(*m);
        }
        let Some(e) = self.dynamic.get_mut(&(dev, ip)) else {
            return Resolve::Unresolved;
        };
        let Some(mac) = e.mac else {
            return Resolve::Unresolved;
        };
        if now_ns.saturating_sub(e.confirmed_ns) < REACHABLE_NS {
            return Resolve::Mac(mac);
        }
        let since_probe = now_ns.saturating_sub(e.probe_ns);
        if e.ucast > 0 && since_probe < SOLICIT_INTERVAL_NS {
            return Resolve::Mac(mac);
        }
        if e.ucast >= UCAST_PROBES {
            e.mac = None;
            e.ucast = 0;
            e.probes = 0;
            e.asked_ns = None;
            return Resolve::Unresolved;
        }
        e.ucast += 1;
        e.probe_ns = now_ns;
        Resolve::Probe(mac)
    }

    /// Frames in the hold queue.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Holds `h` until its neighbor answers. Returns a frame that had to go
    /// to make room (the oldest of the same neighbor, else the oldest of
    /// all), to be dropped.
    pub fn hold(&mut self, h: Held) -> Option<Held> {
        let mut same = 0;
        let mut first_same = None;
        for (i, x) in self.held.iter().enumerate() {
            if x.dev == h.dev && x.ip == h.ip {
                same += 1;
                first_same.get_or_insert(i);
            }
        }
        let evicted = if same >= HOLD_PER_NEIGHBOR {
            first_same.map(|i| self.held.remove(i))
        } else if self.held.len() >= HOLD_MAX {
            Some(self.held.remove(0))
        } else {
            None
        };
        self.held.push(h);
        evicted
    }

    /// The hold queue at `now_ns`: frames whose neighbor answered, requests
    /// to send again, frames given up. Bounded by the queue's length; does
    /// nothing when it is empty.
    pub fn service(&mut self, now_ns: u64, mut f: impl FnMut(HeldEvent)) {
        if self.held.is_empty() {
            return;
        }
        // Each neighbor with held frames, once: resend or give up.
        let mut failed = false;
        let mut i = 0;
        while i < self.held.len() {
            let h = self.held[i];
            if let Some(mac) = self.lookup(h.dev, h.ip) {
                self.held.remove(i);
                f(HeldEvent::Resolved(h, mac));
                continue;
            }
            let first = !self.held[..i]
                .iter()
                .any(|x| x.dev == h.dev && x.ip == h.ip);
            let e = self.dynamic.get(&(h.dev, h.ip)).copied();
            let due = match e.and_then(|e| e.asked_ns) {
                None => true,
                Some(t) => now_ns.saturating_sub(t) >= SOLICIT_INTERVAL_NS || now_ns < t,
            };
            let probes = e.map_or(0, |e| e.probes);
            if due && probes >= SOLICIT_TRIES {
                self.held.remove(i);
                failed = true;
                f(HeldEvent::Failed(h));
                continue;
            }
            if due && first {
                // The request itself records the probe (`solicit`).
                f(HeldEvent::Solicit {
                    dev: h.dev,
                    ip: h.ip,
                });
            }
            i += 1;
        }
        // A neighbor given up starts afresh with its next packet.
        if failed {
            let held = &self.held;
            for (k, e) in self.dynamic.iter_mut() {
                if e.mac.is_none()
                    && e.probes >= SOLICIT_TRIES
                    && !held.iter().any(|x| (x.dev, x.ip) == *k)
                {
                    e.probes = 0;
                }
            }
        }
    }

    /// The MAC of `ip` (host order) on `dev`, if resolved.
    #[inline]
    pub fn lookup(&self, dev: IfIndex, ip: u32) -> Option<MacAddr> {
        if let Some(m) = self.statics.get(&(dev, ip)) {
            return Some(*m);
        }
        self.dynamic.get(&(dev, ip)).and_then(|e| e.mac)
    }

    /// Number of dynamic entries (complete or incomplete).
    pub fn dynamic_len(&self) -> usize {
        self.dynamic.len()
    }

    fn insert(&mut self, dev: IfIndex, ip: u32, mac: Option<MacAddr>, asked_ns: Option<u64>) {
        if let Some(e) = self.dynamic.get_mut(&(dev, ip)) {
            if mac.is_some() {
                if e.mac != mac {
                    self.counters.learned += 1;
                }
                e.mac = mac;
                e.probes = 0;
                e.confirmed_ns = self.now_ns;
                e.ucast = 0;
            }
            if asked_ns.is_some() {
                e.asked_ns = asked_ns;
                e.probes = e.probes.saturating_add(1);
            }
            return;
        }
        if self.dynamic.len() >= self.max {
            if let Some(old) = self.order.pop_front() {
                self.dynamic.remove(&old);
            }
        }
        if mac.is_some() {
            self.counters.learned += 1;
        }
        self.dynamic.insert(
            (dev, ip),
            Entry {
                mac,
                asked_ns,
                probes: u8::from(asked_ns.is_some()),
                confirmed_ns: self.now_ns,
                ucast: 0,
                probe_ns: 0,
            },
        );
        self.order.push_back((dev, ip));
    }

    /// Whether to send an ARP request for `ip` now: not if one was sent less
    /// than [`SOLICIT_INTERVAL_NS`] ago. When it says yes it records the request
    /// (an incomplete entry, so that the reply is accepted).
    pub fn solicit(&mut self, dev: IfIndex, ip: u32, now_ns: u64) -> bool {
        if self.statics.contains_key(&(dev, ip)) {
            return false;
        }
        if let Some(Entry {
            asked_ns: Some(t), ..
        }) = self.dynamic.get(&(dev, ip))
        {
            if now_ns.saturating_sub(*t) < SOLICIT_INTERVAL_NS && now_ns >= *t {
                return false;
            }
        }
        self.insert(dev, ip, None, Some(now_ns));
        true
    }

    /// Learn `mac` for `ip` on `dev`: `create` as for a request aimed at us,
    /// otherwise only an existing dynamic entry is updated. Static entries win.
    pub fn learn(&mut self, dev: IfIndex, ip: u32, mac: MacAddr, create: bool) {
        if self.statics.contains_key(&(dev, ip)) {
            return;
        }
        if create || self.dynamic.contains_key(&(dev, ip)) {
            self.insert(dev, ip, Some(mac), None);
        }
    }
}

/// What to do with a received ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOutcome {
    /// Answer with this ARP reply (Ethernet destination = the requester).
    Reply(ArpRepr),
    /// Consumed (learned or ignored as the kernel would, e.g. a reply to our request).
    Consumed,
    /// Not for us (a request for an address that is not ours, or a bogus sender).
    NotForUs,
}

/// Process a received ARP packet as `arp_process` does (arp_ignore 0: answer for
/// any of our addresses, whatever the interface; arp_accept 0). `is_local` says
/// whether an address (host order) is ours.
pub fn process_arp(
    neigh: &mut Neighbors,
    dev: IfIndex,
    dev_mac: MacAddr,
    arp: &ArpRepr,
    is_local: impl Fn(u32) -> bool,
) -> ArpOutcome {
    neigh.counters.received += 1;
    let out = arp_outcome(neigh, dev, dev_mac, arp, is_local);
    if matches!(out, ArpOutcome::Reply(_)) {
        neigh.counters.replies_sent += 1;
    }
    out
}

fn arp_outcome(
    neigh: &mut Neighbors,
    dev: IfIndex,
    dev_mac: MacAddr,
    arp: &ArpRepr,
    is_local: impl Fn(u32) -> bool,
) -> ArpOutcome {
    let sip = u32::from(arp.spa);
    let tip = u32::from(arp.tpa);
    // Multicast target or sender, loopback target: dropped.
    if tip >> 28 == 0xe || tip >> 24 == 127 || sip >> 28 == 0xe {
        return ArpOutcome::NotForUs;
    }
    if arp.op != OP_REQUEST && arp.op != OP_REPLY {
        return ArpOutcome::NotForUs;
    }
    // Duplicate address detection probe: answer, learn nothing.
    if sip == 0 {
        if arp.op == OP_REQUEST && is_local(tip) {
            return ArpOutcome::Reply(ArpRepr::reply_to(arp, dev_mac));
        }
        return ArpOutcome::NotForUs;
    }
    if arp.op == OP_REQUEST && is_local(tip) {
        if !arp.sha.is_unicast() {
            return ArpOutcome::NotForUs;
        }
        neigh.learn(dev, sip, arp.sha, true);
        return ArpOutcome::Reply(ArpRepr::reply_to(arp, dev_mac));
    }
    if arp.sha.is_unicast() {
        // Replies and other requests only refresh what we already have.
        neigh.learn(dev, sip, arp.sha, false);
    }
    if arp.op == OP_REPLY {
        ArpOutcome::Consumed
    } else {
        ArpOutcome::NotForUs
    }
}

/// Write an Ethernet + ARP frame into `out`; returns its length (42), or `None`
/// if `out` is too short.
pub fn emit_arp(
    out: &mut [u8],
    eth_src: MacAddr,
    eth_dst: MacAddr,
    arp: &ArpRepr,
) -> Option<usize> {
    fastables_packet::arp::emit_frame(out, eth_src, eth_dst, arp).ok()
}

/// An ARP request for `target` from `sender_ip` (broadcast), as `arp_solicit` sends it.
pub fn arp_request(out: &mut [u8], dev_mac: MacAddr, sender_ip: u32, target: u32) -> Option<usize> {
    let req = ArpRepr::request(dev_mac, Ipv4Addr::from(sender_ip), Ipv4Addr::from(target));
    emit_arp(out, dev_mac, MacAddr::BROADCAST, &req)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: u32 = 0x0a00_020f; // 10.0.2.15
    const PEER: u32 = 0x0a00_0202; // 10.0.2.2
    const MAC_US: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xc2, 0xbe, 0x11]);
    const MAC_PEER: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x35, 0x02]);

    fn req(spa: u32, tpa: u32) -> ArpRepr {
        ArpRepr::request(MAC_PEER, Ipv4Addr::from(spa), Ipv4Addr::from(tpa))
    }

    #[test]
    fn request_for_us_is_answered_and_learned() {
        let mut n = Neighbors::new(&[], 4);
        let out = process_arp(&mut n, 0, MAC_US, &req(PEER, OURS), |ip| ip == OURS);
        let ArpOutcome::Reply(r) = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            (r.op, r.sha, r.spa, r.tha, r.tpa),
            (
                OP_REPLY,
                MAC_US,
                Ipv4Addr::from(OURS),
                MAC_PEER,
                Ipv4Addr::from(PEER)
            )
        );
        assert_eq!(n.lookup(0, PEER), Some(MAC_PEER));
        assert_eq!(n.lookup(1, PEER), None);
    }

    #[test]
    fn request_for_other_is_not_learned() {
        let mut n = Neighbors::new(&[], 4);
        let out = process_arp(&mut n, 0, MAC_US, &req(PEER, 0x0a00_0209), |ip| ip == OURS);
        assert_eq!(out, ArpOutcome::NotForUs);
        assert_eq!(n.lookup(0, PEER), None);
    }

    #[test]
    fn reply_updates_only_incomplete_or_existing() {
        let mut n = Neighbors::new(&[], 4);
        let mut rep = ArpRepr::reply_to(
            &ArpRepr::request(MAC_US, Ipv4Addr::from(OURS), Ipv4Addr::from(PEER)),
            MAC_PEER,
        );
        assert_eq!(
            process_arp(&mut n, 0, MAC_US, &rep, |ip| ip == OURS),
            ArpOutcome::Consumed
        );
        assert_eq!(
            n.lookup(0, PEER),
            None,
            "unsolicited reply not learned (arp_accept 0)"
        );
        assert!(n.solicit(0, PEER, 5));
        assert!(!n.solicit(0, PEER, 6), "one request per second");
        assert!(n.solicit(0, PEER, 5 + SOLICIT_INTERVAL_NS));
        assert_eq!(n.lookup(0, PEER), None);
        process_arp(&mut n, 0, MAC_US, &rep, |ip| ip == OURS);
        assert_eq!(n.lookup(0, PEER), Some(MAC_PEER));
        rep.sha = MacAddr([2, 0, 0, 0, 0, 9]);
        process_arp(&mut n, 0, MAC_US, &rep, |ip| ip == OURS);
        assert_eq!(n.lookup(0, PEER), Some(MacAddr([2, 0, 0, 0, 0, 9])));
    }

    #[test]
    fn static_entries_win_and_table_is_bounded() {
        let st = [NeighborConfig {
            ip: Ipv4Addr::from(PEER),
            mac: MAC_PEER,
            dev: 0,
        }];
        let mut n = Neighbors::new(&st, 2);
        n.learn(0, PEER, MacAddr([2; 6]), true);
        assert_eq!(n.lookup(0, PEER), Some(MAC_PEER));
        for i in 0..5u32 {
            n.learn(0, 100 + i, MacAddr([2; 6]), true);
        }
        assert_eq!(n.dynamic_len(), 2);
        assert_eq!(n.lookup(0, 100), None);
        assert_eq!(n.lookup(0, 104), Some(MacAddr([2; 6])));
    }

    #[test]
    fn arp_request_bytes() {
        let mut buf = [0u8; 64];
        let len = arp_request(&mut buf, MAC_US, OURS, PEER).unwrap();
        assert_eq!(len, 42);
        let expect: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0xc2, 0xbe, 0x11, 0x08,
            0x06, // eth
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen op
            0x52, 0x54, 0x00, 0xc2, 0xbe, 0x11, 10, 0, 2, 15, // sha spa
            0, 0, 0, 0, 0, 0, 10, 0, 2, 2, // tha tpa
        ];
        assert_eq!(&buf[..len], &expect[..]);
    }
}
