//! Full replay: a request rebuilt as it was at a point of its history, by folding the events up
//! to that point exactly as the aggregate folds them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::error::InvalidInput;
use lethe_domain::RequestId;

use super::views::RequestView;
use super::{loaded, RequestError, Requests};
use crate::store::RecordedEvent;

/// A point of a request's history: a position in the log (every event at or before it
/// counts), or a time (every event recorded at or before it counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Position(i64),
    Time(DateTime<Utc>),
}

impl At {
    /// `1042` (a log position), an RFC 3339 time, or a date (its end: `2026-03-01` is every
    /// event recorded that day or before). `field` names the parameter in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        let text = text.trim();
        if let Ok(position) = i64::from_str(text) {
            if position < 0 {
                return Err(InvalidInput::new(field, "a position is 0 or more"));
            }
            return Ok(Self::Position(position));
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(text) {
            return Ok(Self::Time(time.with_timezone(&Utc)));
        }
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|day| day.and_hms_micro_opt(23, 59, 59, 999_999))
            .map(|end| Self::Time(end.and_utc()))
            .ok_or_else(|| {
                InvalidInput::new(
                    field,
                    "must be a log position (a number), an RFC 3339 time or a date (YYYY-MM-DD)",
                )
            })
    }

    /// Whether `event` had happened at this point.
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        match self {
            Self::Position(position) => event.position <= *position,
            Self::Time(time) => event.recorded_at <= *time,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Position(position) => write!(f, "position {position}"),
            Self::Time(time) => write!(f, "{}", time.to_rfc3339()),
        }
    }
}

impl Requests {
    /// The request as it was at `at`: the events of its stream up to that point, folded. Not
    /// found when the request had not been received by then.
    pub async fn show_at(&self, id: RequestId, at: At) -> Result<RequestView, RequestError> {
        let events = self.store.read_stream(id, 0).await?;
        if events.is_empty() {
            return Err(RequestError::NotFound(id));
        }
        // A stream's events are in order of position and of time, so the point cuts it once.
        let then: Vec<RecordedEvent> = events.into_iter().take_while(|e| at.includes(e)).collect();
        if then.is_empty() {
            return Err(RequestError::NotYet {
                id,
                at: at.to_string(),
            });
        }
        Ok(RequestView::new(&loaded(then)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_a_position_a_time_or_the_end_of_a_day() {
        assert_eq!(At::parse("at", "1042").unwrap(), At::Position(1042));
        assert_eq!(
            At::parse("at", "2026-03-01T10:00:00+01:00").unwrap(),
            At::Time("2026-03-01T09:00:00Z".parse().unwrap())
        );
        assert_eq!(
            At::parse("at", "2026-03-01").unwrap(),
            At::Time("2026-03-01T23:59:59.999999Z".parse().unwrap())
        );
        for bad in ["-1", "yesterday", "", "2026-13-01"] {
            let error = At::parse("at", bad).unwrap_err();
            assert_eq!(error.field, "at", "{bad:?}");
        }
    }
}
