//! Differential test against captures of the Linux kernel (6.18) routing the same
//! frames: `tests/fixtures/kernel-ref-*.pcap`, made by
//! `tests/fixtures/kernel-ref-capture.sh` (the shared kernel-reference topology,
//! eth0 MTU 1400, the rules of `kernel-ref-rules.v4`).
//!
//! Every frame the client sent (docker0 capture) and every frame the server
//! sent (eth0 capture) goes through the pipeline; what the pipeline sends must
//! be what the kernel router sent, byte for byte (forwarding with TTL and MAC
//! rewrite, mangle TTL and TCPMSS, REJECT replies, ICMP errors and their source
//! address, echo and ARP replies, the stack's RST and port unreachable,
//! fragmentation of a datagram without DF), except:
//! - the IP ID of packets the kernel numbers with its hashed generator (ICMP
//!   errors and echo replies): compared with the ID zeroed and the header
//!   checksum recomputed (ours is verified separately);
//! - TCP checksums the kernel left partial (checksum offload on the veth):
//!   recomputed on both sides (ours is verified separately);
//! - ARP requests of the kernel for neighbors the config has statically.

use std::net::Ipv4Addr;
use std::sync::Arc;

use fastables_config::Config;
use fastables_dataplane::pipeline::Pipeline;
use fastables_dataplane::worker::{Action, Batch};
use fastables_packet::checksum;
use fastables_port::{Frame, FRAME_SIZE};
use fastables_rules::compile::CompiledRuleset;

const CLI: [u8; 6] = [0x7a, 0xe3, 0x85, 0x60, 0x9a, 0xee];
const SRV: [u8; 6] = [0x6e, 0x70, 0x41, 0x9f, 0x26, 0xc5];
const RTR_DOCKER0: [u8; 6] = [0x3a, 0x0b, 0xd0, 0xa6, 0xfd, 0x3a];
const RTR_ETH0: [u8; 6] = [0xce, 0x6b, 0x27, 0x34, 0xaa, 0xa9];

const CONFIG: &str = r#"
rules = "kernel-ref-rules.v4"

[[interface]]
name = "docker0"
mac = "3a:0b:d0:a6:fd:3a"
addresses = ["172.18.0.1/16"]

[[interface]]
name = "eth0"
mac = "ce:6b:27:34:aa:a9"
addresses = ["10.0.2.15/24", "1.2.3.56/24"]
mtu = 1400

[[route]]
to = "0.0.0.0/0"
via = "10.0.2.2"
dev = "eth0"

[[route]]
to = "1.1.1.1/32"
via = "1.2.3.4"
dev = "eth0"

[[neighbor]]
ip = "172.18.0.2"
mac = "7a:e3:85:60:9a:ee"
dev = "docker0"

[[neighbor]]
ip = "10.0.2.2"
mac = "6e:70:41:9f:26:c5"
dev = "eth0"

[[neighbor]]
ip = "1.2.3.4"
mac = "6e:70:41:9f:26:c5"
dev = "eth0"
"#;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Frames of a little-endian classic pcap file.
fn read_pcap(name: &str) -> Vec<Vec<u8>> {
    read_pcap_ts(name).into_iter().map(|(_, f)| f).collect()
}

/// (timestamp in ns, frame) of a little-endian classic microsecond pcap file.
fn read_pcap_ts(name: &str) -> Vec<(u64, Vec<u8>)> {
    let b = std::fs::read(fixture(name)).unwrap();
    assert_eq!(
        &b[0..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian microsecond pcap"
    );
    let mut out = vec![];
    let mut i = 24;
    while i + 16 <= b.len() {
        let le = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let ts = u64::from(le(i)) * 1_000_000_000 + u64::from(le(i + 4)) * 1000;
        let incl = le(i + 8) as usize;
        out.push((ts, b[i + 16..i + 16 + incl].to_vec()));
        i += 16 + incl;
    }
    out
}

fn pipeline() -> Pipeline {
    pipeline_with(CONFIG)
}

fn pipeline_with(config: &str) -> Pipeline {
    let path = fixture("fastables.toml");
    let cfg = Config::parse(config, &path).unwrap();
    let text = std::fs::read_to_string(cfg.rules.as_ref().unwrap()).unwrap();
    let rs = fastables_rules::parse::parse_restore(&text, "kernel-ref-rules.v4").unwrap();
    let names = cfg.iface_names();
    let compiled = CompiledRuleset::compile(&rs, &names).unwrap();
    Pipeline::new(&cfg, Arc::new(compiled)).unwrap()
}

/// Run one frame in on `port`; returns every frame sent, with its port.
fn run(p: &mut Pipeline, port: u8, frame: &[u8], now_ns: u64) -> (Action, Vec<(u8, Vec<u8>)>) {
    let mut mem = vec![0u8; FRAME_SIZE * 3];
    mem[..frame.len()].copy_from_slice(frame);
    let mut batch = Batch::with_capacity(2);
    batch.frames.push(Frame::rx(0, frame.len() as u16, port));
    batch
        .spare
        .extend([FRAME_SIZE as u64, 2 * FRAME_SIZE as u64]);
    p.process_batch(now_ns, &mut mem, &mut batch);
    let mut out = vec![];
    let (f, action) = (batch.frames[0], batch.verdicts[0]);
    if let Action::Forward { port } = action {
        out.push((port, mem[..f.len as usize].to_vec()));
    }
    for g in &batch.generated {
        let a = g.addr as usize;
        out.push((g.port, mem[a..a + g.len as usize].to_vec()));
    }
    (action, out)
}

/// Checks our checksums, then normalises: IP ID zeroed for ICMP (kernel-random),
/// IP and TCP checksums recomputed.
fn normalise(f: &[u8], ours: bool) -> Vec<u8> {
    let mut f = f.to_vec();
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return f;
    }
    let hl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    if ours {
        assert!(checksum::verify(&f[14..14 + hl]), "our IP checksum");
        assert_eq!(f.len(), 14 + total, "frame trimmed to the IP length");
    }
    let proto = f[23];
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    let seg_range = 14 + hl..14 + total;
    if proto == 6 {
        let seg = &f[seg_range.clone()];
        let ok = checksum::fold(checksum::combine(
            checksum::pseudo_header_sum(src, dst, 6, seg.len() as u32),
            checksum::sum(seg),
        )) == 0xffff;
        if ours {
            assert!(ok, "our TCP checksum");
        }
        f[14 + hl + 16] = 0;
        f[14 + hl + 17] = 0;
    }
    if proto == 1 {
        if ours {
            assert!(checksum::verify(&f[seg_range]), "our ICMP checksum");
        }
        f[18] = 0;
        f[19] = 0;
    }
    f[24] = 0;
    f[25] = 0;
    f
}

