//! Observability of the running instance: counter groups declared once
//! ([`counters`]), latency histograms ([`Latency`]), the Prometheus text
//! exposition of a [`Snapshot`] ([`render`]) and the `/metrics` server
//! ([`serve`]).
//!
//! Each worker records into its own [`Latency`] without allocating or
//! locking; once per `[stats] interval_ms` the control thread takes the
//! workers' counters and histograms and publishes a [`Snapshot`] (the
//! histograms merged into the cumulative ones), where the exporter thread
//! and `fastables stats` read it. Nothing here reads a clock or touches a
//! socket except [`serve`].

pub mod counters;
mod exposition;
mod latency;
mod server;

pub use counters::{Counter, IfaceSample, TrafficCounters, Values, XdpCounters};
pub use exposition::{render, Snapshot, BUCKETS};
pub use latency::Latency;
pub use server::serve;
