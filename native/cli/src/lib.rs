//! The `fasttier` tool's larger commands as a library, so they can be tested in-process over any object
//! store (the binary, `main.rs`, only parses arguments, opens the stores and prints):
//!
//! * [`wal_cmd`] — `fasttier wal list`: the fast tier's streams, or one broker's objects;
//! * [`partition`] — `fasttier partition show` (a partition in the slow and the fast tier, resolved) and
//!   `fasttier partition verify` (a broker's local log checked byte for byte against the tiers);
//! * [`local`] — reading a local partition directory without the broker;
//! * [`rebuild`] — `fasttier rebuild`: a stopped broker's partitions written back into its log directory
//!   from the tiers, in Kafka's on-disk format.

pub mod local;
pub mod partition;
pub mod rebuild;
pub mod wal_cmd;

/// `unix_ms` as an ISO-8601 UTC timestamp with milliseconds (`2023-11-14T22:13:20.000Z`).
pub fn utc(unix_ms: i64) -> String {
    let (secs, milli) = (unix_ms.div_euclid(1000), unix_ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian, eras of 400 years).
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// `a..=b` ranges as text (`none` when empty).
pub fn ranges_text(ranges: &[(i64, i64)]) -> String {
    if ranges.is_empty() {
        return "none".into();
    }
    ranges.iter().map(|(a, b)| format!("{a}..={b}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(ranges_text(&[(1, 2), (5, 5)]), "1..=2, 5..=5");
    }
}
