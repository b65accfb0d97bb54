//! `Timestamp`: a point in time as milliseconds since the Unix epoch.
//!
//! Records and indexes keep plain integers (cheap to compare, store and
//! rebuild); the RFC 3339 text of the API is made at the edge, in the
//! configured UTC offset.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Room for the longest RFC 3339 text of a `Timestamp` (a six-digit year,
/// nanoseconds and an offset fit).
pub const RFC3339_MAX_LEN: usize = 48;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus `seconds` (saturating).
    pub fn plus_seconds(self, seconds: u64) -> Self {
        let millis = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }

    /// This instant plus `millis` milliseconds (saturating).
    pub fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Converts from a `time` date-time.
    pub fn from_datetime(at: OffsetDateTime) -> Self {
        let millis = at.unix_timestamp_nanos() / 1_000_000;
        Self(i64::try_from(millis).unwrap_or(i64::MAX))
    }

    /// Parses RFC 3339 text (`2026-01-02T03:04:05Z`, any offset).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &Rfc3339).ok().map(Self::from_datetime)
    }

    /// RFC 3339 text in the given offset, with millisecond precision when
    /// the instant has a fractional second.
    pub fn to_rfc3339(self, offset: UtcOffset) -> String {
        let mut buffer = [0u8; RFC3339_MAX_LEN];
        self.rfc3339_in(offset, &mut buffer).to_string()
    }

    /// Writes the RFC 3339 text into `buffer` and returns it (no
    /// allocation: the API prints several times per task).
    pub fn rfc3339_in(self, offset: UtcOffset, buffer: &mut [u8; RFC3339_MAX_LEN]) -> &str {
        let nanos = i128::from(self.0) * 1_000_000;
        let mut cursor = std::io::Cursor::new(&mut buffer[..]);
        let formatted = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .map(|at| at.to_offset(offset))
            .ok()
            .and_then(|at| at.format_into(&mut cursor, &Rfc3339).ok());
        let written = formatted.map_or(0, |_| usize::try_from(cursor.position()).unwrap_or(0));
        std::str::from_utf8(&buffer[..written]).unwrap_or_default()
    }

    /// Whole seconds since the epoch (rounded down).
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_in_any_offset() {
        let at = Timestamp::parse_rfc3339("2026-03-04T05:06:07.250+02:00").unwrap();
        assert_eq!(at.to_rfc3339(UtcOffset::UTC), "2026-03-04T03:06:07.25Z");
        let offset = UtcOffset::from_hms(2, 0, 0).unwrap();
        assert_eq!(at.to_rfc3339(offset), "2026-03-04T05:06:07.25+02:00");
        assert_eq!(Timestamp::parse_rfc3339(&at.to_rfc3339(offset)), Some(at));
    }

    #[test]
    fn parse_rejects_text_that_is_not_rfc3339() {
        assert_eq!(Timestamp::parse_rfc3339("tomorrow"), None);
        assert_eq!(Timestamp::parse_rfc3339("2026-03-04 05:06:07"), None);
    }

    #[test]
    fn plus_seconds_saturates() {
        assert_eq!(Timestamp(0).plus_seconds(2), Timestamp(2000));
        assert_eq!(Timestamp(1).plus_seconds(u64::MAX), Timestamp(i64::MAX));
    }
}
