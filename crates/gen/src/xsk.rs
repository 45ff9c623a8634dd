//! The AF_XDP loops of the generator and the sink, on one interface over
//! `fastables-xdp` (one socket on queue 0; libxdp's program redirects every
//! frame of that queue to it, so the sink sees all the device's traffic).
//!
//! Per batch, not per frame: one clock read, one pacing decision, one
//! allocation of frame buffers from the port's free list, one TX or RX
//! burst, one free. Frames the TX ring did not take are kept, already
//! written, and offered again first, so that the sequence numbers sent are
//! exactly `0..sent`.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fastables_config::{XdpMode, ZeroCopy};
use fastables_packet::arp::{self, ArpRepr, OP_REPLY};
use fastables_packet::parse::{parse_frame, L3};
use fastables_packet::MacAddr;
use fastables_port::{Frame, FrameAddr, PacketIo, FRAME_SIZE};
use fastables_xdp::{monotonic_ns, Options, PortSpec, XdpError, XdpPort};

use crate::fill::{Fill, FillSchedule, Next};
use crate::flow::Flows;
use crate::frame::{FrameWriter, Proto};
use crate::pace::Pacer;
use crate::payload::Stamp;
use crate::report::{self, GenReport, LatencyReport, SinkReport, SinkXdp};
use crate::sink::Sink;
use crate::tcp::{Close, Sent, TcpGen, TcpResponder};
use crate::GenError;

const SEC: u64 = 1_000_000_000;

/// The AF_XDP side of either loop.
#[derive(Debug, Clone)]
pub struct PortOptions {
    /// Device.
    pub dev: String,
    /// XDP attach mode.
    pub mode: XdpMode,
    /// Descriptors per ring.
    pub ring: u32,
    /// Frames per burst.
    pub batch: usize,
}

/// Where the generator's frames go at L2.
#[derive(Debug, Clone, Copy)]
pub enum NextHop {
    /// This destination MAC.
    Mac(MacAddr),
    /// Resolve this address by ARP first.
    Arp(Ipv4Addr),
}

/// The generator's options, checked.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// The port.
    pub port: PortOptions,
    /// Packets per second, 0 for as fast as possible.
    pub rate: u64,
    /// Stop after this many frames.
    pub count: Option<u64>,
    /// Stop after this long, ns.
    pub duration_ns: Option<u64>,
    /// Transport.
    pub proto: Proto,
    /// Frame size without FCS.
    pub size: usize,
    /// The flows.
    pub flows: Flows,
    /// The destination MAC or the next hop to ask for it.
    pub next_hop: NextHop,
    /// Source MAC (default: the device's).
    pub src_mac: Option<MacAddr>,
    /// `tcp`: how the connections end.
    pub close: Close,
}

/// The sink's options.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// The port.
    pub port: PortOptions,
    /// Stop when this many distinct sequence numbers arrived; at the end,
    /// the ones missing of `0..count` are lost.
    pub count: Option<u64>,
    /// Stop after this long, ns.
    pub duration_ns: Option<u64>,
    /// Stop when nothing of the generator's came for this long, ns, after
    /// something did.
    pub idle_ns: Option<u64>,
    /// Send every stamped frame back where it came from (addresses and
    /// ports swapped): the responder of `--conntrack-fill`; and answer TCP
    /// as the peer of `--proto tcp`'s connections.
    pub echo: bool,
    /// With `echo`: the TCP connections the responder keeps at once.
    pub tcp_connections: usize,
}

/// `--conntrack-fill`'s options (the generator's, plus the plan).
#[derive(Debug, Clone)]
pub struct FillOptions {
    /// The generator's options (`flows` gives the flow space; `rate`,
    /// `count` and `proto` are not used: the plan paces, UDP).
    pub gen: GenOptions,
    /// The plan.
    pub plan: crate::fill::FillPlan,
}

