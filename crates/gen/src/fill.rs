//! The conntrack-limit test (`fastables gen --conntrack-fill`), sans IO:
//! what to send when, and what the echoes say.
//!
//! A set of `established` flows (the first tuples of the flow space) sends
//! a packet each every `keepalive` from the start; the sink (`gen --sink
//! --echo`) sends every packet back, so the router sees both directions and,
//! after the kernel's 2 s (`nf_conntrack_proto_udp`'s stream timeout), marks
//! those connections ASSURED. After `warmup`, new flows start at `new_rate`
//! a second, each with one packet on a tuple never used before (the tuples
//! after the established ones). Each echo says which packet came back: a
//! new flow whose packet returns passed the router (its connection was
//! created); an established flow that keeps answering survived the fill.
//! The report gives, per second of the fill, the new flows sent and
//! answered, the established flows still answering, and their round trip.

use fastables_stats::Latency;

use crate::flow::{FlowSpace, Tuple};
use crate::NS_PER_SEC;

/// The plan of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillPlan {
    /// Established flows.
    pub established: u64,
    /// A packet per established flow every this many ns.
    pub keepalive_ns: u64,
    /// New flows per second during the fill.
    pub new_rate: u64,
    /// Established flows only, before the fill (ns).
    pub warmup_ns: u64,
}

impl FillPlan {
    /// Packets per second of the established flows.
    pub fn established_pps(&self) -> u64 {
        (u128::from(self.established) * u128::from(NS_PER_SEC)
            / u128::from(self.keepalive_ns.max(1))) as u64
    }
}

/// One second of the fill, by the send time of the packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FillSecond {
    /// New flows sent.
    pub new_sent: u64,
    /// Of them, answered.
    pub new_answered: u64,
    /// Established flows that answered a packet sent in this second.
    pub established_answering: u64,
}

/// What the echoes said.
#[derive(Debug)]
pub struct Fill {
    plan: FillPlan,
    space: FlowSpace,
    t0: u64,
    /// Per sequence number: a new flow's packet (else an established one's).
    is_new: Vec<u64>,
    seconds: Vec<FillSecond>,
    /// Per established flow: the second (of the fill) it last answered, +1.
    est_seen: Vec<u32>,
    /// Per established flow: the last time it answered.
    est_last: Vec<u64>,
    rtt: Latency,
    echoes: u64,
    strangers: u64,
}

impl Fill {
    /// A fill starting at `t0` (the generator's first packet).
    pub fn new(plan: FillPlan, space: FlowSpace, t0: u64) -> Fill {
        let k = usize::try_from(plan.established).unwrap_or(usize::MAX);
        Fill {
            plan,
            space,
            t0,
            is_new: Vec::new(),
            seconds: Vec::new(),
            est_seen: vec![0; k],
            est_last: vec![0; k],
            rtt: Latency::new(),
            echoes: 0,
            strangers: 0,
        }
    }

    /// The plan.
    pub fn plan(&self) -> &FillPlan {
        &self.plan
    }

    /// When the fill (the new flows) starts.
    pub fn fill_start(&self) -> u64 {
        self.t0 + self.plan.warmup_ns
    }

    fn second_of(&self, ts: u64) -> Option<usize> {
        ts.checked_sub(self.fill_start())
            .map(|d| usize::try_from(d / NS_PER_SEC).unwrap_or(usize::MAX))
    }

    fn second_mut(&mut self, s: usize) -> &mut FillSecond {
        if self.seconds.len() <= s {
            self.seconds.resize(s + 1, FillSecond::default());
        }
        &mut self.seconds[s]
    }

