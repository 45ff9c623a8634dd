//! Dynamic port blocks of one SNAT pool (`-j SNAT --block-size N`), as one
//! worker hands them out: a subscriber gets a block of ports when it has
//! none with a free port, keeps it while a connection uses it, and gives it
//! back when its last one ends. All of a subscriber's blocks are on one
//! public address (RFC 6888 REQ-2, "paired" pooling), at most `max_blocks`
//! at once.
//!
//! With several workers the pool's blocks are shared out (block `k` of an
//! address to worker `k % workers`), so that no state is shared: each
//! worker allocates from its own share, and a subscriber whose connections
//! RSS spreads over several workers holds a block on each of them.
//!
//! Everything is allocated when the pool is made; allocation and release
//! are a few array operations and a bit scan.

use crate::entry::NIL;

/// Dynamic pools are limited to this many blocks (the per-block state is
/// 12 bytes a block and a subscriber index of twice the share).
pub const MAX_POOL_BLOCKS: u64 = 1 << 20;

/// One dynamic pool, as the rule says it (host order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPoolSpec {
    /// Its `natPoolID` in the events (the port-block SNAT rules counted
    /// from 1 in rules file order).
    pub id: u32,
    /// Addresses `pool.0..=pool.1`.
    pub pool: (u32, u32),
    /// Ports `ports.0..=ports.1`, cut from the low one in blocks of `size`.
    pub ports: (u16, u16),
    pub size: u16,
    /// Blocks a subscriber may hold at once.
    pub max_blocks: u16,
}

impl BlockPoolSpec {
    /// Blocks on each address.
    pub fn per_addr(&self) -> u32 {
        (u32::from(self.ports.1) - u32::from(self.ports.0) + 1) / u32::from(self.size.max(1))
    }

    /// Blocks in the pool.
    pub fn blocks(&self) -> u64 {
        (u64::from(self.pool.1.saturating_sub(self.pool.0)) + 1) * u64::from(self.per_addr())
    }
}

/// Why no block could be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AllocError {
    /// The subscriber holds `max_blocks` already.
    Quota,
    /// The subscriber's address (paired pooling) has no free block left.
    AddressFull(u32),
    /// No address of the pool has a free block.
    PoolFull,
}

/// One worker's share of a dynamic pool.
pub(crate) struct BlockPool {
    pub spec: BlockPoolSpec,
    /// This worker and the workers in all.
    pub share: (u16, u16),
    per_addr: u32,
    /// No longer in the rules: hands out nothing, kept until its blocks
    /// are released.
    pub retired: bool,
    /// Per block (address-major): connections using it, its subscriber,
    /// the subscriber's next block (or `NIL`).
    refs: Vec<u32>,
    owner: Vec<u32>,
    next: Vec<u32>,
    /// Bit `k`: block `k` is free and in this worker's share.
    free: Vec<u64>,
    nfree: u64,
    subs: SubIndex,
}

impl BlockPool {
    /// Worker `worker` of `workers`' share of `spec`'s blocks, all free.
    pub(crate) fn new(spec: BlockPoolSpec, worker: u16, workers: u16) -> BlockPool {
        let per_addr = spec.per_addr();
        let n = spec.blocks().min(MAX_POOL_BLOCKS) as usize;
        let mut free = vec![0u64; n.div_ceil(64)];
        let mut nfree = 0;
        let workers = u32::from(workers.max(1));
        for k in 0..n {
            if (k as u32 % per_addr.max(1)) % workers == u32::from(worker) % workers {
                free[k / 64] |= 1 << (k % 64);
                nfree += 1;
            }
        }
        BlockPool {
            spec,
            share: (worker, workers as u16),
            per_addr,
            retired: false,
            refs: vec![0; n],
            owner: vec![0; n],
            next: vec![NIL; n],
            free,
            nfree,
            subs: SubIndex::new(nfree as usize),
        }
    }

    /// Blocks in use.
    pub(crate) fn in_use(&self) -> usize {
        self.subs.len_blocks
    }

    /// Block `k`'s address and ports.
    pub(crate) fn range(&self, k: u32) -> (u32, u16, u16) {
        let per = self.per_addr.max(1);
        let addr = self.spec.pool.0 + k / per;
        let lo = u32::from(self.spec.ports.0) + (k % per) * u32::from(self.spec.size);
        (addr, lo as u16, (lo + u32::from(self.spec.size) - 1) as u16)
    }

