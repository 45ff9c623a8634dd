//! Classifying one packet (`nf_conntrack_in`): ICMP errors to the
//! connection they quote, a live entry's protocol tracker (TCP window and
//! state, UDP stream, ICMP, generic), or a new connection.

use fastables_packet::icmp::types;

use crate::entry::{status, Entry, ProtoInfo};
use crate::tcp::{self, TcpVerdict};
use crate::tuple::{Dir, Tuple, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, NR_ICMP_TYPES};
use crate::Events;

use super::{Cfg, EntryId, Hint, NewConn, PacketFacts, Table, Track, Tracked, NS};

impl Table {
    /// Classify one packet and update its connection (`nf_conntrack_in`).
    pub fn track(&mut self, p: &PacketFacts, now_ns: u64) -> Track {
        self.track_hinted(p, now_ns, None)
    }

    /// [`Table::track`] with what a [`Table::lookup_batch`] of the packet's
    /// tuple found: when the hint still holds ([`Hint`]) the chain is not
    /// walked again; the result is the same either way.
    pub fn track_hinted(&mut self, p: &PacketFacts, now_ns: u64, hint: Option<Hint>) -> Track {
        if p.fragment {
            // get_l4proto() fails for non-first fragments
            self.stats.invalid += 1;
            return Track::Invalid;
        }
        if p.proto == IPPROTO_ICMP {
            // nf_conntrack_handle_icmp() -> nf_conntrack_icmpv4_error()
            if !p.l4_ok || p.csum_bad || p.icmp.icmp_type > NR_ICMP_TYPES {
                self.stats.error += 1;
                return Track::Invalid;
            }
            if fastables_packet::icmp::is_error(p.icmp.icmp_type) {
                return self.icmp_error(p, now_ns);
            }
        }
        let Some(tuple) = p.tuple() else {
            self.stats.invalid += 1;
            return Track::Invalid;
        };
        let mut hint = hint;
        let mut hashed = None;
        // At most one repeat (TCP reopen of a closed connection).
        for _ in 0..2 {
            let (live, dead) = match hint.take().and_then(|h| self.hinted(h, &tuple, now_ns)) {
                // A live match: the walk would not look at expired ones.
                Some(l) => (Some(l), None),
                None => {
                    let h = self.hash(&tuple);
                    hashed = Some(h);
                    self.scan(h, &tuple, now_ns)
                }
            };
            match live {
                Some((i, dir)) => {
                    let cfg = &self.cfg;
                    let Some(e) = self.entries.get_mut(i) else {
                        break;
                    };
                    let state = e.state_in(dir);
                    let mut ev = Events::default();
                    match l4_packet(cfg, e, dir, p, now_ns, &mut ev) {
                        TcpVerdict::Accept => {
                            if dir == Dir::Reply && e.status & status::SEEN_REPLY == 0 {
                                e.status |= status::SEEN_REPLY;
                                ev.0 |= Events::REPLY;
                            }
                            return Track::Tracked(Tracked {
                                id: EntryId {
                                    idx: i as u32,
                                    gen: e.gen,
                                },
                                dir,
                                state,
                                events: ev,
                            });
                        }
                        TcpVerdict::Invalid => {
                            self.stats.invalid += 1;
                            return Track::Invalid;
                        }
                        TcpVerdict::Kill => {
                            let entry = self.remove_idx(i);
                            return Track::Killed { entry, dir, state };
                        }
                        TcpVerdict::Repeat => {
                            self.remove_idx(i);
                            continue;
                        }
                    }
                }
                None => {
                    if dead.is_some() {
                        self.gc_tuple(&tuple, now_ns);
                    }
                    let h = hashed.unwrap_or_else(|| self.hash(&tuple));
                    return self.track_new(p, tuple, h, now_ns);
                }
            }
        }
        self.stats.invalid += 1;
        Track::Invalid
    }

