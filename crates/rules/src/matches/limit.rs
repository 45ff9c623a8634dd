//! `-m limit` (`xt_limit.c`, and `nft_limit.c` for what iptables-nft
//! installs): a token bucket per rule, refilled with time, that matches while
//! it has tokens. The bucket is per worker state (`RuleState`), the rate and
//! burst are the rule's.

use std::fmt::Write;

use super::MatchResult;
use crate::compile::{CompileError, Flavor, RuleBuild};
use crate::error::PResult;
use crate::model::{LimitMatch, LimitUnit};
use crate::names::parse_uint;
use crate::parse::{bad, parse_num_range, Opt, OptSpec};

const LIMIT: u8 = 0;

pub(super) const OPTIONS: &[OptSpec] = &[
    OptSpec::value("limit", LIMIT),
    OptSpec::value("limit-burst", 1),
];

/// `-m limit` without options: 3/hour, burst 5.
pub(super) const DEFAULT: LimitMatch = LimitMatch {
    rate: 3,
    unit: LimitUnit::Hour,
    burst: 5,
};

/// iptables' `XT_LIMIT_SCALE`: `--limit` is stored as the average interval
/// between packets in 1/10000 s.
const XT_LIMIT_SCALE: u32 = 10_000;

/// The seconds of a unit.
fn unit_seconds(u: LimitUnit) -> u32 {
    match u {
        LimitUnit::Second => 1,
        LimitUnit::Minute => 60,
        LimitUnit::Hour => 3600,
        LimitUnit::Day => 86400,
    }
}

pub(super) fn parse_option(l: &mut LimitMatch, opt: &Opt<'_>) -> PResult<()> {
    let a = opt.arg();
    if opt.id == LIMIT {
        let (rate, unit) = parse_limit_rate(a)?;
        l.rate = rate;
        l.unit = unit;
    } else {
        let b = parse_num_range(a, 0, 10000, "--limit-burst")? as u32;
        l.burst = if b == 0 { 5 } else { b };
    }
    Ok(())
}

/// `--limit N[/second|minute|hour|day]` (unit by case-insensitive prefix),
/// normalised the way iptables stores it (an average interval) and prints it.
fn parse_limit_rate(s: &str) -> PResult<(u32, LimitUnit)> {
    let err = || {
        bad(
            s,
            format!("bad rate `{s}`: use N/second, N/minute, N/hour or N/day (N at least 1)"),
        )
    };
    let (n, unit) = match s.split_once('/') {
        Some((n, u)) => (n, Some(u)),
        None => (s, None),
    };
    let unit = match unit {
        None => LimitUnit::Second,
        Some("") => return Err(err()),
        Some(u) => {
            let u = u.to_ascii_lowercase();
            if "second".starts_with(&u) {
                LimitUnit::Second
            } else if "minute".starts_with(&u) {
                LimitUnit::Minute
            } else if "hour".starts_with(&u) {
                LimitUnit::Hour
            } else if "day".starts_with(&u) {
                LimitUnit::Day
            } else {
                return Err(err());
            }
        }
    };
    let r = parse_uint(n)
        .filter(|&r| r > 0 && r <= u64::from(u32::MAX))
        .ok_or_else(err)?;
    let avg = u64::from(XT_LIMIT_SCALE) * u64::from(unit_seconds(unit)) / r;
    if avg == 0 {
        return Err(bad(s, format!("rate `{s}` too fast: at most 10000/second")));
    }
    Ok(limit_from_avg(avg))
}

/// iptables' `print_rate`: the largest unit that keeps the rate exact enough.
fn limit_from_avg(avg: u64) -> (u32, LimitUnit) {
    let scale = u64::from(XT_LIMIT_SCALE);
    let rates = [
        (LimitUnit::Day, scale * 86400),
        (LimitUnit::Hour, scale * 3600),
        (LimitUnit::Minute, scale * 60),
        (LimitUnit::Second, scale),
    ];
    let mut i = 1;
    while i < rates.len() {
        let m = rates[i].1;
        if avg > m || m / avg < m % avg {
            break;
        }
        i += 1;
    }
    let (unit, m) = rates[i - 1];
    (u32::try_from(m / avg).unwrap_or(u32::MAX), unit)
}

