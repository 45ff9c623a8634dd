//! Writing the generator's frames into frame buffers, with the header
//! representations of `fastables-packet` (which compute the IPv4 and L4
//! checksums): no allocation per frame, the payload scratch buffer is
//! allocated once.

use fastables_packet::ethernet::{
    EthernetRepr, ETHERTYPE_IPV4, HEADER_LEN as ETH_LEN, MIN_FRAME_LEN,
};
use fastables_packet::ipv4::{Ipv4Repr, MIN_HEADER_LEN as IP_LEN, PROTO_TCP, PROTO_UDP};
use fastables_packet::tcp::{flags, TcpRepr, MIN_HEADER_LEN as TCP_LEN};
use fastables_packet::udp::{UdpRepr, HEADER_LEN as UDP_LEN};
use fastables_packet::MacAddr;

use crate::flow::Tuple;
use crate::payload::{self, Stamp};
use crate::GenError;

/// The transport of the generated frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// UDP datagrams.
    Udp,
    /// TCP SYNs (the stamp rides as SYN data), each a new connection
    /// attempt to conntrack; no handshake is completed.
    Syn,
    /// TCP connections: a three-way handshake with a responder (`gen
    /// --sink --echo`), then data segments carrying the stamp, in sequence
    /// (see [`crate::tcp`]).
    Tcp,
}

impl Proto {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Syn => "syn",
            Proto::Tcp => "tcp",
        }
    }

    fn l4_header(self) -> usize {
        match self {
            Proto::Udp => UDP_LEN,
            Proto::Syn | Proto::Tcp => TCP_LEN,
        }
    }

    /// The smallest frame (without FCS) that carries the stamp: the
    /// Ethernet minimum (60) or the headers plus the stamp.
    pub fn min_size(self) -> usize {
        (ETH_LEN + IP_LEN + self.l4_header() + payload::LEN).max(MIN_FRAME_LEN)
    }
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "udp" => Ok(Proto::Udp),
            "syn" => Ok(Proto::Syn),
            "tcp" => Ok(Proto::Tcp),
            _ => Err(format!("`{s}`: expected udp, syn or tcp")),
        }
    }
}

/// Writes frames of one size, protocol and pair of MACs.
#[derive(Debug, Clone)]
pub struct FrameWriter {
    eth: EthernetRepr,
    proto: Proto,
    size: usize,
    /// The L4 payload: the stamp, then zeros.
    payload: Vec<u8>,
}

impl FrameWriter {
    /// A writer of `size`-byte frames (without FCS; checked against
    /// [`Proto::min_size`] and `max`).
    pub fn new(
        src: MacAddr,
        dst: MacAddr,
        proto: Proto,
        size: usize,
        max: usize,
    ) -> Result<FrameWriter, GenError> {
        let min = proto.min_size();
        if size < min {
            return Err(GenError::SizeTooSmall {
                size,
                min,
                proto: proto.name(),
            });
        }
        if size > max {
            return Err(GenError::SizeTooLarge { size, max });
        }
        Ok(FrameWriter {
            eth: EthernetRepr {
                src,
                dst,
                vlan: None,
                ethertype: ETHERTYPE_IPV4,
            },
            proto,
            size,
            payload: vec![0; size - ETH_LEN - IP_LEN - proto.l4_header()],
        })
    }

    /// The source MAC.
    pub fn src_mac(&self) -> MacAddr {
        self.eth.src
    }

