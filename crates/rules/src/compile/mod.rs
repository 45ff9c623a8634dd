//! Compiled per-hook programs and their evaluation (the per-packet hot path).
//!
//! [`CompiledRuleset::compile`] flattens every table into one array of entries,
//! laid out as the kernel's `ipt_do_table` sees a table: each built-in chain's
//! rules followed by its policy entry, then each user chain's rules followed by
//! an implicit RETURN entry. Jumps and gotos are resolved to entry indices,
//! interface names to 64-bit masks over the instance's interfaces, addresses to
//! mask/value pairs. The fixed part of a rule (addresses, protocol, interfaces,
//! fragment flag, and the ports/flags of a leading `-m tcp`/`-m udp`) is stored
//! inline so that a rule that does not match is rejected with a few compares;
//! the other `-m` matches live in a side table, evaluated in rule order.
//!
//! [`CompiledRuleset::run`] walks a built-in chain with the kernel's semantics
//! (jump stack, goto, RETURN, policy, counters, hotdrop) and never allocates:
//! all mutable state (counters, limit buckets, the jump stack) lives in a
//! per-worker [`RuleState`].
//!
//! Matches follow the xtables modules (`xt_tcpudp.c`, `xt_multiport.c`,
//! `xt_conntrack.c`, `xt_limit.c` with [`HZ`] = 250, ...), including their
//! hotdrops: a `-m tcp/udp/icmp/multiport` match on a packet whose transport
//! header is truncated (`PacketCtx::has_l4` false, not a fragment), a `-m tcp`
//! on a TCP fragment at offset 8, and `--tcp-option` on malformed options drop
//! the packet. iptables-nft installs plain tcp/udp port and flag matches as
//! native nftables payload expressions instead, which never drop and read
//! whatever bytes are present: on malformed packets the two differ.

use crate::ctx::{IfIndex, Needs, PacketCtx, Verdict, MAX_LOGS};
use crate::model::{
    AddrtypeMatch, ConnmarkTarget, ConntrackMatch, Counters, CtStateSet, CtStatusSet, Hook,
    IcmpType, Ipv4Net, LimitMatch, LimitUnit, Match, MultiportDir, Neg, Policy, PortRange,
    RejectWith, Rule, Ruleset, Table, TableRules, Target, TcpmssTarget, TtlMatch, TtlTarget, XMark,
};

/// An error that makes a ruleset impossible to compile. Each names the table,
/// chain or source line and says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// More interfaces than an interface match can address.
    #[error("{0} interfaces configured; interface matches can address at most 62, remove some")]
    TooManyInterfaces(usize),
    /// The same table appears twice in the ruleset.
    #[error("table {table} appears twice; merge its chains into one *{table} section")]
    DuplicateTable {
        /// Table name.
        table: &'static str,
    },
    /// Two chains of one table have the same name.
    #[error("table {table}: chain {chain} is defined twice; rename or merge one of them")]
    DuplicateChain {
        /// Table name.
        table: &'static str,
        /// Chain name.
        chain: String,
    },
    /// A chain has a policy but is not one of the table's built-in chains.
    #[error("table {table}: chain {chain} has a policy but is not a built-in chain of this table; user chains take `-` as policy")]
    NotBuiltin {
        /// Table name.
        table: &'static str,
        /// Chain name.
        chain: String,
    },
    /// A built-in chain is declared without a policy.
    #[error("table {table}: built-in chain {chain} has no policy; give it ACCEPT or DROP")]
    MissingPolicy {
        /// Table name.
        table: &'static str,
        /// Chain name.
        chain: String,
    },
    /// `-j`/`-g` names a chain that the table does not have.
    #[error("line {line}: chain {chain} does not exist in table {table}; create it with `:{chain} - [0:0]`")]
    UnknownChain {
        /// Source line of the rule.
        line: u32,
        /// Table name.
        table: &'static str,
        /// The missing chain.
        chain: String,
    },
    /// `-j`/`-g` names a built-in chain.
    #[error("line {line}: cannot jump to built-in chain {chain}; jump to a user-defined chain")]
    JumpToBuiltin {
        /// Source line of the rule.
        line: u32,
        /// The built-in chain.
        chain: String,
    },
    /// User chains reachable from a built-in chain jump to each other in a cycle.
    #[error("table {table}: chain {chain} reaches itself through -j/-g (a loop); break the cycle")]
    Loop {
        /// Table name.
        table: &'static str,
        /// A chain on the cycle.
        chain: String,
    },
    /// A protocol match without the matching `-p`.
    #[error("line {line}: `-m {m}` needs `-p {proto}` (not negated) on the same rule")]
    ProtoRequired {
        /// Source line of the rule.
        line: u32,
        /// The match name.
        m: &'static str,
        /// The protocol(s) it needs.
        proto: &'static str,
    },
    /// `-m addrtype --limit-iface-in/--limit-iface-out`.
    #[error("line {line}: addrtype --limit-iface-in/--limit-iface-out is not supported; remove the option")]
    AddrtypeLimitIface {
        /// Source line of the rule.
        line: u32,
    },
    /// A `-m limit` rate or burst the kernel refuses.
    #[error("line {line}: limit rate {rate}/{unit} with burst {burst} is out of range; use a rate of at most 10000/second and a burst of 1..=10000 whose product does not overflow")]
    BadLimit {
        /// Source line of the rule.
        line: u32,
        /// Rate as written.
        rate: u32,
        /// Unit name.
        unit: &'static str,
        /// Burst.
        burst: u32,
    },
    /// More than 15 multiport entries (a range counts as two).
    #[error(
        "line {line}: multiport takes at most 15 ports (a range counts as two); split the rule"
    )]
    TooManyPorts {
        /// Source line of the rule.
        line: u32,
    },
}

impl CompileError {
    /// The exit code `iptables-restore` gives for this (checked against it:
    /// a jump to a missing chain is 1, what the kernel refuses is 4).
    pub fn restore_exit_code(&self) -> u8 {
        match self {
            CompileError::UnknownChain { .. } | CompileError::DuplicateTable { .. } => 1,
            CompileError::Loop { .. } | CompileError::JumpToBuiltin { .. } => 4,
            _ => 2,
        }
    }
}

// ---------------------------------------------------------------------------
// Compiled form

/// Interface mask bit of "no interface" (the kernel compares an empty name).
const IF_NONE: u64 = 1 << 63;
/// Interface mask bit of an interface index that has no configured name.
const IF_UNKNOWN: u64 = 1 << 62;
/// Interfaces an interface match can address (bits 0..62 of the masks).
pub const MAX_IFACES: usize = 62;

const F_SRC_INV: u16 = 1 << 0;
const F_DST_INV: u16 = 1 << 1;
const F_PROTO_INV: u16 = 1 << 2;
const F_FRAG: u16 = 1 << 3;
const F_FRAG_INV: u16 = 1 << 4;
/// The inline port/flag fields are valid (a leading `-m tcp` / `-m udp`).
const F_L4: u16 = 1 << 5;
const F_SPORT_INV: u16 = 1 << 6;
const F_DPORT_INV: u16 = 1 << 7;
const F_TFL_INV: u16 = 1 << 8;
/// The first side-table match is fully represented inline: skip it when the
/// packet's transport header is readable.
const F_EXT_SKIP: u16 = 1 << 9;

/// What a matching entry does.
#[derive(Debug, Clone, Copy)]
enum Act {
    Continue,
    Accept,
    Drop,
    Reject(RejectWith),
    Return,
    Jump(u32),
    Goto(u32),
    Nat,
    Log,
    Mark(XMark),
    Connmark(ConnmarkTarget),
    Ttl(TtlTarget),
    Notrack,
    /// `-j TRACE`.
    Trace,
    Tcpmss(u16),
}

/// One flat entry while compiling; split into [`Hot`] and [`Cold`] at the end.
#[derive(Debug, Clone)]
struct Entry {
    src: u32,
    smsk: u32,
    dst: u32,
    dmsk: u32,
    in_mask: u64,
    out_mask: u64,
    sport: [u16; 2],
    dport: [u16; 2],
    ext_start: u32,
    ext_end: u32,
    flags: u16,
    proto: u8,
    tfl_mask: u8,
    tfl_comp: u8,
    act: Act,
}

/// The criteria of an entry that reject most non-matching rules, packed
/// densely (48 bytes) for the scan. Interface masks have bit `i` for
/// interface index `i`, plus [`IF_NONE`] and [`IF_UNKNOWN`], inversion folded in.
#[derive(Debug, Clone)]
struct Hot {
    src: u32,
    smsk: u32,
    dst: u32,
    dmsk: u32,
    in_mask: u64,
    out_mask: u64,
    sport: [u16; 2],
    dport: [u16; 2],
    flags: u16,
    proto: u8,
    tfl_mask: u8,
    tfl_comp: u8,
}

/// The rest of an entry: side-table matches and the target.
#[derive(Debug, Clone)]
struct Cold {
    ext_start: u32,
    ext_end: u32,
    act: Act,
}

impl Entry {
    fn split(&self) -> (Hot, Cold) {
        (
            Hot {
                src: self.src,
                smsk: self.smsk,
                dst: self.dst,
                dmsk: self.dmsk,
                in_mask: self.in_mask,
                out_mask: self.out_mask,
                sport: self.sport,
                dport: self.dport,
                flags: self.flags,
                proto: self.proto,
                tfl_mask: self.tfl_mask,
                tfl_comp: self.tfl_comp,
            },
            Cold {
                ext_start: self.ext_start,
                ext_end: self.ext_end,
                act: self.act,
            },
        )
    }
}

impl Entry {
    /// An entry with no criteria (policy entries, implicit RETURN).
    fn always(act: Act) -> Entry {
        Entry {
            src: 0,
            smsk: 0,
            dst: 0,
            dmsk: 0,
            in_mask: !0,
            out_mask: !0,
            sport: [0, u16::MAX],
            dport: [0, u16::MAX],
            ext_start: 0,
            ext_end: 0,
            flags: 0,
            proto: 0,
            tfl_mask: 0,
            tfl_comp: 0,
            act,
        }
    }
}

/// An inclusive range with inversion, as the kernel's `port_match`.
#[derive(Debug, Clone, Copy)]
struct Range16 {
    lo: u16,
    hi: u16,
    inv: bool,
}

impl Range16 {
    fn from(n: &Neg<PortRange>) -> Range16 {
        Range16 {
            lo: n.val.lo,
            hi: n.val.hi,
            inv: n.inv,
        }
    }
    fn any() -> Range16 {
        Range16 {
            lo: 0,
            hi: u16::MAX,
            inv: false,
        }
    }
    #[inline(always)]
    fn test(&self, v: u16) -> bool {
        (v >= self.lo && v <= self.hi) != self.inv
    }
}

/// A masked address test with inversion.
#[derive(Debug, Clone, Copy)]
struct Net {
    addr: u32,
    mask: u32,
    inv: bool,
}

impl Net {
    fn from(n: &Neg<Ipv4Net>) -> Net {
        let mask = n.val.mask;
        Net {
            addr: u32::from(n.val.addr) & mask,
            mask,
            inv: n.inv,
        }
    }
    #[inline(always)]
    fn test(&self, a: u32) -> bool {
        ((a ^ self.addr) & self.mask == 0) != self.inv
    }
}

#[derive(Debug, Clone)]
struct CtM {
    state: Option<(u8, bool)>,
    status: Option<(u32, bool)>,
    orig_src: Option<Net>,
    orig_dst: Option<Net>,
    repl_src: Option<Net>,
    repl_dst: Option<Net>,
    orig_sport: Option<Range16>,
    orig_dport: Option<Range16>,
}

/// A side-table (`-m`) match.
#[derive(Debug, Clone)]
enum Ext {
    Tcp {
        sport: Range16,
        dport: Range16,
        fl_mask: u8,
        fl_comp: u8,
        fl_inv: bool,
        /// `--tcp-option` kind (0 = none, as in the kernel) and inversion.
        option: u8,
        opt_inv: bool,
    },
    Udp {
        sport: Range16,
        dport: Range16,
    },
    Icmp {
        ty: u8,
        code_lo: u8,
        code_hi: u8,
        inv: bool,
    },
    Multiport {
        dir: MultiportDir,
        inv: bool,
        n: u8,
        ports: [[u16; 2]; 15],
    },
    Conntrack(Box<CtM>),
    State {
        mask: u8,
        inv: bool,
    },
    Mark {
        value: u32,
        mask: u32,
        inv: bool,
    },
    Ttl(TtlMatch),
    Length(Range16),
    Iprange {
        src: Option<(u32, u32, bool)>,
        dst: Option<(u32, u32, bool)>,
    },
    Limit {
        slot: u32,
        cost: u64,
        cap: u64,
        nft: bool,
    },
    Addrtype {
        src: Option<(u16, bool)>,
        dst: Option<(u16, bool)>,
    },
}

/// Where a model chain landed in the flat array (for counters).
#[derive(Debug, Clone, Copy)]
struct ChainLayout {
    rules_start: u32,
    nrules: u32,
    /// The policy entry of a built-in chain.
    policy: Option<u32>,
}

/// Per-entry metadata for [`CompiledRuleset::rule_info`].
#[derive(Debug, Clone, Copy)]
struct EntryInfo {
    table: Table,
    chain: u32,
    index: u32,
    line: u32,
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

/// Token-bucket parameters of one `-m limit` (the bucket starts full).
#[derive(Debug, Clone, Copy)]
struct LimitParams {
    cap: u64,
}

/// Which kernel code to follow where iptables-legacy and iptables-nft install
/// different implementations of the same rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// The xtables modules (iptables-legacy): `-m limit` is `xt_limit.c`
    /// (credits refilled per jiffy at [`HZ`]).
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
/// each worker keeps its own [`RuleState`].
#[derive(Debug, Clone)]
pub struct CompiledRuleset {
    hot: Vec<Hot>,
    cold: Vec<Cold>,
    /// Entries while compiling (empty afterwards).
    entries: Vec<Entry>,
    exts: Vec<Ext>,
    targets: Vec<Target>,
    infos: Vec<EntryInfo>,
    chain_names: Vec<String>,
    /// `(first entry, policy entry)` of each (table, hook) built-in chain.
    hooks: [[Option<(u32, u32)>; 5]; 4],
    /// Parallel to `rs.tables[t].chains[c]`.
    layout: Vec<Vec<ChainLayout>>,
    limits: Vec<LimitParams>,
    flavor: Flavor,
    stack_depth: usize,
    n_ifaces: usize,
    needs: Needs,
    id: u64,
}

/// A table run known in advance ([`CompiledRuleset::shortcut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// The ruleset has no such chain: the packet goes on (ACCEPT), nothing is counted.
    Absent,
    /// A built-in chain without rules: `verdict` is its policy; count the
    /// packet on `entry` ([`RuleState::count`]), which is also the deciding
    /// entry (`Effects::last`).
    Policy { entry: u32, verdict: Verdict },
}

/// Per-worker mutable state of a [`CompiledRuleset`].
#[derive(Debug, Clone)]
pub struct RuleState {
    counters: Vec<Counters>,
    buckets: Vec<Bucket>,
    stack: Vec<u32>,
    id: u64,
    /// Whether counted entries are appended to `path` ([`RuleState::record`]).
    recording: bool,
    path: Path,
}

