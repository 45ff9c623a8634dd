//! Ports and the worker loop.
//!
//! A port ([`PacketIo`]) owns the frame memory — for AF_XDP the UMEM, for the
//! offline (pcap) port a plain `Vec<u8>` — cut into [`FRAME_SIZE`] buffers, each
//! named by its byte offset ([`FrameAddr`]). Ports exchange small descriptors
//! ([`Frame`]) with the [`Worker`]; the pipeline gets the memory as one
//! `&mut [u8]` and rewrites frames in place. Nothing is copied between rx and tx,
//! and nothing is allocated per packet: the worker's vectors are allocated once
//! with their final capacity.
//!
//! Ownership of a frame moves: port → worker on [`PacketIo::rx_burst`] and
//! [`PacketIo::alloc`]; worker → port on [`PacketIo::tx_burst`] (for the frames it
//! accepted) and [`PacketIo::free`].

use fastables_rules::ctx::IfIndex;

use crate::drop::DropReason;
use crate::pipeline::Pipeline;

/// Size of one frame buffer; a frame never exceeds it.
pub const FRAME_SIZE: usize = 2048;

/// A frame buffer: the byte offset of its first byte in the port's memory. The
/// buffer spans `addr .. addr + FRAME_SIZE`.
pub type FrameAddr = u64;

/// What happens to a frame after the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it out of `port` (already rewritten: TTL, checksum, MACs).
    Forward {
        /// Egress interface.
        port: IfIndex,
    },
    /// Drop it, counted under this reason.
    Drop(DropReason),
    /// Taken by the local stack (ARP, ICMP echo answered, ICMP to us): free the frame.
    Consumed,
    /// Waiting in the pipeline's hold queue for the MAC of its next hop: the
    /// pipeline keeps the buffer, and hands it back later in
    /// [`Batch::generated`] (sent) or [`Batch::spare`] (given up).
    Held,
}

/// A frame descriptor: where the frame is, how long, which port it came in on
/// (or, for generated frames, goes out on), and what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The buffer in the port's memory.
    pub addr: FrameAddr,
    /// Bytes used, from the start of the buffer (at most [`FRAME_SIZE`]).
    pub len: u16,
    /// Ingress port for received frames; egress port for generated ones.
    pub port: IfIndex,
    /// Set by the pipeline. Ports initialise it to `Consumed` on rx (any value will do).
    pub action: Action,
}

impl Frame {
    /// A received frame, before the pipeline.
    pub fn rx(addr: FrameAddr, len: u16, port: IfIndex) -> Frame {
        Frame {
            addr,
            len,
            port,
            action: Action::Consumed,
        }
    }
}

/// One batch through the pipeline: the received frames, the spare buffers the
/// pipeline may write generated packets into, and the generated packets.
#[derive(Debug, Default)]
pub struct Batch {
    /// Received frames; [`Pipeline::process_batch`] sets each `action` and may
    /// rewrite the bytes and `len`.
    pub frames: Vec<Frame>,
    /// Free buffers for generated packets (the pipeline pops from the end).
    pub spare: Vec<FrameAddr>,
    /// Generated packets (ICMP errors, echo replies, TCP RSTs, ARP), each with
    /// `action == Forward { port }` and `port` the egress interface.
    pub generated: Vec<Frame>,
}

impl Batch {
    /// A batch for up to `n` received frames, with room for twice as many spare
    /// and generated frames (one answer per frame, or two fragments).
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            frames: Vec::with_capacity(n),
            spare: Vec::with_capacity(2 * n),
            generated: Vec::with_capacity(2 * n),
        }
    }

    /// Forget all frames (the caller has handed them back to the port).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.spare.clear();
        self.generated.clear();
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
    /// the RSS model puts on another worker's queue
    /// ([`Pipeline::take_handoffs`]), before the batch that created them is
    /// sent: a port that steers frames between workers (or an emulated NIC)
    /// learns where those replies belong before any of them can arrive.
    /// Ports of a single worker ignore them.
    fn announce(&mut self, _replies: &[fastables_conntrack::Tuple]) {}
}

/// Totals of one worker's loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Frames received.
    pub rx: u64,
    /// Frames (received or generated) accepted by a port for transmission.
    pub tx: u64,
    /// Frames dropped because the TX ring was full (also in the drop counters).
    pub tx_full: u64,
}

