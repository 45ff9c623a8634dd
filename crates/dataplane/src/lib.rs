//! fastables-dataplane: the packet pipeline in kernel hook order, interfaces and
//! addresses, the routing table, neighbors, ICMP generation, the `PacketIo` port
//! trait and the worker loop, and the offline (pcap) port used by `fastables sim`.
//!
//! The core takes `now` and frames and returns verdicts; it never reads the clock
//! or touches a socket.
//!
//! - [`config`]: the TOML configuration (the `fastables-config` crate, re-exported).
//! - [`iface`], [`route`], [`neigh`]: interfaces and addresses (primary/secondary,
//!   source selection, address types), the routing table (local table + LPM),
//!   neighbors and ARP, with the kernel's rules and default sysctls.
//! - [`pipeline`]: one frame at a time through the netfilter hooks in kernel
//!   order, with rule effects, REJECT, ICMP errors and the local stack's answers
//!   ([`icmp`], [`log`]); every drop has a [`drop::DropReason`].
//! - [`io`]: the [`io::PacketIo`] port trait and the [`io::Worker`] loop.
//!
//! - [`nat`]: conntrack and NAT glue (facts for the conntrack crate, packet rewrites).
//!
//! Not here yet: IP
//! reassembly (forwarded datagrams are fragmented, [`frag`]), ICMP redirects, ARP hold queues, VLANs, IPv6.
//! The pipeline's differences from the kernel are listed in [`pipeline`].
#![deny(unsafe_code)]

pub use fastables_config as config;
pub mod defrag;
pub mod drop;
mod flow;
pub mod frag;
pub mod icmp;
pub mod iface;
pub mod io;
pub mod log;
pub mod nat;
pub mod neigh;
pub mod offline;
pub mod pcap;
pub mod pipeline;
pub mod route;
pub mod rss;
pub mod steer;
pub mod trace;

// The configuration's frame buffer is the ports' frame.
const _: () = assert!(config::FRAME_BUFFER_LEN == io::FRAME_SIZE);
