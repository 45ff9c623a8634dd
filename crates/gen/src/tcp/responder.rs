//! The responder's side of `--proto tcp` (`gen --sink --echo`): the TCP
//! peer of the generator's flows, one table entry per connection.

use std::collections::HashMap;

use fastables_packet::ethernet::{EthernetRepr, ETHERTYPE_IPV4};
use fastables_packet::tcp::flags;

use super::{after, reversed, splitmix64, Segment, MSS_OPTION, SYN_OPTIONS, WINDOW};
use crate::flow::Tuple;
use crate::frame::{write_tcp, TcpHeader};

/// The responder's state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponderState {
    SynReceived,
    Established,
    LastAck,
}

#[derive(Debug, Clone, Copy)]
struct ResponderConn {
    state: ResponderState,
    /// The peer's ISN.
    irs: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    /// Window scaling on (both SYNs offered it).
    scaled: bool,
}

/// The responder's counters (the sink's report, as `tcp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResponderCounters {
    /// TCP segments received (checksum correct).
    pub segments: u64,
    /// SYNs of new connections (answered with a SYN-ACK).
    pub syns: u64,
    /// SYNs again for a connection in SYN_RECV (its SYN-ACK again).
    pub syn_retransmits: u64,
    /// Handshakes completed (the generator's ACK of the SYN-ACK).
    pub handshakes_completed: u64,
    /// Data segments of known connections.
    pub data_segments: u64,
    /// Of them, not at the next expected sequence number (a hole before,
    /// or a repeat).
    pub out_of_order: u64,
    /// ACKs of data sent.
    pub acks_sent: u64,
    /// FINs answered with FIN|ACK.
    pub fins: u64,
    /// Connections closed by the last ACK.
    pub closed: u64,
    /// RSTs received (the connection is forgotten).
    pub resets_received: u64,
    /// RSTs sent (a segment of no known connection).
    pub resets_sent: u64,
    /// SYNs not answered: the table was full.
    pub table_full: u64,
    /// Segments that fit no state (ignored).
    pub unexpected: u64,
    /// Connections in the table at the end.
    pub open: u64,
}

/// The responder: the TCP peer of the generator's flows.
#[derive(Debug)]
pub struct TcpResponder {
    conns: HashMap<Tuple, ResponderConn>,
    cap: usize,
    nonce: u64,
    counters: ResponderCounters,
}

