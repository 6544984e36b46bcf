//! Policy as data: how long the grace period lasts, when reminders go out, which legal deadline
//! applies, and how failed cleaners are retried. The engine reads it from `lethe.toml` and hands
//! the part that concerns one request to the aggregate inside the command.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{Days, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// A calendar span: whole months, then days. Months are calendar months, so one month from
/// 31 January is the last day of February; days are plain days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub months: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub days: u32,
}

// Serde's `skip_serializing_if` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
const fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Span {
    pub const fn months(months: u32) -> Self {
        Self { months, days: 0 }
    }

    pub const fn days(days: u32) -> Self {
        Self { months: 0, days }
    }

    pub const fn is_zero(&self) -> bool {
        self.months == 0 && self.days == 0
    }

    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            months: self.months.saturating_add(other.months),
            days: self.days.saturating_add(other.days),
        }
    }

    /// The date this span after `start`. A month that lacks the start's day ends on its last
    /// day (31 Jan + 1 month = 28 or 29 Feb). Saturates at the largest representable date.
    pub fn after(self, start: NaiveDate) -> NaiveDate {
        start
            .checked_add_months(Months::new(self.months))
            .and_then(|d| d.checked_add_days(Days::new(u64::from(self.days))))
            .unwrap_or(NaiveDate::MAX)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        match (self.months, self.days) {
            (0, d) => write!(f, "{d} day{}", plural(d)),
            (m, 0) => write!(f, "{m} month{}", plural(m)),
            (m, d) => write!(f, "{m} month{} {d} day{}", plural(m), plural(d)),
        }
    }
}

impl FromStr for Span {
    type Err = String;

    /// Parses `"1 month"`, `"2 months"`, `"45d"`, `"45 days"` or `"1 month 15 days"`. Each
    /// number must fit in 32 bits; a sum beyond that is the largest span (far beyond any
    /// deadline rule), so that what is well-formed is exactly what a pattern can state.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a span: use e.g. \"1 month\", \"2 months\" or \"45d\"");
        let mut span = Self::default();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits_end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let n: u32 = rest[..digits_end].parse().map_err(|_| bad())?;
            rest = rest[digits_end..].trim_start();
            let unit_end = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            match &rest[..unit_end] {
                "d" | "day" | "days" => span.days = span.days.saturating_add(n),
                "month" | "months" => span.months = span.months.saturating_add(n),
                _ => return Err(bad()),
            }
            rest = rest[unit_end..].trim_start();
        }
        Ok(span)
    }
}

/// A jurisdiction's legal deadline: `base` after the day of receipt, extendable (with a
/// reason) by at most `max_extension` in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlineRule {
    pub base: Span,
    pub max_extension: Span,
}

impl DeadlineRule {
    /// GDPR Art. 12(3): one month, extendable by two further months.
    pub const GDPR: Self = Self {
        base: Span::months(1),
        max_extension: Span::months(2),
    };
    /// CCPA (Cal. Civ. Code 1798.130): 45 days, extendable once by 45 more.
    pub const CCPA: Self = Self {
        base: Span::days(45),
        max_extension: Span::days(45),
    };

    /// The deadline for a request received on `received`, extended by `extension` in total.
    /// The whole span is counted from the day of receipt, so that month-end clamping happens
    /// once (31 Jan + 3 months = 30 Apr, not 28 Feb + 2 months = 28 Apr).
    pub fn deadline(&self, received: NaiveDate, extension: Span) -> NaiveDate {
        self.base.plus(extension).after(received)
    }

    /// The latest date any permitted extension can reach.
    pub fn latest_deadline(&self, received: NaiveDate) -> NaiveDate {
        self.deadline(received, self.max_extension)
    }
}