/// The run-to-completion loop of one worker: rx burst → pipeline → tx burst.
pub struct Worker {
    pipeline: Pipeline,
    batch: Batch,
    batch_size: usize,
    /// Per egress port, the frames to send this round.
    tx: Vec<Vec<Frame>>,
    /// Buffers to give back to the port this round.
    free: Vec<FrameAddr>,
    /// Hand-off requests of this round, for [`PacketIo::announce`].
    handoffs: Vec<fastables_conntrack::Tuple>,
    stats: WorkerStats,
}

impl Worker {
    /// A worker over `pipeline` receiving at most `batch_size` frames per port per round.
    pub fn new(pipeline: Pipeline, batch_size: usize) -> Worker {
        let batch_size = batch_size.max(1);
        let ports = pipeline.interfaces().len();
        Worker {
            pipeline,
            batch: Batch::with_capacity(batch_size),
            batch_size,
            tx: (0..ports)
                .map(|_| Vec::with_capacity(2 * batch_size))
                .collect(),
            free: Vec::with_capacity(3 * batch_size),
            handoffs: Vec::with_capacity(crate::pipeline::HANDOFF_QUEUE),
            stats: WorkerStats::default(),
        }
    }

    /// The pipeline (counters, logs, ruleset swap between rounds).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The pipeline, mutably (for `set_ruleset`, draining logs).
    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// Loop totals.
    pub fn stats(&self) -> WorkerStats {
        self.stats
    }

    /// One round: for each port, receive a burst, run it through the pipeline,
    /// send what is to be sent and free the rest. Returns the frames received.
    pub fn poll<P: PacketIo + ?Sized>(&mut self, io: &mut P) -> usize {
        let mut total = 0;
        let ports = io.ports().min(self.tx.len());
        for port in 0..ports {
            total += self.poll_port(io, port as IfIndex);
        }
        self.service(io);
        total
    }

    /// Between bursts: the pipeline's hold queue (frames waiting for ARP),
    /// when it is not empty: released frames and repeated ARP requests go
    /// out, given-up frames are freed.
    pub fn service<P: PacketIo + ?Sized>(&mut self, io: &mut P) {
        if self.pipeline.held() == 0 {
            return;
        }
        self.batch.clear();
        io.alloc(&mut self.batch.spare, self.batch_size);
        let now = io.now_ns();
        self.pipeline
            .service_held(now, io.memory(), &mut self.batch);
        self.send_and_free(io);
    }

    /// One burst from one port through the pipeline and out.
    pub fn poll_port<P: PacketIo + ?Sized>(&mut self, io: &mut P, port: IfIndex) -> usize {
        self.batch.clear();
        let n = io.rx_burst(port, &mut self.batch.frames, self.batch_size);
        if self.batch.frames.is_empty() {
            return 0;
        }
        self.stats.rx += n as u64;
        // One generated packet per received frame, or the extra fragment of a
        // forwarded frame (two fragments when the egress MTU is at least half a
        // frame; more need more spares and are dropped when there are none).
        io.alloc(&mut self.batch.spare, 2 * self.batch.frames.len());
        let now = io.now_ns();
        self.pipeline
            .process_batch(now, io.memory(), &mut self.batch);
        self.send_and_free(io);
        n
    }

    /// Sends what the pipeline forwarded or generated in `self.batch` and
    /// gives every other buffer back to the port.
    fn send_and_free<P: PacketIo + ?Sized>(&mut self, io: &mut P) {
        for f in self.batch.frames.iter().chain(self.batch.generated.iter()) {
            match f.action {
                Action::Forward { port: out } => match self.tx.get_mut(out as usize) {
                    Some(q) => q.push(Frame { port: out, ..*f }),
                    None => self.free.push(f.addr),
                },
                Action::Drop(_) | Action::Consumed => self.free.push(f.addr),
                Action::Held => {}
            }
        }
        self.free.extend_from_slice(&self.batch.spare);
        self.pipeline.take_handoffs(&mut self.handoffs);
        if !self.handoffs.is_empty() {
            io.announce(&self.handoffs);
            self.handoffs.clear();
        }
        for (p, q) in self.tx.iter_mut().enumerate() {
            if q.is_empty() {
                continue;
            }
            let sent = io.tx_burst(p as IfIndex, q).min(q.len());
            self.stats.tx += sent as u64;
            let unsent = q.len() - sent;
            if unsent > 0 {
                self.stats.tx_full += unsent as u64;
                self.pipeline
                    .drops()
                    .add(DropReason::TxRingFull, unsent as u64);
                self.free.extend(q[sent..].iter().map(|f| f.addr));
            }
            q.clear();
        }
        if !self.free.is_empty() {
            io.free(&self.free);
            self.free.clear();
        }
        self.batch.clear();
    }
}
