//! Groups of counters declared once: each counter's name, Prometheus
//! metric and help line, from which the struct, its `add`, its JSON
//! (serde's derive) and its text and `/metrics` lines all follow, so that
//! no output can miss a counter the struct has.

use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// One counter of a group: how the outputs name it, and how to read it.
#[derive(Debug)]
pub struct Counter<T> {
    /// Its name in `fastables stats` (text, and the JSON key).
    pub name: &'static str,
    /// The Prometheus metric (`fastables_..._total`); `None`: the counter
    /// is shown by `fastables stats` only.
    pub metric: Option<&'static str>,
    /// What it counts (the metric's help line).
    pub help: &'static str,
    /// Its value in a group.
    pub get: fn(&T) -> u64,
}

/// A group's counters as `name value` pairs: a JSON object (serde) or the
/// text `name value name value ...`.
pub struct Values<'a, T: 'static> {
    group: &'a T,
    counters: &'static [Counter<T>],
}

impl<'a, T> Values<'a, T> {
    /// `group`'s values of `counters`.
    pub fn new(group: &'a T, counters: &'static [Counter<T>]) -> Self {
        Values { group, counters }
    }

    /// Each counter's name and value, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counters.iter().map(|c| (c.name, (c.get)(self.group)))
    }

    /// The counters that have a metric: (metric, help, value), as
    /// [`Snapshot::counters`](crate::Snapshot::counters) holds them.
    pub fn metrics(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.counters
            .iter()
            .filter_map(|c| c.metric.map(|m| (m, c.help, (c.get)(self.group))))
    }
}

impl<T> Serialize for Values<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.counters.len()))?;
        for (name, v) in self.iter() {
            m.serialize_entry(name, &v)?;
        }
        m.end()
    }
}

impl<T> fmt::Display for Values<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name} {v}")?;
        }
        Ok(())
    }
}

/// Declares a group of `u64` counters, each once, as `field: "metric",
/// "help";` (the help is also the field's doc): the struct (with serde's
/// `Serialize`), its `COUNTERS`, `add` and `values`.
macro_rules! counter_group {
    (
        $(#[$meta:meta])*
        pub struct $group:ident {
            $($field:ident: $metric:literal, $help:literal;)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
        pub struct $group {
            $(#[doc = $help] pub $field: u64,)*
        }

        impl $group {
            /// Every counter of the group, in declaration order.
            pub const COUNTERS: &'static [Counter<$group>] = &[$(Counter {
                name: stringify!($field),
                metric: Some($metric),
                help: $help,
                get: |g: &$group| g.$field,
            },)*];

            /// Adds `other`'s counters to these.
            pub fn add(&mut self, other: &$group) {
                $(self.$field += other.$field;)*
            }

            /// The counters as `name value` pairs (JSON object or text).
            pub fn values(&self) -> Values<'_, $group> {
                Values::new(self, Self::COUNTERS)
            }
        }
    };
}

counter_group! {
    /// An interface's traffic, as fastables' port counts it.
    pub struct TrafficCounters {
        rx_packets: "fastables_rx_packets_total", "Frames received.";
        rx_bytes: "fastables_rx_bytes_total", "Bytes received.";
        tx_packets: "fastables_tx_packets_total", "Frames sent.";
        tx_bytes: "fastables_tx_bytes_total", "Bytes sent.";
    }
}

counter_group! {
    /// The kernel's statistics of an AF_XDP socket (`XDP_STATISTICS`).
    pub struct XdpCounters {
        rx_dropped: "fastables_xdp_rx_dropped_total",
            "Frames the kernel dropped on the AF_XDP socket.";
        rx_ring_full: "fastables_xdp_rx_ring_full_total",
            "Frames the kernel dropped because the RX ring was full.";
        fill_ring_empty: "fastables_xdp_fill_ring_empty_total",
            "Times the kernel found the fill ring empty.";
        rx_invalid: "fastables_xdp_rx_invalid_total",
            "Invalid RX descriptors the kernel met.";
        tx_invalid: "fastables_xdp_tx_invalid_total",
            "Invalid TX descriptors the kernel met.";
    }
}

/// One interface's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfaceSample {
    /// Device name.
    pub name: String,
    /// The RX queue (worker) these counters are of; `None`: all queues.
    pub queue: Option<u32>,
    /// Frames and bytes received and sent.
    pub traffic: TrafficCounters,
    /// The kernel's statistics of the interface's AF_XDP socket.
    pub xdp: XdpCounters,
}

impl IfaceSample {
    /// Adds `o`'s counters to these (the same interface on another queue).
    pub fn add(&mut self, o: &IfaceSample) {
        self.traffic.add(&o.traffic);
        self.xdp.add(&o.xdp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_adds_serializes_and_prints_every_counter() {
        let mut a = XdpCounters {
            rx_dropped: 1,
            rx_ring_full: 2,
            fill_ring_empty: 3,
            rx_invalid: 4,
            tx_invalid: 5,
        };
        a.add(&a.clone());
        assert_eq!(
            a.values().to_string(),
            "rx_dropped 2 rx_ring_full 4 fill_ring_empty 6 rx_invalid 8 tx_invalid 10"
        );
        let derived = serde_json::to_string(&a).unwrap();
        assert_eq!(derived, serde_json::to_string(&a.values()).unwrap());
        assert_eq!(
            derived,
            r#"{"rx_dropped":2,"rx_ring_full":4,"fill_ring_empty":6,"rx_invalid":8,"tx_invalid":10}"#
        );
    }
}