/// How a failed cleaner is retried: exponential backoff with jitter, capped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last the cleaner is exhausted.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial: Duration::from_secs(60),
            max: Duration::from_secs(6 * 3600),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failed_attempt + 1`, after attempt `failed_attempt` failed.
    ///
    /// `jitter` is a number in `[0, 1)` supplied by the caller (the domain has no randomness):
    /// the delay is drawn from the upper half of the exponential step ("equal jitter"), so it
    /// still grows with every attempt while retries from many requests spread out. A server's
    /// `Retry-After` is honoured as a lower bound; the cap bounds the backoff, not the server's
    /// own request.
    pub fn delay_after(
        &self,
        failed_attempt: u32,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Duration {
        let exponent = i32::try_from(failed_attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let step = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = step.min(self.max.as_secs_f64());
        let jittered = capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        let backoff = Duration::try_from_secs_f64(jittered).unwrap_or(self.max);
        retry_after.map_or(backoff, |server| backoff.max(server))
    }

    /// Checks the policy; `field` names where it came from, for the error message.
    pub fn validate(&self, field: &str) -> Result<(), InvalidInput> {
        if self.max_attempts == 0 {
            return Err(InvalidInput::new(
                format!("{field}.max_attempts"),
                "must be at least 1",
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(InvalidInput::new(
                format!("{field}.multiplier"),
                "must be a number of at least 1.0",
            ));
        }
        if self.max < self.initial {
            return Err(InvalidInput::new(
                format!("{field}.max"),
                "must not be shorter than retry.initial",
            ));
        }
        Ok(())
    }
}

/// The part of the policy that the aggregate needs when a request is received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPolicy {
    pub grace_period: chrono::TimeDelta,
    /// Offsets before the end of the grace period at which the subject is reminded.
    pub reminders: Vec<chrono::TimeDelta>,
    pub deadline: DeadlineRule,
    /// An administrator must approve the request before its grace period starts.
    pub approval_required: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_the_documented_forms() {
        assert_eq!("1 month".parse::<Span>().unwrap(), Span::months(1));
        assert_eq!("2 months".parse::<Span>().unwrap(), Span::months(2));
        assert_eq!("45d".parse::<Span>().unwrap(), Span::days(45));
        assert_eq!("45 days".parse::<Span>().unwrap(), Span::days(45));
        assert_eq!(
            "1 month 3d".parse::<Span>().unwrap(),
            Span { months: 1, days: 3 }
        );
        for bad in [
            "",
            "month",
            "1 fortnight",
            "-1d",
            "1.5 months",
            "d45",
            "4294967296d",
        ] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "4294967295d 1d 3 months".parse::<Span>().unwrap(),
            Span {
                months: 3,
                days: u32::MAX
            }
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_secs(10),
            max: Duration::from_secs(100),
            multiplier: 2.0,
        };
        // With the top of the jitter range the delay is the full exponential step.
        let top = 0.999_999_9;
        assert_eq!(p.delay_after(1, top, None).as_secs(), 9);
        assert_eq!(p.delay_after(2, top, None).as_secs(), 19);
        assert_eq!(p.delay_after(3, top, None).as_secs(), 39);
        assert_eq!(p.delay_after(9, top, None).as_secs(), 99);
        // The bottom of the jitter range is half the step.
        assert_eq!(p.delay_after(2, 0.0, None), Duration::from_secs(10));
        // A server's Retry-After wins when it asks for more.
        assert_eq!(
            p.delay_after(1, 0.0, Some(Duration::from_secs(500))),
            Duration::from_secs(500)
        );
        assert_eq!(
            p.delay_after(3, 0.0, Some(Duration::from_secs(1))),
            Duration::from_secs(20)
        );
    }

    proptest::proptest! {
        /// For any valid policy: the delay lies in the upper half of the capped step, never
        /// shrinks from one attempt to the next or with more jitter, and is at least the
        /// server's `Retry-After`.
        #[test]
        fn backoff_is_within_its_step_and_never_shrinks(
            initial_ms in 1_u64..600_000,
            extra_ms in 0_u64..86_400_000,
            multiplier in 1.0_f64..10.0,
            attempt in 1_u32..64,
            jitter in 0.0_f64..1.0,
            more_jitter in 0.0_f64..1.0,
            retry_after_s in proptest::option::of(0_u64..100_000),
        ) {
            let p = RetryPolicy {
                max_attempts: 64,
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(initial_ms + extra_ms),
                multiplier,
            };
            p.validate("retry").unwrap();
            let delay = p.delay_after(attempt, jitter, None);
            let step = (p.initial.as_secs_f64()
                * multiplier.powi(i32::try_from(attempt - 1).unwrap()))
            .min(p.max.as_secs_f64());
            let tolerance = 1e-6;
            proptest::prop_assert!(delay.as_secs_f64() >= step / 2.0 - tolerance, "{delay:?} < {step}/2");
            proptest::prop_assert!(delay.as_secs_f64() <= step + tolerance, "{delay:?} > {step}");
            proptest::prop_assert!(p.delay_after(attempt + 1, jitter, None) >= delay);
            let (low, high) = (jitter.min(more_jitter), jitter.max(more_jitter));
            proptest::prop_assert!(p.delay_after(attempt, high, None) >= p.delay_after(attempt, low, None));
            if let Some(seconds) = retry_after_s {
                let server = Duration::from_secs(seconds);
                let honoured = p.delay_after(attempt, jitter, Some(server));
                proptest::prop_assert_eq!(honoured, delay.max(server));
            }
        }
    }

    #[test]
    fn invalid_retry_policies_name_the_key() {
        let bad = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(
            bad.validate("cleaners.billing.retry").unwrap_err().field,
            "cleaners.billing.retry.max_attempts"
        );
    }
}
