//! The compiled form of a ruleset: one flat array of entries per instance,
//! each split into the fields the rule scan reads for every rule (`Hot`) and
//! the rest (`Cold`: side-table matches and what the entry does), plus what
//! maps entries back to the model (tables, chains, lines, targets).

use crate::ctx::Needs;
use crate::matches::{limit::Bucket, Ext};
use crate::model::{Ipv4Net, Neg, PortRange, RejectWith, Table, Target};
use crate::targets::Action;

/// Interface mask bit of "no interface" (the kernel compares an empty name).
pub(super) const IF_NONE: u64 = 1 << 63;
/// Interface mask bit of an interface index that has no configured name.
pub(super) const IF_UNKNOWN: u64 = 1 << 62;
/// Interfaces an interface match can address (bits 0..62 of the masks).
pub const MAX_IFACES: usize = 62;

// `Hot::flags`: which of the inline criteria are present or inverted.
pub(super) const F_SRC_INV: u16 = 1 << 0;
pub(super) const F_DST_INV: u16 = 1 << 1;
pub(super) const F_PROTO_INV: u16 = 1 << 2;
pub(super) const F_FRAG: u16 = 1 << 3;
pub(super) const F_FRAG_INV: u16 = 1 << 4;
/// The inline port/flag fields are valid (a leading `-m tcp` / `-m udp`).
pub(super) const F_L4: u16 = 1 << 5;
pub(super) const F_SPORT_INV: u16 = 1 << 6;
pub(super) const F_DPORT_INV: u16 = 1 << 7;
pub(super) const F_TFL_INV: u16 = 1 << 8;
/// The first side-table match is fully represented inline: skip it when the
/// packet's transport header is readable.
pub(super) const F_EXT_SKIP: u16 = 1 << 9;

/// What a matching entry does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Act {
    Continue,
    Accept,
    Drop,
    Reject(RejectWith),
    Return,
    Jump(u32),
    Goto(u32),
    /// A NAT target: the NAT stage binds the connection (`Verdict::Nat`).
    Nat,
    /// A non-terminating target; the scan goes on after it.
    Apply(Action),
}

/// The criteria of an entry that reject most non-matching rules, packed
/// densely (48 bytes) for the scan. Interface masks have bit `i` for
/// interface index `i`, plus [`IF_NONE`] and [`IF_UNKNOWN`], inversion folded in.
#[derive(Debug, Clone)]
pub(crate) struct Hot {
    pub(super) src: u32,
    pub(super) smsk: u32,
    pub(super) dst: u32,
    pub(super) dmsk: u32,
    pub(super) in_mask: u64,
    pub(super) out_mask: u64,
    pub(super) sport: [u16; 2],
    pub(super) dport: [u16; 2],
    pub(super) flags: u16,
    pub(super) proto: u8,
    pub(super) tfl_mask: u8,
    pub(super) tfl_comp: u8,
}

/// The rest of an entry: side-table matches and the target.
#[derive(Debug, Clone)]
pub(super) struct Cold {
    pub(super) ext_start: u32,
    pub(super) ext_end: u32,
    pub(super) act: Act,
}

impl Cold {
    /// No side-table match.
    pub(super) fn always(act: Act) -> Cold {
        Cold {
            ext_start: 0,
            ext_end: 0,
            act,
        }
    }
}

impl Hot {
    /// No criteria: every packet matches (policy entries, implicit RETURN,
    /// and where a rule's compilation starts).
    pub(super) fn always() -> Hot {
        Hot {
            src: 0,
            smsk: 0,
            dst: 0,
            dmsk: 0,
            in_mask: !0,
            out_mask: !0,
            sport: [0, u16::MAX],
            dport: [0, u16::MAX],
            flags: 0,
            proto: 0,
            tfl_mask: 0,
            tfl_comp: 0,
        }
    }

    /// Stores a leading tcp/udp match's ports and flags inline; `complete`:
    /// they are the whole match, so the scan skips its side-table copy when
    /// the transport header is readable.
    pub(crate) fn set_l4(
        &mut self,
        sport: Range16,
        dport: Range16,
        fl_mask: u8,
        fl_comp: u8,
        fl_inv: bool,
        complete: bool,
    ) {
        self.flags |= F_L4;
        self.sport = [sport.lo, sport.hi];
        self.dport = [dport.lo, dport.hi];
        if sport.inv {
            self.flags |= F_SPORT_INV;
        }
        if dport.inv {
            self.flags |= F_DPORT_INV;
        }
        self.tfl_mask = fl_mask;
        self.tfl_comp = fl_comp;
        if fl_inv {
            self.flags |= F_TFL_INV;
        }
        if complete {
            self.flags |= F_EXT_SKIP;
        }
    }
}

/// An inclusive range with inversion, as the kernel's `port_match`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range16 {
    lo: u16,
    hi: u16,
    inv: bool,
}

