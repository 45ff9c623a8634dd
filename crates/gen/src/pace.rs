//! Pacing: a token bucket on the caller's monotonic clock, asked once per
//! batch (never a clock read or a sleep per packet).
//!
//! Credit accrues at `rate` packets a second, in nano-packets (integer, no
//! drift). Packets go in batches: a batch leaves once there is credit for a
//! whole one, or for [`HOLD_NS`] worth of packets at the rate when that is
//! less, so that the sender makes at most about 1000 TX kicks a second or
//! one per batch, never one per packet. Credit is capped at [`BURST_NS`]
//! worth of packets (at least a batch), so that a generator that was held
//! up (a busy core) catches up at most that much at once instead of sending
//! a burst of everything it missed.

use crate::NS_PER_SEC;

/// The most credit kept, as time at the rate: 2 ms.
pub const BURST_NS: u64 = 2_000_000;

/// The longest a batch waits to fill up, as time at the rate: 1 ms.
pub const HOLD_NS: u64 = 1_000_000;

/// [`NS_PER_SEC`] in the credit's width.
const NS_PER_SEC_WIDE: u128 = NS_PER_SEC as u128;

/// A token bucket; `rate == 0` is "as fast as possible".
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u64,
    /// Nano-packets available.
    credit: u128,
    /// The cap of `credit`.
    cap: u128,
    /// Packets a batch waits for (1 to the batch size).
    hold: u128,
    last_ns: Option<u64>,
}

