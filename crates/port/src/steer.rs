//! Steering between live workers: every frame is processed by the worker
//! that owns its connection, whatever queue the device put it on.
//!
//! Each worker serves one RX queue of every interface and owns one conntrack
//! shard. The owner of a frame is a function of its tuple alone: the queue
//! the software RSS model ([`Rss`], the symmetric key by default) gives the
//! tuple, unless the owner of a connection announced the tuple of its
//! replies (a DNATed connection, whose reply tuple hashes elsewhere:
//! [`crate::pipeline::Pipeline::take_handoffs`]). A NIC whose RSS matches the
//! model puts almost every frame on its owner's queue; a device that spreads
//! frames its own way (veth picks the RX queue from the sender's TX queue)
//! still gets every frame to its owner, at the cost of a copy.
//!
//! [`Steered`] wraps a worker's port: its `rx_burst` first delivers the
//! frames other workers handed over for that interface (copied into this
//! port's memory), then receives from the port and hands every frame owned
//! elsewhere to its owner through a bounded lock-free queue ([`Mesh`]): the
//! frame is copied into a buffer from a pool allocated at start, so nothing
//! is allocated per packet. A full queue or an empty pool drops the frame
//! (counted, `handoff_dropped`). ARP requests go to worker 0 (which answers
//! them); ARP replies go to every worker, since each keeps its own
//! neighbours. Fragments are steered by their addresses alone, so that all
//! fragments of a datagram meet on one worker (which then tracks the
//! datagram: with several workers a fragmented datagram may be tracked on
//! another worker than its connection's other packets).

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use fastables_packet::flow::proto_has_ports;
use fastables_packet::flow::Tuple;
use fastables_packet::ipv4::{self, PROTO_ICMP};
use fastables_packet::{arp, ethernet, icmp, read_be16, read_be32, IfIndex};

use crate::rss::Rss;
use crate::{Frame, FrameAddr, PacketIo, FRAME_SIZE};

/// Frames waiting per (worker, interface) queue.
pub const HANDOFF_SLOTS: usize = 1024;
/// Reply tuples a worker remembers for the others (DNATed connections).
pub const REDIRECTS_MAX: usize = 65536;
/// A remembered reply tuple unused for this long is forgotten (the kernel's
/// TCP established timeout, the longest default).
pub const REDIRECT_IDLE_NS: u64 = 432_000 * 1_000_000_000;

/// A flow key: protocol, addresses, ports (ICMP echo: the id, then 0).
type FlowKey = (u8, u32, u32, u16, u16);

/// A frame handed from one worker to another.
struct Handed {
    buf: Box<[u8; FRAME_SIZE]>,
    len: u16,
}

/// The queues between the workers of one instance, created once at start.
pub struct Mesh {
    workers: usize,
    ports: usize,
    /// `frames[to * ports + port]`: frames received on `port`, for worker `to`.
    frames: Vec<ArrayQueue<Handed>>,
    /// Free buffers for handed frames.
    pool: ArrayQueue<Box<[u8; FRAME_SIZE]>>,
    /// `redirects[to]`: reply tuples announced to worker `to`, with their owner.
    redirects: Vec<ArrayQueue<(FlowKey, u16)>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("workers", &self.workers)
            .field("ports", &self.ports)
            .field("pool", &self.pool.len())
            .finish()
    }
}

impl Mesh {
    /// Queues for `workers` workers of `ports` interfaces, `slots` frames per
    /// (worker, interface) queue; the pool holds as many buffers as all
    /// queues together (allocated here).
    pub fn new(workers: usize, ports: usize, slots: usize) -> Arc<Mesh> {
        let slots = slots.max(1);
        let queues = workers * ports;
        let pool = ArrayQueue::new((queues * slots).max(1));
        for _ in 0..queues * slots {
            let _ = pool.push(Box::new([0u8; FRAME_SIZE]));
        }
        Arc::new(Mesh {
            workers,
            ports,
            frames: (0..queues.max(1)).map(|_| ArrayQueue::new(slots)).collect(),
            pool,
            redirects: (0..workers.max(1))
                .map(|_| ArrayQueue::new(REDIRECTS_MAX / 4))
                .collect(),
        })
    }

