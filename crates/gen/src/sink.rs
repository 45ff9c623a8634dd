//! The sink's accounting: which frames are the generator's, which sequence
//! numbers were lost, came late or twice, and the one-way latency. No I/O and
//! no clock: the caller passes each frame's bytes and the time it was
//! received at (`CLOCK_MONOTONIC`, shared by every namespace of a machine).
//!
//! Sequence numbers are tracked in a sliding bitmap of [`WINDOW`] numbers
//! behind the highest one seen, allocated once:
//! - above the highest: the numbers skipped are counted lost;
//! - inside the window, not seen yet: reordered (and no longer lost);
//! - inside the window, seen: a duplicate;
//! - further behind: `late` (too old to tell a duplicate from a late
//!   frame; it stays counted lost).
//!
//! The sink cannot see the loss of the last frames of a run (nothing comes
//! after them); [`Sink::finish`] adds them when the number sent is known.

use fastables_packet::parse::{l4_checksum_ok, parse_frame, L4};
use fastables_stats::Latency;

use crate::flow::Tuple;
use crate::payload::Stamp;

/// Sequence numbers the window remembers behind the highest one.
pub const WINDOW: u64 = 1 << 16;

/// What one sequence number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one expected (or the first, 0).
    InOrder,
    /// Above the next expected: this many were skipped.
    Gap(u64),
    /// Below the highest, inside the window, first time.
    Reordered,
    /// Below the highest, inside the window, seen before.
    Duplicate,
    /// More than [`WINDOW`] below the highest.
    Late,
}

/// The sliding bitmap: bit `s % WINDOW` says whether `s` was seen, for `s`
/// in `hi - WINDOW < s <= hi`.
#[derive(Debug, Clone)]
pub struct SeqWindow {
    bits: Vec<u64>,
    hi: Option<u64>,
}

impl Default for SeqWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl SeqWindow {
    /// An empty window (nothing seen; 0 is expected first).
    pub fn new() -> SeqWindow {
        SeqWindow {
            bits: vec![0; (WINDOW / 64) as usize],
            hi: None,
        }
    }

    /// The highest sequence number seen.
    pub fn highest(&self) -> Option<u64> {
        self.hi
    }

    fn slot(s: u64) -> (usize, u64) {
        let b = s % WINDOW;
        ((b / 64) as usize, 1u64 << (b % 64))
    }

    /// Forgets the slots of `from..=to` (they are about to be reused).
    fn clear(&mut self, from: u64, to: u64) {
        let n = to - from;
        if n >= WINDOW - 1 {
            self.bits.fill(0);
            return;
        }
        let (mut s, mut left) = (from, n + 1);
        while left > 0 {
            if s % 64 == 0 && left >= 64 {
                self.bits[Self::slot(s).0] = 0;
                s = s.wrapping_add(64);
                left -= 64;
            } else {
                let (w, m) = Self::slot(s);
                self.bits[w] &= !m;
                s = s.wrapping_add(1);
                left -= 1;
            }
        }
    }

    /// Records `s`.
    pub fn observe(&mut self, s: u64) -> Seen {
        let seen = match self.hi {
            None => {
                // The bitmap is all zero: nothing seen yet.
                self.hi = Some(s);
                if s == 0 {
                    Seen::InOrder
                } else {
                    Seen::Gap(s)
                }
            }
            Some(hi) if s > hi => {
                self.clear(hi + 1, s);
                self.hi = Some(s);
                match s - hi - 1 {
                    0 => Seen::InOrder,
                    gap => Seen::Gap(gap),
                }
            }
            Some(hi) if hi - s >= WINDOW => return Seen::Late,
            Some(_) => {
                let (w, m) = Self::slot(s);
                if self.bits[w] & m != 0 {
                    return Seen::Duplicate;
                }
                Seen::Reordered
            }
        };
        let (w, m) = Self::slot(s);
        self.bits[w] |= m;
        seen
    }
}

/// The sink's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkCounters {
    /// The generator's frames (with a stamp and a correct checksum),
    /// duplicates included.
    pub received: u64,
    /// Their bytes (frames without FCS).
    pub bytes: u64,
    /// Sequence numbers not received (skipped, and not come later inside
    /// the window; plus the tail after [`Sink::finish`]).
    pub lost: u64,
    /// Received after a higher sequence number.
    pub reordered: u64,
    /// Received again.
    pub duplicates: u64,
    /// Received more than [`WINDOW`] behind the highest.
    pub late: u64,
    /// Frames that are not the generator's.
    pub other: u64,
    /// Frames with the magic but a wrong L4 checksum (not trusted: not in
    /// `received`).
    pub bad_checksum: u64,
    /// Stamps from the future (a clock that is not this machine's
    /// `CLOCK_MONOTONIC`): no latency sample.
    pub clock_skew: u64,
}

