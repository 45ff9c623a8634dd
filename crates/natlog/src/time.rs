//! Wall-clock times as the logs print them, in UTC, without a calendar
//! crate: RFC 3339 with microseconds (RFC 5424's TIMESTAMP), the BSD
//! syslog stamp (`Dec  7 20:53:20`), and conntrack-tools' `[secs.usecs]`.

/// Days since 1970-01-01 as (year, month 1..=12, day 1..=31): Howard
/// Hinnant's `civil_from_days`.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The parts of `ns` since the epoch: date, hour, minute, second, µs.
fn parts(ns: u64) -> ((i64, u32, u32), u64, u64, u64, u64) {
    let secs = ns / 1_000_000_000;
    let us = (ns % 1_000_000_000) / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    (civil(days), rem / 3600, rem % 3600 / 60, rem % 60, us)
}

/// `2024-12-07T20:53:20.123456Z`.
pub fn rfc3339(ns: u64) -> String {
    let ((y, mo, d), h, mi, s, us) = parts(ns);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

/// `Dec  7 20:53:20` (RFC 3164: no year, the day padded with a space).
pub fn bsd(ns: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let ((_, mo, d), h, mi, s, _) = parts(ns);
    let m = MONTHS.get(mo as usize - 1).copied().unwrap_or("Jan");
    format!("{m} {d:>2} {h:02}:{mi:02}:{s:02}")
}

/// `1733600000.123456`, as `conntrack -o timestamp` prints inside `[]`.
pub fn secs_us(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, (ns % 1_000_000_000) / 1000)
}

/// The wall clock now, in ns since the epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // `date -u -d @1733604800.123456`: Sat Dec  7 20:53:20 UTC 2024.
        let t = 1_733_604_800_123_456_789;
        assert_eq!(rfc3339(t), "2024-12-07T20:53:20.123456Z");
        assert_eq!(bsd(t), "Dec  7 20:53:20");
        assert_eq!(secs_us(t), "1733604800.123456");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        // A leap day.
        assert_eq!(
            rfc3339(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