    /// Workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Copies `bytes` (received on `port`) to worker `to`; false when its
    /// queue is full or the pool is empty.
    fn hand(&self, to: usize, port: usize, bytes: &[u8]) -> bool {
        let Some(q) = self.frames.get(to * self.ports + port) else {
            return false;
        };
        let Some(mut buf) = self.pool.pop() else {
            return false;
        };
        let n = bytes.len().min(FRAME_SIZE);
        buf[..n].copy_from_slice(&bytes[..n]);
        match q.push(Handed { buf, len: n as u16 }) {
            Ok(()) => true,
            Err(h) => {
                let _ = self.pool.push(h.buf);
                false
            }
        }
    }
}

/// What steering did on one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Frames received here and handed to their owner.
    pub handed_out: u64,
    /// Frames other workers handed here.
    pub handed_in: u64,
    /// Frames dropped because the owner's queue was full or the pool empty
    /// (or, handed here, because this port had no free buffer).
    pub handoff_dropped: u64,
    /// ARP replies copied to the other workers.
    pub arp_copies: u64,
    /// Reply tuples announced to the other workers.
    pub redirects_sent: u64,
    /// Announcements lost (a full queue or table).
    pub redirects_dropped: u64,
    /// Reply tuples remembered for other workers now.
    pub redirects_known: u64,
}

impl SteerStats {
    /// Field-wise sum.
    pub fn add(&mut self, o: &SteerStats) {
        self.handed_out += o.handed_out;
        self.handed_in += o.handed_in;
        self.handoff_dropped += o.handoff_dropped;
        self.arp_copies += o.arp_copies;
        self.redirects_sent += o.redirects_sent;
        self.redirects_dropped += o.redirects_dropped;
        self.redirects_known += o.redirects_known;
    }
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    One(u16),
    All,
}

/// A worker's port with steering in front of its receive path (see the
/// module documentation). With no mesh (one worker) it is the port itself.
pub struct Steered<P> {
    inner: P,
    me: u16,
    rss: Arc<Rss>,
    mesh: Option<Arc<Mesh>>,
    redirect: HashMap<FlowKey, (u16, u64)>,
    scratch: Vec<Frame>,
    give_back: Vec<FrameAddr>,
    one: Vec<FrameAddr>,
    stats: SteerStats,
    last_sweep_ns: u64,
}

impl<P: PacketIo> Steered<P> {
    /// Worker `me` of `mesh` (`None`: a single worker, nothing steered),
    /// receiving at most `batch` frames per burst.
    pub fn new(inner: P, me: u16, rss: Arc<Rss>, mesh: Option<Arc<Mesh>>, batch: usize) -> Self {
        let batch = batch.max(1);
        Steered {
            inner,
            me,
            rss,
            mesh: mesh.filter(|m| m.workers > 1),
            redirect: HashMap::new(),
            scratch: Vec::with_capacity(batch),
            give_back: Vec::with_capacity(batch),
            one: Vec::with_capacity(1),
            stats: SteerStats::default(),
            last_sweep_ns: 0,
        }
    }

    /// The port.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The port, mutably.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// What steering did so far.
    pub fn stats(&self) -> SteerStats {
        SteerStats {
            redirects_known: self.redirect.len() as u64,
            ..self.stats
        }
    }

    /// Announces reply tuples of connections owned here (from
    /// [`crate::pipeline::Pipeline::take_handoffs`]) to every worker, this
    /// one included (a reply this port receives must stay here).
    fn announce_replies(&mut self, replies: &[Tuple]) {
        let Some(mesh) = &self.mesh else { return };
        let now = self.inner.now_ns();
        for t in replies {
            let key = tuple_key(t);
            if self.redirect.len() < REDIRECTS_MAX || self.redirect.contains_key(&key) {
                self.redirect.insert(key, (self.me, now));
            }
            for w in 0..mesh.workers {
                if w == usize::from(self.me) {
                    continue;
                }
                if mesh.redirects[w].push((key, self.me)).is_ok() {
                    self.stats.redirects_sent += 1;
                } else {
                    self.stats.redirects_dropped += 1;
                }
            }
        }
    }

    /// Takes the announcements for this worker; forgets idle ones.
    fn take_redirects(&mut self, mesh: &Mesh, now: u64) {
        while let Some((key, owner)) = mesh.redirects[usize::from(self.me)].pop() {
            if self.redirect.len() >= REDIRECTS_MAX && !self.redirect.contains_key(&key) {
                self.stats.redirects_dropped += 1;
                continue;
            }
            self.redirect.insert(key, (owner, now));
        }
        // Once a second, and only when there is something to forget.
        if !self.redirect.is_empty() && now.saturating_sub(self.last_sweep_ns) > 1_000_000_000 {
            self.last_sweep_ns = now;
            self.redirect
                .retain(|_, (_, used)| now.saturating_sub(*used) < REDIRECT_IDLE_NS);
        }
    }

