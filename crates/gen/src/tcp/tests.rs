//! The generator and the responder against each other, with the sink's
//! accounting and fastables' own (strict) conntrack between them.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use fastables_conntrack::format::format_entry;
use fastables_conntrack::{PacketFacts, Table, TableConfig, Track};

use fastables_packet::tcp::flags;

use super::*;
use crate::flow::{FlowError, FlowMode, FlowSpace};
use crate::frame::{FrameWriter, Proto, TcpHeader};
use crate::payload::Stamp;
use crate::sink::Sink;

const GEN_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const PEER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
/// Frames of 100 bytes: 46 bytes of payload per data segment.
const SIZE: usize = 100;
const PAYLOAD: u32 = 46;

fn space(sports: &str) -> FlowSpace {
    FlowSpace {
        src: "10.0.0.1".parse().unwrap(),
        dst: "10.0.0.2".parse().unwrap(),
        sport: sports.parse().unwrap(),
        dport: "80".parse().unwrap(),
    }
}

fn tcp_gen(sp: FlowSpace, mode: FlowMode, flows: u64) -> TcpGen {
    let w = FrameWriter::new(GEN_MAC, PEER_MAC, Proto::Tcp, SIZE, 2048).unwrap();
    TcpGen::new(sp, mode, flows, w, 0x5eed)
}

/// The generator, the responder, the sink's accounting and fastables'
/// conntrack (strict: no pick-up, no liberal windows) between them, on
/// a wire without delay; `drop_to_peer` loses frames on the way.
struct Wire {
    gen: TcpGen,
    peer: TcpResponder,
    sink: Sink,
    ct: Table,
    invalid: Vec<Segment>,
    /// Every segment, in the order the middlebox saw it: (towards the
    /// responder, segment).
    seen: Vec<(bool, Segment)>,
    now: u64,
    queue: VecDeque<(bool, Vec<u8>)>,
}

impl Wire {
    fn new(gen: TcpGen) -> Wire {
        Wire {
            gen,
            peer: TcpResponder::new(64, 7),
            sink: Sink::new(),
            ct: Table::new(TableConfig {
                tcp_loose: false,
                ..TableConfig::default()
            })
            .unwrap(),
            invalid: Vec::new(),
            seen: Vec::new(),
            now: 1_000_000_000,
            queue: VecDeque::new(),
        }
    }

    /// The middlebox's view of one frame.
    fn track(&mut self, f: &[u8]) -> Segment {
        let seg = parse_segment(f).expect("a TCP segment with correct checksums");
        let ip = fastables_packet::parse::parse_frame(f).unwrap();
        assert!(
            fastables_packet::checksum::verify(&f[14..34]),
            "IPv4 checksum"
        );
        let hl = usize::from(f[14 + 20 + 12] >> 4) * 4;
        let opts = &f[14 + 20 + 20..14 + 20 + hl];
        let p = PacketFacts::tcp(
            u32::from(seg.tuple.src),
            seg.tuple.sport,
            u32::from(seg.tuple.dst),
            seg.tuple.dport,
            seg.flags,
            seg.seq,
            seg.ack,
            seg.window,
            seg.len,
            opts,
        );
        assert!(ip.ipv4().is_some());
        match self.ct.track(&p, self.now) {
            Track::New(n) => {
                self.ct.confirm(n, None, None, self.now).unwrap();
            }
            Track::Invalid => self.invalid.push(seg),
            _ => {}
        }
        seg
    }

    /// Sends the generator's frame and everything it causes.
    fn send(&mut self, f: Vec<u8>) {
        self.queue.push_back((true, f));
        self.deliver();
    }

    fn deliver(&mut self) {
        while let Some((to_peer, mut f)) = self.queue.pop_front() {
            let seg = self.track(&f);
            self.seen.push((to_peer, seg));
            let len = f.len();
            f.resize(2048, 0);
            let answer = if to_peer {
                if seg.len > 0 {
                    self.sink.frame(&f[..len], self.now);
                }
                self.peer.on_segment(&seg, &mut f)
            } else {
                self.gen.on_frame(&mut f, len, self.now)
            };
            if let Some(n) = answer {
                f.truncate(n);
                self.queue.push_back((!to_peer, f));
            }
        }
    }