/// Opens the socket on queue 0 of `p.dev`: the port, its description, and
/// a warning when the device has other RX queues (whose frames go to the
/// kernel, unseen).
fn open(p: &PortOptions) -> Result<(XdpPort, String, Option<String>), GenError> {
    let spec = PortSpec {
        name: p.dev.clone(),
        mode: p.mode,
        zero_copy: ZeroCopy::Auto,
        one_queue_ok: true,
    };
    let port = XdpPort::open(
        &[spec],
        Options {
            ring: p.ring,
            ..Options::default()
        },
    )
    .map_err(|e| match e {
        XdpError::Socket { ref err, .. } if err.kind() == std::io::ErrorKind::ResourceBusy => {
            GenError::Busy(p.dev.clone())
        }
        e => GenError::Xdp(e),
    })?;
    let info = port.info().next().cloned();
    let warning = info.as_ref().filter(|i| i.rx_queues > 1).map(|i| {
        format!(
            "warning: {} has {} RX queues and this socket serves queue 0: frames the device puts \
             on the others are not seen (`ethtool -L {} combined 1`; a veth: `numrxqueues 1`)",
            i.name, i.rx_queues, i.name
        )
    });
    Ok((
        port,
        info.map(|i| i.to_string()).unwrap_or_default(),
        warning,
    ))
}

/// Frees every received frame (the generator does not listen, except for
/// ARP replies); returns how many there were.
fn drain_rx(
    port: &mut XdpPort,
    rx: &mut Vec<Frame>,
    addrs: &mut Vec<FrameAddr>,
    batch: usize,
) -> u64 {
    rx.clear();
    let n = port.rx_burst(0, rx, batch);
    if n > 0 {
        addrs.clear();
        addrs.extend(rx.iter().map(|f| f.addr));
        port.free(addrs);
    }
    n as u64
}

/// Asks for `next_hop`'s MAC (an ARP request every 500 ms, for 3 s).
fn resolve(
    port: &mut XdpPort,
    dev: &str,
    src_mac: MacAddr,
    sender: Ipv4Addr,
    next_hop: Ipv4Addr,
    stop: &AtomicBool,
) -> Result<MacAddr, GenError> {
    const TRIES: u64 = 6;
    let mut rx = Vec::with_capacity(64);
    let mut addrs = Vec::with_capacity(64);
    for _ in 0..TRIES {
        addrs.clear();
        port.alloc(&mut addrs, 1);
        if let Some(&a) = addrs.first() {
            let at = a as usize;
            let request = ArpRepr::request(src_mac, sender, next_hop);
            let n = port
                .memory()
                .get_mut(at..at + FRAME_SIZE)
                .and_then(|f| arp::emit_frame(f, src_mac, MacAddr::BROADCAST, &request).ok());
            let sent = n.is_some_and(|n| port.tx_burst(0, &[tx_frame(a, n)]) == 1);
            if !sent {
                port.free(&[a]);
            }
        }
        let until = monotonic_ns() + SEC / 2;
        while monotonic_ns() < until && !stop.load(Ordering::Relaxed) {
            rx.clear();
            if port.rx_burst(0, &mut rx, 64) == 0 {
                port.wait(10);
                continue;
            }
            let mut found = None;
            for f in &rx {
                let at = f.addr as usize;
                let bytes = port
                    .memory()
                    .get(at..at + usize::from(f.len))
                    .unwrap_or(&[]);
                if let Ok(p) = parse_frame(bytes) {
                    if let L3::Arp(a) = p.l3 {
                        if a.op == OP_REPLY && a.spa == next_hop {
                            found = Some(a.sha);
                        }
                    }
                }
            }
            addrs.clear();
            addrs.extend(rx.iter().map(|f| f.addr));
            port.free(&addrs);
            if let Some(m) = found {
                return Ok(m);
            }
        }
    }
    Err(GenError::Arp {
        dev: dev.to_string(),
        next_hop,
        secs: TRIES / 2,
    })
}

/// Take up to `n` free buffers of `port` (into `spare`) and let `write`
/// fill them in turn, given each buffer's address and bytes; it returns
/// false (nothing written) to stop. The buffers not written go back.
/// Returns how many were written.
fn write_frames(
    port: &mut impl PacketIo,
    spare: &mut Vec<FrameAddr>,
    n: usize,
    mut write: impl FnMut(FrameAddr, &mut [u8]) -> bool,
) -> usize {
    spare.clear();
    port.alloc(spare, n);
    let mut used = 0;
    let mem = port.memory();
    for &a in spare.iter() {
        let at = a as usize;
        let Some(buf) = mem.get_mut(at..at + FRAME_SIZE) else {
            break;
        };
        if !write(a, buf) {
            break;
        }
        used += 1;
    }
    port.free(spare.get(used..).unwrap_or(&[]));
    used
}