    /// Frames handed here for `port`, copied into buffers of this port.
    fn take_handed(
        &mut self,
        mesh: &Mesh,
        port: IfIndex,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let Some(q) = mesh
            .frames
            .get(usize::from(self.me) * mesh.ports + port as usize)
        else {
            return 0;
        };
        let mut n = 0;
        while n < max && out.len() < out.capacity() {
            let Some(h) = q.pop() else { break };
            self.one.clear();
            self.inner.alloc(&mut self.one, 1);
            match self.one.pop() {
                Some(addr) => {
                    let len = usize::from(h.len);
                    let at = addr as usize;
                    if let Some(dst) = self.inner.memory().get_mut(at..at + len) {
                        dst.copy_from_slice(&h.buf[..len]);
                        out.push(Frame::rx(addr, h.len, port));
                        self.stats.handed_in += 1;
                        n += 1;
                    } else {
                        self.inner.free(&[addr]);
                        self.stats.handoff_dropped += 1;
                    }
                }
                None => self.stats.handoff_dropped += 1,
            }
            let _ = mesh.pool.push(h.buf);
        }
        n
    }
}

impl<P: PacketIo> PacketIo for Steered<P> {
    fn ports(&self) -> usize {
        self.inner.ports()
    }

    fn memory(&mut self) -> &mut [u8] {
        self.inner.memory()
    }

    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }

    fn rx_burst(&mut self, port: IfIndex, out: &mut Vec<Frame>, max: usize) -> usize {
        // Moved out and back rather than cloned: no reference count per burst.
        let Some(mesh) = self.mesh.take() else {
            return self.inner.rx_burst(port, out, max);
        };
        let n = self.steered_rx(&mesh, port, out, max);
        self.mesh = Some(mesh);
        n
    }

    fn tx_burst(&mut self, port: IfIndex, frames: &[Frame]) -> usize {
        self.inner.tx_burst(port, frames)
    }

    fn alloc(&mut self, out: &mut Vec<FrameAddr>, n: usize) {
        self.inner.alloc(out, n)
    }

    fn free(&mut self, addrs: &[FrameAddr]) {
        self.inner.free(addrs)
    }

    fn announce(&mut self, replies: &[Tuple]) {
        self.announce_replies(replies);
    }
}