impl Pacer {
    /// A bucket for `rate` packets per second (0: unlimited) sent in
    /// batches of up to `batch`, with credit for the first batch.
    pub fn new(rate: u64, batch: usize) -> Pacer {
        let per = |ns: u64| u128::from(rate) * u128::from(ns) / NS_PER_SEC_WIDE;
        let batch = batch.max(1) as u128;
        let hold = per(HOLD_NS).clamp(1, batch);
        Pacer {
            rate,
            credit: hold * NS_PER_SEC_WIDE,
            // Whole packets up to the burst, plus the fraction of the next
            // (so that a slow caller loses no credit to rounding).
            cap: per(BURST_NS).max(batch) * NS_PER_SEC_WIDE + (NS_PER_SEC_WIDE - 1),
            hold,
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

    /// The packets a batch of `want` waits for.
    fn need(&self, want: usize) -> u128 {
        self.hold.min(want as u128)
    }

    /// How many of `want` packets may go at `now_ns` (0 until the batch is
    /// due); they are taken from the credit.
    pub fn take(&mut self, now_ns: u64, want: usize) -> usize {
        if self.rate == 0 {
            return want;
        }
        self.accrue(now_ns);
        if self.credit / NS_PER_SEC_WIDE < self.need(want) {
            return 0;
        }
        let n = (self.credit / NS_PER_SEC_WIDE).min(want as u128) as usize;
        self.credit -= n as u128 * NS_PER_SEC_WIDE;
        n
    }

    /// Gives back `n` packets taken but not sent (up to the cap).
    pub fn refund(&mut self, n: usize) {
        if self.rate != 0 {
            self.credit = (self.credit + n as u128 * NS_PER_SEC_WIDE).min(self.cap);
        }
    }

    /// Nanoseconds from `now_ns` until a batch of `want` is due (0: now).
    pub fn wait_ns(&mut self, now_ns: u64, want: usize) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        self.accrue(now_ns);
        let need = self.need(want) * NS_PER_SEC_WIDE;
        if self.credit >= need {
            return 0;
        }
        let missing = need - self.credit;
        u64::try_from(missing.div_ceil(u128::from(self.rate))).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a sender that asks for `batch` packets every `step_ns` of
    /// virtual time for `secs` seconds; returns the packets sent and the
    /// sizes of the batches that went.
    fn run(p: &mut Pacer, batch: usize, step_ns: u64, secs: u64) -> (u64, Vec<usize>) {
        let mut sent = 0u64;
        let mut sizes = Vec::new();
        let mut now = 1_000_000_000u64;
        let end = now + secs * 1_000_000_000;
        while now < end {
            let n = p.take(now, batch);
            if n > 0 {
                sizes.push(n);
            }
            sent += n as u64;
            now += step_ns;
        }
        (sent, sizes)
    }

    #[test]
    fn the_rate_is_kept_whatever_the_batch_and_step() {
        for (rate, batch, step) in [
            (1000u64, 64usize, 100_000u64),
            (1000, 1, 1_000),
            (1_000_000, 64, 10_000),
            (1_000_000, 64, 50_000),
            (20_000, 64, 7_000),
            (7, 64, 3_000_000),
        ] {
            let (sent, _) = run(&mut Pacer::new(rate, batch), batch, step, 10);
            // 10 s at the rate, plus the first batch's credit.
            let want = rate * 10;
            assert!(
                sent >= want - want / 500 && sent <= want + batch as u64,
                "rate {rate} batch {batch} step {step}: {sent} sent, {want} wanted"
            );
        }
    }

    #[test]
    fn batches_wait_for_a_millisecond_of_credit_or_a_full_batch() {
        // 20 kpps: 20 packets a millisecond, under a batch of 64.
        let (sent, sizes) = run(&mut Pacer::new(20_000, 64), 64, 10_000, 1);
        assert!(sizes.iter().all(|&n| n == 20), "{sizes:?}");
        assert_eq!(sent, 20_000);
        // 1 Mpps: full batches of 64.
        let (_, sizes) = run(&mut Pacer::new(1_000_000, 64), 64, 10_000, 1);
        assert!(sizes.iter().all(|&n| n == 64), "{:?}", &sizes[..10]);
        // 100 pps: one packet at a time, 10 ms apart.
        let (sent, sizes) = run(&mut Pacer::new(100, 64), 64, 10_000, 1);
        assert_eq!((sent, sizes.iter().max()), (100, Some(&1)));
        // The last frames of a count go without waiting for a full hold.
        let mut p = Pacer::new(20_000, 64);
        assert_eq!(p.take(0, 64), 20);
        assert_eq!(p.take(150_000, 3), 3);
    }

    #[test]
    fn a_stall_catches_up_at_most_the_burst() {
        let mut p = Pacer::new(1_000_000, 64);
        assert_eq!(p.take(0, 64), 64);
        // 1 s without asking: 1e6 packets of credit, capped at 2 ms worth:
        // 31 whole batches at once; the 16 left wait for 48 more.
        let mut after = 0;
        for _ in 0..100 {
            after += p.take(1_000_000_000, 64);
        }
        assert_eq!(after, 31 * 64);
        assert_eq!(p.take(1_000_047_000, 64), 0);
        assert_eq!(p.take(1_000_048_000, 64), 64);
    }

    #[test]
    fn wait_says_when_the_next_batch_is_due() {
        let mut p = Pacer::new(1000, 10);
        assert_eq!(p.wait_ns(0, 10), 0);
        assert_eq!(p.take(0, 10), 1);
        assert_eq!(p.wait_ns(0, 10), 1_000_000);
        assert_eq!(p.wait_ns(400_000, 10), 600_000);
        assert_eq!(p.take(999_999, 10), 0);
        assert_eq!(p.take(1_000_000, 10), 1);
        let mut q = Pacer::new(20_000, 64);
        assert_eq!(q.take(0, 64), 20);
        // 20 packets of credit take 1 ms; 5 of a last batch 250 us.
        assert_eq!(q.wait_ns(0, 64), 1_000_000);
        assert_eq!(q.wait_ns(0, 5), 250_000);
    }

    #[test]
    fn zero_is_unlimited() {
        let mut p = Pacer::new(0, 64);
        assert_eq!(p.take(0, 64), 64);
        assert_eq!(p.take(0, 64), 64);
        assert_eq!(p.wait_ns(0, 64), 0);
    }

    #[test]
    fn a_clock_going_back_gives_no_credit() {
        let mut p = Pacer::new(1000, 10);
        assert_eq!(p.take(5_000_000, 10), 1);
        assert_eq!(p.take(1_000_000, 10), 0);
        assert_eq!(p.take(5_999_999, 10), 0);
        assert_eq!(p.take(6_000_000, 10), 1);
    }
}
