//! Classic libpcap files (the `tcpdump -w` format), read and written without an
//! external crate.
//!
//! Reading accepts both byte orders and both the microsecond (`0xa1b2c3d4`) and
//! nanosecond (`0xa1b23c4d`) magic. Writing always produces little-endian
//! headers (libpcap writes the host's order; we fix it so that output bytes do
//! not depend on the machine), microsecond timestamps, `LINKTYPE_ETHERNET`,
//! snaplen 65535.
//!
//! This is not pcapng: a pcapng file is rejected with a message saying so.
//! Errors name the file and, for record errors, the record index (0-based, in
//! file order).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// The snapshot length written in the headers of files we create.
pub const WRITE_SNAPLEN: u32 = 65535;
/// Largest record we accept when reading (libpcap's own limit for Ethernet, 256 KiB).
pub const MAX_RECORD: u32 = 262_144;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const MAGIC_PCAPNG: u32 = 0x0a0d_0d0a;
const FILE_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;

/// Errors of the pcap reader and writer.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file could not be opened, read or written.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: io::Error,
    },
    /// The file is shorter than the 24-byte pcap file header.
    #[error("{file}: not a pcap file: shorter than the 24-byte file header")]
    ShortHeader { file: String },
    /// The file is pcapng, which is not supported.
    #[error("{file}: pcapng is not supported; convert it with `editcap -F pcap {file} out.pcap`")]
    Pcapng { file: String },
    /// The first four bytes are not a pcap magic number.
    #[error("{file}: not a pcap file: magic {magic:#010x} is none of a1b2c3d4 / a1b23c4d in either byte order")]
    BadMagic { file: String, magic: u32 },
    /// The file header's major version is not 2.
    #[error("{file}: unsupported pcap version {major}.{minor} (only 2.x is supported)")]
    BadVersion {
        file: String,
        major: u16,
        minor: u16,
    },
    /// The file ends inside a record header or record data.
    #[error("{file}: record {index} is truncated: the file ends inside it")]
    Truncated { file: String, index: u64 },
    /// A record's captured length exceeds what any pcap writer produces.
    #[error("{file}: record {index}: captured length {caplen} exceeds the maximum {max}; the file is corrupt")]
    RecordTooLong {
        file: String,
        index: u64,
        caplen: u32,
        max: u32,
    },
    /// A record's sub-second field is out of range (>= 1e6 µs or >= 1e9 ns).
    #[error(
        "{file}: record {index}: sub-second timestamp {frac} is out of range; the file is corrupt"
    )]
    BadTimestamp { file: String, index: u64, frac: u32 },
}

