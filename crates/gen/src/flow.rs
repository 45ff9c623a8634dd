//! The flow space: which 4-tuples the generator sends, and in which order.
//!
//! A [`FlowSpace`] is the cross product of an inclusive range each of source
//! and destination addresses and ports; [`FlowSpace::tuple`] numbers its
//! tuples `0..size()` (source port fastest, then destination port, source
//! address, destination address), so that a flow is an index: whatever keeps
//! per-flow state (a later TCP handshake mode, conntrack filling) can keep it
//! in arrays indexed by flow. [`Flows`] picks the flow of each packet
//! ([`FlowMode`]): the whole space in turn, a fixed set, or new flows at a
//! rate. Nothing here reads a clock: the caller passes `now`.

use std::net::Ipv4Addr;
use std::str::FromStr;

/// One 4-tuple (the protocol is the generator's, for every flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// An inclusive range `lo..=hi`, `lo <= hi`, as given on the command line:
/// `A` or `A-B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span<T> {
    /// First value.
    pub lo: T,
    /// Last value (included).
    pub hi: T,
}

impl<T: Copy> Span<T> {
    /// The single value `v`.
    pub fn one(v: T) -> Span<T> {
        Span { lo: v, hi: v }
    }
}

/// Parses `A` or `A-B` (`A <= B`); the error names the text and what is wrong.
fn parse_span<T: FromStr + PartialOrd + Copy>(s: &str, what: &str) -> Result<Span<T>, String> {
    let one = |x: &str| {
        x.trim()
            .parse::<T>()
            .map_err(|_| format!("`{s}`: `{}` is not {what}", x.trim()))
    };
    let span = match s.split_once('-') {
        Some((a, b)) => Span {
            lo: one(a)?,
            hi: one(b)?,
        },
        None => Span::one(one(s)?),
    };
    if span.lo > span.hi {
        return Err(format!(
            "`{s}`: the range is reversed (the first value must not be above the last)"
        ));
    }
    Ok(span)
}

impl FromStr for Span<Ipv4Addr> {
    type Err = String;
    /// `10.0.0.1` or `10.0.0.1-10.0.0.200`.
    fn from_str(s: &str) -> Result<Self, String> {
        parse_span(s, "an IPv4 address")
    }
}

impl FromStr for Span<u16> {
    type Err = String;
    /// `53` or `1024-65535`.
    fn from_str(s: &str) -> Result<Self, String> {
        parse_span(s, "a port (0-65535)")
    }
}

fn span_len_u32(s: Span<Ipv4Addr>) -> u64 {
    u64::from(u32::from(s.hi) - u32::from(s.lo)) + 1
}

fn span_len_u16(s: Span<u16>) -> u64 {
    u64::from(s.hi - s.lo) + 1
}

/// The cross product of the four ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSpace {
    /// Source addresses.
    pub src: Span<Ipv4Addr>,
    /// Destination addresses.
    pub dst: Span<Ipv4Addr>,
    /// Source ports.
    pub sport: Span<u16>,
    /// Destination ports.
    pub dport: Span<u16>,
}

impl FlowSpace {
    /// Number of tuples (up to 2^96, hence u128).
    pub fn size(&self) -> u128 {
        u128::from(span_len_u32(self.src))
            * u128::from(span_len_u32(self.dst))
            * u128::from(span_len_u16(self.sport))
            * u128::from(span_len_u16(self.dport))
    }

    /// Tuple number `i` (taken modulo [`FlowSpace::size`]).
    pub fn tuple(&self, i: u64) -> Tuple {
        let mut i = u128::from(i) % self.size();
        let mut digit = |len: u64| {
            let d = (i % u128::from(len)) as u64;
            i /= u128::from(len);
            d
        };
        let sport = digit(span_len_u16(self.sport));
        let dport = digit(span_len_u16(self.dport));
        let src = digit(span_len_u32(self.src));
        let dst = digit(span_len_u32(self.dst));
        Tuple {
            src: Ipv4Addr::from(u32::from(self.src.lo) + src as u32),
            dst: Ipv4Addr::from(u32::from(self.dst.lo) + dst as u32),
            sport: self.sport.lo + sport as u16,
            dport: self.dport.lo + dport as u16,
        }
    }

