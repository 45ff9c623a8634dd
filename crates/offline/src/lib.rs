//! The offline port: [`PacketIo`] over pcap files, used by `fastables sim`.
//!
//! Each input is one pcap file bound to an ingress interface. The inputs are
//! merged by capture timestamp into one stream; ties are broken by interface
//! order (the configuration's `[[interface]]` order), then by the order the
//! inputs were given, then by record order inside a file. (A file whose
//! timestamps go backwards is still read in file order: the merge only ever
//! looks at the next record of each file.) The pipeline's time (`now_ns`) is the
//! capture timestamp of the frames being processed, except that it never goes
//! backwards: a frame older than the one before it is processed (and its
//! consequences written) at the earlier frame's time.
//!
//! A receive burst holds consecutive frames of the merged stream that share the
//! interface and the timestamp, so every frame is processed at its own time and
//! in stream order. Frames sent on an interface are written to
//! `OUT_DIR/<iface>.pcap` with the time of the burst that caused them. One file
//! is created per configured interface, empty if nothing left through it.
//!
//! [`pcap`] reads and writes the files.
//!
//! Nothing here reads a clock or depends on hashing order: the same inputs give
//! the same output bytes.

pub mod pcap;

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use fastables_packet::ipv4::{self, PROTO_TCP, PROTO_UDP};
use fastables_packet::{ethernet, read_be16, read_be32, IfIndex};

use fastables_dataplane::drop::DropReason;
use fastables_dataplane::worker::Worker;
use fastables_port::rss::Rss;
use fastables_port::{Frame, FrameAddr, PacketIo, FRAME_SIZE};

use crate::pcap::{PcapError, PcapReader, PcapRecord, PcapWriter, LINKTYPE_ETHERNET};

/// Errors of the offline port.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Reading an input or writing an output pcap failed.
    #[error("{0}")]
    Pcap(#[from] PcapError),
    /// An input names an interface that is not in the configuration.
    #[error(
        "--in {iface}={file}: no interface `{iface}` in the configuration (configured: {known})"
    )]
    UnknownInterface {
        /// The interface name given.
        iface: String,
        /// The input file.
        file: String,
        /// The configured interface names, comma-separated.
        known: String,
    },
    /// An input pcap is not Ethernet.
    #[error("{file}: link type {linktype} is not Ethernet (1); capture with `tcpdump -i IFACE` on an Ethernet device")]
    NotEthernet {
        /// The input file.
        file: String,
        /// Its `LINKTYPE_*`.
        linktype: u32,
    },
    /// The worker took no frame from the port although input remains (a bug in
    /// the worker loop or the port, not in the input).
    #[error("internal error: the worker loop stopped taking frames with input left on interface {iface}")]
    Stalled {
        /// The interface whose next frame was not taken.
        iface: String,
    },
    /// An input file is also one of the output files (it would be overwritten while read).
    #[error("--in {iface}={file}: this file is also the output {file}; choose another --out-dir")]
    InputIsOutput {
        /// The interface of the input.
        iface: String,
        /// The file.
        file: String,
    },
    /// The output directory could not be created.
    #[error("{dir}: cannot create the output directory: {source}")]
    OutDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One input: a pcap file received on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineInput {
    /// The ingress interface name (must be configured).
    pub iface: String,
    /// The pcap file.
    pub path: PathBuf,
}

/// Per-interface totals of an offline run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceTotals {
    /// Interface name.
    pub name: String,
    /// Frames read from the inputs of this interface and given to the pipeline.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames written to `OUT_DIR/<name>.pcap`.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Input frames longer than a frame buffer ([`FRAME_SIZE`]): skipped, not given to the pipeline.
    pub rx_too_long: u64,
}

/// What an offline run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// One entry per configured interface, in configuration order.
    pub interfaces: Vec<IfaceTotals>,
    /// Drop counters with a non-zero count, in [`DropReason::ALL`] order.
    pub drops: Vec<(DropReason, u64)>,
    /// The capture time of the last frame, in nanoseconds (0 without frames).
    pub last_ns: u64,
}