    /// The generator's next paced frame (not sent).
    fn next(&mut self, seq: u64) -> (Sent, Vec<u8>) {
        let mut b = vec![0u8; 2048];
        let s = self.gen.next_frame(self.now, &mut b, seq);
        if let Sent::Syn(n) | Sent::Data(n) = s {
            b.truncate(n);
        }
        (s, b)
    }

    /// The conntrack -L line of the connection of `sport`.
    fn ct_line(&self, sport: u16) -> String {
        let lines: Vec<String> = self
            .ct
            .iter()
            .map(|(_, e)| format_entry(e, self.now))
            .filter(|l| l.contains(&format!("sport={sport} ")))
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines[0].clone()
    }

    fn seg_of(f: &[u8]) -> Segment {
        parse_segment(f).unwrap()
    }
}

#[test]
fn handshake_data_and_close_pass_a_strict_conntrack() {
    let mut w = Wire::new(tcp_gen(space("1000-1002"), FlowMode::Fixed(3), 3));
    // Three SYNs first; no data while a handshake is pending.
    let mut syns = Vec::new();
    for i in 0..3u16 {
        let (s, f) = w.next(0);
        assert!(matches!(s, Sent::Syn(62)), "{s:?}");
        let seg = Wire::seg_of(&f);
        assert_eq!(seg.tuple.sport, 1000 + i);
        assert_eq!(
            (seg.flags, seg.ack, seg.window, seg.wscale, seg.len),
            (flags::SYN, 0, SYN_WINDOW, Some(WSCALE), 0)
        );
        assert_eq!(&f[54..62], &SYN_OPTIONS, "MSS 1460, NOP, wscale 7");
        assert_eq!((&f[0..6], &f[6..12]), (&PEER_MAC.0[..], &GEN_MAC.0[..]));
        syns.push((seg, f));
    }
    assert_ne!(syns[0].0.seq, syns[1].0.seq, "an ISN of each flow's own");
    assert_eq!(w.next(0).0, Sent::Nothing);
    assert_eq!(w.gen.handshakes_pending(), 3);
    for (_, f) in syns.clone() {
        w.send(f);
    }
    // SYN, SYN-ACK, ACK per flow.
    assert_eq!(w.seen.len(), 9);
    for (k, (syn, _)) in syns.iter().enumerate() {
        let (to_peer, sa) = w.seen[3 * k + 1];
        assert!(!to_peer);
        assert_eq!(sa.flags, flags::SYN | flags::ACK);
        assert_eq!(sa.ack, syn.seq.wrapping_add(1));
        assert_eq!(sa.wscale, Some(WSCALE));
        assert_eq!((sa.dst_mac, sa.src_mac), (GEN_MAC, PEER_MAC));
        let (to_peer, ack) = w.seen[3 * k + 2];
        assert!(to_peer);
        assert_eq!(
            (ack.flags, ack.seq, ack.ack, ack.len),
            (
                flags::ACK,
                syn.seq.wrapping_add(1),
                sa.seq.wrapping_add(1),
                0
            )
        );
    }
    assert_eq!(w.gen.counters().handshakes_completed, 3);
    assert_eq!(w.peer.counters().handshakes_completed, 3);
    assert_eq!(w.gen.setup_latency().count(), 3);
    // Ten data segments round the flows, each seq advancing by the
    // payload, ack the responder's ISN + 1.
    for k in 0..10u64 {
        w.now += 1000;
        let (s, f) = w.next(k);
        assert_eq!(s, Sent::Data(SIZE));
        let seg = Wire::seg_of(&f);
        let flow = (k % 3) as usize;
        let (syn, synack) = (syns[flow].0, w.seen[3 * flow + 1].1);
        assert_eq!(seg.tuple.sport, 1000 + flow as u16);
        assert_eq!(seg.flags, flags::ACK | flags::PSH);
        assert_eq!(
            seg.seq,
            syn.seq
                .wrapping_add(1)
                .wrapping_add((k / 3) as u32 * PAYLOAD)
        );
        assert_eq!((seg.ack, seg.len), (synack.seq.wrapping_add(1), PAYLOAD));
        assert_eq!(
            crate::payload::Stamp::decode(&f[54..]),
            Some(Stamp {
                seq: k,
                ts_ns: w.now
            })
        );
        w.send(f);
        let (to_peer, a) = *w.seen.last().unwrap();
        assert!(!to_peer);
        assert_eq!(
            (a.flags, a.ack),
            (flags::ACK, seg.seq.wrapping_add(PAYLOAD))
        );
    }
    assert_eq!(w.gen.unacked_flows(), 0);
    assert_eq!(w.gen.segments_per_flow(), Some((3, 4)));
    let c = w.sink.counters();
    assert_eq!((c.received, c.lost, c.duplicates), (10, 0, 0));
    assert_eq!(w.sink.latency().count(), 10);
    assert_eq!(w.peer.counters().data_segments, 10);
    assert_eq!(w.peer.counters().out_of_order, 0);
    for sport in 1000..1003 {
        let l = w.ct_line(sport);
        assert!(
            l.contains(" ESTABLISHED ") && l.contains("[ASSURED]"),
            "{l}"
        );
    }
    // The FIN exchange.
    w.gen.start_close();
    let mut b = vec![0u8; 2048];
    let mut fins = Vec::new();
    while let Some(n) = w.gen.close_next(w.now, &mut b, Close::Fin) {
        fins.push(b[..n].to_vec());
    }
    assert_eq!(fins.len(), 3);
    assert!(!w.gen.closed());
    for f in fins {
        let seg = Wire::seg_of(&f);
        assert_eq!(seg.flags, flags::FIN | flags::ACK);
        w.send(f);
        let n = w.seen.len();
        let (_, fa) = w.seen[n - 2];
        let (_, last) = w.seen[n - 1];
        assert_eq!(
            (fa.flags, fa.ack),
            (flags::FIN | flags::ACK, seg.seq.wrapping_add(1))
        );
        assert_eq!(
            (last.flags, last.seq, last.ack),
            (flags::ACK, seg.seq.wrapping_add(1), fa.seq.wrapping_add(1))
        );
    }
    assert!(w.gen.closed());
    assert_eq!(w.gen.counters().closes_completed, 3);
    let p = w.peer.counters();
    assert_eq!((p.fins, p.closed, p.open, p.unexpected), (3, 3, 0, 0));
    for sport in 1000..1003 {
        assert!(
            w.ct_line(sport).contains(" TIME_WAIT "),
            "{}",
            w.ct_line(sport)
        );
    }
    assert!(
        w.invalid.is_empty(),
        "INVALID to conntrack: {:?}",
        w.invalid
    );
    let r = w.gen.report(Close::Fin);
    assert_eq!(
        (
            r.flows_acked,
            r.segments_per_flow_min,
            r.segments_per_flow_max
        ),
        (3, 3, 4)
    );
    assert_eq!(r.counters.control_sent, 3 + 3 + 3 + 3);
}

