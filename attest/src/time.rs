//! Time as a parameter: every check takes the instant to judge at, never the wall clock.

use core::fmt;
use core::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant, in milliseconds since the Unix epoch (the resolution of a document's `timestamp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// The instant `secs` seconds after the Unix epoch, saturating far in the future.
    pub const fn from_unix_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// The current wall-clock time. Only binaries call this; the library never does.
    pub fn now() -> Self {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    /// Parse an RFC 3339 date-time such as `2024-01-24T18:14:25Z`.
    pub fn parse_rfc3339(text: &str) -> Result<Self, InvalidTime> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| InvalidTime {
            input: text.chars().take(64).collect(),
        })?;
        Self::try_from(parsed).map_err(|_| InvalidTime {
            input: text.chars().take(64).collect(),
        })
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch, rounded down.
    pub const fn unix_secs(self) -> u64 {
        self.0 / 1000
    }

    /// How long after `earlier` this instant is, or `None` if it is before it.
    pub fn duration_since(self, earlier: Self) -> Option<Duration> {
        self.0.checked_sub(earlier.0).map(Duration::from_millis)
    }

    /// This instant moved `by` later, saturating.
    pub fn saturating_add(self, by: Duration) -> Self {
        let millis = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(millis))
    }

    pub(crate) fn to_webpki(self) -> rustls_pki_types::UnixTime {
        rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(self.unix_secs()))
    }
}

impl TryFrom<OffsetDateTime> for Timestamp {
    type Error = InvalidTime;

    fn try_from(value: OffsetDateTime) -> Result<Self, Self::Error> {
        let millis = value.unix_timestamp_nanos() / 1_000_000;
        u64::try_from(millis).map(Self).map_err(|_| InvalidTime {
            input: value.to_string(),
        })
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, with milliseconds only when they are not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0).saturating_mul(1_000_000);
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
                let (h, mi, s, ms) = (t.hour(), t.minute(), t.second(), t.millisecond());
                write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")?;
                if ms != 0 {
                    write!(f, ".{ms:03}")?;
                }
                f.write_str("Z")
            }
            Err(_) => write!(f, "@{}ms", self.0),
        }
    }
}

/// A time that could not be read as RFC 3339 or lies outside the representable range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 time after 1970 (for example 2024-01-24T18:14:25Z): {input:?}")]
pub struct InvalidTime {
    input: String,
}

/// Parse a duration such as `90s`, `5m`, `1h30m` or `2d`.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration {
        input: text.chars().take(64).collect(),
    };
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(invalid()),
        };
        let count: u64 = digits.parse().map_err(|_| invalid())?;
        let secs = count.checked_mul(unit).ok_or_else(invalid)?;
        total = total
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(invalid)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(invalid());
    }
    Ok(total)
}

/// Format a duration the way [`parse_duration`] reads it.
pub fn format_duration(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&format!("{}{name}", secs / unit));
            secs %= unit;
        }
    }
    out
}

/// A duration that is not of the form `90s`, `5m`, `1h30m` or `2d`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a duration such as 90s, 5m, 1h30m or 2d: {input:?}")]
pub struct InvalidDuration {
    input: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_through_display() {
        let t = Timestamp::parse_rfc3339("2024-01-24T18:14:25.635Z").unwrap();
        assert_eq!(t.unix_millis(), 1_706_120_065_635);
        assert_eq!(t.to_string(), "2024-01-24T18:14:25.635Z");
        let whole = Timestamp::parse_rfc3339("2024-01-24T20:14:25+02:00").unwrap();
        assert_eq!(whole.to_string(), "2024-01-24T18:14:25Z");
    }

    #[test]
    fn rfc3339_rejects_garbage_and_pre_epoch() {
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").is_err());
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "5", "m", "5x", "-5m", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