impl<P: PacketIo> Steered<P> {
    /// [`PacketIo::rx_burst`] with several workers: the frames handed here,
    /// then this port's, each owned elsewhere handed on.
    fn steered_rx(
        &mut self,
        mesh: &Mesh,
        port: IfIndex,
        out: &mut Vec<Frame>,
        max: usize,
    ) -> usize {
        let handed = self.take_handed(mesh, port, out, max);
        self.scratch.clear();
        let room = max.saturating_sub(handed).min(self.scratch.capacity());
        if room == 0 {
            return handed;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        self.inner.rx_burst(port, &mut scratch, room);
        let now = self.inner.now_ns();
        self.take_redirects(mesh, now);
        self.give_back.clear();
        let mut kept = handed;
        for f in scratch.drain(..) {
            let at = f.addr as usize;
            let len = usize::from(f.len);
            let owner = match self.inner.memory().get(at..at + len) {
                Some(bytes) => owner_of(&mut self.redirect, &self.rss, bytes, now),
                None => Owner::One(self.me),
            };
            match owner {
                Owner::One(w) if w == self.me => {
                    out.push(f);
                    kept += 1;
                }
                Owner::One(w) => {
                    let bytes = &self.inner.memory()[at..at + len];
                    if mesh.hand(usize::from(w), port as usize, bytes) {
                        self.stats.handed_out += 1;
                    } else {
                        self.stats.handoff_dropped += 1;
                    }
                    self.give_back.push(f.addr);
                }
                Owner::All => {
                    for w in 0..mesh.workers {
                        if w != usize::from(self.me) {
                            let bytes = &self.inner.memory()[at..at + len];
                            if mesh.hand(w, port as usize, bytes) {
                                self.stats.arp_copies += 1;
                            } else {
                                self.stats.handoff_dropped += 1;
                            }
                        }
                    }
                    out.push(f);
                    kept += 1;
                }
            }
        }
        self.scratch = scratch;
        if !self.give_back.is_empty() {
            self.inner.free(&self.give_back);
        }
        kept
    }
}

/// The worker that owns a frame: an announced reply tuple's owner, else
/// the RSS model's queue.
fn owner_of(
    redirect: &mut HashMap<FlowKey, (u16, u64)>,
    rss: &Rss,
    frame: &[u8],
    now: u64,
) -> Owner {
    let Some((key, arp_reply)) = steer_key(frame) else {
        return Owner::One(0);
    };
    if arp_reply {
        return Owner::All;
    }
    if !redirect.is_empty() {
        if let Some((owner, used)) = redirect.get_mut(&key) {
            *used = now;
            return Owner::One(*owner);
        }
    }
    let (proto, src, dst, sport, dport) = key;
    Owner::One(rss.queue(proto, src, dst, sport, dport))
}

/// The key of a reply tuple, as [`steer_key`] computes it from a frame.
fn tuple_key(t: &Tuple) -> FlowKey {
    match t.proto {
        p if proto_has_ports(p) => (p, t.src, t.dst, t.sport, t.dport),
        PROTO_ICMP => (PROTO_ICMP, t.src, t.dst, t.sport, 0),
        p => (p, t.src, t.dst, 0, 0),
    }
}

/// A frame's steering key, and whether it is an ARP reply (for every
/// worker); `None` for what goes to worker 0 (ARP requests, non-IPv4,
/// malformed frames, which worker 0 counts).
fn steer_key(frame: &[u8]) -> Option<(FlowKey, bool)> {
    let ethertype = read_be16(frame, ethernet::field::ETHERTYPE.start)?;
    if ethertype == ethernet::ETHERTYPE_ARP {
        let arp = frame.get(ethernet::HEADER_LEN..)?;
        let op = read_be16(arp, arp::field::OPER.start)?;
        return (op == arp::OP_REPLY).then_some(((0, 0, 0, 0, 0), true));
    }
    if ethertype != ethernet::ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ethernet::HEADER_LEN..)?;
    let key = ip_key(ip, false)?;
    Some((key, false))
}