fn tx_frame(addr: FrameAddr, len: usize) -> Frame {
    Frame {
        addr,
        len: len as u16,
        port: 0,
    }
}

/// Waits for the pacer: sleeps when the next packet is far, spins when it
/// is near (a sleep wakes up tens of microseconds late).
fn pace_wait(wait_ns: u64) {
    if wait_ns > 200_000 {
        std::thread::sleep(Duration::from_nanos(wait_ns - 100_000));
    } else {
        std::hint::spin_loop();
    }
}

/// The generator's frame writer for `proto` (its source MAC, its size
/// checked against the device's MTU).
fn frame_writer(o: &GenOptions, proto: Proto) -> Result<FrameWriter, GenError> {
    let dev = &o.port.dev;
    let mtu = fastables_xdp::device_mtu(dev).unwrap_or(1500) as usize;
    let src_mac = match o.src_mac {
        Some(m) => m,
        None => fastables_xdp::device_mac(dev)
            .map(MacAddr)
            .ok_or_else(|| GenError::NoMac(dev.clone()))?,
    };
    FrameWriter::new(
        src_mac,
        MacAddr::ZERO,
        proto,
        o.size,
        (mtu + 14).min(FRAME_SIZE),
    )
}

/// Opens the generator's port and finds the destination MAC (given, or by
/// ARP), which `writer` then uses: the port, its description, the MAC.
fn connect(
    o: &GenOptions,
    writer: &mut FrameWriter,
    stop: &AtomicBool,
    progress: &mut impl FnMut(&str),
) -> Result<(XdpPort, String, MacAddr), GenError> {
    let (mut port, xdp, warning) = open(&o.port)?;
    if let Some(w) = warning {
        progress(&w);
    }
    let dst_mac = match o.next_hop {
        NextHop::Mac(m) => m,
        NextHop::Arp(ip) => {
            let src = o.flows.space().src.lo;
            resolve(&mut port, &o.port.dev, writer.src_mac(), src, ip, stop)?
        }
    };
    writer.set_dst(dst_mac);
    Ok((port, xdp, dst_mac))
}

/// Runs the generator until its count or duration, or until `stop`;
/// `progress` gets a line a second.
pub fn generate(
    mut o: GenOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(&str),
) -> Result<GenReport, GenError> {
    if o.proto == Proto::Tcp {
        return generate_tcp(o, stop, progress);
    }
    let dev = o.port.dev.clone();
    // Checked before the port opens, so that a bad size touches nothing.
    let mut writer = frame_writer(&o, o.proto)?;
    let (mut port, xdp, dst_mac) = connect(&o, &mut writer, stop, &mut progress)?;

    let batch = o.port.batch.max(1);
    let mut pacer = Pacer::new(o.rate, batch);
    let mut spare: Vec<FrameAddr> = Vec::with_capacity(batch);
    let mut pending: Vec<Frame> = Vec::with_capacity(batch);
    let mut rx: Vec<Frame> = Vec::with_capacity(batch);
    let mut rx_addrs: Vec<FrameAddr> = Vec::with_capacity(batch);
    let (mut seq, mut sent, mut bytes, mut full, mut ignored) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let t0 = monotonic_ns();
    let (mut last_tick, mut last_sent) = (t0, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let now = monotonic_ns();
        if o.duration_ns.is_some_and(|d| now - t0 >= d) {
            break;
        }
        if now - last_tick >= SEC {
            progress(&report::gen_progress(
                (now - t0) as f64 / 1e9,
                sent,
                sent - last_sent,
                (now - last_tick) as f64 / 1e9,
            ));
            (last_tick, last_sent) = (now, sent);
        }
        ignored += drain_rx(&mut port, &mut rx, &mut rx_addrs, batch);
        if pending.is_empty() {
            let left = o.count.map_or(u64::MAX, |c| c - seq);
            if left == 0 {
                break;
            }
            let want = batch.min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = pacer.take(now, want);
            if n == 0 {
                pace_wait(pacer.wait_ns(now, want));
                continue;
            }
            write_frames(&mut port, &mut spare, n, |a, f| {
                let (_, t) = o.flows.next(now);
                let Some(len) = writer.write(f, &t, Stamp { seq, ts_ns: now }) else {
                    return false;
                };
                pending.push(tx_frame(a, len));
                seq += 1;
                true
            });
        }
        let (k, b) = send_burst(&mut port, &mut pending, &mut full);
        sent += k;
        bytes += b;
    }
    // Unsent frames are the highest sequence numbers: they were never sent.
    spare.clear();
    spare.extend(pending.iter().map(|f| f.addr));
    port.free(&spare);
    // The kernel sends what the TX ring holds as the port reaps and kicks.
    let deadline = monotonic_ns() + SEC;
    while port.accounting().in_tx > 0 && monotonic_ns() < deadline {
        ignored += drain_rx(&mut port, &mut rx, &mut rx_addrs, batch);
        std::hint::spin_loop();
    }
    let secs = (monotonic_ns() - t0) as f64 / 1e9;
    Ok(GenReport {
        dev,
        xdp,
        proto: o.proto.name(),
        size: writer.size(),
        dst_mac: dst_mac.to_string(),
        sent,
        bytes,
        flows: o.flows.flows_used(),
        secs,
        pps: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
        tx_ring_full: full,
        not_completed: port.accounting().in_tx,
        rx_ignored: ignored,
        tcp: None,
    })
}

