//! The LOG target: the kernel's log line (`nf_log_syslog.c`, `nf_log_ip_packet`)
//! into a bounded, rate-limited per-worker queue that the caller drains.
//!
//! The pipeline never writes to stderr. Lines are formatted into preallocated
//! buffers (no allocation while they fit, 1 KiB each); when the queue is full or
//! the rate limit (token bucket, per second) is exhausted the line is counted in
//! [`LogQueue::dropped`] instead.
//!
//! Format (kernel 6.18): `PREFIX IN=.. OUT=.. MAC=dst:src:type SRC=.. DST=..
//! LEN=.. TOS=0x.. PREC=0x.. TTL=.. ID=.. [CE ][DF ][MF ][FRAG:n ]PROTO=...`
//! with the transport part as the kernel prints it and `MARK=0x..` when the
//! mark is set; every field is followed by a space (the kernel's line ends in
//! one too). Not printed: `--log-ip-options`, `--log-tcp-options`, `--log-uid`
//! and `--log-macdecode` variants (the default format is used).

use std::fmt::Write;

use fastables_packet::icmp::{types, unreach};
use fastables_packet::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_UDPLITE};
use fastables_packet::{read_be16, read_be32};

/// Bytes reserved per queued line.
const LINE_CAPACITY: usize = 1024;

/// A bounded queue of log lines with a rate limit.
#[derive(Debug)]
pub struct LogQueue {
    lines: Vec<String>,
    head: usize,
    len: usize,
    rate_per_sec: u32,
    burst: u32,
    /// Tokens in millitokens.
    tokens: u64,
    last_ns: u64,
    dropped: u64,
}

impl LogQueue {
    /// `capacity` lines, at most `rate_per_sec` lines per second with a burst of `burst`.
    pub fn new(capacity: usize, rate_per_sec: u32, burst: u32) -> LogQueue {
        let capacity = capacity.max(1);
        LogQueue {
            lines: (0..capacity)
                .map(|_| String::with_capacity(LINE_CAPACITY))
                .collect(),
            head: 0,
            len: 0,
            rate_per_sec,
            burst: burst.max(1),
            tokens: u64::from(burst.max(1)) * 1000,
            last_ns: 0,
            dropped: 0,
        }
    }

    /// Lines lost to the rate limit or a full queue (or to more LOG targets on
    /// one packet than the rules engine records).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Count lost lines.
    pub fn add_dropped(&mut self, n: u64) {
        self.dropped += n;
    }

    /// Lines waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no line waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A buffer for a new line if the rate limit and the queue allow it, else
    /// `None` (counted as dropped).
    pub fn slot(&mut self, now_ns: u64) -> Option<&mut String> {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let refill = (u128::from(elapsed) * u128::from(self.rate_per_sec) / 1_000_000) as u64;
        self.tokens = (self.tokens.saturating_add(refill)).min(u64::from(self.burst) * 1000);
        if self.tokens < 1000 || self.len == self.lines.len() {
            self.dropped += 1;
            return None;
        }
        self.tokens -= 1000;
        let idx = (self.head + self.len) % self.lines.len();
        self.len += 1;
        let s = self.lines.get_mut(idx)?;
        s.clear();
        Some(s)
    }

    /// Hand every waiting line to `f`, oldest first, and empty the queue.
    pub fn drain(&mut self, mut f: impl FnMut(&str)) {
        while self.len > 0 {
            if let Some(s) = self.lines.get(self.head) {
                f(s);
            }
            self.head = (self.head + 1) % self.lines.len();
            self.len -= 1;
        }
    }
}

/// Append the kernel's LOG line for the IPv4 datagram `ip` (header first,
/// trimmed to its total length). `mac` is the 14-byte Ethernet header, printed
/// when the packet has an input interface (as the kernel does).
pub fn format_ipv4(
    out: &mut String,
    prefix: &str,
    in_name: &str,
    out_name: &str,
    mac: Option<&[u8]>,
    ip: &[u8],
    mark: u32,
) {
    let _ = write!(out, "{prefix}IN={in_name} OUT={out_name} ");
    if let Some(m) = mac {
        out.push_str("MAC=");
        for (i, b) in m.iter().take(14).enumerate() {
            if i > 0 {
                out.push(':');
            }
            let _ = write!(out, "{b:02x}");
        }
        out.push(' ');
    }
    dump_ipv4(out, ip, false);
    if mark != 0 {
        let _ = write!(out, "MARK=0x{mark:x} ");
    }
}