#[test]
fn same_frames_as_the_kernel() {
    let mut p = pipeline();
    let docker0 = read_pcap("kernel-ref-docker0.pcap");
    let eth0 = read_pcap("kernel-ref-eth0.pcap");

    let mut ours: Vec<(u8, Vec<u8>)> = vec![];
    let mut inputs = 0;
    for (port, frames, peer) in [(0u8, &docker0, CLI), (1u8, &eth0, SRV)] {
        for (i, f) in frames.iter().enumerate() {
            if f[6..12] != peer {
                continue;
            }
            inputs += 1;
            let (_, out) = run(&mut p, port, f, i as u64 * 300_000_000);
            ours.extend(out);
        }
    }
    assert!(
        inputs >= 17,
        "fixture has the client's 16 frames and the server's answer"
    );

    let mut kernel: Vec<(u8, Vec<u8>)> = vec![];
    for (port, frames, mac) in [(0u8, &docker0, RTR_DOCKER0), (1u8, &eth0, RTR_ETH0)] {
        for f in frames.iter() {
            let arp_request = f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1];
            if f[6..12] == mac && !arp_request {
                kernel.push((port, f.clone()));
            }
        }
    }
    let mut a: Vec<(u8, Vec<u8>)> = ours.iter().map(|(p, f)| (*p, normalise(f, true))).collect();
    let mut b: Vec<(u8, Vec<u8>)> = kernel
        .iter()
        .map(|(p, f)| (*p, normalise(f, false)))
        .collect();
    a.sort();
    b.sort();
    assert_eq!(
        a.len(),
        b.len(),
        "number of frames sent: ours {a:02x?}\nkernel {b:02x?}"
    );
    for (x, y) in a.iter().zip(b.iter()) {
        assert_eq!(x, y);
    }
    // 15 answers to the client, 4 forwards (one in 2 fragments) and 3 answers
    // towards the server side, 3 forwards of the server's answers, an ARP reply
    // to the server.
    assert_eq!(a.len(), 28);

    let mut logs = vec![];
    p.drain_logs(|l| logs.push(l.to_string()));
    assert_eq!(
        logs,
        vec!["fwd: IN=docker0 OUT=eth0 MAC=3a:0b:d0:a6:fd:3a:7a:e3:85:60:9a:ee:08:00 SRC=172.18.0.2 DST=8.8.8.8 LEN=38 TOS=0x00 PREC=0x00 TTL=63 ID=4106 PROTO=UDP SPT=40007 DPT=84 LEN=18 "]
    );
}

/// Without static neighbors the pipeline asks as the kernel asked: for the
/// client when sending it the time exceeded (sender: our source address), for
/// the gateway when forwarding (sender: eth0's address towards it), for 1.2.3.4
/// when sending an ICMP error from 1.2.3.56.
#[test]
fn arp_requests_as_the_kernel() {
    let no_neighbors = CONFIG.split("[[neighbor]]").next().unwrap();
    let mut p = pipeline_with(no_neighbors);
    let docker0 = read_pcap("kernel-ref-docker0.pcap");
    let eth0 = read_pcap("kernel-ref-eth0.pcap");
    let is_request = |f: &[u8]| f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1];
    // Both sides in time order, so that answers come when they came.
    let mut inputs: Vec<(u64, u8, Vec<u8>)> = vec![];
    for (port, name, peer) in [
        (0u8, "kernel-ref-docker0.pcap", CLI),
        (1u8, "kernel-ref-eth0.pcap", SRV),
    ] {
        for (ts, f) in read_pcap_ts(name) {
            if f[6..12] == peer {
                inputs.push((ts, port, f));
            }
        }
    }
    inputs.sort();
    let mut ours = vec![];
    for (ts, port, f) in &inputs {
        let (_, out) = run(&mut p, *port, f, *ts);
        ours.extend(out.into_iter().filter(|(_, f)| is_request(f)));
    }
    let mut kernel = vec![];
    for (port, frames, mac) in [(0u8, &docker0, RTR_DOCKER0), (1u8, &eth0, RTR_ETH0)] {
        for f in frames.iter() {
            if f[6..12] == mac && is_request(f) {
                kernel.push((port, f.clone()));
            }
        }
    }
    ours.sort();
    kernel.sort();
    assert_eq!(kernel.len(), 3);
    assert_eq!(ours, kernel);
}