/// How long the generator waits, after sending stopped, for the peers to
/// acknowledge the last data (before closing).
const TCP_DRAIN_NS: u64 = SEC;
/// How long closing may take at most (the FINs, their answers, one
/// retransmission).
const TCP_CLOSE_NS: u64 = 3 * SEC;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sending,
    /// Until this time, or every flow acknowledged.
    Draining(u64),
    /// Until this time, or every close answered.
    Closing(u64),
}

/// `--proto tcp`: handshakes, data in sequence, closes (see
/// [`crate::tcp`]); the SYN-ACKs and ACKs are answered in the received
/// frame's buffer, per RX burst.
/// `frames` to the TX ring of queue 0, as many as it takes (the rest stay,
/// and `full` counts the burst that did not fit): frames and bytes sent.
fn send_burst(port: &mut XdpPort, frames: &mut Vec<Frame>, full: &mut u64) -> (u64, u64) {
    let k = port.tx_burst(0, frames);
    if k < frames.len() {
        *full += 1;
    }
    let bytes = frames[..k].iter().map(|f| u64::from(f.len)).sum::<u64>();
    frames.drain(..k);
    (k as u64, bytes)
}

fn generate_tcp(
    o: GenOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(&str),
) -> Result<GenReport, GenError> {
    let dev = o.port.dev.clone();
    let mut writer = frame_writer(&o, Proto::Tcp)?;
    let space = *o.flows.space();
    let flows = crate::tcp::flows_needed(&space, o.flows.mode(), o.duration_ns)?;
    let (mut port, xdp, dst_mac) = connect(&o, &mut writer, stop, &mut progress)?;
    let size = writer.size();
    let t0 = monotonic_ns();
    let mut tg = TcpGen::new(
        space,
        o.flows.mode(),
        flows,
        writer,
        t0 ^ u64::from(std::process::id()) << 40,
    );
    tg.set_dst(dst_mac);

    let batch = o.port.batch.max(1);
    let mut pacer = Pacer::new(o.rate, batch);
    let mut spare: Vec<FrameAddr> = Vec::with_capacity(batch);
    let mut pending: Vec<Frame> = Vec::with_capacity(batch);
    // Answers and retransmissions: at most a burst of each.
    let mut ctrl: Vec<Frame> = Vec::with_capacity(2 * batch);
    let mut rx: Vec<Frame> = Vec::with_capacity(batch);
    let mut addrs: Vec<FrameAddr> = Vec::with_capacity(batch);
    let (mut seq, mut sent, mut bytes, mut full, mut ignored) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut last_tick, mut last_sent) = (t0, 0u64);
    let mut phase = Phase::Sending;
    let mut send_end = t0;
    loop {
        let now = monotonic_ns();
        match phase {
            Phase::Sending => {
                let done = stop.load(Ordering::Relaxed)
                    || o.duration_ns.is_some_and(|d| now - t0 >= d)
                    || (o.count.is_some_and(|c| seq >= c) && pending.is_empty())
                    || !tg.can_send();
                if done {
                    // Data already written (and in the flows' sequence
                    // space) still goes, below.
                    phase = Phase::Draining(now + TCP_DRAIN_NS);
                    send_end = now;
                }
            }
            Phase::Draining(until) => {
                if tg.unacked_flows() == 0 || now >= until {
                    tg.start_close();
                    phase = Phase::Closing(now + TCP_CLOSE_NS);
                }
            }
            Phase::Closing(until) => {
                if (tg.closed() && ctrl.is_empty()) || now >= until || o.close == Close::None {
                    break;
                }
            }
        }
        if now - last_tick >= SEC {
            let c = tg.counters();
            progress(&format!(
                "{}  handshakes {} done {} pending {} failed",
                report::gen_progress(
                    (now - t0) as f64 / 1e9,
                    sent,
                    sent - last_sent,
                    (now - last_tick) as f64 / 1e9,
                ),
                c.handshakes_completed,
                tg.handshakes_pending(),
                c.handshakes_failed
            ));
            (last_tick, last_sent) = (now, sent);
        }
        let mut busy = false;
        // The peers' segments, answered in place.
        if ctrl.len() <= batch {
            rx.clear();
            if port.rx_burst(0, &mut rx, batch) > 0 {
                busy = true;
                let mem = port.memory();
                addrs.clear();
                for f in &rx {
                    let at = f.addr as usize;
                    let answer = mem
                        .get_mut(at..at + FRAME_SIZE)
                        .and_then(|b| tg.on_frame(b, usize::from(f.len), now));
                    match answer {
                        Some(len) => ctrl.push(tx_frame(f.addr, len)),
                        None => addrs.push(f.addr),
                    }
                }
                port.free(&addrs);
            }
        }
        // Retransmissions, closes.
        let closing = matches!(phase, Phase::Closing(_)) && tg.close_pending();
        if ctrl.len() < 2 * batch && (tg.timer_due(now) || closing) {
            let want = 2 * batch - ctrl.len();
            write_frames(&mut port, &mut spare, want, |a, buf| {
                let len = tg
                    .retransmit(now, buf)
                    .or_else(|| closing.then(|| tg.close_next(now, buf, o.close)).flatten());
                let Some(len) = len else { return false };
                ctrl.push(tx_frame(a, len));
                true
            });
        }
        // SYNs and data, paced.
        if phase == Phase::Sending && pending.is_empty() {
            let left = o.count.map_or(u64::MAX, |c| c - seq);
            let want = batch.min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = if want > 0 { pacer.take(now, want) } else { 0 };
            if n > 0 {
                let used = write_frames(&mut port, &mut spare, n, |a, buf| {
                    match tg.next_frame(now, buf, seq) {
                        Sent::Syn(len) => ctrl.push(tx_frame(a, len)),
                        Sent::Data(len) => {
                            pending.push(tx_frame(a, len));
                            seq += 1;
                        }
                        Sent::Nothing => return false,
                    }
                    true
                });
                pacer.refund(n - used);
                if used == 0 && !busy && ctrl.is_empty() {
                    // Handshakes pending, windows full: until a segment
                    // comes (or 1 ms).
                    port.wait(1);
                }
            } else if want > 0 && ctrl.is_empty() && !busy {
                // Short sleeps only: a SYN-ACK waits in the ring meanwhile.
                pace_wait(pacer.wait_ns(now, want).min(200_000));
            }
        }
        if !ctrl.is_empty() {
            busy = true;
            send_burst(&mut port, &mut ctrl, &mut full);
        }
        if !pending.is_empty() {
            busy = true;
            let (k, b) = send_burst(&mut port, &mut pending, &mut full);
            sent += k;
            bytes += b;
        }
        if !busy && phase != Phase::Sending {
            port.wait(1);
        }
    }
    spare.clear();
    spare.extend(ctrl.iter().chain(pending.iter()).map(|f| f.addr));
    port.free(&spare);
    let deadline = monotonic_ns() + SEC;
    while port.accounting().in_tx > 0 && monotonic_ns() < deadline {
        ignored += drain_rx(&mut port, &mut rx, &mut addrs, batch);
        std::hint::spin_loop();
    }
    // The rate over the sending; the drain and the closes after it.
    let secs = (send_end - t0) as f64 / 1e9;
    let mut tcp = tg.report(o.close);
    tcp.total_secs = (monotonic_ns() - t0) as f64 / 1e9;
    Ok(GenReport {
        dev,
        xdp,
        proto: Proto::Tcp.name(),
        size,
        dst_mac: dst_mac.to_string(),
        sent,
        bytes,
        flows: tg.flows_started(),
        secs,
        pps: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
        tx_ring_full: full,
        not_completed: port.accounting().in_tx,
        rx_ignored: ignored + tg.counters().not_tcp,
        tcp: Some(tcp),
    })
}

