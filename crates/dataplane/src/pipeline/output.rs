//! Output: the packets the pipeline generates for a received frame (ICMP
//! errors, TCP resets, echo replies, ARP) and the local output path they
//! take (OUTPUT raw, mangle, nat, filter; POSTROUTING mangle, nat; the
//! neighbour, an ARP request instead when it is unknown), and the
//! neighbour hold queue: frames that wait for their next hop's MAC, sent
//! when it answers, dropped with a host unreachable when it does not.

use fastables_conntrack::{Manip, Tuple};
use fastables_packet::arp::ArpRepr;
use fastables_packet::icmp::{types, unreach};
use fastables_packet::ipv4::{Ipv4Packet, PROTO_TCP};
use fastables_packet::parse::L3;
use fastables_packet::IfIndex;
use fastables_packet::{parse_frame, tcp, MacAddr};
use fastables_rules::ctx::CtCtx;
use fastables_rules::model::{Hook, Table};

use super::conntrack::invalid_ctx;
use super::input::drop_of_parse;
use super::nat;
use super::pkt::{set_macs, Pkt, ETH_LEN};
use super::tables::Outcome;
use super::{Pipeline, PipelineCounters};
use crate::drop::DropReason;
use crate::icmp;
use crate::neigh::{self, HeldEvent};
use crate::worker::Batch;
use fastables_port::{Frame, FRAME_SIZE};

/// What the output stage keeps: the ICMP rate limits, the IP ID of
/// generated packets, and scratch for the hold queue's events.
pub(super) struct Output {
    pub icmp_rl: icmp::IcmpRateLimiter,
    /// IP ID of the next generated packet that carries one.
    next_ident: u16,
    /// Scratch for [`neigh::Neighbors::service`] (capacity allocated once).
    held_events: Vec<HeldEvent>,
}

impl Output {
    /// ICMP errors limited to `per_sec` (burst `burst`).
    pub(super) fn new(per_sec: u32, burst: u32) -> Output {
        Output {
            icmp_rl: icmp::IcmpRateLimiter::new(per_sec, burst),
            next_ident: 1,
            held_events: Vec::with_capacity(2 * neigh::HOLD_MAX),
        }
    }

    /// The IP ID of the next generated packet.
    fn ident(&mut self) -> u16 {
        let i = self.next_ident;
        self.next_ident = self.next_ident.wrapping_add(1);
        i
    }
}

/// A packet to generate about a received frame, once it has its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Generate {
    /// An ICMP error quoting the frame's datagram. `src`: the source address to
    /// use (the original destination for locally delivered packets), else the
    /// route's.
    IcmpError {
        ty: u8,
        code: u8,
        rest: u32,
        src: Option<u32>,
    },
    /// A TCP reset; `reject`: from REJECT (TOS 0) rather than the stack (TOS copied).
    /// `related_new`: REJECT's reset carries the rejected packet's connection
    /// (`nf_ct_attach`, RELATED in the reply direction); when that connection
    /// is still unconfirmed, this is its context for the rules.
    TcpReset {
        reject: bool,
        related_new: Option<CtCtx>,
    },
    /// An echo reply.
    EchoReply,
    /// An ARP reply on the ingress port.
    ArpReply(ArpRepr),
    /// An ARP request for `target` on `dev`.
    ArpRequest {
        dev: IfIndex,
        target: u32,
        sender: u32,
    },
    /// A unicast ARP request to `mac` for `target` on `dev` (probing a
    /// stale entry).
    ArpProbe {
        dev: IfIndex,
        target: u32,
        sender: u32,
        mac: MacAddr,
    },
}

impl Generate {
    /// An ICMP error from the route's source address.
    pub(super) const fn icmp(ty: u8, code: u8) -> Generate {
        Generate::IcmpError {
            ty,
            code,
            rest: 0,
            src: None,
        }
    }
}