/// The most counted entries a [`Path`] holds.
pub const PATH_MAX: usize = 12;

/// The entries counted for one packet, in order, while a [`RuleState`]
/// records ([`RuleState::record`]): what [`RuleState::replay`] counts again
/// for a later packet that would take the same way through the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Path {
    len: u8,
    /// More than [`PATH_MAX`] entries were counted: the path is incomplete.
    overflow: bool,
    entries: [u32; PATH_MAX],
}

impl Path {
    /// The counted entries, in order.
    pub fn entries(&self) -> &[u32] {
        self.entries.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Appends `entry` (out of the rule loop's hot code: recording is rare).
    #[cold]
    #[inline(never)]
    fn push(&mut self, entry: u32) {
        match self.entries.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = entry;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }
}

/// Per-rule limit state: xt_limit's `prev` (jiffies) and `credit`, or
/// nft_limit's `last` (ns) and `tokens`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    prev: u64,
    credit: u64,
    started: bool,
}

impl RuleState {
    /// Fresh state: zero counters, full limit buckets, a jump stack deep
    /// enough for the ruleset (user chains + 1).
    pub fn new(c: &CompiledRuleset) -> RuleState {
        RuleState {
            counters: vec![Counters::default(); c.hot.len()],
            buckets: c
                .limits
                .iter()
                .map(|l| Bucket {
                    prev: 0,
                    credit: l.cap,
                    started: false,
                })
                .collect(),
            stack: vec![0; c.stack_depth],
            id: c.id,
            recording: false,
            path: Path::default(),
        }
    }

    /// Counts one packet of `bytes` on entry `entry` (a policy from
    /// [`Shortcut::Policy`]), as [`CompiledRuleset::run`] would.
    /// Not recorded ([`RuleState::record`]): the caller knows these.
    #[inline]
    pub fn count(&mut self, entry: u32, bytes: u16) {
        if let Some(c) = self.counters.get_mut(entry as usize) {
            c.packets = c.packets.wrapping_add(1);
            c.bytes = c.bytes.wrapping_add(u64::from(bytes));
        }
    }

    /// From now on, every entry [`CompiledRuleset::run`] counts is also
    /// appended to a fresh [`Path`], until [`RuleState::take_path`].
    pub fn record(&mut self) {
        self.recording = true;
        self.path = Path::default();
    }

    /// Whether [`RuleState::record`] is on.
    pub fn recording(&self) -> bool {
        self.recording
    }

    /// The entries recorded so far.
    pub fn path_len(&self) -> usize {
        usize::from(self.path.len)
    }

    /// Stops recording; the path since [`RuleState::record`], unless it
    /// had more than [`PATH_MAX`] entries.
    pub fn take_path(&mut self) -> Option<Path> {
        self.recording = false;
        (!self.path.overflow).then_some(self.path)
    }