/// Turns a received Ethernet/IPv4 UDP or TCP frame into its echo, in place:
/// MACs, addresses and ports swapped. The IPv4 and L4 checksums stay valid
/// (the one's complement sum does not depend on the order of the words it
/// adds). False for a frame too short to be one.
pub fn swap_for_echo(f: &mut [u8]) -> bool {
    if f.len() < 14 + 20 + 4 || f[12..14] != [0x08, 0x00] {
        return false;
    }
    let hl = usize::from(f[14] & 0x0f) * 4;
    if hl < 20 || f.len() < 14 + hl + 4 {
        return false;
    }
    for i in 0..6 {
        f.swap(i, 6 + i);
    }
    for i in 0..4 {
        f.swap(14 + 12 + i, 14 + 16 + i);
    }
    let l4 = 14 + hl;
    for i in 0..2 {
        f.swap(l4 + i, l4 + 2 + i);
    }
    true
}

/// Runs `--conntrack-fill` until its duration or `stop`: the plan's
/// packets out, the echoes in; `progress` gets a line a second. Returns the
/// accounting, the XDP mode and the end time.
pub fn fill(
    o: FillOptions,
    stop: &AtomicBool,
    mut progress: impl FnMut(&str),
) -> Result<(Fill, String, u64), GenError> {
    let g = o.gen;
    let mut writer = frame_writer(&g, Proto::Udp)?;
    let space = *g.flows.space();
    let needed = o.plan.established as u128
        + u128::from(o.plan.new_rate) * u128::from(g.duration_ns.unwrap_or(0) / SEC + 1);
    if space.size() < needed {
        return Err(GenError::Flow(crate::flow::FlowError::TooManyFlows {
            flows: u64::try_from(needed).unwrap_or(u64::MAX),
            size: space.size(),
        }));
    }
    let (mut port, xdp, _) = connect(&g, &mut writer, stop, &mut progress)?;
    let batch = g.port.batch.max(1);
    let t0 = monotonic_ns();
    let mut sched = FillSchedule::new(o.plan, t0);
    let mut acc = Fill::new(o.plan, space, t0);
    let mut spare: Vec<FrameAddr> = Vec::with_capacity(batch);
    let mut pending: Vec<Frame> = Vec::with_capacity(batch);
    let mut rx: Vec<Frame> = Vec::with_capacity(batch);
    let mut addrs: Vec<FrameAddr> = Vec::with_capacity(batch);
    let mut seq = 0u64;
    let mut last_tick = t0;
    let mut shown = 0usize;
    let end_at = t0 + g.duration_ns.unwrap_or(u64::MAX - t0);
    let mut now = t0;
    // Sending stops at the end; echoes are awaited 500 ms more.
    while !stop.load(Ordering::Relaxed) && now < end_at.saturating_add(SEC / 2) {
        now = monotonic_ns();
        // Echoes.
        rx.clear();
        if port.rx_burst(0, &mut rx, batch) > 0 {
            let mem = port.memory();
            addrs.clear();
            for f in &rx {
                let at = f.addr as usize;
                if let crate::sink::Recognised::Stamp(s, t) =
                    crate::sink::stamp_of(mem.get(at..at + usize::from(f.len)).unwrap_or(&[]))
                {
                    acc.echo(s.seq, s.ts_ns, &t, now);
                }
                addrs.push(f.addr);
            }
            port.free(&addrs);
        }
        if now - last_tick >= SEC {
            last_tick = now;
            // The seconds that are over (their echoes have had 1 s to come).
            let secs = acc.seconds();
            while shown + 1 < secs.len() {
                let s = secs[shown];
                progress(&format!(
                    "fill second {shown}: new {} sent, {} answered; established {} of {} answering",
                    s.new_sent, s.new_answered, s.established_answering, o.plan.established
                ));
                shown += 1;
            }
        }
        if now >= end_at {
            continue;
        }
        // Packets due.
        if pending.is_empty() {
            write_frames(&mut port, &mut spare, batch, |a, f| {
                let Some(n) = sched.next(now) else {
                    return false;
                };
                let t = sched.tuple(&space, n);
                let Some(len) = writer.write(f, &t, Stamp { seq, ts_ns: now }) else {
                    return false;
                };
                acc.sent(seq, now, matches!(n, Next::New(_)));
                pending.push(tx_frame(a, len));
                seq += 1;
                true
            });
        }
        if !pending.is_empty() {
            let k = port.tx_burst(0, &pending);
            pending.drain(..k);
        } else {
            std::hint::spin_loop();
        }
    }
    spare.clear();
    spare.extend(pending.iter().map(|f| f.addr));
    port.free(&spare);
    Ok((acc, xdp, now.min(end_at)))
}