/// Two disjoint frame buffers of `mem`.
pub(super) fn frame_pair(mem: &mut [u8], a: usize, b: usize) -> Option<(&mut [u8], &mut [u8])> {
    if a.abs_diff(b) < FRAME_SIZE || a.max(b) > mem.len() {
        return None;
    }
    if a < b {
        let (lo, hi) = mem.split_at_mut(b);
        Some((lo.get_mut(a..a + FRAME_SIZE)?, hi.get_mut(..FRAME_SIZE)?))
    } else {
        let (lo, hi) = mem.split_at_mut(a);
        let fb = lo.get_mut(b..b + FRAME_SIZE)?;
        Some((hi.get_mut(..FRAME_SIZE)?, fb))
    }
}

impl Pipeline {
    /// Builds `g` about the received frame `rx` into a spare buffer of
    /// `batch`, and queues it in `batch.generated`.
    pub(super) fn generate(
        &mut self,
        now_ns: u64,
        mem: &mut [u8],
        rx: &Frame,
        g: Generate,
        batch: &mut Batch,
    ) {
        let Some(addr) = batch.spare.pop() else {
            self.drops.inc(DropReason::NoBuffer);
            return;
        };
        let (Ok(a), Ok(b)) = (usize::try_from(rx.addr), usize::try_from(addr)) else {
            self.drops.inc(DropReason::InvalidFrame);
            return;
        };
        let Some((rxb, out)) = frame_pair(mem, a, b) else {
            batch.spare.push(addr);
            self.drops.inc(DropReason::InvalidFrame);
            return;
        };
        let rx_len = usize::from(rx.len).min(FRAME_SIZE);
        match self.build(now_ns, rxb.get(..rx_len).unwrap_or(&[]), rx.port, g, out) {
            Ok((port, len)) => {
                PipelineCounters::inc(&self.counters.generated);
                batch.generated.push(Frame {
                    addr,
                    len: len as u16,
                    port,
                });
            }
            Err(r) => {
                batch.spare.push(addr);
                self.drops.inc(r);
            }
        }
    }

