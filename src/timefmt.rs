//! How times are shown to operators: UTC, to the second, one format everywhere.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::macros::format_description;

/// `2026-11-23 11:02:53 UTC`
pub fn utc(at: SystemTime) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    OffsetDateTime::from(at)
        .format(&format)
        .unwrap_or_else(|_| "an unrepresentable time".into())
}

/// A compact, sortable stamp for directory names: `20261123T110253.123456789Z`.
pub fn stamp(at: SystemTime) -> String {
    let format =
        format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:9]Z");
    OffsetDateTime::from(at)
        .format(&format)
        .unwrap_or_else(|_| "0".into())
}

/// A rough human duration: `89d`, `5h`, `42m`, `7s`.
pub fn rough(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s >= 2 * 86400 => format!("{}d", s / 86400),
        s if s >= 2 * 3600 => format!("{}h", s / 3600),
        s if s >= 120 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Seconds since the epoch, for the state files (negative never happens for real times).
pub mod unix_seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(t) => s.serialize_some(
                &t.duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            ),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let secs: Option<f64> = Option::deserialize(d)?;
        Ok(secs
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s)))
    }
}