    /// Sets the destination MAC (once resolved).
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.eth.dst = mac;
    }

    /// The frame size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Writes the frame of `t` with stamp `s` at the start of `out`; returns
    /// its length, or None when `out` is too short.
    pub fn write(&mut self, out: &mut [u8], t: &Tuple, s: Stamp) -> Option<usize> {
        let frame = out.get_mut(..self.size)?;
        s.encode(&mut self.payload);
        let (eth, dgram) = frame.split_at_mut(ETH_LEN);
        self.eth.emit(eth).ok()?;
        let l4_len = self.size - ETH_LEN - IP_LEN;
        let ip = Ipv4Repr {
            src: t.src,
            dst: t.dst,
            protocol: match self.proto {
                Proto::Udp => PROTO_UDP,
                Proto::Syn | Proto::Tcp => PROTO_TCP,
            },
            ttl: 64,
            tos: 0,
            ident: s.seq as u16,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            options: &[],
            payload_len: l4_len,
        };
        let (iph, seg) = dgram.split_at_mut(IP_LEN);
        ip.emit(iph).ok()?;
        match self.proto {
            Proto::Udp => UdpRepr {
                src_port: t.sport,
                dst_port: t.dport,
                payload: &self.payload,
            }
            .emit(seg, t.src, t.dst)
            .ok()?,
            Proto::Syn | Proto::Tcp => TcpRepr {
                src_port: t.sport,
                dst_port: t.dport,
                seq: s.seq as u32,
                ack: 0,
                // Tcp: a data segment out of any connection (the tcp
                // module writes its segments with `write_tcp`).
                flags: if self.proto == Proto::Syn {
                    flags::SYN
                } else {
                    flags::ACK | flags::PSH
                },
                window: 64240,
                urgent: 0,
                options: &[],
                payload: &self.payload,
            }
            .emit(seg, t.src, t.dst)
            .ok()?,
        };
        Some(self.size)
    }

    /// Writes a TCP segment of `t` with header `h` at the start of `out`:
    /// with `stamp`, a data segment of the writer's size whose payload is
    /// the stamp and zeros; without, a segment without payload (padded to
    /// the Ethernet minimum). Its length, or None when `out` is too short.
    pub fn write_tcp(
        &mut self,
        out: &mut [u8],
        t: &Tuple,
        h: &TcpHeader<'_>,
        stamp: Option<Stamp>,
    ) -> Option<usize> {
        let payload: &[u8] = match stamp {
            Some(s) => {
                s.encode(&mut self.payload);
                &self.payload
            }
            None => &[],
        };
        let ident = stamp.map_or(0, |s| s.seq as u16);
        write_tcp(out, &self.eth, t, h, payload, ident)
    }
}

/// The header fields of a TCP segment to write (ports and addresses come
/// from the tuple).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags ([`flags`]).
    pub flags: u8,
    /// Window (as sent: the receiver scales it).
    pub window: u16,
    /// Options (padded to 4 bytes with EOL).
    pub options: &'a [u8],
}