/// The sink: counters, the window, the latency histograms.
#[derive(Debug, Clone, Default)]
pub struct Sink {
    counters: SinkCounters,
    window: SeqWindow,
    /// One-way latency since the start.
    latency: Latency,
    /// One-way latency since the last [`Sink::take_interval`].
    interval: Latency,
    /// The addresses and ports of the first frame received.
    first: Option<Tuple>,
}

impl Sink {
    /// An empty sink.
    pub fn new() -> Sink {
        Sink::default()
    }

    /// The counters.
    pub fn counters(&self) -> SinkCounters {
        self.counters
    }

    /// The latency since the start.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    /// The addresses and ports of the first generator frame received (as
    /// a router in between rewrote them).
    pub fn first_flow(&self) -> Option<Tuple> {
        self.first
    }

    /// The highest sequence number received.
    pub fn highest(&self) -> Option<u64> {
        self.window.highest()
    }

    /// Distinct sequence numbers received.
    pub fn unique(&self) -> u64 {
        self.counters.received - self.counters.duplicates
    }

    /// One received frame (Ethernet header on), received at `now_ns`.
    /// Never panics, whatever the bytes.
    pub fn frame(&mut self, frame: &[u8], now_ns: u64) {
        match stamp_of(frame) {
            Recognised::Stamp(s, t) => {
                self.first.get_or_insert(t);
                self.stamp(s, frame.len(), now_ns)
            }
            Recognised::BadChecksum => self.counters.bad_checksum += 1,
            Recognised::Other => self.counters.other += 1,
        }
    }

    /// The accounting of one trusted stamp of a `len`-byte frame.
    pub fn stamp(&mut self, s: Stamp, len: usize, now_ns: u64) {
        let c = &mut self.counters;
        c.received += 1;
        c.bytes += len as u64;
        match self.window.observe(s.seq) {
            Seen::InOrder => {}
            Seen::Gap(n) => c.lost = c.lost.saturating_add(n),
            Seen::Reordered => {
                c.reordered += 1;
                c.lost = c.lost.saturating_sub(1);
            }
            Seen::Duplicate => c.duplicates += 1,
            Seen::Late => c.late += 1,
        }
        if now_ns >= s.ts_ns {
            self.latency.record(now_ns - s.ts_ns);
            self.interval.record(now_ns - s.ts_ns);
        } else {
            c.clock_skew += 1;
        }
    }

    /// The latency since the last call (for a progress line), and a fresh
    /// interval.
    pub fn take_interval(&mut self) -> Latency {
        let l = self.interval.clone();
        self.interval.reset();
        l
    }

    /// The end of a run of which `sent` frames were sent: the sequence
    /// numbers above the highest received are lost too.
    pub fn finish(&mut self, sent: u64) {
        let next = self.window.highest().map_or(0, |h| h.saturating_add(1));
        self.counters.lost = self.counters.lost.saturating_add(sent.saturating_sub(next));
    }
}

/// What a frame is to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognised {
    /// The generator's, with this stamp, in this flow.
    Stamp(Stamp, Tuple),
    /// A stamp, but the L4 checksum is wrong.
    BadChecksum,
    /// Anything else.
    Other,
}

