//! Connection tuples and directions (`struct nf_conntrack_tuple`, IPv4 only).

/// IP protocol numbers used by the trackers.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// SCTP (tuple carries ports; tracked generically here).
pub const IPPROTO_SCTP: u8 = 132;
/// UDP-Lite (tuple carries ports; tracked generically here).
pub const IPPROTO_UDPLITE: u8 = 136;

/// ICMP echo request.
pub const ICMP_ECHO: u8 = 8;
/// ICMP echo reply.
pub const ICMP_ECHOREPLY: u8 = 0;
/// Highest ICMP type the kernel knows (`NR_ICMP_TYPES`).
pub const NR_ICMP_TYPES: u8 = 18;

/// One direction of a connection, in host byte order.
///
/// For TCP/UDP (and SCTP/UDP-Lite) `sport`/`dport` are the ports. For ICMP,
/// `sport` is the echo id (`src.u.icmp.id`) and `dport` is `type << 8 | code`
/// (`dst.u.icmp.type/code`). Other protocols have both set to 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

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

/// `invmap` of nf_conntrack_proto_icmp.c: request type -> reply type (and back).
pub fn icmp_inverse_type(t: u8) -> Option<u8> {
    match t {
        8 => Some(0),
        0 => Some(8),
        13 => Some(14),
        14 => Some(13),
        15 => Some(16),
        16 => Some(15),
        17 => Some(18),
        18 => Some(17),
        _ => None,
    }
}

/// `icmp_is_err()`: destination unreachable, source quench, redirect, time
/// exceeded, parameter problem.
pub fn icmp_is_err(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

/// Whether the kernel reads ports for this protocol (`nf_ct_get_tuple`).
pub fn proto_has_ports(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE
    )
}

impl Tuple {
    /// A TCP/UDP-style tuple.
    pub fn new(proto: u8, src: u32, sport: u16, dst: u32, dport: u16) -> Tuple {
        Tuple {
            src,
            dst,
            sport,
            dport,
            proto,
        }
    }

    /// An ICMP tuple (`id` in `sport`, `type << 8 | code` in `dport`).
    pub fn icmp(src: u32, dst: u32, id: u16, icmp_type: u8, code: u8) -> Tuple {
        Tuple {
            src,
            dst,
            sport: id,
            dport: (u16::from(icmp_type) << 8) | u16::from(code),
            proto: IPPROTO_ICMP,
        }
    }

    /// ICMP type (ICMP tuples only).
    #[inline]
    pub fn icmp_type(&self) -> u8 {
        (self.dport >> 8) as u8
    }

    /// ICMP code (ICMP tuples only).
    #[inline]
    pub fn icmp_code(&self) -> u8 {
        (self.dport & 0xff) as u8
    }

    /// ICMP echo id (ICMP tuples only).
    #[inline]
    pub fn icmp_id(&self) -> u16 {
        self.sport
    }

    /// `nf_ct_invert_tuple()`: the tuple of the answer. `None` for ICMP types
    /// that have no answer (`nf_conntrack_invert_icmp_tuple` fails).
    pub fn invert(&self) -> Option<Tuple> {
        if self.proto == IPPROTO_ICMP {
            let t = icmp_inverse_type(self.icmp_type())?;
            return Some(Tuple {
                src: self.dst,
                dst: self.src,
                sport: self.sport,
                dport: (u16::from(t) << 8) | u16::from(self.icmp_code()),
                proto: self.proto,
            });
        }
        Some(Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        })
    }

    /// Two 64-bit words holding every field (used for hashing).
    #[inline]
    pub(crate) fn words(&self) -> (u64, u64) {
        (
            (u64::from(self.src) << 32) | u64::from(self.dst),
            (u64::from(self.sport) << 24) | (u64::from(self.dport) << 8) | u64::from(self.proto),
        )
    }
}

/// Dotted quad of a host-order address.
pub fn fmt_ip(ip: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invert_ports_and_icmp() {
        let t = Tuple::new(IPPROTO_TCP, 0x0a000001, 1000, 0x08080808, 80);
        let r = t.invert().unwrap();
        assert_eq!(r, Tuple::new(IPPROTO_TCP, 0x08080808, 80, 0x0a000001, 1000));
        let e = Tuple::icmp(1, 2, 0x1234, ICMP_ECHO, 0);
        let r = e.invert().unwrap();
        assert_eq!(
            (r.src, r.dst, r.icmp_id(), r.icmp_type(), r.icmp_code()),
            (2, 1, 0x1234, 0, 0)
        );
        // Destination unreachable has no inverse.
        assert!(Tuple::icmp(1, 2, 0, 3, 1).invert().is_none());
        assert!(Tuple::icmp(1, 2, 0, 9, 0).invert().is_none());
    }
}