/// Writes an Ethernet/IPv4/TCP frame of `t` (`eth` its MACs) at the start
/// of `out`, IPv4 and TCP checksums computed, padded with zeros to the
/// Ethernet minimum; its length, or None when `out` is too short.
pub fn write_tcp(
    out: &mut [u8],
    eth: &EthernetRepr,
    t: &Tuple,
    h: &TcpHeader<'_>,
    payload: &[u8],
    ident: u16,
) -> Option<usize> {
    let tcp = TcpRepr {
        src_port: t.sport,
        dst_port: t.dport,
        seq: h.seq,
        ack: h.ack,
        flags: h.flags,
        window: h.window,
        urgent: 0,
        options: h.options,
        payload,
    };
    let seg_len = tcp.segment_len();
    let end = ETH_LEN + IP_LEN + seg_len;
    let frame = out.get_mut(..end.max(MIN_FRAME_LEN))?;
    let (e, dgram) = frame.split_at_mut(ETH_LEN);
    eth.emit(e).ok()?;
    let (iph, rest) = dgram.split_at_mut(IP_LEN);
    Ipv4Repr {
        src: t.src,
        dst: t.dst,
        protocol: PROTO_TCP,
        ttl: 64,
        tos: 0,
        ident,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        options: &[],
        payload_len: seg_len,
    }
    .emit(iph)
    .ok()?;
    tcp.emit(rest, t.src, t.dst).ok()?;
    rest[seg_len..].fill(0);
    Some(frame.len())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use fastables_packet::parse::{l4_checksum_ok, parse_frame, L4};

    use super::*;
    use crate::sink::{stamp_of, Recognised};

    const SRC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const DST: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn tuple() -> Tuple {
        Tuple {
            src: Ipv4Addr::new(172, 18, 0, 2),
            dst: Ipv4Addr::new(8, 8, 8, 8),
            sport: 33894,
            dport: 9,
        }
    }

    #[test]
    fn frames_parse_with_correct_checksums_and_carry_the_stamp() {
        for (proto, size) in [
            (Proto::Udp, 60),
            (Proto::Udp, 1514),
            (Proto::Syn, 72),
            (Proto::Syn, 200),
        ] {
            let mut w = FrameWriter::new(SRC, DST, proto, size, 2048).unwrap();
            let mut buf = [0xeeu8; 2048];
            let s = Stamp {
                seq: 0x1_0000_0007,
                ts_ns: 123_456_789,
            };
            assert_eq!(w.write(&mut buf, &tuple(), s), Some(size));
            let f = &buf[..size];
            let p = parse_frame(f).unwrap();
            let ip = p.ipv4().unwrap();
            assert_eq!(
                (ip.src, ip.dst, ip.ttl, ip.ident),
                (tuple().src, tuple().dst, 64, 7)
            );
            assert_eq!(usize::from(ip.total_len), size - 14);
            match (proto, ip.l4) {
                (
                    Proto::Udp,
                    L4::Udp {
                        src_port,
                        dst_port,
                        len,
                    },
                ) => {
                    assert_eq!(
                        (src_port, dst_port, usize::from(len)),
                        (33894, 9, size - 34)
                    );
                }
                (
                    Proto::Syn,
                    L4::Tcp {
                        src_port,
                        dst_port,
                        flags,
                        ..
                    },
                ) => {
                    assert_eq!((src_port, dst_port, flags), (33894, 9, flags::SYN));
                }
                other => panic!("{proto:?}: {other:?}"),
            }
            assert!(l4_checksum_ok(f, &p), "{proto:?} {size}");
            assert_eq!(stamp_of(f), Recognised::Stamp(s, tuple()));
            // A flipped payload bit is caught by the checksum.
            let mut bad = f.to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 0x10;
            assert_eq!(stamp_of(&bad), Recognised::BadChecksum);
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(Proto::Udp.min_size(), 60);
        assert_eq!(Proto::Syn.min_size(), 72);
        assert_eq!(
            FrameWriter::new(SRC, DST, Proto::Syn, 64, 2048)
                .unwrap_err()
                .to_string(),
            "--size 64: a syn frame with the generator's stamp needs at least 72 bytes"
        );
        assert_eq!(
            FrameWriter::new(SRC, DST, Proto::Udp, 1515, 1514)
                .unwrap_err()
                .to_string(),
            "--size 1515: at most 1514 bytes here (the device's MTU plus the 14-byte Ethernet header)"
        );
        let mut w = FrameWriter::new(SRC, DST, Proto::Udp, 100, 2048).unwrap();
        assert_eq!(
            w.write(&mut [0u8; 99], &tuple(), Stamp { seq: 0, ts_ns: 0 }),
            None
        );
    }

    #[test]
    fn foreign_and_malformed_frames_are_other_without_panicking() {
        let mut w = FrameWriter::new(SRC, DST, Proto::Udp, 60, 2048).unwrap();
        let mut buf = [0u8; 60];
        w.write(&mut buf, &tuple(), Stamp { seq: 1, ts_ns: 2 })
            .unwrap();
        // Every truncation, and every single-byte corruption of the headers.
        for n in 0..60 {
            assert_ne!(
                stamp_of(&buf[..n]),
                Recognised::Stamp(Stamp { seq: 1, ts_ns: 2 }, tuple()),
                "cut to {n}"
            );
        }
        for i in 0..42 {
            for v in [0u8, 0xff, buf[i] ^ 0x5a] {
                let mut b = buf;
                b[i] = v;
                let _ = stamp_of(&b);
            }
        }
        let arp = fastables_packet::builder::arp_request(SRC, tuple().src, tuple().dst);
        assert_eq!(stamp_of(&arp), Recognised::Other);
        assert_eq!(stamp_of(&[]), Recognised::Other);
    }
}