#[test]
fn data_stays_inside_the_peer_window() {
    let mut w = Wire::new(tcp_gen(space("1000"), FlowMode::Fixed(1), 1));
    let (_, syn) = w.next(0);
    w.send(syn);
    // The SYN-ACK's window (65535, never scaled): 1424 segments of 46.
    let mut last = Vec::new();
    let mut n = 0u64;
    loop {
        let (s, f) = w.next(n);
        match s {
            Sent::Data(_) => last = f,
            Sent::Nothing => break,
            Sent::Syn(_) => panic!("no more SYNs"),
        }
        n += 1;
    }
    assert_eq!(n, 65535 / 46);
    assert_eq!(w.gen.counters().window_stalls, 1);
    // Only the last gets through: the responder acknowledges the
    // highest byte (the hole is the sink's loss), with window 65535 << 7.
    w.send(last);
    let p = w.peer.counters();
    assert_eq!((p.data_segments, p.out_of_order), (1, 1));
    assert_eq!(w.gen.unacked_flows(), 0);
    assert!(matches!(w.next(n).0, Sent::Data(_)));
    let c = w.sink.counters();
    assert_eq!((c.received, c.lost), (1, n - 1));
    assert!(w.invalid.is_empty(), "{:?}", w.invalid);
}

#[test]
fn beyond_the_window_a_strict_conntrack_says_invalid() {
    // The check of the check: a segment past the window the responder
    // gave is INVALID to the tracker of the wire above.
    let mut w = Wire::new(tcp_gen(space("1000"), FlowMode::Fixed(1), 1));
    let (_, syn) = w.next(0);
    w.send(syn);
    let (_, f) = w.next(0);
    let seg = Wire::seg_of(&f);
    let mut g = FrameWriter::new(GEN_MAC, PEER_MAC, Proto::Tcp, SIZE, 2048).unwrap();
    let mut b = vec![0u8; 2048];
    let h = TcpHeader {
        seq: seg.seq.wrapping_add(200_000),
        ack: seg.ack,
        flags: flags::ACK,
        window: WINDOW,
        options: &[],
    };
    let n = g
        .write_tcp(&mut b, &seg.tuple, &h, Some(Stamp { seq: 1, ts_ns: 0 }))
        .unwrap();
    w.send(b[..n].to_vec());
    assert_eq!(
        w.invalid.first().map(|s| s.seq),
        Some(h.seq),
        "{:?}",
        w.invalid
    );
}

