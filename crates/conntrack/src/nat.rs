//! NAT tuple selection, ported from net/netfilter/nf_nat_core.c (Linux 6.x):
//! `get_unique_tuple`, `find_appropriate_src`, `find_best_ips_proto`,
//! `nf_nat_l4proto_unique_tuple` and the `nf_nat_used_tuple*` checks.
//!
//! Addition (not in the kernel): a reserved-port list. A source manip that
//! moves the connection onto another address never picks a reserved port.

use crate::entry::{status, Entry, TcpState, NIL};
use crate::table::{SrcProbe, Table};
use crate::tuple::{
    Dir, Tuple, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
};

/// `NF_NAT_MAX_ATTEMPTS`.
const NF_NAT_MAX_ATTEMPTS: u32 = 128;
/// `NF_NAT_HARDER_THRESH`.
const NF_NAT_HARDER_THRESH: u32 = NF_NAT_MAX_ATTEMPTS / 4;

/// Which side of the tuple a NAT rule rewrites (`enum nf_nat_manip_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manip {
    /// SNAT / MASQUERADE (POSTROUTING, INPUT).
    Src,
    /// DNAT / REDIRECT (PREROUTING, OUTPUT).
    Dst,
}

/// `struct nf_nat_range2` (IPv4), host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatRange {
    /// `NF_NAT_RANGE_*` bits.
    pub flags: u32,
    pub min_addr: u32,
    pub max_addr: u32,
    /// Ports (or ICMP ids) when `PROTO_SPECIFIED`.
    pub min_proto: u16,
    pub max_proto: u16,
    /// Base port for `PROTO_OFFSET`.
    pub base_proto: u16,
    /// With [`NatRange::BLOCKS`]: the table's dynamic block pool
    /// ([`Table::set_block_pools`]' order) the ports come from.
    pub pool: u16,
}

impl NatRange {
    pub const MAP_IPS: u32 = 1 << 0;
    pub const PROTO_SPECIFIED: u32 = 1 << 1;
    /// `--random`
    pub const PROTO_RANDOM: u32 = 1 << 2;
    /// `--persistent`
    pub const PERSISTENT: u32 = 1 << 3;
    /// `--random-fully`
    pub const PROTO_RANDOM_FULLY: u32 = 1 << 4;
    pub const PROTO_OFFSET: u32 = 1 << 5;
    pub const NETMAP: u32 = 1 << 6;
    /// Ours: the range is one subscriber's deterministic block (RFC 7422),
    /// so that no free port in it is that subscriber's quota exceeded.
    pub const DETERMINISTIC: u32 = 1 << 8;
    /// Ours: the ports come from the subscriber's dynamic blocks of pool
    /// [`NatRange::pool`], a new block when none has a free port; the
    /// address and port fields are then ignored.
    pub const BLOCKS: u32 = 1 << 9;
    /// `NF_NAT_RANGE_PROTO_RANDOM_ALL`.
    pub const PROTO_RANDOM_ALL: u32 = Self::PROTO_RANDOM | Self::PROTO_RANDOM_FULLY;

    /// Addresses `min..=max`, any port.
    pub fn addrs(min: u32, max: u32) -> NatRange {
        NatRange {
            flags: Self::MAP_IPS,
            min_addr: min,
            max_addr: max,
            ..Default::default()
        }
    }

    /// Restrict ports (or ICMP ids) to `min..=max`.
    pub fn with_ports(mut self, min: u16, max: u16) -> NatRange {
        self.flags |= Self::PROTO_SPECIFIED;
        self.min_proto = min;
        self.max_proto = max;
        self
    }

    /// Add `NF_NAT_RANGE_*` flags (random, random-fully, persistent).
    pub fn with_flags(mut self, flags: u32) -> NatRange {
        self.flags |= flags;
        self
    }

    /// `__nf_nat_alloc_null_binding()`: the nat hook ran and no rule matched.
    /// `addr` is the reply tuple's destination (SRC manip) or source (DST manip),
    /// i.e. the connection's current address on that side.
    pub fn null_binding(addr: u32) -> NatRange {
        NatRange::addrs(addr, addr)
    }
}

