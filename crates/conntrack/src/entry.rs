//! Connection entries (`struct nf_conn`), status bits and per-protocol state.

use crate::tuple::{Dir, Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// `enum ip_conntrack_status` bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
pub mod status {
    /// It's an expected connection (never set: no helpers).
    pub const EXPECTED: u32 = 1 << 0;
    /// Packets were seen in both directions.
    pub const SEEN_REPLY: u32 = 1 << 1;
    /// Never early-dropped.
    pub const ASSURED: u32 = 1 << 2;
    /// In the table (the first packet left the box).
    pub const CONFIRMED: u32 = 1 << 3;
    /// Source NAT in the original direction.
    pub const SRC_NAT: u32 = 1 << 4;
    /// Destination NAT in the original direction.
    pub const DST_NAT: u32 = 1 << 5;
    /// Both NAT bits.
    pub const NAT_MASK: u32 = SRC_NAT | DST_NAT;
    /// TCP sequence numbers need adjusting (never set: no helpers).
    pub const SEQ_ADJUST: u32 = 1 << 6;
    /// The source manip was set up (`nf_nat_setup_info`).
    pub const SRC_NAT_DONE: u32 = 1 << 7;
    /// The destination manip was set up.
    pub const DST_NAT_DONE: u32 = 1 << 8;
    /// Being removed.
    pub const DYING: u32 = 1 << 9;
    /// The timeout is not refreshed by packets.
    pub const FIXED_TIMEOUT: u32 = 1 << 10;
    /// A template (never in the table).
    pub const TEMPLATE: u32 = 1 << 11;
    /// Obsolete untracked bit; in-kernel re-used as `IPS_NAT_CLASH`.
    pub const UNTRACKED: u32 = 1 << 12;
    /// In-kernel alias of `UNTRACKED`: entry clashed on insert.
    pub const NAT_CLASH: u32 = UNTRACKED;
    /// A helper was attached explicitly.
    pub const HELPER: u32 = 1 << 13;
    /// Offloaded to a flow table.
    pub const OFFLOAD: u32 = 1 << 14;
    /// Offloaded to hardware.
    pub const HW_OFFLOAD: u32 = 1 << 15;
}

/// `IP_CT_TCP_FLAG_*` (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
pub mod tcp_flags {
    /// Window scaling is advertised by the sender.
    pub const WINDOW_SCALE: u8 = 0x01;
    /// SACK is permitted by the sender.
    pub const SACK_PERM: u8 = 0x02;
    /// This sender sent FIN first.
    pub const CLOSE_INIT: u8 = 0x04;
    /// Be liberal in window checking.
    pub const BE_LIBERAL: u8 = 0x08;
    /// Has unacknowledged data.
    pub const DATA_UNACKNOWLEDGED: u8 = 0x10;
    /// `td_maxack` has been set.
    pub const MAXACK_SET: u8 = 0x20;
    /// Possible RFC 5961 challenge ACK expected (`last_flags` only).
    pub const EXP_CHALLENGE_ACK: u8 = 0x40;
    /// Simultaneous open seen (`last_flags` only).
    pub const SIMULTANEOUS_OPEN: u8 = 0x80;
}

/// `enum tcp_conntrack`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TcpState {
    #[default]
    None = 0,
    SynSent = 1,
    SynRecv = 2,
    Established = 3,
    FinWait = 4,
    CloseWait = 5,
    LastAck = 6,
    TimeWait = 7,
    Close = 8,
    /// `TCP_CONNTRACK_SYN_SENT2` (was LISTEN).
    SynSent2 = 9,
}

impl TcpState {
    /// `tcp_conntrack_names[]` as printed by `conntrack -L`.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            // libnetfilter_conntrack's table still says LISTEN for 9.
            TcpState::SynSent2 => "LISTEN",
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<TcpState> {
        Some(match v {
            0 => TcpState::None,
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            9 => TcpState::SynSent2,
            _ => return None,
        })
    }
}

/// `struct ip_ct_tcp_state`: what is known of one direction's sender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpDirState {
    /// max of seq + len
    pub td_end: u32,
    /// max of ack + max(win, 1)
    pub td_maxend: u32,
    /// max(win)
    pub td_maxwin: u32,
    /// max of ack
    pub td_maxack: u32,
    /// window scale factor
    pub td_scale: u8,
    /// `IP_CT_TCP_FLAG_*`
    pub flags: u8,
}

/// `struct ip_ct_tcp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// Per direction, indexed by `Dir::idx()`.
    pub seen: [TcpDirState; 2],
    pub state: TcpState,
    /// Direction of the last in-window (or ignored) packet.
    pub last_dir: u8,
    /// Number of retransmitted packets.
    pub retrans: u8,
    /// Index (`TCP_*_SET`) of the last packet.
    pub last_index: u8,
    pub last_seq: u32,
    pub last_ack: u32,
    pub last_end: u32,
    pub last_win: u16,
    pub last_wscale: u8,
    pub last_flags: u8,
}

/// Per-protocol private part of the entry (`union nf_conntrack_proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoInfo {
    /// ICMP and generic protocols keep nothing.
    None,
    Tcp(TcpInfo),
    /// `struct nf_ct_udp`: time (ns) after which a replied flow counts as a stream.
    Udp {
        stream_ts: u64,
    },
}

impl ProtoInfo {
    pub(crate) fn fresh(proto: u8) -> ProtoInfo {
        match proto {
            IPPROTO_TCP => ProtoInfo::Tcp(TcpInfo::default()),
            IPPROTO_UDP => ProtoInfo::Udp { stream_ts: 0 },
            _ => ProtoInfo::None,
        }
    }
}