#[test]
fn syns_are_sent_again_then_the_handshake_fails() {
    let mut g = tcp_gen(space("1000"), FlowMode::Fixed(1), 1);
    let mut b = vec![0u8; 2048];
    let t0 = 5 * NS_PER_SEC;
    assert_eq!(g.next_frame(t0, &mut b, 0), Sent::Syn(62));
    let first = parse_segment(&b[..62]).unwrap();
    assert!(!g.timer_due(t0 + NS_PER_SEC - 1));
    assert_eq!(g.retransmit(t0 + NS_PER_SEC - 1, &mut b), None);
    assert_eq!(g.retransmit(t0 + NS_PER_SEC, &mut b), Some(62));
    assert_eq!(parse_segment(&b[..62]).unwrap(), first, "the same SYN");
    assert_eq!(g.retransmit(t0 + NS_PER_SEC, &mut b), None);
    assert_eq!(g.retransmit(t0 + 3 * NS_PER_SEC - 1, &mut b), None);
    assert_eq!(g.retransmit(t0 + 3 * NS_PER_SEC, &mut b), Some(62));
    assert_eq!(g.retransmit(t0 + 7 * NS_PER_SEC - 1, &mut b), None);
    assert_eq!(g.state(0), FlowState::SynSent);
    assert!(g.can_send());
    assert_eq!(g.retransmit(t0 + 7 * NS_PER_SEC, &mut b), None);
    assert_eq!(g.state(0), FlowState::Failed);
    let c = g.counters();
    assert_eq!(
        (
            c.handshakes_started,
            c.handshakes_failed,
            c.syn_retransmits,
            c.control_sent
        ),
        (1, 1, 2, 3)
    );
    assert_eq!(g.handshakes_pending(), 0);
    assert!(!g.can_send(), "nothing left to send");
    assert!(!g.timer_due(t0 + 100 * NS_PER_SEC));
}

#[test]
fn a_syn_ack_after_the_handshake_failed_gets_a_rst() {
    let mut w = Wire::new(tcp_gen(space("1000"), FlowMode::Fixed(1), 1));
    let (_, syn) = w.next(0);
    let mut b = vec![0u8; 2048];
    for at in [1, 3, 7] {
        w.now = 1_000_000_000 + at * NS_PER_SEC;
        while w.gen.retransmit(w.now, &mut b).is_some() {}
    }
    assert_eq!(w.gen.state(0), FlowState::Failed);
    // The first SYN arrives very late after all.
    w.send(syn);
    let (_, rst) = *w.seen.last().unwrap();
    let (_, synack) = w.seen[w.seen.len() - 2];
    assert_eq!((rst.flags, rst.seq), (flags::RST, synack.ack));
    assert_eq!(w.peer.open(), 0, "the responder forgot it");
    assert_eq!(w.gen.counters().late_syn_acks, 1);
    assert!(w.invalid.is_empty(), "{:?}", w.invalid);
    // Anything else is counted, not answered.
    let mut junk = vec![0u8; 2048];
    assert_eq!(w.gen.on_frame(&mut junk, 60, w.now), None);
    assert_eq!(w.gen.counters().not_tcp, 1);
}