impl Summary {
    /// Total frames dropped by the pipeline.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}

impl std::fmt::Display for Summary {
    /// A small table: per interface rx/tx, then the drops by reason.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = self
            .interfaces
            .iter()
            .map(|i| i.name.len())
            .max()
            .unwrap_or(0)
            .max("interface".len());
        writeln!(
            f,
            "{:<w$} {:>10} {:>12} {:>10} {:>12}",
            "interface", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes"
        )?;
        for i in &self.interfaces {
            writeln!(
                f,
                "{:<w$} {:>10} {:>12} {:>10} {:>12}",
                i.name, i.rx_packets, i.rx_bytes, i.tx_packets, i.tx_bytes
            )?;
            if i.rx_too_long > 0 {
                writeln!(
                    f,
                    "  {} input frames longer than {FRAME_SIZE} bytes were skipped",
                    i.rx_too_long
                )?;
            }
        }
        if self.drops.is_empty() {
            writeln!(f, "dropped: 0")?;
        } else {
            writeln!(f, "dropped: {}", self.dropped())?;
            for (r, n) in &self.drops {
                writeln!(f, "  {:<28} {n}", r.name())?;
            }
        }
        Ok(())
    }
}

struct Input {
    iface: IfIndex,
    reader: PcapReader<BufReader<File>>,
    head: Option<PcapRecord>,
}

/// The offline port. Build it with [`OfflinePort::open`], drive it with [`run`].
pub struct OfflinePort {
    names: Vec<String>,
    inputs: Vec<Input>,
    writers: Vec<PcapWriter<BufWriter<File>>>,
    totals: Vec<IfaceTotals>,
    memory: Vec<u8>,
    free: Vec<FrameAddr>,
    now: u64,
    error: Option<OfflineError>,
    /// Input records taken so far (given to the pipeline or skipped).
    consumed: u64,
    /// With several workers: how frames are spread over them.
    dispatch: Option<Dispatch>,
}

/// The emulated NIC of a multi-worker run: RSS, plus the hand-offs the
/// owners asked for (a reply tuple goes to the worker that owns its
/// connection instead of the one RSS picks).
struct Dispatch {
    rss: Rss,
    redirect: std::collections::HashMap<(u8, u32, u32, u16, u16), u16>,
    current: u16,
}

impl Dispatch {
    fn worker_of(&self, frame: &[u8]) -> u16 {
        if let Some(k) = tcp_udp_key(frame) {
            if let Some(&w) = self.redirect.get(&k) {
                return w;
            }
        }
        self.rss.queue_of_frame(frame)
    }
}

/// `(proto, src, dst, sport, dport)` of an unfragmented TCP or UDP datagram.
fn tcp_udp_key(frame: &[u8]) -> Option<(u8, u32, u32, u16, u16)> {
    use fastables_packet::ipv4::field;
    let ip = frame.get(ethernet::HEADER_LEN..)?;
    let vi = *ip.get(field::VER_IHL)?;
    if read_be16(frame, ethernet::field::ETHERTYPE.start)? != ethernet::ETHERTYPE_IPV4
        || ip.len() < ipv4::MIN_HEADER_LEN
        || vi >> 4 != 4
    {
        return None;
    }
    let proto = *ip.get(field::PROTOCOL)?;
    let fragment =
        read_be16(ip, field::FLAGS_FRAG.start)? & (ipv4::FLAG_MF | ipv4::FRAG_OFFSET_MASK);
    if !matches!(proto, PROTO_TCP | PROTO_UDP) || fragment != 0 {
        return None;
    }
    // TCP and UDP alike: the ports are the first two fields.
    let l4 = usize::from(vi & 0x0f) * 4;
    Some((
        proto,
        read_be32(ip, field::SRC.start)?,
        read_be32(ip, field::DST.start)?,
        read_be16(ip, l4)?,
        read_be16(ip, l4 + 2)?,
    ))
}