/// Timestamp resolution of a pcap file, from its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsResolution {
    Micro,
    Nano,
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapRecord {
    /// Capture time in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the frame on the wire (may exceed `data.len()` if the capture was truncated).
    pub orig_len: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Reads records from a classic pcap stream.
pub struct PcapReader<R: Read> {
    inner: R,
    name: String,
    swapped: bool,
    res: TsResolution,
    snaplen: u32,
    linktype: u32,
    index: u64,
}

impl PcapReader<BufReader<File>> {
    /// Opens a pcap file and reads its header.
    pub fn open(path: &Path) -> Result<Self, PcapError> {
        let name = path.display().to_string();
        let f = File::open(path).map_err(|source| PcapError::Io {
            file: name.clone(),
            source,
        })?;
        PcapReader::new(BufReader::new(f), name)
    }
}

impl<R: Read> PcapReader<R> {
    /// Reads the file header from `inner`; `name` is used in error messages.
    pub fn new(mut inner: R, name: impl Into<String>) -> Result<Self, PcapError> {
        let name = name.into();
        let mut hdr = [0u8; FILE_HEADER_LEN];
        match read_full(&mut inner, &mut hdr) {
            Ok(n) if n == FILE_HEADER_LEN => {}
            Ok(n) => {
                if n >= 4 && u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) == MAGIC_PCAPNG {
                    return Err(PcapError::Pcapng { file: name });
                }
                return Err(PcapError::ShortHeader { file: name });
            }
            Err(source) => return Err(PcapError::Io { file: name, source }),
        }
        let magic_le = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let (swapped, res) = match magic_le {
            MAGIC_US => (false, TsResolution::Micro),
            MAGIC_NS => (false, TsResolution::Nano),
            m if m.swap_bytes() == MAGIC_US => (true, TsResolution::Micro),
            m if m.swap_bytes() == MAGIC_NS => (true, TsResolution::Nano),
            MAGIC_PCAPNG => return Err(PcapError::Pcapng { file: name }),
            m => {
                return Err(PcapError::BadMagic {
                    file: name,
                    magic: m.swap_bytes(),
                })
            }
        };
        // "swapped" here means big-endian fields (we decode as little-endian by default).
        let u16_at = |i: usize| {
            let b = [hdr[i], hdr[i + 1]];
            if swapped {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let u32_at = |i: usize| {
            let b = [hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]];
            if swapped {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (major, minor) = (u16_at(4), u16_at(6));
        if major != 2 {
            return Err(PcapError::BadVersion {
                file: name,
                major,
                minor,
            });
        }
        let snaplen = u32_at(16);
        // The low 16 bits are the link type; the upper bits carry FCS information.
        let linktype = u32_at(20) & 0xffff;
        Ok(PcapReader {
            inner,
            name,
            swapped,
            res,
            snaplen,
            linktype,
            index: 0,
        })
    }

    /// The file's link type (`LINKTYPE_*`).
    pub fn linktype(&self) -> u32 {
        self.linktype
    }

    /// The file header's snapshot length.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// Timestamp resolution of the file.
    pub fn resolution(&self) -> TsResolution {
        self.res
    }

    /// Whether the file was written in big-endian byte order.
    pub fn big_endian(&self) -> bool {
        self.swapped
    }

    /// The name used in error messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn u32_of(&self, b: &[u8; RECORD_HEADER_LEN], i: usize) -> u32 {
        let x = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if self.swapped {
            u32::from_be_bytes(x)
        } else {
            u32::from_le_bytes(x)
        }
    }

    /// Reads the next record; `Ok(None)` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<PcapRecord>, PcapError> {
        let index = self.index;
        let mut hdr = [0u8; RECORD_HEADER_LEN];
        let n = read_full(&mut self.inner, &mut hdr).map_err(|source| PcapError::Io {
            file: self.name.clone(),
            source,
        })?;
        if n == 0 {
            return Ok(None);
        }
        if n < RECORD_HEADER_LEN {
            return Err(PcapError::Truncated {
                file: self.name.clone(),
                index,
            });
        }
        let sec = self.u32_of(&hdr, 0);
        let frac = self.u32_of(&hdr, 4);
        let caplen = self.u32_of(&hdr, 8);
        let orig_len = self.u32_of(&hdr, 12);
        let (frac_max, frac_ns) = match self.res {
            TsResolution::Micro => (1_000_000, 1_000u64),
            TsResolution::Nano => (1_000_000_000, 1u64),
        };
        if frac >= frac_max {
            return Err(PcapError::BadTimestamp {
                file: self.name.clone(),
                index,
                frac,
            });
        }
        let max = MAX_RECORD.max(self.snaplen.min(16 * MAX_RECORD));
        if caplen > max {
            return Err(PcapError::RecordTooLong {
                file: self.name.clone(),
                index,
                caplen,
                max,
            });
        }
        let mut data = vec![0u8; caplen as usize];
        let got = read_full(&mut self.inner, &mut data).map_err(|source| PcapError::Io {
            file: self.name.clone(),
            source,
        })?;
        if got < data.len() {
            return Err(PcapError::Truncated {
                file: self.name.clone(),
                index,
            });
        }
        self.index += 1;
        Ok(Some(PcapRecord {
            ts_ns: u64::from(sec) * 1_000_000_000 + u64::from(frac) * frac_ns,
            orig_len: orig_len.max(caplen),
            data,
        }))
    }
}

impl<R: Read> Iterator for PcapReader<R> {
    type Item = Result<PcapRecord, PcapError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Reads a whole pcap file: its link type and records.
pub fn read_file(path: &Path) -> Result<(u32, Vec<PcapRecord>), PcapError> {
    let mut r = PcapReader::open(path)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok((r.linktype(), out))
}

/// Reads into `buf` until it is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes a classic pcap stream: little-endian, microsecond timestamps,
/// `LINKTYPE_ETHERNET`, snaplen 65535. Frames longer than the snaplen are
/// truncated (with the original length recorded), as tcpdump does.
pub struct PcapWriter<W: Write> {
    inner: W,
    name: String,
    count: u64,
}

impl PcapWriter<BufWriter<File>> {
    /// Creates (or truncates) a pcap file and writes its header.
    pub fn create(path: &Path) -> Result<Self, PcapError> {
        let name = path.display().to_string();
        let f = File::create(path).map_err(|source| PcapError::Io {
            file: name.clone(),
            source,
        })?;
        PcapWriter::new(BufWriter::new(f), name)
    }
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header to `inner`; `name` is used in error messages.
    pub fn new(mut inner: W, name: impl Into<String>) -> Result<Self, PcapError> {
        let name = name.into();
        let mut hdr = [0u8; FILE_HEADER_LEN];
        hdr[0..4].copy_from_slice(&MAGIC_US.to_le_bytes());
        hdr[4..6].copy_from_slice(&2u16.to_le_bytes());
        hdr[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone (8..12) and sigfigs (12..16) stay zero.
        hdr[16..20].copy_from_slice(&WRITE_SNAPLEN.to_le_bytes());
        hdr[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        inner.write_all(&hdr).map_err(|source| PcapError::Io {
            file: name.clone(),
            source,
        })?;
        Ok(PcapWriter {
            inner,
            name,
            count: 0,
        })
    }

    /// Appends one frame captured at `ts_ns` (nanoseconds since the epoch; stored
    /// with microsecond resolution, rounded down).
    pub fn write_frame(&mut self, ts_ns: u64, frame: &[u8]) -> Result<(), PcapError> {
        let sec = (ts_ns / 1_000_000_000) as u32;
        let usec = ((ts_ns % 1_000_000_000) / 1_000) as u32;
        let caplen = frame.len().min(WRITE_SNAPLEN as usize);
        let orig = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let mut hdr = [0u8; RECORD_HEADER_LEN];
        hdr[0..4].copy_from_slice(&sec.to_le_bytes());
        hdr[4..8].copy_from_slice(&usec.to_le_bytes());
        hdr[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
        hdr[12..16].copy_from_slice(&orig.to_le_bytes());
        let res = self
            .inner
            .write_all(&hdr)
            .and_then(|()| self.inner.write_all(&frame[..caplen]));
        res.map_err(|source| PcapError::Io {
            file: self.name.clone(),
            source,
        })?;
        self.count += 1;
        Ok(())
    }

    /// Number of frames written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.inner.flush().map_err(|source| PcapError::Io {
            file: self.name.clone(),
            source,
        })
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W, PcapError> {
        self.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A file written by `tcpdump -w` (tcpdump 4.99 / libpcap 1.10, x86_64) in a
    /// pair of network namespaces: one UDP datagram "hello\n" from
    /// 10.99.0.1:51961 to 10.99.0.2:9. Made with:
    ///   ip link add vxa netns A type veth peer name vxb netns B (10.99.0.1/24, 10.99.0.2/24)
    ///   ip netns exec B tcpdump -i vxb -w tcpdump-udp.pcap -c 1 udp
    ///   ip netns exec A bash -c 'echo hello > /dev/udp/10.99.0.2/9'
    static TCPDUMP_US: &[u8] = include_bytes!("../tests/fixtures/tcpdump-udp.pcap");
    /// The same capture rewritten by `tcpdump -r tcpdump-udp.pcap
    /// --time-stamp-precision=nano -w tcpdump-udp-ns.pcap` (nanosecond magic).
    static TCPDUMP_NS: &[u8] = include_bytes!("../tests/fixtures/tcpdump-udp-ns.pcap");

    fn rec_header(le: bool, sec: u32, frac: u32, caplen: u32, orig: u32) -> Vec<u8> {
        let f = |x: u32| if le { x.to_le_bytes() } else { x.to_be_bytes() };
        [f(sec), f(frac), f(caplen), f(orig)].concat()
    }

    fn file_header(le: bool, magic: u32, snaplen: u32, linktype: u32) -> Vec<u8> {
        let f32 = |x: u32| if le { x.to_le_bytes() } else { x.to_be_bytes() };
        let f16 = |x: u16| {
            if le {
                x.to_le_bytes().to_vec()
            } else {
                x.to_be_bytes().to_vec()
            }
        };
        let mut v = f32(magic).to_vec();
        v.extend(f16(2));
        v.extend(f16(4));
        v.extend([0u8; 8]);
        v.extend(f32(snaplen));
        v.extend(f32(linktype));
        v
    }

    #[test]
    fn reads_all_four_magics() {
        for le in [true, false] {
            for (magic, frac, want_ns) in [(MAGIC_US, 250_000, 250_000_000), (MAGIC_NS, 7, 7)] {
                let mut f = file_header(le, magic, 65535, 1);
                f.extend(rec_header(le, 100, frac, 3, 60));
                f.extend([1, 2, 3]);
                let mut r = PcapReader::new(Cursor::new(f), "t.pcap").unwrap();
                assert_eq!(r.big_endian(), !le);
                assert_eq!(r.linktype(), 1);
                assert_eq!(r.snaplen(), 65535);
                let rec = r.next_record().unwrap().unwrap();
                assert_eq!(rec.ts_ns, 100 * 1_000_000_000 + want_ns);
                assert_eq!(rec.orig_len, 60);
                assert_eq!(rec.data, vec![1, 2, 3]);
                assert!(r.next_record().unwrap().is_none());
            }
        }
    }

    #[test]
    fn writer_output_is_exact_bytes() {
        let mut w = PcapWriter::new(Vec::new(), "o.pcap").unwrap();
        w.write_frame(1_700_000_000_123_456_789, &[0xaa, 0xbb])
            .unwrap();
        assert_eq!(w.count(), 1);
        let out = w.into_inner().unwrap();
        let want: Vec<u8> = [
            &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0][..],
            &[0; 8],
            &[0xff, 0xff, 0, 0, 1, 0, 0, 0],
            &1_700_000_000u32.to_le_bytes(),
            &123_456u32.to_le_bytes(),
            &[2, 0, 0, 0, 2, 0, 0, 0],
            &[0xaa, 0xbb],
        ]
        .concat();
        assert_eq!(out, want);
    }

    #[test]
    fn roundtrip_and_truncation_to_snaplen() {
        let mut w = PcapWriter::new(Vec::new(), "o.pcap").unwrap();
        let big = vec![7u8; 70_000];
        w.write_frame(5_000, &[1; 60]).unwrap();
        w.write_frame(6_000_000_000, &big).unwrap();
        let bytes = w.into_inner().unwrap();
        let recs: Vec<_> = PcapReader::new(Cursor::new(bytes), "o.pcap")
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].ts_ns, 5_000);
        assert_eq!(recs[0].data, vec![1; 60]);
        assert_eq!(recs[1].ts_ns, 6_000_000_000);
        assert_eq!(recs[1].data.len(), 65535);
        assert_eq!(recs[1].orig_len, 70_000);
    }

    #[test]
    fn errors_name_file_and_record() {
        let mut f = file_header(true, MAGIC_US, 65535, 1);
        f.extend(rec_header(true, 1, 0, 2, 2));
        f.extend([9, 9]);
        f.extend(rec_header(true, 2, 0, 10, 10));
        f.extend([1, 2, 3]);
        let mut r = PcapReader::new(Cursor::new(f), "cap.pcap").unwrap();
        assert!(r.next_record().unwrap().is_some());
        let e = r.next_record().unwrap_err();
        assert!(matches!(e, PcapError::Truncated { index: 1, .. }));
        assert_eq!(
            e.to_string(),
            "cap.pcap: record 1 is truncated: the file ends inside it"
        );

        let mut f = file_header(true, MAGIC_US, 65535, 1);
        f.extend(rec_header(true, 1, 0, 2, 2));
        f.extend([9]);
        f.extend([0; 0]);
        let mut r = PcapReader::new(Cursor::new(f), "x").unwrap();
        assert!(matches!(
            r.next_record(),
            Err(PcapError::Truncated { index: 0, .. })
        ));

        let mut f = file_header(true, MAGIC_US, 65535, 1);
        f.extend(&rec_header(true, 1, 0, 20, 2)[..10]);
        let mut r = PcapReader::new(Cursor::new(f), "x").unwrap();
        assert!(matches!(
            r.next_record(),
            Err(PcapError::Truncated { index: 0, .. })
        ));

        let mut f = file_header(true, MAGIC_US, 65535, 1);
        f.extend(rec_header(true, 1, 0, 10_000_000, 2));
        let e = PcapReader::new(Cursor::new(f), "big.pcap")
            .unwrap()
            .next_record()
            .unwrap_err();
        assert!(
            matches!(e, PcapError::RecordTooLong { index: 0, .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("big.pcap: record 0:"));

        let mut f = file_header(true, MAGIC_US, 65535, 1);
        f.extend(rec_header(true, 1, 1_000_000, 0, 0));
        let e = PcapReader::new(Cursor::new(f), "x").unwrap().next_record();
        assert!(matches!(e, Err(PcapError::BadTimestamp { index: 0, .. })));
    }

    #[test]
    fn header_errors() {
        let e = PcapReader::new(Cursor::new(vec![0xd4, 0xc3]), "s.pcap")
            .err()
            .unwrap();
        assert!(matches!(e, PcapError::ShortHeader { .. }));
        let e = PcapReader::new(Cursor::new(vec![0u8; 24]), "z.pcap")
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "z.pcap: not a pcap file: magic 0x00000000 is none of a1b2c3d4 / a1b23c4d in either byte order"
        );
        let mut ng = vec![0x0a, 0x0d, 0x0d, 0x0a];
        ng.extend([0u8; 28]);
        let e = PcapReader::new(Cursor::new(ng), "n.pcapng").err().unwrap();
        assert!(matches!(e, PcapError::Pcapng { .. }));
        let mut f = file_header(true, MAGIC_US, 65535, 1);
        f[4] = 1;
        let e = PcapReader::new(Cursor::new(f), "v").err().unwrap();
        assert!(matches!(e, PcapError::BadVersion { major: 1, .. }));
        let e = PcapReader::open(Path::new("/nonexistent/dir/in.pcap"))
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("/nonexistent/dir/in.pcap: "),
            "{e}"
        );
    }

    #[test]
    fn linktype_fcs_bits_are_masked() {
        let f = file_header(true, MAGIC_US, 65535, 0x1000_0001);
        let r = PcapReader::new(Cursor::new(f), "x").unwrap();
        assert_eq!(r.linktype(), LINKTYPE_ETHERNET);
    }

    #[test]
    fn tcpdump_fixtures_are_readable() {
        for (bytes, res) in [
            (TCPDUMP_US, TsResolution::Micro),
            (TCPDUMP_NS, TsResolution::Nano),
        ] {
            let mut r = PcapReader::new(Cursor::new(bytes), "tcpdump-udp.pcap").unwrap();
            assert_eq!(r.linktype(), LINKTYPE_ETHERNET);
            assert_eq!(r.resolution(), res);
            assert_eq!(r.snaplen(), 262_144);
            assert!(!r.big_endian());
            let rec = r.next_record().unwrap().unwrap();
            assert_eq!(rec.ts_ns, 1_795_333_217_831_008_000);
            assert_eq!(rec.orig_len, 48);
            assert_eq!(rec.data.len(), 48);
            // Ethernet type IPv4, protocol UDP, 10.99.0.1:51961 -> 10.99.0.2:9, payload "hello\n".
            assert_eq!(&rec.data[12..14], &[0x08, 0x00]);
            assert_eq!(rec.data[14 + 9], 17);
            assert_eq!(&rec.data[26..30], &[10, 99, 0, 1]);
            assert_eq!(&rec.data[30..34], &[10, 99, 0, 2]);
            assert_eq!(&rec.data[34..38], &[0xca, 0xf9, 0x00, 0x09]);
            assert_eq!(&rec.data[42..], b"hello\n");
            assert!(r.next_record().unwrap().is_none());
        }
    }

    #[test]
    fn tcpdump_reads_our_output() {
        let Some(tcpdump) = ["/usr/bin/tcpdump", "/usr/sbin/tcpdump"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            eprintln!("note: tcpdump not installed; skipping tcpdump_reads_our_output");
            return;
        };
        let dir = std::env::temp_dir().join(format!("fastables-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.pcap");
        // Rewrite the tcpdump fixture's frame through our writer.
        let rec = PcapReader::new(Cursor::new(TCPDUMP_US), "f")
            .unwrap()
            .next_record()
            .unwrap()
            .unwrap();
        let mut w = PcapWriter::create(&path).unwrap();
        w.write_frame(1_700_000_000_000_001_000, &rec.data).unwrap();
        w.flush().unwrap();
        drop(w);
        let out = std::process::Command::new(tcpdump)
            .args(["-n", "-tt", "-r"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "tcpdump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.starts_with("1700000000.000001 IP 10.99.0.1.51961 > 10.99.0.2.9: UDP, length 6"),
            "{text}"
        );
    }
}
