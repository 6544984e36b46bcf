//! The runner: reads the log from a subscription's checkpoint and hands each batch to a
//! projector, holding the subscription's lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use super::SubscriptionStore;
use crate::store::{Checkpoint, EventStore, RecordedEvent, StoreError};

/// Events read per round.
const BATCH: u32 = 500;

/// Applies a whole batch of events and moves the checkpoint, in one transaction, if `owner`
/// still holds the subscription (false, and nothing applied, otherwise). Projections and the
/// Kafka relay implement this directly; a [`Subscriber`] gets it through [`Writing`].
#[async_trait]
pub trait Projector: Send + Sync {
    /// The durable name of the subscription (its row in `subscriptions`).
    fn name(&self) -> &'static str;
    async fn commit(
        &self,
        owner: &str,
        checkpoint: Checkpoint,
        events: &[RecordedEvent],
    ) -> Result<bool, StoreError>;
}

/// Turns each event into what it writes (the saga: job changes). Pure apart from reading
/// configuration and randomness; where the writes go is a [`Sink`].
pub trait Subscriber: Send + Sync {
    /// One thing the subscriber writes.
    type Write: Send + Sync;
    /// The durable name of the subscription (its row in `subscriptions`).
    fn name(&self) -> &'static str;
    fn handle(&self, event: &RecordedEvent) -> Result<Vec<Self::Write>, StoreError>;
}

impl<S: Subscriber + ?Sized> Subscriber for &S {
    type Write = S::Write;

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn handle(&self, event: &RecordedEvent) -> Result<Vec<Self::Write>, StoreError> {
        (**self).handle(event)
    }
}

/// Where a subscriber's writes go: applies `writes` and moves subscription `name`'s checkpoint,
/// in one transaction, if `owner` still holds it; false (and nothing applied) otherwise.
#[async_trait]
pub trait Sink<W>: Send + Sync {
    async fn commit(
        &self,
        name: &str,
        owner: &str,
        checkpoint: Checkpoint,
        writes: &[W],
    ) -> Result<bool, StoreError>;
}

/// A [`Subscriber`] and the [`Sink`] its writes go to, as a [`Projector`].
#[derive(Debug, Clone)]
pub struct Writing<S, K: ?Sized> {
    pub subscriber: S,
    pub sink: Arc<K>,
}

#[async_trait]
impl<S, K> Projector for Writing<S, K>
where
    S: Subscriber,
    K: Sink<S::Write> + ?Sized,
{
    fn name(&self) -> &'static str {
        self.subscriber.name()
    }

    async fn commit(
        &self,
        owner: &str,
        checkpoint: Checkpoint,
        events: &[RecordedEvent],
    ) -> Result<bool, StoreError> {
        let mut writes = Vec::new();
        for event in events {
            writes.extend(self.subscriber.handle(event)?);
        }
        self.sink
            .commit(self.subscriber.name(), owner, checkpoint, &writes)
            .await
    }
}

/// What a running subscription holds between rounds.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The last checkpoint this owner committed (or was given with the lease).
    checkpoint: Checkpoint,
    /// When to take the lease again (a third of the way through it).
    renew_at: Instant,
    lag_reported_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct SubscriptionRunner {
    pub events: Arc<dyn EventStore>,
    /// The `subscriptions` table: the same database the projectors write.
    pub subscriptions: Arc<dyn SubscriptionStore>,
    /// This process's identity as a lease owner.
    pub owner: String,
    pub lease: Duration,
    pub poll_interval: Duration,
}

impl SubscriptionRunner {
    /// Processes one round of `projector`: up to one batch. Returns how many events it handled
    /// (0 when the subscription is owned elsewhere or caught up).
    pub async fn round(&self, projector: &dyn Projector) -> Result<usize, StoreError> {
        self.round_held(projector, &mut None).await
    }

    /// One round, for a runner that keeps `held` between rounds: while it holds a lease with
    /// time left, it goes on from the checkpoint it last committed instead of taking the
    /// lease again (two statements and a commit less per round), and it looks up the log's
    /// head for the lag figures at most once a second. A commit refused because another owner
    /// took over drops the hold; the next round asks again.
    async fn round_held(
        &self,
        projector: &dyn Projector,
        held: &mut Option<Held>,
    ) -> Result<usize, StoreError> {
        let now = chrono::Utc::now();
        let checkpoint = match held {
            Some(hold) if Instant::now() < hold.renew_at => hold.checkpoint,
            _ => {
                let acquired = self
                    .subscriptions
                    .acquire_subscription(projector.name(), &self.owner, self.lease, now)
                    .await?;
                let Some(checkpoint) = acquired else {
                    *held = None;
                    return Ok(0);
                };
                *held = Some(Held {
                    checkpoint,
                    // Renewed well before it runs out, so no other owner can take it over
                    // while this one works.
                    renew_at: Instant::now() + self.lease / 3,
                    lag_reported_at: held.as_ref().and_then(|h| h.lag_reported_at),
                });
                checkpoint
            }
        };
        let batch = self.events.read_all(checkpoint, BATCH).await?;
        let report_lag = held.as_ref().is_none_or(|h| {
            h.lag_reported_at
                .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        });
        if report_lag {
            let head = self.events.head_position().await?;
            let behind = u64::try_from(head - checkpoint.position).unwrap_or(0);
            let age = batch
                .first()
                .map_or(0.0, |e| (now - e.recorded_at).as_seconds_f64().max(0.0));
            crate::telemetry::metrics::subscription_lag(projector.name(), behind, age);
            if let Some(hold) = held.as_mut() {
                hold.lag_reported_at = Some(Instant::now());
            }
        }
        let Some(last) = batch.last() else {
            return Ok(0);
        };
        let committed = projector
            .commit(&self.owner, last.checkpoint(), &batch)
            .await?;
        if committed {
            if let Some(hold) = held.as_mut() {
                hold.checkpoint = last.checkpoint();
            }
            Ok(batch.len())
        } else {
            *held = None;
            Ok(0)
        }
    }

    /// Rounds of `projector` until it has handled every event at or below `head` (the log's
    /// head position when the caller asked): an empty round is not enough, since on Postgres a
    /// transaction still open anywhere holds the global read back while later events are
    /// already committed. Between empty rounds it waits `poll_interval`. Returns at once when
    /// another owner holds the subscription, which keeps it current.
    pub async fn catch_up_to(
        &self,
        projector: &dyn Projector,
        head: i64,
    ) -> Result<(), StoreError> {
        let mut held = None;
        loop {
            if self.round_held(projector, &mut held).await? > 0 {
                continue;
            }
            let Some(hold) = held else {
                return Ok(());
            };
            if self.events.caught_up(hold.checkpoint, head).await? {
                return Ok(());
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// Runs `projector` until `shutdown` turns true, then gives the lease up.
    pub async fn run(&self, projector: &dyn Projector, mut shutdown: watch::Receiver<bool>) {
        let mut held = None;
        while !*shutdown.borrow() {
            let handled = match self.round_held(projector, &mut held).await {
                Ok(n) => n,
                Err(error) => {
                    // What this runner believes it holds may be stale: ask again.
                    held = None;
                    tracing::warn!(subscription = projector.name(), error = %error, "subscription round failed");
                    0
                }
            };
            if handled == 0 {
                tokio::select! {
                    () = tokio::time::sleep(self.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        if let Err(error) = self
            .subscriptions
            .release_subscription(projector.name(), &self.owner)
            .await
        {
            tracing::warn!(subscription = projector.name(), error = %error, "could not release the subscription");
        }
    }
}