impl OfflinePort {
    /// Opens the inputs and creates `out_dir/<iface>.pcap` for every interface in
    /// `iface_names` (index = position). `batch` is the largest receive burst the
    /// worker asks for; the port allocates frame memory for it.
    pub fn open(
        iface_names: &[&str],
        inputs: &[OfflineInput],
        out_dir: &Path,
        batch: usize,
    ) -> Result<OfflinePort, OfflineError> {
        let mut opened = Vec::with_capacity(inputs.len());
        for inp in inputs {
            let Some(idx) = iface_names.iter().position(|n| *n == inp.iface) else {
                return Err(OfflineError::UnknownInterface {
                    iface: inp.iface.clone(),
                    file: inp.path.display().to_string(),
                    known: iface_names.join(", "),
                });
            };
            let reader = PcapReader::open(&inp.path)?;
            if reader.linktype() != LINKTYPE_ETHERNET {
                return Err(OfflineError::NotEthernet {
                    file: inp.path.display().to_string(),
                    linktype: reader.linktype(),
                });
            }
            opened.push(Input {
                iface: idx as IfIndex,
                reader,
                head: None,
            });
        }
        // Tie-break order: interface order, then the order the inputs were given
        // (a stable sort keeps the latter).
        opened.sort_by_key(|i| i.iface);

        std::fs::create_dir_all(out_dir).map_err(|source| OfflineError::OutDir {
            dir: out_dir.to_path_buf(),
            source,
        })?;
        let outputs: Vec<PathBuf> = iface_names
            .iter()
            .map(|n| out_dir.join(format!("{n}.pcap")))
            .collect();
        for inp in inputs {
            let Ok(i) = inp.path.canonicalize() else {
                continue;
            };
            if outputs
                .iter()
                .any(|o| o.canonicalize().is_ok_and(|o| o == i))
            {
                return Err(OfflineError::InputIsOutput {
                    iface: inp.iface.clone(),
                    file: inp.path.display().to_string(),
                });
            }
        }
        let mut writers = Vec::with_capacity(iface_names.len());
        for o in &outputs {
            writers.push(PcapWriter::create(o)?);
        }
        // The worker holds at most one burst plus as many spare buffers at a time;
        // keep twice that so allocation never runs dry.
        let nframes = 4 * batch.max(1);
        let mut port = OfflinePort {
            names: iface_names.iter().map(|s| s.to_string()).collect(),
            inputs: opened,
            writers,
            totals: iface_names
                .iter()
                .map(|n| IfaceTotals {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            memory: vec![0u8; nframes * FRAME_SIZE],
            free: (0..nframes)
                .rev()
                .map(|i| (i * FRAME_SIZE) as FrameAddr)
                .collect(),
            now: 0,
            error: None,
            consumed: 0,
            dispatch: None,
        };
        for k in 0..port.inputs.len() {
            port.refill(k)?;
        }
        Ok(port)
    }

    /// Loads the next record of input `k` into its head (none at end of file).
    fn refill(&mut self, k: usize) -> Result<(), OfflineError> {
        if let Some(inp) = self.inputs.get_mut(k) {
            inp.head = inp.reader.next_record()?;
        }
        Ok(())
    }

    /// The input holding the next frame of the merged stream.
    fn next_input(&self) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for (k, inp) in self.inputs.iter().enumerate() {
            if let Some(h) = &inp.head {
                // Strictly smaller only: on a tie the earlier input (interface order,
                // then argument order) wins.
                match best {
                    Some((_, ts)) if h.ts_ns >= ts => {}
                    _ => best = Some((k, h.ts_ns)),
                }
            }
        }
        best.map(|(k, _)| k)
    }

    /// The worker (RX queue) the next frame of the merged stream goes to:
    /// 0 without [`run_workers`]' dispatch.
    fn next_queue(&self) -> u16 {
        match (&self.dispatch, self.next_input()) {
            (Some(d), Some(k)) => self.inputs[k]
                .head
                .as_ref()
                .map_or(0, |h| d.worker_of(&h.data)),
            _ => 0,
        }
    }

    /// The interface of the next frame of the merged stream; `None` when all inputs are done.
    pub fn next_port(&self) -> Option<IfIndex> {
        self.next_input().map(|k| self.inputs[k].iface)
    }

    /// The first error met inside a [`PacketIo`] call (reading the next record of
    /// an input, writing an output), which the trait cannot return.
    pub fn take_error(&mut self) -> Option<OfflineError> {
        self.error.take()
    }

    /// Flushes the outputs and returns the per-interface totals.
    pub fn finish(mut self) -> Result<Vec<IfaceTotals>, OfflineError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        for w in &mut self.writers {
            w.flush()?;
        }
        Ok(self.totals)
    }

