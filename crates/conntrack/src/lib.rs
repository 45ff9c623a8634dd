//! fastables-conntrack: connection tracking and NAT bindings, decided as the
//! Linux kernel decides them (nf_conntrack_core.c, nf_conntrack_proto_{tcp,udp,icmp}.c,
//! nf_nat_core.c), for one worker's shard.
//!
//! The crate is a pure state machine: packets come in as plain facts
//! ([`PacketFacts`]) with the current time `now_ns`; it never reads a clock,
//! never allocates on the per-packet path, never does I/O. It does not parse
//! or rewrite packets (the data plane does, using [`Entry::nat_target`]).
//!
//! Flow for one packet (the kernel's `nf_conntrack_in` + `nf_conntrack_confirm`):
//! 1. [`Table::track`] classifies it: an existing connection (state updated),
//!    a RELATED ICMP error, INVALID, a drop because the table is full, or a
//!    [`NewConn`] not yet in the table.
//! 2. For a new connection, the nat table's verdicts give a destination and/or
//!    source [`NatRange`]; [`Table::confirm`] chooses the NAT tuple (port
//!    allocation) and inserts in one step, so two connections never share a tuple.
//!
//! Not here: connection helpers/expectations (FTP, SIP...), SCTP/DCCP/GRE/UDP-Lite
//! state machines (those protocols are tracked like the kernel's generic
//! tracker), IPv6, zones, accounting counters, TCP sequence adjustment.
#![deny(unsafe_code)]

pub mod entry;
pub mod format;
mod index;
pub mod nat;
mod prefetch;
pub mod table;
pub mod tcp;
pub mod tuple;

pub use entry::{status, tcp_flags, Entry, ProtoInfo, TcpDirState, TcpInfo, TcpState};
pub use format::{
    format_count, format_entry, format_event, format_events_summary, format_stats, format_summary,
    EventKind,
};
pub use nat::{Manip, NatRange};
pub use prefetch::prefetch;
pub use table::{
    CtState, EntryId, Hint, IcmpFacts, NewConn, PacketFacts, ReplyFilter, Table, TableFullLog,
    Track, Tracked, LOOKUP_BATCH, PREFETCH_AHEAD,
};
pub use tcp::{flags as tcp_hdr, TcpSeg};
pub use tuple::{Dir, Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// Timeouts in seconds; the defaults are the kernel's (`nf_conntrack_*_timeout*`
/// sysctls). With the `serde` feature this is also the configuration file's
/// `[conntrack.timeouts]` table: the field names are its keys, absent keys
/// take the defaults, unknown keys are rejected (its error messages call the
/// table `ConntrackTimeouts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields, default, expecting = "struct ConntrackTimeouts")
)]
pub struct Timeouts {
    /// `nf_conntrack_tcp_timeout_syn_sent`.
    pub tcp_syn_sent: u32,
    /// `nf_conntrack_tcp_timeout_syn_recv`.
    pub tcp_syn_recv: u32,
    /// `nf_conntrack_tcp_timeout_established`.
    pub tcp_established: u32,
    /// `nf_conntrack_tcp_timeout_fin_wait`.
    pub tcp_fin_wait: u32,
    /// `nf_conntrack_tcp_timeout_close_wait`.
    pub tcp_close_wait: u32,
    /// `nf_conntrack_tcp_timeout_last_ack`.
    pub tcp_last_ack: u32,
    /// `nf_conntrack_tcp_timeout_time_wait`.
    pub tcp_time_wait: u32,
    /// `nf_conntrack_tcp_timeout_close`.
    pub tcp_close: u32,
    /// SYN_SENT2 (simultaneous open); not a key of the configuration file.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub tcp_syn_sent2: u32,
    /// `nf_conntrack_tcp_timeout_max_retrans`.
    pub tcp_max_retrans: u32,
    /// `nf_conntrack_tcp_timeout_unacknowledged`.
    pub tcp_unacknowledged: u32,
    /// `nf_conntrack_udp_timeout` (unreplied, or replied but not a stream yet).
    pub udp: u32,
    /// `nf_conntrack_udp_timeout_stream`.
    pub udp_stream: u32,
    /// `nf_conntrack_icmp_timeout`.
    pub icmp: u32,
    /// `nf_conntrack_generic_timeout`.
    pub generic: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            tcp_syn_sent2: 120,
            tcp_max_retrans: 300,
            tcp_unacknowledged: 300,
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            generic: 600,
        }
    }
}