    /// Packet `seq` was sent at `ts`; `new`: a new flow's.
    pub fn sent(&mut self, seq: u64, ts: u64, new: bool) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.is_new.len() <= w {
            self.is_new.resize(w + 1, 0);
        }
        if new {
            self.is_new[w] |= 1 << b;
            if let Some(s) = self.second_of(ts) {
                self.second_mut(s).new_sent += 1;
            }
        }
    }

    fn was_new(&self, seq: u64) -> bool {
        self.is_new
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// An echo came back at `now`: the packet `seq` stamped at `ts`, and the
    /// echo's tuple (the packet's, reversed).
    pub fn echo(&mut self, seq: u64, ts: u64, echo: &Tuple, now: u64) {
        self.echoes += 1;
        let original = Tuple {
            src: echo.dst,
            dst: echo.src,
            sport: echo.dport,
            dport: echo.sport,
        };
        if self.was_new(seq) {
            if let Some(s) = self.second_of(ts) {
                self.second_mut(s).new_answered += 1;
            }
            return;
        }
        let Some(i) = self
            .space
            .index(&original)
            .filter(|i| *i < self.plan.established)
        else {
            self.strangers += 1;
            return;
        };
        let i = i as usize;
        self.est_last[i] = self.est_last[i].max(now);
        if let Some(s) = self.second_of(ts) {
            self.rtt.record(now.saturating_sub(ts));
            let mark = s as u32 + 1;
            if self.est_seen[i] < mark {
                self.est_seen[i] = mark;
                self.second_mut(s).established_answering += 1;
            }
        }
    }

    /// The seconds of the fill so far.
    pub fn seconds(&self) -> &[FillSecond] {
        &self.seconds
    }

    /// Round trips of the established flows during the fill.
    pub fn rtt(&self) -> &Latency {
        &self.rtt
    }

    /// Established flows that answered within `window_ns` before `now`.
    pub fn established_alive(&self, now: u64, window_ns: u64) -> u64 {
        self.est_last
            .iter()
            .filter(|t| **t > 0 && now.saturating_sub(**t) <= window_ns)
            .count() as u64
    }

    /// Echoes received; those that matched no packet of the plan.
    pub fn echoes(&self) -> (u64, u64) {
        (self.echoes, self.strangers)
    }

    /// New flows answered in all.
    pub fn new_answered(&self) -> u64 {
        self.seconds.iter().map(|s| s.new_answered).sum()
    }

    /// New flows sent in all.
    pub fn new_sent(&self) -> u64 {
        self.seconds.iter().map(|s| s.new_sent).sum()
    }

    /// The first second (of those complete) in which fewer than half the new
    /// flows were answered, with the new flows answered before it: the fill
    /// level at which new flows stopped passing.
    pub fn limit(&self) -> Option<(usize, u64)> {
        let mut before = 0;
        for (i, s) in self.seconds.iter().enumerate() {
            if s.new_sent > 0 && s.new_answered * 2 < s.new_sent {
                return Some((i, before));
            }
            before += s.new_answered;
        }
        None
    }
}

/// Which flow the next packet goes to: established keepalives paced at
/// their rate, new flows at theirs after the warm-up.
#[derive(Debug, Clone)]
pub struct FillSchedule {
    plan: FillPlan,
    t0: u64,
    est_sent: u64,
    new_sent: u64,
}

/// A packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Established flow `i` (tuple `i` of the space).
    Established(u64),
    /// New flow `j` (tuple `established + j`).
    New(u64),
}

impl FillSchedule {
    /// A schedule starting at `t0`.
    pub fn new(plan: FillPlan, t0: u64) -> FillSchedule {
        FillSchedule {
            plan,
            t0,
            est_sent: 0,
            new_sent: 0,
        }
    }

    /// The next packet due at `now`, if any (keepalives first).
    pub fn next(&mut self, now: u64) -> Option<Next> {
        let el = u128::from(now.saturating_sub(self.t0));
        let est_due = 1 + el * u128::from(self.plan.established_pps()) / u128::from(NS_PER_SEC);
        if self.plan.established > 0 && u128::from(self.est_sent) < est_due {
            let i = self.est_sent % self.plan.established;
            self.est_sent += 1;
            return Some(Next::Established(i));
        }
        let fill = u128::from(now.saturating_sub(self.t0 + self.plan.warmup_ns));
        if now >= self.t0 + self.plan.warmup_ns {
            let new_due = 1 + fill * u128::from(self.plan.new_rate) / u128::from(NS_PER_SEC);
            if self.plan.new_rate > 0 && u128::from(self.new_sent) < new_due {
                self.new_sent += 1;
                return Some(Next::New(self.new_sent - 1));
            }
        }
        None
    }