    /// The interface names, by index.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl PacketIo for OfflinePort {
    fn ports(&self) -> usize {
        self.names.len()
    }

    fn memory(&mut self) -> &mut [u8] {
        &mut self.memory
    }

    fn now_ns(&self) -> u64 {
        self.now
    }

    fn rx_burst(&mut self, port: IfIndex, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        let mut burst_ts: Option<u64> = None;
        while n < max && self.error.is_none() {
            let Some(k) = self.next_input() else { break };
            let inp = &self.inputs[k];
            let Some(head) = &inp.head else { break };
            if inp.iface != port || burst_ts.is_some_and(|t| t != head.ts_ns) {
                break;
            }
            if let Some(d) = &self.dispatch {
                if d.worker_of(&head.data) != d.current {
                    break;
                }
            }
            let ts = head.ts_ns;
            if head.data.len() > FRAME_SIZE {
                if let Some(t) = self.totals.get_mut(port as usize) {
                    t.rx_too_long += 1;
                }
            } else {
                let Some(addr) = self.free.pop() else { break };
                let len = head.data.len();
                let start = addr as usize;
                self.memory[start..start + len].copy_from_slice(&head.data);
                out.push(Frame::rx(addr, len as u16, port));
                if let Some(t) = self.totals.get_mut(port as usize) {
                    t.rx_packets += 1;
                    t.rx_bytes += len as u64;
                }
                n += 1;
            }
            burst_ts = Some(ts);
            self.now = self.now.max(ts);
            self.consumed += 1;
            if let Err(e) = self.refill(k) {
                self.error = Some(e);
                self.inputs[k].head = None;
            }
        }
        n
    }

