//! Helpers shared by the pipeline test files: a router's interfaces, one
//! frame through a pipeline, and an in-memory port for the worker loop.
#![allow(dead_code)] // each test file uses a part

use std::collections::VecDeque;

use fastables_dataplane::pipeline::Pipeline;
use fastables_dataplane::worker::{Action, Batch};
use fastables_port::{Frame, FrameAddr, PacketIo, FRAME_SIZE};
use fastables_rules::ctx::IfIndex;

/// A router without routes: eth0 (MTU 1400), docker0 and lan2 with their
/// addresses, and the static neighbors 10.0.2.2 on eth0 and 172.18.0.2 on
/// docker0.
pub const LAN: &str = r#"
[[interface]]
name = "eth0"
mac = "52:54:00:c2:be:11"
addresses = ["10.0.2.15/24", "1.2.3.56/24"]
mtu = 1400

[[interface]]
name = "docker0"
mac = "02:42:ac:12:00:01"
addresses = ["172.18.0.1/16"]

[[interface]]
name = "lan2"
mac = "02:42:ac:13:00:01"
addresses = ["192.168.5.1/24"]

[[neighbor]]
ip = "10.0.2.2"
mac = "52:54:00:12:35:02"
dev = "eth0"

[[neighbor]]
ip = "172.18.0.2"
mac = "02:00:00:00:00:02"
dev = "docker0"
"#;

/// What became of one received frame.
pub struct Out {
    pub action: Action,
    pub frame: Vec<u8>,
    pub generated: Vec<(IfIndex, Vec<u8>)>,
}

/// `frame` received on `port` at `now`, alone in a batch with `spares` spare buffers.
pub fn run_spares(p: &mut Pipeline, port: IfIndex, frame: &[u8], spares: usize, now: u64) -> Out {
    let mut mem = vec![0u8; FRAME_SIZE * (1 + spares)];
    mem[..frame.len()].copy_from_slice(frame);
    let mut b = Batch::with_capacity(4);
    b.frames.push(Frame::rx(0, frame.len() as u16, port));
    for i in 0..spares {
        b.spare.push(((i + 1) * FRAME_SIZE) as FrameAddr);
    }
    p.process_batch(now, &mut mem, &mut b);
    let f = b.frames[0];
    Out {
        action: b.verdicts[0],
        frame: mem[..f.len as usize].to_vec(),
        generated: b
            .generated
            .iter()
            .map(|g| {
                (
                    g.port,
                    mem[g.addr as usize..g.addr as usize + g.len as usize].to_vec(),
                )
            })
            .collect(),
    }
}

/// An in-memory port: queued rx frames per port, tx records, a bounded tx ring.
pub struct MemPort {
    pub mem: Vec<u8>,
    pub free: Vec<FrameAddr>,
    pub rx: Vec<VecDeque<Vec<u8>>>,
    pub tx: Vec<(IfIndex, Vec<u8>)>,
    pub tx_room: usize,
}

impl MemPort {
    pub fn new(ports: usize, frames: usize) -> MemPort {
        MemPort {
            mem: vec![0; frames * FRAME_SIZE],
            free: (0..frames)
                .rev()
                .map(|i| (i * FRAME_SIZE) as FrameAddr)
                .collect(),
            rx: (0..ports).map(|_| VecDeque::new()).collect(),
            tx: vec![],
            tx_room: usize::MAX,
        }
    }
}

impl PacketIo for MemPort {
    fn ports(&self) -> usize {
        self.rx.len()
    }
    fn memory(&mut self) -> &mut [u8] {
        &mut self.mem
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn rx_burst(&mut self, port: IfIndex, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(addr) = self.free.last().copied() else {
                break;
            };
            let Some(f) = self.rx[port as usize].pop_front() else {
                break;
            };
            self.free.pop();
            self.mem[addr as usize..addr as usize + f.len()].copy_from_slice(&f);
            out.push(Frame::rx(addr, f.len() as u16, port));
            n += 1;
        }
        n
    }
    fn tx_burst(&mut self, port: IfIndex, frames: &[Frame]) -> usize {
        let n = frames.len().min(self.tx_room);
        for f in &frames[..n] {
            assert_eq!(f.port, port);
            self.tx.push((
                port,
                self.mem[f.addr as usize..f.addr as usize + f.len as usize].to_vec(),
            ));
            self.free.push(f.addr);
        }
        self.tx_room -= n;
        n
    }
    fn alloc(&mut self, out: &mut Vec<FrameAddr>, n: usize) {
        for _ in 0..n {
            match self.free.pop() {
                Some(a) => out.push(a),
                None => break,
            }
        }
    }
    fn free(&mut self, addrs: &[FrameAddr]) {
        self.free.extend_from_slice(addrs);
    }
}
