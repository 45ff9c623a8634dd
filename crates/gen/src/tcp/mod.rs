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
//!
//! Files: `generator.rs` the generator's flows, `responder.rs` the
//! responder's connections, `tests.rs` the two against each other through
//! a strict conntrack; this one the segment format both read and write.

mod generator;
mod responder;
#[cfg(test)]
mod tests;

pub use generator::{flows_needed, Close, FlowState, Sent, TcpGen, TcpGenCounters, TcpReport};
pub use responder::{ResponderCounters, TcpResponder};

use fastables_packet::parse::{l4_checksum_ok, parse_frame, L4};
use fastables_packet::tcp::{option, TcpOptions};
use fastables_packet::MacAddr;

use crate::flow::Tuple;
use crate::NS_PER_SEC;

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
pub const SYN_RTO_NS: u64 = NS_PER_SEC;
/// SYN retransmissions before a handshake fails.
pub const SYN_RETRIES: u8 = 2;
/// The FIN retransmission timeout.
pub const FIN_RTO_NS: u64 = NS_PER_SEC;
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

/// splitmix64's finaliser: the initial sequence numbers' hash.
fn splitmix64(mut x: u64) -> u64 {
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