    /// The first tuple (the lowest of each range).
    pub fn first(&self) -> Tuple {
        self.tuple(0)
    }

    /// The number of tuple `t` in the space (the inverse of
    /// [`FlowSpace::tuple`]), `None` when it lies outside; numbers beyond
    /// `u64` are `None` too.
    pub fn index(&self, t: &Tuple) -> Option<u64> {
        let within = |v: u64, lo: u64, hi: u64| (lo..=hi).contains(&v).then(|| v - lo);
        let sport = within(
            u64::from(t.sport),
            u64::from(self.sport.lo),
            u64::from(self.sport.hi),
        )?;
        let dport = within(
            u64::from(t.dport),
            u64::from(self.dport.lo),
            u64::from(self.dport.hi),
        )?;
        let src = within(
            u64::from(u32::from(t.src)),
            u64::from(u32::from(self.src.lo)),
            u64::from(u32::from(self.src.hi)),
        )?;
        let dst = within(
            u64::from(u32::from(t.dst)),
            u64::from(u32::from(self.dst.lo)),
            u64::from(u32::from(self.dst.hi)),
        )?;
        let (ls, ld, la) = (
            u128::from(span_len_u16(self.sport)),
            u128::from(span_len_u16(self.dport)),
            u128::from(span_len_u32(self.src)),
        );
        let i = u128::from(sport)
            + ls * (u128::from(dport) + ld * (u128::from(src) + la * u128::from(dst)));
        u64::try_from(i).ok()
    }
}

/// How the flow of each packet is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowMode {
    /// Every tuple of the space in turn, then again.
    Cycle,
    /// The first N tuples of the space in turn (`--flows N`).
    Fixed(u64),
    /// N new tuples per second, each packet otherwise on one of the flows
    /// started so far, in turn (`--new-flows-rate N`).
    NewPerSecond(u64),
}

/// Why a flow mode does not fit the space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// More flows asked than the space has.
    #[error("--flows {flows}: the flow space (--src x --dst x --sport x --dport) has only {size} tuples; widen a range")]
    TooManyFlows {
        /// Flows asked.
        flows: u64,
        /// Tuples in the space.
        size: u128,
    },
    /// Zero flows or a zero rate.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// `--proto tcp` keeps state per flow, for at most `max` flows.
    #[error("--proto tcp keeps a connection per flow, at most {max}: this run would use {flows} (give --flows N, narrow a range, or a --duration for --new-flows-rate)")]
    TcpTooManyFlows {
        /// Flows the run would use.
        flows: u128,
        /// The most.
        max: u64,
    },
}

/// Picks the flow of each packet: the sans-IO core of the flow options.
#[derive(Debug, Clone)]
pub struct Flows {
    space: FlowSpace,
    mode: FlowMode,
    /// Tuples the mode cycles over (Cycle: the space, saturated at u64).
    period: u64,
    /// Packets picked.
    picked: u64,
    /// Distinct flows used so far (NewPerSecond: started).
    started: u64,
    /// NewPerSecond: packets that were not a new flow.
    repeats: u64,
    /// NewPerSecond: time of the first packet.
    t0: Option<u64>,
}

impl Flows {
    /// Checks `mode` against `space`.
    pub fn new(space: FlowSpace, mode: FlowMode) -> Result<Flows, FlowError> {
        let size = space.size();
        let whole = u64::try_from(size).unwrap_or(u64::MAX);
        let period = match mode {
            FlowMode::Cycle => whole,
            FlowMode::Fixed(0) => return Err(FlowError::Zero("--flows")),
            FlowMode::Fixed(n) if u128::from(n) > size => {
                return Err(FlowError::TooManyFlows { flows: n, size })
            }
            FlowMode::Fixed(n) => n,
            FlowMode::NewPerSecond(0) => return Err(FlowError::Zero("--new-flows-rate")),
            FlowMode::NewPerSecond(_) => whole,
        };
        Ok(Flows {
            space,
            mode,
            period,
            picked: 0,
            started: 0,
            repeats: 0,
            t0: None,
        })
    }

