//! The port contract: how frames reach the worker loop and leave it.
//!
//! A port ([`PacketIo`]) owns the frame memory — for AF_XDP the UMEM, for the
//! offline (pcap) port a plain `Vec<u8>` — cut into [`FRAME_SIZE`] buffers, each
//! named by its byte offset ([`FrameAddr`]). Ports exchange small descriptors
//! ([`Frame`]) with the worker loop, which hands the memory to the pipeline as
//! one `&mut [u8]` to rewrite frames in place. Nothing is copied between rx and
//! tx, and nothing is allocated per packet.
//!
//! Ownership of a frame moves: port → worker on [`PacketIo::rx_burst`] and
//! [`PacketIo::alloc`]; worker → port on [`PacketIo::tx_burst`] (for the frames it
//! accepted) and [`PacketIo::free`].
//!
//! The crate depends on the packet crate only: what the pipeline decides
//! about a frame is the worker's business, not the port's, so ports (AF_XDP,
//! pcap files, a traffic generator) are built without the pipeline.
//!
//! Beside the contract: [`rss`], the NIC's receive-side scaling as a model
//! (which queue, hence which worker, a flow lands on), and [`steer`], the
//! port wrapper that hands a frame that arrived on the wrong worker's queue to
//! its owner through bounded lock-free queues.

pub mod rss;
pub mod steer;

use fastables_packet::flow::Tuple;
use fastables_packet::IfIndex;

/// Size of one frame buffer; a frame never exceeds it.
pub const FRAME_SIZE: usize = 2048;

/// A frame buffer: the byte offset of its first byte in the port's memory. The
/// buffer spans `addr .. addr + FRAME_SIZE`.
pub type FrameAddr = u64;

/// A frame descriptor: where the frame is, how long, and which port it came
/// in on (received frames) or goes out on (frames to send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The buffer in the port's memory.
    pub addr: FrameAddr,
    /// Bytes used, from the start of the buffer (at most [`FRAME_SIZE`]).
    pub len: u16,
    /// Ingress port for received frames; egress port for frames to send.
    pub port: IfIndex,
}

impl Frame {
    /// A received frame (or one to send: `port` is then the egress port).
    pub fn rx(addr: FrameAddr, len: u16, port: IfIndex) -> Frame {
        Frame { addr, len, port }
    }
}

/// A packet port: one device per interface (index = config order), frames in
/// memory owned by the port.
pub trait PacketIo {
    /// Number of interfaces this port serves (ports `0..ports()`).
    fn ports(&self) -> usize;

    /// The frame memory; the frame at `addr` is `memory()[addr..addr + FRAME_SIZE]`.
    fn memory(&mut self) -> &mut [u8];

    /// The time of the frames of the last [`PacketIo::rx_burst`], in nanoseconds
    /// (a monotonic clock live, the capture timestamp offline).
    fn now_ns(&self) -> u64;

    /// Receive up to `max` frames from `port`, appending them to `out`; returns how many.
    fn rx_burst(&mut self, port: IfIndex, out: &mut Vec<Frame>, max: usize) -> usize;

    /// Queue `frames` for transmission on `port` (their `port` fields equal it);
    /// returns how many, from the front, were accepted. Accepted frames belong to
    /// the port again; the rest stay with the caller.
    fn tx_burst(&mut self, port: IfIndex, frames: &[Frame]) -> usize;

    /// Take up to `n` free buffers, appending them to `out`.
    fn alloc(&mut self, out: &mut Vec<FrameAddr>, n: usize);

    /// Give buffers back (dropped, consumed or unused frames).
    fn free(&mut self, addrs: &[FrameAddr]);

    /// Reply tuples of connections the worker just created whose replies
    /// the RSS model puts on another worker's queue, before the batch that
    /// created them is sent: a port that steers frames between workers (or
    /// an emulated NIC) learns where those replies belong before any of
    /// them can arrive. Ports of a single worker ignore them.
    fn announce(&mut self, _replies: &[Tuple]) {}
}
