//! Per-process limits of each cleaner, from its configuration: the `window` it may be called
//! in, `max_in_flight` calls at once and `rate_per_second`. A call the limits do not admit now
//! is put off (its job rescheduled), never failed.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use lethe_domain::CleanerName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::micros;
use crate::config::{Config, WindowConfig};

/// The rate limiters' clock: tokio's, so that a test with a paused clock controls them.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

#[derive(Debug, Default)]
pub struct CleanerLimits {
    windows: HashMap<CleanerName, WindowConfig>,
    in_flight: HashMap<CleanerName, Arc<Semaphore>>,
    rate: HashMap<CleanerName, Limiter>,
}

impl CleanerLimits {
    pub fn new(config: &Config) -> Self {
        let mut limits = Self::default();
        for cleaner in &config.cleaners {
            if let Some(window) = &cleaner.window {
                limits.windows.insert(cleaner.name.clone(), *window);
            }
            if let Some(max) = cleaner.max_in_flight {
                let permits = usize::try_from(max).unwrap_or(usize::MAX);
                limits
                    .in_flight
                    .insert(cleaner.name.clone(), Arc::new(Semaphore::new(permits)));
            }
            if let Some(rate) = cleaner.rate_per_second {
                if let Some(limiter) = rate_limiter(rate) {
                    limits.rate.insert(cleaner.name.clone(), limiter);
                }
            }
        }
        limits
    }

    /// Admits one call of `cleaner` at `now`: `Ok` with the permit to hold while the call is
    /// in flight (if its calls in flight are limited), or `Err` with when to try again: the
    /// window's next opening, a poll later when every call in flight is taken, or when the
    /// rate allows the next call.
    pub fn admit(
        &self,
        cleaner: &CleanerName,
        now: DateTime<Utc>,
        poll_interval: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, DateTime<Utc>> {
        if let Some(window) = self.windows.get(cleaner) {
            if !window.contains(now) {
                return Err(window.next_open(now));
            }
        }
        let permit = match self.in_flight.get(cleaner) {
            Some(limit) => match limit.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return Err(now + micros(poll_interval)),
            },
            None => None,
        };
        if let Some(limiter) = self.rate.get(cleaner) {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(TokioClock.now());
                return Err(now + micros(wait));
            }
        }
        Ok(permit)
    }
}

/// `rate` calls a second, in bursts of up to `rate` (at least one).
fn rate_limiter(rate: f64) -> Option<Limiter> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let quota = Quota::with_period(period)?;
    let burst = NonZeroU32::new(rate.ceil().max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
    Some(RateLimiter::direct_with_clock(
        quota.allow_burst(burst),
        TokioClock,
    ))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn limits(cleaner: &str) -> CleanerLimits {
        let config = Config::parse(&format!(
            "[[cleaners]]\nname = \"crm\"\nkind = \"manual\"\n{cleaner}"
        ))
        .unwrap();
        CleanerLimits::new(&config)
    }

    fn crm() -> CleanerName {
        CleanerName::parse("crm").unwrap()
    }

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 3, hour, minute, 0).unwrap()
    }

    const POLL: Duration = Duration::from_secs(1);

    /// Calls as the dispatcher makes them: each admitted call ends at once.
    fn admitted(limits: &CleanerLimits, now: DateTime<Utc>) -> Result<(), DateTime<Utc>> {
        limits.admit(&crm(), now, POLL).map(drop)
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_admits_a_burst_then_one_call_per_period() {
        let limits = limits("rate_per_second = 2.0");
        let now = at(12, 0);
        assert_eq!(admitted(&limits, now), Ok(()));
        assert_eq!(admitted(&limits, now), Ok(()));
        // The burst is spent: the next call is put off by one period, half a second.
        let Err(retry_at) = admitted(&limits, now) else {
            panic!("a third call within the second is admitted");
        };
        assert_eq!(retry_at, now + chrono::TimeDelta::milliseconds(500));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(admitted(&limits, now).is_err(), "admitted before its time");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(admitted(&limits, now), Ok(()));
        assert!(admitted(&limits, now).is_err(), "one call per period");
        // Idle for a while, the burst is back, and no more than it.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(admitted(&limits, now), Ok(()));
        assert_eq!(admitted(&limits, now), Ok(()));
        assert!(admitted(&limits, now).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_below_one_a_second_admits_one_call_per_period() {
        let limits = limits("rate_per_second = 0.5");
        let now = at(12, 0);
        assert_eq!(admitted(&limits, now), Ok(()));
        assert_eq!(
            admitted(&limits, now),
            Err(now + chrono::TimeDelta::seconds(2))
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(admitted(&limits, now), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_in_flight_are_limited_until_one_ends() {
        let limits = limits("max_in_flight = 2");
        let now = at(12, 0);
        let first = limits.admit(&crm(), now, POLL).unwrap();
        let second = limits.admit(&crm(), now, POLL).unwrap();
        assert!(first.is_some() && second.is_some());
        // Both taken: try again a poll later.
        assert_eq!(
            limits.admit(&crm(), now, POLL).map(drop),
            Err(now + micros(POLL))
        );
        drop(first);
        assert!(limits.admit(&crm(), now, POLL).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_puts_calls_off_until_it_opens() {
        let limits = limits("window = { start = \"22:00\", end = \"02:00\", tz = \"UTC\" }");
        assert_eq!(admitted(&limits, at(23, 0)), Ok(()));
        assert_eq!(admitted(&limits, at(1, 59)), Ok(()));
        assert_eq!(admitted(&limits, at(2, 0)), Err(at(22, 0)));
        assert_eq!(admitted(&limits, at(12, 30)), Err(at(22, 0)));
        // Other cleaners are not limited by it.
        let other = CleanerName::parse("billing").unwrap();
        assert!(limits.admit(&other, at(12, 30), POLL).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_window_takes_neither_a_slot_nor_the_rate() {
        let limits = limits(
            "max_in_flight = 1\nrate_per_second = 1.0\n\
             window = { start = \"22:00\", end = \"02:00\", tz = \"UTC\" }",
        );
        for _ in 0..3 {
            assert!(admitted(&limits, at(12, 0)).is_err());
        }
        let permit = limits.admit(&crm(), at(23, 0), POLL).unwrap();
        assert!(
            permit.is_some(),
            "the window opened, the slot and the rate are free"
        );
    }
}