/// Table construction parameters.
#[derive(Clone, Debug)]
pub struct TableConfig {
    /// Maximum number of entries (`nf_conntrack_max`). Memory is reserved for all.
    pub max: u32,
    /// Hash buckets (`nf_conntrack_buckets`).
    pub buckets: u32,
    /// Keys the hashes and the PRNG (random per start live, `--seed` in sim).
    pub seed: u64,
    pub timeouts: Timeouts,
    /// `nf_conntrack_tcp_loose`: pick up connections from the middle.
    pub tcp_loose: bool,
    /// `nf_conntrack_tcp_be_liberal`: do not mark out-of-window packets INVALID.
    pub tcp_be_liberal: bool,
    /// `nf_conntrack_tcp_ignore_invalid_rst`.
    pub tcp_ignore_invalid_rst: bool,
    /// `nf_conntrack_tcp_max_retrans`.
    pub tcp_max_retrans: u8,
    /// Longest hash chain an insert may extend (the kernel picks 50..80 at random).
    pub max_chainlen: u32,
    /// Inclusive port ranges NAT never hands out as a translated source port.
    pub reserved_ports: Vec<(u16, u16)>,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            max: 262_144,
            buckets: 262_144,
            seed: 0,
            timeouts: Timeouts::default(),
            tcp_loose: true,
            tcp_be_liberal: false,
            tcp_ignore_invalid_rst: false,
            tcp_max_retrans: 3,
            max_chainlen: 64,
            reserved_ports: Vec::new(),
        }
    }
}

/// Counters, named as `conntrack -S` names them (plus `expired`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// A NAT candidate tuple was found taken (`nf_conntrack_tuple_taken`), as in the kernel.
    pub found: u64,
    /// Packets classified INVALID.
    pub invalid: u64,
    /// Entries inserted (the kernel no longer counts this; we do).
    pub insert: u64,
    /// Inserts refused because a tuple clashed or a chain was too long.
    pub insert_failed: u64,
    /// Packets dropped because the table was full, or because their new
    /// connection clashed with another on insert (`nf_ct_resolve_clash`).
    pub drop: u64,
    /// Entries evicted to make room (`early_drop`).
    pub early_drop: u64,
    /// ICMP errors that were malformed or related to no connection.
    pub error: u64,
    /// Lookup restarts (RCU in the kernel; always 0 here: shards are single-owner).
    pub search_restart: u64,
    /// Clashes resolved on insert (always 0 here, see `insert_failed`).
    pub clash_resolve: u64,
    /// Inserts refused because a hash chain was too long.
    pub chaintoolong: u64,
    /// Entries removed by `expire` (not a kernel counter).
    pub expired: u64,
}

impl Stats {
    /// Field-wise sum (the totals of several shards).
    pub fn sum(&self, o: &Stats) -> Stats {
        let Stats {
            found,
            invalid,
            insert,
            insert_failed,
            drop,
            early_drop,
            error,
            search_restart,
            clash_resolve,
            chaintoolong,
            expired,
        } = *o;
        Stats {
            found: self.found + found,
            invalid: self.invalid + invalid,
            insert: self.insert + insert,
            insert_failed: self.insert_failed + insert_failed,
            drop: self.drop + drop,
            early_drop: self.early_drop + early_drop,
            error: self.error + error,
            search_restart: self.search_restart + search_restart,
            clash_resolve: self.clash_resolve + clash_resolve,
            chaintoolong: self.chaintoolong + chaintoolong,
            expired: self.expired + expired,
        }
    }
}

/// Conntrack events of one packet (`IPCT_*` bits), for `conntrack -E` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events(pub u16);

impl Events {
    pub const NEW: u16 = 1 << 0;
    pub const RELATED: u16 = 1 << 1;
    pub const DESTROY: u16 = 1 << 2;
    pub const REPLY: u16 = 1 << 3;
    pub const ASSURED: u16 = 1 << 4;
    pub const PROTOINFO: u16 = 1 << 5;
    pub const MARK: u16 = 1 << 7;

    /// The `-E` line kind these events produce, if any (`ctnetlink_conntrack_event`).
    pub fn kind(self) -> Option<EventKind> {
        if self.0 & Self::DESTROY != 0 {
            Some(EventKind::Destroy)
        } else if self.0 & (Self::NEW | Self::RELATED) != 0 {
            Some(EventKind::New)
        } else if self.0 != 0 {
            Some(EventKind::Update)
        } else {
            None
        }
    }
}

/// Errors building a table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `max` must be 1..=2^31-1.
    #[error("conntrack max {0} is out of range [1, 2147483647]")]
    Max(u32),
    /// `buckets` must be at least 1.
    #[error("conntrack buckets must be at least 1")]
    Buckets,
    /// A reserved port range is reversed.
    #[error("reserved port range {0}-{1} is reversed: write it low-high")]
    ReservedRange(u16, u16),
}

/// Why an insert was refused (the caller drops the packet).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum InsertError {
    /// The table holds `max` entries and none near this tuple could be evicted.
    /// `log` is `Some` at most once a second: print "nf_conntrack: table full, dropping packet".
    #[error("conntrack table full, dropping packet: raise [conntrack] max")]
    TableFull { log: Option<TableFullLog> },
    /// The tuple (or the NAT-chosen reply tuple) is already used by another
    /// connection: no free NAT port/address, or a duplicate insert.
    #[error("conntrack tuple already in use ({0:?} direction): NAT range exhausted or duplicate connection")]
    Clash(Dir),
    /// A hash chain is too long (too many entries hash to one bucket).
    #[error("conntrack hash chain too long: raise [conntrack] buckets")]
    ChainTooLong,
}
