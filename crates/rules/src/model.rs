//! The rule model: what an iptables-save file says, as data.
//!
//! The parser builds it, the printer writes it back in `iptables-save`'s canonical
//! form, and the compiler turns it into per-hook programs. Names and values are
//! kept as the user wrote them where the printer needs them (interface names,
//! comments, chain names); numbers are normalised (addresses are masked, as
//! iptables does).

use std::net::Ipv4Addr;

/// The four tables, in the order the kernel runs them on a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Raw,
    Mangle,
    Nat,
    Filter,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Raw, Table::Mangle, Table::Nat, Table::Filter];

    pub fn name(self) -> &'static str {
        match self {
            Table::Raw => "raw",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }

    /// The built-in chains of this table, in the order `iptables-save` prints them.
    pub fn builtin_hooks(self) -> &'static [Hook] {
        use Hook::*;
        match self {
            Table::Raw => &[Prerouting, Output],
            Table::Mangle => &[Prerouting, Input, Forward, Output, Postrouting],
            Table::Nat => &[Prerouting, Input, Output, Postrouting],
            Table::Filter => &[Input, Forward, Output],
        }
    }
}

/// The five netfilter hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];

    /// The built-in chain name (`PREROUTING`, ...).
    pub fn chain_name(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
            Hook::Postrouting => "POSTROUTING",
        }
    }
}

/// Packet and byte counters, as `[packets:bytes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// A built-in chain's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// A whole ruleset: the tables a restore file (or the running instance) holds.
/// Tables absent here are empty with ACCEPT policies.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ruleset {
    pub tables: Vec<TableRules>,
}

/// One table: built-in chains first (in [`Table::builtin_hooks`] order), then user chains.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRules {
    pub table: Table,
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub name: String,
    /// `Some` for built-in chains, `None` for user chains.
    pub policy: Option<Policy>,
    /// Policy counters of a built-in chain (user chains print `[0:0]`).
    pub counters: Counters,
    pub rules: Vec<Rule>,
}

/// A value that may be negated with `!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neg<T> {
    pub inv: bool,
    pub val: T,
}

/// An IPv4 address with a mask, which need not be a prefix (iptables accepts
/// `-s 10.0.0.0/255.0.255.0`). For `-s`/`-d`, `addr` is already masked
/// (iptables masks `-s 10.1.2.3/8` to `10.0.0.0/8`); conntrack addresses keep
/// their host bits. A packet address `a` matches when `a & mask == addr & mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    /// The mask in host byte order: `0xffff_ff00` for `/24`.
    pub mask: u32,
}

impl Ipv4Net {
    /// `addr/len`, with `addr` taken as given; a length above 32 means 32.
    pub const fn prefix(addr: Ipv4Addr, len: u8) -> Ipv4Net {
        Ipv4Net {
            addr,
            mask: Ipv4Net::prefix_mask(len),
        }
    }

    /// The mask of a prefix length: `/24` is `0xffff_ff00`; above 32 means 32.
    pub const fn prefix_mask(len: u8) -> u32 {
        fastables_packet::ipv4::prefix_mask(len)
    }

    /// The prefix length when the mask is contiguous (`255.255.0.0` is 16),
    /// `None` for a mask such as `255.0.255.0`.
    pub const fn prefix_len(&self) -> Option<u8> {
        let ones = self.mask.leading_ones();
        if ones + self.mask.trailing_zeros() >= 32 {
            Some(ones as u8)
        } else {
            None
        }
    }

    /// The mask as a dotted quad.
    pub const fn mask_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.mask)
    }

    /// Whether `a` (host byte order) matches: `a & mask == addr & mask`.
    pub const fn contains(&self, a: u32) -> bool {
        (a ^ self.addr.to_bits()) & self.mask == 0
    }
}

/// An interface name as written, possibly ending in `+` (prefix wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceName(pub String);

impl IfaceName {
    /// The kernel's interface name comparison: `name` equals this one, or
    /// starts with it when it ends in `+` (`eth+` matches `eth0`; `+` matches
    /// every name, the empty one included).
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('+') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.0,
        }
    }
}