/// The unit as iptables prints it.
fn short_unit(u: LimitUnit) -> &'static str {
    match u {
        LimitUnit::Second => "sec",
        LimitUnit::Minute => "min",
        LimitUnit::Hour => "hour",
        LimitUnit::Day => "day",
    }
}

pub(super) fn save(s: &mut String, l: &LimitMatch) {
    let _ = write!(s, " -m limit --limit {}/{}", l.rate, short_unit(l.unit));
    if l.burst != 5 {
        let _ = write!(s, " --limit-burst {}", l.burst);
    }
}

pub(super) fn list(out: &mut String, l: &LimitMatch) {
    let _ = write!(
        out,
        " limit: avg {}/{} burst {}",
        l.rate,
        short_unit(l.unit),
        l.burst
    );
}

// ---------------------------------------------------------------------------
// The token bucket

/// The kernel's HZ (that of the reference host): limit buckets refill per jiffy.
pub const HZ: u64 = 250;
const NS_PER_JIFFY: u64 = 1_000_000_000 / HZ;
const MAX_CPJ: u32 = (0xFFFF_FFFFu64 / (HZ * 60 * 60 * 24)) as u32;

const fn pow2_below32(x: u32) -> u32 {
    let mut y = x | (x >> 1);
    y |= y >> 2;
    y |= y >> 4;
    y |= y >> 8;
    y |= y >> 16;
    (y >> 1) + 1
}

/// Credits gained per jiffy (xt_limit's `CREDITS_PER_JIFFY`).
const CREDITS_PER_JIFFY: u32 = pow2_below32(MAX_CPJ);

/// xt_limit's `user2credits` (u32 arithmetic, wrapping like C).
fn user2credits(user: u32) -> u32 {
    let hz = HZ as u32;
    if user > 0xFFFF_FFFF / (hz * CREDITS_PER_JIFFY) {
        (user / XT_LIMIT_SCALE)
            .wrapping_mul(hz)
            .wrapping_mul(CREDITS_PER_JIFFY)
    } else {
        user * hz * CREDITS_PER_JIFFY / XT_LIMIT_SCALE
    }
}

/// `(cost, credit_cap)` of a limit match as iptables and xt_limit compute
/// them, or `None` when iptables or the kernel refuse it.
pub(crate) fn limit_params(l: &LimitMatch) -> Option<(u32, u32)> {
    if l.rate == 0 {
        return None;
    }
    let avg = XT_LIMIT_SCALE * unit_seconds(l.unit) / l.rate;
    if avg == 0 || l.burst == 0 {
        return None;
    }
    let cap = user2credits(avg.wrapping_mul(l.burst));
    let cost = user2credits(avg);
    if cap < cost {
        return None;
    }
    Some((cost, cap))
}

/// `(cost, tokens_max)` in nanoseconds of the nftables `limit` expression
/// iptables-nft installs for a `-m limit` (its `add_nft_limit` turns
/// iptables' `avg` back into a rate and a unit, as `print_rate` does), or
/// `None` when refused.
pub(crate) fn nft_limit_params(l: &LimitMatch) -> Option<(u64, u64)> {
    limit_params(l)?;
    let avg = XT_LIMIT_SCALE * unit_seconds(l.unit) / l.rate;
    let (rate, unit) = limit_from_avg(u64::from(avg));
    if rate == 0 {
        return None;
    }
    let cost = u64::from(unit_seconds(unit)) * 1_000_000_000 / u64::from(rate);
    Some((cost, cost.checked_mul(u64::from(l.burst))?))
}

/// Per-rule limit state: xt_limit's `prev` (jiffies) and `credit`, or
/// nft_limit's `last` (ns) and `tokens`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    prev: u64,
    credit: u64,
    started: bool,
}

impl Bucket {
    /// A full bucket: `cap` credits (or tokens), loaded at the first packet.
    fn full(cap: u64) -> Bucket {
        Bucket {
            prev: 0,
            credit: cap,
            started: false,
        }
    }
}

/// xt_limit's `limit_mt` on one bucket (u32 credits, wrapping like C). Time
/// that goes backwards adds no credit. The bucket was loaded full at the
/// first packet.
#[inline]
fn limit_step(b: &mut Bucket, cost: u32, cap: u32, now_ns: u64) -> bool {
    let now = now_ns / NS_PER_JIFFY;
    if !b.started {
        b.started = true;
        b.prev = now;
    }
    let delta = now.saturating_sub(b.prev);
    if now > b.prev {
        b.prev = now;
    }
    let inc = delta.wrapping_mul(u64::from(CREDITS_PER_JIFFY)) as u32;
    let mut credit = (b.credit as u32).wrapping_add(inc);
    if credit > cap {
        credit = cap;
    }
    let ok = credit >= cost;
    if ok {
        credit -= cost;
    }
    b.credit = u64::from(credit);
    ok
}