    fn tx_burst(&mut self, port: IfIndex, frames: &[Frame]) -> usize {
        let Some(w) = self.writers.get_mut(port as usize) else {
            return 0;
        };
        for f in frames {
            let start = f.addr as usize;
            let len = usize::from(f.len).min(FRAME_SIZE);
            // Every buffer this port hands out is a whole frame inside `memory`;
            // a descriptor outside it is not ours (a worker bug): skip it.
            let Some(bytes) = self.memory.get(start..start + len) else {
                continue;
            };
            if self.error.is_none() {
                if let Err(e) = w.write_frame(self.now, bytes) {
                    self.error = Some(e.into());
                }
            }
            if let Some(t) = self.totals.get_mut(port as usize) {
                t.tx_packets += 1;
                t.tx_bytes += len as u64;
            }
            self.free.push(f.addr);
        }
        frames.len()
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

    /// The emulated NIC steers these replies to the worker of the current
    /// burst (the hand-off of DNATed replies).
    fn announce(&mut self, replies: &[fastables_packet::flow::Tuple]) {
        if let Some(d) = self.dispatch.as_mut() {
            for t in replies {
                d.redirect
                    .insert((t.proto, t.src, t.dst, t.sport, t.dport), d.current);
            }
        }
    }
}

/// Runs every input frame through `worker`'s pipeline, in merged order, and
/// flushes the outputs. `after_burst` is called after each burst (e.g. to drain
/// LOG lines before their queue fills). Returns the per-interface totals and the
/// drop counts.
pub fn run(
    worker: &mut Worker,
    mut port: OfflinePort,
    mut after_burst: impl FnMut(&mut Worker),
) -> Result<Summary, OfflineError> {
    while let Some(p) = port.next_port() {
        let before = port.consumed;
        worker.poll_port(&mut port, p);
        after_burst(worker);
        if let Some(e) = port.take_error() {
            return Err(e);
        }
        if port.consumed == before {
            return Err(OfflineError::Stalled {
                iface: port.names.get(p as usize).cloned().unwrap_or_default(),
            });
        }
    }
    let last_ns = port.now;
    let interfaces = port.finish()?;
    let drops = worker
        .pipeline()
        .drops()
        .snapshot()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(Summary {
        interfaces,
        drops,
        last_ns,
    })
}

/// [`run`] with one worker per emulated RX queue: every input frame goes to
/// the worker RSS (`rss`, one queue per worker) picks, or to the owner of its
/// connection when that worker asked for the reply tuple
/// ([`fastables_dataplane::pipeline::Pipeline::take_handoffs`]: the hand-off of DNATed
/// replies). The workers' pipelines must have been told their queue
/// ([`fastables_dataplane::pipeline::Pipeline::set_rss`]). Frames are processed in the
/// merged order, each burst by one worker.
pub fn run_workers(
    workers: &mut [Worker],
    mut port: OfflinePort,
    rss: Rss,
    mut after_burst: impl FnMut(&mut Worker),
) -> Result<Summary, OfflineError> {
    port.dispatch = Some(Dispatch {
        rss,
        redirect: std::collections::HashMap::new(),
        current: 0,
    });
    while let Some(p) = port.next_port() {
        let before = port.consumed;
        let q = port.next_queue();
        let Some(w) = workers.get_mut(usize::from(q)) else {
            return Err(OfflineError::Stalled {
                iface: port.names.get(p as usize).cloned().unwrap_or_default(),
            });
        };
        if let Some(d) = port.dispatch.as_mut() {
            d.current = q;
        }
        w.poll_port(&mut port, p);
        after_burst(w);
        if let Some(e) = port.take_error() {
            return Err(e);
        }
        if port.consumed == before {
            return Err(OfflineError::Stalled {
                iface: port.names.get(p as usize).cloned().unwrap_or_default(),
            });
        }
    }
    let last_ns = port.now;
    let interfaces = port.finish()?;
    let mut drops: Vec<(DropReason, u64)> = Vec::new();
    for w in workers.iter() {
        for (r, n) in w.pipeline().drops().snapshot() {
            match drops.iter_mut().find(|(x, _)| *x == r) {
                Some((_, m)) => *m += n,
                None => drops.push((r, n)),
            }
        }
    }
    drops.retain(|(_, n)| *n > 0);
    Ok(Summary {
        interfaces,
        drops,
        last_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::PcapReader;

    struct TmpDir(PathBuf);
    impl TmpDir {
        fn new(tag: &str) -> TmpDir {
            let p = std::env::temp_dir()
                .join(format!("fastables-offline-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TmpDir(p)
        }
    }
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes frames with timestamps given in microseconds (the resolution we write).
    fn write_pcap(path: &Path, frames: &[(u64, &[u8])]) {
        let mut w = PcapWriter::create(path).unwrap();
        for (us, b) in frames {
            w.write_frame(us * 1000, b).unwrap();
        }
        w.flush().unwrap();
    }

    fn input(iface: &str, path: &Path) -> OfflineInput {
        OfflineInput {
            iface: iface.to_string(),
            path: path.to_path_buf(),
        }
    }

    /// Drains the port as the worker would, burst by burst: (port, now in µs, first byte of each frame).
    fn drain(port: &mut OfflinePort, max: usize) -> Vec<(IfIndex, u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut frames = Vec::new();
        while let Some(p) = port.next_port() {
            frames.clear();
            let n = port.rx_burst(p, &mut frames, max);
            assert_eq!(n, frames.len());
            if n == 0 {
                // Only skipped (oversized) frames in this burst.
                continue;
            }
            let now = port.now_ns() / 1000;
            let mem = port.memory().to_vec();
            let tags = frames.iter().map(|f| mem[f.addr as usize]).collect();
            let addrs: Vec<_> = frames.iter().map(|f| f.addr).collect();
            port.free(&addrs);
            out.push((p, now, tags));
        }
        out
    }

    #[test]
    fn merge_is_by_time_then_interface_then_argument_order() {
        let d = TmpDir::new("merge");
        let (a, b, c) = (d.0.join("a.pcap"), d.0.join("b.pcap"), d.0.join("c.pcap"));
        // Frames are tagged by their first byte.
        write_pcap(
            &a,
            &[
                (10, &[1; 60]),
                (20, &[2; 60]),
                (20, &[3; 60]),
                (30, &[4; 60]),
            ],
        );
        write_pcap(&b, &[(5, &[11; 60]), (20, &[12; 60]), (40, &[13; 60])]);
        write_pcap(&c, &[(20, &[21; 60])]);
        // b is on eth0 (index 0), a and c on docker0 (index 1); c is given before a.
        let names = ["eth0", "docker0"];
        let inputs = [
            input("docker0", &c),
            input("docker0", &a),
            input("eth0", &b),
        ];
        let mut port = OfflinePort::open(&names, &inputs, &d.0.join("out"), 8).unwrap();
        let got = drain(&mut port, 8);
        assert_eq!(
            got,
            vec![
                (0, 5, vec![11]),
                (1, 10, vec![1]),
                (0, 20, vec![12]),
                // docker0 at t=20: c (given first) then both of a, in one burst.
                (1, 20, vec![21, 2, 3]),
                (1, 30, vec![4]),
                (0, 40, vec![13]),
            ]
        );
        let totals = port.finish().unwrap();
        assert_eq!(totals[0].rx_packets, 3);
        assert_eq!(totals[1].rx_packets, 5);
        assert_eq!(totals[1].rx_bytes, 300);
    }

    #[test]
    fn time_never_goes_backwards() {
        let d = TmpDir::new("backwards");
        let a = d.0.join("a.pcap");
        write_pcap(&a, &[(10, &[1; 60]), (5, &[2; 60]), (12, &[3; 60])]);
        let mut port = OfflinePort::open(&["eth0"], &[input("eth0", &a)], &d.0, 4).unwrap();
        assert_eq!(
            drain(&mut port, 4),
            vec![(0, 10, vec![1]), (0, 10, vec![2]), (0, 12, vec![3])]
        );
    }

    #[test]
    fn bursts_respect_max_and_split_on_timestamp() {
        let d = TmpDir::new("burst");
        let a = d.0.join("a.pcap");
        write_pcap(
            &a,
            &[(7, &[1; 60]), (7, &[2; 60]), (7, &[3; 60]), (8, &[4; 60])],
        );
        let mut port = OfflinePort::open(&["eth0"], &[input("eth0", &a)], &d.0, 2).unwrap();
        assert_eq!(
            drain(&mut port, 2),
            vec![(0, 7, vec![1, 2]), (0, 7, vec![3]), (0, 8, vec![4])]
        );
    }

    #[test]
    fn tx_writes_with_the_burst_time_and_empty_files_exist() {
        let d = TmpDir::new("tx");
        let a = d.0.join("in.pcap");
        write_pcap(&a, &[(3_000_000, &[9; 64])]);
        let out = d.0.join("out");
        let mut port =
            OfflinePort::open(&["eth0", "docker0"], &[input("eth0", &a)], &out, 4).unwrap();
        let mut frames = Vec::new();
        assert_eq!(port.rx_burst(0, &mut frames, 4), 1);
        let mut f = frames[0];
        f.len = 62;
        f.port = 1;
        port.memory()[f.addr as usize] = 0x42;
        assert_eq!(port.tx_burst(1, &[f]), 1);
        let totals = port.finish().unwrap();
        assert_eq!((totals[1].tx_packets, totals[1].tx_bytes), (1, 62));
        let (_, recs) = crate::pcap::read_file(&out.join("docker0.pcap")).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].ts_ns, 3_000_000_000);
        assert_eq!(recs[0].data.len(), 62);
        assert_eq!(recs[0].data[0], 0x42);
        let r = PcapReader::open(&out.join("eth0.pcap")).unwrap();
        assert_eq!(r.count(), 0);
    }

    #[test]
    fn oversized_input_frames_are_skipped_and_counted() {
        let d = TmpDir::new("big");
        let a = d.0.join("a.pcap");
        let big = vec![5u8; FRAME_SIZE + 1];
        write_pcap(&a, &[(1, &big), (2, &[6; 60])]);
        let mut port = OfflinePort::open(&["eth0"], &[input("eth0", &a)], &d.0, 4).unwrap();
        assert_eq!(drain(&mut port, 4), vec![(0, 2, vec![6])]);
        let t = port.finish().unwrap();
        assert_eq!((t[0].rx_packets, t[0].rx_too_long), (1, 1));
    }

    #[test]
    fn open_errors_name_the_problem() {
        let d = TmpDir::new("err");
        let a = d.0.join("a.pcap");
        write_pcap(&a, &[]);
        let e = OfflinePort::open(&["eth0"], &[input("eth9", &a)], &d.0, 4)
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "--in eth9={}: no interface `eth9` in the configuration (configured: eth0)",
                a.display()
            )
        );
        // A raw-IP capture (LINKTYPE_RAW = 101).
        let mut bytes = std::fs::read(&a).unwrap();
        bytes[20] = 101;
        std::fs::write(&a, &bytes).unwrap();
        let e = OfflinePort::open(&["eth0"], &[input("eth0", &a)], &d.0, 4)
            .err()
            .unwrap();
        assert!(
            matches!(e, OfflineError::NotEthernet { linktype: 101, .. }),
            "{e}"
        );
    }

    #[test]
    fn an_input_that_is_also_an_output_is_refused() {
        let d = TmpDir::new("inout");
        let a = d.0.join("eth0.pcap");
        write_pcap(&a, &[(1, &[1; 60])]);
        let e = OfflinePort::open(&["eth0"], &[input("eth0", &a)], &d.0, 4)
            .err()
            .unwrap();
        assert!(matches!(e, OfflineError::InputIsOutput { .. }), "{e}");
        // Untouched.
        assert_eq!(crate::pcap::read_file(&a).unwrap().1.len(), 1);
    }

    #[test]
    fn a_corrupt_record_mid_file_is_reported() {
        let d = TmpDir::new("corrupt");
        let a = d.0.join("a.pcap");
        write_pcap(&a, &[(1, &[1; 60]), (2, &[2; 60])]);
        let mut bytes = std::fs::read(&a).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&a, &bytes).unwrap();
        let mut port = OfflinePort::open(&["eth0"], &[input("eth0", &a)], &d.0, 4).unwrap();
        let mut frames = Vec::new();
        assert_eq!(port.rx_burst(0, &mut frames, 4), 1);
        let e = port.take_error().unwrap();
        assert!(
            e.to_string()
                .ends_with("a.pcap: record 1 is truncated: the file ends inside it"),
            "{e}"
        );
        assert_eq!(port.next_port(), None);
    }
}