/// An inclusive port range; a single port has `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// One rule: the fixed `ipt_entry` part, then `-m` matches in the order given, then the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub src: Option<Neg<Ipv4Net>>,
    pub dst: Option<Neg<Ipv4Net>>,
    pub in_iface: Option<Neg<IfaceName>>,
    pub out_iface: Option<Neg<IfaceName>>,
    /// `-p`; protocol number (0 = all is represented by `None`).
    pub proto: Option<Neg<u8>>,
    /// `-f` (`inv`: `! -f`).
    pub fragment: Option<bool>,
    pub matches: Vec<Match>,
    pub target: Target,
    /// `-j` vs `-g` is carried by the target (`Target::Jump` / `Target::Goto`).
    pub counters: Counters,
    /// Line in the source file (1-based), for error messages and tracing; 0 if unknown.
    pub line: u32,
}

/// `-m` matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    Tcp(TcpMatch),
    Udp(UdpMatch),
    Icmp(Neg<IcmpType>),
    Multiport(MultiportMatch),
    Conntrack(ConntrackMatch),
    /// `-m state --state`.
    State(Neg<CtStateSet>),
    Comment(String),
    /// `-m mark --mark value[/mask]`.
    Mark(Neg<MarkMask>),
    Ttl(TtlMatch),
    /// `-m length --length lo[:hi]` (IP total length).
    Length(Neg<PortRange>),
    Iprange(IprangeMatch),
    Limit(LimitMatch),
    Addrtype(AddrtypeMatch),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TcpMatch {
    pub sport: Option<Neg<PortRange>>,
    pub dport: Option<Neg<PortRange>>,
    /// `--tcp-flags mask comp` (`--syn` is `FIN,SYN,RST,ACK SYN`).
    pub flags: Option<Neg<TcpFlags>>,
    /// `--tcp-option N`.
    pub option: Option<Neg<u8>>,
}

/// TCP flag bits as in the header byte: FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlags {
    pub mask: u8,
    pub comp: u8,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UdpMatch {
    pub sport: Option<Neg<PortRange>>,
    pub dport: Option<Neg<PortRange>>,
}