/// jhash2 (lookup3) as include/linux/jhash.h.
fn jhash2(k: &[u32], initval: u32) -> u32 {
    #[inline]
    fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }
    #[inline]
    fn fin(a: &mut u32, b: &mut u32, c: &mut u32) {
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(14));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(11));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(25));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(16));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(4));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(14));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(24));
    }
    let len = k.len() as u32;
    let init = 0xdead_beef_u32.wrapping_add(len << 2).wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut k = k;
    while k.len() > 3 {
        a = a.wrapping_add(k[0]);
        b = b.wrapping_add(k[1]);
        c = c.wrapping_add(k[2]);
        mix(&mut a, &mut b, &mut c);
        k = &k[3..];
    }
    match k.len() {
        3 => {
            c = c.wrapping_add(k[2]);
            b = b.wrapping_add(k[1]);
            a = a.wrapping_add(k[0]);
            fin(&mut a, &mut b, &mut c);
        }
        2 => {
            b = b.wrapping_add(k[1]);
            a = a.wrapping_add(k[0]);
            fin(&mut a, &mut b, &mut c);
        }
        1 => {
            a = a.wrapping_add(k[0]);
            fin(&mut a, &mut b, &mut c);
        }
        _ => {}
    }
    c
}

/// The in-memory (network order) value of a host-order address as the kernel's
/// `__be32` read as a CPU word.
#[inline]
fn raw_be(ip: u32) -> u32 {
    u32::from_ne_bytes(ip.to_be_bytes())
}

/// `reciprocal_scale()`.
#[inline]
fn reciprocal_scale(val: u32, ep_ro: u32) -> u32 {
    ((u64::from(val) * u64::from(ep_ro)) >> 32) as u32
}

fn proto_ports(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP
    )
}

/// `l4proto_in_range()`.
fn l4proto_in_range(t: &Tuple, manip: Manip, min: u16, max: u16) -> bool {
    match t.proto {
        IPPROTO_ICMP => t.icmp_id() >= min && t.icmp_id() <= max,
        p if proto_ports(p) || p == 47 => {
            let port = if manip == Manip::Src {
                t.sport
            } else {
                t.dport
            };
            port >= min && port <= max
        }
        _ => true,
    }
}

/// `nf_in_range()`: would source-mapping to `t` satisfy `range`?
fn nf_in_range(t: &Tuple, range: &NatRange) -> bool {
    if range.flags & NatRange::MAP_IPS != 0 && !(t.src >= range.min_addr && t.src <= range.max_addr)
    {
        return false;
    }
    if range.flags & NatRange::PROTO_SPECIFIED == 0 {
        return true;
    }
    l4proto_in_range(t, Manip::Src, range.min_proto, range.max_proto)
}

/// `find_best_ips_proto()` (IPv4: one 32-bit word).
fn find_best_ips_proto(t: &mut Tuple, range: &NatRange, manip: Manip) {
    if range.flags & NatRange::MAP_IPS == 0 {
        return;
    }
    let var = if manip == Manip::Src {
        &mut t.src
    } else {
        &mut t.dst
    };
    // Fast path: only one choice.
    if range.min_addr == range.max_addr {
        *var = range.min_addr;
        return;
    }
    // jhash2 over the 16-byte nf_inet_addr (IPv4 address then zeros), seeded
    // with the destination address unless --persistent.
    let src_words = [raw_be(t.src), 0, 0, 0];
    let initval = if range.flags & NatRange::PERSISTENT != 0 {
        0
    } else {
        raw_be(t.dst)
    };
    let j = jhash2(&src_words, initval);
    let dist = range.max_addr.wrapping_sub(range.min_addr).wrapping_add(1);
    let var = if manip == Manip::Src {
        &mut t.src
    } else {
        &mut t.dst
    };
    *var = range.min_addr.wrapping_add(reciprocal_scale(j, dist));
}

impl Table {
    /// `nf_nat_setup_info()` on an unconfirmed entry. False when the range
    /// is dynamic port blocks and none could serve the connection (which
    /// must then be dropped).
    pub(crate) fn nat_setup_info(
        &mut self,
        e: &mut Entry,
        range: &NatRange,
        manip: Manip,
        now: u64,
    ) -> bool {
        let done = match manip {
            Manip::Src => status::SRC_NAT_DONE,
            Manip::Dst => status::DST_NAT_DONE,
        };
        if e.status & done != 0 {
            return true;
        }
        let mut ok = true;
        // What we've got will look like inverse of reply.
        if let Some(curr) = e.tuple[1].invert() {
            let new = if manip == Manip::Src && range.flags & NatRange::BLOCKS != 0 {
                let (t, found) = self.block_tuple(&curr, range, e, now);
                ok = found;
                t
            } else {
                self.get_unique_tuple(&curr, range, e, manip, now)
            };
            if new != curr {
                if let Some(reply) = new.invert() {
                    e.tuple[1] = reply;
                    e.status |= match manip {
                        Manip::Src => status::SRC_NAT,
                        Manip::Dst => status::DST_NAT,
                    };
                }
            }
        }
        e.status |= done;
        ok
    }