#[test]
fn set_up_latency_counts_from_the_first_syn() {
    let mut w = Wire::new(tcp_gen(space("1000"), FlowMode::Fixed(1), 1));
    let (_, _lost) = w.next(0);
    w.now += NS_PER_SEC;
    let mut b = vec![0u8; 2048];
    let n = w.gen.retransmit(w.now, &mut b).unwrap();
    w.now += 500_000;
    w.send(b[..n].to_vec());
    assert_eq!(w.gen.state(0), FlowState::Established);
    // hdrhistogram: three significant digits.
    let max = w.gen.setup_latency().max();
    assert!(max.abs_diff(1_000_500_000) < 1_000_000, "{max}");
    // The stale timer of the SYN does nothing.
    assert_eq!(w.gen.retransmit(w.now + 10 * NS_PER_SEC, &mut b), None);
    assert_eq!(w.gen.counters().handshakes_failed, 0);
    assert!(w.invalid.is_empty());
}

#[test]
fn the_responder_answers_again_refuses_when_full_and_resets_strangers() {
    let mut r = TcpResponder::new(1, 3);
    let mut g = tcp_gen(space("1000-1001"), FlowMode::Fixed(2), 2);
    let mut syn_a = vec![0u8; 2048];
    let mut syn_b = vec![0u8; 2048];
    g.next_frame(0, &mut syn_a, 0);
    g.next_frame(0, &mut syn_b, 0);
    let (a, b) = (
        parse_segment(&syn_a[..62]).unwrap(),
        parse_segment(&syn_b[..62]).unwrap(),
    );
    let mut out = vec![0u8; 2048];
    let n = r.on_segment(&a, &mut out).unwrap();
    let first = out[..n].to_vec();
    let n2 = r.on_segment(&a, &mut out).unwrap();
    assert_eq!(out[..n2], first[..], "the same SYN-ACK again");
    assert_eq!(r.on_segment(&b, &mut out), None, "the table is full");
    // Data of a connection it does not know: RST, seq = its ack.
    let stranger = Segment {
        flags: flags::ACK | flags::PSH,
        seq: 1234,
        ack: 99_999,
        len: 46,
        ..b
    };
    let n = r.on_segment(&stranger, &mut out).unwrap();
    let rst = parse_segment(&out[..n]).unwrap();
    assert_eq!((rst.flags, rst.seq), (flags::RST, 99_999));
    assert_eq!(rst.tuple, reversed(&b.tuple));
    // A FIN without ACK: RST|ACK acknowledging it.
    let fin = Segment {
        flags: flags::FIN,
        ..stranger
    };
    let n = r.on_segment(&fin, &mut out).unwrap();
    let rst = parse_segment(&out[..n]).unwrap();
    assert_eq!(
        (rst.flags, rst.seq, rst.ack),
        (flags::RST | flags::ACK, 0, 1234 + 46 + 1)
    );
    let c = r.counters();
    assert_eq!(
        (
            c.syns,
            c.syn_retransmits,
            c.table_full,
            c.resets_sent,
            c.open
        ),
        (1, 1, 1, 2, 1)
    );
    // A SYN without the window scale option gets none back.
    let mut r = TcpResponder::new(4, 3);
    let plain = Segment { wscale: None, ..a };
    let n = r.on_segment(&plain, &mut out).unwrap();
    assert_eq!(parse_segment(&out[..n]).unwrap().wscale, None);
    assert_eq!(&out[54..58], &MSS_OPTION);
}