/// nft_limit's `nft_limit_eval` (packets mode): tokens are nanoseconds.
#[inline]
fn nft_limit_step(b: &mut Bucket, cost: u64, max: u64, now_ns: u64) -> bool {
    if !b.started {
        b.started = true;
        b.prev = now_ns;
    }
    let mut tokens = b.credit.saturating_add(now_ns.saturating_sub(b.prev));
    if tokens > max {
        tokens = max;
    }
    if now_ns > b.prev {
        b.prev = now_ns;
    }
    if tokens >= cost {
        b.credit = tokens - cost;
        true
    } else {
        b.credit = tokens;
        false
    }
}

/// A compiled `-m limit`: its bucket's slot in the worker's state, the cost
/// of a packet and the bucket's size, in xt_limit credits or nft_limit
/// nanoseconds.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    slot: u32,
    cost: u64,
    cap: u64,
    nft: bool,
}

/// The unit as the compiler's error names it.
fn unit_name(u: LimitUnit) -> &'static str {
    match u {
        LimitUnit::Second => "second",
        LimitUnit::Minute => "minute",
        LimitUnit::Hour => "hour",
        LimitUnit::Day => "day",
    }
}

pub(super) fn compile(l: &LimitMatch, b: &mut RuleBuild<'_>) -> Result<Compiled, CompileError> {
    let nft = b.flavor == Flavor::Nft;
    let params = if nft {
        nft_limit_params(l)
    } else {
        limit_params(l).map(|(c, m)| (u64::from(c), u64::from(m)))
    };
    let Some((cost, cap)) = params else {
        return Err(CompileError::BadLimit {
            line: b.line,
            rate: l.rate,
            unit: unit_name(l.unit),
            burst: l.burst,
        });
    };
    let slot = b.add_bucket(Bucket::full(cap));
    Ok(Compiled {
        slot,
        cost,
        cap,
        nft,
    })
}

