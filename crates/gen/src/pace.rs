//! Pacing: a token bucket on the caller's monotonic clock, asked once per
//! batch (never a clock read or a sleep per packet).
//!
//! Credit accrues at `rate` packets a second, in nano-packets (integer, no
//! drift), and is capped at [`BURST_NS`] worth of packets (at least one), so
//! that a generator that was held up (a busy core) catches up at most that
//! much at once instead of sending a burst of everything it missed.

/// The most credit kept, as time at the rate: 2 ms.
pub const BURST_NS: u64 = 2_000_000;

const NANO: u128 = 1_000_000_000;

/// A token bucket; `rate == 0` is "as fast as possible".
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u64,
    /// Nano-packets available.
    credit: u128,
    /// The cap of `credit`.
    cap: u128,
    last_ns: Option<u64>,
}

impl Pacer {
    /// A bucket for `rate` packets per second (0: unlimited), with one
    /// packet's credit to start with.
    pub fn new(rate: u64) -> Pacer {
        let burst = (u128::from(rate) * u128::from(BURST_NS) / NANO).max(1);
        Pacer {
            rate,
            credit: NANO,
            // Whole packets up to the burst, plus the fraction of the next
            // (so that a slow caller loses no credit to rounding).
            cap: burst * NANO + (NANO - 1),
            last_ns: None,
        }
    }

    /// The rate, packets per second (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    fn accrue(&mut self, now_ns: u64) {
        let last = *self.last_ns.get_or_insert(now_ns);
        if now_ns > last {
            self.credit =
                (self.credit + u128::from(now_ns - last) * u128::from(self.rate)).min(self.cap);
            self.last_ns = Some(now_ns);
        }
    }

    /// How many of `want` packets may go at `now_ns`; they are taken from
    /// the credit.
    pub fn take(&mut self, now_ns: u64, want: usize) -> usize {
        if self.rate == 0 {
            return want;
        }
        self.accrue(now_ns);
        let n = (self.credit / NANO).min(want as u128) as usize;
        self.credit -= n as u128 * NANO;
        n
    }

    /// Nanoseconds from `now_ns` until the next packet may go (0: now).
    pub fn wait_ns(&mut self, now_ns: u64) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        self.accrue(now_ns);
        if self.credit >= NANO {
            return 0;
        }
        let missing = NANO - self.credit;
        u64::try_from(missing.div_ceil(u128::from(self.rate))).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a sender that asks for `batch` packets every `step_ns` of
    /// virtual time for `secs` seconds; returns the packets sent.
    fn run(p: &mut Pacer, batch: usize, step_ns: u64, secs: u64) -> u64 {
        let mut sent = 0u64;
        let mut now = 1_000_000_000u64;
        let end = now + secs * 1_000_000_000;
        while now < end {
            sent += p.take(now, batch) as u64;
            now += step_ns;
        }
        sent
    }

    #[test]
    fn the_rate_is_kept_whatever_the_batch_and_step() {
        for (rate, batch, step) in [
            (1000u64, 64usize, 100_000u64),
            (1000, 1, 1_000),
            (1_000_000, 64, 10_000),
            (1_000_000, 64, 50_000),
            (7, 64, 3_000_000),
        ] {
            let sent = run(&mut Pacer::new(rate), batch, step, 10);
            // 10 s at the rate, plus the first packet's credit.
            let want = rate * 10;
            assert!(
                sent >= want - want / 500 && sent <= want + 1,
                "rate {rate} batch {batch} step {step}: {sent} sent, {want} wanted"
            );
        }
    }

    #[test]
    fn a_stall_catches_up_at_most_the_burst() {
        let mut p = Pacer::new(1_000_000);
        assert_eq!(p.take(0, 64), 1);
        // 1 s without asking: 1e6 packets of credit, capped at 2 ms worth.
        let mut after = 0;
        for _ in 0..100 {
            after += p.take(1_000_000_000, 64);
        }
        assert_eq!(after, 2000);
    }

    #[test]
    fn wait_says_when_the_next_packet_is_due() {
        let mut p = Pacer::new(1000);
        assert_eq!(p.wait_ns(0), 0);
        assert_eq!(p.take(0, 10), 1);
        assert_eq!(p.wait_ns(0), 1_000_000);
        assert_eq!(p.wait_ns(400_000), 600_000);
        assert_eq!(p.take(999_999, 10), 0);
        assert_eq!(p.take(1_000_000, 10), 1);
    }

    #[test]
    fn zero_is_unlimited() {
        let mut p = Pacer::new(0);
        assert_eq!(p.take(0, 64), 64);
        assert_eq!(p.take(0, 64), 64);
        assert_eq!(p.wait_ns(0), 0);
    }

    #[test]
    fn a_clock_going_back_gives_no_credit() {
        let mut p = Pacer::new(1000);
        assert_eq!(p.take(5_000_000, 10), 1);
        assert_eq!(p.take(1_000_000, 10), 0);
        assert_eq!(p.take(5_999_999, 10), 0);
        assert_eq!(p.take(6_000_000, 10), 1);
    }
}
