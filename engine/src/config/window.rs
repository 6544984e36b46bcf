//! A cleaner's `window`: the daily hours it may be called in.

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};

/// A daily time-of-day window in a named time zone, e.g. 01:00–05:00 Europe/Berlin. A window
/// whose end is before its start spans midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    #[serde(deserialize_with = "time_of_day")]
    pub start: NaiveTime,
    #[serde(deserialize_with = "time_of_day")]
    pub end: NaiveTime,
    #[serde(deserialize_with = "time_zone")]
    pub tz: Tz,
}

fn time_of_day<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    NaiveTime::parse_from_str(&text, "%H:%M").map_err(|_| {
        serde::de::Error::custom(format!("{text:?} is not a time of day like \"01:30\""))
    })
}

fn time_zone<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse::<Tz>().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IANA time zone like \"Europe/Berlin\""
        ))
    })
}

impl WindowConfig {
    /// Whether `at` falls inside the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz).time();
        if self.start <= self.end {
            self.start <= local && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }

    /// The next moment at or after `at` that is inside the window.
    pub fn next_open(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        if self.contains(at) {
            return at;
        }
        let local = at.with_timezone(&self.tz);
        let mut day = local.date_naive();
        for _ in 0..3 {
            let candidate = day.and_time(self.start);
            // A start that falls into a DST gap moves to the first valid instant after it.
            let opening = self
                .tz
                .from_local_datetime(&candidate)
                .earliest()
                .or_else(|| {
                    self.tz
                        .from_local_datetime(&(candidate + chrono::TimeDelta::hours(1)))
                        .earliest()
                });
            if let Some(opening) = opening.map(|o| o.with_timezone(&Utc)) {
                if opening > at {
                    return opening;
                }
            }
            day = day.succ_opt().unwrap_or(day);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_open_and_close_in_their_time_zone() {
        use chrono::TimeZone as _;
        let window = WindowConfig {
            start: NaiveTime::from_hms_opt(1, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(5, 0, 0).unwrap(),
            tz: chrono_tz::Europe::Berlin,
        };
        // 01:30 in Berlin in winter is 00:30 UTC.
        let inside = Utc.with_ymd_and_hms(2025, 1, 10, 0, 30, 0).unwrap();
        assert!(window.contains(inside));
        assert_eq!(window.next_open(inside), inside);
        let after = Utc.with_ymd_and_hms(2025, 1, 10, 12, 0, 0).unwrap();
        assert!(!window.contains(after));
        assert_eq!(
            window.next_open(after),
            Utc.with_ymd_and_hms(2025, 1, 11, 0, 0, 0).unwrap()
        );
        // Summer time: 01:00 Berlin is 23:00 UTC the day before.
        let summer = Utc.with_ymd_and_hms(2025, 7, 10, 12, 0, 0).unwrap();
        assert_eq!(
            window.next_open(summer),
            Utc.with_ymd_and_hms(2025, 7, 10, 23, 0, 0).unwrap()
        );
        // A window across midnight.
        let night = WindowConfig {
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
            tz: chrono_tz::UTC,
        };
        assert!(night.contains(Utc.with_ymd_and_hms(2025, 1, 10, 23, 0, 0).unwrap()));
        assert!(night.contains(Utc.with_ymd_and_hms(2025, 1, 10, 1, 0, 0).unwrap()));
        assert!(!night.contains(Utc.with_ymd_and_hms(2025, 1, 10, 3, 0, 0).unwrap()));
    }
}