#[test]
fn a_reset_stops_the_flow_and_a_rst_close_is_seen_by_conntrack() {
    let mut w = Wire::new(tcp_gen(space("1000-1001"), FlowMode::Fixed(2), 2));
    for _ in 0..2 {
        let (_, f) = w.next(0);
        w.send(f);
    }
    // Flow 0's data reaches a responder that does not know it (one
    // that restarted): its RST comes back over the wire.
    let (_, f) = w.next(0);
    let mut fresh = TcpResponder::new(8, 99);
    let mut b = f.clone();
    b.resize(2048, 0);
    let n = fresh.on_segment(&Wire::seg_of(&f), &mut b).unwrap();
    w.track(&f);
    w.queue.push_back((false, b[..n].to_vec()));
    w.deliver();
    assert_eq!(w.gen.state(0), FlowState::Reset);
    assert_eq!(w.gen.counters().resets_received, 1);
    assert_eq!(w.ct_line(1000).split_whitespace().nth(3), Some("CLOSE"));
    // Data goes to the other flow only, which a RST closes at the end.
    for k in 1..4 {
        let (s, f) = w.next(k);
        assert_eq!(s, Sent::Data(SIZE));
        assert_eq!(Wire::seg_of(&f).tuple.sport, 1001);
        w.send(f);
    }
    w.gen.start_close();
    let mut b = vec![0u8; 2048];
    let n = w.gen.close_next(w.now, &mut b, Close::Rst).unwrap();
    assert_eq!(w.gen.close_next(w.now, &mut b[n..], Close::Rst), None);
    assert!(w.gen.closed());
    let seg = Wire::seg_of(&b[..n]);
    assert_eq!(seg.flags, flags::RST | flags::ACK);
    w.send(b[..n].to_vec());
    assert_eq!(w.peer.counters().open, 1, "flow 0's connection is left");
    assert!(w.invalid.is_empty(), "{:?}", w.invalid);
    assert_eq!(w.ct_line(1001).split_whitespace().nth(3), Some("CLOSE"));
    let r = w.gen.report(Close::Rst);
    assert_eq!((r.segments_per_flow_min, r.segments_per_flow_max), (1, 3));
}

#[test]
fn new_flows_handshake_at_their_rate_between_data() {
    let sp = space("1000-1099");
    let flows = flows_needed(&sp, FlowMode::NewPerSecond(10), Some(NS_PER_SEC)).unwrap();
    assert_eq!(flows, 11);
    let mut w = Wire::new(tcp_gen(sp, FlowMode::NewPerSecond(10), flows));
    let t0 = w.now;
    let (mut syn_at, mut data) = (Vec::new(), 0u64);
    // A frame every ms for a second.
    for _ in 0..1000 {
        match w.next(data) {
            (Sent::Syn(_), f) => {
                syn_at.push(w.now - t0);
                w.send(f);
            }
            (Sent::Data(_), f) => {
                data += 1;
                w.send(f);
            }
            (Sent::Nothing, _) => panic!("a flow is always established"),
        }
        w.now += 1_000_000;
    }
    let want: Vec<u64> = (0..10).map(|i| i * 100_000_000).collect();
    assert_eq!(syn_at, want);
    assert_eq!((data, w.sink.counters().lost), (990, 0));
    assert_eq!(w.gen.counters().handshakes_completed, 10);
    assert!(w.invalid.is_empty());
}

#[test]
fn flows_needed_bounds_the_state() {
    let sp = space("1-65535");
    assert_eq!(flows_needed(&sp, FlowMode::Cycle, None), Ok(65535));
    assert_eq!(flows_needed(&sp, FlowMode::Fixed(7), None), Ok(7));
    assert_eq!(
        flows_needed(&sp, FlowMode::NewPerSecond(1000), Some(5 * NS_PER_SEC + 1)),
        Ok(5002)
    );
    assert_eq!(
        flows_needed(&sp, FlowMode::NewPerSecond(1_000_000), Some(NS_PER_SEC)),
        Ok(65535)
    );
    let big = FlowSpace {
        src: "10.0.0.0-10.0.255.255".parse().unwrap(),
        ..sp
    };
    assert_eq!(
        flows_needed(&big, FlowMode::Cycle, None),
        Err(FlowError::TcpTooManyFlows {
            flows: 65536 * 65535,
            max: MAX_FLOWS
        })
    );
    assert_eq!(Ipv4Addr::from(u32::from(big.src.lo)), big.src.lo);
}

#[test]
fn sequence_space_wraps() {
    assert!(after(1, u32::MAX));
    assert!(!after(u32::MAX, 1));
    assert!(!after(5, 5));
}
