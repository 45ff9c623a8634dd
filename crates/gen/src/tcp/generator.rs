//! The generator's side of `--proto tcp`: one connection per flow (SYN,
//! data within the peer's window, close), the schedule that picks the flow
//! of the next paced frame, the SYN and FIN timers, and the report.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use fastables_packet::tcp::flags;
use fastables_packet::MacAddr;
use fastables_stats::Latency;

use super::{
    after, parse_segment, reversed, splitmix64, FIN_RETRIES, FIN_RTO_NS, MAX_FLOWS, NS_PER_SEC,
    SYN_OPTIONS, SYN_RETRIES, SYN_RTO_NS, SYN_WINDOW, WINDOW,
};
use crate::flow::{FlowError, FlowMode, FlowSpace};
use crate::frame::{FrameWriter, TcpHeader};
use crate::payload::Stamp;
use crate::report::LatencyReport;

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
struct FlowConnection {
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
    conns: Vec<FlowConnection>,
    /// Flows started.
    started: u64,
    t0: Option<u64>,
    /// Established flows, in the order they got there.
    established: Vec<u32>,
    /// The next position in `established` to send data on.
    next_established: usize,
    /// Handshakes waiting for a SYN-ACK.
    pending: u64,
    /// Established flows with data not acknowledged.
    unacked: u64,
    /// FINs waiting for the peer's.
    fin_waiting: u64,
    /// Closing: the next position in `established` to close.
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
            Some(d) => (u128::from(r) * u128::from(d)).div_ceil(u128::from(NS_PER_SEC)) + 1,
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
            conns: vec![FlowConnection::default(); n],
            started: 0,
            t0: None,
            established: Vec::with_capacity(n),
            next_established: 0,
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
        self.started < self.conns.len() as u64 || self.pending > 0 || !self.established.is_empty()
    }

    fn isn(&self, i: u64) -> u32 {
        splitmix64(self.nonce ^ i.wrapping_mul(0x0100_0000_01b3)) as u32
    }

    fn arm_timer(&mut self, i: usize, at: u64) {
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
                let d =
                    1 + u128::from(now.saturating_sub(t0)) * u128::from(r) / u128::from(NS_PER_SEC);
                u64::try_from(d).unwrap_or(u64::MAX).min(n)
            }
        };
        if self.started < due {
            let i = self.started as usize;
            let iss = self.isn(self.started);
            self.conns[i] = FlowConnection {
                state: FlowState::SynSent,
                iss,
                snd_una: iss,
                snd_nxt: iss.wrapping_add(1),
                syn_at: now,
                ..FlowConnection::default()
            };
            let Some(len) = self.syn(out, i) else {
                self.conns[i] = FlowConnection::default();
                return Sent::Nothing;
            };
            self.started += 1;
            self.pending += 1;
            self.counters.handshakes_started += 1;
            self.counters.control_sent += 1;
            self.arm_timer(i, now + SYN_RTO_NS);
            return Sent::Syn(len);
        }
        // A fixed set: data once every handshake is over.
        if (self.rate.is_none() && self.pending > 0) || self.established.is_empty() {
            return Sent::Nothing;
        }
        for _ in 0..self.established.len() {
            let i = self.established[self.next_established % self.established.len()] as usize;
            self.next_established = (self.next_established + 1) % self.established.len();
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
                    self.arm_timer(i, now + (SYN_RTO_NS << (c.tries + 1)));
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
                    self.arm_timer(i, now + FIN_RTO_NS);
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
        if let Some(p) = self.established.iter().position(|&f| f as usize == i) {
            self.established.remove(p);
            if self.next_established > p {
                self.next_established -= 1;
            }
            if let Some(at) = self.close_at.as_mut().filter(|at| **at > p) {
                *at -= 1;
            }
            if self.established.is_empty() {
                self.next_established = 0;
            } else {
                self.next_established %= self.established.len();
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
                self.established.push(i as u32);
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
        self.close_at.is_some_and(|p| p < self.established.len())
    }

    /// While closing: the next flow's FIN or RST (`how`), written into
    /// `out`; None when every flow has had its own.
    pub fn close_next(&mut self, now: u64, out: &mut [u8], how: Close) -> Option<usize> {
        let p = self.close_at?;
        let &i = self.established.get(p)?;
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
                self.arm_timer(i, now + FIN_RTO_NS);
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
