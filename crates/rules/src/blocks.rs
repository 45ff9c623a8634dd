//! Port blocks of an SNAT pool (fastables' `--deterministic`, `--block-size`
//! and `--max-blocks` options of SNAT): how a pool of addresses and ports is
//! cut into blocks, and the deterministic mapping of RFC 7422 between inside
//! addresses and blocks, both ways.
//!
//! Pure arithmetic on the rule's options: the data plane computes a
//! connection's range with it, `check` refuses a layout that cannot hold its
//! subscribers, and `fastables nat map|owner` answer from the rules file
//! alone.
//!
//! The deterministic layout is VPP det44's: the `n` inside addresses are
//! spread evenly over the `a` pool addresses, `s = ceil(n / a)` per public
//! address, in order (inside offset `i` maps to pool address `i / s` and to
//! its block `i % s`); blocks start at the low end of the port range.

use std::fmt;
use std::net::Ipv4Addr;

use crate::model::{NatRange, PortBlocks};

/// The ports of a pool when `--to-source` gives none: the well-known ports
/// stay out, as in VPP det44 and most CGNs.
pub const DEFAULT_PORTS: (u16, u16) = (1024, 65535);

/// Dynamic blocks a subscriber may hold at once when `--max-blocks` is not
/// given (Junos' `max-blocks-per-address` default).
pub const DEFAULT_MAX_BLOCKS: u16 = 8;

/// Blocks a dynamic pool may have: each worker keeps state for every
/// block (the conntrack crate's `MAX_POOL_BLOCKS`).
pub const MAX_DYNAMIC_BLOCKS: u64 = 1 << 20;

/// How the blocks of a pool are handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One computed block per inside address (`lo..=hi`, host order);
    /// `per_addr` inside addresses share one public address.
    Deterministic { lo: u32, hi: u32, per_addr: u32 },
    /// Blocks on demand, at most `max_blocks` per subscriber at once.
    Dynamic { max_blocks: u16 },
}

/// An SNAT pool cut into blocks: addresses `pool.0..=pool.1`, ports
/// `ports.0..=ports.1`, blocks of `size` ports from the low port on,
/// `per_addr` blocks on each address. Host byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub pool: (u32, u32),
    pub ports: (u16, u16),
    pub size: u16,
    pub per_addr: u32,
    pub mode: Mode,
}

/// One block: a public address and its ports `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    pub addr: u32,
    pub lo: u16,
    pub hi: u16,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ports {}-{}",
            Ipv4Addr::from(self.addr),
            self.lo,
            self.hi
        )
    }
}

impl Layout {
    /// The layout of an SNAT range with port-block options; `Ok(None)` for
    /// a range without them. The error says what to change.
    pub fn of(range: &NatRange) -> Result<Option<Layout>, String> {
        let Some(b) = range.blocks else {
            return Ok(None);
        };
        let Some((a, z)) = range.addr else {
            return Err("port blocks need pool addresses in --to-source (a[-b] or a/len)".into());
        };
        let ports = range.ports.map_or(DEFAULT_PORTS, |p| (p.lo, p.hi));
        Layout::new((u32::from(a), u32::from(z)), ports, &b).map(Some)
    }

