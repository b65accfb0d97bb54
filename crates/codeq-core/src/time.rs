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
///
/// The API shows times in any offset up to ±23:59, and RFC 3339 has only
/// the years 0000 to 9999: times are taken between [`Timestamp::EARLIEST`]
/// and [`Timestamp::LATEST`], later times computed by the server stop at
/// `LATEST`, and a time outside (written by an earlier version) is shown
/// as the nearest of the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// RFC 3339 in UTC (for log lines; the API writes the configured offset).
impl std::fmt::Display for Timestamp {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buffer = [0u8; RFC3339_MAX_LEN];
        formatter.write_str(self.rfc3339_in(UtcOffset::UTC, &mut buffer))
    }
}

impl Timestamp {
    /// 0000-01-02T00:00:00Z: the earliest time the API takes or shows.
    pub const EARLIEST: Self = Self(-62_167_132_800_000);

    /// 9999-12-30T00:00:00Z: the latest time the API takes or shows, and
    /// where times the server adds up stop.
    pub const LATEST: Self = Self(253_402_128_000_000);

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus `seconds`, at most [`Timestamp::LATEST`].
    pub fn plus_seconds(self, seconds: u64) -> Self {
        let millis = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.plus_millis(millis)
    }

    /// This instant plus `millis` milliseconds, at most
    /// [`Timestamp::LATEST`] (unless it was later already).
    pub fn plus_millis(self, millis: i64) -> Self {
        let sum = Self(self.0.saturating_add(millis));
        if millis > 0 && sum > Self::LATEST { Self::LATEST.max(self) } else { sum }
    }

    /// Converts from a `time` date-time.
    pub fn from_datetime(at: OffsetDateTime) -> Self {
        let millis = at.unix_timestamp_nanos() / 1_000_000;
        Self(i64::try_from(millis).unwrap_or(i64::MAX))
    }

    /// Parses RFC 3339 text (`2026-01-02T03:04:05Z`, any offset) of a
    /// time from [`Timestamp::EARLIEST`] to [`Timestamp::LATEST`].
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let at = OffsetDateTime::parse(text, &Rfc3339).ok().map(Self::from_datetime)?;
        (Self::EARLIEST..=Self::LATEST).contains(&at).then_some(at)
    }

    /// RFC 3339 text in the given offset, with millisecond precision when
    /// the instant has a fractional second.
    pub fn to_rfc3339(self, offset: UtcOffset) -> String {
        let mut buffer = [0u8; RFC3339_MAX_LEN];
        self.rfc3339_in(offset, &mut buffer).to_string()
    }

    /// Writes the RFC 3339 text into `buffer` and returns it (no
    /// allocation: the API prints several times per task). The text is
    /// the `time` crate's (milliseconds with trailing zeros dropped, `Z`
    /// for UTC); years 0 to 9999 in whole-minute offsets are written
    /// here directly, anything else through `time`.
    pub fn rfc3339_in(self, offset: UtcOffset, buffer: &mut [u8; RFC3339_MAX_LEN]) -> &str {
        let shown = self.clamp(Self::EARLIEST, Self::LATEST);
        let written = match shown.write_rfc3339(offset, buffer) {
            Some(written) => written,
            None => shown.format_rfc3339(offset, buffer),
        };
        std::str::from_utf8(&buffer[..written]).unwrap_or_default()
    }

    /// The common case of [`Timestamp::rfc3339_in`], or `None`.
    fn write_rfc3339(self, offset: UtcOffset, buffer: &mut [u8; RFC3339_MAX_LEN]) -> Option<usize> {
        /// 10000-01-01T00:00:00Z in milliseconds.
        const YEAR_10000: i64 = 253_402_300_800_000;
        if offset.seconds_past_minute() != 0 {
            return None;
        }
        let offset_seconds = i64::from(offset.whole_seconds());
        let local =
            self.0.checked_add(offset_seconds * 1000).filter(|ms| (0..YEAR_10000).contains(ms))?;
        let seconds = u64::try_from(local / 1000).ok()?;
        let (year, month, day) = civil_from_days(seconds / 86_400);
        let in_day = seconds % 86_400;
        let mut out = Digits { buffer, len: 0 };
        out.number(year, 4);
        out.byte(b'-');
        out.number(month, 2);
        out.byte(b'-');
        out.number(day, 2);
        out.byte(b'T');
        out.number(in_day / 3600, 2);
        out.byte(b':');
        out.number(in_day / 60 % 60, 2);
        out.byte(b':');
        out.number(in_day % 60, 2);
        let millis = u64::try_from(local % 1000).ok()?;
        if millis != 0 {
            out.byte(b'.');
            let (digits, width) = match millis {
                _ if millis % 100 == 0 => (millis / 100, 1),
                _ if millis % 10 == 0 => (millis / 10, 2),
                _ => (millis, 3),
            };
            out.number(digits, width);
        }
        if offset_seconds == 0 {
            out.byte(b'Z');
        } else {
            out.byte(if offset_seconds < 0 { b'-' } else { b'+' });
            let minutes = offset_seconds.unsigned_abs() / 60;
            out.number(minutes / 60, 2);
            out.byte(b':');
            out.number(minutes % 60, 2);
        }
        Some(out.len)
    }

    /// [`Timestamp::rfc3339_in`] through the `time` crate.
    fn format_rfc3339(self, offset: UtcOffset, buffer: &mut [u8; RFC3339_MAX_LEN]) -> usize {
        let nanos = i128::from(self.0) * 1_000_000;
        let mut cursor = std::io::Cursor::new(&mut buffer[..]);
        let formatted = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|at| at.checked_to_offset(offset))
            .and_then(|at| at.format_into(&mut cursor, &Rfc3339).ok());
        formatted.map_or(0, |_| usize::try_from(cursor.position()).unwrap_or(0))
    }

    /// Whole seconds since the epoch (rounded down).
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