/// `--icmp-type`: a type, or a type and code; `any` is type 255 in iptables (`code_lo..=code_hi` = 0..=255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpType {
    pub ty: u8,
    pub code_lo: u8,
    pub code_hi: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiportDir {
    Source,
    Destination,
    Either,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MultiportMatch {
    pub dir: MultiportDir,
    pub inv: bool,
    /// Up to 15 entries; a range counts as two, as in xt_multiport.
    pub ports: Vec<PortRange>,
}

/// A set of conntrack states, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtStateSet(pub u8);

impl CtStateSet {
    pub const INVALID: u8 = 1 << 0;
    pub const NEW: u8 = 1 << 1;
    pub const ESTABLISHED: u8 = 1 << 2;
    pub const RELATED: u8 = 1 << 3;
    pub const UNTRACKED: u8 = 1 << 4;
    /// `--ctstate SNAT` / `DNAT` (virtual states of `-m conntrack`).
    pub const SNAT: u8 = 1 << 5;
    pub const DNAT: u8 = 1 << 6;
    /// The states of a packet that has a connection.
    pub const TRACKED: u8 = Self::NEW | Self::ESTABLISHED | Self::RELATED;
    /// The states conntrack gives a packet (not the virtual SNAT and DNAT).
    pub const BASIC: u8 = Self::TRACKED | Self::INVALID | Self::UNTRACKED;

    pub fn contains(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// Conntrack status bits, as the kernel numbers them (`IPS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CtStatusSet(pub u32);

impl CtStatusSet {
    pub const EXPECTED: u32 = 1 << 0;
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
    pub const CONFIRMED: u32 = 1 << 3;
    pub const SRC_NAT: u32 = 1 << 4;
    pub const DST_NAT: u32 = 1 << 5;
    pub const DYING: u32 = 1 << 9;
}

/// `-m conntrack`. Unlike `-s`/`-d`, the `--ctorig*/--ctrepl*` addresses keep
/// their host bits (iptables prints them as given); compare them under the mask.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConntrackMatch {
    pub state: Option<Neg<CtStateSet>>,
    pub status: Option<Neg<CtStatusSet>>,
    pub orig_src: Option<Neg<Ipv4Net>>,
    pub orig_dst: Option<Neg<Ipv4Net>>,
    pub repl_src: Option<Neg<Ipv4Net>>,
    pub repl_dst: Option<Neg<Ipv4Net>>,
    pub orig_src_port: Option<Neg<PortRange>>,
    pub orig_dst_port: Option<Neg<PortRange>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkMask {
    pub value: u32,
    pub mask: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlMatch {
    Eq(u8),
    Ne(u8),
    Lt(u8),
    Gt(u8),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IprangeMatch {
    pub src: Option<Neg<(Ipv4Addr, Ipv4Addr)>>,
    pub dst: Option<Neg<(Ipv4Addr, Ipv4Addr)>>,
}

/// Time unit of `--limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitUnit {
    Second,
    Minute,
    Hour,
    Day,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitMatch {
    /// `--limit N/unit` (default 3/hour).
    pub rate: u32,
    pub unit: LimitUnit,
    /// `--limit-burst` (default 5).
    pub burst: u32,
}

/// Address types (`RTN_*`), as bits `1 << RTN_x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrTypeSet(pub u16);

impl AddrTypeSet {
    pub const UNSPEC: u16 = 1 << 0;
    pub const UNICAST: u16 = 1 << 1;
    pub const LOCAL: u16 = 1 << 2;
    pub const BROADCAST: u16 = 1 << 3;
    pub const ANYCAST: u16 = 1 << 4;
    pub const MULTICAST: u16 = 1 << 5;
    pub const BLACKHOLE: u16 = 1 << 6;
    pub const UNREACHABLE: u16 = 1 << 7;
    pub const PROHIBIT: u16 = 1 << 8;
    pub const THROW: u16 = 1 << 9;
    pub const NAT: u16 = 1 << 10;
    pub const XRESOLVE: u16 = 1 << 11;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrtypeMatch {
    pub src: Option<Neg<AddrTypeSet>>,
    pub dst: Option<Neg<AddrTypeSet>>,
    pub limit_iface_in: bool,
    pub limit_iface_out: bool,
}

/// `REJECT --reject-with`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectWith {
    IcmpNetUnreachable,
    IcmpHostUnreachable,
    IcmpPortUnreachable,
    IcmpProtoUnreachable,
    IcmpNetProhibited,
    IcmpHostProhibited,
    IcmpAdminProhibited,
    TcpReset,
}

/// `LOG` options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogTarget {
    pub prefix: Option<String>,
    /// syslog level 0..=7; `None` = default (4, warning), not printed.
    pub level: Option<u8>,
    pub tcp_sequence: bool,
    pub tcp_options: bool,
    pub ip_options: bool,
    pub uid: bool,
    pub macdecode: bool,
}

/// `MARK` / `CONNMARK --set-xmark value/mask` and friends, normalised to xmark form:
/// `new = (old & !mask) ^ value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XMark {
    pub value: u32,
    pub mask: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnmarkTarget {
    /// `--set-xmark value/mask` on the conntrack mark.
    Set(XMark),
    /// `--save-mark --nfmask A --ctmask B`: ctmark = (ctmark & !ctmask) ^ (mark & nfmask).
    Save { nfmask: u32, ctmask: u32 },
    /// `--restore-mark --nfmask A --ctmask B`: mark = (mark & !nfmask) ^ (ctmark & ctmask).
    Restore { nfmask: u32, ctmask: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlTarget {
    Set(u8),
    Inc(u8),
    Dec(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpmssTarget {
    SetMss(u16),
    ClampToPmtu,
}

/// NAT range flags (`NF_NAT_RANGE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatFlags {
    pub random: bool,
    pub random_fully: bool,
    pub persistent: bool,
}

/// One `--to-source` / `--to-destination` range: `a[-b][:p[-q]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatRange {
    /// `None` for REDIRECT/MASQUERADE (address chosen at run time) and for `:port`-only ranges.
    pub addr: Option<(Ipv4Addr, Ipv4Addr)>,
    pub ports: Option<PortRange>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// No `-j`: the rule only counts.
    None,
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
    Reject(RejectWith),
    Log(LogTarget),
    Mark(XMark),
    Connmark(ConnmarkTarget),
    Ttl(TtlTarget),
    /// `-j NOTRACK`.
    Notrack,
    /// `-j CT --notrack`.
    CtNotrack,
    /// `-j TRACE`: the packet is traced from here on (iptables-nft sets
    /// `meta nftrace`, in any table); `fastables trace --marked` shows it.
    Trace,
    Tcpmss(TcpmssTarget),
    Snat {
        range: NatRange,
        flags: NatFlags,
    },
    Dnat {
        range: NatRange,
        flags: NatFlags,
    },
    Masquerade {
        ports: Option<PortRange>,
        flags: NatFlags,
    },
    Redirect {
        ports: Option<PortRange>,
        flags: NatFlags,
    },
}

impl Ruleset {
    /// The rules of one table, if the ruleset has that table.
    pub fn table(&self, t: Table) -> Option<&TableRules> {
        self.tables.iter().find(|x| x.table == t)
    }
}
