//! TCP flows that complete a handshake (`--proto tcp`), sans IO: the
//! generator's side ([`TcpGen`]) and the responder's (`gen --sink --echo`,
//! [`TcpResponder`]). No clock and no socket: the caller passes `now` and
//! frame buffers; replies are written into the buffer of the frame that
//! caused them.
//!
//! A flow of the generator:
//! 1. SYN: its own initial sequence number (a hash of the flow and the
//!    run), window 64240, options MSS 1460 and window scale 7; sent again
//!    after [`SYN_RTO_NS`], then twice that, [`SYN_RETRIES`] times; no
//!    SYN-ACK by the timeout after the last: the handshake failed.
//! 2. SYN-ACK (`ack = iss + 1`): the ACK goes back at once; the flow is
//!    established; the time from the first SYN is its set-up latency.
//! 3. Data segments (ACK|PSH) of the run's frame size, payload the stamp
//!    (sequence number of the run, timestamp) and zeros, `seq` advancing by
//!    the payload, `ack` the peer's next byte, window 65535 scaled by 7; a
//!    flow sends only within the window the peer advertised (scaled when
//!    both SYNs carried the option), so a window-tracking middlebox (the
//!    kernel's nf_conntrack, fastables') sees in-window traffic. Data is
//!    never sent again: a lost segment is the sink's `lost`.
//! 4. At the end: FIN|ACK, the peer's FIN|ACK answered with an ACK (the
//!    close the kernel's conntrack sees as TIME_WAIT), FIN sent once more
//!    after [`FIN_RTO_NS`]; or a RST (`--close rst`); or nothing (`--close
//!    none`: the connections stay ESTABLISHED in the middlebox).
//!
//! Which flow a frame goes to: with a fixed set of flows (`--flows N`, or
//! the whole flow space) every flow does its handshake first (paced at the
//! rate), and data starts once no handshake is pending, going round the
//! established flows in turn: each gets the same number of segments (one
//! more for the first `count % flows`). With new flows a second, each new
//! flow's SYN goes out when it is due, data round the flows established so
//! far.
//!
//! The responder keeps one entry per connection (the tuple as it arrives,
//! after any NAT) in a table sized at start ([`TcpResponder::new`]; a SYN
//! that finds it full gets no answer and is counted), answers a SYN with a
//! SYN-ACK (its own ISN, `ack = seq + 1`, MSS, window scale when the SYN
//! had it), acknowledges every data segment (no delayed ACK; the ack is the
//! highest byte received: holes are not waited for, the generator never
//! resends data), answers a FIN with FIN|ACK and forgets the connection at
//! the last ACK or a RST; a segment of a connection it does not know gets
//! a RST.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use fastables_packet::ethernet::{EthernetRepr, ETHERTYPE_IPV4};
use fastables_packet::parse::{l4_checksum_ok, parse_frame, L4};
use fastables_packet::tcp::{flags, option, TcpOptions};
use fastables_packet::MacAddr;
use fastables_stats::Latency;

use crate::flow::{FlowError, FlowMode, FlowSpace, Tuple};
use crate::frame::{write_tcp, FrameWriter, TcpHeader};
use crate::payload::Stamp;
use crate::report::LatencyReport;

const SEC: u64 = 1_000_000_000;

/// The window scale both ends offer.
pub const WSCALE: u8 = 7;
/// The window of a SYN (never scaled): Linux's.
pub const SYN_WINDOW: u16 = 64240;
/// The window of every other segment (scaled by [`WSCALE`]: 8 MiB).
pub const WINDOW: u16 = 0xffff;
/// The options of a SYN and of a SYN-ACK to a SYN that offered a window
/// scale: MSS 1460, NOP, window scale 7.
const SYN_OPTIONS: [u8; 8] = [
    option::MSS,
    4,
    0x05,
    0xb4,
    option::NOP,
    option::WINDOW_SCALE,
    3,
    WSCALE,
];
/// A SYN-ACK's to a SYN without window scale: MSS 1460.
const MSS_OPTION: [u8; 4] = [option::MSS, 4, 0x05, 0xb4];