    /// Choose the tuple for NAT of a new connection without inserting it: what
    /// `confirm` would pick now (consumes PRNG state).
    pub fn nat_choose(
        &mut self,
        e: &Entry,
        range: &NatRange,
        manip: Manip,
        now_ns: u64,
    ) -> Option<Tuple> {
        let curr = e.tuple[1].invert()?;
        Some(self.get_unique_tuple(&curr, range, e, manip, now_ns))
    }

    /// `nf_conntrack_tuple_taken()`: is `reply` used by another connection?
    fn tuple_taken(&mut self, reply: &Tuple, ct: &Entry, now: u64) -> bool {
        let h = self.hash(reply);
        let (live, dead) = self.scan(h, reply, now);
        if dead.is_some() {
            // nf_conntrack_tuple_taken() collects expired entries it meets.
            self.gc_tuple(reply, now);
        }
        // At most one live entry carries a tuple. With the same original
        // tuple it is the same flow, left to clash resolution.
        let taken = live.is_some_and(|(i, _)| {
            self.entries
                .get(i)
                .is_some_and(|e| e.tuple[0] != ct.tuple[0])
        });
        // The last candidate is the one inserted: its hash is kept, and
        // whether nothing carried it, for insertion not to look again.
        self.probed = Some((*reply, h, live.is_none().then_some(self.changes())));
        if taken {
            self.stats.found += 1;
        }
        taken
    }

    /// A source manip candidate NAT may not use although the table would allow
    /// it: a reserved port, or (with a reply filter) a reply tuple the filter
    /// rejects, e.g. one that RSS would deliver to another worker. Applies
    /// only when the candidate moves the source to another address.
    pub(crate) fn reserved_hit(&self, t: &Tuple, ct: &Entry, manip: Manip) -> bool {
        if manip != Manip::Src || t.src == ct.tuple[0].src {
            return false;
        }
        if proto_ports(t.proto) && self.port_reserved(t.sport) {
            return true;
        }
        match (&self.reply_filter, t.invert()) {
            (Some(f), Some(reply)) => !f(&reply),
            _ => false,
        }
    }

    /// `nf_nat_used_tuple()`.
    fn used_tuple(&mut self, t: &Tuple, ct: &Entry, manip: Manip, now: u64) -> bool {
        if self.reserved_hit(t, ct, manip) {
            return true;
        }
        match t.invert() {
            Some(reply) => self.tuple_taken(&reply, ct, now),
            None => false,
        }
    }

    /// `nf_nat_used_tuple_new()`: like `used_tuple` for the unaltered tuple, but
    /// a reverse clash of two un-NATed connections is not a clash.
    fn used_tuple_new(&mut self, t: &Tuple, ct: &Entry, now: u64) -> bool {
        if !self.used_tuple(t, ct, Manip::Src, now) {
            return false;
        }
        // allow_clash: UDP and UDP-Lite.
        if !matches!(t.proto, IPPROTO_UDP | IPPROTO_UDPLITE) {
            return true;
        }
        if ct.status & (status::NAT_MASK | status::SEQ_ADJUST) != 0 {
            return true;
        }
        let found = self
            .find(t, now)
            .or_else(|| t.invert().and_then(|r| self.find(&r, now)));
        let Some((i, dir)) = found else {
            return false; // clashing entry went away
        };
        let Some(other) = self.entries.get(i) else {
            return true;
        };
        if dir != Dir::Reply {
            return true;
        }
        if other.status & (status::NAT_MASK | status::SEQ_ADJUST) != 0 {
            return true;
        }
        !(other.tuple[0] == ct.tuple[1] && other.tuple[1] == ct.tuple[0])
    }