/// No link (an empty index slot, the end of the free list).
pub(crate) const NIL: u32 = u32::MAX;

/// One connection: exactly two cache lines. The first line holds what a
/// lookup touches (tuples, timeout, status); the second the
/// tracker state. At most 128 bytes (asserted by a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Entry {
    /// `tuplehash[ORIGINAL]` and `tuplehash[REPLY]`. The reply tuple carries the
    /// NAT binding: without NAT it is `tuple[0].invert()`.
    pub tuple: [Tuple; 2],
    /// While the slot is free: the next free slot. While the entry is live
    /// and linked for NAT's source lookup: the next older entry from the
    /// same source (`same_src()`: protocol, address, port), `NIL` for the
    /// oldest.
    pub(crate) next: u32,
    /// The next newer entry from the same source, `NIL` for the newest:
    /// the one the NAT source index links (or none, when the index had
    /// no room for it).
    pub(crate) src_prev: u32,
    /// Absolute expiry time in ns once confirmed (relative before).
    pub timeout: u64,
    /// `status::*` bits.
    pub status: u32,
    /// The connection mark (`ctmark`).
    pub mark: u32,
    /// Slot generation, bumped on every free.
    pub(crate) gen: u32,
    /// Per-protocol state.
    pub proto: ProtoInfo,
}

impl Entry {
    pub(crate) const EMPTY: Entry = Entry {
        tuple: [
            Tuple {
                src: 0,
                dst: 0,
                sport: 0,
                dport: 0,
                proto: 0,
            },
            Tuple {
                src: 0,
                dst: 0,
                sport: 0,
                dport: 0,
                proto: 0,
            },
        ],
        next: NIL,
        src_prev: NIL,
        timeout: 0,
        status: 0,
        mark: 0,
        gen: 0,
        proto: ProtoInfo::None,
    };

    /// A fresh, unconfirmed entry for `orig`/`reply` with an empty tracker state.
    pub fn new(orig: Tuple, reply: Tuple) -> Entry {
        Entry {
            tuple: [orig, reply],
            proto: ProtoInfo::fresh(orig.proto),
            ..Entry::EMPTY
        }
    }

    /// The ORIGINAL tuple.
    #[inline]
    pub fn orig(&self) -> &Tuple {
        &self.tuple[0]
    }

    /// The REPLY tuple.
    #[inline]
    pub fn reply(&self) -> &Tuple {
        &self.tuple[1]
    }

    /// `nf_ct_is_expired()`: the timeout is not in the future.
    #[inline]
    pub fn is_expired(&self, now_ns: u64) -> bool {
        self.timeout <= now_ns
    }

    /// `nf_ct_expires()` in ns: time left, 0 when expired.
    #[inline]
    pub fn expires_in(&self, now_ns: u64) -> u64 {
        self.timeout.saturating_sub(now_ns)
    }

    /// Whether a status bit (or all of a mask) is set.
    #[inline]
    pub fn has(&self, bits: u32) -> bool {
        self.status & bits == bits
    }

    /// TCP state, when this is a TCP entry.
    pub fn tcp_state(&self) -> Option<TcpState> {
        match &self.proto {
            ProtoInfo::Tcp(t) => Some(t.state),
            _ => None,
        }
    }

    /// The TCP tracker state, when this is a TCP entry.
    pub fn tcp(&self) -> Option<&TcpInfo> {
        match &self.proto {
            ProtoInfo::Tcp(t) => Some(t),
            _ => None,
        }
    }

    /// What a packet travelling in `dir` must look like after NAT: the inverse of
    /// the other direction's tuple (`nf_nat_manip_pkt` uses this target). Equal
    /// to the packet's own tuple when there is no NAT. For ICMP only the
    /// addresses and the id are meaningful.
    pub fn nat_target(&self, dir: Dir) -> Tuple {
        let other = &self.tuple[dir.flip().idx()];
        match other.invert() {
            Some(t) => t,
            None => self.tuple[dir.idx()],
        }
    }

    /// `ip_conntrack_info` of a packet of this entry travelling in `dir`,
    /// as `nf_conntrack_in` gives it: ESTABLISHED in the reply direction or
    /// once a reply was seen, RELATED for an expected connection, else NEW.
    pub fn state_in(&self, dir: Dir) -> crate::CtState {
        if dir == Dir::Reply || self.status & status::SEEN_REPLY != 0 {
            crate::CtState::Established
        } else if self.status & status::EXPECTED != 0 {
            crate::CtState::Related
        } else {
            crate::CtState::New
        }
    }

    /// True for protocols the kernel tracks with state here (TCP, UDP, ICMP).
    pub fn is_known_proto(&self) -> bool {
        matches!(
            self.tuple[0].proto,
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_fits_in_128_bytes() {
        assert_eq!(
            std::mem::offset_of!(Entry, proto),
            64,
            "lookup fields fill the first cache line"
        );
        assert!(
            std::mem::size_of::<Entry>() <= 128,
            "Entry is {} bytes",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn nat_target_without_nat_is_identity() {
        let o = Tuple::new(IPPROTO_TCP, 1, 10, 2, 20);
        let e = Entry::new(o, o.invert().unwrap());
        assert_eq!(e.nat_target(Dir::Original), o);
        assert_eq!(e.nat_target(Dir::Reply), o.invert().unwrap());
    }
}
