//! Connection tuples and directions (`struct nf_conntrack_tuple`, IPv4 only).
//!
//! The tuple is the packet crate's flow key, re-exported here with the
//! protocol numbers under the kernel's `IPPROTO_*` names.

pub use fastables_packet::flow::{proto_has_ports, Tuple};
pub use fastables_packet::ipv4::{
    PROTO_ICMP as IPPROTO_ICMP, PROTO_SCTP as IPPROTO_SCTP, PROTO_TCP as IPPROTO_TCP,
    PROTO_UDP as IPPROTO_UDP, PROTO_UDPLITE as IPPROTO_UDPLITE,
};

/// Highest ICMP type the kernel knows (`NR_ICMP_TYPES`).
pub const NR_ICMP_TYPES: u8 = 18;

/// Direction of a packet relative to the connection (`enum ip_conntrack_dir`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Same direction as the first packet (`IP_CT_DIR_ORIGINAL`).
    Original = 0,
    /// The answering direction (`IP_CT_DIR_REPLY`).
    Reply = 1,
}

impl Dir {
    /// Index into `Entry::tuple` and `TcpInfo::seen`.
    #[inline]
    pub fn idx(self) -> usize {
        self as usize
    }

    /// The other direction.
    #[inline]
    pub fn flip(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }

    #[inline]
    pub(crate) fn from_bit(b: u32) -> Dir {
        if b & 1 == 0 {
            Dir::Original
        } else {
            Dir::Reply
        }
    }
}

/// Dotted quad of a host-order address.
pub fn fmt_ip(ip: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(ip)
}