    /// The tuple of a packet.
    pub fn tuple(&self, space: &FlowSpace, n: Next) -> Tuple {
        match n {
            Next::Established(i) => space.tuple(i),
            Next::New(j) => space.tuple(self.plan.established + j),
        }
    }
}

/// The final report's text.
pub fn report(f: &Fill, end: u64) -> String {
    use std::fmt::Write as _;
    let p = f.plan();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "conntrack fill: {} established flows (a packet each {} ms), new flows at {}/s after {} s",
        p.established,
        p.keepalive_ns / 1_000_000,
        p.new_rate,
        p.warmup_ns / NS_PER_SEC
    );
    let _ = writeln!(
        o,
        "second  new sent  answered     rate  established answering"
    );
    for (i, s) in f.seconds().iter().enumerate() {
        let rate = if s.new_sent > 0 {
            format!("{:.1}%", s.new_answered as f64 * 100.0 / s.new_sent as f64)
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            o,
            "{i:>6}  {:>8}  {:>8}  {rate:>7}  {:>10} of {}",
            s.new_sent, s.new_answered, s.established_answering, p.established
        );
    }
    let _ = writeln!(
        o,
        "new flows answered: {} of {}",
        f.new_answered(),
        f.new_sent()
    );
    match f.limit() {
        Some((s, n)) => {
            let _ = writeln!(
                o,
                "new flows stopped passing in second {s}, after {n} had passed (the table's fill)"
            );
        }
        None => {
            let _ = writeln!(o, "new flows kept passing to the end");
        }
    }
    let window = 3 * p.keepalive_ns.max(NS_PER_SEC / 10);
    let _ = writeln!(
        o,
        "established flows alive at the end: {} of {} (answered in the last {} ms)",
        f.established_alive(end, window),
        p.established,
        window / 1_000_000
    );
    let _ = writeln!(
        o,
        "established round trip during the fill: {}",
        f.rtt().summary()
    );
    let (e, s) = f.echoes();
    let _ = writeln!(o, "echoes: {e} ({s} matched no flow of the plan)");
    o
}

/// The final report as one JSON object.
pub fn report_json(f: &Fill, end: u64) -> String {
    let p = f.plan();
    let window = 3 * p.keepalive_ns.max(NS_PER_SEC / 10);
    let l = f.rtt();
    let us = |ns: u64| one_decimal(ns as f64 / 1e3);
    let report = FillReport {
        established: p.established,
        keepalive_ms: p.keepalive_ns / 1_000_000,
        new_rate: p.new_rate,
        warmup_s: p.warmup_ns / NS_PER_SEC,
        seconds: f.seconds(),
        new_sent: f.new_sent(),
        new_answered: f.new_answered(),
        limit: f.limit().map(|(second, passed_before)| FillLimit {
            second,
            passed_before,
        }),
        established_alive: f.established_alive(end, window),
        rtt_us: RoundTrip {
            p50: us(l.quantile(0.5)),
            p99: us(l.quantile(0.99)),
            max: us(l.max()),
            samples: l.count(),
        },
    };
    serde_json::to_string(&report).unwrap_or_default()
}

/// `x` as the text shows it, to one decimal.
fn one_decimal(x: f64) -> f64 {
    format!("{x:.1}").parse().unwrap_or(x)
}

/// [`report_json`]'s object.
#[derive(serde::Serialize)]
struct FillReport<'a> {
    established: u64,
    keepalive_ms: u64,
    new_rate: u64,
    warmup_s: u64,
    seconds: &'a [FillSecond],
    new_sent: u64,
    new_answered: u64,
    /// `null` when new flows kept passing.
    limit: Option<FillLimit>,
    established_alive: u64,
    rtt_us: RoundTrip,
}

/// The second new flows stopped passing in, and how many had passed.
#[derive(serde::Serialize)]
struct FillLimit {
    second: usize,
    passed_before: u64,
}

/// The established flows' round trip during the fill, microseconds.
#[derive(serde::Serialize)]
struct RoundTrip {
    p50: f64,
    p99: f64,
    max: f64,
    samples: u64,
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::flow::Span;

