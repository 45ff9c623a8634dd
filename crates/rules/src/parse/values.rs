//! Value parsers several options share: addresses and masks, ports and
//! port ranges, marks, numbers, interface and chain names. A value only one
//! extension reads is parsed in that extension's file.

use std::net::Ipv4Addr;

use crate::error::{ErrorKind, PResult, Problem};
use crate::model::{IfaceName, Ipv4Net, PortRange};
use crate::names::{self, parse_c_uint};

/// A value the option does not accept.
pub(crate) fn bad(tok: &str, msg: impl Into<String>) -> Problem {
    Problem::new(ErrorKind::BadValue, tok, msg)
}

/// A value or option that the rule's other options (its protocol, its chain)
/// do not allow.
pub(crate) fn not_allowed(tok: &str, msg: impl Into<String>) -> Problem {
    Problem::new(ErrorKind::NotAllowed, tok, msg)
}

/// Options that cannot go together, or a required one missing.
pub(crate) fn conflict(tok: &str, msg: impl Into<String>) -> Problem {
    Problem::new(ErrorKind::Conflict, tok, msg)
}

/// An address as iptables reads it: 1 to 4 dotted decimal parts (missing ones
/// are 0), or `localhost`.
pub(crate) fn parse_addr(s: &str) -> PResult<Ipv4Addr> {
    if s == "localhost" {
        return Ok(Ipv4Addr::LOCALHOST);
    }
    let parts: Vec<&str> = s.split('.').collect();
    let mut b = [0u8; 4];
    let ok = !parts.is_empty()
        && parts.len() <= 4
        && parts.iter().enumerate().all(|(i, p)| {
            match parse_c_uint(p).and_then(|v| u8::try_from(v).ok()) {
                Some(v) => {
                    b[i] = v;
                    true
                }
                None => false,
            }
        });
    if ok {
        Ok(Ipv4Addr::from(b))
    } else if s.chars().any(|c| c.is_ascii_alphabetic()) {
        Err(bad(
            s,
            format!("host name `{s}` is not supported: give an IPv4 address such as 192.0.2.1"),
        ))
    } else {
        Err(bad(
            s,
            format!("invalid IPv4 address `{s}`: expected a dotted quad such as 192.0.2.1"),
        ))
    }
}

/// `addr[/len|/dotted-mask]`, masked as iptables does for `-s`/`-d`.
pub(crate) fn parse_net(s: &str) -> PResult<Ipv4Net> {
    let n = parse_net_raw(s)?;
    Ok(Ipv4Net {
        addr: Ipv4Addr::from(u32::from(n.addr) & n.mask),
        mask: n.mask,
    })
}

/// `addr[/len|/dotted-mask]` with the host bits kept (conntrack addresses:
/// iptables prints them as given; the compiler masks). A dotted mask need not
/// be contiguous: iptables keeps `255.0.255.0` as it is.
pub(crate) fn parse_net_raw(s: &str) -> PResult<Ipv4Net> {
    let (a, m) = match s.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (s, None),
    };
    let addr = parse_addr(a)?;
    let mask = match m {
        None => u32::MAX,
        Some(m) if m.contains('.') => u32::from(parse_addr(m).map_err(|_| {
            bad(
                s,
                format!("invalid mask `{m}`: use a prefix length 0-32 or a dotted mask"),
            )
        })?),
        Some(m) => match parse_c_uint(m) {
            Some(v) if v <= 32 => Ipv4Net::prefix_mask(v as u8),
            _ => {
                return Err(bad(
                    s,
                    format!("invalid mask `{m}`: use a prefix length 0-32 or a dotted mask"),
                ))
            }
        },
    };
    Ok(Ipv4Net { addr, mask })
}

/// A port number (decimal, `0x` hex or `0` octal) or a service name for
/// `proto`; `whole` is the argument it came from, for messages.
pub(crate) fn parse_port(s: &str, whole: &str, proto: Option<u8>) -> PResult<u16> {
    parse_c_uint(s)
        .and_then(|v| u16::try_from(v).ok())
        .or_else(|| names::port_by_name(s, proto))
        .ok_or_else(|| {
            bad(
                whole,
                format!(
                "invalid port/service `{s}`: use a number 0-65535 or a service name such as http"
            ),
            )
        })
}

/// `a`, `a:b`, `:b`, `a:` (tcp/udp/conntrack/length style).
pub(crate) fn parse_port_range(s: &str, proto: Option<u8>) -> PResult<PortRange> {
    match s.split_once(':') {
        None => {
            let p = parse_port(s, s, proto)?;
            Ok(PortRange { lo: p, hi: p })
        }
        Some((a, b)) => {
            let lo = if a.is_empty() {
                0
            } else {
                parse_port(a, s, proto)?
            };
            let hi = if b.is_empty() {
                65535
            } else {
                parse_port(b, s, proto)?
            };
            Ok(PortRange { lo, hi })
        }
    }
}

