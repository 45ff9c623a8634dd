//! NAT events (RFC 8158's): session create and delete, port block
//! allocation and release, addresses and ports exhausted, quota exceeded.
//!
//! The table records them, while a log is attached
//! ([`crate::Table::set_nat_log`]), into a bounded buffer allocated once;
//! what does not fit is counted, never allocated for. The worker hands them
//! on (`fastables-natlog` turns them into IPFIX and syslog). Exhaustion
//! events, which a remote host can provoke, are kept to one a second per
//! kind.

/// What happened (the numbers are IANA's `natEvent` values, RFC 8158).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum NatEventKind {
    /// No address of the pool had a free block (`natPoolID`).
    AddressesExhausted = 3,
    /// A NATed connection was confirmed.
    #[default]
    SessionCreate = 4,
    /// A NATed connection was removed (expiry, RST, `-D`, `-F`, eviction).
    SessionDelete = 5,
    /// No port of the pool's address (`xsrc`) was free for a connection.
    PortsExhausted = 12,
    /// A subscriber (`src`) reached its limit (`limit` ports: its
    /// deterministic block, or its dynamic blocks).
    QuotaExceeded = 13,
    /// A subscriber (`src`) was given a block (`xsrc`, `block`).
    BlockAlloc = 16,
    /// A subscriber's block went back to the pool.
    BlockRelease = 17,
}

impl NatEventKind {
    /// Every kind, in `natEvent` order.
    pub const ALL: [NatEventKind; 7] = [
        NatEventKind::AddressesExhausted,
        NatEventKind::SessionCreate,
        NatEventKind::SessionDelete,
        NatEventKind::PortsExhausted,
        NatEventKind::QuotaExceeded,
        NatEventKind::BlockAlloc,
        NatEventKind::BlockRelease,
    ];

    /// The name the syslog lines and `fastables nat owner` use.
    pub fn name(self) -> &'static str {
        match self {
            NatEventKind::AddressesExhausted => "ADDRESSES_EXHAUSTED",
            NatEventKind::SessionCreate => "SESSION_CREATE",
            NatEventKind::SessionDelete => "SESSION_DELETE",
            NatEventKind::PortsExhausted => "PORTS_EXHAUSTED",
            NatEventKind::QuotaExceeded => "QUOTA_EXCEEDED",
            NatEventKind::BlockAlloc => "BLOCK_ALLOC",
            NatEventKind::BlockRelease => "BLOCK_RELEASE",
        }
    }

    /// The kind of a name given by [`NatEventKind::name`].
    pub fn from_name(s: &str) -> Option<NatEventKind> {
        NatEventKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The kind of an IANA `natEvent` value this crate produces.
    pub fn from_value(v: u8) -> Option<NatEventKind> {
        NatEventKind::ALL.into_iter().find(|k| *k as u8 == v)
    }
}

/// One NAT event. Addresses are host order; fields that the kind does not
/// use are zero. `src`/`sport` is the inside (pre-NAT) source, `xsrc`/
/// `xsport` the public one; `dst`/`dport` the destination as the inside
/// host addressed it, `xdst`/`xdport` after NAT (ICMP: the echo id in the
/// port fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEvent {
    pub kind: NatEventKind,
    /// When, in the table's time (`now_ns` as the worker passes it).
    pub time_ns: u64,
    pub proto: u8,
    pub src: u32,
    pub sport: u16,
    pub xsrc: u32,
    pub xsport: u16,
    pub dst: u32,
    pub dport: u16,
    pub xdst: u32,
    pub xdport: u16,
    /// Block events: the block's ports `first..=last`.
    pub block: (u16, u16),
    /// The pool (`natPoolID`): its port-block SNAT rule, counted from 1.
    pub pool: u32,
    /// Quota exceeded: the subscriber's limit, in ports.
    pub limit: u32,
}

/// Events kept between two drains when the caller does not say
/// ([`crate::Table::set_nat_log`]).
pub const NAT_LOG_QUEUE: usize = 16384;

/// A table's NAT event buffer: bounded, allocated when attached.
#[derive(Debug, Default)]
pub(crate) struct NatLog {
    /// Whether events are recorded at all.
    pub on: bool,
    /// Whether session create/delete are (block and exhaustion events
    /// always are while `on`).
    pub sessions: bool,
    pub buf: Vec<NatEvent>,
    /// Events that did not fit, in all and up to the last drain.
    pub lost: u64,
    pub lost_drained: u64,
    /// Per exhaustion kind (addresses, ports, quota), when it was last
    /// recorded, and how many were left out since.
    pub last: [(Option<u64>, u64); 3],
}

const NS: u64 = 1_000_000_000;

impl NatLog {
    #[inline]
    pub(crate) fn push(&mut self, e: NatEvent) {
        if self.buf.len() < self.buf.capacity() {
            self.buf.push(e);
        } else {
            self.lost += 1;
        }
    }

    /// An exhaustion event, at most one a second per kind.
    pub(crate) fn push_limited(&mut self, e: NatEvent) {
        let slot = match e.kind {
            NatEventKind::AddressesExhausted => 0,
            NatEventKind::PortsExhausted => 1,
            _ => 2,
        };
        let (at, skipped) = &mut self.last[slot];
        if at.is_some_and(|t| e.time_ns < t.saturating_add(NS)) {
            *skipped += 1;
            return;
        }
        *at = Some(e.time_ns);
        *skipped = 0;
        self.push(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_round_trip() {
        for k in NatEventKind::ALL {
            assert_eq!(NatEventKind::from_name(k.name()), Some(k));
            assert_eq!(NatEventKind::from_value(k as u8), Some(k));
        }
        assert_eq!(NatEventKind::from_value(1), None);
    }

    #[test]
    fn the_buffer_is_bounded_and_exhaustion_is_rate_limited() {
        let mut l = NatLog {
            on: true,
            buf: Vec::with_capacity(2),
            ..NatLog::default()
        };
        let ev = |kind, t| NatEvent {
            kind,
            time_ns: t,
            ..NatEvent::default()
        };
        l.push_limited(ev(NatEventKind::PortsExhausted, 10));
        l.push_limited(ev(NatEventKind::PortsExhausted, 10 + NS - 1));
        l.push_limited(ev(NatEventKind::QuotaExceeded, 11));
        assert_eq!(l.buf.len(), 2);
        assert_eq!(l.last[1], (Some(10), 1));
        l.push(ev(NatEventKind::SessionCreate, 12));
        assert_eq!(l.lost, 1);
    }
}