fn dump_ipv4(out: &mut String, ip: &[u8], nested: bool) {
    if ip.len() < 20 {
        out.push_str("TRUNCATED");
        return;
    }
    let _ = write!(
        out,
        "SRC={}.{}.{}.{} DST={}.{}.{}.{} ",
        ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19]
    );
    let tos = ip[1];
    let total = read_be16(ip, 2).unwrap_or(0);
    let id = read_be16(ip, 4).unwrap_or(0);
    let ff = read_be16(ip, 6).unwrap_or(0);
    let _ = write!(
        out,
        "LEN={total} TOS=0x{:02X} PREC=0x{:02X} TTL={} ID={id} ",
        tos & 0x1e,
        tos & 0xe0,
        ip[8]
    );
    if ff & 0x8000 != 0 {
        out.push_str("CE ");
    }
    if ff & 0x4000 != 0 {
        out.push_str("DF ");
    }
    if ff & 0x2000 != 0 {
        out.push_str("MF ");
    }
    let frag = ff & 0x1fff;
    if frag != 0 {
        let _ = write!(out, "FRAG:{frag} ");
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let l4 = ip.get(hl..).unwrap_or(&[]);
    match ip[9] {
        PROTO_TCP => {
            out.push_str("PROTO=TCP ");
            if frag != 0 {
                return;
            }
            if l4.len() < 20 {
                let _ = write!(out, "INCOMPLETE [{} bytes] ", l4.len());
                return;
            }
            let _ = write!(
                out,
                "SPT={} DPT={} WINDOW={} RES=0x{:02x} ",
                read_be16(l4, 0).unwrap_or(0),
                read_be16(l4, 2).unwrap_or(0),
                read_be16(l4, 14).unwrap_or(0),
                (read_be32(l4, 12).unwrap_or(0) & 0x0e00_0000) >> 22
            );
            let fl = l4[13];
            if l4[12] & 0x01 != 0 {
                out.push_str("AE ");
            }
            for (bit, name) in [
                (0x80, "CWR "),
                (0x40, "ECE "),
                (0x20, "URG "),
                (0x10, "ACK "),
                (0x08, "PSH "),
                (0x04, "RST "),
                (0x02, "SYN "),
                (0x01, "FIN "),
            ] {
                if fl & bit != 0 {
                    out.push_str(name);
                }
            }
            let _ = write!(out, "URGP={} ", read_be16(l4, 18).unwrap_or(0));
        }
        PROTO_UDP | PROTO_UDPLITE => {
            out.push_str(if ip[9] == PROTO_UDP {
                "PROTO=UDP "
            } else {
                "PROTO=UDPLITE "
            });
            if frag != 0 {
                return;
            }
            if l4.len() < 8 {
                let _ = write!(out, "INCOMPLETE [{} bytes] ", l4.len());
                return;
            }
            let _ = write!(
                out,
                "SPT={} DPT={} LEN={} ",
                read_be16(l4, 0).unwrap_or(0),
                read_be16(l4, 2).unwrap_or(0),
                read_be16(l4, 4).unwrap_or(0)
            );
        }
        PROTO_ICMP => {
            out.push_str("PROTO=ICMP ");
            if frag != 0 {
                return;
            }
            if l4.len() < 8 {
                let _ = write!(out, "INCOMPLETE [{} bytes] ", l4.len());
                return;
            }
            let (ty, code) = (l4[0], l4[1]);
            let _ = write!(out, "TYPE={ty} CODE={code} ");
            let required = match ty {
                types::ECHO_REPLY | types::ECHO_REQUEST => 4,
                types::DEST_UNREACH
                | types::SOURCE_QUENCH
                | types::REDIRECT
                | types::TIME_EXCEEDED
                | types::PARAM_PROBLEM => 28,
                types::TIMESTAMP | types::TIMESTAMP_REPLY => 20,
                types::ADDRESS_MASK | types::ADDRESS_MASK_REPLY => 12,
                _ => 0,
            };
            if l4.len() < required {
                let _ = write!(out, "INCOMPLETE [{} bytes] ", l4.len());
                return;
            }
            match ty {
                types::ECHO_REPLY | types::ECHO_REQUEST => {
                    let _ = write!(
                        out,
                        "ID={} SEQ={} ",
                        read_be16(l4, 4).unwrap_or(0),
                        read_be16(l4, 6).unwrap_or(0)
                    );
                }
                types::PARAM_PROBLEM => {
                    let _ = write!(out, "PARAMETER={} ", l4[4]);
                }
                types::DEST_UNREACH
                | types::SOURCE_QUENCH
                | types::REDIRECT
                | types::TIME_EXCEEDED => {
                    if ty == types::REDIRECT {
                        let _ = write!(out, "GATEWAY={}.{}.{}.{} ", l4[4], l4[5], l4[6], l4[7]);
                    }
                    if !nested {
                        out.push('[');
                        dump_ipv4(out, l4.get(8..).unwrap_or(&[]), true);
                        out.push_str("] ");
                    }
                    if ty == types::DEST_UNREACH && code == unreach::FRAG_NEEDED {
                        let _ = write!(out, "MTU={} ", read_be16(l4, 6).unwrap_or(0));
                    }
                }
                _ => {}
            }
        }
        50 => {
            out.push_str("PROTO=ESP ");
            if frag == 0 {
                match read_be32(l4, 0) {
                    Some(spi) => {
                        let _ = write!(out, "SPI=0x{spi:x} ");
                    }
                    None => {
                        let _ = write!(out, "INCOMPLETE [{} bytes] ", l4.len());
                    }
                }
            }
        }
        51 => {
            if frag != 0 {
                return;
            }
            out.push_str("PROTO=AH ");
            match read_be32(l4, 4) {
                Some(spi) if l4.len() >= 12 => {
                    let _ = write!(out, "SPI=0x{spi:x} ");
                }
                _ => {
                    let _ = write!(out, "INCOMPLETE [{} bytes] ", l4.len());
                }
            }
        }
        p => {
            let _ = write!(out, "PROTO={p} ");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forwarded UDP datagram of the kernel capture, after the TTL decrement.
    const UDP_FWD: [u8; 38] = [
        0x45, 0x00, 0x00, 0x26, 0x10, 0x0a, 0x00, 0x00, 0x3f, 0x11, 0x00, 0x00, 172, 18, 0, 2, 8,
        8, 8, 8, //
        0x9c, 0x47, 0x00, 0x54, 0x00, 0x12, 0x00, 0x00, b'f', b'o', b'r', b'w', b'a', b'r', b'd',
        b' ', b'm', b'e',
    ];
    const MAC: [u8; 14] = [
        0x3a, 0x0b, 0xd0, 0xa6, 0xfd, 0x3a, 0x7a, 0xe3, 0x85, 0x60, 0x9a, 0xee, 0x08, 0x00,
    ];

    #[test]
    fn udp_line_matches_kernel() {
        let mut s = String::new();
        format_ipv4(&mut s, "fwd: ", "docker0", "eth0", Some(&MAC), &UDP_FWD, 0);
        // dmesg of Linux 6.18 for the same packet (kernel-ref-capture.sh).
        assert_eq!(
            s,
            "fwd: IN=docker0 OUT=eth0 MAC=3a:0b:d0:a6:fd:3a:7a:e3:85:60:9a:ee:08:00 SRC=172.18.0.2 DST=8.8.8.8 LEN=38 TOS=0x00 PREC=0x00 TTL=63 ID=4106 PROTO=UDP SPT=40007 DPT=84 LEN=18 "
        );
    }

    #[test]
    fn tcp_flags_and_mark() {
        let mut ip = [0u8; 40];
        ip[0] = 0x45;
        ip[1] = 0x10;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 6;
        ip[20..22].copy_from_slice(&40001u16.to_be_bytes());
        ip[22..24].copy_from_slice(&81u16.to_be_bytes());
        ip[32] = 0x50;
        ip[33] = 0x02;
        ip[34..36].copy_from_slice(&29200u16.to_be_bytes());
        let mut s = String::new();
        format_ipv4(&mut s, "", "", "eth0", None, &ip, 7);
        assert_eq!(
            s,
            "IN= OUT=eth0 SRC=0.0.0.0 DST=0.0.0.0 LEN=40 TOS=0x10 PREC=0x00 TTL=64 ID=0 DF PROTO=TCP SPT=40001 DPT=81 WINDOW=29200 RES=0x00 SYN URGP=0 MARK=0x7 "
        );
    }

    #[test]
    fn queue_is_bounded_and_rate_limited() {
        let mut q = LogQueue::new(2, 1, 3);
        for _ in 0..3 {
            if let Some(s) = q.slot(0) {
                s.push('x');
            }
        }
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped(), 1);
        let mut got = vec![];
        q.drain(|l| got.push(l.to_string()));
        assert_eq!(got, vec!["x", "x"]);
        // One token left from the burst, then the rate limit.
        assert!(q.slot(0).is_some());
        assert!(q.slot(0).is_none());
        assert!(q.slot(1_000_000_000).is_some());
        assert_eq!(q.dropped(), 2);
    }
}
