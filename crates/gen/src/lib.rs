//! `fastables gen`: an AF_XDP traffic generator and sink for measuring a
//! forwarder (fastables or the kernel) from the outside.
//!
//! The generator sends stamped frames ([`payload`]: magic, sequence number,
//! `CLOCK_MONOTONIC` timestamp) over a flow space ([`flow`]) at a paced rate
//! ([`pace`]); the sink recognises them and counts loss, reordering,
//! duplicates and the one-way latency ([`sink`]). Generator and sink run on
//! one machine (in different network namespaces, which share the monotonic
//! clock). Everything but [`xsk`] is sans-IO and takes `now` from the
//! caller, so that the tests drive it with a virtual clock; [`xsk`] is the
//! AF_XDP loop over `fastables-xdp`, batched: no allocation or system call
//! per frame.
//!
//! [`fill`] is the conntrack-limit test (`--conntrack-fill`): established
//! flows kept alive through an echoing sink while new flows fill the
//! router's table.
//!
//! [`tcp`] is `--proto tcp`: flows that complete a three-way handshake
//! with the sink as their responder (`gen --sink --echo`), then carry the
//! stamped data in sequence, and close.
//!
//! Not here (yet): more than one queue or thread, IPv6.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod fill;
pub mod flow;
pub mod frame;
pub mod pace;
pub mod payload;
pub mod report;
pub mod sink;
pub mod tcp;
pub mod xsk;

/// Nanoseconds in a second: the unit of every time here.
pub(crate) const NS_PER_SEC: u64 = 1_000_000_000;

/// Errors of the generator and the sink; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The AF_XDP port could not be opened.
    #[error("{0}")]
    Xdp(#[from] fastables_xdp::XdpError),
    /// A flow option does not fit the flow space.
    #[error("{0}")]
    Flow(#[from] flow::FlowError),
    /// The frame size cannot carry the headers and the stamp.
    #[error(
        "--size {size}: a {proto} frame with the generator's stamp needs at least {min} bytes"
    )]
    SizeTooSmall {
        /// Asked.
        size: usize,
        /// The least.
        min: usize,
        /// The protocol.
        proto: &'static str,
    },
    /// The frame size does not fit the device or a frame buffer.
    #[error("--size {size}: at most {max} bytes here (the device's MTU plus the 14-byte Ethernet header)")]
    SizeTooLarge {
        /// Asked.
        size: usize,
        /// The most.
        max: usize,
    },
    /// Queue 0 of the device is taken.
    #[error("{0}: queue 0 already has an AF_XDP socket or another XDP program (another `fastables gen` or `fastables run` on it? `ip link show {0}` shows the program)")]
    Busy(String),
    /// No source MAC.
    #[error("{0}: cannot read the device's MAC address; give --src-mac")]
    NoMac(String),
    /// The next hop did not answer ARP.
    #[error("no ARP reply from {next_hop} on {dev} within {secs} s: is it on that link? (--gateway names the next hop; --dst-mac MAC skips ARP)")]
    Arp {
        /// Device.
        dev: String,
        /// The address asked for.
        next_hop: std::net::Ipv4Addr,
        /// Seconds waited.
        secs: u64,
    },
}
