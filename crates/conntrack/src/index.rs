//! The table's hash indexes: buckets of one cache line, each holding up to
//! [`SLOTS`] links with a 16-bit tag of their hash.
//!
//! The kernel chains the entries of a bucket through the entries
//! themselves, so a lookup reads every entry of the chain: a lookup that
//! finds nothing (every new connection, the NAT uniqueness probe, the
//! clash checks of insertion) costs one cache miss per node, one after the
//! other. Here the links of a bucket sit in the bucket's cache line with a
//! tag each, and only the entries whose tag matches the hash are read
//! (a wrong match is 1 in 65 536 per slot): a lookup reads one line, plus
//! the entry it finds.
//!
//! A full bucket overflows into the next ones; each bucket counts the
//! links that passed it (F14's outbound overflow count), so a probe stops
//! at the first bucket nobody overflowed past and a removal leaves no
//! hole that hides a link further on.

/// Links per bucket.
pub(crate) const SLOTS: usize = 10;

/// One cache line, as eight words so that the array is allocated zeroed
/// (the system hands out untouched pages, which `madvise` can still make
/// huge) and the tags are compared four at a time:
/// words 0-2 are twelve 16-bit lanes, the tags of slots 0-9, then the
/// overflow count (lane 10: links whose home is this bucket or one before
/// it and that are stored after it) and the used mask (lane 11: bit `s`
/// set when slot `s` holds a link); words 3-7 are the ten 32-bit links.
type Bucket = [u64; 8];

const FULL: u16 = (1 << SLOTS) - 1;
const OVERFLOW: usize = 10;
const USED: usize = 11;

#[inline]
fn lane(k: &Bucket, i: usize) -> u16 {
    (k[(i / 4) & 7] >> (16 * (i % 4))) as u16
}

#[inline]
fn set_lane(k: &mut Bucket, i: usize, v: u16) {
    let w = &mut k[(i / 4) & 7];
    let sh = 16 * (i % 4);
    *w = (*w & !(0xffff << sh)) | (u64::from(v) << sh);
}

#[inline]
fn used(k: &Bucket) -> u16 {
    lane(k, USED) & FULL
}

#[inline]
fn overflow(k: &Bucket) -> u16 {
    lane(k, OVERFLOW)
}

#[inline]
fn link(k: &Bucket, s: usize) -> u32 {
    (k[(3 + s / 2) & 7] >> (32 * (s % 2))) as u32
}

#[inline]
fn set_link(k: &mut Bucket, s: usize, l: u32) {
    let w = &mut k[(3 + s / 2) & 7];
    let sh = 32 * (s % 2);
    *w = (*w & !(0xffff_ffff << sh)) | (u64::from(l) << sh);
}

/// The used slots of `k` whose tag is `t`: each word's four lanes at once
/// (a lane is zero after the xor exactly when it matched).
#[inline]
fn matches(k: &Bucket, t: u16) -> u16 {
    const LO: u64 = 0x7fff_7fff_7fff_7fff;
    const HI: u64 = 0x8000_8000_8000_8000;
    // Bits 0, 16, 32, 48 to bits 48-51.
    const GATHER: u64 = 0x0001_0002_0004_0008;
    let pat = u64::from(t) * 0x0001_0001_0001_0001;
    let u = used(k);
    let mut m = 0u64;
    // Slots fill from the lowest: the words past the last used slot are
    // not looked at (a bucket about half full needs one or two).
    for (w, &word) in k.iter().take(3).enumerate() {
        if u >> (4 * w) == 0 {
            break;
        }
        let x = word ^ pat;
        let z = !(((x & LO) + LO) | x) & HI;
        m |= (((z >> 15).wrapping_mul(GATHER) >> 48) & 0xf) << (4 * w);
    }
    (m as u16) & u
}

/// A hash index from 64-bit hashes to `u32` links.
pub(crate) struct Index {
    /// The buckets, `n` of them from word `off`: a `Vec<u64>` is allocated
    /// zeroed, but only 8-aligned, and a bucket must be one cache line
    /// (aligned to 64), else its links are a second miss.
    words: Vec<u64>,
    off: usize,
    n: usize,
}

#[inline]
fn tag(h: u64) -> u16 {
    h as u16
}