/// A port as the udp and conntrack matches read it: decimal only (leading
/// zeros are decimal), taken as a C `int` and then cut to 16 bits, so 65536
/// is 0 and 99999 is 34463; or a service name.
pub(crate) fn parse_port_wrapping(x: &str, whole: &str, proto: Option<u8>) -> PResult<u16> {
    if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) {
        let v: i64 = x.parse().unwrap_or(i64::MAX);
        let i = v as i32;
        if i >= 0 {
            return Ok(i as u16);
        }
    } else if let Some(p) = names::port_by_name(x, proto) {
        return Ok(p);
    }
    Err(bad(
        whole,
        format!(
            "port `{x}` does not resolve to anything: use a decimal port number or a service name"
        ),
    ))
}

/// `a`, `a:b`, `:b`, `a:` with [`parse_port_wrapping`] ports (udp, conntrack).
pub(crate) fn parse_port_range_wrapping(s: &str, proto: Option<u8>) -> PResult<PortRange> {
    match s.split_once(':') {
        None => {
            let p = parse_port_wrapping(s, s, proto)?;
            Ok(PortRange { lo: p, hi: p })
        }
        Some((a, b)) => Ok(PortRange {
            lo: if a.is_empty() {
                0
            } else {
                parse_port_wrapping(a, s, proto)?
            },
            hi: if b.is_empty() {
                65535
            } else {
                parse_port_wrapping(b, s, proto)?
            },
        }),
    }
}

/// A 32-bit number (decimal, `0x` hex or `0` octal); `what` names it in messages.
pub(crate) fn parse_u32_val(s: &str, what: &str) -> PResult<u32> {
    parse_c_uint(s)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            bad(
                s,
                format!(
                    "bad {what} `{s}`: expected a number 0-4294967295 (decimal, 0x hex or 0 octal)"
                ),
            )
        })
}

/// `value[/mask]`, mask defaulting to all ones.
pub(crate) fn parse_mark(s: &str) -> PResult<(u32, u32)> {
    match s.split_once('/') {
        Some((v, m)) => Ok((parse_u32_val(v, "mark")?, parse_u32_val(m, "mask")?)),
        None => Ok((parse_u32_val(s, "mark")?, u32::MAX)),
    }
}

/// A number in `lo..=hi`; `what` names the option in messages.
pub(crate) fn parse_num_range(s: &str, lo: u64, hi: u64, what: &str) -> PResult<u64> {
    match parse_c_uint(s) {
        Some(v) if v >= lo && v <= hi => Ok(v),
        _ => Err(bad(
            s,
            format!("bad value `{s}` for {what}: expected a number {lo}-{hi}"),
        )),
    }
}

/// An interface name for `-i`/`-o`: 1 to 15 characters.
pub(crate) fn parse_iface(s: &str) -> PResult<IfaceName> {
    if s.len() > 15 {
        return Err(bad(
            s,
            format!("interface name `{s}` is too long: at most 15 characters"),
        ));
    }
    if s.is_empty() {
        return Err(bad(s, "empty interface name"));
    }
    Ok(IfaceName(s.to_string()))
}

/// `a` or `a-b` (iprange, NAT ranges).
pub(crate) fn parse_range_addrs(s: &str) -> PResult<(Ipv4Addr, Ipv4Addr)> {
    match s.split_once('-') {
        Some((a, b)) => Ok((parse_addr(a)?, parse_addr(b)?)),
        None => {
            let a = parse_addr(s)?;
            Ok((a, a))
        }
    }
}

/// Chain names as iptables allows them.
pub(crate) fn check_chain_name(name: &str) -> PResult<()> {
    if name.is_empty() {
        return Err(Problem::new(
            ErrorKind::ChainExists,
            name,
            "empty chain name",
        ));
    }
    if name.len() > 28 {
        return Err(Problem::new(
            ErrorKind::ChainExists,
            name,
            format!("chain name `{name}` too long: at most 28 characters"),
        ));
    }
    if name.starts_with('-') || name.starts_with('!') {
        return Err(Problem::new(
            ErrorKind::ChainExists,
            name,
            "chain name may not start with `-` or `!`",
        ));
    }
    if names::XTABLES_TARGETS.contains(&name) {
        return Err(Problem::new(
            ErrorKind::ChainExists,
            name,
            format!("chain name `{name}` clashes with a target name: choose another name"),
        ));
    }
    Ok(())
}

/// The blanks iptables-restore separates and trims by.
pub(crate) const BLANK: [char; 2] = [' ', '\t'];

/// `strtoull`: digits, saturating at `u64::MAX` as the kernel's iptables does.
pub(crate) fn parse_counter(s: &str) -> Option<u64> {
    // strtoull: leading blanks, an optional sign (`-1` is 2^64-1), saturating.
    let s = s.trim_start_matches(BLANK);
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.parse::<u64>() {
        Ok(v) if neg => Some(v.wrapping_neg()),
        Ok(v) => Some(v),
        Err(_) => Some(u64::MAX),
    }
}