    /// `nf_nat_used_tuple_harder()`: in the last attempts, a new TCP connection
    /// may evict a source-NATed TIME_WAIT/CLOSE entry whose sequence it passed.
    fn used_tuple_harder(
        &mut self,
        t: &Tuple,
        ct: &Entry,
        manip: Manip,
        attempts_left: u32,
        now: u64,
    ) -> bool {
        if self.reserved_hit(t, ct, manip) {
            return true;
        }
        let Some(reply) = t.invert() else {
            return false;
        };
        let ct_syn_sent = ct.tcp_state() == Some(TcpState::SynSent);
        if attempts_left > NF_NAT_HARDER_THRESH || t.proto != IPPROTO_TCP || !ct_syn_sent {
            return self.tuple_taken(&reply, ct, now);
        }
        let Some((i, dir)) = self.find(&reply, now) else {
            return false;
        };
        let Some(other) = self.entries.get(i) else {
            return true;
        };
        if dir == Dir::Original {
            return true;
        }
        // nf_nat_may_kill()
        let old_state = other.tcp_state().unwrap_or(TcpState::None);
        if old_state < TcpState::TimeWait
            || other.status & (status::FIXED_TIMEOUT | status::DYING) != 0
            || other.status & status::SRC_NAT == 0
        {
            return true;
        }
        // nf_seq_has_advanced()
        let old_end = other.tcp().map_or(0, |x| x.seen[0].td_end);
        let new_end = ct.tcp().map_or(0, |x| x.seen[0].td_end);
        if (new_end.wrapping_sub(old_end) as i32) <= 0 {
            return true;
        }
        self.remove_idx(i);
        false
    }

    /// `find_appropriate_src()`: reuse the mapping of another connection from
    /// the same source address/port if it fits the range.
    /// The kernel walks the bysource chain newest first; here the index
    /// links each source's newest entry, and the entries from one source
    /// are listed newest first through [`Entry::next`].
    fn find_appropriate_src(&mut self, t: &Tuple, range: &NatRange) -> Option<Tuple> {
        let hash = self.src_hash(t);
        let head = self.src_head(hash, t);
        self.src_probed = Some(SrcProbe {
            tuple: *t,
            hash,
            head,
            changes: self.changes(),
        });
        let mut i = head?;
        // The list is acyclic; the bound only keeps the loop finite.
        for _ in 0..self.entries.len() {
            let e = self.entries.get(i as usize)?;
            let result = e.tuple[1].invert().map(|mut r| {
                r.dst = t.dst;
                r.dport = t.dport;
                r.proto = t.proto;
                r
            });
            if let Some(r) = result.filter(|r| nf_in_range(r, range)) {
                return Some(r);
            }
            if e.next == NIL {
                return None;
            }
            i = e.next;
        }
        None
    }

    /// `get_unique_tuple()`.
    fn get_unique_tuple(
        &mut self,
        orig: &Tuple,
        range: &NatRange,
        ct: &Entry,
        manip: Manip,
        now: u64,
    ) -> Tuple {
        self.unique_tuple(orig, range, ct, manip, now, false).0
    }

    /// `get_unique_tuple()`, and whether the tuple is known to be free:
    /// with `check`, ways the kernel takes without looking (a one-port
    /// range, a protocol without ports, a search given up) look. Inlined:
    /// with `check` false it is `get_unique_tuple()` as it was.
    #[inline(always)]
    pub(crate) fn unique_tuple(
        &mut self,
        orig: &Tuple,
        range: &NatRange,
        ct: &Entry,
        manip: Manip,
        now: u64,
        check: bool,
    ) -> (Tuple, bool) {
        // 1) Source mappings: keep the original, or reuse the current mapping.
        if manip == Manip::Src && range.flags & NatRange::PROTO_RANDOM_ALL == 0 {
            if nf_in_range(orig, range) {
                if !self.used_tuple_new(orig, ct, now) {
                    return (*orig, true);
                }
            } else if let Some(t) = self.find_appropriate_src(orig, range) {
                if !self.used_tuple(&t, ct, manip, now) {
                    return (t, true);
                }
            }
        }
        // 2) Select the IP in the range.
        let mut t = *orig;
        find_best_ips_proto(&mut t, range, manip);
        // 3) Only bother mapping the port if it's not already in range and unique.
        if range.flags & NatRange::PROTO_RANDOM_ALL == 0 {
            if range.flags & NatRange::PROTO_SPECIFIED != 0 {
                if range.flags & NatRange::PROTO_OFFSET == 0
                    && l4proto_in_range(&t, manip, range.min_proto, range.max_proto)
                    && (range.min_proto == range.max_proto || !self.used_tuple(&t, ct, manip, now))
                {
                    let free = range.min_proto != range.max_proto
                        || (check && !self.used_tuple(&t, ct, manip, now));
                    return (t, free);
                }
            } else if !self.used_tuple(&t, ct, manip, now) {
                return (t, true);
            }
        }
        // Last chance: get protocol to try to obtain unique tuple.
        let found = self.l4proto_unique_tuple(&mut t, range, manip, ct, now);
        let free = found || (check && !self.used_tuple(&t, ct, manip, now));
        (t, free)
    }

