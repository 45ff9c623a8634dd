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
//! - `program`: the compiled form (entries, their inline fields and actions);
//! - `build`: compilation, table by table;
//! - `eval`: [`CompiledRuleset::run`], the rule scan;
//! - `state`: [`RuleState`], a worker's counters, buckets and jump stack;
//! - `analysis`: what is known without running (shortcuts, flow invariance,
//!   replayable paths).
//!
//! Each match compiles and evaluates in its own file (`matches/`), each
//! target in its (`targets/`).
//!
//! Matches follow the xtables modules (`xt_tcpudp.c`, `xt_multiport.c`,
//! `xt_conntrack.c`, `xt_limit.c` with [`HZ`] = 250, ...), including their
//! hotdrops: a `-m tcp/udp/icmp/multiport` match on a packet whose transport
//! header is truncated (`PacketCtx::has_l4` false, not a fragment), a `-m tcp`
//! on a TCP fragment at offset 8, and `--tcp-option` on malformed options drop
//! the packet. iptables-nft installs plain tcp/udp port and flag matches as
//! native nftables payload expressions instead, which never drop and read
//! whatever bytes are present: on malformed packets the two differ.

mod analysis;
mod build;
mod eval;
mod program;
mod state;

pub use crate::matches::limit::HZ;
pub use analysis::Shortcut;
pub use program::{CompileOptions, CompiledRuleset, Flavor, RuleInfo, MAX_IFACES};
pub use state::{Path, RuleState, PATH_MAX};

pub(crate) use build::RuleBuild;
pub(crate) use program::{Act, Net, Range16};

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