impl Index {
    /// An index of `n` buckets (at least one).
    pub(crate) fn new(n: usize) -> Index {
        let n = n.max(1);
        let words = vec![0u64; 8 * n + 7];
        let off = (64 - words.as_ptr() as usize % 64) % 64 / 8;
        Index { words, off, n }
    }

    #[inline]
    fn bucket(&self, b: usize) -> Option<&Bucket> {
        let i = self.off + 8 * b;
        self.words.get(i..i + 8)?.try_into().ok()
    }

    #[inline]
    fn bucket_mut(&mut self, b: usize) -> Option<&mut Bucket> {
        let i = self.off + 8 * b;
        self.words.get_mut(i..i + 8)?.try_into().ok()
    }

    /// Number of buckets.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// The overflow count of bucket `d` past bucket `b`.
    pub(crate) fn overflow_at(&self, b: usize, d: usize) -> u16 {
        self.bucket((b + d) % self.n).map_or(0, overflow)
    }

    /// Bytes of the bucket array.
    pub(crate) fn bytes(&self) -> usize {
        self.words.capacity() * 8
    }

    /// (address, bytes) of the bucket array.
    pub(crate) fn region(&self) -> (usize, usize) {
        (self.words.as_ptr() as usize, self.bytes())
    }

    /// `reciprocal_scale()` of the hash's high 32 bits: the home bucket.
    #[inline]
    pub(crate) fn home(&self, h: u64) -> usize {
        (((h >> 32) * self.n as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.n {
            0
        } else {
            b + 1
        }
    }

    /// Starts loading the home bucket of `h` ([`crate::prefetch`]), to have
    /// its line in the cache when it is needed.
    #[inline]
    pub(crate) fn prefetch(&self, h: u64) {
        if let Some(k) = self.bucket(self.home(h)) {
            crate::prefetch(k);
        }
    }

    /// The first link, in probe order (home bucket, then the buckets its
    /// overflow reached), whose tag matches `h` and that `f` accepts: the
    /// caller compares the keys (and may return false to see them all).
    #[inline]
    pub(crate) fn find(&self, h: u64, mut f: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(h);
        let mut b = self.home(h);
        for _ in 0..self.n {
            let k = self.bucket(b)?;
            let mut m = matches(k, t);
            while m != 0 {
                let s = m.trailing_zeros() as usize;
                m &= m - 1;
                let l = link(k, s);
                if f(l) {
                    return Some(l);
                }
            }
            if overflow(k) == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Number of links stored from the home bucket of `h` along its probe
    /// sequence (nodes a lookup may visit).
    #[cfg(test)]
    pub(crate) fn chain_len(&self, h: u64) -> usize {
        let mut b = self.home(h);
        let mut n = 0;
        for _ in 0..self.n {
            let Some(k) = self.bucket(b) else { break };
            n += used(k).count_ones() as usize;
            if overflow(k) == 0 {
                break;
            }
            b = self.next(b);
        }
        n
    }

    /// Store `link` for hash `h` in the first free slot from its home
    /// bucket, at most `max_probe` buckets past it. Returns how many
    /// buckets past; `None` when those are all full (nothing changes).
    pub(crate) fn insert(&mut self, h: u64, l: u32, max_probe: usize) -> Option<usize> {
        let home = self.home(h);
        let mut b = home;
        let mut dist = None;
        for d in 0..=max_probe.min(self.n - 1) {
            if self.bucket(b).is_some_and(|k| used(k) != FULL) {
                dist = Some(d);
                break;
            }
            b = self.next(b);
        }
        let d = dist?;
        let k = self.bucket_mut(b)?;
        let u = used(k);
        let s = (!u).trailing_zeros() as usize;
        set_lane(k, USED, u | (1 << s));
        set_lane(k, s, tag(h));
        set_link(k, s, l);
        let mut o = home;
        for _ in 0..d {
            if let Some(k) = self.bucket_mut(o) {
                set_lane(k, OVERFLOW, overflow(k).saturating_add(1));
            }
            o = self.next(o);
        }
        Some(d)
    }

    /// Where link `l`, stored for hash `h`, is: (bucket, slot, buckets past
    /// its home).
    #[inline(always)]
    fn locate(&self, h: u64, l: u32) -> Option<(usize, usize, usize)> {
        let t = tag(h);
        let mut b = self.home(h);
        for d in 0..self.n {
            let k = self.bucket(b)?;
            let mut m = matches(k, t);
            while m != 0 {
                let s = m.trailing_zeros() as usize;
                m &= m - 1;
                if link(k, s) == l {
                    return Some((b, s, d));
                }
            }
            if overflow(k) == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Remove link `l`, stored for hash `h`. Returns whether it was there.
    pub(crate) fn remove(&mut self, h: u64, l: u32) -> bool {
        let Some((b, s, d)) = self.locate(h, l) else {
            return false;
        };
        if let Some(k) = self.bucket_mut(b) {
            // The used bit alone says a slot is empty.
            set_lane(k, USED, used(k) & !(1 << s));
        }
        let mut o = self.home(h);
        for _ in 0..d {
            if let Some(k) = self.bucket_mut(o) {
                set_lane(k, OVERFLOW, overflow(k).saturating_sub(1));
            }
            o = self.next(o);
        }
        true
    }

    /// Put link `new` in the place of link `old`, stored for hash `h` (the
    /// slot keeps its tag: `new` must be stored for the same hash). Returns
    /// whether `old` was there.
    pub(crate) fn replace(&mut self, h: u64, old: u32, new: u32) -> bool {
        let Some((b, s, _)) = self.locate(h, old) else {
            return false;
        };
        if let Some(k) = self.bucket_mut(b) {
            set_link(k, s, new);
        }
        true
    }

    /// Every link stored in bucket `d` past bucket `b`, whatever its tag.
    pub(crate) fn links_at(&self, b: usize, d: usize) -> impl Iterator<Item = u32> + '_ {
        let k = self.bucket((b + d) % self.n).copied().unwrap_or([0; 8]);
        let u = used(&k);
        (0..SLOTS)
            .filter(move |&s| u & (1 << s) != 0)
            .map(move |s| link(&k, s))
    }

    /// Drop every link.
    #[cfg(test)]
    pub(crate) fn clear(&mut self) {
        self.words.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        let mut k: Bucket = [0; 8];
        for s in 0..SLOTS {
            set_lane(&mut k, s, 0x1234 ^ s as u16);
            set_link(&mut k, s, 1000 + s as u32);
        }
        set_lane(&mut k, USED, FULL);
        set_lane(&mut k, OVERFLOW, 7);
        for s in 0..SLOTS {
            assert_eq!(matches(&k, 0x1234 ^ s as u16), 1 << s);
            assert_eq!(link(&k, s), 1000 + s as u32);
        }
        assert_eq!(matches(&k, 7), 0, "the overflow lane is not a tag");
        assert_eq!(overflow(&k), 7);
        set_lane(&mut k, USED, FULL & !2);
        assert_eq!(matches(&k, 0x1235), 0, "an unused slot does not match");
    }

    /// Hashes that all have home bucket 0 of a 4-bucket index.
    fn h0(i: u64) -> u64 {
        i & 0xffff_ffff
    }

    #[test]
    fn overflow_is_found_after_a_removal_in_the_home_bucket() {
        let mut x = Index::new(4);
        for i in 0..(SLOTS as u64 + 3) {
            assert!(x.insert(h0(i), i as u32, 8).is_some());
        }
        assert_eq!(x.chain_len(h0(0)), SLOTS + 3);
        // Remove one from the home bucket: the overflowed links stay findable.
        assert!(x.remove(h0(2), 2));
        for i in (0..(SLOTS as u64 + 3)).filter(|&i| i != 2) {
            assert!(
                x.find(h0(i), |l| l == i as u32).is_some(),
                "link {i} lost after a removal"
            );
        }
        assert!(x.find(h0(2), |l| l == 2).is_none());
        // Remove the overflowed ones: the home bucket's count goes back to 0.
        for i in SLOTS as u64..(SLOTS as u64 + 3) {
            assert!(x.remove(h0(i), i as u32));
        }
        assert_eq!(overflow(x.bucket(0).unwrap()), 0);
        assert_eq!(x.chain_len(h0(0)), SLOTS - 1);
        assert!(!x.remove(h0(99), 99));
    }

    #[test]
    fn insert_respects_the_probe_bound() {
        let mut x = Index::new(4);
        for i in 0..SLOTS as u64 {
            assert_eq!(x.insert(h0(i), i as u32, 0), Some(0));
        }
        assert_eq!(x.insert(h0(50), 50, 0), None);
        assert_eq!(
            overflow(x.bucket(0).unwrap()),
            0,
            "a refused insert changes nothing"
        );
        assert_eq!(x.insert(h0(50), 50, 1), Some(1));
        // The last bucket wraps to the first.
        let last = (3u64 << 62) | 7;
        assert_eq!(x.home(last), 3);
        for i in 0..SLOTS as u32 {
            x.insert(last, 100 + i, 0).unwrap();
        }
        assert_eq!(x.insert(last, 200, 4), Some(2), "0 is full too");
        assert!(x.find(last, |l| l == 200).is_some());
        assert!(x.remove(last, 200));
        assert_eq!(overflow(x.bucket(3).unwrap()), 0);
        assert_eq!(
            overflow(x.bucket(0).unwrap()),
            1,
            "link 50 is still past bucket 0"
        );
    }

    #[test]
    fn find_offers_only_matching_tags_and_links_at_all() {
        let mut x = Index::new(8);
        x.insert(0x1234, 1, 1).unwrap();
        x.insert(0x1235, 2, 1).unwrap();
        // Only the link of the matching tag is offered.
        assert_eq!(x.find(0x1234, |_| true), Some(1));
        assert_eq!(x.find(0x1234, |l| l != 1), None);
        assert_eq!(x.find(0x1235, |_| true), Some(2));
        assert_eq!(x.find(0x1235, |l| l != 2), None);
        let mut all: Vec<u32> = x.links_at(x.home(0x1234), 0).collect();
        all.sort_unstable();
        assert_eq!(all, vec![1, 2]);
        x.clear();
        assert_eq!(x.find(0x1234, |_| true), None);
    }

    /// Random inserts and removals in a small, crowded index against a
    /// list of what is in it: every stored link is found by its hash, no
    /// removed or replaced one is, and the overflow counts return to zero when empty.
    #[test]
    fn random_operations_match_a_model() {
        let mut x = Index::new(5);
        let mut model: Vec<(u64, u32)> = Vec::new();
        let mut r = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        for step in 0..20_000u32 {
            let v = rnd();
            if v % 7 == 0 && !model.is_empty() {
                // A link replaced in its place (the NAT source index's
                // head moving to another entry of the same source).
                let k = (v % model.len() as u64) as usize;
                let (h, l) = model[k];
                let new = step | 1 << 31;
                assert!(x.replace(h, l, new), "step {step}: link {l} not replaced");
                assert!(
                    !x.replace(h, l, new),
                    "step {step}: link {l} replaced twice"
                );
                model[k].1 = new;
            } else if v % 3 != 0 && model.len() < 45 {
                // Few distinct tags, so that probes see wrong matches too.
                let h = (rnd() & !0xffff) | (v & 3);
                match x.insert(h, step, 2) {
                    Some(_) => model.push((h, step)),
                    None => assert!(
                        (0..3).all(|d| x.links_at(x.home(h), d).count() == SLOTS),
                        "refused with room within the bound"
                    ),
                }
            } else if !model.is_empty() {
                let (h, l) = model.swap_remove((v % model.len() as u64) as usize);
                assert!(x.remove(h, l), "step {step}: link {l} not removable");
                assert!(x.find(h, |m| m == l).is_none());
            }
            for &(h, l) in &model {
                assert!(
                    x.find(h, |m| m == l).is_some(),
                    "step {step}: link {l} lost"
                );
            }
        }
        for (h, l) in model.drain(..) {
            assert!(x.remove(h, l));
        }
        assert!((0..x.len()).all(|b| {
            let k = x.bucket(b).unwrap();
            overflow(k) == 0 && used(k) == 0
        }));
        assert_eq!(x.words.as_ptr().wrapping_add(x.off) as usize % 64, 0);
        assert_eq!(x.len(), 5);
    }
}
