//! The input walk: one received frame from its first byte to its verdict,
//! in the kernel's order. Read top to bottom:
//!
//! 1. [`Pipeline::process_rx`]: the frame's bounds, L2 (ours / broadcast /
//!    multicast, else an OTHERHOST drop), the parse, ARP; conntrack's
//!    reassembly holds fragments ([`super::reasm`]); then the datagram
//!    goes on as a [`Pkt`], and its trace and recording end.
//! 2. [`Pipeline::ipv4_in`]: the flow cache's fast path ([`super::flow`]),
//!    else PREROUTING (raw, conntrack, mangle, nat), routing, then local
//!    delivery ([`super::local`]) or
//! 3. [`Pipeline::forward`] (`ip_forward`): TTL and MTU checks, the TTL
//!    decrement, FORWARD (mangle, filter), POSTROUTING (mangle, nat,
//!    conntrack's confirmation, the source rewrite), then
//! 4. [`Pipeline::neigh_output`]: the next hop's MAC, or a hold until it is
//!    known.

use fastables_conntrack::{CtState, Hint, Manip};
use fastables_packet::icmp::{time_exceeded, types, unreach};
use fastables_packet::ipv4::{PROTO_TCP, PROTO_UDP};
use fastables_packet::parse::{parse_frame, parse_ipv4_simple, L3, L4};
use fastables_packet::tcp::flags as tcpf;
use fastables_packet::IfIndex;
use fastables_packet::{MacAddr, ParseError};
use fastables_rules::ctx::CtCtx;
use fastables_rules::model::{Hook, RejectWith, Table};

use super::conntrack::{ct_ctx, invalid_ctx, Ct};
use super::flow::{set_ttl, Fast};
use super::output::Generate;
use super::pkt::{set_macs, CtSeen, Fate, Pkt, ETH_LEN};
use super::reasm;
use super::tables::Outcome;
use super::Pipeline;
use crate::drop::DropReason;
use crate::icmp;
use crate::neigh::{self, ArpOutcome};
use crate::route::{RouteResult, RouteType};
use fastables_port::{Frame, FRAME_SIZE};

impl Pipeline {
    /// One received frame: what becomes of it, and what to generate.
    /// `hint`: where the batch's lookups ahead found its connection;
    /// `reasm`: the frame is the first fragment of a reassembled datagram
    /// of that length. The frame may be rewritten, and `f.len` shortened
    /// (Ethernet padding is removed).
    pub(super) fn process_rx(
        &mut self,
        now_ns: u64,
        mem: &mut [u8],
        f: &mut Frame,
        hint: Option<Hint>,
        reasm: Option<u16>,
    ) -> (Fate, Option<Generate>) {
        let start = usize::try_from(f.addr).unwrap_or(usize::MAX);
        let len = usize::from(f.len);
        if len > FRAME_SIZE {
            return (Fate::Drop(DropReason::InvalidFrame), None);
        }
        let Some(buf) = start
            .checked_add(FRAME_SIZE)
            .and_then(|end| mem.get_mut(start..end))
        else {
            return (Fate::Drop(DropReason::InvalidFrame), None);
        };
        let in_if = f.port;
        let Some(in_dev) = self.ifs.get(in_if) else {
            return (Fate::Drop(DropReason::InvalidFrame), None);
        };
        let in_mac = in_dev.mac;
        // L2: the kernel's pkt_type, before any L3 check (ip_rcv_core and
        // arp_rcv drop PACKET_OTHERHOST first).
        let dst_mac = MacAddr([buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]]);
        let to_host = dst_mac == in_mac;
        if len >= ETH_LEN && !to_host && !dst_mac.is_multicast() {
            return (Fate::Drop(DropReason::OtherHost), None);
        }
        // Matched by reference: the parse result is not copied again. Plain
        // IPv4 (untagged, no options) takes the shorter parse.
        let simple;
        let res;
        let info = if let Some(i) = parse_ipv4_simple(buf.get(..len).unwrap_or(&[])) {
            simple = i;
            &simple
        } else {
            res = parse_frame(buf.get(..len).unwrap_or(&[]));
            let parsed = match &res {
                Ok(p) => p,
                Err(e) => return (Fate::Drop(drop_of_parse(*e)), None),
            };
            if parsed.vlan_id.is_some() {
                return (Fate::Drop(DropReason::NotIpv4), None);
            }
            match &parsed.l3 {
                L3::Ipv4(i) => i,
                L3::Arp(arp) => {
                    let (fib, ifs) = (self.routes.fib(), &self.ifs);
                    let out = neigh::process_arp(&mut self.neigh, in_if, in_mac, arp, |tip| {
                        matches!(
                            fib.route_input(ifs, in_if, u32::from(arp.spa), tip),
                            Ok(r) if r.kind == RouteType::Local
                        )
                    });
                    return match out {
                        ArpOutcome::Reply(r) => (Fate::Consumed, Some(Generate::ArpReply(r))),
                        ArpOutcome::Consumed => (Fate::Consumed, None),
                        ArpOutcome::NotForUs => (Fate::Drop(DropReason::ArpNotForUs), None),
                    };
                }
                L3::Other => return (Fate::Drop(DropReason::NotIpv4), None),
            }
        };
        // Trim Ethernet padding, as the kernel trims the skb to the IP total length.
        f.len = (ETH_LEN + usize::from(info.total_len)) as u16;

