//! fastables-dataplane: the packet pipeline in kernel hook order, interfaces and
//! addresses, the routing table, neighbors, ICMP generation, the `PacketIo` port
//! trait and the worker loop, and the offline (pcap) port used by `fastables sim`.
//!
//! The core takes `now` and frames and returns verdicts; it never reads the clock
//! or touches a socket.
#![deny(unsafe_code)]

pub mod config;
pub mod drop;
pub mod icmp;
pub mod iface;
pub mod io;
pub mod neigh;
pub mod offline;
pub mod pcap;
pub mod pipeline;
pub mod route;