/// Finds the stamp of an IPv4 UDP or TCP frame and checks its L4 checksum.
pub fn stamp_of(frame: &[u8]) -> Recognised {
    let Ok(p) = parse_frame(frame) else {
        return Recognised::Other;
    };
    let (Some(ip), Some(l4)) = (p.ipv4(), p.l4_range()) else {
        return Recognised::Other;
    };
    let (header, sport, dport) = match ip.l4 {
        L4::Udp {
            src_port, dst_port, ..
        } => (fastables_packet::udp::HEADER_LEN, src_port, dst_port),
        L4::Tcp {
            header_len,
            src_port,
            dst_port,
            ..
        } if usize::from(header_len) >= 20 => (usize::from(header_len), src_port, dst_port),
        _ => return Recognised::Other,
    };
    if ip.is_fragment() {
        return Recognised::Other;
    }
    let data = frame
        .get(l4)
        .and_then(|seg| seg.get(header..))
        .unwrap_or(&[]);
    match Stamp::decode(data) {
        None => Recognised::Other,
        Some(s) if l4_checksum_ok(frame, &p) => Recognised::Stamp(
            s,
            Tuple {
                src: ip.src,
                dst: ip.dst,
                sport,
                dport,
            },
        ),
        Some(_) => Recognised::BadChecksum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_of(seqs: &[u64]) -> Sink {
        let mut s = Sink::new();
        for &seq in seqs {
            s.stamp(Stamp { seq, ts_ns: 0 }, 60, 1000);
        }
        s
    }

    #[test]
    fn loss_reorder_and_duplicates_are_counted() {
        let s = sink_of(&[0, 1, 2, 4, 3, 3, 7]);
        let c = s.counters();
        assert_eq!(
            (c.received, c.lost, c.reordered, c.duplicates, c.late),
            (7, 2, 1, 1, 0),
            "{c:?}"
        );
        assert_eq!(s.unique(), 6);
        assert_eq!(s.highest(), Some(7));
        assert_eq!(c.bytes, 7 * 60);
    }

    #[test]
    fn the_window_answers_as_a_set_would() {
        // Against a plain set of everything seen, on a pseudo-random
        // sequence with gaps, repeats and reordering inside the window.
        let mut w = SeqWindow::new();
        let mut seen = std::collections::HashSet::new();
        let mut hi: Option<u64> = None;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut base = 0u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            base += x % 3;
            let s = base.saturating_sub((x >> 8) % 2000) + (x >> 20) % 5;
            let want = match hi {
                None if s == 0 => Seen::InOrder,
                None => Seen::Gap(s),
                Some(h) if s == h + 1 => Seen::InOrder,
                Some(h) if s > h => Seen::Gap(s - h - 1),
                Some(h) if h - s >= WINDOW => Seen::Late,
                Some(_) if seen.contains(&s) => Seen::Duplicate,
                Some(_) => Seen::Reordered,
            };
            assert_eq!(w.observe(s), want, "seq {s} after highest {hi:?}");
            if want != Seen::Late {
                seen.insert(s);
            }
            hi = Some(hi.map_or(s, |h| h.max(s)));
        }
    }

    #[test]
    fn big_jumps_clear_the_window() {
        let mut w = SeqWindow::new();
        assert_eq!(w.observe(5), Seen::Gap(5));
        assert_eq!(w.observe(5 + 3 * WINDOW), Seen::Gap(3 * WINDOW - 1));
        // The jump cleared every slot: 5 + 2 WINDOW + 1 is new.
        assert_eq!(w.observe(5 + 2 * WINDOW + 1), Seen::Reordered);
        assert_eq!(w.observe(5), Seen::Late);
        assert_eq!(
            w.observe(u64::MAX),
            Seen::Gap(u64::MAX - 5 - 3 * WINDOW - 1)
        );
        assert_eq!(w.observe(u64::MAX - 1), Seen::Reordered);
        assert_eq!(w.observe(u64::MAX), Seen::Duplicate);
    }

    #[test]
    fn late_frames_far_behind_are_not_taken_for_duplicates() {
        let mut s = sink_of(&[0]);
        s.stamp(
            Stamp {
                seq: WINDOW + 1,
                ts_ns: 0,
            },
            60,
            1000,
        );
        s.stamp(Stamp { seq: 0, ts_ns: 0 }, 60, 1000);
        let c = s.counters();
        assert_eq!((c.lost, c.late, c.duplicates), (WINDOW, 1, 0));
    }

    #[test]
    fn finish_counts_the_lost_tail() {
        let mut s = sink_of(&[0, 1, 2]);
        s.finish(10);
        assert_eq!(s.counters().lost, 7);
        let mut none = Sink::new();
        none.finish(4);
        assert_eq!(none.counters().lost, 4);
        let mut all = sink_of(&[0, 1, 2]);
        all.finish(3);
        assert_eq!(all.counters().lost, 0);
    }

    #[test]
    fn latency_comes_from_the_stamps_and_an_injected_clock() {
        let mut s = Sink::new();
        // 100 frames of 10 us, 10 of 1 ms, received at a fixed `now`.
        let now = 50_000_000_000;
        for seq in 0..110u64 {
            let lat = if seq < 100 { 10_000 } else { 1_000_000 };
            s.stamp(
                Stamp {
                    seq,
                    ts_ns: now - lat,
                },
                60,
                now,
            );
        }
        // A stamp from the future: counted, no sample.
        s.stamp(
            Stamp {
                seq: 110,
                ts_ns: now + 1,
            },
            60,
            now,
        );
        let l = s.latency();
        assert_eq!(l.count(), 110);
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(l.quantile(0.5), 10_000), "p50 {}", l.quantile(0.5));
        assert!(
            near(l.quantile(0.99), 1_000_000),
            "p99 {}",
            l.quantile(0.99)
        );
        assert!(near(l.max(), 1_000_000));
        assert_eq!(s.counters().clock_skew, 1);
        let i = s.take_interval();
        assert_eq!(i.count(), 110);
        assert_eq!(s.take_interval().count(), 0);
        assert_eq!(s.latency().count(), 110);
    }
}
