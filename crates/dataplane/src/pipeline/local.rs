//! Local delivery: INPUT (mangle, filter, nat with conntrack's
//! confirmation), then what the local stack does with a datagram for us.
//! ICMP echo requests are answered (not on broadcast, as
//! `icmp_echo_ignore_broadcasts`), other ICMP and IGMP consumed; TCP gets a
//! reset, UDP a port unreachable, other protocols a protocol unreachable
//! (no sockets listen). Fragments to us are dropped: the kernel reassembles
//! them before INPUT, we do not.

use fastables_conntrack::Manip;
use fastables_packet::icmp::{types, unreach};
use fastables_packet::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use fastables_packet::parse::{ipv4_l4_checksum_ok, L4};
use fastables_packet::tcp::flags as tcpf;
use fastables_rules::model::{Hook, Table};

use super::output::Generate;
use super::pkt::{Fate, Pkt};
use super::tables::Outcome;
use super::Pipeline;
use crate::drop::DropReason;
use crate::route::RouteType;

/// IP protocol number of IGMP.
const PROTO_IGMP: u8 = 2;

impl Pipeline {
    /// INPUT and local delivery of a packet routed as `kind` (local,
    /// broadcast, multicast).
    pub(super) fn local_in(
        &mut self,
        now_ns: u64,
        pkt: &mut Pkt,
        kind: RouteType,
    ) -> (Fate, Option<Generate>) {
        let info = pkt.info;
        let unicast = kind == RouteType::Local && pkt.to_host;
        let local_src = Some(pkt.ctx.dst);
        if info.is_fragment() {
            // ip_local_deliver reassembles before INPUT; we do not.
            return (Fate::Drop(DropReason::LocalFragment), None);
        }
        for (table, hook) in [(Table::Mangle, Hook::Input), (Table::Filter, Hook::Input)] {
            match self.run_table(now_ns, table, hook, pkt, None) {
                Outcome::Continue | Outcome::Nat(_) => {}
                Outcome::Drop(r) => return (Fate::Drop(r), None),
                Outcome::Reject(rw) => {
                    let g = if unicast {
                        self.reject_answer(rw, pkt, local_src)
                    } else {
                        None
                    };
                    return (Fate::Drop(DropReason::Rejected), g);
                }
            }
        }
        // nat INPUT (NEW only), confirm, the source rewrite.
        let snat = match self.nat_rules(now_ns, Hook::Input, pkt, None, Manip::Src) {
            Ok(r) => r,
            Err((r, _)) => return (Fate::Drop(r), None),
        };
        if let Err(r) = self.confirm_and_snat(now_ns, pkt, snat) {
            return (Fate::Drop(r), None);
        }
        // The checksum over the header as NAT left it.
        let mut cur = *info;
        cur.src = std::net::Ipv4Addr::from(pkt.ctx.src);
        cur.dst = std::net::Ipv4Addr::from(pkt.ctx.dst);
        let ok_csum = ipv4_l4_checksum_ok(pkt.ip(), &cur);
        let unreachable = |code| Generate::IcmpError {
            ty: types::DEST_UNREACH,
            code,
            rest: 0,
            src: local_src,
        };
        match info.protocol {
            PROTO_ICMP => {
                let L4::Icmp { icmp_type, .. } = info.l4 else {
                    return (Fate::Drop(DropReason::Truncated), None);
                };
                if !ok_csum {
                    return (Fate::Drop(DropReason::BadL4Checksum), None);
                }
                // icmp_echo_ignore_broadcasts = 1.
                if icmp_type == types::ECHO_REQUEST && unicast {
                    return (Fate::Consumed, Some(Generate::EchoReply));
                }
                (Fate::Consumed, None)
            }
            PROTO_TCP => {
                let L4::Tcp {
                    flags, header_len, ..
                } = info.l4
                else {
                    return (Fate::Drop(DropReason::Truncated), None);
                };
                if header_len < 20 || usize::from(header_len) > info.payload_len() {
                    return (Fate::Drop(DropReason::Truncated), None);
                }
                if !ok_csum {
                    return (Fate::Drop(DropReason::BadL4Checksum), None);
                }
                let g = (unicast && flags & tcpf::RST == 0).then_some(Generate::TcpReset {
                    reject: false,
                    related_new: None,
                });
                (Fate::Drop(DropReason::NoSocket), g)
            }
            PROTO_UDP => {
                let L4::Udp { len, .. } = info.l4 else {
                    return (Fate::Drop(DropReason::Truncated), None);
                };
                if usize::from(len) > info.payload_len() || len < 8 {
                    return (Fate::Drop(DropReason::Truncated), None);
                }
                if !ok_csum {
                    return (Fate::Drop(DropReason::BadL4Checksum), None);
                }
                let g = unicast.then_some(unreachable(unreach::PORT));
                (Fate::Drop(DropReason::NoSocket), g)
            }
            // IGMP is handled by the kernel's igmp_rcv: consumed.
            PROTO_IGMP => (Fate::Consumed, None),
            _ => {
                let g = unicast.then_some(unreachable(unreach::PROTOCOL));
                (Fate::Drop(DropReason::NoSocket), g)
            }
        }
    }
}