/// The key of an IPv4 packet (`inner`: a header quoted in an ICMP error,
/// whose key is that of the packet answering it).
fn ip_key(ip: &[u8], inner: bool) -> Option<FlowKey> {
    use ipv4::field;
    let vi = *ip.get(field::VER_IHL)?;
    if ip.len() < ipv4::MIN_HEADER_LEN || vi >> 4 != 4 {
        return None;
    }
    let hl = usize::from(vi & 0x0f) * 4;
    let proto = *ip.get(field::PROTOCOL)?;
    let (mut src, mut dst) = (
        read_be32(ip, field::SRC.start)?,
        read_be32(ip, field::DST.start)?,
    );
    if inner {
        std::mem::swap(&mut src, &mut dst);
    }
    let fragment =
        read_be16(ip, field::FLAGS_FRAG.start)? & (ipv4::FLAG_MF | ipv4::FRAG_OFFSET_MASK);
    if fragment != 0 && !inner {
        return Some((0, src, dst, 0, 0));
    }
    let l4 = ip.get(hl..)?;
    match proto {
        p if proto_has_ports(p) => {
            let (mut sp, mut dp) = (read_be16(l4, 0)?, read_be16(l4, 2)?);
            if inner {
                std::mem::swap(&mut sp, &mut dp);
            }
            Some((proto, src, dst, sp, dp))
        }
        PROTO_ICMP => {
            let ty = *l4.get(icmp::field::TYPE)?;
            if icmp::is_error(ty) && !inner {
                // Errors: the connection of the quoted header.
                return ip_key(l4.get(icmp::HEADER_LEN..)?, true);
            }
            let id = read_be16(l4, icmp::field::IDENT.start).unwrap_or(0);
            Some((PROTO_ICMP, src, dst, id, 0))
        }
        p => Some((p, src, dst, 0, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rss::SYMMETRIC_KEY;
    use fastables_packet::builder::{
        arp_reply, arp_request, icmp_time_exceeded, udp_frame, EthSpec, IpSpec, UdpSpec,
    };
    use fastables_packet::MacAddr;
    use std::collections::VecDeque;
    use std::net::Ipv4Addr;

    /// A port over a `Vec`: frames to receive per interface, what was freed.
    struct VecPort {
        mem: Vec<u8>,
        free: Vec<FrameAddr>,
        rx: Vec<VecDeque<Vec<u8>>>,
    }

    impl VecPort {
        fn new(ports: usize, frames: usize) -> VecPort {
            VecPort {
                mem: vec![0; frames * FRAME_SIZE],
                free: (0..frames as u64).map(|i| i * FRAME_SIZE as u64).collect(),
                rx: (0..ports).map(|_| VecDeque::new()).collect(),
            }
        }
    }

    impl PacketIo for VecPort {
        fn ports(&self) -> usize {
            self.rx.len()
        }
        fn memory(&mut self) -> &mut [u8] {
            &mut self.mem
        }
        fn now_ns(&self) -> u64 {
            1
        }
        fn rx_burst(&mut self, port: IfIndex, out: &mut Vec<Frame>, max: usize) -> usize {
            let mut n = 0;
            while n < max {
                let Some(bytes) = self.rx[port as usize].front() else {
                    break;
                };
                let Some(addr) = self.free.pop() else { break };
                let at = addr as usize;
                self.mem[at..at + bytes.len()].copy_from_slice(bytes);
                out.push(Frame::rx(addr, bytes.len() as u16, port));
                self.rx[port as usize].pop_front();
                n += 1;
            }
            n
        }
        fn tx_burst(&mut self, _: IfIndex, frames: &[Frame]) -> usize {
            frames.len()
        }
        fn alloc(&mut self, out: &mut Vec<FrameAddr>, n: usize) {
            for _ in 0..n {
                match self.free.pop() {
                    Some(a) => out.push(a),
                    None => return,
                }
            }
        }
        fn free(&mut self, addrs: &[FrameAddr]) {
            self.free.extend_from_slice(addrs);
        }
    }

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let ip = IpSpec {
            src: Ipv4Addr::from(src),
            dst: Ipv4Addr::from(dst),
            ..IpSpec::default()
        };
        udp_frame(
            &EthSpec::default(),
            &ip,
            &UdpSpec {
                src_port: sport,
                dst_port: dport,
            },
            b"x",
        )
    }

    /// Two workers on one interface, each with its port.
    fn pair(slots: usize) -> (Steered<VecPort>, Steered<VecPort>, Arc<Rss>) {
        let rss = Arc::new(Rss::new(SYMMETRIC_KEY, 2));
        let mesh = Mesh::new(2, 1, slots);
        let w0 = Steered::new(VecPort::new(1, 64), 0, rss.clone(), Some(mesh.clone()), 32);
        let w1 = Steered::new(VecPort::new(1, 64), 1, rss.clone(), Some(mesh), 32);
        (w0, w1, rss)
    }

    /// Flows (by source port) whose frames the model puts on `queue`.
    fn ports_on(rss: &Rss, queue: u16, n: usize) -> Vec<u16> {
        (1000..60000)
            .filter(|p| rss.queue(17, 0x0a00_0001, 0x0808_0808, *p, 53) == queue)
            .take(n)
            .collect()
    }

    fn rx(w: &mut Steered<VecPort>) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(32);
        w.rx_burst(0, &mut out, 32);
        let frames = out
            .iter()
            .map(|f| w.memory()[f.addr as usize..f.addr as usize + usize::from(f.len)].to_vec())
            .collect();
        let addrs: Vec<FrameAddr> = out.iter().map(|f| f.addr).collect();
        w.free(&addrs);
        frames
    }

    #[test]
    fn frames_reach_the_worker_the_model_names() {
        let (mut w0, mut w1, rss) = pair(16);
        let mine = ports_on(&rss, 0, 3);
        let theirs = ports_on(&rss, 1, 3);
        // Everything arrives on worker 0's queue (as veth may do).
        for p in mine.iter().chain(&theirs) {
            w0.inner_mut().rx[0].push_back(udp([10, 0, 0, 1], *p, [8, 8, 8, 8], 53));
        }
        let got0 = rx(&mut w0);
        assert_eq!(got0.len(), 3);
        assert_eq!(w0.stats().handed_out, 3);
        let got1 = rx(&mut w1);
        assert_eq!(got1.len(), 3);
        assert_eq!(w1.stats().handed_in, 3);
        for f in &got1 {
            let sport = u16::from_be_bytes([f[34], f[35]]);
            assert!(theirs.contains(&sport), "{sport}");
        }
        // The replies (symmetric key) meet the same workers.
        for p in &theirs {
            w0.inner_mut().rx[0].push_back(udp([8, 8, 8, 8], 53, [10, 0, 0, 1], *p));
        }
        assert!(rx(&mut w0).is_empty());
        assert_eq!(rx(&mut w1).len(), 3);
        // Every buffer is back: the ports' and the pool's.
        assert_eq!(w0.inner().free.len(), 64);
        assert_eq!(w1.inner().free.len(), 64);
    }

    #[test]
    fn arp_replies_go_to_every_worker_requests_to_the_first() {
        let (mut w0, mut w1, _) = pair(16);
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        let me = MacAddr([2, 0, 0, 0, 0, 1]);
        w1.inner_mut().rx[0].push_back(arp_reply(
            mac,
            Ipv4Addr::new(10, 0, 0, 9),
            me,
            Ipv4Addr::new(10, 0, 0, 1),
        ));
        w1.inner_mut().rx[0].push_back(arp_request(
            mac,
            Ipv4Addr::new(10, 0, 0, 9),
            Ipv4Addr::new(10, 0, 0, 1),
        ));
        let got1 = rx(&mut w1);
        assert_eq!(got1.len(), 1, "worker 1 keeps the reply only");
        assert_eq!(got1[0][21], 2);
        let got0 = rx(&mut w0);
        assert_eq!(
            got0.len(),
            2,
            "worker 0 gets the reply's copy and the request"
        );
        assert_eq!(w1.stats().arp_copies, 1);
        assert_eq!(w1.stats().handed_out, 1);
    }

    #[test]
    fn announced_replies_and_icmp_errors_reach_the_owner() {
        let (mut w0, mut w1, rss) = pair(16);
        // A DNATed connection owned by worker 0 whose reply tuple the model
        // puts on worker 1.
        let sport = ports_on(&rss, 1, 1)[0];
        let reply = Tuple {
            src: 0x0a00_0001,
            dst: 0x0808_0808,
            sport,
            dport: 53,
            proto: 17,
        };
        w0.announce(&[reply]);
        assert_eq!(w0.stats().redirects_known, 1, "the owner keeps its replies");
        assert_eq!(w0.stats().redirects_sent, 1);
        let frame = udp([10, 0, 0, 1], sport, [8, 8, 8, 8], 53);
        w1.inner_mut().rx[0].push_back(frame.clone());
        assert!(rx(&mut w1).is_empty(), "handed to the owner");
        assert_eq!(w1.stats().redirects_known, 1);
        assert_eq!(rx(&mut w0), vec![frame.clone()]);
        // An ICMP error quoting the connection's packet in the other
        // direction goes to the owner too.
        let quoted = udp([8, 8, 8, 8], 53, [10, 0, 0, 1], sport);
        let err = icmp_time_exceeded(Ipv4Addr::new(192, 0, 2, 1), &quoted);
        w1.inner_mut().rx[0].push_back(err.clone());
        assert!(rx(&mut w1).is_empty());
        assert_eq!(rx(&mut w0), vec![err]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_loses_no_buffer() {
        let (mut w0, mut w1, rss) = pair(2);
        for p in ports_on(&rss, 1, 5) {
            w0.inner_mut().rx[0].push_back(udp([10, 0, 0, 1], p, [8, 8, 8, 8], 53));
        }
        assert!(rx(&mut w0).is_empty());
        let s = w0.stats();
        assert_eq!((s.handed_out, s.handoff_dropped), (2, 3));
        assert_eq!(rx(&mut w1).len(), 2);
        assert_eq!(w0.inner().free.len(), 64);
        assert_eq!(w1.inner().free.len(), 64);
    }

    #[test]
    fn one_worker_is_the_port_itself() {
        let rss = Arc::new(Rss::new(SYMMETRIC_KEY, 1));
        let mut w = Steered::new(VecPort::new(1, 8), 0, rss, None, 8);
        w.inner_mut().rx[0].push_back(udp([10, 0, 0, 1], 1, [8, 8, 8, 8], 53));
        assert_eq!(rx(&mut w).len(), 1);
        assert_eq!(w.stats(), SteerStats::default());
    }
}