    fn space() -> FlowSpace {
        FlowSpace {
            src: Span::one(Ipv4Addr::new(172, 18, 0, 2)),
            dst: Span::one(Ipv4Addr::new(8, 8, 8, 8)),
            sport: Span {
                lo: 1024,
                hi: 65535,
            },
            dport: Span::one(9),
        }
    }

    fn plan() -> FillPlan {
        FillPlan {
            established: 10,
            keepalive_ns: 100_000_000,
            new_rate: 1000,
            warmup_ns: 3 * NS_PER_SEC,
        }
    }

    fn echo_of(t: &Tuple) -> Tuple {
        Tuple {
            src: t.dst,
            dst: t.src,
            sport: t.dport,
            dport: t.sport,
        }
    }

    #[test]
    fn the_schedule_keeps_alive_then_fills() {
        let p = plan();
        let mut s = FillSchedule::new(p, 0);
        let mut est = 0;
        let mut new = Vec::new();
        // 5 s, a decision every 100 us.
        for t in (0..5 * NS_PER_SEC).step_by(100_000) {
            while let Some(n) = s.next(t) {
                match n {
                    Next::Established(i) => {
                        assert!(i < 10);
                        est += 1;
                    }
                    Next::New(j) => {
                        assert!(t >= p.warmup_ns, "no new flow in the warm-up");
                        new.push(j);
                    }
                }
            }
        }
        // 100 keepalives a second for 5 s; 1000 new flows a second for 2 s.
        assert!((500..=501).contains(&est), "{est}");
        assert!((2000..=2001).contains(&new.len()), "{}", new.len());
        assert!(
            new.windows(2).all(|w| w[1] == w[0] + 1),
            "new tuples in turn"
        );
        let sp = space();
        assert_eq!(s.tuple(&sp, Next::New(0)), sp.tuple(10));
        assert_eq!(s.tuple(&sp, Next::Established(3)), sp.tuple(3));
    }

    #[test]
    fn echoes_count_new_flows_and_established_survivors() {
        let (p, sp) = (plan(), space());
        let mut f = Fill::new(p, sp, 0);
        let fill = p.warmup_ns;
        // Second 0 of the fill: 4 new flows, 3 answered; established 0..10
        // answer, except flow 7.
        for j in 0..4u64 {
            f.sent(100 + j, fill + 10, true);
        }
        for j in 0..3u64 {
            let t = sp.tuple(10 + j);
            f.echo(100 + j, fill + 10, &echo_of(&t), fill + 500);
        }
        for i in (0..10u64).filter(|i| *i != 7) {
            f.sent(i, fill + 20, false);
            f.echo(i, fill + 20, &echo_of(&sp.tuple(i)), fill + 1020);
            // Twice in the same second: counted once.
            f.echo(i, fill + 30, &echo_of(&sp.tuple(i)), fill + 1030);
        }
        // Second 1: 4 new flows, 1 answered.
        for j in 4..8u64 {
            f.sent(200 + j, fill + NS_PER_SEC + 10, true);
        }
        f.echo(
            204,
            fill + NS_PER_SEC + 10,
            &echo_of(&sp.tuple(14)),
            fill + NS_PER_SEC + 100,
        );
        // A stranger: a tuple outside the established ones, not a new flow's seq.
        f.echo(999, fill + 5, &echo_of(&sp.tuple(5000)), fill + 6);
        assert_eq!(
            f.seconds(),
            &[
                FillSecond {
                    new_sent: 4,
                    new_answered: 3,
                    established_answering: 9
                },
                FillSecond {
                    new_sent: 4,
                    new_answered: 1,
                    established_answering: 0
                }
            ]
        );
        assert_eq!(f.limit(), Some((1, 3)));
        assert_eq!(f.established_alive(fill + 1100, 1000), 9);
        assert_eq!(f.rtt().count(), 18);
        assert_eq!(f.echoes(), (23, 1));
        let text = report(&f, fill + 1100);
        assert!(
            text.contains("new flows stopped passing in second 1, after 3 had passed"),
            "{text}"
        );
        assert!(
            report_json(&f, fill + 1100).contains("\"limit\":{\"second\":1,\"passed_before\":3}")
        );
    }
}
