//! NAT events as syslog lines, and those lines read back.
//!
//! The message is the same in both layouts: the event's name, then
//! `key=value` fields, the time first (seconds since the epoch with
//! microseconds, as `conntrack -o timestamp`):
//!
//! ```text
//! SESSION_CREATE t=1733604800.123456 proto=6 src=172.18.0.2:37622 xsrc=203.0.113.5:40123 dst=8.8.8.8:80 xdst=8.8.8.8:80
//! SESSION_DELETE ...the same fields...
//! BLOCK_ALLOC t=... src=172.18.0.2 xsrc=203.0.113.5 ports=40000-40511 pool=1
//! BLOCK_RELEASE t=... src=172.18.0.2 xsrc=203.0.113.5 ports=40000-40511 pool=1
//! ADDRESSES_EXHAUSTED t=... pool=1
//! PORTS_EXHAUSTED t=... proto=6 src=172.18.0.2 xsrc=203.0.113.5
//! QUOTA_EXCEEDED t=... proto=6 src=172.18.0.2 limit=2016
//! ```
//!
//! It goes in an RFC 5424 line (`<182>1 2024-12-07T20:53:20.123456Z host
//! fastables 1234 NAT - MSG`) or an RFC 3164 one (`<182>Dec  7 20:53:20
//! host fastables[1234]: MSG`), with priority `facility * 8 + 6` (info).
//! [`parse`] finds the message in any line, whatever the syslog daemon put
//! before it.

use std::fmt::Write;
use std::net::Ipv4Addr;

use fastables_config::SyslogFormat;
use fastables_conntrack::{NatEvent, NatEventKind};

use crate::time;

/// The message of event `e` (at `time_ns` since the epoch).
pub fn message(e: &NatEvent, time_ns: u64) -> String {
    let mut s = String::with_capacity(128);
    let ip = Ipv4Addr::from;
    let _ = write!(s, "{} t={}", e.kind.name(), time::secs_us(time_ns));
    match e.kind {
        NatEventKind::SessionCreate | NatEventKind::SessionDelete => {
            let _ = write!(
                s,
                " proto={} src={}:{} xsrc={}:{} dst={}:{} xdst={}:{}",
                e.proto,
                ip(e.src),
                e.sport,
                ip(e.xsrc),
                e.xsport,
                ip(e.dst),
                e.dport,
                ip(e.xdst),
                e.xdport
            );
        }
        NatEventKind::BlockAlloc | NatEventKind::BlockRelease => {
            let _ = write!(
                s,
                " src={} xsrc={} ports={}-{} pool={}",
                ip(e.src),
                ip(e.xsrc),
                e.block.0,
                e.block.1,
                e.pool
            );
        }
        NatEventKind::AddressesExhausted => {
            let _ = write!(s, " pool={}", e.pool);
        }
        NatEventKind::PortsExhausted => {
            let _ = write!(
                s,
                " proto={} src={} xsrc={}",
                e.proto,
                ip(e.src),
                ip(e.xsrc)
            );
        }
        NatEventKind::QuotaExceeded => {
            let _ = write!(s, " proto={} src={} limit={}", e.proto, ip(e.src), e.limit);
        }
    }
    s
}

/// What a syslog line needs besides the message.
#[derive(Clone, Debug)]
pub struct Header {
    pub format: SyslogFormat,
    /// `facility * 8 + severity`.
    pub pri: u8,
    pub host: String,
    pub pid: u32,
}

impl Header {
    /// The header of this process on this host, `facility` at info.
    pub fn local(format: SyslogFormat, facility: u8) -> Header {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "-".into());
        Header {
            format,
            pri: facility.saturating_mul(8).saturating_add(6),
            host,
            pid: std::process::id(),
        }
    }

    /// The whole line of event `e` (no newline).
    pub fn line(&self, e: &NatEvent, time_ns: u64) -> String {
        let msg = message(e, time_ns);
        match self.format {
            SyslogFormat::Rfc5424 => format!(
                "<{}>1 {} {} fastables {} NAT - {msg}",
                self.pri,
                time::rfc3339(time_ns),
                self.host,
                self.pid
            ),
            SyslogFormat::Rfc3164 => format!(
                "<{}>{} {} fastables[{}]: {msg}",
                self.pri,
                time::bsd(time_ns),
                self.host,
                self.pid
            ),
        }
    }
}

