//! Observability of the running instance: counter groups declared once
//! ([`counters`]), latency histograms ([`Latency`]), the workers'
//! heartbeats ([`Health`]), the Prometheus text exposition of a
//! [`Snapshot`] ([`render`], and [`render_live`] for what each scrape reads
//! live) and the metrics listener ([`serve`]: `/metrics`, `/healthz`,
//! `/readyz`).
//!
//! Each worker records into its own [`Latency`] without allocating or
//! locking; once per `[stats] interval_ms` the control thread takes the
//! workers' counters and histograms and publishes a [`Snapshot`] (the
//! histograms merged into the cumulative ones), where the exporter thread
//! and `fastables stats` read it. Nothing here touches a socket except
//! [`serve`]; the clock is read by the callers (and by the server, for
//! the live lines).

pub mod counters;
mod exposition;
mod health;
mod latency;
mod server;

pub use counters::{Counter, IfaceSample, TrafficCounters, Values, XdpCounters};
pub use exposition::{render, render_live, NatAddress, NatRule, Snapshot, WorkerTable, BUCKETS_NS};
pub use health::{Health, STALL_AFTER};
pub use latency::Latency;
pub use server::{serve, Exporter, HTTP_LIMITS};

/// The git commit the binary was built from (`fastables_build_info`), when
/// it was built from a git checkout or with `$FASTABLES_COMMIT` set.
pub const COMMIT: Option<&str> = option_env!("FASTABLES_COMMIT");