    /// The block holding public `addr`:`port`, if it is one of the pool's.
    pub(crate) fn block_at(&self, addr: u32, port: u16) -> Option<u32> {
        let s = &self.spec;
        if addr < s.pool.0 || addr > s.pool.1 || port < s.ports.0 {
            return None;
        }
        let j = u32::from(port - s.ports.0) / u32::from(s.size.max(1));
        let k = (addr - s.pool.0)
            .checked_mul(self.per_addr)?
            .checked_add(j)?;
        (j < self.per_addr && (k as usize) < self.refs.len()).then_some(k)
    }

    /// The subscriber's first block (then [`BlockPool::next_of`]), or `NIL`.
    pub(crate) fn first_of(&self, sub: u32) -> u32 {
        self.subs.get(sub).map_or(NIL, |s| s.head)
    }

    /// The subscriber's block after `k`, or `NIL`.
    pub(crate) fn next_of(&self, k: u32) -> u32 {
        self.next.get(k as usize).copied().unwrap_or(NIL)
    }

    /// The subscriber holding block `k`.
    pub(crate) fn owner_of(&self, k: u32) -> u32 {
        self.owner.get(k as usize).copied().unwrap_or(0)
    }

    /// A new block for `sub`: on its address if it holds one, else on the
    /// first address from a place its address hashes to that has one.
    pub(crate) fn alloc(&mut self, sub: u32) -> Result<u32, AllocError> {
        let held = self.subs.get(sub).copied();
        if let Some(s) = held {
            if s.count >= u32::from(self.spec.max_blocks) {
                return Err(AllocError::Quota);
            }
        }
        if self.retired || self.nfree == 0 {
            return Err(AllocError::PoolFull);
        }
        let naddr = self.spec.pool.1 - self.spec.pool.0 + 1;
        let k = match held {
            Some(s) => {
                let a = s.head / self.per_addr.max(1);
                self.first_free_on(a)
                    .ok_or(AllocError::AddressFull(self.spec.pool.0 + a))?
            }
            None => {
                let start =
                    ((u64::from(sub.wrapping_mul(0x9e37_79b1)) * u64::from(naddr)) >> 32) as u32;
                (0..naddr)
                    .find_map(|i| self.first_free_on((start + i) % naddr))
                    .ok_or(AllocError::PoolFull)?
            }
        };
        let ku = k as usize;
        self.free[ku / 64] &= !(1 << (ku % 64));
        self.nfree -= 1;
        self.owner[ku] = sub;
        self.refs[ku] = 0;
        self.next[ku] = held.map_or(NIL, |s| s.head);
        self.subs.set(
            sub,
            Sub {
                head: k,
                count: held.map_or(1, |s| s.count + 1),
            },
        );
        self.subs.len_blocks += 1;
        Ok(k)
    }

    /// The first free block of this share on address `a` (0-based).
    fn first_free_on(&self, a: u32) -> Option<u32> {
        let lo = (a * self.per_addr) as usize;
        let hi = (lo + self.per_addr as usize).min(self.refs.len());
        let mut k = lo;
        while k < hi {
            let w = self.free.get(k / 64).copied().unwrap_or(0) >> (k % 64);
            if w != 0 {
                let f = k + w.trailing_zeros() as usize;
                return (f < hi).then_some(f as u32);
            }
            k = (k / 64 + 1) * 64;
        }
        None
    }

    /// A connection started using block `k`.
    pub(crate) fn add_ref(&mut self, k: u32) {
        if let Some(r) = self.refs.get_mut(k as usize) {
            *r += 1;
        }
    }

    /// A connection stopped using block `k`; true when it was the last.
    pub(crate) fn drop_ref(&mut self, k: u32) -> bool {
        match self.refs.get_mut(k as usize) {
            Some(r) if *r > 0 => {
                *r -= 1;
                *r == 0
            }
            _ => false,
        }
    }

    /// Connections using block `k`.
    pub(crate) fn refs(&self, k: u32) -> u32 {
        self.refs.get(k as usize).copied().unwrap_or(0)
    }

