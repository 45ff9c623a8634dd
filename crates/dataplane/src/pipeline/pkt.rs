//! What travels with a packet from stage to stage: [`Pkt`], the state of
//! one datagram on its way (what the kernel keeps in the `sk_buff` for the
//! length of one walk), and [`Fate`], what becomes of a received frame.

use fastables_conntrack::{Hint, Track};
use fastables_packet::ethernet::{self, MacAddr};
use fastables_packet::parse::{Ipv4Info, L4};
use fastables_packet::IfIndex;
use fastables_rules::ctx::{tcp_option_kinds, Needs, PacketCtx};

use super::conntrack::Ct;
use super::flow::Recording;
use super::reasm;
use crate::drop::DropReason;
use crate::iface::Interfaces;

/// Bytes of the Ethernet header before the datagram.
pub(super) const ETH_LEN: usize = ethernet::HEADER_LEN;

/// Writes the Ethernet destination and source addresses of the frame `buf`.
#[inline(always)]
pub(super) fn set_macs(buf: &mut [u8], dst: MacAddr, src: MacAddr) {
    if let Some(d) = buf.get_mut(ethernet::field::DST) {
        d.copy_from_slice(&dst.0);
    }
    if let Some(s) = buf.get_mut(ethernet::field::SRC) {
        s.copy_from_slice(&src.0);
    }
}

/// What becomes of a received frame: the pipeline's verdict, with what the
/// batch loop needs to carry it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Send it out of `port` (rewritten: TTL, checksums, NAT, MACs).
    /// `fragment`: the route's MTU when the datagram is larger (without
    /// DF): it leaves as fragments for that MTU (`ip_fragment` after
    /// POSTROUTING).
    Forward {
        port: IfIndex,
        fragment: Option<u16>,
    },
    /// Drop it, counted under this reason.
    Drop(DropReason),
    /// Taken by the local stack: its buffer is free.
    Consumed,
    /// Hold it until the MAC of `next_hop` on `dev` is known (its source
    /// MAC is written; the destination is written when it leaves).
    HoldNeighbor { dev: IfIndex, next_hop: u32 },
    /// A fragment to hold until its datagram is whole (conntrack's
    /// reassembly, [`reasm`]).
    HoldFragment {
        key: reasm::Key,
        piece: reasm::Piece,
    },
}

impl Fate {
    /// Send it out of `port` as it is.
    pub(super) const fn forward(port: IfIndex) -> Fate {
        Fate::Forward {
            port,
            fragment: None,
        }
    }
}

/// Whether conntrack has seen a packet before PREROUTING's conntrack step.
// The answer stays where it was written, in the Pkt on the stack: boxing it
// would allocate per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub(super) enum CtSeen {
    /// Not yet: the conntrack step asks it.
    No,
    /// Asked by the flow cache before raw PREROUTING, whose rules still
    /// run first: the conntrack step applies this answer instead of asking
    /// again.
    Asked(Track),
    /// Asked and applied (`pkt.ct`, `ctx.ct`) by the flow cache, because
    /// raw PREROUTING lets every packet through unseen: the conntrack step
    /// is done; a drop (a full table) waits for raw's count.
    Applied(Result<(), DropReason>),
}

/// One datagram on its way through the hooks, received or generated here:
/// its frame, its parse, the rules' view of it and its connection, and
/// what the stages hand on to each other about it. Built once per packet,
/// passed along by reference.
pub(super) struct Pkt<'a> {
    /// The frame buffer, Ethernet header first.
    pub buf: &'a mut [u8],
    /// The parse of the datagram as it came. The stages rewrite addresses,
    /// ports and the TTL in `buf` and keep `ctx` in step; `info` stays as
    /// parsed.
    pub info: &'a Ipv4Info,
    /// The rules' view of the packet and the effects of the rules that ran
    /// (filled after the flow cache, which does without it).
    pub ctx: PacketCtx,
    /// Its connection.
    pub ct: Ct,
    /// Addressed to the ingress interface's own MAC (not broadcast or
    /// multicast): the kernel's `PACKET_HOST`.
    pub to_host: bool,
    /// The first fragment of a reassembled datagram, standing for it: the
    /// datagram's length.
    pub reasm: Option<u16>,
    /// Where the batch's lookups ahead (or the flow cache) found the
    /// packet's connection; taken by conntrack's lookup.
    pub hint: Option<Hint>,
    /// Whether conntrack has seen the packet already: the flow cache asks
    /// it before the hooks.
    pub ct_seen: CtSeen,
    /// The flow cache records this packet's way as its connection's
    /// decision.
    pub rec: Option<Recording>,
    /// The packet is being traced (`fastables trace`).
    pub traced: bool,
}

