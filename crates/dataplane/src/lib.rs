//! fastables-dataplane: the packet pipeline in kernel hook order and the
//! state it owns: interfaces and addresses, the routing table, neighbors,
//! conntrack and NAT glue, ICMP generation, and the worker loop that runs
//! batches of a port's frames through it.
//!
//! This crate does no I/O: it never reads the clock, a file or a socket, and
//! starts no thread. Time (`now`) and frames come in, verdicts and rewritten
//! frames go out. The ports live beside it: the port contract, RSS model and
//! steering between workers in `fastables-port`, AF_XDP in `fastables-xdp`,
//! pcap files in `fastables-offline`; the TOML configuration it is built from
//! in `fastables-config`.
//!
//! - [`iface`], [`route`], [`neigh`]: interfaces and addresses (primary/secondary,
//!   source selection, address types), the routing table (local table + LPM),
//!   neighbors and ARP, with the kernel's rules and default sysctls.
//! - [`pipeline`]: one frame at a time through the netfilter hooks in kernel
//!   order, as stages that own their state (conntrack and NAT, the flow cache,
//!   reassembly for conntrack, fragmentation, the neighbour hold queue,
//!   tracing), with rule effects, REJECT, ICMP errors and the local stack's
//!   answers ([`icmp`], [`log`]); every drop has a [`drop::DropReason`].
//! - [`worker`]: the [`worker::Worker`] loop over any `fastables_port::PacketIo`
//!   and the [`worker::Batch`] of frames and verdicts the pipeline works on.
//!
//! Not here: reassembly of datagrams for local delivery, ICMP redirects,
//! VLANs, IPv6. The pipeline's differences from the kernel are listed in
//! [`pipeline`].
#![deny(unsafe_code)]

pub mod drop;
pub mod icmp;
pub mod iface;
pub mod log;
pub mod neigh;
pub mod pipeline;
pub mod route;
pub mod worker;