    /// `init_conntrack()` + the protocol's first-packet handling.
    /// `h`: the hash of `tuple`.
    fn track_new(&mut self, p: &PacketFacts, tuple: Tuple, h: u64, now: u64) -> Track {
        let Some(reply) = tuple.invert() else {
            self.stats.invalid += 1;
            return Track::Invalid;
        };
        if let Err(log) = self.make_room(h, now) {
            return Track::Drop { log };
        }
        let mut e = Entry::new(tuple, reply);
        let mut ev = Events::default();
        match l4_packet(&self.cfg, &mut e, Dir::Original, p, now, &mut ev) {
            TcpVerdict::Accept => Track::New(NewConn {
                entry: e,
                seen: (h, self.changes),
            }),
            _ => {
                self.stats.invalid += 1;
                Track::Invalid
            }
        }
    }

    /// `nf_conntrack_inet_error()`: find the connection an ICMP error is about.
    fn icmp_error(&mut self, p: &PacketFacts, now: u64) -> Track {
        let found = p
            .icmp
            .inner
            .and_then(|inner| inner.invert())
            .and_then(|inv| self.find(&inv, now));
        let Some((i, dir)) = found else {
            self.stats.error += 1;
            return Track::Invalid;
        };
        let Some(e) = self.entries.get(i) else {
            self.stats.error += 1;
            return Track::Invalid;
        };
        // The outer destination must be the connection's destination in that direction.
        if e.tuple[dir.idx()].dst != p.dst {
            self.stats.error += 1;
            return Track::Invalid;
        }
        Track::Related {
            id: EntryId {
                idx: i as u32,
                gen: e.gen,
            },
            dir,
        }
    }
}

/// Dispatch to the protocol tracker (`nf_conntrack_handle_packet`).
fn l4_packet(
    cfg: &Cfg,
    e: &mut Entry,
    dir: Dir,
    p: &PacketFacts,
    now: u64,
    ev: &mut Events,
) -> TcpVerdict {
    let Entry {
        status: st,
        timeout,
        proto,
        tuple,
        ..
    } = e;
    match tuple[0].proto {
        IPPROTO_TCP => {
            if p.csum_bad {
                return TcpVerdict::Invalid;
            }
            tcp::tcp_packet(
                tcp::TcpEntry {
                    status: st,
                    timeout,
                    proto,
                },
                dir,
                &p.tcp,
                &cfg.tcp,
                now,
                ev,
            )
        }
        IPPROTO_UDP => {
            // udp_error()
            if !p.l4_ok || u32::from(p.udp_len) > p.l4_len || p.udp_len < 8 || p.csum_bad {
                return TcpVerdict::Invalid;
            }
            // nf_conntrack_udp_packet()
            let ProtoInfo::Udp { stream_ts } = proto else {
                return TcpVerdict::Invalid;
            };
            if *st & status::CONFIRMED == 0 {
                *stream_ts = now + 2 * NS;
            }
            if *st & status::SEEN_REPLY != 0 {
                let mut extra = cfg.udp;
                let mut stream = false;
                // Still active after two seconds? Extend timeout.
                if now > *stream_ts {
                    extra = cfg.udp_stream;
                    stream = *st & status::ASSURED == 0;
                }
                tcp::refresh(*st, timeout, extra, now);
                if *st & status::NAT_CLASH != 0 {
                    return TcpVerdict::Accept;
                }
                if stream {
                    *st |= status::ASSURED;
                    ev.0 |= Events::ASSURED;
                }
            } else {
                tcp::refresh(*st, timeout, cfg.udp, now);
            }
            TcpVerdict::Accept
        }
        IPPROTO_ICMP => {
            // nf_conntrack_icmp_packet(): only request types create connections.
            if !matches!(
                tuple[0].icmp_type(),
                types::ECHO_REQUEST | types::TIMESTAMP | types::INFO_REQUEST | types::ADDRESS_MASK
            ) {
                return TcpVerdict::Invalid;
            }
            tcp::refresh(*st, timeout, cfg.icmp, now);
            TcpVerdict::Accept
        }
        _ => {
            // generic_packet()
            tcp::refresh(*st, timeout, cfg.generic, now);
            TcpVerdict::Accept
        }
    }
}