/// The event in a line holding a message of [`message`]'s (after whatever
/// a syslog daemon wrote before it), with its time in ns since the epoch.
pub fn parse(line: &str) -> Option<NatEvent> {
    let mut words = line.split_whitespace();
    let kind = words.by_ref().find_map(NatEventKind::from_name)?;
    let mut e = NatEvent {
        kind,
        ..NatEvent::default()
    };
    let addr_port = |v: &str| -> Option<(u32, u16)> {
        match v.rsplit_once(':') {
            Some((a, p)) => Some((u32::from(a.parse::<Ipv4Addr>().ok()?), p.parse().ok()?)),
            None => Some((u32::from(v.parse::<Ipv4Addr>().ok()?), 0)),
        }
    };
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        match k {
            "t" => {
                let (s, us) = v.split_once('.').unwrap_or((v, "0"));
                e.time_ns = s.parse::<u64>().ok()? * 1_000_000_000 + us.parse::<u64>().ok()? * 1000;
            }
            "proto" => e.proto = v.parse().ok()?,
            "src" => (e.src, e.sport) = addr_port(v)?,
            "xsrc" => (e.xsrc, e.xsport) = addr_port(v)?,
            "dst" => (e.dst, e.dport) = addr_port(v)?,
            "xdst" => (e.xdst, e.xdport) = addr_port(v)?,
            "ports" => {
                let (a, b) = v.split_once('-')?;
                e.block = (a.parse().ok()?, b.parse().ok()?);
            }
            "pool" => e.pool = v.parse().ok()?,
            "limit" => e.limit = v.parse().ok()?,
            _ => {}
        }
    }
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<NatEvent> {
        let base = NatEvent {
            time_ns: 1_733_604_800_123_456_000,
            proto: 6,
            src: 0xac12_0002,
            sport: 37622,
            xsrc: 0xcb00_7105,
            xsport: 40123,
            dst: 0x0808_0808,
            dport: 80,
            xdst: 0x0808_0808,
            xdport: 80,
            ..NatEvent::default()
        };
        let block = NatEvent {
            time_ns: base.time_ns,
            src: base.src,
            xsrc: base.xsrc,
            block: (40000, 40511),
            pool: 1,
            ..NatEvent::default()
        };
        vec![
            NatEvent {
                kind: NatEventKind::SessionCreate,
                ..base
            },
            NatEvent {
                kind: NatEventKind::SessionDelete,
                ..base
            },
            NatEvent {
                kind: NatEventKind::BlockAlloc,
                ..block
            },
            NatEvent {
                kind: NatEventKind::BlockRelease,
                ..block
            },
            NatEvent {
                kind: NatEventKind::AddressesExhausted,
                time_ns: base.time_ns,
                pool: 2,
                ..NatEvent::default()
            },
            NatEvent {
                kind: NatEventKind::PortsExhausted,
                time_ns: base.time_ns,
                proto: 17,
                src: base.src,
                xsrc: base.xsrc,
                ..NatEvent::default()
            },
            NatEvent {
                kind: NatEventKind::QuotaExceeded,
                time_ns: base.time_ns,
                proto: 6,
                src: base.src,
                limit: 2016,
                ..NatEvent::default()
            },
        ]
    }

    #[test]
    fn lines_as_documented_and_read_back() {
        let h = Header {
            format: SyslogFormat::Rfc5424,
            pri: 182,
            host: "rtr".into(),
            pid: 77,
        };
        let e = events();
        assert_eq!(
            h.line(&e[0], e[0].time_ns),
            "<182>1 2024-12-07T20:53:20.123456Z rtr fastables 77 NAT - SESSION_CREATE \
             t=1733604800.123456 proto=6 src=172.18.0.2:37622 xsrc=203.0.113.5:40123 \
             dst=8.8.8.8:80 xdst=8.8.8.8:80"
        );
        let h3 = Header {
            format: SyslogFormat::Rfc3164,
            ..h.clone()
        };
        assert_eq!(
            h3.line(&e[2], e[2].time_ns),
            "<182>Dec  7 20:53:20 rtr fastables[77]: BLOCK_ALLOC t=1733604800.123456 \
             src=172.18.0.2 xsrc=203.0.113.5 ports=40000-40511 pool=1"
        );
        for ev in &e {
            for hd in [&h, &h3] {
                let line = hd.line(ev, ev.time_ns);
                assert_eq!(parse(&line).as_ref(), Some(ev), "{line}");
            }
            // As rsyslog writes it to a file.
            let line = format!(
                "Dec  7 20:53:20 rtr fastables[77]: {}",
                message(ev, ev.time_ns)
            );
            assert_eq!(parse(&line).as_ref(), Some(ev), "{line}");
        }
        assert_eq!(parse("Dec  7 20:53:20 rtr sshd[1]: Accepted"), None);
    }
}