    /// The layout of pool `pool` with ports `ports` cut as `b` says.
    pub fn new(pool: (u32, u32), ports: (u16, u16), b: &PortBlocks) -> Result<Layout, String> {
        if pool.0 > pool.1 {
            return Err(format!(
                "pool {}-{} is reversed",
                Ipv4Addr::from(pool.0),
                Ipv4Addr::from(pool.1)
            ));
        }
        let nports = u32::from(ports.1) - u32::from(ports.0) + 1;
        let naddr = u64::from(pool.1 - pool.0) + 1;
        if b.size == Some(0) {
            return Err("--block-size must be at least 1".into());
        }
        match b.inside {
            Some((lo, hi)) => {
                let (lo, hi) = (u32::from(lo), u32::from(hi));
                if lo > hi {
                    return Err(format!(
                        "inside range {}-{} is reversed",
                        Ipv4Addr::from(lo),
                        Ipv4Addr::from(hi)
                    ));
                }
                if b.max_blocks.is_some() {
                    return Err(
                        "--max-blocks is for dynamic blocks: a deterministic subscriber has one block"
                            .into(),
                    );
                }
                let n = u64::from(hi - lo) + 1;
                let per_addr = n.div_ceil(naddr);
                let size = match b.size {
                    Some(s) => u64::from(s),
                    None => (u64::from(nports) / per_addr).min(u64::from(u16::MAX)),
                };
                if size == 0 || per_addr * size > u64::from(nports) {
                    return Err(format!(
                        "the pool is too small: {n} inside addresses over {naddr} public \
                         addresses are {per_addr} per address, and {per_addr} blocks of {} \
                         ports need {} ports where {}-{} has {nports}: use a larger pool, a \
                         smaller --block-size or a wider port range",
                        size.max(1),
                        per_addr * size.max(1),
                        ports.0,
                        ports.1
                    ));
                }
                Ok(Layout {
                    pool,
                    ports,
                    size: size as u16,
                    per_addr: per_addr as u32,
                    mode: Mode::Deterministic {
                        lo,
                        hi,
                        per_addr: per_addr as u32,
                    },
                })
            }
            None => {
                let Some(size) = b.size else {
                    return Err("dynamic port blocks need --block-size".into());
                };
                if u32::from(size) > nports {
                    return Err(format!(
                        "--block-size {size} is larger than the port range {}-{} ({nports} ports)",
                        ports.0, ports.1
                    ));
                }
                let max_blocks = b.max_blocks.unwrap_or(DEFAULT_MAX_BLOCKS);
                if max_blocks == 0 {
                    return Err("--max-blocks must be at least 1".into());
                }
                let per_addr = nports / u32::from(size);
                let blocks = naddr * u64::from(per_addr);
                if blocks > MAX_DYNAMIC_BLOCKS {
                    return Err(format!(
                        "the pool has {blocks} blocks; dynamic pools have at most \
                         {MAX_DYNAMIC_BLOCKS}: use larger blocks or a smaller pool"
                    ));
                }
                Ok(Layout {
                    pool,
                    ports,
                    size,
                    per_addr,
                    mode: Mode::Dynamic { max_blocks },
                })
            }
        }
    }

    /// Public addresses in the pool.
    pub fn addresses(&self) -> u32 {
        self.pool.1.wrapping_sub(self.pool.0).wrapping_add(1)
    }

    /// Blocks in the pool.
    pub fn blocks(&self) -> u64 {
        u64::from(self.addresses().max(1)) * u64::from(self.per_addr)
    }

    /// Block `k` of the pool (address-major), if there is one.
    pub fn block(&self, k: u64) -> Option<Block> {
        if k >= self.blocks() || self.per_addr == 0 {
            return None;
        }
        let addr = self.pool.0 + (k / u64::from(self.per_addr)) as u32;
        let lo =
            u32::from(self.ports.0) + (k % u64::from(self.per_addr)) as u32 * u32::from(self.size);
        let hi = lo + u32::from(self.size) - 1;
        Some(Block {
            addr,
            lo: lo as u16,
            hi: hi as u16,
        })
    }

    /// The number of the block holding public `addr`:`port`, if any.
    pub fn block_index(&self, addr: u32, port: u16) -> Option<u64> {
        if addr < self.pool.0 || addr > self.pool.1 || port < self.ports.0 || port > self.ports.1 {
            return None;
        }
        let k = u32::from(port - self.ports.0) / u32::from(self.size.max(1));
        (k < self.per_addr)
            .then(|| u64::from(addr - self.pool.0) * u64::from(self.per_addr) + u64::from(k))
    }

    /// Whether public `addr` is in the pool.
    pub fn contains(&self, addr: u32) -> bool {
        addr >= self.pool.0 && addr <= self.pool.1
    }

    /// Deterministic mode: the block of inside address `inside`, or `None`
    /// outside the inside range (and in dynamic mode).
    pub fn map(&self, inside: u32) -> Option<Block> {
        let Mode::Deterministic { lo, hi, .. } = self.mode else {
            return None;
        };
        if inside < lo || inside > hi {
            return None;
        }
        // The inside offset is the block number: address-major, `per_addr`
        // blocks on each address.
        self.block(u64::from(inside - lo))
    }

    /// Deterministic mode: the inside address whose block holds public
    /// `addr`:`port` (the reverse of [`Layout::map`]), if any.
    pub fn owner(&self, addr: u32, port: u16) -> Option<u32> {
        let Mode::Deterministic { lo, hi, .. } = self.mode else {
            return None;
        };
        let k = self.block_index(addr, port)?;
        let inside = u64::from(lo) + k;
        (inside <= u64::from(hi)).then_some(inside as u32)
    }
}