    /// Counts one packet of `bytes` on every entry of `path`, as the run
    /// that recorded it did.
    #[inline(always)]
    pub fn replay(&mut self, path: &Path, bytes: u16) {
        let n = usize::from(path.len).min(PATH_MAX);
        for &e in &path.entries[..n] {
            if let Some(c) = self.counters.get_mut(e as usize) {
                c.packets = c.packets.wrapping_add(1);
                c.bytes = c.bytes.wrapping_add(u64::from(bytes));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// xt_limit arithmetic

/// The kernel's HZ (that of the reference host): limit buckets refill per jiffy.
pub const HZ: u64 = 250;
const NS_PER_JIFFY: u64 = 1_000_000_000 / HZ;
const XT_LIMIT_SCALE: u32 = 10_000;
const MAX_CPJ: u32 = (0xFFFF_FFFFu64 / (HZ * 60 * 60 * 24)) as u32;

const fn pow2_below32(x: u32) -> u32 {
    let mut y = x | (x >> 1);
    y |= y >> 2;
    y |= y >> 4;
    y |= y >> 8;
    y |= y >> 16;
    (y >> 1) + 1
}

/// Credits gained per jiffy (xt_limit's `CREDITS_PER_JIFFY`).
const CREDITS_PER_JIFFY: u32 = pow2_below32(MAX_CPJ);

/// xt_limit's `user2credits` (u32 arithmetic, wrapping like C).
fn user2credits(user: u32) -> u32 {
    let hz = HZ as u32;
    if user > 0xFFFF_FFFF / (hz * CREDITS_PER_JIFFY) {
        (user / XT_LIMIT_SCALE)
            .wrapping_mul(hz)
            .wrapping_mul(CREDITS_PER_JIFFY)
    } else {
        user * hz * CREDITS_PER_JIFFY / XT_LIMIT_SCALE
    }
}

/// `(avg, cost, credit_cap)` of a limit match as iptables and xt_limit compute
/// them, or `None` when iptables or the kernel refuse it.
pub(crate) fn limit_params(l: &LimitMatch) -> Option<(u32, u32)> {
    let mult: u32 = match l.unit {
        LimitUnit::Second => 1,
        LimitUnit::Minute => 60,
        LimitUnit::Hour => 3600,
        LimitUnit::Day => 86400,
    };
    if l.rate == 0 {
        return None;
    }
    let avg = XT_LIMIT_SCALE * mult / l.rate;
    if avg == 0 || l.burst == 0 {
        return None;
    }
    let cap = user2credits(avg.wrapping_mul(l.burst));
    let cost = user2credits(avg);
    if cap < cost {
        return None;
    }
    Some((cost, cap))
}

fn unit_name(u: LimitUnit) -> &'static str {
    match u {
        LimitUnit::Second => "second",
        LimitUnit::Minute => "minute",
        LimitUnit::Hour => "hour",
        LimitUnit::Day => "day",
    }
}

/// xt_limit's `limit_mt` on one bucket (u32 credits, wrapping like C). Time
/// that goes backwards adds no credit. The bucket was loaded full at the
/// first packet.
#[inline]
fn limit_step(b: &mut Bucket, cost: u32, cap: u32, now_ns: u64) -> bool {
    let now = now_ns / NS_PER_JIFFY;
    if !b.started {
        b.started = true;
        b.prev = now;
    }
    let delta = now.saturating_sub(b.prev);
    if now > b.prev {
        b.prev = now;
    }
    let inc = delta.wrapping_mul(u64::from(CREDITS_PER_JIFFY)) as u32;
    let mut credit = (b.credit as u32).wrapping_add(inc);
    if credit > cap {
        credit = cap;
    }
    let ok = credit >= cost;
    if ok {
        credit -= cost;
    }
    b.credit = u64::from(credit);
    ok
}

/// `(cost, tokens_max)` in nanoseconds of the nftables `limit` expression
/// iptables-nft installs for a `-m limit` (its `add_nft_limit` turns
/// iptables' `avg` back into a rate and a unit), or `None` when refused.
pub(crate) fn nft_limit_params(l: &LimitMatch) -> Option<(u64, u64)> {
    const MULT: [u32; 4] = [
        XT_LIMIT_SCALE * 86400,
        XT_LIMIT_SCALE * 3600,
        XT_LIMIT_SCALE * 60,
        XT_LIMIT_SCALE,
    ];
    limit_params(l)?;
    let mult: u32 = match l.unit {
        LimitUnit::Second => 1,
        LimitUnit::Minute => 60,
        LimitUnit::Hour => 3600,
        LimitUnit::Day => 86400,
    };
    let avg = XT_LIMIT_SCALE * mult / l.rate;
    let mut i = 1;
    while i < MULT.len() {
        if avg > MULT[i] || MULT[i] / avg < MULT[i] % avg {
            break;
        }
        i += 1;
    }
    let rate = u64::from(MULT[i - 1] / avg);
    let unit = u64::from(MULT[i - 1] / XT_LIMIT_SCALE);
    if rate == 0 {
        return None;
    }
    let cost = unit * 1_000_000_000 / rate;
    Some((cost, cost.checked_mul(u64::from(l.burst))?))
}

/// nft_limit's `nft_limit_eval` (packets mode): tokens are nanoseconds.
#[inline]
fn nft_limit_step(b: &mut Bucket, cost: u64, max: u64, now_ns: u64) -> bool {
    if !b.started {
        b.started = true;
        b.prev = now_ns;
    }
    let mut tokens = b.credit.saturating_add(now_ns.saturating_sub(b.prev));
    if tokens > max {
        tokens = max;
    }
    if now_ns > b.prev {
        b.prev = now_ns;
    }
    if tokens >= cost {
        b.credit = tokens - cost;
        true
    } else {
        b.credit = tokens;
        false
    }
}

// ---------------------------------------------------------------------------
// Interface masks

/// The mask of an `-i`/`-o` match over interface indices plus [`IF_NONE`] and
/// [`IF_UNKNOWN`], with the inversion folded in.
fn iface_mask(m: Option<&Neg<crate::model::IfaceName>>, ifaces: &[&str]) -> u64 {
    let Some(n) = m else {
        return !0;
    };
    let mut mask = 0u64;
    for (i, name) in ifaces.iter().enumerate() {
        if n.val.matches(name) {
            mask |= 1 << i;
        }
    }
    if n.val.matches("") {
        mask |= IF_NONE;
    }
    if n.val.0 == "+" {
        mask |= IF_UNKNOWN;
    }
    if n.inv {
        !mask
    } else {
        mask
    }
}

#[inline(always)]
fn if_key(i: Option<IfIndex>, n: usize) -> u64 {
    match i {
        None => IF_NONE,
        Some(i) if usize::from(i) < n => 1u64 << i,
        Some(_) => IF_UNKNOWN,
    }
}

const CT_TRACKED: u8 = CtStateSet::NEW | CtStateSet::ESTABLISHED | CtStateSet::RELATED;
const CT_BASIC: u8 = CT_TRACKED | CtStateSet::INVALID | CtStateSet::UNTRACKED;

// ---------------------------------------------------------------------------
// Compilation

struct TableBuild<'a> {
    table: Table,
    /// Model chains in flat order: built-ins in hook order, then user chains.
    order: Vec<Option<(usize, &'a crate::model::Chain)>>,
}

impl CompiledRuleset {
    /// Compile a validated ruleset for an instance whose interface index `i`
    /// is named `ifaces[i]`.
    pub fn compile(rs: &Ruleset, ifaces: &[&str]) -> Result<CompiledRuleset, CompileError> {
        Self::compile_with(rs, ifaces, CompileOptions::default())
    }

    /// [`CompiledRuleset::compile`] with options (the kernel flavour to follow).
    pub fn compile_with(
        rs: &Ruleset,
        ifaces: &[&str],
        opts: CompileOptions,
    ) -> Result<CompiledRuleset, CompileError> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        if ifaces.len() > MAX_IFACES {
            return Err(CompileError::TooManyInterfaces(ifaces.len()));
        }
        let mut c = CompiledRuleset {
            hot: Vec::new(),
            cold: Vec::new(),
            entries: Vec::new(),
            exts: Vec::new(),
            targets: Vec::new(),
            infos: Vec::new(),
            chain_names: Vec::new(),
            hooks: [[None; 5]; 4],
            layout: rs
                .tables
                .iter()
                .map(|t| {
                    vec![
                        ChainLayout {
                            rules_start: 0,
                            nrules: 0,
                            policy: None,
                        };
                        t.chains.len()
                    ]
                })
                .collect(),
            limits: Vec::new(),
            flavor: opts.flavor,
            stack_depth: 1,
            n_ifaces: ifaces.len(),
            needs: Needs::default(),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        for (i, t) in rs.tables.iter().enumerate() {
            if rs.tables[..i].iter().any(|o| o.table == t.table) {
                return Err(CompileError::DuplicateTable {
                    table: t.table.name(),
                });
            }
        }
        for table in Table::ALL {
            let tpos = rs.tables.iter().position(|t| t.table == table);
            let build = plan_table(table, tpos.map(|p| &rs.tables[p]))?;
            c.compile_table(&build, tpos, ifaces)?;
        }
        (c.hot, c.cold) = c.entries.iter().map(Entry::split).unzip();
        c.entries = Vec::new();
        Ok(c)
    }

    fn compile_table(
        &mut self,
        b: &TableBuild<'_>,
        tpos: Option<usize>,
        ifaces: &[&str],
    ) -> Result<(), CompileError> {
        let table = b.table;
        let nbuiltin = table.builtin_hooks().len();
        // First pass: entry index of each chain's first rule.
        let mut starts = Vec::with_capacity(b.order.len());
        let mut next = self.entries.len() as u32;
        for ch in &b.order {
            starts.push(next);
            next += ch.map_or(0, |(_, c)| c.rules.len() as u32) + 1;
        }
        let find = |name: &str, line: u32| -> Result<u32, CompileError> {
            for (k, ch) in b.order.iter().enumerate() {
                let cname = match ch {
                    Some((_, c)) => c.name.as_str(),
                    None => table.builtin_hooks()[k].chain_name(),
                };
                if cname == name {
                    if k < nbuiltin {
                        return Err(CompileError::JumpToBuiltin {
                            line,
                            chain: name.to_string(),
                        });
                    }
                    return Ok(starts[k]);
                }
            }
            Err(CompileError::UnknownChain {
                line,
                table: table.name(),
                chain: name.to_string(),
            })
        };
        // Loop check over user chains (edges by -j / -g).
        let nchains = b.order.len();
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); nchains];
        for (k, ch) in b.order.iter().enumerate() {
            if let Some((_, c)) = ch {
                for r in &c.rules {
                    if let Target::Jump(n) | Target::Goto(n) = &r.target {
                        let s = find(n, r.line)?;
                        if let Some(j) = starts.iter().position(|&x| x == s) {
                            edges[k].push(j);
                        }
                    }
                }
            }
        }
        check_loops(table, b, &edges)?;
        let nuser = nchains - nbuiltin;
        self.stack_depth = self.stack_depth.max(nuser + 1);

        for (k, ch) in b.order.iter().enumerate() {
            let chain_name = match ch {
                Some((_, c)) => c.name.clone(),
                None => table.builtin_hooks()[k].chain_name().to_string(),
            };
            let chain_idx = self.chain_names.len() as u32;
            self.chain_names.push(chain_name);
            let rules: &[Rule] = ch.map_or(&[], |(_, c)| c.rules.as_slice());
            debug_assert_eq!(self.entries.len() as u32, starts[k]);
            for (ri, r) in rules.iter().enumerate() {
                let e = self.compile_rule(r, ifaces, &find)?;
                self.entries.push(e);
                self.targets.push(r.target.clone());
                self.infos.push(EntryInfo {
                    table,
                    chain: chain_idx,
                    index: ri as u32 + 1,
                    line: r.line,
                });
            }
            let end = self.entries.len() as u32;
            let act = if k < nbuiltin {
                let pol = ch.and_then(|(_, c)| c.policy).unwrap_or(Policy::Accept);
                self.hooks[table as usize][table.builtin_hooks()[k] as usize] =
                    Some((starts[k], end));
                match pol {
                    Policy::Accept => Act::Accept,
                    Policy::Drop => Act::Drop,
                }
            } else {
                Act::Return
            };
            self.entries.push(Entry::always(act));
            self.targets.push(Target::None);
            self.infos.push(EntryInfo {
                table,
                chain: chain_idx,
                index: 0,
                line: 0,
            });
            if let (Some(tp), Some((ci, _))) = (tpos, ch) {
                self.layout[tp][*ci] = ChainLayout {
                    rules_start: starts[k],
                    nrules: rules.len() as u32,
                    policy: (k < nbuiltin).then_some(end),
                };
            }
        }
        Ok(())
    }

    fn compile_rule(
        &mut self,
        r: &Rule,
        ifaces: &[&str],
        find: &dyn Fn(&str, u32) -> Result<u32, CompileError>,
    ) -> Result<Entry, CompileError> {
        let mut e = Entry::always(Act::Continue);
        if let Some(s) = &r.src {
            let n = Net::from(s);
            e.src = n.addr;
            e.smsk = n.mask;
            if s.inv {
                e.flags |= F_SRC_INV;
            }
        }
        if let Some(d) = &r.dst {
            let n = Net::from(d);
            e.dst = n.addr;
            e.dmsk = n.mask;
            if d.inv {
                e.flags |= F_DST_INV;
            }
        }
        e.in_mask = iface_mask(r.in_iface.as_ref(), ifaces);
        e.out_mask = iface_mask(r.out_iface.as_ref(), ifaces);
        if let Some(p) = &r.proto {
            e.proto = p.val;
            if p.inv && p.val != 0 {
                e.flags |= F_PROTO_INV;
            }
        }
        if let Some(inv) = r.fragment {
            e.flags |= F_FRAG;
            if inv {
                e.flags |= F_FRAG_INV;
            }
        }
        let proto_is = |p: u8| matches!(r.proto, Some(Neg { inv: false, val }) if val == p);
        let line = r.line;
        e.ext_start = self.exts.len() as u32;
        for m in &r.matches {
            let x = match m {
                Match::Comment(_) => continue,
                Match::Tcp(t) => {
                    if !proto_is(6) {
                        return Err(CompileError::ProtoRequired {
                            line,
                            m: "tcp",
                            proto: "tcp",
                        });
                    }
                    let sport = t.sport.as_ref().map_or(Range16::any(), Range16::from);
                    let dport = t.dport.as_ref().map_or(Range16::any(), Range16::from);
                    let (fl_mask, fl_comp, fl_inv) = t
                        .flags
                        .map_or((0, 0, false), |f| (f.val.mask, f.val.comp, f.inv));
                    let (option, opt_inv) = t.option.map_or((0, false), |o| (o.val, o.inv));
                    if option != 0 {
                        self.needs.tcp_options = true;
                    }
                    if self.exts.len() == e.ext_start as usize {
                        e.set_l4(sport, dport, fl_mask, fl_comp, fl_inv, option == 0);
                    }
                    Ext::Tcp {
                        sport,
                        dport,
                        fl_mask,
                        fl_comp,
                        fl_inv,
                        option,
                        opt_inv,
                    }
                }
                Match::Udp(u) => {
                    if !proto_is(17) {
                        return Err(CompileError::ProtoRequired {
                            line,
                            m: "udp",
                            proto: "udp",
                        });
                    }
                    let sport = u.sport.as_ref().map_or(Range16::any(), Range16::from);
                    let dport = u.dport.as_ref().map_or(Range16::any(), Range16::from);
                    if self.exts.len() == e.ext_start as usize {
                        e.set_l4(sport, dport, 0, 0, false, true);
                    }
                    Ext::Udp { sport, dport }
                }
                Match::Icmp(i) => {
                    if !proto_is(1) {
                        return Err(CompileError::ProtoRequired {
                            line,
                            m: "icmp",
                            proto: "icmp",
                        });
                    }
                    let IcmpType {
                        ty,
                        code_lo,
                        code_hi,
                    } = i.val;
                    Ext::Icmp {
                        ty,
                        code_lo,
                        code_hi,
                        inv: i.inv,
                    }
                }
                Match::Multiport(mp) => {
                    if ![6, 17, 33, 132, 136].iter().any(|&p| proto_is(p)) {
                        return Err(CompileError::ProtoRequired {
                            line,
                            m: "multiport",
                            proto: "tcp, udp, udplite, dccp or sctp",
                        });
                    }
                    let weight: usize = mp
                        .ports
                        .iter()
                        .map(|p| if p.lo == p.hi { 1 } else { 2 })
                        .sum();
                    if weight > 15 || mp.ports.len() > 15 {
                        return Err(CompileError::TooManyPorts { line });
                    }
                    let mut ports = [[0u16; 2]; 15];
                    for (slot, p) in ports.iter_mut().zip(&mp.ports) {
                        *slot = [p.lo, p.hi];
                    }
                    Ext::Multiport {
                        dir: mp.dir,
                        inv: mp.inv,
                        n: mp.ports.len() as u8,
                        ports,
                    }
                }
                Match::Conntrack(ct) => {
                    self.needs.conntrack = true;
                    Ext::Conntrack(Box::new(compile_ct(ct)))
                }
                Match::State(s) => {
                    self.needs.conntrack = true;
                    Ext::State {
                        mask: s.val.0,
                        inv: s.inv,
                    }
                }
                Match::Mark(mm) => Ext::Mark {
                    value: mm.val.value,
                    mask: mm.val.mask,
                    inv: mm.inv,
                },
                Match::Ttl(t) => Ext::Ttl(*t),
                Match::Length(l) => Ext::Length(Range16::from(l)),
                Match::Iprange(ir) => {
                    let f = |n: &Neg<(std::net::Ipv4Addr, std::net::Ipv4Addr)>| {
                        (u32::from(n.val.0), u32::from(n.val.1), n.inv)
                    };
                    Ext::Iprange {
                        src: ir.src.as_ref().map(f),
                        dst: ir.dst.as_ref().map(f),
                    }
                }
                Match::Limit(l) => {
                    let nft = self.flavor == Flavor::Nft;
                    let params = if nft {
                        nft_limit_params(l)
                    } else {
                        limit_params(l).map(|(c, m)| (u64::from(c), u64::from(m)))
                    };
                    let Some((cost, cap)) = params else {
                        return Err(CompileError::BadLimit {
                            line,
                            rate: l.rate,
                            unit: unit_name(l.unit),
                            burst: l.burst,
                        });
                    };
                    let slot = self.limits.len() as u32;
                    self.limits.push(LimitParams { cap });
                    Ext::Limit {
                        slot,
                        cost,
                        cap,
                        nft,
                    }
                }
                Match::Addrtype(a) => {
                    let AddrtypeMatch {
                        src,
                        dst,
                        limit_iface_in,
                        limit_iface_out,
                    } = *a;
                    if limit_iface_in || limit_iface_out {
                        return Err(CompileError::AddrtypeLimitIface { line });
                    }
                    self.needs.addrtype = true;
                    Ext::Addrtype {
                        src: src.map(|s| (s.val.0, s.inv)),
                        dst: dst.map(|d| (d.val.0, d.inv)),
                    }
                }
            };
            self.exts.push(x);
        }
        e.ext_end = self.exts.len() as u32;
        e.act = match &r.target {
            Target::None => Act::Continue,
            Target::Accept => Act::Accept,
            Target::Drop => Act::Drop,
            Target::Return => Act::Return,
            Target::Jump(n) => Act::Jump(find(n, line)?),
            Target::Goto(n) => Act::Goto(find(n, line)?),
            Target::Reject(w) => Act::Reject(*w),
            Target::Log(_) => Act::Log,
            Target::Mark(x) => Act::Mark(*x),
            Target::Connmark(cm) => {
                self.needs.conntrack = true;
                Act::Connmark(*cm)
            }
            Target::Ttl(t) => Act::Ttl(*t),
            Target::Notrack | Target::CtNotrack => {
                self.needs.conntrack = true;
                Act::Notrack
            }
            Target::Trace => Act::Trace,
            Target::Tcpmss(t) => Act::Tcpmss(match t {
                TcpmssTarget::SetMss(m) => *m,
                TcpmssTarget::ClampToPmtu => 0,
            }),
            Target::Snat { .. }
            | Target::Dnat { .. }
            | Target::Masquerade { .. }
            | Target::Redirect { .. } => {
                self.needs.conntrack = true;
                Act::Nat
            }
        };
        Ok(e)
    }
}

impl Entry {
    fn set_l4(
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

fn compile_ct(ct: &ConntrackMatch) -> CtM {
    CtM {
        state: ct.state.map(|s| (s.val.0, s.inv)),
        status: ct.status.map(|s| (s.val.0, s.inv)),
        orig_src: ct.orig_src.as_ref().map(Net::from),
        orig_dst: ct.orig_dst.as_ref().map(Net::from),
        repl_src: ct.repl_src.as_ref().map(Net::from),
        repl_dst: ct.repl_dst.as_ref().map(Net::from),
        orig_sport: ct.orig_src_port.as_ref().map(Range16::from),
        orig_dport: ct.orig_dst_port.as_ref().map(Range16::from),
    }
}

/// Order a table's chains (built-ins in hook order, absent ones as `None`,
/// then user chains) and check names and policies.
fn plan_table(table: Table, tr: Option<&TableRules>) -> Result<TableBuild<'_>, CompileError> {
    let hooks = table.builtin_hooks();
    let mut order: Vec<Option<(usize, &crate::model::Chain)>> = vec![None; hooks.len()];
    let Some(tr) = tr else {
        return Ok(TableBuild { table, order });
    };
    for (ci, ch) in tr.chains.iter().enumerate() {
        if tr.chains[..ci].iter().any(|o| o.name == ch.name) {
            return Err(CompileError::DuplicateChain {
                table: table.name(),
                chain: ch.name.clone(),
            });
        }
        let builtin = hooks.iter().position(|h| h.chain_name() == ch.name);
        match (builtin, ch.policy) {
            (Some(k), Some(_)) => order[k] = Some((ci, ch)),
            (Some(_), None) => {
                return Err(CompileError::MissingPolicy {
                    table: table.name(),
                    chain: ch.name.clone(),
                })
            }
            (None, Some(_)) => {
                return Err(CompileError::NotBuiltin {
                    table: table.name(),
                    chain: ch.name.clone(),
                })
            }
            (None, None) => {}
        }
    }
    for (ci, ch) in tr.chains.iter().enumerate() {
        if ch.policy.is_none() {
            order.push(Some((ci, ch)));
        }
    }
    Ok(TableBuild { table, order })
}

fn check_loops(table: Table, b: &TableBuild<'_>, edges: &[Vec<usize>]) -> Result<(), CompileError> {
    // Only loops reachable from a built-in chain matter (the kernel's
    // mark_source_chains); unreachable chains never run.
    // 0 = unvisited, 1 = on the DFS path, 2 = done. Iterative DFS.
    let mut color = vec![0u8; edges.len()];
    for root in 0..b.table.builtin_hooks().len().min(edges.len()) {
        if color[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&succ) = edges[node].get(*next) {
                *next += 1;
                match color[succ] {
                    0 => {
                        color[succ] = 1;
                        stack.push((succ, 0));
                    }
                    1 => {
                        let name = b.order[succ]
                            .map(|(_, c)| c.name.clone())
                            .unwrap_or_default();
                        return Err(CompileError::Loop {
                            table: table.name(),
                            chain: name,
                        });
                    }
                    _ => {}
                }
            } else {
                color[node] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Evaluation

/// Per-packet values computed once per `run`.
struct Key {
    in_bit: u64,
    out_bit: u64,
    /// Transport header readable and not a fragment: port matches are pure.
    clean: bool,
}

impl Hot {
    #[inline(always)]
    fn ip_match(&self, ctx: &PacketCtx, k: &Key) -> bool {
        let f = self.flags;
        if ((ctx.src & self.smsk) != self.src) != (f & F_SRC_INV != 0) {
            return false;
        }
        if ((ctx.dst & self.dmsk) != self.dst) != (f & F_DST_INV != 0) {
            return false;
        }
        if self.proto != 0 && ((ctx.proto != self.proto) != (f & F_PROTO_INV != 0)) {
            return false;
        }
        if (self.in_mask & k.in_bit) == 0 || (self.out_mask & k.out_bit) == 0 {
            return false;
        }
        if f & F_FRAG != 0 && (ctx.fragment == (f & F_FRAG_INV != 0)) {
            return false;
        }
        if f & F_L4 != 0 && k.clean {
            let inv = |b: u16| f & b != 0;
            if (ctx.sport >= self.sport[0] && ctx.sport <= self.sport[1]) == inv(F_SPORT_INV) {
                return false;
            }
            if (ctx.dport >= self.dport[0] && ctx.dport <= self.dport[1]) == inv(F_DPORT_INV) {
                return false;
            }
            if ((ctx.tcp_flags & self.tfl_mask) == self.tfl_comp) == inv(F_TFL_INV) {
                return false;
            }
        }
        true
    }
}

/// A match's result: matched, did not match, or the packet must be dropped.
#[derive(PartialEq, Eq)]
enum M {
    Yes,
    No,
    Hotdrop,
}

#[inline(always)]
fn m(b: bool) -> M {
    if b {
        M::Yes
    } else {
        M::No
    }
}

/// The kernel's common preamble of tcp/udp/icmp/multiport: no match on a
/// fragment (hotdrop for TCP at offset 1), hotdrop when the header is truncated.
#[inline(always)]
fn l4_guard(ctx: &PacketCtx, tcp: bool) -> Option<M> {
    if ctx.fragment {
        return Some(if tcp && ctx.frag_off == 1 {
            M::Hotdrop
        } else {
            M::No
        });
    }
    if !ctx.has_l4 {
        return Some(M::Hotdrop);
    }
    None
}

fn ct_match(c: &CtM, ct: &crate::ctx::CtCtx) -> bool {
    let tracked = ct.state & CT_TRACKED != 0;
    if let Some((mask, inv)) = c.state {
        let mut bits = ct.state & CT_BASIC;
        if tracked {
            bits |= ct.state & (CtStateSet::SNAT | CtStateSet::DNAT);
            if ct.status & CtStatusSet::SRC_NAT != 0 {
                bits |= CtStateSet::SNAT;
            }
            if ct.status & CtStatusSet::DST_NAT != 0 {
                bits |= CtStateSet::DNAT;
            }
        }
        if ((mask & bits) != 0) == inv {
            return false;
        }
    }
    if !tracked {
        return c.state.is_some();
    }
    for (net, a) in [
        (&c.orig_src, ct.orig_src),
        (&c.orig_dst, ct.orig_dst),
        (&c.repl_src, ct.repl_src),
        (&c.repl_dst, ct.repl_dst),
    ] {
        if let Some(n) = net {
            if !n.test(a) {
                return false;
            }
        }
    }
    for (r, p) in [
        (&c.orig_sport, ct.orig_sport),
        (&c.orig_dport, ct.orig_dport),
    ] {
        if let Some(r) = r {
            if !ct.has_ports || !r.test(p) {
                return false;
            }
        }
    }
    if let Some((mask, inv)) = c.status {
        if ((mask & ct.status) != 0) == inv {
            return false;
        }
    }
    true
}

impl CompiledRuleset {
    /// One side-table match. Kept out of line so that the rule scan in
    /// [`CompiledRuleset::run`] stays small.
    #[inline(never)]
    fn ext_match(&self, x: &Ext, ctx: &PacketCtx, buckets: &mut [Bucket], now_ns: u64) -> M {
        match x {
            Ext::Tcp {
                sport,
                dport,
                fl_mask,
                fl_comp,
                fl_inv,
                option,
                opt_inv,
            } => {
                if let Some(r) = l4_guard(ctx, true) {
                    return r;
                }
                if !sport.test(ctx.sport) || !dport.test(ctx.dport) {
                    return M::No;
                }
                if ((ctx.tcp_flags & fl_mask) == *fl_comp) == *fl_inv {
                    return M::No;
                }
                if *option != 0 {
                    if ctx.tcp_options_bad {
                        return M::Hotdrop;
                    }
                    let o = *option;
                    let found = ctx.tcp_options[usize::from(o >> 6)] >> (o & 63) & 1 != 0;
                    return m(found != *opt_inv);
                }
                M::Yes
            }
            Ext::Udp { sport, dport } => {
                if let Some(r) = l4_guard(ctx, false) {
                    return r;
                }
                m(sport.test(ctx.sport) && dport.test(ctx.dport))
            }
            Ext::Icmp {
                ty,
                code_lo,
                code_hi,
                inv,
            } => {
                if let Some(r) = l4_guard(ctx, false) {
                    return r;
                }
                let hit = *ty == 0xff
                    || (ctx.icmp_type == *ty
                        && ctx.icmp_code >= *code_lo
                        && ctx.icmp_code <= *code_hi);
                m(hit != *inv)
            }
            Ext::Multiport { dir, inv, n, ports } => {
                if let Some(r) = l4_guard(ctx, false) {
                    return r;
                }
                let (s, d) = (ctx.sport, ctx.dport);
                let list = ports.get(..usize::from(*n)).unwrap_or(&[]);
                for &[lo, hi] in list {
                    let hit = match dir {
                        MultiportDir::Source => s >= lo && s <= hi,
                        MultiportDir::Destination => d >= lo && d <= hi,
                        MultiportDir::Either => (s >= lo && s <= hi) || (d >= lo && d <= hi),
                    };
                    if hit {
                        return m(!*inv);
                    }
                }
                m(*inv)
            }
            Ext::Conntrack(c) => m(ct_match(c, &ctx.ct)),
            Ext::State { mask, inv } => m(((mask & ctx.ct.state & CT_BASIC) != 0) != *inv),
            Ext::Mark { value, mask, inv } => m(((ctx.mark & mask) == *value) != *inv),
            Ext::Ttl(t) => m(match *t {
                TtlMatch::Eq(v) => ctx.ttl == v,
                TtlMatch::Ne(v) => ctx.ttl != v,
                TtlMatch::Lt(v) => ctx.ttl < v,
                TtlMatch::Gt(v) => ctx.ttl > v,
            }),
            Ext::Length(r) => m(r.test(ctx.len)),
            Ext::Iprange { src, dst } => {
                if let Some((lo, hi, inv)) = src {
                    if (ctx.src >= *lo && ctx.src <= *hi) == *inv {
                        return M::No;
                    }
                }
                if let Some((lo, hi, inv)) = dst {
                    if (ctx.dst >= *lo && ctx.dst <= *hi) == *inv {
                        return M::No;
                    }
                }
                M::Yes
            }
            Ext::Limit {
                slot,
                cost,
                cap,
                nft,
            } => match buckets.get_mut(*slot as usize) {
                Some(b) if *nft => m(nft_limit_step(b, *cost, *cap, now_ns)),
                Some(b) => m(limit_step(b, *cost as u32, *cap as u32, now_ns)),
                None => M::No,
            },
            Ext::Addrtype { src, dst } => {
                if let Some((mask, inv)) = src {
                    if ((mask & ctx.src_type) != 0) == *inv {
                        return M::No;
                    }
                }
                if let Some((mask, inv)) = dst {
                    if ((mask & ctx.dst_type) != 0) == *inv {
                        return M::No;
                    }
                }
                M::Yes
            }
        }
    }

    /// Run the built-in chain of `hook` in `table` on one packet, with the
    /// kernel's `ipt_do_table` semantics. Counters, limit buckets and the jump
    /// stack live in `state` (which must come from [`RuleState::new`] on this
    /// ruleset). Never allocates. A (table, hook) pair that has no built-in
    /// chain (e.g. filter PREROUTING) returns ACCEPT.
    pub fn run(
        &self,
        table: Table,
        hook: Hook,
        ctx: &mut PacketCtx,
        state: &mut RuleState,
        now_ns: u64,
    ) -> Verdict {
        debug_assert_eq!(state.id, self.id, "RuleState from another CompiledRuleset");
        let Some((start, policy)) = self.hooks[table as usize][hook as usize] else {
            return Verdict::Accept;
        };
        // A built-in chain without rules: only its policy (counted).
        if start == policy {
            if let (Some(c), Some(e)) = (
                state.counters.get_mut(policy as usize),
                self.cold.get(policy as usize),
            ) {
                let v = match e.act {
                    Act::Accept => Some(Verdict::Accept),
                    Act::Drop => Some(Verdict::Drop),
                    _ => None,
                };
                if let Some(v) = v {
                    c.packets = c.packets.wrapping_add(1);
                    c.bytes = c.bytes.wrapping_add(u64::from(ctx.len));
                    if state.recording {
                        state.path.push(policy);
                    }
                    ctx.effects.last = policy;
                    return v;
                }
            }
        }
        let key = Key {
            in_bit: if_key(ctx.in_if, self.n_ifaces),
            out_bit: if_key(ctx.out_if, self.n_ifaces),
            clean: ctx.has_l4 && !ctx.fragment,
        };
        let bytes = u64::from(ctx.len);
        let RuleState {
            counters,
            buckets,
            stack,
            recording,
            path,
            ..
        } = state;
        let mut pc = start;
        let mut sp = 0usize;
        loop {
            let Some(h) = self.hot.get(pc as usize) else {
                return Verdict::Drop;
            };
            if !h.ip_match(ctx, &key) {
                pc += 1;
                continue;
            }
            let Some(e) = self.cold.get(pc as usize) else {
                return Verdict::Drop;
            };
            if e.ext_start != e.ext_end {
                let mut from = e.ext_start as usize;
                if key.clean && h.flags & F_EXT_SKIP != 0 {
                    from += 1;
                }
                let exts = self.exts.get(from..e.ext_end as usize).unwrap_or(&[]);
                let mut res = M::Yes;
                for x in exts {
                    res = self.ext_match(x, ctx, buckets, now_ns);
                    if res != M::Yes {
                        break;
                    }
                }
                match res {
                    M::Yes => {}
                    M::No => {
                        pc += 1;
                        continue;
                    }
                    M::Hotdrop => return Verdict::Drop,
                }
            }
            if let Some(c) = counters.get_mut(pc as usize) {
                c.packets = c.packets.wrapping_add(1);
                c.bytes = c.bytes.wrapping_add(bytes);
            }
            if *recording {
                path.push(pc);
            }
            match e.act {
                Act::Continue => {}
                Act::Accept => {
                    ctx.effects.last = pc;
                    return Verdict::Accept;
                }
                Act::Drop => {
                    ctx.effects.last = pc;
                    return Verdict::Drop;
                }
                Act::Reject(w) => {
                    ctx.effects.last = pc;
                    return Verdict::Reject(w);
                }
                Act::Nat => {
                    ctx.effects.last = pc;
                    return Verdict::Nat(pc);
                }
                Act::Return => {
                    if sp == 0 {
                        pc = policy;
                    } else {
                        sp -= 1;
                        match stack.get(sp) {
                            Some(&ret) => pc = ret + 1,
                            None => return Verdict::Drop,
                        }
                    }
                    continue;
                }
                Act::Jump(t) => {
                    let Some(slot) = stack.get_mut(sp) else {
                        return Verdict::Drop;
                    };
                    *slot = pc;
                    sp += 1;
                    pc = t;
                    continue;
                }
                Act::Goto(t) => {
                    pc = t;
                    continue;
                }
                Act::Log => {
                    let fx = &mut ctx.effects;
                    if usize::from(fx.log_count) < MAX_LOGS {
                        fx.logs[usize::from(fx.log_count)] = pc;
                        fx.log_count += 1;
                    } else {
                        fx.log_overflow = fx.log_overflow.saturating_add(1);
                    }
                }
                Act::Mark(x) => ctx.mark = (ctx.mark & !x.mask) ^ x.value,
                Act::Connmark(cm) => apply_connmark(ctx, cm),
                Act::Ttl(t) => {
                    let new = match t {
                        TtlTarget::Set(v) => v,
                        TtlTarget::Inc(v) => ctx.ttl.saturating_add(v),
                        TtlTarget::Dec(v) => ctx.ttl.saturating_sub(v),
                    };
                    if new != ctx.ttl {
                        ctx.ttl = new;
                        ctx.effects.ttl_changed = true;
                    }
                }
                Act::Notrack => apply_notrack(ctx),
                Act::Trace => ctx.effects.trace = true,
                Act::Tcpmss(v) => ctx.effects.tcpmss = Some(v),
            }
            pc += 1;
        }
    }

    /// What [`CompiledRuleset::run`] does for `table`/`hook` whatever the
    /// packet, when that is known from the ruleset alone: the chain is not
    /// there ([`Shortcut::Absent`]: ACCEPT, nothing counted) or it is a
    /// built-in chain without rules ([`Shortcut::Policy`]: its policy,
    /// counted). `None` when its rules must run. The data plane computes
    /// this once per ruleset and then skips the call for such chains.
    pub fn shortcut(&self, table: Table, hook: Hook) -> Option<Shortcut> {
        let Some((start, policy)) = self.hooks[table as usize][hook as usize] else {
            return Some(Shortcut::Absent);
        };
        if start != policy {
            return None;
        }
        match self.cold.get(policy as usize)?.act {
            Act::Accept => Some(Shortcut::Policy {
                entry: policy,
                verdict: Verdict::Accept,
            }),
            Act::Drop => Some(Shortcut::Policy {
                entry: policy,
                verdict: Verdict::Drop,
            }),
            _ => None,
        }
    }

    /// Whether `table`/`hook` takes the same way for every TCP or UDP
    /// packet (not a fragment) of one direction of one connection in the
    /// same conntrack state, given the same interfaces: every entry it can
    /// reach (through jumps and gotos) matches only on what such packets
    /// share (addresses, protocol, ports, interfaces, conntrack state,
    /// tuples and direction, the packet mark as earlier entries set it,
    /// address types). Then the entries one packet counted
    /// ([`RuleState::record`]) are the ones every later such packet would
    /// count, with the same verdict; if none of them has a target that acts
    /// on the packet or the connection ([`CompiledRuleset::replayable`]),
    /// the data plane may count them again ([`RuleState::replay`]) instead
    /// of running the chain (DESIGN.md: "a verdict may be cached per
    /// connection"). Not invariant: TCP flags and options, `-m length`,
    /// `-m ttl`, `-m limit`, `--ctstatus` (ASSURED comes later).
    pub fn flow_invariant(&self, table: Table, hook: Hook) -> bool {
        let Some((start, _)) = self.hooks[table as usize][hook as usize] else {
            return true;
        };
        let mut seen = vec![false; self.cold.len()];
        let mut todo = vec![start];
        while let Some(first) = todo.pop() {
            if std::mem::replace(seen.get_mut(first as usize).unwrap_or(&mut true), true) {
                continue;
            }
            let mut pc = first;
            loop {
                let (Some(h), Some(c), Some(info)) = (
                    self.hot.get(pc as usize),
                    self.cold.get(pc as usize),
                    self.infos.get(pc as usize),
                ) else {
                    return false;
                };
                if h.tfl_mask != 0 || !self.matches_invariant(c) {
                    return false;
                }
                if let Act::Jump(t) | Act::Goto(t) = c.act {
                    todo.push(t);
                }
                // The policy, or the implicit RETURN, ends the chain.
                if info.index == 0 {
                    break;
                }
                pc += 1;
            }
        }
        true
    }

    /// Whether counting `path` again stands for the run that recorded it:
    /// none of its entries has a target that acts on the packet or the
    /// connection (LOG, CONNMARK, TTL, NOTRACK, TRACE, TCPMSS) — deciding,
    /// jumping, returning and setting the packet mark are what the way
    /// itself is — except TTL among its first `ttl_until` entries, which the
    /// caller applies again ([`CompiledRuleset::ttl_target`]).
    pub fn replayable(&self, path: &Path, ttl_until: usize) -> bool {
        path.entries().iter().enumerate().all(|(i, &e)| {
            match self.cold.get(e as usize).map(|c| c.act) {
                Some(
                    Act::Continue
                    | Act::Accept
                    | Act::Drop
                    | Act::Reject(_)
                    | Act::Return
                    | Act::Jump(_)
                    | Act::Goto(_)
                    | Act::Nat
                    | Act::Mark(_),
                ) => true,
                Some(Act::Ttl(_)) => i < ttl_until,
                _ => false,
            }
        })
    }

    /// The `-j TTL` of entry `entry`, if that is its target.
    pub fn ttl_target(&self, entry: u32) -> Option<TtlTarget> {
        match self.cold.get(entry as usize)?.act {
            Act::Ttl(t) => Some(t),
            _ => None,
        }
    }

    /// [`CompiledRuleset::flow_invariant`] for one entry's side-table matches.
    fn matches_invariant(&self, c: &Cold) -> bool {
        let exts = self
            .exts
            .get(c.ext_start as usize..c.ext_end as usize)
            .unwrap_or(&[]);
        let exts_ok = exts.iter().all(|x| match x {
            Ext::Tcp {
                fl_mask, option, ..
            } => *fl_mask == 0 && *option == 0,
            Ext::Conntrack(m) => m.status.is_none(),
            Ext::Udp { .. }
            | Ext::Icmp { .. }
            | Ext::Multiport { .. }
            | Ext::State { .. }
            | Ext::Mark { .. }
            | Ext::Iprange { .. }
            | Ext::Addrtype { .. } => true,
            Ext::Ttl(_) | Ext::Length(_) | Ext::Limit { .. } => false,
        });
        exts_ok
    }

    /// What the data plane must compute per packet for this ruleset.
    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// The kernel flavour this ruleset was compiled for.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Where rule `id` (from [`Verdict::Nat`] or `Effects::logs`) comes from.
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

    /// A copy of `rs` (the ruleset this was compiled from) whose rule and
    /// policy counters are those `rs` was loaded with plus the sum over the
    /// workers' `states`.
    pub fn counters_into(&self, rs: &Ruleset, states: &[&RuleState]) -> Ruleset {
        let mut out = rs.clone();
        let sum = |idx: u32| -> Counters {
            let mut c = Counters::default();
            for s in states {
                if let Some(x) = s.counters.get(idx as usize) {
                    c.packets += x.packets;
                    c.bytes += x.bytes;
                }
            }
            c
        };
        for (ti, t) in out.tables.iter_mut().enumerate() {
            let Some(lays) = self.layout.get(ti) else {
                continue;
            };
            for (ci, ch) in t.chains.iter_mut().enumerate() {
                let Some(lay) = lays.get(ci) else { continue };
                if lay.nrules as usize == ch.rules.len() {
                    for (ri, r) in ch.rules.iter_mut().enumerate() {
                        let c = sum(lay.rules_start + ri as u32);
                        r.counters.packets += c.packets;
                        r.counters.bytes += c.bytes;
                    }
                }
                if let Some(p) = lay.policy {
                    let c = sum(p);
                    ch.counters.packets += c.packets;
                    ch.counters.bytes += c.bytes;
                }
            }
        }
        out
    }
}

fn apply_connmark(ctx: &mut PacketCtx, cm: ConnmarkTarget) {
    if ctx.ct.state & CT_TRACKED == 0 {
        return;
    }
    match cm {
        ConnmarkTarget::Set(x) => {
            let new = (ctx.ct.mark & !x.mask) ^ x.value;
            if new != ctx.ct.mark {
                ctx.ct.mark = new;
                ctx.effects.ctmark_changed = true;
            }
        }
        ConnmarkTarget::Save { nfmask, ctmask } => {
            let new = (ctx.ct.mark & !ctmask) ^ (ctx.mark & nfmask);
            if new != ctx.ct.mark {
                ctx.ct.mark = new;
                ctx.effects.ctmark_changed = true;
            }
        }
        ConnmarkTarget::Restore { nfmask, ctmask } => {
            ctx.mark = (ctx.mark & !nfmask) ^ (ctx.ct.mark & ctmask);
        }
    }
}

/// NOTRACK / CT --notrack: a packet that already has a connection is left
/// alone (the kernel's "previously seen" case); otherwise it becomes UNTRACKED.
fn apply_notrack(ctx: &mut PacketCtx) {
    if ctx.ct.state & CT_TRACKED != 0 {
        return;
    }
    ctx.effects.notrack = true;
    ctx.ct = crate::ctx::CtCtx::untracked();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::{tcp_option_kinds, CtCtx};
    use crate::model::*;
    use std::net::Ipv4Addr;

    const IFACES: &[&str] = &["eth0", "eth1", "docker0", "veth1a"];

    fn rule(target: Target) -> Rule {
        Rule {
            src: None,
            dst: None,
            in_iface: None,
            out_iface: None,
            proto: None,
            fragment: None,
            matches: vec![],
            target,
            counters: Counters::default(),
            line: 7,
        }
    }

    fn tcp_rule(target: Target, t: TcpMatch) -> Rule {
        Rule {
            proto: Some(Neg { inv: false, val: 6 }),
            matches: vec![Match::Tcp(t)],
            ..rule(target)
        }
    }

    fn chain(name: &str, policy: Option<Policy>, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            policy,
            counters: Counters::default(),
            rules,
        }
    }

    /// A ruleset with one table: built-in chains `builtins` (others empty,
    /// ACCEPT), plus user chains.
    fn table(
        t: Table,
        builtins: Vec<(Hook, Policy, Vec<Rule>)>,
        users: Vec<(&str, Vec<Rule>)>,
    ) -> Ruleset {
        let mut chains = Vec::new();
        for h in t.builtin_hooks() {
            match builtins.iter().find(|b| b.0 == *h) {
                Some((_, p, r)) => chains.push(chain(h.chain_name(), Some(*p), r.clone())),
                None => chains.push(chain(h.chain_name(), Some(Policy::Accept), vec![])),
            }
        }
        for (n, r) in users {
            chains.push(chain(n, None, r));
        }
        Ruleset {
            tables: vec![TableRules { table: t, chains }],
        }
    }

    fn filter_input(rules: Vec<Rule>) -> Ruleset {
        table(
            Table::Filter,
            vec![(Hook::Input, Policy::Drop, rules)],
            vec![],
        )
    }

    fn net(a: [u8; 4], len: u8) -> Ipv4Net {
        Ipv4Net::prefix(Ipv4Addr::from(a), len)
    }

    fn pos<T>(val: T) -> Neg<T> {
        Neg { inv: false, val }
    }

    fn neg<T>(val: T) -> Neg<T> {
        Neg { inv: true, val }
    }

    fn pr(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    fn ip(a: [u8; 4]) -> u32 {
        u32::from(Ipv4Addr::from(a))
    }

    fn tcp_pkt(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> PacketCtx {
        let mut p = PacketCtx::new();
        p.src = ip(src);
        p.dst = ip(dst);
        p.proto = 6;
        p.ttl = 64;
        p.len = 60;
        p.has_l4 = true;
        p.sport = sport;
        p.dport = dport;
        p.tcp_flags = 0x02;
        p.in_if = Some(0);
        p
    }

    fn tracked(state: u8) -> CtCtx {
        CtCtx {
            state,
            orig_src: ip([10, 0, 0, 1]),
            orig_dst: ip([192, 168, 0, 2]),
            repl_src: ip([192, 168, 0, 2]),
            repl_dst: ip([10, 0, 2, 15]),
            orig_sport: 40000,
            orig_dport: 80,
            has_ports: true,
            ..CtCtx::default()
        }
    }

    struct T {
        c: CompiledRuleset,
        s: RuleState,
    }

    impl T {
        fn new(rs: &Ruleset) -> T {
            let c = CompiledRuleset::compile(rs, IFACES).expect("compile");
            let s = RuleState::new(&c);
            T { c, s }
        }
        fn run(&mut self, t: Table, h: Hook, p: &mut PacketCtx) -> Verdict {
            self.c.run(t, h, p, &mut self.s, 0)
        }
        fn input(&mut self, p: &PacketCtx) -> Verdict {
            let mut p = *p;
            self.run(Table::Filter, Hook::Input, &mut p)
        }
        fn counters(&self, rs: &Ruleset) -> Ruleset {
            self.c.counters_into(rs, &[&self.s])
        }
    }

    /// Whether a single-rule ACCEPT ruleset (policy DROP) accepts `p`.
    fn hit(r: Rule, p: &PacketCtx) -> bool {
        let mut t = T::new(&filter_input(vec![r]));
        match t.input(p) {
            Verdict::Accept => true,
            Verdict::Drop => false,
            v => panic!("unexpected {v:?}"),
        }
    }

    fn with_matches(ms: Vec<Match>) -> Rule {
        Rule {
            matches: ms,
            ..rule(Target::Accept)
        }
    }

    #[test]
    fn absent_tables_and_hooks_accept() {
        let mut t = T::new(&Ruleset::default());
        let mut p = tcp_pkt([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
        for table in Table::ALL {
            for hook in Hook::ALL {
                assert_eq!(t.run(table, hook, &mut p), Verdict::Accept);
            }
        }
        // Filter has no PREROUTING even when present.
        let mut t = T::new(&table(
            Table::Filter,
            vec![(Hook::Input, Policy::Drop, vec![])],
            vec![],
        ));
        assert_eq!(
            t.run(Table::Filter, Hook::Prerouting, &mut p),
            Verdict::Accept
        );
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut p), Verdict::Drop);
        assert_eq!(t.run(Table::Filter, Hook::Forward, &mut p), Verdict::Accept);
    }

    #[test]
    fn addresses_and_inversion() {
        let p = tcp_pkt([10, 1, 2, 3], [192, 168, 1, 1], 1000, 80);
        let r = |src: Option<Neg<Ipv4Net>>, dst: Option<Neg<Ipv4Net>>| Rule {
            src,
            dst,
            ..rule(Target::Accept)
        };
        assert!(hit(r(Some(pos(net([10, 0, 0, 0], 8))), None), &p));
        assert!(!hit(r(Some(neg(net([10, 0, 0, 0], 8))), None), &p));
        assert!(!hit(r(Some(pos(net([10, 1, 2, 4], 32))), None), &p));
        assert!(hit(r(Some(neg(net([10, 1, 2, 4], 32))), None), &p));
        assert!(hit(r(None, Some(pos(net([192, 168, 0, 0], 16)))), &p));
        assert!(!hit(r(None, Some(pos(net([192, 168, 2, 0], 24)))), &p));
        assert!(hit(
            r(
                Some(pos(net([0, 0, 0, 0], 0))),
                Some(pos(net([192, 168, 1, 1], 32)))
            ),
            &p
        ));
        // An unmasked address is masked like iptables does.
        assert!(hit(r(Some(pos(net([10, 9, 9, 9], 8))), None), &p));
    }

    #[test]
    fn non_contiguous_masks() {
        let p = tcp_pkt([10, 1, 2, 3], [192, 168, 1, 1], 1000, 80);
        let d = |a: [u8; 4], m: [u8; 4]| Ipv4Net {
            addr: Ipv4Addr::from(a),
            mask: u32::from(Ipv4Addr::from(m)),
        };
        let r = |src: Option<Neg<Ipv4Net>>, dst: Option<Neg<Ipv4Net>>| Rule {
            src,
            dst,
            ..rule(Target::Accept)
        };
        // 10.1.2.3 & 255.0.255.0 == 10.0.2.0
        assert!(hit(
            r(Some(pos(d([10, 0, 2, 0], [255, 0, 255, 0]))), None),
            &p
        ));
        assert!(!hit(
            r(Some(neg(d([10, 0, 2, 0], [255, 0, 255, 0]))), None),
            &p
        ));
        assert!(!hit(
            r(Some(pos(d([10, 0, 1, 0], [255, 0, 255, 0]))), None),
            &p
        ));
        assert!(hit(r(Some(pos(d([0, 0, 0, 3], [0, 0, 0, 255]))), None), &p));
        assert!(!hit(
            r(None, Some(pos(d([0, 0, 0, 2], [0, 0, 0, 255])))),
            &p
        ));
        assert!(hit(r(None, Some(neg(d([0, 0, 0, 2], [0, 0, 0, 255])))), &p));
        // Host bits outside the mask are ignored, as for prefixes.
        assert!(hit(
            r(Some(pos(d([10, 9, 2, 9], [255, 0, 255, 0]))), None),
            &p
        ));
        // Conntrack tuple addresses too.
        let mut p = p;
        p.ct = tracked(CtStateSet::ESTABLISHED);
        p.ct.orig_src = ip([10, 1, 2, 3]);
        let ct = |n: Neg<Ipv4Net>| {
            with_matches(vec![Match::Conntrack(ConntrackMatch {
                orig_src: Some(n),
                ..Default::default()
            })])
        };
        assert!(hit(ct(pos(d([10, 7, 2, 7], [255, 0, 255, 0]))), &p));
        assert!(!hit(ct(pos(d([10, 7, 3, 7], [255, 0, 255, 0]))), &p));
        assert!(hit(ct(neg(d([10, 7, 3, 7], [255, 0, 255, 0]))), &p));
    }

    #[test]
    fn protocol() {
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        let r = |n: Neg<u8>| Rule {
            proto: Some(n),
            ..rule(Target::Accept)
        };
        assert!(hit(r(pos(6)), &p));
        assert!(!hit(r(pos(17)), &p));
        assert!(hit(r(neg(17)), &p));
        assert!(!hit(r(neg(6)), &p));
    }

    #[test]
    fn interfaces() {
        let r = |i: Option<Neg<&str>>, o: Option<Neg<&str>>| Rule {
            in_iface: i.map(|n| Neg {
                inv: n.inv,
                val: IfaceName(n.val.into()),
            }),
            out_iface: o.map(|n| Neg {
                inv: n.inv,
                val: IfaceName(n.val.into()),
            }),
            ..rule(Target::Accept)
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        p.in_if = Some(1); // eth1
        p.out_if = Some(2); // docker0
        assert!(hit(r(Some(pos("eth1")), None), &p));
        assert!(!hit(r(Some(pos("eth0")), None), &p));
        assert!(hit(r(Some(pos("eth+")), None), &p));
        assert!(!hit(r(Some(pos("eth1+")), Some(pos("eth+"))), &p));
        assert!(hit(r(Some(pos("eth1+")), Some(pos("docker0"))), &p));
        assert!(!hit(r(None, Some(neg("docker0"))), &p));
        assert!(hit(r(None, Some(neg("eth0"))), &p));
        assert!(hit(r(Some(pos("+")), Some(pos("+"))), &p));
        // A name that exists nowhere matches nothing, and its negation everything.
        assert!(!hit(r(Some(pos("wlan0")), None), &p));
        assert!(hit(r(Some(neg("wlan0")), None), &p));
        // `eth1` does not match `eth10`-like names: exact means exact.
        p.in_if = Some(3); // veth1a
        assert!(!hit(r(Some(pos("veth1")), None), &p));
        assert!(hit(r(Some(pos("veth1+")), None), &p));
        // No device (locally generated): only `+` matches, negations match.
        p.in_if = None;
        assert!(!hit(r(Some(pos("eth0")), None), &p));
        assert!(hit(r(Some(neg("eth0")), None), &p));
        assert!(hit(r(Some(pos("+")), None), &p));
        assert!(!hit(r(Some(neg("+")), None), &p));
        // An index without a configured name.
        p.in_if = Some(9);
        assert!(!hit(r(Some(pos("eth+")), None), &p));
        assert!(hit(r(Some(pos("+")), None), &p));
        assert!(hit(r(Some(neg("eth0")), None), &p));
    }

    #[test]
    fn fragment_flag() {
        let r = |inv: bool| Rule {
            fragment: Some(inv),
            ..rule(Target::Accept)
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert!(!hit(r(false), &p));
        assert!(hit(r(true), &p));
        p.set_frag_offset(185);
        assert!(hit(r(false), &p));
        assert!(!hit(r(true), &p));
    }

    #[test]
    fn tcp_ports_and_flags() {
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 40000, 22);
        let t = |t: TcpMatch| tcp_rule(Target::Accept, t);
        assert!(hit(
            t(TcpMatch {
                dport: Some(pos(pr(22, 22))),
                ..Default::default()
            }),
            &p
        ));
        assert!(!hit(
            t(TcpMatch {
                dport: Some(pos(pr(80, 80))),
                ..Default::default()
            }),
            &p
        ));
        assert!(hit(
            t(TcpMatch {
                dport: Some(neg(pr(80, 80))),
                ..Default::default()
            }),
            &p
        ));
        assert!(hit(
            t(TcpMatch {
                sport: Some(pos(pr(1024, 65535))),
                ..Default::default()
            }),
            &p
        ));
        assert!(!hit(
            t(TcpMatch {
                sport: Some(neg(pr(1024, 65535))),
                ..Default::default()
            }),
            &p
        ));
        let syn = TcpFlags {
            mask: 0x17,
            comp: 0x02,
        };
        assert!(hit(
            t(TcpMatch {
                flags: Some(pos(syn)),
                ..Default::default()
            }),
            &p
        ));
        assert!(!hit(
            t(TcpMatch {
                flags: Some(neg(syn)),
                ..Default::default()
            }),
            &p
        ));
        let mut ack = p;
        ack.tcp_flags = 0x10;
        assert!(!hit(
            t(TcpMatch {
                flags: Some(pos(syn)),
                ..Default::default()
            }),
            &ack
        ));
        // A tcp match that is not the first match (comment first) still works.
        let mut r = t(TcpMatch {
            dport: Some(pos(pr(22, 22))),
            ..Default::default()
        });
        r.matches.insert(0, Match::Comment("x".into()));
        assert!(hit(r.clone(), &p));
        r.matches[1] = Match::Tcp(TcpMatch {
            dport: Some(pos(pr(23, 23))),
            ..Default::default()
        });
        assert!(!hit(r, &p));
    }

    #[test]
    fn tcp_fragments_and_tinygrams() {
        let rs = filter_input(vec![
            tcp_rule(
                Target::Accept,
                TcpMatch {
                    dport: Some(neg(pr(1, 1))),
                    ..Default::default()
                },
            ),
            rule(Target::Accept),
        ]);
        let mut t = T::new(&rs);
        // A non-first fragment does not match a port match: falls to rule 2.
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 5, 6);
        p.set_frag_offset(100);
        p.has_l4 = false;
        assert_eq!(t.input(&p), Verdict::Accept);
        // Offset 1 (8 bytes) is dropped by the tcp match (hotdrop).
        p.set_frag_offset(1);
        assert_eq!(t.input(&p), Verdict::Drop);
        // A truncated TCP header on a first fragment / whole packet: hotdrop.
        let mut q = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 5, 6);
        q.has_l4 = false;
        assert_eq!(t.input(&q), Verdict::Drop);
        let out = t.counters(&rs);
        let ch = &out.tables[0].chains[0];
        assert_eq!(ch.rules[0].counters.packets, 0);
        assert_eq!(ch.rules[1].counters.packets, 1);
        // Hotdrop is not the policy: policy counter untouched.
        assert_eq!(ch.counters.packets, 0);
        // A hotdrop happens only if the rule's earlier criteria matched.
        let rs = filter_input(vec![
            Rule {
                src: Some(pos(net([9, 9, 9, 9], 32))),
                ..tcp_rule(Target::Accept, TcpMatch::default())
            },
            rule(Target::Accept),
        ]);
        assert_eq!(T::new(&rs).input(&q), Verdict::Accept);
    }

    #[test]
    fn udp_icmp_multiport_hotdrop_and_fragments() {
        let udp = Rule {
            proto: Some(pos(17)),
            matches: vec![Match::Udp(UdpMatch {
                dport: Some(pos(pr(53, 53))),
                ..Default::default()
            })],
            ..rule(Target::Accept)
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 3333, 53);
        p.proto = 17;
        assert!(hit(udp.clone(), &p));
        p.dport = 54;
        assert!(!hit(udp.clone(), &p));
        p.dport = 53;
        let rs = filter_input(vec![udp, rule(Target::Accept)]);
        let mut t = T::new(&rs);
        let mut f = p;
        f.set_frag_offset(1);
        assert_eq!(
            t.input(&f),
            Verdict::Accept,
            "udp fragment: no match, no drop"
        );
        let mut short = p;
        short.has_l4 = false;
        assert_eq!(t.input(&short), Verdict::Drop, "udp tinygram hotdrop");

        let icmp = |ty: u8, lo: u8, hi: u8, inv: bool| Rule {
            proto: Some(pos(1)),
            matches: vec![Match::Icmp(Neg {
                inv,
                val: IcmpType {
                    ty,
                    code_lo: lo,
                    code_hi: hi,
                },
            })],
            ..rule(Target::Accept)
        };
        let mut e = PacketCtx::new();
        e.proto = 1;
        e.has_l4 = true;
        e.icmp_type = 3;
        e.icmp_code = 4;
        assert!(hit(icmp(3, 0, 255, false), &e));
        assert!(hit(icmp(3, 4, 4, false), &e));
        assert!(!hit(icmp(3, 3, 3, false), &e));
        assert!(hit(icmp(3, 3, 3, true), &e));
        assert!(!hit(icmp(8, 0, 255, false), &e));
        assert!(hit(icmp(255, 0, 255, false), &e));
        assert!(!hit(icmp(255, 0, 255, true), &e));
        let mut et = e;
        et.has_l4 = false;
        let mut t = T::new(&filter_input(vec![
            icmp(8, 0, 255, false),
            rule(Target::Accept),
        ]));
        assert_eq!(t.input(&et), Verdict::Drop);

        let mp = |dir: MultiportDir, inv: bool, ports: Vec<PortRange>| Rule {
            proto: Some(pos(6)),
            matches: vec![Match::Multiport(MultiportMatch { dir, inv, ports })],
            ..rule(Target::Accept)
        };
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 5000, 443);
        let ps = vec![pr(22, 22), pr(80, 80), pr(440, 450)];
        assert!(hit(mp(MultiportDir::Destination, false, ps.clone()), &p));
        assert!(!hit(mp(MultiportDir::Destination, true, ps.clone()), &p));
        assert!(!hit(mp(MultiportDir::Source, false, ps.clone()), &p));
        assert!(hit(mp(MultiportDir::Source, true, ps.clone()), &p));
        assert!(hit(
            mp(MultiportDir::Either, false, vec![pr(4000, 5000)]),
            &p
        ));
        assert!(!hit(
            mp(MultiportDir::Either, false, vec![pr(1, 442), pr(444, 4999)]),
            &p
        ));
        let mut fr = p;
        fr.set_frag_offset(3);
        assert!(!hit(mp(MultiportDir::Source, true, ps.clone()), &fr));
        let mut t = T::new(&filter_input(vec![
            mp(MultiportDir::Source, true, ps),
            rule(Target::Accept),
        ]));
        let mut short = p;
        short.has_l4 = false;
        assert_eq!(t.input(&short), Verdict::Drop);
    }

    #[test]
    fn tcp_option() {
        let r = |inv: bool| {
            tcp_rule(
                Target::Accept,
                TcpMatch {
                    option: Some(Neg { inv, val: 2 }),
                    ..Default::default()
                },
            )
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        // MSS option, NOP, NOP, SACK-permitted.
        p.tcp_options = tcp_option_kinds(&[2, 4, 5, 0xb4, 1, 1, 4, 2]);
        assert!(hit(r(false), &p));
        assert!(!hit(r(true), &p));
        p.tcp_options = tcp_option_kinds(&[1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(!hit(r(false), &p));
        assert!(hit(r(true), &p));
        p.tcp_options_bad = true;
        let mut t = T::new(&filter_input(vec![r(true), rule(Target::Accept)]));
        assert_eq!(t.input(&p), Verdict::Drop);
        assert!(T::new(&filter_input(vec![r(true)])).c.needs().tcp_options);
    }

    #[test]
    fn tcp_option_walk_is_the_kernels() {
        // EOL does not stop the walk; a zero length advances by one.
        let b = tcp_option_kinds(&[0, 3, 3, 7, 200, 0, 5]);
        let has = |k: u8| b[usize::from(k / 64)] >> (k % 64) & 1 == 1;
        assert!(has(0) && has(3) && has(200));
        assert!(!has(7), "7 is inside option 3's payload");
        assert!(has(5), "length 0 of option 200 advances by one byte");
        // Truncated length byte at the end.
        let b = tcp_option_kinds(&[1, 30]);
        assert_eq!(b[0], 1 << 1 | 1 << 30);
    }

    #[test]
    fn conntrack_match() {
        use CtStateSet as S;
        let ctm = |c: ConntrackMatch| with_matches(vec![Match::Conntrack(c)]);
        let st = |inv: bool, bits: u8| ConntrackMatch {
            state: Some(Neg {
                inv,
                val: CtStateSet(bits),
            }),
            ..Default::default()
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        p.ct = tracked(S::ESTABLISHED);
        assert!(hit(ctm(st(false, S::ESTABLISHED | S::RELATED)), &p));
        assert!(!hit(ctm(st(false, S::NEW)), &p));
        assert!(hit(ctm(st(true, S::NEW)), &p));
        assert!(!hit(ctm(st(false, S::SNAT)), &p));
        p.ct.status = CtStatusSet::SRC_NAT;
        assert!(hit(ctm(st(false, S::SNAT)), &p));
        assert!(!hit(ctm(st(false, S::DNAT)), &p));
        p.ct.state |= S::DNAT;
        assert!(hit(ctm(st(false, S::DNAT)), &p));
        // Untracked: the state test applies; other criteria are then ignored
        // when a state was given (ct == NULL returns "state given").
        let mut u = p;
        u.ct = CtCtx::untracked();
        assert!(hit(ctm(st(false, S::UNTRACKED)), &u));
        assert!(hit(ctm(st(true, S::NEW)), &u));
        let with_addr = ConntrackMatch {
            orig_src: Some(pos(net([99, 0, 0, 0], 8))),
            ..st(false, S::UNTRACKED)
        };
        assert!(hit(ctm(with_addr), &u));
        let only_status = ConntrackMatch {
            status: Some(neg(CtStatusSet(CtStatusSet::ASSURED))),
            ..Default::default()
        };
        assert!(
            !hit(ctm(only_status.clone()), &u),
            "no ct, no state option: no match"
        );
        assert!(hit(ctm(only_status), &p));
        let mut inv = u;
        inv.ct.state = S::INVALID;
        assert!(hit(ctm(st(false, S::INVALID)), &inv));
        // Status: any of the bits.
        p.ct.status = CtStatusSet::ASSURED | CtStatusSet::CONFIRMED;
        let status = |inv: bool, bits: u32| ConntrackMatch {
            status: Some(Neg {
                inv,
                val: CtStatusSet(bits),
            }),
            ..Default::default()
        };
        assert!(hit(
            ctm(status(
                false,
                CtStatusSet::SEEN_REPLY | CtStatusSet::CONFIRMED
            )),
            &p
        ));
        assert!(!hit(ctm(status(false, CtStatusSet::EXPECTED)), &p));
        assert!(hit(ctm(status(true, CtStatusSet::EXPECTED)), &p));
        // Tuple addresses and ports.
        let c = ConntrackMatch {
            orig_src: Some(pos(net([10, 0, 0, 0], 8))),
            orig_dst: Some(pos(net([192, 168, 0, 2], 32))),
            repl_src: Some(neg(net([172, 16, 0, 0], 12))),
            repl_dst: Some(pos(net([10, 0, 2, 15], 32))),
            orig_src_port: Some(pos(pr(1024, 65535))),
            orig_dst_port: Some(pos(pr(80, 80))),
            ..Default::default()
        };
        assert!(hit(ctm(c.clone()), &p));
        let mut c2 = c.clone();
        c2.orig_dst_port = Some(neg(pr(80, 80)));
        assert!(!hit(ctm(c2), &p));
        let mut c3 = c.clone();
        c3.repl_dst = Some(neg(net([10, 0, 2, 15], 32)));
        assert!(!hit(ctm(c3), &p));
        let mut np = p;
        np.ct.has_ports = false;
        assert!(!hit(ctm(c), &np));
        assert!(
            T::new(&filter_input(vec![ctm(st(false, S::NEW))]))
                .c
                .needs()
                .conntrack
        );
    }

    #[test]
    fn state_comment_mark_ttl_length_iprange_addrtype() {
        use CtStateSet as S;
        let mut p = tcp_pkt([10, 0, 0, 5], [10, 0, 1, 9], 1, 2);
        p.ct = tracked(S::NEW);
        p.ct.status = CtStatusSet::SRC_NAT;
        let state = |inv: bool, b: u8| {
            with_matches(vec![Match::State(Neg {
                inv,
                val: CtStateSet(b),
            })])
        };
        assert!(hit(state(false, S::NEW), &p));
        assert!(!hit(state(true, S::NEW), &p));
        p.ct = CtCtx::untracked();
        assert!(hit(state(false, S::UNTRACKED), &p));
        assert!(!hit(state(false, S::INVALID), &p));

        assert!(hit(with_matches(vec![Match::Comment("hello".into())]), &p));

        p.mark = 0x1234;
        let mark = |inv, value, mask| {
            with_matches(vec![Match::Mark(Neg {
                inv,
                val: MarkMask { value, mask },
            })])
        };
        assert!(hit(mark(false, 0x1234, 0xffff_ffff), &p));
        assert!(hit(mark(false, 0x30, 0xf0), &p));
        assert!(!hit(mark(false, 0x20, 0xf0), &p));
        assert!(hit(mark(true, 0x20, 0xf0), &p));

        p.ttl = 64;
        let ttl = |t| with_matches(vec![Match::Ttl(t)]);
        assert!(hit(ttl(TtlMatch::Eq(64)), &p));
        assert!(!hit(ttl(TtlMatch::Ne(64)), &p));
        assert!(hit(ttl(TtlMatch::Lt(65)), &p));
        assert!(!hit(ttl(TtlMatch::Lt(64)), &p));
        assert!(hit(ttl(TtlMatch::Gt(63)), &p));
        assert!(!hit(ttl(TtlMatch::Gt(64)), &p));

        p.len = 1500;
        let len = |n| with_matches(vec![Match::Length(n)]);
        assert!(hit(len(pos(pr(1000, 1500))), &p));
        assert!(!hit(len(pos(pr(0, 1499))), &p));
        assert!(hit(len(neg(pr(0, 1499))), &p));

        let a = Ipv4Addr::new;
        let ipr = |src, dst| with_matches(vec![Match::Iprange(IprangeMatch { src, dst })]);
        assert!(hit(
            ipr(Some(pos((a(10, 0, 0, 1), a(10, 0, 0, 5)))), None),
            &p
        ));
        assert!(!hit(
            ipr(Some(pos((a(10, 0, 0, 6), a(10, 0, 0, 9)))), None),
            &p
        ));
        assert!(hit(
            ipr(Some(neg((a(10, 0, 0, 6), a(10, 0, 0, 9)))), None),
            &p
        ));
        assert!(!hit(
            ipr(
                Some(pos((a(10, 0, 0, 1), a(10, 0, 0, 5)))),
                Some(neg((a(10, 0, 1, 0), a(10, 0, 1, 255))))
            ),
            &p
        ));

        p.src_type = AddrTypeSet::UNICAST;
        p.dst_type = AddrTypeSet::LOCAL;
        let at = |src: Option<Neg<u16>>, dst: Option<Neg<u16>>| {
            with_matches(vec![Match::Addrtype(AddrtypeMatch {
                src: src.map(|n| Neg {
                    inv: n.inv,
                    val: AddrTypeSet(n.val),
                }),
                dst: dst.map(|n| Neg {
                    inv: n.inv,
                    val: AddrTypeSet(n.val),
                }),
                ..Default::default()
            })])
        };
        assert!(hit(at(None, Some(pos(AddrTypeSet::LOCAL))), &p));
        assert!(hit(
            at(None, Some(pos(AddrTypeSet::LOCAL | AddrTypeSet::BROADCAST))),
            &p
        ));
        assert!(!hit(at(None, Some(neg(AddrTypeSet::LOCAL))), &p));
        assert!(!hit(at(Some(pos(AddrTypeSet::LOCAL)), None), &p));
        assert!(hit(
            at(Some(neg(AddrTypeSet::LOCAL)), Some(pos(AddrTypeSet::LOCAL))),
            &p
        ));
        assert!(
            T::new(&filter_input(vec![at(None, Some(pos(1)))]))
                .c
                .needs()
                .addrtype
        );
        let bad = with_matches(vec![Match::Addrtype(AddrtypeMatch {
            dst: Some(pos(AddrTypeSet(AddrTypeSet::LOCAL))),
            limit_iface_in: true,
            ..Default::default()
        })]);
        let err = CompiledRuleset::compile(&filter_input(vec![bad]), IFACES).unwrap_err();
        assert_eq!(err, CompileError::AddrtypeLimitIface { line: 7 });
        assert!(err.to_string().contains("line 7"));
    }

    #[test]
    fn limit_token_bucket() {
        // 1/second, burst 2, at HZ=250: cost 32000, cap 64000, 128 credits per jiffy.
        let l = LimitMatch {
            rate: 1,
            unit: LimitUnit::Second,
            burst: 2,
        };
        assert_eq!(limit_params(&l), Some((32000, 64000)));
        let rs = filter_input(vec![with_matches(vec![Match::Limit(l)])]);
        let mut t = T::new(&rs);
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        let ms = 1_000_000u64;
        let mut at = |ns: u64| {
            let mut q = p;
            t.c.run(Table::Filter, Hook::Input, &mut q, &mut t.s, ns)
        };
        let base = 5_000 * ms;
        assert_eq!(at(base), Verdict::Accept);
        assert_eq!(at(base), Verdict::Accept);
        assert_eq!(at(base + 3 * ms), Verdict::Drop);
        // 249 jiffies later: 31872 credits < cost.
        assert_eq!(at(base + 996 * ms), Verdict::Drop);
        // One more jiffy: 32000.
        assert_eq!(at(base + 1000 * ms), Verdict::Accept);
        assert_eq!(at(base + 1000 * ms), Verdict::Drop);
        // A long pause refills only up to the burst.
        assert_eq!(at(base + 100_000 * ms), Verdict::Accept);
        assert_eq!(at(base + 100_000 * ms), Verdict::Accept);
        assert_eq!(at(base + 100_000 * ms), Verdict::Drop);
        // Time going backwards adds nothing.
        assert_eq!(at(base), Verdict::Drop);
        // Default 3/hour burst 5.
        let d = LimitMatch {
            rate: 3,
            unit: LimitUnit::Hour,
            burst: 5,
        };
        let (cost, cap) = limit_params(&d).unwrap();
        assert_eq!(cost, 12_000_000 / 10_000 * 250 * 128);
        assert_eq!(cap, 60_000_000 / 10_000 * 250 * 128);
        // Refused rates.
        for bad in [
            LimitMatch {
                rate: 0,
                unit: LimitUnit::Second,
                burst: 5,
            },
            LimitMatch {
                rate: 20_000,
                unit: LimitUnit::Second,
                burst: 5,
            },
            LimitMatch {
                rate: 1,
                unit: LimitUnit::Second,
                burst: 0,
            },
        ] {
            let rs = filter_input(vec![with_matches(vec![Match::Limit(bad)])]);
            assert!(matches!(
                CompiledRuleset::compile(&rs, IFACES),
                Err(CompileError::BadLimit { line: 7, .. })
            ));
        }
    }

    #[test]
    fn nft_limit_token_bucket() {
        let l = LimitMatch {
            rate: 1,
            unit: LimitUnit::Second,
            burst: 2,
        };
        assert_eq!(nft_limit_params(&l), Some((1_000_000_000, 2_000_000_000)));
        // iptables-nft's rate/unit reconstruction.
        let p = |rate, unit| {
            nft_limit_params(&LimitMatch {
                rate,
                unit,
                burst: 1,
            })
            .unwrap()
            .0
        };
        assert_eq!(p(7, LimitUnit::Day), 86_400_000_000_000 / 7);
        assert_eq!(p(13, LimitUnit::Minute), 60_000_000_000 / 13);
        assert_eq!(p(3, LimitUnit::Hour), 1_200_000_000_000);
        assert_eq!(p(7, LimitUnit::Second), 1_000_000_000 / 7);
        let rs = filter_input(vec![with_matches(vec![Match::Limit(l)])]);
        let c = CompiledRuleset::compile_with(
            &rs,
            IFACES,
            CompileOptions {
                flavor: Flavor::Nft,
            },
        )
        .unwrap();
        assert_eq!(c.flavor(), Flavor::Nft);
        let mut s = RuleState::new(&c);
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        let ms = 1_000_000u64;
        let mut at = |ns: u64| {
            let mut q = p;
            c.run(Table::Filter, Hook::Input, &mut q, &mut s, ns)
        };
        let base = 5_000 * ms;
        assert_eq!(at(base), Verdict::Accept);
        assert_eq!(at(base), Verdict::Accept);
        assert_eq!(at(base), Verdict::Drop);
        // Tokens accumulate across failed attempts (nanosecond precision).
        assert_eq!(at(base + 999 * ms), Verdict::Drop);
        assert_eq!(at(base + 1000 * ms), Verdict::Accept);
        assert_eq!(at(base + 1000 * ms), Verdict::Drop);
        assert_eq!(at(base + 100_000 * ms), Verdict::Accept);
        assert_eq!(at(base + 100_000 * ms), Verdict::Accept);
        assert_eq!(at(base + 100_000 * ms), Verdict::Drop);
    }

    #[test]
    fn limit_is_evaluated_only_when_reached() {
        // The limit after a failing match must not consume credit.
        let l = LimitMatch {
            rate: 1,
            unit: LimitUnit::Hour,
            burst: 1,
        };
        let rs = filter_input(vec![with_matches(vec![
            Match::Mark(pos(MarkMask { value: 1, mask: 1 })),
            Match::Limit(l),
        ])]);
        let mut t = T::new(&rs);
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.input(&p), Verdict::Drop);
        p.mark = 1;
        assert_eq!(t.input(&p), Verdict::Accept);
        assert_eq!(t.input(&p), Verdict::Drop);
    }

    #[test]
    fn non_terminating_targets() {
        let rs = table(
            Table::Mangle,
            vec![(
                Hook::Prerouting,
                Policy::Accept,
                vec![
                    rule(Target::Log(LogTarget::default())),
                    rule(Target::Mark(XMark {
                        value: 0x5,
                        mask: 0xff,
                    })),
                    rule(Target::Connmark(ConnmarkTarget::Save {
                        nfmask: 0xf,
                        ctmask: 0xf,
                    })),
                    rule(Target::Ttl(TtlTarget::Inc(1))),
                    rule(Target::Tcpmss(TcpmssTarget::ClampToPmtu)),
                    with_matches(vec![Match::Mark(pos(MarkMask {
                        value: 5,
                        mask: 0xff,
                    }))]),
                ],
            )],
            vec![],
        );
        let mut t = T::new(&rs);
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        p.mark = 0xab00;
        p.ct = tracked(CtStateSet::NEW);
        p.ct.mark = 0x30;
        assert_eq!(
            t.run(Table::Mangle, Hook::Prerouting, &mut p),
            Verdict::Accept
        );
        assert_eq!(p.mark, 0xab05);
        assert_eq!(p.ct.mark, 0x35);
        assert!(p.effects.ctmark_changed);
        assert_eq!(p.ttl, 65);
        assert!(p.effects.ttl_changed);
        assert_eq!(p.effects.tcpmss, Some(0));
        assert_eq!(p.effects.log_count, 1);
        let info = t.c.rule_info(p.effects.logs[0]);
        assert_eq!(
            (info.table, info.chain, info.index, info.line),
            (Table::Mangle, "PREROUTING", 1, 7)
        );
        assert!(matches!(t.c.target(p.effects.logs[0]), Target::Log(_)));
        // The last rule matched on the new mark: ACCEPT, not the policy.
        let out = t.counters(&rs);
        assert_eq!(out.tables[0].chains[0].rules[5].counters.packets, 1);
        assert_eq!(out.tables[0].chains[0].counters.packets, 0);
    }

    #[test]
    fn connmark_modes_and_untracked() {
        let run = |cm: ConnmarkTarget, p: &mut PacketCtx| {
            let rs = table(
                Table::Mangle,
                vec![(
                    Hook::Forward,
                    Policy::Accept,
                    vec![rule(Target::Connmark(cm))],
                )],
                vec![],
            );
            T::new(&rs).run(Table::Mangle, Hook::Forward, p)
        };
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        p.ct = tracked(CtStateSet::ESTABLISHED);
        p.ct.mark = 0xff00;
        p.mark = 0x12;
        run(
            ConnmarkTarget::Set(XMark {
                value: 0x1,
                mask: 0xf000,
            }),
            &mut p,
        );
        assert_eq!(p.ct.mark, 0x0f01);
        assert!(p.effects.ctmark_changed);
        let mut q = p;
        q.effects = Default::default();
        run(
            ConnmarkTarget::Set(XMark {
                value: 0x0,
                mask: 0,
            }),
            &mut q,
        );
        assert!(!q.effects.ctmark_changed, "unchanged mark is not a change");
        run(
            ConnmarkTarget::Restore {
                nfmask: 0xff,
                ctmask: 0x0f,
            },
            &mut q,
        );
        assert_eq!(q.mark, 0x01);
        let mut u = p;
        u.ct = CtCtx::untracked();
        u.effects = Default::default();
        run(
            ConnmarkTarget::Set(XMark {
                value: 0x7,
                mask: !0,
            }),
            &mut u,
        );
        assert_eq!(u.ct.mark, 0);
        assert!(!u.effects.ctmark_changed);
        run(
            ConnmarkTarget::Restore {
                nfmask: !0,
                ctmask: !0,
            },
            &mut u,
        );
        assert_eq!(u.mark, 0x12, "no conntrack: restore is a no-op");
    }

    #[test]
    fn ttl_target_saturates() {
        let run = |t: TtlTarget, ttl: u8| {
            let rs = table(
                Table::Mangle,
                vec![(Hook::Prerouting, Policy::Accept, vec![rule(Target::Ttl(t))])],
                vec![],
            );
            let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
            p.ttl = ttl;
            T::new(&rs).run(Table::Mangle, Hook::Prerouting, &mut p);
            (p.ttl, p.effects.ttl_changed)
        };
        assert_eq!(run(TtlTarget::Inc(10), 250), (255, true));
        assert_eq!(run(TtlTarget::Inc(1), 255), (255, false));
        assert_eq!(run(TtlTarget::Dec(10), 5), (0, true));
        assert_eq!(run(TtlTarget::Dec(1), 0), (0, false));
        assert_eq!(run(TtlTarget::Set(64), 64), (64, false));
        assert_eq!(run(TtlTarget::Set(1), 64), (1, true));
    }

    #[test]
    fn notrack_and_state_untracked() {
        for target in [Target::Notrack, Target::CtNotrack] {
            let rs = table(
                Table::Raw,
                vec![(
                    Hook::Prerouting,
                    Policy::Drop,
                    vec![
                        rule(target),
                        with_matches(vec![Match::State(pos(CtStateSet(CtStateSet::UNTRACKED)))]),
                    ],
                )],
                vec![],
            );
            let mut t = T::new(&rs);
            assert!(t.c.needs().conntrack);
            let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
            p.ct.state = CtStateSet::INVALID;
            assert_eq!(t.run(Table::Raw, Hook::Prerouting, &mut p), Verdict::Accept);
            assert!(p.effects.notrack);
            assert_eq!(p.ct.state, CtStateSet::UNTRACKED);
            // A packet that already has a connection is left alone.
            let mut q = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
            q.ct = tracked(CtStateSet::ESTABLISHED);
            assert_eq!(t.run(Table::Raw, Hook::Prerouting, &mut q), Verdict::Drop);
            assert!(!q.effects.notrack);
        }
    }

    #[test]
    fn log_overflow() {
        let rules = (0..6)
            .map(|_| rule(Target::Log(LogTarget::default())))
            .collect();
        let mut t = T::new(&filter_input(rules));
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut p), Verdict::Drop);
        assert_eq!(p.effects.log_count as usize, MAX_LOGS);
        assert_eq!(p.effects.log_overflow, 2);
        let idx: Vec<u32> = p
            .effects
            .logs
            .iter()
            .map(|&id| t.c.rule_info(id).index)
            .collect();
        assert_eq!(idx, vec![1, 2, 3, 4]);
    }

    #[test]
    fn terminal_targets_reject_and_nat() {
        let w = RejectWith::TcpReset;
        let mut t = T::new(&filter_input(vec![rule(Target::Reject(w))]));
        assert_eq!(
            t.input(&tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2)),
            Verdict::Reject(w)
        );

        let masq = Target::Masquerade {
            ports: Some(pr(55666, 55680)),
            flags: NatFlags::default(),
        };
        let rs = table(
            Table::Nat,
            vec![(
                Hook::Postrouting,
                Policy::Accept,
                vec![
                    Rule {
                        src: Some(pos(net([172, 18, 0, 0], 16))),
                        out_iface: Some(neg(IfaceName("docker0".into()))),
                        line: 11,
                        ..tcp_rule(masq.clone(), TcpMatch::default())
                    },
                    Rule {
                        src: Some(pos(net([172, 18, 0, 0], 16))),
                        out_iface: Some(neg(IfaceName("docker0".into()))),
                        line: 12,
                        ..rule(Target::Masquerade {
                            ports: None,
                            flags: NatFlags::default(),
                        })
                    },
                ],
            )],
            vec![],
        );
        let mut t = T::new(&rs);
        assert!(t.c.needs().conntrack);
        let mut p = tcp_pkt([172, 18, 0, 2], [1, 1, 1, 1], 37622, 80);
        p.out_if = Some(0);
        let Verdict::Nat(id) = t.run(Table::Nat, Hook::Postrouting, &mut p) else {
            panic!()
        };
        assert_eq!(t.c.rule_info(id).line, 11);
        assert_eq!(t.c.target(id), &masq);
        p.proto = 17;
        let Verdict::Nat(id) = t.run(Table::Nat, Hook::Postrouting, &mut p) else {
            panic!()
        };
        assert_eq!(t.c.rule_info(id).index, 2);
        p.out_if = Some(2);
        assert_eq!(
            t.run(Table::Nat, Hook::Postrouting, &mut p),
            Verdict::Accept
        );
        // Unknown ids are harmless.
        assert_eq!(t.c.target(99_999), &Target::None);
        assert_eq!(t.c.rule_info(99_999).chain, "");
    }

    #[test]
    fn jump_return_goto_and_policy_counters() {
        // INPUT: 1 -j A ; 2 -g B ; 3 ACCEPT (never reached by goto path)
        // A: 1 RETURN if src 10/8 ; 2 mark 1
        // B: 1 -j C ; 2 RETURN-able fall off
        // C: 1 RETURN
        let src10 = Some(pos(net([10, 0, 0, 0], 8)));
        let rs = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Drop,
                vec![
                    rule(Target::Jump("A".into())),
                    Rule {
                        src: src10,
                        ..rule(Target::Goto("B".into()))
                    },
                    rule(Target::Accept),
                ],
            )],
            vec![
                (
                    "A",
                    vec![
                        Rule {
                            src: src10,
                            ..rule(Target::Return)
                        },
                        rule(Target::Mark(XMark { value: 1, mask: 1 })),
                    ],
                ),
                (
                    "B",
                    vec![rule(Target::Jump("C".into())), rule(Target::None)],
                ),
                ("C", vec![rule(Target::Return)]),
            ],
        );
        let mut t = T::new(&rs);
        // From 10/8: A returns early, goto B, B calls C, C returns, B falls
        // off: returns to the caller of INPUT = none, so the policy (DROP).
        let p10 = tcp_pkt([10, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        let mut q = p10;
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut q), Verdict::Drop);
        assert_eq!(q.mark, 0);
        // From elsewhere: A marks, no goto, ACCEPT.
        let mut r = tcp_pkt([11, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut r), Verdict::Accept);
        assert_eq!(r.mark, 1);
        let out = t.counters(&rs);
        let ch = |n: &str| {
            out.tables[0]
                .chains
                .iter()
                .find(|c| c.name == n)
                .unwrap()
                .clone()
        };
        let pk = |c: &Chain| {
            c.rules
                .iter()
                .map(|r| r.counters.packets)
                .collect::<Vec<_>>()
        };
        assert_eq!(pk(&ch("INPUT")), vec![2, 1, 1]);
        assert_eq!(pk(&ch("A")), vec![1, 1]);
        assert_eq!(pk(&ch("B")), vec![1, 1]);
        assert_eq!(pk(&ch("C")), vec![1]);
        assert_eq!(
            ch("INPUT").counters,
            Counters {
                packets: 1,
                bytes: 60
            }
        );
    }