    /// Writes the generated packet into `out`; returns (egress port, frame length).
    fn build(
        &mut self,
        now_ns: u64,
        rx: &[u8],
        in_port: IfIndex,
        g: Generate,
        out: &mut [u8],
    ) -> Result<(IfIndex, usize), DropReason> {
        let datagram = || {
            let ip = rx.get(ETH_LEN..).ok_or(DropReason::Truncated)?;
            Ipv4Packet::new_checked(ip).map_err(|_| DropReason::Truncated)
        };
        match g {
            Generate::ArpReply(r) => {
                let mac = self.ifs.get(in_port).ok_or(DropReason::InvalidFrame)?.mac;
                let n = neigh::emit_arp(out, mac, r.tha, &r).ok_or(DropReason::NoBuffer)?;
                Ok((in_port, n))
            }
            Generate::ArpRequest {
                dev,
                target,
                sender,
            } => self.arp_request(now_ns, out, dev, target, sender),
            Generate::ArpProbe {
                dev,
                target,
                sender,
                mac,
            } => {
                let us = self.ifs.get(dev).ok_or(DropReason::InvalidFrame)?.mac;
                let req = ArpRepr::request(
                    us,
                    std::net::Ipv4Addr::from(sender),
                    std::net::Ipv4Addr::from(target),
                );
                let n = neigh::emit_arp(out, us, mac, &req).ok_or(DropReason::NoBuffer)?;
                Ok((dev, n))
            }
            Generate::IcmpError {
                ty,
                code,
                rest,
                src,
            } => {
                let ip = datagram()?;
                let orig_src = u32::from(ip.src());
                let route = self
                    .routes
                    .output(&self.ifs, orig_src)
                    .ok_or(DropReason::NoRoute)?;
                if !self.out.icmp_rl.allow(now_ns, orig_src, ty, code) {
                    return Err(DropReason::IcmpRateLimited);
                }
                let s = src.unwrap_or(route.src);
                let ident = self.out.ident();
                let error = icmp::IcmpError { ty, code, rest };
                let (tos, quoted) = (ip.tos(), ip.into_inner());
                let ip_out = out.get_mut(ETH_LEN..).ok_or(DropReason::NoBuffer)?;
                let n = icmp::build_icmp_error(ip_out, s, orig_src, ident, tos, error, quoted)
                    .ok_or(DropReason::NoBuffer)?;
                self.output_attached(now_ns, out, n, (route.dev, route.next_hop, route.mtu), None)
            }
            Generate::EchoReply => {
                let ip = datagram()?;
                let (orig_src, orig_dst) = (u32::from(ip.src()), u32::from(ip.dst()));
                let route = self
                    .routes
                    .output(&self.ifs, orig_src)
                    .ok_or(DropReason::NoRoute)?;
                let ident = self.out.ident();
                let ip_out = out.get_mut(ETH_LEN..).ok_or(DropReason::NoBuffer)?;
                let n = icmp::build_echo_reply(
                    ip_out,
                    orig_dst,
                    orig_src,
                    ip.tos(),
                    ident,
                    ip.payload(),
                )
                .ok_or(DropReason::NoBuffer)?;
                self.output_attached(now_ns, out, n, (route.dev, route.next_hop, route.mtu), None)
            }
            Generate::TcpReset {
                reject,
                related_new,
            } => {
                let ip = datagram()?;
                let seg = ip.payload();
                // The data offset as it is: the segment was seen to have
                // its base header, not a valid offset (REJECT answers it
                // anyway).
                let doff = seg
                    .get(tcp::field::DATA_OFFSET)
                    .map_or(0, |b| usize::from(b >> 4) * 4);
                let payload = seg.len().saturating_sub(doff);
                let (orig_src, orig_dst) = (u32::from(ip.src()), u32::from(ip.dst()));
                let route = self
                    .routes
                    .output(&self.ifs, orig_src)
                    .ok_or(DropReason::NoRoute)?;
                let tos = if reject { 0 } else { ip.tos() };
                let ip_out = out.get_mut(ETH_LEN..).ok_or(DropReason::NoBuffer)?;
                let n = icmp::build_tcp_reset(ip_out, orig_dst, orig_src, tos, seg, payload)
                    .ok_or(DropReason::NoBuffer)?;
                self.output_attached(
                    now_ns,
                    out,
                    n,
                    (route.dev, route.next_hop, route.mtu),
                    related_new,
                )
            }
        }
    }

    /// An ARP request for `target` on `dev` into `out`, if the neighbour's
    /// solicitation limit lets one go now.
    fn arp_request(
        &mut self,
        now_ns: u64,
        out: &mut [u8],
        dev: IfIndex,
        target: u32,
        sender: u32,
    ) -> Result<(IfIndex, usize), DropReason> {
        let mac = self.ifs.get(dev).ok_or(DropReason::InvalidFrame)?.mac;
        if !self.neigh.solicit(dev, target, now_ns) {
            return Err(DropReason::ArpSolicitLimited);
        }
        let n = neigh::arp_request(out, mac, sender, target).ok_or(DropReason::NoBuffer)?;
        self.neigh.count_request();
        Ok((dev, n))
    }