impl Range16 {
    pub(crate) fn from(n: &Neg<PortRange>) -> Range16 {
        Range16 {
            lo: n.val.lo,
            hi: n.val.hi,
            inv: n.inv,
        }
    }
    pub(crate) fn any() -> Range16 {
        Range16 {
            lo: 0,
            hi: u16::MAX,
            inv: false,
        }
    }
    #[inline(always)]
    pub(crate) fn test(&self, v: u16) -> bool {
        (v >= self.lo && v <= self.hi) != self.inv
    }
}

/// A masked address test with inversion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Net {
    pub(crate) addr: u32,
    pub(crate) mask: u32,
    inv: bool,
}

impl Net {
    pub(crate) fn from(n: &Neg<Ipv4Net>) -> Net {
        let mask = n.val.mask;
        Net {
            addr: u32::from(n.val.addr) & mask,
            mask,
            inv: n.inv,
        }
    }
    #[inline(always)]
    pub(crate) fn test(&self, a: u32) -> bool {
        ((a ^ self.addr) & self.mask == 0) != self.inv
    }
}

/// Where a model chain landed in the flat array (for counters).
#[derive(Debug, Clone, Copy)]
pub(super) struct ChainLayout {
    pub(super) rules_start: u32,
    pub(super) nrules: u32,
    /// The policy entry of a built-in chain.
    pub(super) policy: Option<u32>,
}

/// Per-entry metadata for [`CompiledRuleset::rule_info`].
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryInfo {
    pub(super) table: Table,
    pub(super) chain: u32,
    pub(super) index: u32,
    pub(super) line: u32,
}

/// Where a rule comes from: table, chain, 1-based position in the chain and
/// source line. Policy entries and the implicit RETURN at the end of a user
/// chain have `index` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo<'a> {
    pub table: Table,
    pub chain: &'a str,
    pub index: u32,
    pub line: u32,
}

/// Which kernel code to follow where iptables-legacy and iptables-nft install
/// different implementations of the same rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// The xtables modules (iptables-legacy): `-m limit` is `xt_limit.c`
    /// (credits refilled per jiffy at [`HZ`](super::HZ)).
    #[default]
    Xtables,
    /// What iptables-nft 1.8.9 installs: `-m limit` becomes nftables' native
    /// `limit rate N/unit burst B` (`nft_limit.c`, a nanosecond token bucket).
    /// Everything else is evaluated as with `Xtables` (the native tcp/udp port
    /// matches of iptables-nft differ only on malformed packets; not emulated).
    Nft,
}

/// Options of [`CompiledRuleset::compile_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompileOptions {
    pub flavor: Flavor,
}

/// A ruleset compiled for evaluation. Immutable and shareable between workers;
/// each worker keeps its own [`RuleState`](super::RuleState).
#[derive(Debug, Clone)]
pub struct CompiledRuleset {
    /// The entries, in two parallel arrays.
    pub(super) hot: Vec<Hot>,
    pub(super) cold: Vec<Cold>,
    pub(super) exts: Vec<Ext>,
    pub(super) targets: Vec<Target>,
    pub(super) infos: Vec<EntryInfo>,
    pub(super) chain_names: Vec<String>,
    /// `(first entry, policy entry)` of each (table, hook) built-in chain.
    pub(super) hooks: [[Option<(u32, u32)>; 5]; 4],
    /// Parallel to `rs.tables[t].chains[c]`.
    pub(super) layout: Vec<Vec<ChainLayout>>,
    /// The bucket of each `-m limit`, full, as a worker's state starts it.
    pub(super) buckets: Vec<Bucket>,
    pub(super) flavor: Flavor,
    pub(super) stack_depth: usize,
    pub(super) n_ifaces: usize,
    pub(super) needs: Needs,
    pub(super) id: u64,
}

impl CompiledRuleset {
    /// What the data plane must compute per packet for this ruleset.
    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// The kernel flavour this ruleset was compiled for.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Where rule `id` (from `Verdict::Nat` or `Effects::logs`) comes from.
    /// An id this ruleset never produced gives an empty chain name and zeros.
    pub fn rule_info(&self, id: u32) -> RuleInfo<'_> {
        match self.infos.get(id as usize) {
            Some(i) => RuleInfo {
                table: i.table,
                chain: self
                    .chain_names
                    .get(i.chain as usize)
                    .map_or("", String::as_str),
                index: i.index,
                line: i.line,
            },
            None => RuleInfo {
                table: Table::Filter,
                chain: "",
                index: 0,
                line: 0,
            },
        }
    }

    /// The target of rule `id` (NAT ranges, LOG options, REJECT type).
    /// An id this ruleset never produced gives `Target::None`.
    pub fn target(&self, id: u32) -> &Target {
        static NONE: Target = Target::None;
        self.targets.get(id as usize).unwrap_or(&NONE)
    }

    /// Number of flat entries (rules plus one policy/RETURN entry per chain).
    pub fn entry_count(&self) -> usize {
        self.hot.len()
    }
}