impl<'a> Pkt<'a> {
    /// The datagram in `buf` (Ethernet header first) parsed as `info`,
    /// before any stage saw it.
    #[inline(always)]
    pub(super) fn new(buf: &'a mut [u8], info: &'a Ipv4Info) -> Pkt<'a> {
        Pkt {
            buf,
            info,
            ctx: PacketCtx::new(),
            ct: Ct::None,
            to_host: false,
            reasm: None,
            hint: None,
            ct_seen: CtSeen::No,
            rec: None,
            traced: false,
        }
    }

    /// The datagram's length (its IP total length).
    #[inline(always)]
    pub(super) fn ip_len(&self) -> usize {
        usize::from(self.info.total_len)
    }

    /// The datagram (from its IP header), empty if the buffer is short.
    #[inline(always)]
    pub(super) fn ip(&self) -> &[u8] {
        self.buf
            .get(ETH_LEN..ETH_LEN + self.ip_len())
            .unwrap_or(&[])
    }

    /// The datagram, mutable.
    #[inline(always)]
    pub(super) fn ip_mut(&mut self) -> Option<&mut [u8]> {
        let n = self.ip_len();
        self.buf.get_mut(ETH_LEN..ETH_LEN + n)
    }

    /// Fills the packet fields of `ctx` from the parse (TCP option kinds
    /// and address types only when the ruleset reads them).
    #[inline(always)]
    pub(super) fn fill_ctx(&mut self, needs: Needs, ifs: &Interfaces) {
        let (info, ctx) = (self.info, &mut self.ctx);
        ctx.src = u32::from(info.src);
        ctx.dst = u32::from(info.dst);
        ctx.proto = info.protocol;
        ctx.set_frag_offset(info.frag_offset >> 3);
        ctx.ttl = info.ttl;
        ctx.len = info.total_len;
        ctx.has_l4 = info.l4_complete();
        ctx.sport = 0;
        ctx.dport = 0;
        ctx.tcp_flags = 0;
        ctx.icmp_type = 0;
        ctx.icmp_code = 0;
        match info.l4 {
            L4::Tcp {
                src_port,
                dst_port,
                flags,
                header_len,
            } => {
                ctx.sport = src_port;
                ctx.dport = dst_port;
                ctx.tcp_flags = flags;
                if needs.tcp_options {
                    let seg_end = ETH_LEN + usize::from(info.total_len);
                    let opts_end = info.l4_offset + usize::from(header_len);
                    match self.buf.get(info.l4_offset + 20..opts_end.min(seg_end)) {
                        Some(o) if header_len >= 20 && opts_end <= seg_end => {
                            ctx.tcp_options = tcp_option_kinds(o);
                            ctx.tcp_options_bad = false;
                        }
                        _ => {
                            ctx.tcp_options = [0; 4];
                            ctx.tcp_options_bad = true;
                        }
                    }
                }
            }
            L4::Udp {
                src_port, dst_port, ..
            } => {
                ctx.sport = src_port;
                ctx.dport = dst_port;
            }
            L4::Icmp {
                icmp_type, code, ..
            } => {
                ctx.icmp_type = icmp_type;
                ctx.icmp_code = code;
            }
            _ => {}
        }
        if needs.addrtype {
            ctx.src_type = ifs.addr_type(ctx.src);
            ctx.dst_type = ifs.addr_type(ctx.dst);
        }
    }
}