/// The port-block pools of a table's rules that overlap, as (line, line of
/// the earlier rule, message): a public address and port must belong to one
/// pool for the mapping to be answered, and for a block to be found again.
pub fn overlaps(rules: &[(u32, &NatRange)]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let pools: Vec<(u32, Layout)> = rules
        .iter()
        .filter_map(|(line, r)| Layout::of(r).ok().flatten().map(|l| (*line, l)))
        .collect();
    for (i, (line, a)) in pools.iter().enumerate() {
        if let Some((first, _)) = pools[..i].iter().find(|(_, b)| {
            a.pool.0 <= b.pool.1
                && b.pool.0 <= a.pool.1
                && a.ports.0 <= b.ports.1
                && b.ports.0 <= a.ports.1
                && a != b
        }) {
            out.push((
                *line,
                format!(
                    "its port blocks overlap those of the rule at line {first}: give each \
                     port-block rule its own pool (the same options again share one)"
                ),
            ));
        }
    }
    out
}

/// An address range as the rules print it: `a/len` when it is exactly a
/// prefix, else `a-b` (or `a` alone).
pub fn range_text(lo: Ipv4Addr, hi: Ipv4Addr) -> String {
    let (l, h) = (u32::from(lo), u32::from(hi));
    if l == h {
        return lo.to_string();
    }
    let span = h.wrapping_sub(l).wrapping_add(1);
    if l <= h && span.is_power_of_two() && l & (span - 1) == 0 {
        return format!("{lo}/{}", 32 - span.trailing_zeros());
    }
    if l == 0 && h == u32::MAX {
        return format!("{lo}/0");
    }
    format!("{lo}-{hi}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PortRange;
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn det(pool: (&str, &str), inside: (&str, &str), size: Option<u16>) -> Result<Layout, String> {
        let r = NatRange {
            addr: Some((ip(pool.0), ip(pool.1))),
            ports: None,
            blocks: Some(PortBlocks {
                inside: Some((ip(inside.0), ip(inside.1))),
                size,
                max_blocks: None,
            }),
        };
        Layout::of(&r).map(|l| l.unwrap())
    }

    #[test]
    fn deterministic_layout_of_the_readme_example() {
        // 256 subscribers over 16 addresses: 16 per address.
        let l = det(
            ("203.0.113.0", "203.0.113.15"),
            ("172.18.0.0", "172.18.0.255"),
            Some(2016),
        )
        .unwrap();
        assert_eq!(l.per_addr, 16);
        let b = l.map(u32::from(ip("172.18.0.2"))).unwrap();
        assert_eq!(
            b,
            Block {
                addr: u32::from(ip("203.0.113.0")),
                lo: 1024 + 2 * 2016,
                hi: 1024 + 3 * 2016 - 1
            }
        );
        let b = l.map(u32::from(ip("172.18.0.17"))).unwrap();
        assert_eq!((b.addr, b.lo), (u32::from(ip("203.0.113.1")), 1024 + 2016));
        assert_eq!(
            l.owner(u32::from(ip("203.0.113.1")), 1024 + 2016 + 7),
            Some(u32::from(ip("172.18.0.17")))
        );
        assert_eq!(l.map(u32::from(ip("172.18.1.0"))), None);
        // Beyond the 16 blocks of an address: nobody's.
        assert_eq!(
            l.owner(u32::from(ip("203.0.113.1")), 1024 + 16 * 2016),
            None
        );
        assert_eq!(l.owner(u32::from(ip("203.0.113.1")), 80), None);
        // Without --block-size: the whole port range shared by 16.
        let l = det(
            ("203.0.113.0", "203.0.113.15"),
            ("172.18.0.0", "172.18.0.255"),
            None,
        )
        .unwrap();
        assert_eq!(l.size, 64512 / 16);
    }

    #[test]
    fn deterministic_layout_refuses_a_pool_too_small() {
        let e = det(
            ("203.0.113.0", "203.0.113.3"),
            ("172.18.0.0", "172.18.0.255"),
            Some(2016),
        )
        .unwrap_err();
        assert!(e.contains("too small"), "{e}");
        assert!(e.contains("64 per address"), "{e}");
        // One port each is still a layout: 64512 per address at most.
        assert!(det(("1.1.1.1", "1.1.1.1"), ("10.0.0.0", "10.0.251.255"), None).is_ok());
        assert!(det(("1.1.1.1", "1.1.1.1"), ("10.0.0.0", "10.0.252.0"), None).is_err());
    }

    #[test]
    fn dynamic_layout() {
        let r = NatRange {
            addr: Some((ip("198.51.100.1"), ip("198.51.100.2"))),
            ports: Some(PortRange { lo: 2000, hi: 2999 }),
            blocks: Some(PortBlocks {
                inside: None,
                size: Some(300),
                max_blocks: Some(2),
            }),
        };
        let l = Layout::of(&r).unwrap().unwrap();
        assert_eq!(l.per_addr, 3);
        assert_eq!(l.blocks(), 6);
        assert_eq!(l.mode, Mode::Dynamic { max_blocks: 2 });
        assert_eq!(
            l.block(4),
            Some(Block {
                addr: u32::from(ip("198.51.100.2")),
                lo: 2300,
                hi: 2599
            })
        );
        assert_eq!(l.block(6), None);
        assert_eq!(l.block_index(u32::from(ip("198.51.100.2")), 2599), Some(4));
        // The 100 ports past the last whole block belong to none.
        assert_eq!(l.block_index(u32::from(ip("198.51.100.2")), 2900), None);
        assert_eq!(l.map(0), None);
    }

    #[test]
    fn range_text_prefers_prefixes() {
        assert_eq!(range_text(ip("10.0.0.0"), ip("10.0.0.255")), "10.0.0.0/24");
        assert_eq!(
            range_text(ip("10.0.0.1"), ip("10.0.0.4")),
            "10.0.0.1-10.0.0.4"
        );
        assert_eq!(range_text(ip("10.0.0.1"), ip("10.0.0.1")), "10.0.0.1");
        assert_eq!(
            range_text(ip("0.0.0.0"), ip("255.255.255.255")),
            "0.0.0.0/0"
        );
    }

    proptest! {
        /// The deterministic mapping is a bijection between the inside range
        /// and its blocks: every block inside the pool and its port range,
        /// blocks of different subscribers disjoint, and the reverse of the
        /// forward of any port of a block the subscriber itself.
        #[test]
        fn deterministic_mapping_is_a_bijection(
            pool_base in 0x0a00_0000u32..0x0b00_0000,
            naddr in 1u32..9,
            inside_base in 0xac10_0000u32..0xac20_0000,
            ninside in 1u32..600,
            lo in 1024u16..30000,
            span in 100u16..35000,
            size in proptest::option::of(1u16..600),
        ) {
            let hi = lo.saturating_add(span);
            let b = PortBlocks {
                inside: Some((Ipv4Addr::from(inside_base), Ipv4Addr::from(inside_base + ninside - 1))),
                size,
                max_blocks: None,
            };
            let Ok(l) = Layout::new((pool_base, pool_base + naddr - 1), (lo, hi), &b) else {
                // Refused only when the blocks cannot fit.
                let per = u64::from(ninside.div_ceil(naddr));
                let need = per * u64::from(size.unwrap_or(1));
                prop_assert!(need > u64::from(hi - lo) + 1 || size.is_none());
                return Ok(());
            };
            let mut seen = std::collections::HashSet::new();
            for i in 0..ninside {
                let inside = inside_base + i;
                let blk = l.map(inside).expect("every inside address has a block");
                prop_assert!(blk.addr >= pool_base && blk.addr < pool_base + naddr);
                prop_assert!(blk.lo >= lo && blk.hi <= hi && blk.lo <= blk.hi);
                prop_assert_eq!(u32::from(blk.hi - blk.lo) + 1, u32::from(l.size));
                prop_assert!(seen.insert((blk.addr, blk.lo)), "a block given twice");
                for p in [blk.lo, blk.hi, blk.lo + (blk.hi - blk.lo) / 2] {
                    prop_assert_eq!(l.owner(blk.addr, p), Some(inside));
                }
            }
            prop_assert_eq!(l.map(inside_base + ninside), None);
            prop_assert_eq!(l.map(inside_base.wrapping_sub(1)), None);
            // Every public address:port has at most one owner, the one whose
            // block holds it.
            for a in pool_base..pool_base + naddr {
                for p in (lo..=hi).step_by(97) {
                    if let Some(o) = l.owner(a, p) {
                        let blk = l.map(o).unwrap();
                        prop_assert!(blk.addr == a && blk.lo <= p && p <= blk.hi);
                    }
                }
            }
        }
    }
}
