//! Putting a connection in the table (`__nf_conntrack_confirm()`): NAT
//! setup of a new connection, room, clash and chain-length checks, linking
//! both tuples and the NAT source index (`nf_nat_bysource`).

use crate::entry::{status, Entry, ProtoInfo, NIL};
use crate::tuple::{Dir, Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use crate::InsertError;

use super::{same_src, EntryId, NewConn, Table, NS};

impl Table {
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

    /// Confirm a new connection when its first packet leaves: apply the
    /// destination manip (`dnat`, PREROUTING/OUTPUT) then the source manip
    /// (`snat`, POSTROUTING/INPUT) as `nf_nat_setup_info` does, then insert.
    /// `None` means the nat table was not consulted for that manip; pass
    /// [`NatRange::null_binding`](crate::NatRange::null_binding) when it was and no rule matched.
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
}
