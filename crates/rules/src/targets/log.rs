//! `-j LOG` (`xt_LOG.c`): the data plane logs the packet (`Effects::logs`
//! names the rules, whose options it reads back); the rule scan goes on.

use std::fmt::Write;

use crate::ctx::{PacketCtx, MAX_LOGS};
use crate::error::PResult;
use crate::model::LogTarget;
use crate::names::{self, parse_uint};
use crate::parse::{bad, Opt, OptSpec};
use crate::print::save_string;

const LEVEL: u8 = 0;
const PREFIX: u8 = 1;
const TCP_SEQUENCE: u8 = 2;
const TCP_OPTIONS: u8 = 3;
const IP_OPTIONS: u8 = 4;
const UID: u8 = 5;
const MACDECODE: u8 = 6;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("log-level", LEVEL),
    OptSpec::value("log-prefix", PREFIX),
    OptSpec::flag("log-tcp-sequence", TCP_SEQUENCE),
    OptSpec::flag("log-tcp-options", TCP_OPTIONS),
    OptSpec::flag("log-ip-options", IP_OPTIONS),
    OptSpec::flag("log-uid", UID),
    OptSpec::flag("log-macdecode", MACDECODE),
];

pub(super) fn parse_option(l: &mut LogTarget, opt: &Opt<'_>) -> PResult<()> {
    let a = opt.arg();
    match opt.id {
        LEVEL => {
            let lv = match parse_uint(a) {
                Some(v) if v <= 7 => v as u8,
                Some(_) => return Err(bad(a, format!("log level `{a}` unknown: use 0-7 or emerg, alert, crit, error, warning, notice, info, debug"))),
                None => names::LOG_LEVELS
                    .iter()
                    .find(|(n, _)| *n == a)
                    .map(|&(_, v)| v)
                    .ok_or_else(|| bad(a, format!("log level `{a}` unknown: use 0-7 or emerg, alert, crit, error, warning, notice, info, debug")))?,
            };
            l.level = if lv == 4 { None } else { Some(lv) };
        }
        PREFIX => {
            if a.is_empty() {
                return Err(bad(a, "--log-prefix must not be empty"));
            }
            let mut s = a.to_string();
            if s.len() > 29 {
                let mut n = 29;
                while !s.is_char_boundary(n) {
                    n -= 1;
                }
                s.truncate(n);
            }
            l.prefix = Some(s);
        }
        TCP_SEQUENCE => l.tcp_sequence = true,
        TCP_OPTIONS => l.tcp_options = true,
        IP_OPTIONS => l.ip_options = true,
        UID => l.uid = true,
        _ => l.macdecode = true,
    }
    Ok(())
}

pub(super) fn save(s: &mut String, l: &LogTarget) {
    s.push_str(" -j LOG");
    if let Some(p) = &l.prefix {
        s.push_str(" --log-prefix");
        save_string(s, p);
    }
    if let Some(lv) = l.level {
        if lv != 4 {
            let _ = write!(s, " --log-level {lv}");
        }
    }
    for (on, name) in [
        (l.tcp_sequence, "--log-tcp-sequence"),
        (l.tcp_options, "--log-tcp-options"),
        (l.ip_options, "--log-ip-options"),
        (l.uid, "--log-uid"),
        (l.macdecode, "--log-macdecode"),
    ] {
        if on {
            s.push(' ');
            s.push_str(name);
        }
    }
}

pub(super) fn list(out: &mut String, l: &LogTarget) {
    let flags = u8::from(l.tcp_sequence)
        | u8::from(l.tcp_options) << 1
        | u8::from(l.ip_options) << 2
        | u8::from(l.uid) << 3
        | u8::from(l.macdecode) << 5;
    let _ = write!(out, " LOG flags {flags} level {}", l.level.unwrap_or(4));
    if let Some(p) = l.prefix.as_deref().filter(|p| !p.is_empty()) {
        let _ = write!(out, " prefix \"{p}\"");
    }
}

/// Records `entry` among the packet's logs; past [`MAX_LOGS`] only counts.
#[inline(always)]
pub(super) fn apply(ctx: &mut PacketCtx, entry: u32) {
    let fx = &mut ctx.effects;
    if usize::from(fx.log_count) < MAX_LOGS {
        fx.logs[usize::from(fx.log_count)] = entry;
        fx.log_count += 1;
    } else {
        fx.log_overflow = fx.log_overflow.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn log_overflow() {
        let rules = (0..6)
            .map(|_| rule(Target::Log(LogTarget::default())))
            .collect();
        let mut t = Loaded::new(&filter_input(rules));
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.run(Table::Filter, Hook::Input, &mut p), Verdict::Drop);
        assert_eq!(p.effects.log_count as usize, MAX_LOGS);
        assert_eq!(p.effects.log_overflow, 2);
        let idx: Vec<u32> = p
            .effects
            .logs
            .iter()
            .map(|&id| t.c.rule_info(id).index)
            .collect();
        assert_eq!(idx, vec![1, 2, 3, 4]);
    }
}
