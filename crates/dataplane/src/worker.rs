//! The worker loop: rx burst → pipeline → tx burst, and the [`Batch`] the
//! pipeline works on with the verdict ([`Action`]) of each received frame.
//!
//! The worker's vectors are allocated once with their final capacity;
//! nothing is allocated per packet.

use fastables_packet::IfIndex;

use crate::drop::DropReason;
use crate::pipeline::{Pipeline, HANDOFF_QUEUE};
use fastables_port::{Frame, FrameAddr, PacketIo};

/// What happens to a received frame after the pipeline.
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
    /// Kept by the pipeline: in the hold queue, waiting for the MAC of its
    /// next hop, or waiting for the rest of its datagram. The pipeline hands
    /// the buffer back later in [`Batch::generated`] (sent) or
    /// [`Batch::spare`] (given up).
    Held,
}

/// One batch through the pipeline: the received frames and their verdicts,
/// the spare buffers the pipeline may write generated packets into, and the
/// generated packets.
#[derive(Debug, Default)]
pub struct Batch {
    /// Received frames; [`Pipeline::process_batch`] may rewrite the bytes
    /// and `len`.
    pub frames: Vec<Frame>,
    /// The verdict of each received frame, `verdicts[i]` for `frames[i]`
    /// (set by [`Pipeline::process_batch`]).
    pub verdicts: Vec<Action>,
    /// Free buffers for generated packets (the pipeline pops from the end).
    pub spare: Vec<FrameAddr>,
    /// Frames to send, each out of its `port`: generated packets (ICMP
    /// errors, echo replies, TCP RSTs, ARP), the fragments after the first
    /// of a forwarded datagram, and held frames released.
    pub generated: Vec<Frame>,
}

impl Batch {
    /// A batch for up to `n` received frames, with room for twice as many spare
    /// and generated frames (one answer per frame, or two fragments).
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            frames: Vec::with_capacity(n),
            verdicts: Vec::with_capacity(n),
            spare: Vec::with_capacity(2 * n),
            generated: Vec::with_capacity(2 * n),
        }
    }

    /// Forget all frames (the caller has handed them back to the port).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.verdicts.clear();
        self.spare.clear();
        self.generated.clear();
    }
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
            handoffs: Vec::with_capacity(HANDOFF_QUEUE),
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
        for (f, v) in self.batch.frames.iter().zip(&self.batch.verdicts) {
            match *v {
                Action::Forward { port: out } => match self.tx.get_mut(out as usize) {
                    Some(q) => q.push(Frame { port: out, ..*f }),
                    None => self.free.push(f.addr),
                },
                Action::Drop(_) | Action::Consumed => self.free.push(f.addr),
                Action::Held => {}
            }
        }
        for f in &self.batch.generated {
            match self.tx.get_mut(f.port as usize) {
                Some(q) => q.push(*f),
                None => self.free.push(f.addr),
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
