//! Latency histograms (hdrhistogram) that record without allocating.

use hdrhistogram::Histogram;

/// Latency in nanoseconds, 1 ns to 60 s at 3 significant digits. Recording
/// never allocates (the counts array is allocated at construction).
#[derive(Clone, Debug)]
pub struct Latency {
    h: Histogram<u64>,
    sum_ns: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Latency {
        Latency {
            h: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist())),
            sum_ns: 0,
        }
    }

    /// One sample (clamped to the range).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let v = ns.clamp(1, 60_000_000_000);
        let _ = self.h.record(v);
        self.sum_ns = self.sum_ns.saturating_add(v);
    }

    /// Adds `other`'s samples.
    pub fn add(&mut self, other: &Latency) {
        let _ = self.h.add(&other.h);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Forgets every sample (no deallocation).
    pub fn reset(&mut self) {
        self.h.reset();
        self.sum_ns = 0;
    }

    /// The samples' sum, ns (saturating).
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// Samples.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// The value at quantile `q` (0..=1), ns; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.h.is_empty() {
            0
        } else {
            self.h.value_at_quantile(q)
        }
    }

    /// The largest sample, ns.
    pub fn max(&self) -> u64 {
        if self.h.is_empty() {
            0
        } else {
            self.h.max()
        }
    }

    /// Samples at or below `ns`.
    pub fn count_le(&self, ns: u64) -> u64 {
        if self.h.is_empty() {
            0
        } else {
            self.h.count_between(0, ns)
        }
    }

    /// `p50 p90 p99 p99.9 max` in microseconds, for `fastables stats`.
    pub fn summary(&self) -> String {
        let us = |ns: u64| ns as f64 / 1000.0;
        format!(
            "p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  ({} samples)",
            us(self.quantile(0.5)),
            us(self.quantile(0.9)),
            us(self.quantile(0.99)),
            us(self.quantile(0.999)),
            us(self.max()),
            self.count()
        )
    }
}

fn unreachable_hist() -> Histogram<u64> {
    // 1..2^63 at 3 digits always fits the library's limits.
    Histogram::new_with_max(u64::MAX / 2, 3).unwrap_or_else(|_| std::process::abort())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_buckets() {
        let mut l = Latency::new();
        for ns in 1..=1000u64 {
            l.record(ns * 1000);
        }
        assert_eq!(l.count(), 1000);
        let p50 = l.quantile(0.5);
        assert!((499_000..=501_000).contains(&p50), "{p50}");
        assert!(l.max() >= 999_000 && l.max() <= 1_001_000);
        assert_eq!(l.count_le(100_000), 100);
        let mut m = Latency::new();
        m.add(&l);
        m.add(&l);
        assert_eq!(m.count(), 2000);
        m.reset();
        assert_eq!((m.count(), m.quantile(0.99)), (0, 0));
    }
}
