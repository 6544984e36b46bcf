//! The `subscriptions` table on Postgres.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{lease_span, SubscriptionStore};
use crate::store::{Checkpoint, PostgresStore, StoreError};

fn checkpoint_of(row: &PgRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        transaction_id: row.try_get("checkpoint_transaction_id")?,
        position: row.try_get("checkpoint_position")?,
    })
}

/// The fenced checkpoint commit, in the caller's open transaction: moves subscription
/// `name`'s checkpoint to `checkpoint` if `owner` still holds it. False means another owner
/// took over: the caller rolls back and applies nothing. The row lock taken here serializes
/// with any takeover, so a deposed owner's batch is a no-op.
pub async fn commit_checkpoint(
    tx: &mut PgConnection,
    name: &str,
    owner: &str,
    checkpoint: Checkpoint,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE subscriptions SET checkpoint_transaction_id = $3, checkpoint_position = $4, \
         updated_at = now() WHERE name = $1 AND owner = $2",
    )
    .bind(name)
    .bind(owner)
    .bind(checkpoint.transaction_id)
    .bind(checkpoint.position)
    .execute(tx)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Puts subscription `name` back to the start of the log, held by `owner` for an hour, in the
/// caller's open transaction (a projection's rebuild, with emptying its table).
pub async fn restart_checkpoint(
    tx: &mut PgConnection,
    name: &str,
    owner: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subscriptions (name, owner, lease_until) VALUES ($1, $2, now() + interval '1 hour') \
         ON CONFLICT (name) DO UPDATE SET checkpoint_transaction_id = 0, checkpoint_position = 0, \
         owner = $2, lease_until = now() + interval '1 hour', updated_at = now()",
    )
    .bind(name)
    .bind(owner)
    .execute(tx)
    .await?;
    Ok(())
}

#[async_trait]
impl SubscriptionStore for PostgresStore {
    async fn acquire_subscription(
        &self,
        name: &str,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Checkpoint>, StoreError> {
        sqlx::query("INSERT INTO subscriptions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(self.pool())
            .await?;
        let row = sqlx::query(
            "UPDATE subscriptions SET owner = $2, lease_until = $3, updated_at = now() \
             WHERE name = $1 AND (owner IS NULL OR owner = $2 OR lease_until < $4) \
             RETURNING checkpoint_transaction_id, checkpoint_position",
        )
        .bind(name)
        .bind(owner)
        .bind(now + lease_span(lease))
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(checkpoint_of).transpose()
    }

    async fn release_subscription(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE subscriptions SET owner = NULL, lease_until = NULL WHERE name = $1 AND owner = $2",
        )
        .bind(name)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn subscription_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT checkpoint_transaction_id, checkpoint_position FROM subscriptions WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(checkpoint_of).transpose()
    }
}
