//! Helpers for the scenario tests: a temporary directory with the seed
//! configuration and a rules file, input pcaps, running the `fastables`
//! binary, and reading and checking the output pcaps; for the tests on the
//! host (kernel, live): whether a tool is there, root, a command's output.
#![allow(dead_code)]

pub mod lab;
pub mod seed;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use fastables_offline::pcap::{read_file, PcapRecord, PcapWriter};
use fastables_packet::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use fastables_packet::{read_be16, read_be32};

/// The `fastables` binary under test.
pub fn fastables() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fastables"))
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Status, stdout and stderr of a finished command.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A temporary directory, removed on drop (also when the test fails).
pub struct TmpDir(pub PathBuf);

impl TmpDir {
    pub fn new(tag: &str) -> TmpDir {
        let p = std::env::temp_dir().join(format!("fastables-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One scenario: the seed configuration with `rules` as its rules file.
pub struct Scenario {
    pub dir: TmpDir,
    inputs: Vec<(String, PathBuf)>,
}

/// The result of one `fastables sim` run.
pub struct SimRun {
    pub output: Output,
    pub out_dir: PathBuf,
}

impl SimRun {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// The frames sent on `iface`.
    pub fn sent(&self, iface: &str) -> Vec<PcapRecord> {
        let (linktype, recs) = read_file(&self.out_dir.join(format!("{iface}.pcap"))).unwrap();
        assert_eq!(linktype, 1);
        recs
    }
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.output.status.success(),
            "fastables sim failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self
    }
}

impl Scenario {
    pub fn new(tag: &str, rules: &str) -> Scenario {
        let dir = TmpDir::new(tag);
        std::fs::write(dir.path("fastables.toml"), seed::CONFIG).unwrap();
        std::fs::write(dir.path("rules.v4"), rules).unwrap();
        Scenario {
            dir,
            inputs: Vec::new(),
        }
    }

    /// Writes `frames` (time in µs, bytes) as the input of `iface`.
    pub fn input(&mut self, iface: &str, frames: &[(u64, Vec<u8>)]) -> &mut Self {
        let path = self
            .dir
            .path(&format!("in-{iface}-{}.pcap", self.inputs.len()));
        write_pcap(&path, frames);
        self.inputs.push((iface.to_string(), path));
        self
    }

    /// Runs `fastables sim` into `OUT_DIR` (relative to the scenario directory) with extra arguments.
    pub fn run_into(&self, out: &str, extra: &[&str]) -> SimRun {
        let out_dir = self.dir.path(out);
        let mut cmd = fastables();
        cmd.arg("sim")
            .arg("-c")
            .arg(self.dir.path("fastables.toml"));
        for (iface, path) in &self.inputs {
            cmd.arg("--in").arg(format!("{iface}={}", path.display()));
        }
        cmd.arg("--out-dir").arg(&out_dir).args(extra);
        SimRun {
            output: cmd.output().unwrap(),
            out_dir,
        }
    }

    pub fn run(&self) -> SimRun {
        let r = self.run_into("out", &[]);
        r.assert_ok();
        r
    }
}

pub fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut w = PcapWriter::create(path).unwrap();
    for (us, f) in frames {
        w.write_frame(us * 1000, f).unwrap();
    }
    w.flush().unwrap();
}

// ---------------------------------------------------------------------------
// Independent frame decoding and checksum verification (deliberately not using
// the packet crate's parser or checksums, so that a bug there cannot hide
// here; only its byte readers and protocol numbers).

/// The big-endian u16 at `o`; fails the test when `b` is too short.
fn be16(b: &[u8], o: usize) -> u16 {
    read_be16(b, o).unwrap_or_else(|| panic!("no u16 at {o} in {b:02x?}"))
}

/// The big-endian u32 at `o`; fails the test when `b` is too short.
fn be32(b: &[u8], o: usize) -> u32 {
    read_be32(b, o).unwrap_or_else(|| panic!("no u32 at {o} in {b:02x?}"))
}

/// RFC 1071 sum, folded, not complemented.
fn sum16(parts: &[&[u8]]) -> u16 {
    let mut s: u32 = 0;
    for p in parts {
        for c in p.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            s += u32::from(w);
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A decoded IPv4 frame with every checksum verified.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    /// The IP datagram (header + payload, without Ethernet padding).
    pub ip: Vec<u8>,
    /// The IP payload.
    pub l4: Vec<u8>,
}

impl Decoded {
    pub fn ports(&self) -> (u16, u16) {
        (be16(&self.l4, 0), be16(&self.l4, 2))
    }
    pub fn tcp_seq(&self) -> u32 {
        be32(&self.l4, 4)
    }
    pub fn tcp_ack(&self) -> u32 {
        be32(&self.l4, 8)
    }
    pub fn tcp_flags(&self) -> u8 {
        self.l4[13]
    }
    pub fn icmp_type_code(&self) -> (u8, u8) {
        (self.l4[0], self.l4[1])
    }
    /// The datagram quoted by an ICMP error.
    pub fn icmp_quoted(&self) -> &[u8] {
        &self.l4[8..]
    }
}

/// Decodes an Ethernet/IPv4 frame and asserts that the IP header checksum and
/// the TCP/UDP/ICMP checksum are correct.
pub fn decode(frame: &[u8]) -> Decoded {
    assert!(frame.len() >= 34, "frame too short: {frame:02x?}");
    assert_eq!(be16(frame, 12), 0x0800, "not IPv4: {frame:02x?}");
    let ipb = &frame[14..];
    assert_eq!(ipb[0] >> 4, 4);
    let ihl = usize::from(ipb[0] & 0x0f) * 4;
    let total = usize::from(be16(ipb, 2));
    assert!(
        total >= ihl && total <= ipb.len(),
        "bad total length {total}"
    );
    assert_eq!(sum16(&[&ipb[..ihl]]), 0xffff, "bad IP header checksum");
    let ip = ipb[..total].to_vec();
    let l4 = ip[ihl..].to_vec();
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let frag = be16(&ip, 6) & 0x3fff != 0;
    if !frag {
        let pseudo = [
            &ip[12..20],
            &[0, proto][..],
            &(l4.len() as u16).to_be_bytes()[..],
        ]
        .concat();
        match proto {
            PROTO_TCP => assert_eq!(sum16(&[&pseudo, &l4]), 0xffff, "bad TCP checksum"),
            PROTO_UDP if be16(&l4, 6) != 0 => {
                assert_eq!(sum16(&[&pseudo, &l4]), 0xffff, "bad UDP checksum")
            }
            PROTO_ICMP => assert_eq!(sum16(&[&l4]), 0xffff, "bad ICMP checksum"),
            _ => {}
        }
    }
    Decoded {
        src_mac: frame[6..12].try_into().unwrap(),
        dst_mac: frame[0..6].try_into().unwrap(),
        src,
        dst,
        ttl: ip[8],
        proto,
        ip,
        l4,
    }
}

/// Decodes every frame of an output.
pub fn decode_all(recs: &[PcapRecord]) -> Vec<Decoded> {
    recs.iter().map(|r| decode(&r.data)).collect()
}
