//! What conntrack needs to know of a packet ([`PacketFacts`], plain values
//! in host byte order, filled by the data plane) and what the table answers
//! ([`Track`]): the connection it belongs to, a new one to confirm, INVALID,
//! or a drop because the table is full.

use crate::entry::Entry;
use crate::tcp::TcpSeg;
use crate::tuple::{proto_has_ports, Dir, Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use crate::Events;

use super::EntryId;

/// `ip_conntrack_info` as seen by `-m state` / `-m conntrack --ctstate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
}

/// ICMP facts of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpFacts {
    pub icmp_type: u8,
    pub code: u8,
    /// Echo id (meaningful for echo/timestamp/info/address types).
    pub id: u16,
    /// For ICMP errors: the tuple of the quoted packet (`nf_ct_get_tuplepr` on
    /// the inner header), `None` if it could not be read (too short, fragment).
    pub inner: Option<Tuple>,
}

/// What conntrack needs to know of one IPv4 packet, in host byte order.
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketFacts<'a> {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    /// Non-first fragment (offset != 0): the kernel cannot track it.
    pub fragment: bool,
    /// The transport header is present: 8 bytes for UDP/ICMP/ports, 20 for TCP.
    pub l4_ok: bool,
    /// The transport checksum was verified and is wrong (only on PREROUTING,
    /// like `nf_conntrack_checksum`; UDP with checksum 0 is never bad).
    pub csum_bad: bool,
    /// Bytes from the transport header to the end of the IP payload.
    pub l4_len: u32,
    pub sport: u16,
    pub dport: u16,
    /// TCP header facts (TCP only).
    pub tcp: TcpSeg<'a>,
    /// UDP length field (UDP only).
    pub udp_len: u16,
    /// ICMP facts (ICMP only).
    pub icmp: IcmpFacts,
}

impl<'a> PacketFacts<'a> {
    /// A TCP segment with `payload` data bytes and the given option bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        src: u32,
        sport: u16,
        dst: u32,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
        payload: u32,
        options: &'a [u8],
    ) -> Self {
        let hdr_len = (20 + options.len()).min(60) as u16;
        PacketFacts {
            src,
            dst,
            proto: IPPROTO_TCP,
            l4_ok: true,
            l4_len: u32::from(hdr_len) + payload,
            sport,
            dport,
            tcp: TcpSeg {
                flags,
                seq,
                ack,
                window,
                hdr_len,
                l4_len: u32::from(hdr_len) + payload,
                options,
            },
            ..Default::default()
        }
    }

    /// A UDP datagram with `payload` data bytes.
    pub fn udp(src: u32, sport: u16, dst: u32, dport: u16, payload: u16) -> Self {
        PacketFacts {
            src,
            dst,
            proto: IPPROTO_UDP,
            l4_ok: true,
            l4_len: 8 + u32::from(payload),
            sport,
            dport,
            udp_len: 8 + payload,
            ..Default::default()
        }
    }

    /// An ICMP message (echo etc.).
    pub fn icmp(src: u32, dst: u32, icmp_type: u8, code: u8, id: u16) -> Self {
        PacketFacts {
            src,
            dst,
            proto: IPPROTO_ICMP,
            l4_ok: true,
            l4_len: 8,
            icmp: IcmpFacts {
                icmp_type,
                code,
                id,
                inner: None,
            },
            ..Default::default()
        }
    }

    /// An ICMP error quoting a packet whose tuple is `inner`.
    pub fn icmp_error(src: u32, dst: u32, icmp_type: u8, code: u8, inner: Option<Tuple>) -> Self {
        let mut p = Self::icmp(src, dst, icmp_type, code, 0);
        p.icmp.inner = inner;
        p
    }

    /// `nf_ct_get_tuple()`: `None` when the transport header cannot be read.
    pub fn tuple(&self) -> Option<Tuple> {
        if self.proto == IPPROTO_ICMP {
            if !self.l4_ok {
                return None;
            }
            return Some(Tuple::icmp(
                self.src,
                self.dst,
                self.icmp.id,
                self.icmp.icmp_type,
                self.icmp.code,
            ));
        }
        if proto_has_ports(self.proto) {
            if !self.l4_ok {
                return None;
            }
            return Some(Tuple::new(
                self.proto, self.src, self.sport, self.dst, self.dport,
            ));
        }
        Some(Tuple::new(self.proto, self.src, 0, self.dst, 0))
    }
}

/// A connection seen for the first time, not yet in the table (the kernel's
/// unconfirmed conntrack). Give it to [`Table::confirm`](crate::Table::confirm) when the packet
/// leaves (or drop it with the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConn {
    /// The prospective entry; its `timeout` is relative until confirmed.
    pub entry: Entry,
    /// The original tuple's hash, and [`Table::changes`] when tracking
    /// found no live entry with that tuple: while nothing was linked or
    /// unlinked since, insertion need not look again.
    pub(super) seen: (u64, u64),
}

/// Rate-limited "table full" message: log "nf_conntrack: table full, dropping
/// packet" (and `suppressed` more drops since the previous message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFullLog {
    pub suppressed: u64,
}

impl TableFullLog {
    /// The kernel's message text.
    pub const MESSAGE: &'static str = "nf_conntrack: table full, dropping packet";
}

/// A packet of an existing connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    pub id: EntryId,
    pub dir: Dir,
    pub state: CtState,
    /// Events for `conntrack -E` (`Events::kind`).
    pub events: Events,
}

/// Result of [`Table::track`](crate::Table::track).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    /// The packet belongs to an entry in the table.
    Tracked(Tracked),
    /// The packet belongs to this connection, which was deleted just now (a RST
    /// before any reply): NAT the packet with `entry`; a DESTROY event.
    Killed {
        entry: Entry,
        dir: Dir,
        state: CtState,
    },
    /// An ICMP error about this connection (RELATED).
    Related { id: EntryId, dir: Dir },
    /// First packet of a connection (NEW): confirm it when the packet leaves.
    New(NewConn),
    /// No connection: the packet is INVALID.
    Invalid,
    /// The table is full: drop the packet (counted in `drop`).
    Drop { log: Option<TableFullLog> },
}