impl TcpResponder {
    /// A responder for up to `cap` connections at once (the table is
    /// allocated now); `nonce` makes its sequence numbers its own.
    pub fn new(cap: usize, nonce: u64) -> TcpResponder {
        TcpResponder {
            // Twice the entries it may hold: at most half full, hashbrown
            // rehashes its tombstones in place instead of growing.
            conns: HashMap::with_capacity(cap.saturating_mul(2)),
            cap,
            nonce,
            counters: ResponderCounters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> ResponderCounters {
        ResponderCounters {
            open: self.conns.len() as u64,
            ..self.counters
        }
    }

    /// Connections in the table.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// Writes the answer to `seg` into `out` (the received frame's buffer):
    /// from the frame's destination MAC back to its source.
    fn answer(&self, out: &mut [u8], seg: &Segment, h: TcpHeader<'_>) -> Option<usize> {
        let eth = EthernetRepr {
            src: seg.dst_mac,
            dst: seg.src_mac,
            vlan: None,
            ethertype: ETHERTYPE_IPV4,
        };
        write_tcp(out, &eth, &reversed(&seg.tuple), &h, &[], 0)
    }

    /// One received segment; the answer, if any, is written into `out`
    /// (the frame's buffer: the segment was parsed from it) and its length
    /// returned.
    pub fn on_segment(&mut self, seg: &Segment, out: &mut [u8]) -> Option<usize> {
        self.counters.segments += 1;
        let key = seg.tuple;
        let known = self.conns.get(&key).copied();
        if seg.has(flags::RST) {
            if known.is_some() {
                self.conns.remove(&key);
                self.counters.resets_received += 1;
            } else {
                self.counters.unexpected += 1;
            }
            return None;
        }
        let is_syn = seg.has(flags::SYN) && !seg.has(flags::ACK);
        if is_syn {
            if let Some(c) = known.filter(|c| c.irs == seg.seq) {
                // The same SYN again: its SYN-ACK again, or, established
                // already, an ACK of where we are.
                self.counters.syn_retransmits += 1;
                if c.state == ResponderState::SynReceived {
                    return self.syn_ack(out, seg, &c);
                }
                let h = self.header(&c, flags::ACK);
                return self.answer(out, seg, h);
            }
            if known.is_some() {
                // A new connection on the tuple of an old one.
                self.conns.remove(&key);
            } else if self.conns.len() >= self.cap {
                self.counters.table_full += 1;
                return None;
            }
            let iss = splitmix64(
                self.nonce
                    ^ u64::from(seg.seq)
                    ^ (u64::from(u32::from(key.src)) << 32)
                    ^ (u64::from(key.sport) << 16)
                    ^ u64::from(key.dport),
            ) as u32;
            let c = ResponderConn {
                state: ResponderState::SynReceived,
                irs: seg.seq,
                snd_nxt: iss.wrapping_add(1),
                rcv_nxt: seg.seq.wrapping_add(1),
                scaled: seg.wscale.is_some(),
            };
            self.conns.insert(key, c);
            self.counters.syns += 1;
            return self.syn_ack(out, seg, &c);
        }
        let Some(mut c) = known else {
            // No such connection: a RST (RFC 9293 3.10.7.1).
            self.counters.resets_sent += 1;
            let h = if seg.has(flags::ACK) {
                TcpHeader {
                    seq: seg.ack,
                    ack: 0,
                    flags: flags::RST,
                    window: 0,
                    options: &[],
                }
            } else {
                let fin = u32::from(seg.has(flags::FIN)) + u32::from(seg.has(flags::SYN));
                TcpHeader {
                    seq: 0,
                    ack: seg.seq.wrapping_add(seg.len).wrapping_add(fin),
                    flags: flags::RST | flags::ACK,
                    window: 0,
                    options: &[],
                }
            };
            return self.answer(out, seg, h);
        };
        if c.state == ResponderState::SynReceived {
            if seg.has(flags::SYN) || !seg.has(flags::ACK) || seg.ack != c.snd_nxt {
                self.counters.unexpected += 1;
                return None;
            }
            c.state = ResponderState::Established;
            self.counters.handshakes_completed += 1;
        }
        let end = seg.seq.wrapping_add(seg.len);
        let reply = match c.state {
            ResponderState::Established => {
                if seg.len > 0 {
                    self.counters.data_segments += 1;
                    if seg.seq != c.rcv_nxt {
                        self.counters.out_of_order += 1;
                    }
                    if after(end, c.rcv_nxt) {
                        c.rcv_nxt = end;
                    }
                }
                if seg.has(flags::FIN) {
                    if after(end, c.rcv_nxt) {
                        c.rcv_nxt = end;
                    }
                    c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
                    c.state = ResponderState::LastAck;
                    self.counters.fins += 1;
                    let h = self.header(&c, flags::FIN | flags::ACK);
                    c.snd_nxt = c.snd_nxt.wrapping_add(1);
                    Some(h)
                } else if seg.len > 0 {
                    self.counters.acks_sent += 1;
                    Some(self.header(&c, flags::ACK))
                } else {
                    None
                }
            }
            ResponderState::LastAck => {
                if seg.has(flags::ACK) && seg.ack == c.snd_nxt && !seg.has(flags::FIN) {
                    self.conns.remove(&key);
                    self.counters.closed += 1;
                    return None;
                }
                if seg.has(flags::FIN) {
                    // The FIN again: our FIN|ACK again.
                    let mut h = self.header(&c, flags::FIN | flags::ACK);
                    h.seq = c.snd_nxt.wrapping_sub(1);
                    Some(h)
                } else {
                    self.counters.unexpected += 1;
                    None
                }
            }
            ResponderState::SynReceived => None,
        };
        self.conns.insert(key, c);
        let h = reply?;
        self.answer(out, seg, h)
    }

    fn header(&self, c: &ResponderConn, fl: u8) -> TcpHeader<'static> {
        TcpHeader {
            seq: c.snd_nxt,
            ack: c.rcv_nxt,
            flags: fl,
            window: WINDOW,
            options: &[],
        }
    }

    fn syn_ack(&self, out: &mut [u8], seg: &Segment, c: &ResponderConn) -> Option<usize> {
        let h = TcpHeader {
            seq: c.snd_nxt.wrapping_sub(1),
            ack: c.rcv_nxt,
            flags: flags::SYN | flags::ACK,
            window: WINDOW,
            options: if c.scaled { &SYN_OPTIONS } else { &MSS_OPTION },
        };
        self.answer(out, seg, h)
    }
}
