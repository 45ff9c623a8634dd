//! fastables-natlog: the NAT event log. The workers' conntrack tables
//! record NAT events (`fastables_conntrack::natevent`); this crate carries
//! them out of the workers and sends them as IPFIX (RFC 7011 over UDP,
//! RFC 8158's information elements and templates) to a collector and as
//! syslog lines, as `[nat_log]` in fastables.toml says.
//!
//! - `exporter`: the per-worker queues ([`Sink`]) and the exporter thread
//!   ([`NatLog`]), its counters;
//! - `ipfix`: the templates, the message encoder, and a decoder;
//! - `syslog`: the lines (RFC 5424 or RFC 3164) and their reading back;
//! - `time`: UTC timestamps without a calendar crate.
//!
//! Not here: deciding what to log (the table does), the control socket's
//! `conntrack -E` stream (that is conntrack's own event stream).
#![deny(unsafe_code)]

pub mod exporter;
pub mod ipfix;
pub mod syslog;
pub mod time;

pub use exporter::{Counters, NatLog, Sink, Snapshot};