    #[test]
    fn goto_then_return_returns_to_caller_of_goto_chain() {
        // INPUT: -j X ; LOG ; (policy ACCEPT)
        // X: -g Y ; DROP          Y: RETURN ; DROP
        // RETURN in Y goes back to INPUT (the caller of X), rule 2.
        let rs = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Accept,
                vec![
                    rule(Target::Jump("X".into())),
                    rule(Target::Log(LogTarget::default())),
                ],
            )],
            vec![
                (
                    "X",
                    vec![rule(Target::Goto("Y".into())), rule(Target::Drop)],
                ),
                ("Y", vec![rule(Target::Return), rule(Target::Drop)]),
            ],
        );
        let mut t = T::new(&rs);
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut p), Verdict::Accept);
        assert_eq!(p.effects.log_count, 1);
        let out = t.counters(&rs);
        assert_eq!(
            out.tables[0].chains[1].counters.packets, 0,
            "user chain has no policy counter"
        );
        assert_eq!(out.tables[0].chains[3].rules[1].counters.packets, 0);
        assert_eq!(
            out.tables[0].chains[0].counters.packets, 1,
            "INPUT policy counted"
        );
    }

    #[test]
    fn return_in_builtin_chain_applies_policy() {
        let rs = filter_input(vec![rule(Target::Return), rule(Target::Accept)]);
        let mut t = T::new(&rs);
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.input(&p), Verdict::Drop);
        let out = t.counters(&rs);
        assert_eq!(
            out.tables[0].chains[0].rules[0].counters,
            Counters {
                packets: 1,
                bytes: 60
            }
        );
        assert_eq!(out.tables[0].chains[0].rules[1].counters.packets, 0);
        assert_eq!(out.tables[0].chains[0].counters.packets, 1);
    }

    #[test]
    fn counters_sum_workers_and_loaded_values() {
        let mut rs = filter_input(vec![Rule {
            proto: Some(pos(17)),
            ..rule(Target::Accept)
        }]);
        rs.tables[0].chains[0].counters = Counters {
            packets: 100,
            bytes: 1000,
        };
        rs.tables[0].chains[0].rules[0].counters = Counters {
            packets: 5,
            bytes: 50,
        };
        let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
        let mut s1 = RuleState::new(&c);
        let mut s2 = RuleState::new(&c);
        let mut udp = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        udp.proto = 17;
        udp.len = 100;
        let mut tcp = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(
            c.run(Table::Filter, Hook::Input, &mut udp.clone(), &mut s1, 0),
            Verdict::Accept
        );
        assert_eq!(
            c.run(Table::Filter, Hook::Input, &mut udp, &mut s2, 0),
            Verdict::Accept
        );
        assert_eq!(
            c.run(Table::Filter, Hook::Input, &mut tcp, &mut s2, 0),
            Verdict::Drop
        );
        let out = c.counters_into(&rs, &[&s1, &s2]);
        assert_eq!(
            out.tables[0].chains[0].rules[0].counters,
            Counters {
                packets: 7,
                bytes: 250
            }
        );
        assert_eq!(
            out.tables[0].chains[0].counters,
            Counters {
                packets: 101,
                bytes: 1060
            }
        );
        // Other chains untouched.
        assert_eq!(out.tables[0].chains[1], rs.tables[0].chains[1]);
    }

    #[test]
    fn compile_errors() {
        let e = |rs: &Ruleset| CompiledRuleset::compile(rs, IFACES).unwrap_err();
        let unknown = filter_input(vec![rule(Target::Jump("nope".into()))]);
        assert!(matches!(
            e(&unknown),
            CompileError::UnknownChain { line: 7, .. }
        ));
        let builtin = filter_input(vec![rule(Target::Goto("OUTPUT".into()))]);
        assert!(matches!(e(&builtin), CompileError::JumpToBuiltin { .. }));
        let lp = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Accept,
                vec![rule(Target::Jump("a".into()))],
            )],
            vec![
                ("a", vec![rule(Target::Goto("b".into()))]),
                ("b", vec![rule(Target::Jump("a".into()))]),
            ],
        );
        assert!(matches!(e(&lp), CompileError::Loop { .. }));
        let selfloop = table(
            Table::Filter,
            vec![(
                Hook::Forward,
                Policy::Accept,
                vec![rule(Target::Jump("a".into()))],
            )],
            vec![("a", vec![rule(Target::Goto("a".into()))])],
        );
        assert!(matches!(e(&selfloop), CompileError::Loop { .. }));
        // A loop no built-in chain reaches is accepted, as by the kernel.
        let unreachable = table(
            Table::Filter,
            vec![],
            vec![("a", vec![rule(Target::Goto("a".into()))])],
        );
        assert!(CompiledRuleset::compile(&unreachable, IFACES).is_ok());
        let noproto = filter_input(vec![with_matches(vec![Match::Tcp(TcpMatch::default())])]);
        assert!(matches!(
            e(&noproto),
            CompileError::ProtoRequired { m: "tcp", .. }
        ));
        let mut dup = filter_input(vec![]);
        dup.tables.push(dup.tables[0].clone());
        assert!(matches!(e(&dup), CompileError::DuplicateTable { .. }));
        let mut pol = filter_input(vec![]);
        pol.tables[0]
            .chains
            .push(chain("mine", Some(Policy::Accept), vec![]));
        assert!(matches!(e(&pol), CompileError::NotBuiltin { .. }));
        let many: Vec<String> = (0..63).map(|i| format!("e{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            CompiledRuleset::compile(&Ruleset::default(), &refs),
            Err(CompileError::TooManyInterfaces(63))
        ));
        // Diamond (two paths to one chain) is not a loop.
        let diamond = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Accept,
                vec![
                    rule(Target::Jump("a".into())),
                    rule(Target::Jump("b".into())),
                ],
            )],
            vec![
                ("a", vec![rule(Target::Jump("c".into()))]),
                ("b", vec![rule(Target::Jump("c".into()))]),
                ("c", vec![]),
            ],
        );
        assert!(CompiledRuleset::compile(&diamond, IFACES).is_ok());
    }

    #[test]
    fn deep_jump_chain_fits_the_stack() {
        let n = 20;
        let users: Vec<(String, Vec<Rule>)> = (0..n)
            .map(|i| {
                let r = if i + 1 < n {
                    vec![rule(Target::Jump(format!("c{}", i + 1)))]
                } else {
                    vec![rule(Target::Accept)]
                };
                (format!("c{i}"), r)
            })
            .collect();
        let rs = table(
            Table::Filter,
            vec![(
                Hook::Input,
                Policy::Drop,
                vec![rule(Target::Jump("c0".into()))],
            )],
            users.iter().map(|(n, r)| (n.as_str(), r.clone())).collect(),
        );
        let mut t = T::new(&rs);
        assert_eq!(
            t.input(&tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2)),
            Verdict::Accept
        );
    }

    #[test]
    fn shortcut_agrees_with_run() {
        let text = "*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD DROP [0:0]\n\
            -A PREROUTING -i eth0 -j ACCEPT\nCOMMIT\n\
            *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        let rs = crate::parse::parse_restore(text, "t.rules").unwrap();
        let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
        assert_eq!(c.shortcut(Table::Mangle, Hook::Prerouting), None);
        assert_eq!(
            c.shortcut(Table::Filter, Hook::Forward),
            Some(Shortcut::Policy {
                entry: c.hooks[Table::Filter as usize][Hook::Forward as usize]
                    .unwrap()
                    .1,
                verdict: Verdict::Drop
            })
        );
        let mut ctx = PacketCtx::new();
        ctx.len = 100;
        let mut absent = 0;
        for table in Table::ALL {
            for hook in Hook::ALL {
                let mut by_run = RuleState::new(&c);
                let mut by_shortcut = RuleState::new(&c);
                let mut x = ctx;
                let v = c.run(table, hook, &mut x, &mut by_run, 0);
                match c.shortcut(table, hook) {
                    None => continue,
                    Some(Shortcut::Absent) => {
                        absent += 1;
                        assert_eq!(v, Verdict::Accept);
                    }
                    Some(Shortcut::Policy { entry, verdict }) => {
                        assert_eq!(v, verdict, "{table:?} {hook:?}");
                        assert_eq!(x.effects.last, entry);
                        by_shortcut.count(entry, ctx.len);
                    }
                }
                // The same counters either way.
                let a = c.counters_into(&rs, &[&by_run]);
                let b = c.counters_into(&rs, &[&by_shortcut]);
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "{table:?} {hook:?}");
            }
        }
        assert!(absent > 0, "the nat table is not in the ruleset");
    }

    /// A filter table with `rules` in FORWARD (and `chain` as a user
    /// chain), compiled.
    fn forward(rules: &str) -> CompiledRuleset {
        CompiledRuleset::compile(&forward_rules(rules), IFACES).unwrap()
    }

    fn forward_rules(rules: &str) -> Ruleset {
        let text = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:side - [0:0]\n{rules}COMMIT\n"
        );
        crate::parse::parse_restore(&text, "t.rules").unwrap()
    }

    #[test]
    fn flow_invariance_of_matches_and_targets() {
        let yes = [
            "",
            "-A FORWARD -i eth0 -o eth1 -j ACCEPT\n",
            "-A FORWARD -s 10.0.0.0/8 -p tcp --dport 80 -j ACCEPT\n",
            "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n",
            "-A FORWARD -m state --state NEW -j DROP\n",
            "-A FORWARD -p udp -m multiport --dports 53,123 -j MARK --set-mark 1\n-A FORWARD -m mark --mark 1 -j ACCEPT\n",
            "-A FORWARD -m iprange --src-range 1.1.1.1-1.1.1.9 -j REJECT\n",
            "-A FORWARD -j side\n-A side -p tcp -j RETURN\n",
            "-A FORWARD -g side\n",
            // A variant rule in a chain FORWARD cannot reach does not count.
            "-A FORWARD -j ACCEPT\n-A INPUT -m length --length 0:100 -j LOG\n",
            // Targets do not make a chain variant (see `replayable`).
            "-A FORWARD -i eth0 -j LOG\n-A FORWARD -j CONNMARK --save-mark\n",
        ];
        for r in yes {
            let c = forward(r);
            assert!(c.flow_invariant(Table::Filter, Hook::Forward), "{r}");
            assert!(
                c.flow_invariant(Table::Mangle, Hook::Forward),
                "absent: {r}"
            );
        }
        let no = [
            "-A FORWARD -p tcp --tcp-flags SYN,ACK SYN -j DROP\n",
            "-A FORWARD -p tcp --syn -j DROP\n",
            "-A FORWARD -p tcp --tcp-option 2 -j DROP\n",
            "-A FORWARD -m length --length 0:100 -j ACCEPT\n",
            "-A FORWARD -m ttl --ttl-lt 5 -j DROP\n",
            "-A FORWARD -m limit --limit 1/s -j ACCEPT\n",
            "-A FORWARD -m conntrack --ctstatus ASSURED -j ACCEPT\n",
            // Reached through a jump.
            "-A FORWARD -p tcp -j side\n-A side -m length --length 0:64 -j DROP\n",
        ];
        for r in no {
            let c = forward(r);
            assert!(!c.flow_invariant(Table::Filter, Hook::Forward), "{r}");
            assert!(c.flow_invariant(Table::Filter, Hook::Input), "{r}");
        }
    }

    #[test]
    fn a_path_through_a_target_that_acts_is_not_replayable() {
        let text =
            "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
                    :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A FORWARD -i eth1 -j LOG\n\
                    -A FORWARD -p tcp --dport 80 -j TTL --ttl-inc 1\nCOMMIT\n";
        let rs = crate::parse::parse_restore(text, "t.rules").unwrap();
        let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
        assert!(c.flow_invariant(Table::Mangle, Hook::Forward));
        let mut s = RuleState::new(&c);
        for (in_if, dport, replayable) in [(0, 81, true), (1, 81, false), (0, 80, false)] {
            let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1000, dport);
            p.in_if = Some(in_if);
            s.record();
            c.run(Table::Mangle, Hook::Forward, &mut p, &mut s, 0);
            let path = s.take_path().unwrap();
            assert_eq!(
                c.replayable(&path, 0),
                replayable,
                "in {in_if} dport {dport}: {path:?}"
            );
            // The TTL rule's entry comes first: replayable when the caller
            // applies TTL targets that far; never through the LOG.
            assert_eq!(c.replayable(&path, 1), in_if == 0, "{path:?}");
            let ttl = path.entries().iter().find_map(|&e| c.ttl_target(e));
            assert_eq!(ttl, (dport == 80).then_some(TtlTarget::Inc(1)));
        }
    }

    #[test]
    fn a_recorded_path_replays_the_counters_of_its_run() {
        let rs = forward_rules(
            "-A FORWARD -i eth1 -j ACCEPT\n-A FORWARD -p tcp -j side\n-A FORWARD -j ACCEPT\n\
             -A side -p tcp --dport 81 -j DROP\n-A side -j MARK --set-mark 7\n-A side -m mark --mark 7 -j RETURN\n",
        );
        let c = CompiledRuleset::compile(&rs, IFACES).unwrap();
        let mut s = RuleState::new(&c);
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1000, 80);
        s.record();
        assert!(s.recording());
        assert_eq!(
            c.run(Table::Filter, Hook::Forward, &mut p.clone(), &mut s, 0),
            Verdict::Accept
        );
        let path = s.take_path().expect("a short path");
        assert!(!s.recording());
        assert!(c.replayable(&path, 0));
        // The jump, the MARK, the RETURN, and the last ACCEPT of FORWARD.
        assert_eq!(path.entries().len(), 4, "{path:?}");
        let once = c.counters_into(&rs, &[&s]);
        // Replaying is counting the same entries again, bytes of this packet.
        p.len = 100;
        let mut by_run = s.clone();
        c.run(Table::Filter, Hook::Forward, &mut p.clone(), &mut by_run, 0);
        s.replay(&path, 100);
        let (a, b) = (
            c.counters_into(&rs, &[&s]),
            c.counters_into(&rs, &[&by_run]),
        );
        assert_eq!(a, b);
        assert_ne!(a, once);
        // A shortcut's count is not recorded; an overflow is.
        s.record();
        s.count(3, 60);
        assert_eq!(s.take_path().map(|p| p.entries().to_vec()), Some(vec![]));
        s.record();
        for _ in 0..=PATH_MAX / 4 {
            c.run(Table::Filter, Hook::Forward, &mut p.clone(), &mut s, 0);
        }
        assert_eq!(s.take_path(), None);
    }
}
