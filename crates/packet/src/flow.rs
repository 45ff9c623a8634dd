//! Flow keys: the tuple of one direction of a connection (the kernel's
//! `struct nf_conntrack_tuple`, IPv4 only), in host byte order. Conntrack
//! keys its table on it, the data plane's flow cache and steering hash it.

use crate::icmp;
use crate::ipv4::{PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PROTO_UDPLITE};

/// One direction of a connection, in host byte order.
///
/// For TCP/UDP (and SCTP/UDP-Lite) `sport`/`dport` are the ports. For ICMP,
/// `sport` is the echo id (`src.u.icmp.id`) and `dport` is `type << 8 | code`
/// (`dst.u.icmp.type/code`). Other protocols have both set to 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port, or the ICMP identifier.
    pub sport: u16,
    /// Destination port, or the ICMP `type << 8 | code`.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

/// Whether the tuple of this protocol carries ports (the kernel's
/// `nf_ct_get_tuple` reads them for TCP, UDP, SCTP and UDP-Lite).
pub fn proto_has_ports(proto: u8) -> bool {
    matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE)
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
            proto: PROTO_ICMP,
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
        if self.proto == PROTO_ICMP {
            let t = icmp::inverse_type(self.icmp_type())?;
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

    /// Two 64-bit words holding every field: the key that tables hash.
    #[inline]
    pub fn words(&self) -> (u64, u64) {
        (
            (u64::from(self.src) << 32) | u64::from(self.dst),
            (u64::from(self.sport) << 24) | (u64::from(self.dport) << 8) | u64::from(self.proto),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icmp::types::ECHO_REQUEST;

    #[test]
    fn invert_ports_and_icmp() {
        let t = Tuple::new(PROTO_TCP, 0x0a000001, 1000, 0x08080808, 80);
        let r = t.invert().unwrap();
        assert_eq!(r, Tuple::new(PROTO_TCP, 0x08080808, 80, 0x0a000001, 1000));
        let e = Tuple::icmp(1, 2, 0x1234, ECHO_REQUEST, 0);
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