/// Runs the sink until its count, duration or idle time, or until `stop`;
/// `ready` is called once the socket is open, `progress` a second.
pub fn sink(
    o: SinkOptions,
    stop: &AtomicBool,
    ready: impl FnOnce(&str),
    mut progress: impl FnMut(&str),
) -> Result<SinkReport, GenError> {
    let (mut port, xdp, warning) = open(&o.port)?;
    if let Some(w) = warning {
        progress(&w);
    }
    ready(&xdp);
    let batch = o.port.batch.max(1);
    let mut s = Sink::new();
    let mut responder = o
        .echo
        .then(|| TcpResponder::new(o.tcp_connections, monotonic_ns().rotate_left(17)));
    let mut rx: Vec<Frame> = Vec::with_capacity(batch);
    let mut addrs: Vec<FrameAddr> = Vec::with_capacity(batch);
    let mut back: Vec<Frame> = Vec::with_capacity(batch);
    let mut echoed = 0u64;
    let t0 = monotonic_ns();
    let (mut first, mut last) = (None::<u64>, t0);
    // The last TCP segment the responder handled (a close has no stamp).
    let mut last_peer = t0;
    let (mut last_tick, mut last_received) = (t0, 0u64);
    let mut idle_rounds = 0u32;
    while !stop.load(Ordering::Relaxed) {
        rx.clear();
        let n = port.rx_burst(0, &mut rx, batch);
        let now = monotonic_ns();
        if n > 0 {
            idle_rounds = 0;
            let before = s.counters().received;
            let mem = port.memory();
            addrs.clear();
            back.clear();
            for f in &rx {
                let at = f.addr as usize;
                let len = usize::from(f.len);
                if let Some(r) = responder.as_mut() {
                    // TCP: the peer's answer, in the frame's buffer; the
                    // data segments' stamps counted first.
                    let buf = mem.get_mut(at..at + FRAME_SIZE).unwrap_or(&mut []);
                    if let Some(seg) = buf.get(..len).and_then(crate::tcp::parse_segment) {
                        if seg.len > 0 {
                            s.frame(&buf[..len], now);
                        }
                        last_peer = now;
                        match r.on_segment(&seg, buf) {
                            Some(n) => back.push(tx_frame(f.addr, n)),
                            None => addrs.push(f.addr),
                        }
                        continue;
                    }
                }
                let bytes = mem.get_mut(at..at + len).unwrap_or(&mut []);
                let before = s.counters().received;
                s.frame(bytes, now);
                if o.echo && s.counters().received > before && swap_for_echo(bytes) {
                    back.push(tx_frame(f.addr, usize::from(f.len)));
                } else {
                    addrs.push(f.addr);
                }
            }
            if !back.is_empty() {
                let k = port.tx_burst(0, &back);
                echoed += k as u64;
                addrs.extend(back[k..].iter().map(|f| f.addr));
            }
            port.free(&addrs);
            if s.counters().received > before {
                first.get_or_insert(now);
                last = now;
            }
        } else {
            idle_rounds = idle_rounds.saturating_add(1);
            if idle_rounds > 256 {
                port.wait(1);
            }
        }
        if now - last_tick >= SEC {
            let c = s.counters();
            let interval = s.take_interval();
            progress(&report::sink_progress(
                (now - t0) as f64 / 1e9,
                &c,
                s.unique(),
                c.received - last_received,
                (now - last_tick) as f64 / 1e9,
                &interval,
            ));
            (last_tick, last_received) = (now, c.received);
        }
        // With TCP connections open, a count reached waits for their
        // closes: until 1 s without a segment.
        let lingering = responder
            .as_ref()
            .is_some_and(|r| r.open() > 0 && now - last_peer < SEC);
        if (o.count.is_some_and(|c| s.unique() >= c) && !lingering)
            || o.duration_ns.is_some_and(|d| now - t0 >= d)
            || o.idle_ns
                .is_some_and(|d| first.is_some() && now - last.max(last_peer) >= d)
        {
            break;
        }
    }
    if let Some(c) = o.count {
        s.finish(c);
    }
    let k = port.kernel_stats(0).unwrap_or_default();
    let c = s.counters();
    if o.echo {
        progress(&format!(
            "sink: {echoed} frames sent back (UDP echoes, TCP answers)"
        ));
    }
    let secs = first.map_or(0.0, |f| (last - f) as f64 / 1e9);
    Ok(SinkReport {
        dev: o.port.dev,
        xdp,
        counters: c,
        unique: s.unique(),
        highest_seq: s.highest(),
        first_flow: s
            .first_flow()
            .map(|t| format!("{}:{} -> {}:{}", t.src, t.sport, t.dst, t.dport)),
        secs,
        pps: if secs > 0.0 {
            c.received as f64 / secs
        } else {
            0.0
        },
        latency: LatencyReport::from(s.latency()),
        kernel: SinkXdp {
            rx_dropped: k.rx_dropped,
            rx_ring_full: k.rx_ring_full,
            fill_ring_empty: k.rx_fill_ring_empty_descs,
        },
        tcp: responder
            .as_ref()
            .map(|r| r.counters())
            .filter(|c| c.segments > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastables_packet::builder::{udp_frame, EthSpec, IpSpec, UdpSpec};

    #[test]
    fn an_echo_swaps_both_ends_and_keeps_its_checksums() {
        let f = udp_frame(
            &EthSpec {
                src: MacAddr([2, 0, 0, 0, 0, 1]),
                dst: MacAddr([2, 0, 0, 0, 0, 2]),
                ..EthSpec::default()
            },
            &IpSpec {
                src: Ipv4Addr::new(10, 0, 2, 15),
                dst: Ipv4Addr::new(8, 8, 8, 8),
                ..IpSpec::default()
            },
            &UdpSpec {
                src_port: 40000,
                dst_port: 9,
            },
            b"a stamp would be here",
        );
        let mut e = f.clone();
        assert!(swap_for_echo(&mut e));
        assert_eq!((&e[0..6], &e[6..12]), (&f[6..12], &f[0..6]));
        assert_eq!((&e[26..30], &e[30..34]), (&f[30..34], &f[26..30]));
        assert_eq!((&e[34..36], &e[36..38]), (&f[36..38], &f[34..36]));
        let p = parse_frame(&e).expect("parses");
        assert!(
            fastables_packet::parse::l4_checksum_ok(&e, &p),
            "L4 checksum"
        );
        assert!(
            fastables_packet::checksum::verify(&e[14..34]),
            "IP checksum"
        );
        assert!(!swap_for_echo(&mut [0u8; 20]));
    }
}