/// The first SYN retransmission timeout (Linux's initial RTO); doubled
/// after each retransmission.
pub const SYN_RTO_NS: u64 = SEC;
/// SYN retransmissions before a handshake fails.
pub const SYN_RETRIES: u8 = 2;
/// The FIN retransmission timeout.
pub const FIN_RTO_NS: u64 = SEC;
/// FIN retransmissions before a close fails.
pub const FIN_RETRIES: u8 = 1;
/// Flows of which `--proto tcp` keeps state at most.
pub const MAX_FLOWS: u64 = 1 << 20;
/// The most connections the responder's table may be sized for.
pub const MAX_RESPONDER_CONNECTIONS: usize = 1 << 24;

/// `a` is after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A received TCP segment (IPv4 header and TCP checksums verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The frame's source MAC.
    pub src_mac: MacAddr,
    /// The frame's destination MAC.
    pub dst_mac: MacAddr,
    /// Addresses and ports as received.
    pub tuple: Tuple,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: u8,
    /// Window as sent.
    pub window: u16,
    /// The window scale option, if there was one.
    pub wscale: Option<u8>,
    /// Payload bytes.
    pub len: u32,
}

impl Segment {
    fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
}

/// The TCP segment in `frame`; None for anything else, a fragment, or a
/// wrong checksum. Never panics.
pub fn parse_segment(frame: &[u8]) -> Option<Segment> {
    let p = parse_frame(frame).ok()?;
    let ip = p.ipv4()?;
    let L4::Tcp {
        src_port,
        dst_port,
        flags,
        header_len,
    } = ip.l4
    else {
        return None;
    };
    let l4 = p.l4_range()?;
    let seg = frame.get(l4)?;
    let hl = usize::from(header_len);
    if ip.is_fragment() || hl < 20 || seg.len() < hl || !l4_checksum_ok(frame, &p) {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes([seg[at], seg[at + 1], seg[at + 2], seg[at + 3]]);
    let wscale = TcpOptions::new(&seg[20..hl])
        .find(|o| o.kind == option::WINDOW_SCALE && o.data.len() == 1)
        .map(|o| o.data[0].min(14));
    let mac = |at: usize| {
        let mut m = [0u8; 6];
        m.copy_from_slice(&frame[at..at + 6]);
        MacAddr(m)
    };
    Some(Segment {
        src_mac: mac(6),
        dst_mac: mac(0),
        tuple: Tuple {
            src: ip.src,
            dst: ip.dst,
            sport: src_port,
            dport: dst_port,
        },
        seq: word(4),
        ack: word(8),
        flags,
        window: u16::from_be_bytes([seg[14], seg[15]]),
        wscale,
        len: (seg.len() - hl) as u32,
    })
}

fn reversed(t: &Tuple) -> Tuple {
    Tuple {
        src: t.dst,
        dst: t.src,
        sport: t.dport,
        dport: t.sport,
    }
}

/// How the generator ends its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Close {
    /// FIN, the peer's FIN answered: TIME_WAIT in a middlebox.
    Fin,
    /// A RST.
    Rst,
    /// Nothing: the connections stay established.
    None,
}

impl Close {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Close::Fin => "fin",
            Close::Rst => "rst",
            Close::None => "none",
        }
    }
}

impl std::str::FromStr for Close {
    type Err = String;
    fn from_str(s: &str) -> Result<Close, String> {
        match s {
            "fin" => Ok(Close::Fin),
            "rst" => Ok(Close::Rst),
            "none" => Ok(Close::None),
            _ => Err(format!("`{s}`: expected fin, rst or none")),
        }
    }
}

/// The state of one of the generator's flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowState {
    /// Not started.
    #[default]
    Idle,
    /// SYN sent, no SYN-ACK yet.
    SynSent,
    /// Handshake done: data flows.
    Established,
    /// Our FIN sent, the peer's not yet received.
    FinWait,
    /// Closed (FIN exchange done, RST sent, or the peer closed).
    Closed,
    /// No SYN-ACK after the retries.
    Failed,
    /// The peer sent a RST.
    Reset,
}