    /// Block `k` goes back to the pool (its subscriber's list loses it).
    pub(crate) fn release(&mut self, k: u32) {
        let ku = k as usize;
        let Some(&sub) = self.owner.get(ku) else {
            return;
        };
        let Some(s) = self.subs.get(sub).copied() else {
            return;
        };
        // Unlink k from the subscriber's list.
        if s.head == k {
            if s.count <= 1 {
                self.subs.remove(sub);
            } else {
                self.subs.set(
                    sub,
                    Sub {
                        head: self.next[ku],
                        count: s.count - 1,
                    },
                );
            }
        } else {
            let mut p = s.head;
            while p != NIL && self.next[p as usize] != k {
                p = self.next[p as usize];
            }
            if p == NIL {
                return;
            }
            self.next[p as usize] = self.next[ku];
            self.subs.set(
                sub,
                Sub {
                    head: s.head,
                    count: s.count - 1,
                },
            );
        }
        self.next[ku] = NIL;
        self.refs[ku] = 0;
        self.free[ku / 64] |= 1 << (ku % 64);
        self.nfree += 1;
        self.subs.len_blocks -= 1;
    }
}

/// A subscriber's blocks: the first, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sub {
    head: u32,
    count: u32,
}

/// Subscriber → its blocks: open addressing with linear probing, sized at
/// start for every block of the share to have its own subscriber, so that
/// it never grows.
struct SubIndex {
    keys: Vec<u32>,
    vals: Vec<Sub>,
    mask: usize,
    /// Blocks held, all subscribers together.
    len_blocks: usize,
}

const EMPTY: Sub = Sub {
    head: NIL,
    count: 0,
};

impl SubIndex {
    fn new(blocks: usize) -> SubIndex {
        let cap = (blocks * 2).max(16).next_power_of_two();
        SubIndex {
            keys: vec![0; cap],
            vals: vec![EMPTY; cap],
            mask: cap - 1,
            len_blocks: 0,
        }
    }

    fn home(&self, key: u32) -> usize {
        (key.wrapping_mul(0x9e37_79b1) as usize).wrapping_shr(7) & self.mask
    }

    /// The slot of `key`, or the empty slot where it would go.
    fn slot(&self, key: u32) -> usize {
        let mut i = self.home(key);
        // The index is at most half full: an empty slot comes.
        for _ in 0..=self.mask {
            match self.vals.get(i) {
                Some(v) if v.head == NIL => return i,
                Some(_) if self.keys.get(i) == Some(&key) => return i,
                _ => i = (i + 1) & self.mask,
            }
        }
        i
    }

    fn get(&self, key: u32) -> Option<&Sub> {
        self.vals.get(self.slot(key)).filter(|v| v.head != NIL)
    }

    fn set(&mut self, key: u32, v: Sub) {
        let i = self.slot(key);
        if let (Some(k), Some(s)) = (self.keys.get_mut(i), self.vals.get_mut(i)) {
            *k = key;
            *s = v;
        }
    }

    /// Removes `key`, moving back the entries after it that would no
    /// longer be found (backward shift deletion).
    fn remove(&mut self, key: u32) {
        let mut hole = self.slot(key);
        if self.vals.get(hole).is_none_or(|v| v.head == NIL) {
            return;
        }
        let mut i = hole;
        loop {
            i = (i + 1) & self.mask;
            let Some(&v) = self.vals.get(i) else { return };
            if v.head == NIL {
                break;
            }
            let home = self.home(self.keys[i]);
            // Entry i may fill the hole if its home is not in (hole, i].
            let dist_home = i.wrapping_sub(home) & self.mask;
            let dist_hole = i.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.keys[hole] = self.keys[i];
                self.vals[hole] = v;
                hole = i;
            }
        }
        self.vals[hole] = EMPTY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(naddr: u32, size: u16, max_blocks: u16) -> BlockPoolSpec {
        BlockPoolSpec {
            id: 1,
            pool: (0xc633_6401, 0xc633_6400 + naddr),
            ports: (1024, 1024 + 4 * size - 1),
            size,
            max_blocks,
        }
    }