    /// The flow of the next packet, sent at `now_ns`: its index and tuple.
    pub fn next(&mut self, now_ns: u64) -> (u64, Tuple) {
        let i = match self.mode {
            FlowMode::Cycle | FlowMode::Fixed(_) => {
                let i = self.picked % self.period;
                self.started = self.started.max(i + 1);
                i
            }
            FlowMode::NewPerSecond(rate) => {
                let t0 = *self.t0.get_or_insert(now_ns);
                // Flows due by now: one at t0, then `rate` a second.
                let due =
                    1 + u128::from(now_ns.saturating_sub(t0)) * u128::from(rate) / 1_000_000_000;
                if u128::from(self.started) < due && self.started < self.period {
                    self.started += 1;
                    self.started - 1
                } else {
                    // Between new flows: the flows started so far, in turn.
                    self.repeats += 1;
                    (self.repeats - 1) % self.started.max(1)
                }
            }
        };
        self.picked += 1;
        (i, self.space.tuple(i))
    }

    /// Distinct flows used so far.
    pub fn flows_used(&self) -> u64 {
        self.started
    }

    /// NewPerSecond: every tuple of the space has been started, so no new
    /// flow comes any more.
    pub fn exhausted(&self) -> bool {
        matches!(self.mode, FlowMode::NewPerSecond(_)) && self.started >= self.period
    }

    /// The mode.
    pub fn mode(&self) -> FlowMode {
        self.mode
    }