/// One flow's connection.
#[derive(Debug, Clone, Copy, Default)]
struct Conn {
    state: FlowState,
    /// Retransmissions so far (SYN, then FIN).
    tries: u8,
    /// The window scale the peer's segments use (0: none).
    snd_scale: u8,
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// The peer's window, scaled.
    snd_wnd: u32,
    rcv_nxt: u32,
    /// Data segments sent.
    segments: u32,
    /// When the first SYN went.
    syn_at: u64,
    /// The deadline of the flow's live timer (0: none).
    timer: u64,
    /// The handshake completed (at some time).
    shook: bool,
}

/// The generator's TCP counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpGenCounters {
    /// Flows whose first SYN went.
    pub handshakes_started: u64,
    /// Flows that got their SYN-ACK (and sent the ACK).
    pub handshakes_completed: u64,
    /// Flows without SYN-ACK after the retries.
    pub handshakes_failed: u64,
    /// SYNs sent again.
    pub syn_retransmits: u64,
    /// SYNs, ACKs, FINs and RSTs sent (not in `sent`).
    pub control_sent: u64,
    /// RSTs received (the flow stops).
    pub resets_received: u64,
    /// Times no established flow had room in the peer's window.
    pub window_stalls: u64,
    /// FINs sent (closes started).
    pub closes_started: u64,
    /// FIN exchanges completed.
    pub closes_completed: u64,
    /// FINs the peer did not answer.
    pub closes_failed: u64,
    /// Connections the peer closed first (answered with an ACK).
    pub closed_by_peer: u64,
    /// Segments that fit no flow or state (counted, ignored).
    pub unexpected: u64,
    /// SYN-ACKs for handshakes given up already (answered with a RST).
    pub late_syn_acks: u64,
    /// Received frames that were no TCP segment (or had a bad checksum).
    pub not_tcp: u64,
}

/// What the next paced frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A SYN of this length.
    Syn(usize),
    /// A data segment of this length (it used the stamp).
    Data(usize),
    /// Nothing can go now (handshakes pending, windows full).
    Nothing,
}

/// The generator's side: every flow's connection, the schedule, the
/// timers. Allocated once at start for all the flows it can use.
#[derive(Debug)]
pub struct TcpGen {
    space: FlowSpace,
    /// New flows a second (None: a fixed set, `conns.len()` of them).
    rate: Option<u64>,
    conns: Vec<Conn>,
    /// Flows started.
    started: u64,
    t0: Option<u64>,
    /// Established flows, in the order they got there.
    est: Vec<u32>,
    /// The next position in `est` to send data on.
    rr: usize,
    /// Handshakes waiting for a SYN-ACK.
    pending: u64,
    /// Established flows with data not acknowledged.
    unacked: u64,
    /// FINs waiting for the peer's.
    fin_waiting: u64,
    /// Closing: the next position in `est` to close.
    close_at: Option<usize>,
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    writer: FrameWriter,
    payload_len: u32,
    nonce: u64,
    counters: TcpGenCounters,
    setup: Latency,
}

/// How many flows `--proto tcp` needs state for, or why it cannot: a fixed
/// set (`--flows N`, or the whole space), or the new flows of a run of
/// `duration_ns` (the whole space without a duration).
pub fn flows_needed(
    space: &FlowSpace,
    mode: FlowMode,
    duration_ns: Option<u64>,
) -> Result<u64, FlowError> {
    let want: u128 = match mode {
        FlowMode::Cycle => space.size(),
        FlowMode::Fixed(n) => u128::from(n),
        FlowMode::NewPerSecond(r) => match duration_ns {
            Some(d) => (u128::from(r) * u128::from(d)).div_ceil(u128::from(SEC)) + 1,
            None => space.size(),
        }
        .min(space.size()),
    };
    if want > u128::from(MAX_FLOWS) {
        return Err(FlowError::TcpTooManyFlows {
            flows: want,
            max: MAX_FLOWS,
        });
    }
    Ok(want as u64)
}