    /// The local output path of a generated IP datagram at `out[14..14 + ip_len]`:
    /// OUTPUT raw, mangle, nat, filter; POSTROUTING mangle, nat; MTU; neighbor
    /// (unresolved: the buffer is reused for an ARP request); Ethernet header.
    ///
    /// `related_new`: the packet carries an unconfirmed connection as RELATED
    /// (REJECT's reset, see [`Generate::TcpReset`]): no conntrack lookup; nat OUTPUT
    /// is skipped (that connection's destination manip was set in
    /// PREROUTING) and nat POSTROUTING runs, as `nf_nat_inet_fn` does for a
    /// manip not yet initialised. Its choice binds nothing: the connection is
    /// never confirmed, and a source binding does not rewrite the reply
    /// direction.
    fn output_attached(
        &mut self,
        now_ns: u64,
        out: &mut [u8],
        ip_len: usize,
        (dev, next_hop, mtu): (IfIndex, u32, u16),
        related_new: Option<CtCtx>,
    ) -> Result<(IfIndex, usize), DropReason> {
        let dev_mac = self.ifs.get(dev).ok_or(DropReason::InvalidFrame)?.mac;
        // A provisional Ethernet header so that the frame parses.
        let eth = out.get_mut(..ETH_LEN).ok_or(DropReason::NoBuffer)?;
        set_macs(eth, MacAddr::ZERO, dev_mac);
        eth[12..ETH_LEN].copy_from_slice(&fastables_packet::ethernet::ETHERTYPE_IPV4.to_be_bytes());
        let info = match parse_frame(out.get(..ETH_LEN + ip_len).unwrap_or(&[])) {
            Ok(p) => match p.l3 {
                L3::Ipv4(i) => i,
                _ => return Err(DropReason::BadIpHeader),
            },
            Err(e) => return Err(drop_of_parse(e)),
        };
        let mut pkt = Pkt::new(out, &info);
        pkt.fill_ctx(self.tables.needs, &self.ifs);
        pkt.ctx.in_if = None;
        pkt.ctx.out_if = Some(dev);
        let related_new = related_new.filter(|_| self.ct.table.is_some());
        pkt.ctx.ct = match related_new {
            Some(c) => c,
            None if self.ct.table.is_some() => invalid_ctx(),
            None => CtCtx::untracked(),
        };
        for (table, hook) in [
            (Table::Raw, Hook::Output),
            (Table::Mangle, Hook::Output),
            (Table::Nat, Hook::Output),
            (Table::Filter, Hook::Output),
            (Table::Mangle, Hook::Postrouting),
            (Table::Nat, Hook::Postrouting),
        ] {
            let outcome = if table == Table::Nat && related_new.is_some() {
                if hook == Hook::Output {
                    continue;
                }
                let o = match self.run_table(now_ns, table, hook, &mut pkt, Some(mtu)) {
                    Outcome::Drop(r) => return Err(r),
                    _ => Outcome::Continue,
                };
                // nf_nat_packet in the reply direction: a DNATed connection's
                // reset leaves from the address and port the client used.
                if let Some(c) = related_new {
                    if c.status & fastables_conntrack::status::DST_NAT != 0 {
                        if let Some(ip) = pkt.ip_mut() {
                            let t = Tuple::new(
                                PROTO_TCP,
                                c.orig_dst,
                                c.orig_dport,
                                c.orig_src,
                                c.orig_sport,
                            );
                            nat::manip_pkt(ip, Manip::Src, &t);
                        }
                    }
                }
                o
            } else if table == Table::Nat {
                let (manip, route) = if hook == Hook::Output {
                    (Manip::Dst, None)
                } else {
                    (Manip::Src, Some((dev, next_hop, mtu)))
                };
                let range = match self.nat_rules(now_ns, hook, &mut pkt, route, manip) {
                    Ok(r) => r,
                    Err((r, _)) => return Err(r),
                };
                if manip == Manip::Dst {
                    // The route is not looked up again after a DNAT in OUTPUT
                    // (our generated packets answer their source).
                    self.nat_dst(now_ns, &mut pkt, range);
                } else {
                    self.confirm_and_snat(now_ns, &mut pkt, range)?;
                }
                Outcome::Continue
            } else {
                self.run_table(now_ns, table, hook, &mut pkt, Some(mtu))
            };
            match outcome {
                Outcome::Continue | Outcome::Nat(_) => {}
                Outcome::Drop(r) => return Err(r),
                // No answer to an answer.
                Outcome::Reject(_) => return Err(DropReason::Rejected),
            }
            if table == Table::Raw && related_new.is_none() {
                if pkt.ctx.effects.notrack {
                    pkt.ctx.ct = CtCtx::untracked();
                } else {
                    self.ct_in(now_ns, &mut pkt, false)?;
                }
            }
        }
        if ip_len > usize::from(mtu) {
            return Err(DropReason::FragmentationUnsupported);
        }
        match self.neigh.lookup(dev, next_hop) {
            Some(m) => {
                set_macs(out, m, dev_mac);
                Ok((dev, ETH_LEN + ip_len))
            }
            None => {
                // arp_solicit, arp_announce 0: our packet's source address is local.
                self.drops.inc(DropReason::NeighborUnresolved);
                let sender = u32::from(info.src);
                self.arp_request(now_ns, out, dev, next_hop, sender)
            }
        }
    }