    /// The space.
    pub fn space(&self) -> &FlowSpace {
        &self.space
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn space(src: &str, dst: &str, sport: &str, dport: &str) -> FlowSpace {
        FlowSpace {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: sport.parse().unwrap(),
            dport: dport.parse().unwrap(),
        }
    }

    #[test]
    fn ranges_parse_and_bad_ones_are_named() {
        let a: Span<Ipv4Addr> = "10.0.0.1-10.0.0.9".parse().unwrap();
        assert_eq!(
            (a.lo, a.hi),
            ("10.0.0.1".parse().unwrap(), "10.0.0.9".parse().unwrap())
        );
        let p: Span<u16> = "53".parse().unwrap();
        assert_eq!(p, Span::one(53));
        assert_eq!(
            "9-1".parse::<Span<u16>>().unwrap_err(),
            "`9-1`: the range is reversed (the first value must not be above the last)"
        );
        assert_eq!(
            "1-70000".parse::<Span<u16>>().unwrap_err(),
            "`1-70000`: `70000` is not a port (0-65535)"
        );
        assert_eq!(
            "10.0.0.300".parse::<Span<Ipv4Addr>>().unwrap_err(),
            "`10.0.0.300`: `10.0.0.300` is not an IPv4 address"
        );
    }

    #[test]
    fn the_cross_product_is_enumerated_once_each() {
        let s = space(
            "10.0.0.1-10.0.0.3",
            "192.0.2.7-192.0.2.8",
            "1000-1004",
            "53-54",
        );
        assert_eq!(s.size(), 3 * 2 * 5 * 2);
        let all: Vec<Tuple> = (0..60).map(|i| s.tuple(i)).collect();
        let set: HashSet<Tuple> = all.iter().copied().collect();
        assert_eq!(set.len(), 60, "every index gives another tuple");
        for t in &all {
            assert!((1000..=1004).contains(&t.sport) && (53..=54).contains(&t.dport));
            assert!(
                u32::from(t.src) >= u32::from(s.src.lo) && u32::from(t.src) <= u32::from(s.src.hi)
            );
            assert!(
                u32::from(t.dst) >= u32::from(s.dst.lo) && u32::from(t.dst) <= u32::from(s.dst.hi)
            );
        }
        // Source port fastest, then destination port, source, destination.
        assert_eq!(all[1].sport, 1001);
        assert_eq!((all[5].sport, all[5].dport), (1000, 54));
        assert_eq!(all[10].src, "10.0.0.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(all[30].dst, "192.0.2.8".parse::<Ipv4Addr>().unwrap());
        // Wraps around.
        assert_eq!(s.tuple(60), all[0]);
    }

    #[test]
    fn the_whole_space_has_no_overflow() {
        let s = space(
            "0.0.0.0-255.255.255.255",
            "0.0.0.0-255.255.255.255",
            "0-65535",
            "0-65535",
        );
        assert_eq!(s.size(), 1u128 << 96);
        let t = s.tuple(u64::MAX);
        assert_eq!((t.sport, t.dport), (65535, 65535));
        assert_eq!(t.src, Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(t.dst, Ipv4Addr::new(0, 0, 0, 0));
    }

    #[test]
    fn cycle_and_fixed_modes_repeat_their_flows() {
        let s = space("10.0.0.1", "10.0.0.2", "1-10", "9");
        let mut cycle = Flows::new(s, FlowMode::Cycle).unwrap();
        let got: Vec<u64> = (0..25).map(|_| cycle.next(0).0).collect();
        assert_eq!(got, (0..25).map(|i| i % 10).collect::<Vec<_>>());
        assert_eq!(cycle.flows_used(), 10);
        let mut fixed = Flows::new(s, FlowMode::Fixed(3)).unwrap();
        let got: HashSet<Tuple> = (0..100).map(|_| fixed.next(0).1).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(fixed.flows_used(), 3);
        assert_eq!(
            Flows::new(s, FlowMode::Fixed(11)).unwrap_err().to_string(),
            "--flows 11: the flow space (--src x --dst x --sport x --dport) has only 10 tuples; widen a range"
        );
        assert_eq!(
            Flows::new(s, FlowMode::Fixed(0)).unwrap_err(),
            FlowError::Zero("--flows")
        );
    }

    #[test]
    fn new_flows_come_at_their_rate_in_virtual_time() {
        let s = space("10.0.0.1", "10.0.0.2", "1-60000", "9");
        let mut f = Flows::new(s, FlowMode::NewPerSecond(100)).unwrap();
        let mut seen = HashSet::new();
        // 10 000 packets over 2 s (one every 200 us).
        let mut new_at = Vec::new();
        for k in 0..10_000u64 {
            let now = 5_000_000_000 + k * 200_000;
            let (i, t) = f.next(now);
            if seen.insert(t) {
                new_at.push(now);
                assert_eq!(i, seen.len() as u64 - 1, "new flows take the next index");
            }
        }
        // One at the start, then 100 a second: 201 over 2 s (to 1.9998 s: 200).
        assert_eq!(seen.len(), 200);
        assert_eq!(f.flows_used(), 200);
        // The 101st flow starts 1 s after the first.
        assert_eq!(new_at[100] - new_at[0], 1_000_000_000);
        assert!(!f.exhausted());
    }

    #[test]
    fn new_flows_stop_when_the_space_is_used_up() {
        let s = space("10.0.0.1", "10.0.0.2", "1-5", "9");
        let mut f = Flows::new(s, FlowMode::NewPerSecond(1_000_000)).unwrap();
        let got: HashSet<Tuple> = (0..1000).map(|k| f.next(k * 1_000_000).1).collect();
        assert_eq!(got.len(), 5);
        assert!(f.exhausted());
    }

    #[test]
    fn between_new_flows_packets_go_round_the_started_ones() {
        let s = space("10.0.0.1", "10.0.0.2", "1-100", "9");
        let mut f = Flows::new(s, FlowMode::NewPerSecond(1)).unwrap();
        // t = 0: flow 0 is new; then only flow 0 until 1 s.
        assert_eq!(f.next(0).0, 0);
        assert_eq!(f.next(10).0, 0);
        // 1 s: flow 1 is new; then 0 and 1 in turn.
        assert_eq!(f.next(1_000_000_000).0, 1);
        let next: HashSet<u64> = (0..4).map(|_| f.next(1_000_000_001).0).collect();
        assert_eq!(next, HashSet::from([0, 1]));
    }

    #[test]
    fn index_inverts_tuple() {
        let sp = space("10.0.0.1-10.0.0.3", "8.8.8.8-8.8.8.9", "1000-1009", "53-54");
        for i in 0..sp.size() as u64 {
            assert_eq!(sp.index(&sp.tuple(i)), Some(i));
        }
        let mut out = sp.tuple(0);
        out.sport = 999;
        assert_eq!(sp.index(&out), None);
    }
}