    #[test]
    fn blocks_are_paired_quota_bound_and_given_back() {
        let mut p = BlockPool::new(spec(2, 100, 2), 0, 1);
        let a = p.alloc(7).unwrap();
        let b = p.alloc(7).unwrap();
        assert_ne!(a, b);
        // Paired: the same address.
        assert_eq!(p.range(a).0, p.range(b).0);
        assert_eq!(p.alloc(7), Err(AllocError::Quota));
        assert_eq!(p.block_at(p.range(b).0, p.range(b).1 + 99), Some(b));
        p.add_ref(b);
        assert!(p.drop_ref(b));
        p.release(b);
        assert_eq!(p.first_of(7), a);
        assert_eq!(p.next_of(a), NIL);
        let c = p.alloc(7).unwrap();
        assert_eq!(c, b, "the freed block is the first free one again");
        p.release(a);
        p.release(c);
        assert_eq!(p.first_of(7), NIL);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn an_address_fills_then_the_pool() {
        let mut p = BlockPool::new(spec(1, 100, 4), 0, 1);
        for s in 1..=4 {
            p.alloc(s).unwrap();
        }
        assert_eq!(p.alloc(5), Err(AllocError::PoolFull));
        let mut p = BlockPool::new(spec(2, 100, 8), 0, 1);
        let first = p.alloc(1).unwrap();
        let addr = p.range(first).0;
        // Fill the other address with other subscribers, then subscriber 1's.
        let mut s = 2;
        while p.nfree > 0 {
            p.alloc(s).unwrap();
            s += 1;
        }
        assert_eq!(p.alloc(1), Err(AllocError::PoolFull));
        p.release(first);
        p.alloc(99).unwrap();
        let mut q = BlockPool::new(spec(2, 100, 8), 0, 1);
        let f = q.alloc(1).unwrap();
        for _ in 0..3 {
            q.alloc(1).unwrap();
        }
        assert_eq!(q.alloc(1), Err(AllocError::AddressFull(q.range(f).0)));
        assert_eq!(addr, p.range(first).0);
    }

    #[test]
    fn workers_share_the_blocks_out() {
        let s = spec(3, 50, 8);
        let mut seen = std::collections::HashSet::new();
        for w in 0..2 {
            let mut p = BlockPool::new(s, w, 2);
            let mut n = 0;
            while let Ok(k) = p.alloc(1000 + n) {
                assert!(seen.insert(k), "block {k} in two shares");
                n += 1;
            }
        }
        assert_eq!(seen.len() as u64, s.blocks());
    }

    proptest! {
        /// Against a model: a block is never given twice while held, every
        /// subscriber's blocks are its own and on one address, the quota
        /// holds, and released blocks come back.
        #[test]
        fn allocator_matches_a_model(ops in proptest::collection::vec((0u32..12, any::<bool>()), 1..300)) {
            let s = spec(3, 64, 3);
            let mut p = BlockPool::new(s, 0, 1);
            let mut held: std::collections::HashMap<u32, Vec<u32>> = Default::default();
            for (sub, alloc) in ops {
                let mine = held.entry(sub).or_default();
                if alloc {
                    match p.alloc(sub) {
                        Ok(k) => {
                            prop_assert!(mine.len() < 3);
                            prop_assert!(held.values().all(|v| !v.contains(&k)));
                            let mine = held.entry(sub).or_default();
                            if let Some(&f) = mine.first() {
                                prop_assert_eq!(p.range(f).0, p.range(k).0);
                            }
                            mine.push(k);
                        }
                        Err(AllocError::Quota) => prop_assert_eq!(mine.len(), 3),
                        Err(_) => {}
                    }
                } else if let Some(k) = mine.pop() {
                    p.release(k);
                }
                // The index agrees with the model.
                for (&sub, v) in &held {
                    let mut got = Vec::new();
                    let mut k = p.first_of(sub);
                    while k != NIL {
                        prop_assert_eq!(p.owner_of(k), sub);
                        got.push(k);
                        k = p.next_of(k);
                    }
                    got.sort_unstable();
                    let mut want = v.clone();
                    want.sort_unstable();
                    prop_assert_eq!(got, want);
                }
                prop_assert_eq!(p.in_use(), held.values().map(Vec::len).sum::<usize>());
            }
        }
    }
}