#[inline(always)]
pub(super) fn eval(l: &Compiled, buckets: &mut [Bucket], now_ns: u64) -> MatchResult {
    match buckets.get_mut(l.slot as usize) {
        Some(b) if l.nft => MatchResult::from(nft_limit_step(b, l.cost, l.cap, now_ns)),
        Some(b) => MatchResult::from(limit_step(b, l.cost as u32, l.cap as u32, now_ns)),
        None => MatchResult::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn limit_rates_normalise_like_iptables() {
        assert_eq!(limit_from_avg(10000 * 60 / 60), (1, LimitUnit::Second));
        assert_eq!(limit_from_avg(10000 * 60 / 7), (7, LimitUnit::Minute));
        assert_eq!(limit_from_avg(10000 * 86400 / 24), (1, LimitUnit::Hour));
        assert_eq!(limit_from_avg(10000 * 3600 / 3), (3, LimitUnit::Hour));
    }

    #[test]
    fn limit_token_bucket() {
        // 1/second, burst 2, at HZ=250: cost 32000, cap 64000, 128 credits per jiffy.
        let l = LimitMatch {
            rate: 1,
            unit: LimitUnit::Second,
            burst: 2,
        };
        assert_eq!(limit_params(&l), Some((32000, 64000)));
        let rs = filter_input(vec![with_matches(vec![Match::Limit(l)])]);
        let mut t = Loaded::new(&rs);
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        let ms = 1_000_000u64;
        let mut at = |ns: u64| {
            let mut q = p;
            t.c.run(Table::Filter, Hook::Input, &mut q, &mut t.s, ns)
        };
        let base = 5_000 * ms;
        assert_eq!(at(base), Verdict::Accept);
        assert_eq!(at(base), Verdict::Accept);
        assert_eq!(at(base + 3 * ms), Verdict::Drop);
        // 249 jiffies later: 31872 credits < cost.
        assert_eq!(at(base + 996 * ms), Verdict::Drop);
        // One more jiffy: 32000.
        assert_eq!(at(base + 1000 * ms), Verdict::Accept);
        assert_eq!(at(base + 1000 * ms), Verdict::Drop);
        // A long pause refills only up to the burst.
        assert_eq!(at(base + 100_000 * ms), Verdict::Accept);
        assert_eq!(at(base + 100_000 * ms), Verdict::Accept);
        assert_eq!(at(base + 100_000 * ms), Verdict::Drop);
        // Time going backwards adds nothing.
        assert_eq!(at(base), Verdict::Drop);
        // Default 3/hour burst 5.
        let d = LimitMatch {
            rate: 3,
            unit: LimitUnit::Hour,
            burst: 5,
        };
        let (cost, cap) = limit_params(&d).unwrap();
        assert_eq!(cost, 12_000_000 / 10_000 * 250 * 128);
        assert_eq!(cap, 60_000_000 / 10_000 * 250 * 128);
        // Refused rates.
        for bad in [
            LimitMatch {
                rate: 0,
                unit: LimitUnit::Second,
                burst: 5,
            },
            LimitMatch {
                rate: 20_000,
                unit: LimitUnit::Second,
                burst: 5,
            },
            LimitMatch {
                rate: 1,
                unit: LimitUnit::Second,
                burst: 0,
            },
        ] {
            let rs = filter_input(vec![with_matches(vec![Match::Limit(bad)])]);
            assert!(matches!(
                CompiledRuleset::compile(&rs, IFACES),
                Err(CompileError::BadLimit { line: 7, .. })
            ));
        }
    }

    #[test]
    fn nft_limit_token_bucket() {
        let l = LimitMatch {
            rate: 1,
            unit: LimitUnit::Second,
            burst: 2,
        };
        assert_eq!(nft_limit_params(&l), Some((1_000_000_000, 2_000_000_000)));
        // iptables-nft's rate/unit reconstruction.
        let p = |rate, unit| {
            nft_limit_params(&LimitMatch {
                rate,
                unit,
                burst: 1,
            })
            .unwrap()
            .0
        };
        assert_eq!(p(7, LimitUnit::Day), 86_400_000_000_000 / 7);
        assert_eq!(p(13, LimitUnit::Minute), 60_000_000_000 / 13);
        assert_eq!(p(3, LimitUnit::Hour), 1_200_000_000_000);
        assert_eq!(p(7, LimitUnit::Second), 1_000_000_000 / 7);
        let rs = filter_input(vec![with_matches(vec![Match::Limit(l)])]);
        let c = CompiledRuleset::compile_with(
            &rs,
            IFACES,
            CompileOptions {
                flavor: Flavor::Nft,
            },
        )
        .unwrap();
        assert_eq!(c.flavor(), Flavor::Nft);
        let mut s = RuleState::new(&c);
        let p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        let ms = 1_000_000u64;
        let mut at = |ns: u64| {
            let mut q = p;
            c.run(Table::Filter, Hook::Input, &mut q, &mut s, ns)
        };
        let base = 5_000 * ms;
        assert_eq!(at(base), Verdict::Accept);
        assert_eq!(at(base), Verdict::Accept);
        assert_eq!(at(base), Verdict::Drop);
        // Tokens accumulate across failed attempts (nanosecond precision).
        assert_eq!(at(base + 999 * ms), Verdict::Drop);
        assert_eq!(at(base + 1000 * ms), Verdict::Accept);
        assert_eq!(at(base + 1000 * ms), Verdict::Drop);
        assert_eq!(at(base + 100_000 * ms), Verdict::Accept);
        assert_eq!(at(base + 100_000 * ms), Verdict::Accept);
        assert_eq!(at(base + 100_000 * ms), Verdict::Drop);
    }

    #[test]
    fn limit_is_evaluated_only_when_reached() {
        // The limit after a failing match must not consume credit.
        let l = LimitMatch {
            rate: 1,
            unit: LimitUnit::Hour,
            burst: 1,
        };
        let rs = filter_input(vec![with_matches(vec![
            Match::Mark(pos(MarkMask { value: 1, mask: 1 })),
            Match::Limit(l),
        ])]);
        let mut t = Loaded::new(&rs);
        let mut p = tcp_pkt([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        assert_eq!(t.input(&p), Verdict::Drop);
        p.mark = 1;
        assert_eq!(t.input(&p), Verdict::Accept);
        assert_eq!(t.input(&p), Verdict::Drop);
    }
}