    /// `nf_nat_l4proto_unique_tuple()`; true when it found a free tuple
    /// (false too when it did not look: a protocol without ports, a
    /// destination port it may not change).
    fn l4proto_unique_tuple(
        &mut self,
        t: &mut Tuple,
        range: &NatRange,
        manip: Manip,
        ct: &Entry,
        now: u64,
    ) -> bool {
        let specified = range.flags & NatRange::PROTO_SPECIFIED != 0;
        let (min, range_size): (u32, u32);
        let icmp = t.proto == IPPROTO_ICMP;
        let key = if icmp {
            // id is same for either direction
            if !specified {
                min = 0;
                range_size = 65536;
            } else {
                min = u32::from(range.min_proto);
                range_size = u32::from(range.max_proto).wrapping_sub(min).wrapping_add(1);
            }
            t.sport
        } else if proto_ports(t.proto) {
            let key = if manip == Manip::Src {
                t.sport
            } else {
                t.dport
            };
            if !specified {
                // If it's dst rewrite, can't change port
                if manip == Manip::Dst {
                    return false;
                }
                if key < 1024 {
                    // Loose convention: >> 512 is credential passing
                    if key < 512 {
                        min = 1;
                        range_size = 511;
                    } else {
                        min = 600;
                        range_size = 1023 - 600 + 1;
                    }
                } else {
                    min = 1024;
                    range_size = 65535 - 1024 + 1;
                }
            } else {
                let (mut lo, mut hi) = (u32::from(range.min_proto), u32::from(range.max_proto));
                if hi < lo {
                    std::mem::swap(&mut lo, &mut hi);
                }
                min = lo;
                range_size = hi - lo + 1;
            }
            key
        } else {
            return false;
        };
        if range_size == 0 {
            return false;
        }

        let mut off: u16 = if range.flags & NatRange::PROTO_OFFSET != 0 {
            key.wrapping_sub(range.base_proto)
        } else if range.flags & NatRange::PROTO_RANDOM_ALL != 0 || manip != Manip::Dst {
            self.rng.u16()
        } else {
            0
        };

        let mut attempts = range_size.min(NF_NAT_MAX_ATTEMPTS);
        // Bounded: attempts halves each round, at most 4 rounds from 128.
        loop {
            for i in 0..attempts {
                let v = (min + u32::from(off) % range_size) as u16;
                if icmp || manip == Manip::Src {
                    t.sport = v;
                } else {
                    t.dport = v;
                }
                if !self.used_tuple_harder(t, ct, manip, attempts - i, now) {
                    return true;
                }
                off = off.wrapping_add(1);
            }
            if attempts >= range_size || attempts < 16 {
                return false;
            }
            attempts /= 2;
            off = self.rng.u16();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jhash2_known_values() {
        // lookup3 hashword() reference values: hashword(k, 0, 0) = 0xdeadbeef.
        assert_eq!(jhash2(&[], 0), 0xdead_beef);
        // Deterministic and sensitive to every word.
        let a = jhash2(&[1, 0, 0, 0], 7);
        assert_ne!(a, jhash2(&[1, 0, 0, 1], 7));
        assert_ne!(a, jhash2(&[1, 0, 0, 0], 8));
    }

    #[test]
    fn best_ip_single_and_spread() {
        let mut t = Tuple::new(IPPROTO_TCP, 0x0a00_0002, 1000, 0x0808_0808, 80);
        find_best_ips_proto(
            &mut t,
            &NatRange::addrs(0x0102_0304, 0x0102_0304),
            Manip::Src,
        );
        assert_eq!(t.src, 0x0102_0304);
        let r = NatRange::addrs(0x0102_0300, 0x0102_030f);
        let mut seen = std::collections::HashSet::new();
        for s in 0..64u32 {
            let mut t = Tuple::new(IPPROTO_TCP, 0x0a00_0000 + s, 1000, 0x0808_0808, 80);
            find_best_ips_proto(&mut t, &r, Manip::Src);
            assert!(t.src >= r.min_addr && t.src <= r.max_addr);
            seen.insert(t.src);
            // Same source and destination: same address (consistency).
            let mut t2 = Tuple::new(IPPROTO_TCP, 0x0a00_0000 + s, 2000, 0x0808_0808, 443);
            find_best_ips_proto(&mut t2, &r, Manip::Src);
            assert_eq!(t.src, t2.src);
        }
        assert!(seen.len() > 4, "addresses spread over the range");
    }
}