/// Decimal digits written into a buffer that is known to be long enough.
struct Digits<'a> {
    buffer: &'a mut [u8; RFC3339_MAX_LEN],
    len: usize,
}

impl Digits<'_> {
    fn byte(&mut self, byte: u8) {
        self.buffer[self.len] = byte;
        self.len += 1;
    }

    /// `value` zero-padded to `width` digits (`value` has at most `width`).
    fn number(&mut self, mut value: u64, width: usize) {
        for at in (self.len..self.len + width).rev() {
            self.buffer[at] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len += width;
    }
}

/// (year, month, day) of a day count since 1970-01-01, for days on or
/// after it (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
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
        assert_eq!(at.to_string(), "2026-03-04T03:06:07.25Z", "shown in UTC");
    }

    #[test]
    fn rfc3339_text_is_the_time_crates_in_every_case() {
        let offsets = [(0, 0), (2, 0), (-5, -30), (14, 0), (-12, 0), (5, 45)];
        let mut at: i64 = -3_000_000_000_000;
        // Steps that touch every millisecond pattern, leap days and the
        // edges of the fast path (before 1970, the end of 9999).
        while at < Timestamp::LATEST.0 {
            for (hours, minutes) in offsets {
                let offset = UtcOffset::from_hms(hours, minutes, 0).unwrap();
                let mut fast = [0u8; RFC3339_MAX_LEN];
                let mut slow = [0u8; RFC3339_MAX_LEN];
                let slow_len = Timestamp(at).format_rfc3339(offset, &mut slow);
                assert_eq!(
                    Timestamp(at).rfc3339_in(offset, &mut fast),
                    std::str::from_utf8(&slow[..slow_len]).unwrap(),
                    "{at} in {offset}"
                );
            }
            at += 86_399_987 * 37 + at.rem_euclid(1000);
        }
    }

    #[test]
    fn parse_rejects_text_that_is_not_rfc3339() {
        assert_eq!(Timestamp::parse_rfc3339("tomorrow"), None);
        assert_eq!(Timestamp::parse_rfc3339("2026-03-04 05:06:07"), None);
    }

    #[test]
    fn plus_seconds_saturates() {
        assert_eq!(Timestamp(0).plus_seconds(2), Timestamp(2000));
        assert_eq!(Timestamp(1).plus_seconds(u64::MAX), Timestamp::LATEST);
        assert_eq!(Timestamp::LATEST.plus_millis(1), Timestamp::LATEST);
        assert_eq!(Timestamp(i64::MAX).plus_millis(1), Timestamp(i64::MAX), "never goes back");
        assert_eq!(Timestamp::LATEST.plus_millis(-1), Timestamp(Timestamp::LATEST.0 - 1));
    }

    #[test]
    fn times_are_taken_and_shown_only_where_every_offset_has_an_rfc3339_text() {
        assert_eq!(Timestamp::parse_rfc3339("9999-12-30T00:00:00Z"), Some(Timestamp::LATEST));
        assert_eq!(Timestamp::parse_rfc3339("0000-01-02T00:00:00Z"), Some(Timestamp::EARLIEST));
        for outside in [
            "9999-12-30T00:00:00.001Z",
            "9999-12-31T23:30:00Z",
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T23:59:59.999Z",
            "0000-01-01T00:00:00+23:59",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(outside), None, "{outside}");
        }
        let extremes = [i64::MIN, Timestamp::EARLIEST.0 - 1, Timestamp::LATEST.0 + 1, i64::MAX];
        for at in extremes.map(Timestamp) {
            for (hours, minutes) in [(23, 59), (-23, -59), (0, 0)] {
                let offset = UtcOffset::from_hms(hours, minutes, 0).unwrap();
                let text = at.to_rfc3339(offset);
                let read = Timestamp::parse_rfc3339(&text);
                let nearest = at.clamp(Timestamp::EARLIEST, Timestamp::LATEST);
                assert_eq!(read, Some(nearest), "{at:?} in {offset} was shown as {text:?}");
            }
        }
    }
}