impl TcpGen {
    /// State for `flows` flows of `space` (from [`flows_needed`]): a fixed
    /// set, or new ones at `mode`'s rate; frames from `writer` (a
    /// [`crate::frame::Proto::Tcp`] writer: its size is the data
    /// segments'); `nonce` makes the sequence numbers of a run its own.
    pub fn new(
        space: FlowSpace,
        mode: FlowMode,
        flows: u64,
        writer: FrameWriter,
        nonce: u64,
    ) -> TcpGen {
        let n = flows as usize;
        let payload_len = (writer.size() - 54) as u32;
        TcpGen {
            space,
            rate: match mode {
                FlowMode::NewPerSecond(r) => Some(r),
                _ => None,
            },
            conns: vec![Conn::default(); n],
            started: 0,
            t0: None,
            est: Vec::with_capacity(n),
            rr: 0,
            pending: 0,
            unacked: 0,
            fin_waiting: 0,
            close_at: None,
            timers: BinaryHeap::with_capacity(2 * n),
            writer,
            payload_len,
            nonce,
            counters: TcpGenCounters::default(),
            setup: Latency::new(),
        }
    }

    /// Sets the destination MAC (once resolved).
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.writer.set_dst(mac);
    }

    /// The counters.
    pub fn counters(&self) -> &TcpGenCounters {
        &self.counters
    }

    /// Set-up latency (first SYN to SYN-ACK) of the completed handshakes.
    pub fn setup_latency(&self) -> &Latency {
        &self.setup
    }

    /// Flows started.
    pub fn flows_started(&self) -> u64 {
        self.started
    }

    /// Handshakes waiting for their SYN-ACK.
    pub fn handshakes_pending(&self) -> u64 {
        self.pending
    }

    /// Established flows with data the peer has not acknowledged.
    pub fn unacked_flows(&self) -> u64 {
        self.unacked
    }

    /// The state of flow `i`.
    pub fn state(&self, i: u64) -> FlowState {
        self.conns
            .get(i as usize)
            .map_or(FlowState::Idle, |c| c.state)
    }

    /// Data segments sent on each flow that completed its handshake: the
    /// least and the most (None when none did).
    pub fn segments_per_flow(&self) -> Option<(u32, u32)> {
        let mut it = self.conns.iter().filter(|c| c.shook).map(|c| c.segments);
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), s| (lo.min(s), hi.max(s))))
    }

    /// Whether anything can still be sent: false when every flow has been
    /// started and none is established or shaking hands.
    pub fn can_send(&self) -> bool {
        self.started < self.conns.len() as u64 || self.pending > 0 || !self.est.is_empty()
    }

    fn isn(&self, i: u64) -> u32 {
        mix(self.nonce ^ i.wrapping_mul(0x0100_0000_01b3)) as u32
    }

    fn arm(&mut self, i: usize, at: u64) {
        self.conns[i].timer = at;
        self.timers.push(Reverse((at, i as u32)));
    }

    fn write(
        &mut self,
        out: &mut [u8],
        i: usize,
        h: TcpHeader<'_>,
        stamp: Option<Stamp>,
    ) -> Option<usize> {
        let t = self.space.tuple(i as u64);
        self.writer.write_tcp(out, &t, &h, stamp)
    }

    fn syn(&mut self, out: &mut [u8], i: usize) -> Option<usize> {
        let c = self.conns[i];
        let h = TcpHeader {
            seq: c.iss,
            ack: 0,
            flags: flags::SYN,
            window: SYN_WINDOW,
            options: &SYN_OPTIONS,
        };
        self.write(out, i, h, None)
    }

    /// A segment without data from flow `i` (flags, seq `snd_nxt`).
    fn control(&mut self, out: &mut [u8], i: usize, fl: u8) -> Option<usize> {
        let c = self.conns[i];
        let h = TcpHeader {
            seq: c.snd_nxt,
            ack: c.rcv_nxt,
            flags: fl,
            window: WINDOW,
            options: &[],
        };
        let n = self.write(out, i, h, None)?;
        self.counters.control_sent += 1;
        Some(n)
    }

    /// The next paced frame, written into `out`, at `now`: a new flow's SYN
    /// when one is due, else a data segment (stamp sequence number `seq`)
    /// of the next established flow with room in its window.
    pub fn next_frame(&mut self, now: u64, out: &mut [u8], seq: u64) -> Sent {
        let t0 = *self.t0.get_or_insert(now);
        let n = self.conns.len() as u64;
        let due = match self.rate {
            None => n,
            Some(r) => {
                let d = 1 + u128::from(now.saturating_sub(t0)) * u128::from(r) / u128::from(SEC);
                u64::try_from(d).unwrap_or(u64::MAX).min(n)
            }
        };
        if self.started < due {
            let i = self.started as usize;
            let iss = self.isn(self.started);
            self.conns[i] = Conn {
                state: FlowState::SynSent,
                iss,
                snd_una: iss,
                snd_nxt: iss.wrapping_add(1),
                syn_at: now,
                ..Conn::default()
            };
            let Some(len) = self.syn(out, i) else {
                self.conns[i] = Conn::default();
                return Sent::Nothing;
            };
            self.started += 1;
            self.pending += 1;
            self.counters.handshakes_started += 1;
            self.counters.control_sent += 1;
            self.arm(i, now + SYN_RTO_NS);
            return Sent::Syn(len);
        }
        // A fixed set: data once every handshake is over.
        if (self.rate.is_none() && self.pending > 0) || self.est.is_empty() {
            return Sent::Nothing;
        }
        for _ in 0..self.est.len() {
            let i = self.est[self.rr % self.est.len()] as usize;
            self.rr = (self.rr + 1) % self.est.len();
            let c = self.conns[i];
            let in_flight = u64::from(c.snd_nxt.wrapping_sub(c.snd_una));
            if in_flight + u64::from(self.payload_len) > u64::from(c.snd_wnd) {
                continue;
            }
            let h = TcpHeader {
                seq: c.snd_nxt,
                ack: c.rcv_nxt,
                flags: flags::ACK | flags::PSH,
                window: WINDOW,
                options: &[],
            };
            let Some(len) = self.write(out, i, h, Some(Stamp { seq, ts_ns: now })) else {
                return Sent::Nothing;
            };
            let c = &mut self.conns[i];
            if c.snd_una == c.snd_nxt {
                self.unacked += 1;
            }
            c.snd_nxt = c.snd_nxt.wrapping_add(self.payload_len);
            c.segments += 1;
            return Sent::Data(len);
        }
        self.counters.window_stalls += 1;
        Sent::Nothing
    }

    /// Whether a timer is due at `now` (a SYN or FIN to send again, or a
    /// handshake or close to give up).
    pub fn timer_due(&self, now: u64) -> bool {
        self.timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
    }

    /// Runs the timers due at `now`: the next retransmission written into
    /// `out` (its length), None when no more is due.
    pub fn retransmit(&mut self, now: u64, out: &mut [u8]) -> Option<usize> {
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if at > now {
                return None;
            }
            self.timers.pop();
            let i = i as usize;
            let c = self.conns[i];
            if c.timer != at {
                continue; // stale
            }
            self.conns[i].timer = 0;
            match c.state {
                FlowState::SynSent if c.tries < SYN_RETRIES => {
                    let len = self.syn(out, i)?;
                    self.conns[i].tries += 1;
                    self.counters.syn_retransmits += 1;
                    self.counters.control_sent += 1;
                    self.arm(i, now + (SYN_RTO_NS << (c.tries + 1)));
                    return Some(len);
                }
                FlowState::SynSent => {
                    self.conns[i].state = FlowState::Failed;
                    self.pending -= 1;
                    self.counters.handshakes_failed += 1;
                }
                FlowState::FinWait if c.tries < FIN_RETRIES => {
                    // The FIN again: its sequence number is snd_nxt - 1.
                    self.conns[i].snd_nxt = c.snd_nxt.wrapping_sub(1);
                    let len = self.control(out, i, flags::FIN | flags::ACK);
                    self.conns[i].snd_nxt = c.snd_nxt;
                    let len = len?;
                    self.conns[i].tries += 1;
                    self.arm(i, now + FIN_RTO_NS);
                    return Some(len);
                }
                FlowState::FinWait => {
                    self.conns[i].state = FlowState::Closed;
                    self.fin_waiting -= 1;
                    self.counters.closes_failed += 1;
                }
                _ => {}
            }
        }
        None
    }

    fn leave_est(&mut self, i: usize) {
        // Rare (a RST, a peer's FIN): a scan of the established list.
        if let Some(p) = self.est.iter().position(|&f| f as usize == i) {
            self.est.remove(p);
            if self.rr > p {
                self.rr -= 1;
            }
            if let Some(at) = self.close_at.as_mut().filter(|at| **at > p) {
                *at -= 1;
            }
            if self.est.is_empty() {
                self.rr = 0;
            } else {
                self.rr %= self.est.len();
            }
        }
        let c = self.conns[i];
        if c.snd_una != c.snd_nxt && matches!(c.state, FlowState::Established) {
            self.unacked -= 1;
        }
    }

    /// A frame received at `now` (`len` bytes at the start of `buf`, the
    /// whole frame buffer): when it calls for an answer (the ACK of a
    /// SYN-ACK, of the peer's FIN), the answer is written into `buf` and
    /// its length returned.
    pub fn on_frame(&mut self, buf: &mut [u8], len: usize, now: u64) -> Option<usize> {
        let Some(seg) = buf.get(..len).and_then(parse_segment) else {
            self.counters.not_tcp += 1;
            return None;
        };
        let Some(i) = self
            .space
            .index(&reversed(&seg.tuple))
            .filter(|&i| i < self.started)
        else {
            self.counters.unexpected += 1;
            return None;
        };
        let i = i as usize;
        let c = self.conns[i];
        if seg.has(flags::RST) {
            match c.state {
                FlowState::SynSent => self.pending -= 1,
                FlowState::Established => self.leave_est(i),
                FlowState::FinWait => self.fin_waiting -= 1,
                _ => {
                    self.counters.unexpected += 1;
                    return None;
                }
            }
            self.conns[i].state = FlowState::Reset;
            self.counters.resets_received += 1;
            return None;
        }
        match c.state {
            FlowState::SynSent => {
                if !seg.has(flags::SYN | flags::ACK) || seg.ack != c.iss.wrapping_add(1) {
                    self.counters.unexpected += 1;
                    return None;
                }
                let cm = &mut self.conns[i];
                cm.state = FlowState::Established;
                cm.shook = true;
                cm.rcv_nxt = seg.seq.wrapping_add(1);
                cm.snd_una = seg.ack;
                // Both SYNs offered a scale (ours always does).
                cm.snd_scale = seg.wscale.unwrap_or(0);
                cm.snd_wnd = u32::from(seg.window);
                cm.timer = 0;
                self.pending -= 1;
                self.est.push(i as u32);
                self.counters.handshakes_completed += 1;
                self.setup.record(now.saturating_sub(c.syn_at));
                self.control(buf, i, flags::ACK)
            }
            FlowState::Established | FlowState::FinWait => {
                if seg.has(flags::SYN) {
                    // Our ACK of the SYN-ACK was lost: again.
                    return self.control(buf, i, flags::ACK);
                }
                if seg.has(flags::ACK) {
                    let ack_room = c.snd_nxt.wrapping_sub(c.snd_una);
                    if seg.ack.wrapping_sub(c.snd_una) <= ack_room {
                        let cm = &mut self.conns[i];
                        cm.snd_una = seg.ack;
                        cm.snd_wnd = u32::from(seg.window) << cm.snd_scale;
                        if c.state == FlowState::Established
                            && c.snd_una != c.snd_nxt
                            && seg.ack == c.snd_nxt
                        {
                            self.unacked -= 1;
                        }
                    }
                }
                let end = seg.seq.wrapping_add(seg.len);
                if seg.len > 0 && !after(seg.seq, c.rcv_nxt) && after(end, c.rcv_nxt) {
                    self.conns[i].rcv_nxt = end;
                }
                if seg.has(flags::FIN) {
                    self.conns[i].rcv_nxt = end.wrapping_add(1);
                    if c.state == FlowState::FinWait {
                        self.fin_waiting -= 1;
                        self.counters.closes_completed += 1;
                    } else {
                        self.leave_est(i);
                        self.counters.closed_by_peer += 1;
                    }
                    self.conns[i].state = FlowState::Closed;
                    self.conns[i].timer = 0;
                    return self.control(buf, i, flags::ACK);
                }
                None
            }
            FlowState::Closed if seg.has(flags::FIN) => {
                // The peer did not get our last ACK.
                self.control(buf, i, flags::ACK)
            }
            FlowState::Failed if seg.has(flags::SYN | flags::ACK) => {
                // Too late: a RST, so that the peer and the middlebox
                // forget the half-open connection.
                self.counters.late_syn_acks += 1;
                let h = TcpHeader {
                    seq: seg.ack,
                    ack: 0,
                    flags: flags::RST,
                    window: 0,
                    options: &[],
                };
                let n = self.write(buf, i, h, None)?;
                self.counters.control_sent += 1;
                Some(n)
            }
            _ => {
                self.counters.unexpected += 1;
                None
            }
        }
    }

    /// Starts closing the established flows (`how`); handshakes still
    /// pending stay pending (counted so at the end). Idempotent.
    pub fn start_close(&mut self) {
        self.close_at.get_or_insert(0);
    }

    /// Whether closing still has segments to send.
    pub fn close_pending(&self) -> bool {
        self.close_at.is_some_and(|p| p < self.est.len())
    }

    /// While closing: the next flow's FIN or RST (`how`), written into
    /// `out`; None when every flow has had its own.
    pub fn close_next(&mut self, now: u64, out: &mut [u8], how: Close) -> Option<usize> {
        let p = self.close_at?;
        let &i = self.est.get(p)?;
        let i = i as usize;
        let c = self.conns[i];
        let len = match how {
            Close::None => return None,
            Close::Fin => {
                let len = self.control(out, i, flags::FIN | flags::ACK)?;
                let c = &mut self.conns[i];
                c.snd_nxt = c.snd_nxt.wrapping_add(1);
                c.state = FlowState::FinWait;
                c.tries = 0;
                self.fin_waiting += 1;
                self.counters.closes_started += 1;
                self.arm(i, now + FIN_RTO_NS);
                len
            }
            Close::Rst => {
                let len = self.control(out, i, flags::RST | flags::ACK)?;
                self.conns[i].state = FlowState::Closed;
                len
            }
        };
        if c.snd_una != c.snd_nxt {
            self.unacked -= 1;
        }
        self.close_at = Some(p + 1);
        Some(len)
    }

    /// Closing is over: every flow has had its FIN or RST and every FIN
    /// its answer (or its timeout).
    pub fn closed(&self) -> bool {
        !self.close_pending() && self.fin_waiting == 0
    }

    /// The report at the end (`close` as configured).
    pub fn report(&self, close: Close) -> TcpReport {
        // At most one sequence number unacknowledged: our FIN (a data
        // segment has at least the 18 bytes of the stamp).
        let acked = self
            .conns
            .iter()
            .filter(|c| c.shook && c.state != FlowState::Reset)
            .filter(|c| c.snd_nxt.wrapping_sub(c.snd_una) <= 1)
            .count() as u64;
        let (min, max) = self.segments_per_flow().unwrap_or((0, 0));
        TcpReport {
            counters: self.counters,
            handshakes_incomplete: self.pending,
            closes_incomplete: self.fin_waiting,
            setup_latency: LatencyReport::from(&self.setup),
            flows_acked: acked,
            segments_per_flow_min: min,
            segments_per_flow_max: max,
            close,
            total_secs: 0.0,
        }
    }
}