        // nf_defrag_ipv4 runs before raw PREROUTING whenever conntrack is
        // loaded: a fragment waits for the rest of its datagram.
        if self.ct.table.is_some() && info.is_fragment() && reasm.is_none() {
            let key = reasm::Key {
                src: u32::from(info.src),
                dst: u32::from(info.dst),
                proto: info.protocol,
                id: info.ident,
            };
            let piece = reasm::Piece {
                addr: f.addr,
                len: f.len,
                off: info.frag_offset,
                plen: info.total_len.saturating_sub(u16::from(info.header_len)),
                mf: info.more_frags,
            };
            return (Fate::HoldFragment { key, piece }, None);
        }

        let mut pkt = Pkt::new(buf, info);
        pkt.to_host = to_host;
        pkt.hint = hint;
        pkt.reasm = reasm;
        let (fate, generate) = self.ipv4_in(now_ns, &mut pkt, in_if);
        if let Some(rec) = pkt.rec {
            self.fast_record(rec, in_if, fate);
        }
        if pkt.traced {
            self.trace_end(pkt.buf.get(..usize::from(f.len)).unwrap_or(&[]), fate);
        }
        (fate, generate)
    }

    /// A datagram received on `in_if`: the flow cache's fast path, else
    /// PREROUTING, routing, and local delivery or forwarding.
    fn ipv4_in(&mut self, now_ns: u64, pkt: &mut Pkt, in_if: IfIndex) -> (Fate, Option<Generate>) {
        let info = pkt.info;
        // The flow cache's candidates.
        let fast = self.fast.usable
            && pkt.to_host
            && info.ttl > 1
            && !info.is_fragment()
            && matches!(info.protocol, PROTO_TCP | PROTO_UDP)
            && pkt.reasm.is_none()
            && self.trace.is_none();
        if fast {
            if let Fast::Done(fate, generate) = self.fast_forward(now_ns, pkt, in_if) {
                return (fate, generate);
            }
        }
        if self.trace.is_some() {
            pkt.traced = self.trace_begin(info, in_if);
        }
        pkt.fill_ctx(self.tables.needs, &self.ifs);
        if let Some(total) = pkt.reasm {
            // The first fragment stands for the reassembled datagram.
            pkt.ctx.len = total;
        }
        pkt.ctx.in_if = Some(in_if);
        // raw runs before conntrack: no connection yet, `-m state` says
        // INVALID (unless conntrack came first, raw not minding).
        let ct_first = matches!(pkt.ct_seen, CtSeen::Applied(_));
        if !ct_first {
            pkt.ctx.ct = if self.ct.table.is_some() {
                invalid_ctx()
            } else {
                CtCtx::untracked()
            };
        }

        // PREROUTING.
        match self.run_table(now_ns, Table::Raw, Hook::Prerouting, pkt, None) {
            Outcome::Continue | Outcome::Nat(_) => {}
            Outcome::Drop(r) => return (Fate::Drop(r), None),
            Outcome::Reject(_) => return (Fate::Drop(DropReason::Rejected), None),
        }
        if let CtSeen::Applied(Err(r)) = pkt.ct_seen {
            return (Fate::Drop(r), None);
        }
        if pkt.ctx.effects.notrack {
            pkt.ctx.ct = CtCtx::untracked();
        } else if !ct_first {
            let csum = self.ct.checksum;
            if let Err(r) = self.ct_in(now_ns, pkt, csum) {
                return (Fate::Drop(r), None);
            }
            if pkt.traced {
                self.trace_ct("conntrack", &pkt.ct);
            }
        }
        match self.run_table(now_ns, Table::Mangle, Hook::Prerouting, pkt, None) {
            Outcome::Continue | Outcome::Nat(_) => {}
            Outcome::Drop(r) => return (Fate::Drop(r), None),
            Outcome::Reject(_) => return (Fate::Drop(DropReason::Rejected), None),
        }
        if let Some(rec) = pkt.rec.as_mut() {
            rec.pre_len = self.tables.state.path_len();
        }
        // nat PREROUTING (NEW only), then the destination rewrite before routing.
        let dnat = match self.nat_rules(now_ns, Hook::Prerouting, pkt, None, Manip::Dst) {
            Ok(r) => r,
            Err((r, _)) => return (Fate::Drop(r), None),
        };
        self.nat_dst(now_ns, pkt, dnat);

        // Routing (on the header as PREROUTING left it).
        let route = match self
            .routes
            .input(&self.ifs, in_if, pkt.ctx.src, pkt.ctx.dst)
        {
            Ok(r) => r,
            Err(DropReason::NoRoute) => {
                // ip_error: net unreachable (forwarding on), not for non-unicast frames.
                let g = (pkt.to_host && icmp::icmp_error_allowed(info))
                    .then_some(Generate::icmp(types::DEST_UNREACH, unreach::NET));
                return (Fate::Drop(DropReason::NoRoute), g);
            }
            Err(r) => return (Fate::Drop(r), None),
        };
        if route.kind != RouteType::Unicast {
            return self.local_in(now_ns, pkt, route.kind);
        }
        self.forward(now_ns, pkt, &route)
    }

    /// `ip_forward` on to the wire: the TTL and MTU checks, FORWARD,
    /// POSTROUTING, the neighbour.
    fn forward(
        &mut self,
        now_ns: u64,
        pkt: &mut Pkt,
        route: &RouteResult,
    ) -> (Fate, Option<Generate>) {
        let info = pkt.info;
        if !pkt.to_host {
            return (Fate::Drop(DropReason::OtherHost), None);
        }
        // As in `ip_forward`, the TTL check, the DF/MTU check and the TTL
        // decrement come before the FORWARD hook (FORWARD rules and LOG see
        // the decremented TTL, a REJECT in FORWARD quotes it).
        if pkt.ctx.ttl <= 1 {
            let g = icmp::icmp_error_allowed(info)
                .then_some(Generate::icmp(types::TIME_EXCEEDED, time_exceeded::TTL));
            return (Fate::Drop(DropReason::TtlExpired), g);
        }
        let (ip_len, mtu) = (pkt.ip_len(), route.mtu);
        if ip_len > usize::from(mtu) && info.dont_frag {
            let g = icmp::icmp_error_allowed(info).then_some(Generate::IcmpError {
                ty: types::DEST_UNREACH,
                code: unreach::FRAG_NEEDED,
                rest: u32::from(mtu),
                src: None,
            });
            return (Fate::Drop(DropReason::FragNeeded), g);
        }
        pkt.ctx.ttl -= 1;
        let ttl = pkt.ctx.ttl;
        if let Some(ip) = pkt.ip_mut() {
            set_ttl(ip, ttl);
        }
        pkt.ctx.out_if = Some(route.dev);
        for (table, hook) in [
            (Table::Mangle, Hook::Forward),
            (Table::Filter, Hook::Forward),
            (Table::Mangle, Hook::Postrouting),
        ] {
            match self.run_table(now_ns, table, hook, pkt, Some(mtu)) {
                Outcome::Continue | Outcome::Nat(_) => {}
                Outcome::Drop(r) => return (Fate::Drop(r), None),
                Outcome::Reject(rw) => {
                    return (
                        Fate::Drop(DropReason::Rejected),
                        self.reject_answer(rw, pkt, None),
                    )
                }
            }
        }
        // nat POSTROUTING (NEW only), confirm, the source rewrite.
        let out = Some((route.dev, route.next_hop, mtu));
        let snat = match self.nat_rules(now_ns, Hook::Postrouting, pkt, out, Manip::Src) {
            Ok(r) => r,
            Err((r, rw)) => {
                let g = rw.and_then(|rw| self.reject_answer(rw, pkt, None));
                return (Fate::Drop(r), g);
            }
        };
        if let Err(r) = self.confirm_and_snat(now_ns, pkt, snat) {
            return (Fate::Drop(r), None);
        }
        if pkt.traced {
            self.trace_ct("conntrack after NAT", &pkt.ct);
        }
        if let Some(rec) = pkt.rec.as_mut() {
            // The decision recorded for this connection, if this packet
            // went through the chains as one of its packets in its state.
            let is_rec = match (&pkt.ct, self.ct.entry(&pkt.ct)) {
                (&Ct::Conn { id, dir }, Some((_, _, state))) => rec.is(id, dir, state),
                _ => false,
            };
            if is_rec && ip_len <= usize::from(mtu) {
                rec.route = Some((route.dev, route.next_hop, mtu));
            }
        }
        self.neigh_output(now_ns, pkt, route)
    }

    /// The L2 rewrite for the next hop of `route`: its MAC (probed again
    /// when stale), or the frame held until it answers an ARP request.
    fn neigh_output(
        &mut self,
        now_ns: u64,
        pkt: &mut Pkt,
        route: &RouteResult,
    ) -> (Fate, Option<Generate>) {
        let (out_dev, next_hop, mtu) = (route.dev, route.next_hop, route.mtu);
        let Some(out_mac) = self.ifs.get(out_dev).map(|i| i.mac) else {
            return (Fate::Drop(DropReason::InvalidFrame), None);
        };
        let too_big = pkt.ip_len() > usize::from(mtu);
        match self.neigh.resolve(out_dev, next_hop, now_ns) {
            neigh::Resolve::Mac(nh_mac) | neigh::Resolve::Probe(nh_mac) if too_big => {
                set_macs(pkt.buf, nh_mac, out_mac);
                // Larger than the MTU without DF: ip_fragment after POSTROUTING
                // (a due probe waits for the next packet).
                let fate = Fate::Forward {
                    port: out_dev,
                    fragment: Some(mtu),
                };
                (fate, None)
            }
            neigh::Resolve::Mac(nh_mac) => {
                set_macs(pkt.buf, nh_mac, out_mac);
                (Fate::forward(out_dev), None)
            }
            neigh::Resolve::Probe(nh_mac) => {
                set_macs(pkt.buf, nh_mac, out_mac);
                let sender = self.ifs.select_addr(out_dev, next_hop).unwrap_or(0);
                let probe = Generate::ArpProbe {
                    dev: out_dev,
                    target: next_hop,
                    sender,
                    mac: nh_mac,
                };
                (Fate::forward(out_dev), Some(probe))
            }
            neigh::Resolve::Unresolved => {
                // arp_solicit with arp_announce 0: the packet's source is not ours,
                // so the device's address towards the target.
                let sender = self.ifs.select_addr(out_dev, next_hop).unwrap_or(0);
                let arp = Some(Generate::ArpRequest {
                    dev: out_dev,
                    target: next_hop,
                    sender,
                });
                if too_big {
                    // Held frames are sent as they are: not one that needs fragments.
                    return (Fate::Drop(DropReason::NeighborUnresolved), arp);
                }
                if let Some(src) = pkt.buf.get_mut(fastables_packet::ethernet::field::SRC) {
                    src.copy_from_slice(&out_mac.0);
                }
                let fate = Fate::HoldNeighbor {
                    dev: out_dev,
                    next_hop,
                };
                (fate, arp)
            }
        }
    }

    /// The generated answer to a REJECT of the packet (`local_src`: the
    /// address to answer from, for local delivery).
    pub(super) fn reject_answer(
        &self,
        rw: RejectWith,
        pkt: &Pkt,
        local_src: Option<u32>,
    ) -> Option<Generate> {
        let info = pkt.info;
        if rw == RejectWith::TcpReset {
            // nf_send_reset: complete TCP header, not a fragment, not a RST.
            let related_new = match &pkt.ct {
                Ct::New(nc) => Some(ct_ctx(&nc.entry, CtState::Related)),
                _ => None,
            };
            return match info.l4 {
                L4::Tcp { flags, .. } if info.frag_offset == 0 && flags & tcpf::RST == 0 => {
                    Some(Generate::TcpReset {
                        reject: true,
                        related_new,
                    })
                }
                _ => None,
            };
        }
        icmp::icmp_error_allowed(info).then_some(Generate::IcmpError {
            ty: types::DEST_UNREACH,
            code: reject_code(rw),
            rest: 0,
            src: local_src,
        })
    }
}

/// The drop reason of a frame that does not parse.
pub(super) fn drop_of_parse(e: ParseError) -> DropReason {
    match e {
        ParseError::Truncated => DropReason::Truncated,
        ParseError::BadHeaderChecksum => DropReason::BadIpChecksum,
        ParseError::BadArp => DropReason::BadArp,
        _ => DropReason::BadIpHeader,
    }
}

/// The ICMP code of `REJECT --reject-with`.
fn reject_code(r: RejectWith) -> u8 {
    match r {
        RejectWith::IcmpNetUnreachable => unreach::NET,
        RejectWith::IcmpHostUnreachable => unreach::HOST,
        RejectWith::IcmpPortUnreachable => unreach::PORT,
        RejectWith::IcmpProtoUnreachable => unreach::PROTOCOL,
        RejectWith::IcmpNetProhibited => unreach::NET_PROHIBITED,
        RejectWith::IcmpHostProhibited => unreach::HOST_PROHIBITED,
        RejectWith::IcmpAdminProhibited => unreach::ADMIN_PROHIBITED,
        RejectWith::TcpReset => 0,
    }
}