    /// Frames waiting for a neighbor ([`crate::worker::Action::Held`]).
    pub fn held(&self) -> usize {
        self.neigh.held_len()
    }

    /// The hold queue at `now_ns` (also run at the end of every batch):
    /// frames whose neighbor answered go out in `batch.generated`, ARP
    /// requests are repeated once a second, and frames whose neighbor never
    /// answered are dropped with an ICMP host unreachable each, their buffers
    /// given back in `batch.spare`. Call it between batches while
    /// [`Pipeline::held`] is not zero, with spare buffers in `batch`.
    pub fn service_held(&mut self, now_ns: u64, mem: &mut [u8], batch: &mut Batch) {
        if self.neigh.held_len() == 0 {
            return;
        }
        let mut events = std::mem::take(&mut self.out.held_events);
        events.clear();
        self.neigh.service(now_ns, |e| {
            if events.len() < events.capacity() {
                events.push(e);
            }
        });
        for e in events.iter().copied() {
            match e {
                HeldEvent::Resolved(h, mac) => {
                    let at = usize::try_from(h.addr).unwrap_or(usize::MAX);
                    match mem.get_mut(at..at.saturating_add(6)) {
                        Some(d) => {
                            d.copy_from_slice(&mac.0);
                            PipelineCounters::inc(&self.counters.forwarded);
                            batch.generated.push(Frame {
                                addr: h.addr,
                                len: h.len,
                                port: h.dev,
                            });
                        }
                        None => {
                            batch.spare.push(h.addr);
                            self.count_drops(DropReason::InvalidFrame, 1);
                        }
                    }
                }
                HeldEvent::Solicit { dev, ip } => {
                    let sender = self.ifs.select_addr(dev, ip).unwrap_or(0);
                    let g = Generate::ArpRequest {
                        dev,
                        target: ip,
                        sender,
                    };
                    self.generate(now_ns, mem, &Frame::rx(0, 0, dev), g, batch);
                }
                HeldEvent::Failed(h) => {
                    self.count_drops(DropReason::NeighborUnresolved, 1);
                    // ip_forward's error report for a failed neighbor.
                    let rx = Frame::rx(h.addr, h.len, h.dev);
                    let info = parse_frame(
                        mem.get(usize::try_from(h.addr).unwrap_or(usize::MAX)..)
                            .and_then(|m| m.get(..usize::from(h.len)))
                            .unwrap_or(&[]),
                    )
                    .ok()
                    .and_then(|p| match p.l3 {
                        L3::Ipv4(i) => Some(i),
                        _ => None,
                    });
                    if info.is_some_and(|i| icmp::icmp_error_allowed(&i)) {
                        let g = Generate::icmp(types::DEST_UNREACH, unreach::HOST);
                        self.generate(now_ns, mem, &rx, g, batch);
                    }
                    batch.spare.push(h.addr);
                }
            }
        }
        self.out.held_events = events;
    }
}
