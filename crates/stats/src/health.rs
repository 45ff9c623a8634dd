//! Whether the instance works: every worker goes round its loop (a
//! heartbeat it stamps every few milliseconds, off the per-packet path),
//! and the ports are open. `/readyz`, the systemd watchdog and the
//! `fastables_ready` metric read it; nothing here blocks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A worker that has not gone round its loop for this long is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(1);

/// The workers' heartbeats and whether the ports are open.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// Per worker, milliseconds from `epoch` to its last turn.
    beats: Box<[AtomicU64]>,
    /// Every port is open and the instance is not stopping.
    open: AtomicBool,
}

impl Health {
    /// `workers` workers, none started.
    pub fn new(workers: usize) -> Health {
        Health {
            epoch: Instant::now(),
            beats: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            open: AtomicBool::new(false),
        }
    }

    /// Worker `k` went round its loop at `now` (a clock read it made anyway).
    #[inline]
    pub fn beat(&self, k: usize, now: Instant) {
        if let Some(b) = self.beats.get(k) {
            b.store(self.ms(now), Ordering::Relaxed);
        }
    }

    /// The ports are open (after start) or closing (at stop).
    pub fn set_open(&self, open: bool) {
        if open {
            // Started now: the workers' first beats may not have come yet.
            let now = self.ms(Instant::now());
            for b in self.beats.iter() {
                b.fetch_max(now, Ordering::Relaxed);
            }
        }
        self.open.store(open, Ordering::Relaxed);
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// How long ago each worker last went round its loop.
    pub fn ages(&self, now: Instant) -> impl Iterator<Item = Duration> + '_ {
        let now = self.ms(now);
        self.beats
            .iter()
            .map(move |b| Duration::from_millis(now.saturating_sub(b.load(Ordering::Relaxed))))
    }

    /// The first worker stalled for longer than [`STALL_AFTER`], and for how long.
    pub fn stalled(&self, now: Instant) -> Option<(usize, Duration)> {
        self.ages(now).enumerate().find(|(_, a)| *a > STALL_AFTER)
    }

    /// Ready: the ports are open and every worker makes progress; else why not.
    pub fn ready(&self, now: Instant) -> Result<(), String> {
        if !self.open.load(Ordering::Relaxed) {
            return Err("the ports are not open (starting or stopping)".into());
        }
        match self.stalled(now) {
            Some((k, age)) => Err(format!(
                "worker {k} has made no progress for {:.1} s",
                age.as_secs_f64()
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_stops_beating_is_stalled() {
        let h = Health::new(2);
        let t0 = Instant::now();
        assert!(h.ready(t0).is_err(), "not open yet");
        h.set_open(true);
        assert_eq!(h.ready(t0), Ok(()));
        let later = t0 + Duration::from_secs(3);
        h.beat(0, later);
        let e = h.ready(later).unwrap_err();
        assert!(e.starts_with("worker 1 has made no progress for 3."), "{e}");
        h.beat(1, later);
        assert_eq!(h.ready(later), Ok(()));
        h.set_open(false);
        assert!(h.ready(later).is_err());
    }
}
