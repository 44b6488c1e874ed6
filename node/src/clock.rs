//! Wall-clock time: every read of the system clock is here (monotonic `Instant`s for timeouts
//! and deadlines are read where they are used).

/// The current time, UTC, to the second.
pub fn now_utc() -> chrono::DateTime<chrono::Utc> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// A time as RFC 3339 to the second, e.g. 2026-11-23T10:00:00Z.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The current time, UTC, RFC 3339 to the second.
pub fn now() -> String {
    rfc3339(now_utc())
}

/// The current time in milliseconds since the Unix epoch (message and round timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