/// The generator's TCP summary (in the generator's report as `tcp`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TcpReport {
    /// The counters.
    #[serde(flatten)]
    pub counters: TcpGenCounters,
    /// Handshakes still waiting for a SYN-ACK at the end.
    pub handshakes_incomplete: u64,
    /// FINs still waiting for the peer's at the end (the close's time was
    /// up).
    pub closes_incomplete: u64,
    /// First SYN to SYN-ACK, of the completed handshakes.
    pub setup_latency: LatencyReport,
    /// Established flows whose data the peer acknowledged completely.
    pub flows_acked: u64,
    /// Data segments per established flow: the least.
    pub segments_per_flow_min: u32,
    /// And the most.
    pub segments_per_flow_max: u32,
    /// How the connections were ended.
    pub close: Close,
    /// Seconds from the start to the end of the closes (the report's
    /// `secs` and `pps` are the sending's).
    pub total_secs: f64,
}

/// The responder's state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RState {
    SynReceived,
    Established,
    LastAck,
}

#[derive(Debug, Clone, Copy)]
struct RConn {
    state: RState,
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
    conns: HashMap<Tuple, RConn>,
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
                if c.state == RState::SynReceived {
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
            let iss = mix(self.nonce
                ^ u64::from(seg.seq)
                ^ (u64::from(u32::from(key.src)) << 32)
                ^ (u64::from(key.sport) << 16)
                ^ u64::from(key.dport)) as u32;
            let c = RConn {
                state: RState::SynReceived,
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
        if c.state == RState::SynReceived {
            if seg.has(flags::SYN) || !seg.has(flags::ACK) || seg.ack != c.snd_nxt {
                self.counters.unexpected += 1;
                return None;
            }
            c.state = RState::Established;
            self.counters.handshakes_completed += 1;
        }
        let end = seg.seq.wrapping_add(seg.len);
        let reply = match c.state {
            RState::Established => {
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
                    c.state = RState::LastAck;
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
            RState::LastAck => {
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
            RState::SynReceived => None,
        };
        self.conns.insert(key, c);
        let h = reply?;
        self.answer(out, seg, h)
    }

    fn header(&self, c: &RConn, fl: u8) -> TcpHeader<'static> {
        TcpHeader {
            seq: c.snd_nxt,
            ack: c.rcv_nxt,
            flags: fl,
            window: WINDOW,
            options: &[],
        }
    }

    fn syn_ack(&self, out: &mut [u8], seg: &Segment, c: &RConn) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::Ipv4Addr;

    use fastables_conntrack::format::format_entry;
    use fastables_conntrack::{PacketFacts, Table, TableConfig, Track};

    use super::*;
    use crate::frame::Proto;
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
        let t0 = 5 * SEC;
        assert_eq!(g.next_frame(t0, &mut b, 0), Sent::Syn(62));
        let first = parse_segment(&b[..62]).unwrap();
        assert!(!g.timer_due(t0 + SEC - 1));
        assert_eq!(g.retransmit(t0 + SEC - 1, &mut b), None);
        assert_eq!(g.retransmit(t0 + SEC, &mut b), Some(62));
        assert_eq!(parse_segment(&b[..62]).unwrap(), first, "the same SYN");
        assert_eq!(g.retransmit(t0 + SEC, &mut b), None);
        assert_eq!(g.retransmit(t0 + 3 * SEC - 1, &mut b), None);
        assert_eq!(g.retransmit(t0 + 3 * SEC, &mut b), Some(62));
        assert_eq!(g.retransmit(t0 + 7 * SEC - 1, &mut b), None);
        assert_eq!(g.state(0), FlowState::SynSent);
        assert!(g.can_send());
        assert_eq!(g.retransmit(t0 + 7 * SEC, &mut b), None);
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
        assert!(!g.timer_due(t0 + 100 * SEC));
    }

    #[test]
    fn a_syn_ack_after_the_handshake_failed_gets_a_rst() {
        let mut w = Wire::new(tcp_gen(space("1000"), FlowMode::Fixed(1), 1));
        let (_, syn) = w.next(0);
        let mut b = vec![0u8; 2048];
        for at in [1, 3, 7] {
            w.now = 1_000_000_000 + at * SEC;
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
        w.now += SEC;
        let mut b = vec![0u8; 2048];
        let n = w.gen.retransmit(w.now, &mut b).unwrap();
        w.now += 500_000;
        w.send(b[..n].to_vec());
        assert_eq!(w.gen.state(0), FlowState::Established);
        // hdrhistogram: three significant digits.
        let max = w.gen.setup_latency().max();
        assert!(max.abs_diff(1_000_500_000) < 1_000_000, "{max}");
        // The stale timer of the SYN does nothing.
        assert_eq!(w.gen.retransmit(w.now + 10 * SEC, &mut b), None);
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
        let flows = flows_needed(&sp, FlowMode::NewPerSecond(10), Some(SEC)).unwrap();
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
            flows_needed(&sp, FlowMode::NewPerSecond(1000), Some(5 * SEC + 1)),
            Ok(5002)
        );
        assert_eq!(
            flows_needed(&sp, FlowMode::NewPerSecond(1_000_000), Some(SEC)),
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
}
