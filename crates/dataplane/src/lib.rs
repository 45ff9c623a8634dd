//! fastables-dataplane: the packet pipeline in kernel hook order, interfaces and
//! addresses, the routing table, neighbors, ICMP generation, the `PacketIo` port
//! contract and the worker loop, and the offline (pcap) port used by `fastables sim`.
//!
//! The pipeline takes `now` and frames and returns verdicts; it never reads the
//! clock or touches a socket. The ports around it do I/O: the offline port
//! reads and writes pcap files ([`offline`], [`pcap`]), the steering port
//! hands frames between workers' queues ([`steer`]); the AF_XDP port is the
//! `fastables-xdp` crate.
//!
//! - [`config`]: the TOML configuration (the `fastables-config` crate, re-exported).
//! - [`iface`], [`route`], [`neigh`]: interfaces and addresses (primary/secondary,
//!   source selection, address types), the routing table (local table + LPM),
//!   neighbors and ARP, with the kernel's rules and default sysctls.
//! - [`pipeline`]: one frame at a time through the netfilter hooks in kernel
//!   order, as stages that own their state (conntrack and NAT, the flow cache,
//!   reassembly for conntrack, fragmentation, the neighbour hold queue,
//!   tracing), with rule effects, REJECT, ICMP errors and the local stack's
//!   answers ([`icmp`], [`log`]); every drop has a [`drop::DropReason`].
//! - [`port`]: the port contract ([`port::PacketIo`], [`port::Frame`]), which
//!   depends on nothing else here; [`worker`]: the [`worker::Worker`] loop and
//!   the [`worker::Batch`] of frames and verdicts the pipeline works on.
//! - [`rss`]: the NIC's receive-side scaling, modelled for several workers.
//!
//! Not here: reassembly of datagrams for local delivery, ICMP redirects,
//! VLANs, IPv6. The pipeline's differences from the kernel are listed in
//! [`pipeline`].
#![deny(unsafe_code)]

pub use fastables_config as config;
pub mod drop;
pub mod icmp;
pub mod iface;
pub mod log;
pub mod neigh;
pub mod offline;
pub mod pcap;
pub mod pipeline;
pub mod port;
pub mod route;
pub mod rss;
pub mod steer;
pub mod worker;

// The configuration's frame buffer is the ports' frame.
const _: () = assert!(config::FRAME_BUFFER_LEN == port::FRAME_SIZE);
