//! Counting what the engine wrote, through the probe pool.

use super::{CompletedCounter, Db, Probe};

impl Db {
    /// Runs a query that returns one integer (with `$1` bound to `after_position`).
    async fn scalar(&self, sql: &str, after_position: i64) -> anyhow::Result<i64> {
        let value: Option<i64> = match &self.probe {
            Probe::Postgres(pool) => {
                sqlx::query_scalar(sql)
                    .bind(after_position)
                    .fetch_one(pool)
                    .await?
            }
            Probe::Sqlite(pool) => {
                sqlx::query_scalar(&sql.replace("$1", "?1"))
                    .bind(after_position)
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(value.unwrap_or(0))
    }

    /// The highest position in the log (0 when empty).
    pub async fn head_position(&self) -> anyhow::Result<i64> {
        self.scalar(
            "SELECT max(position) FROM events WHERE position > $1",
            i64::MIN,
        )
        .await
    }

    /// Seconds from `since` (a Unix time in seconds) to the last `event_type` event after
    /// `position` (0 when there is none): how long a phase of the workflow took.
    pub async fn last_event_after(
        &self,
        position: i64,
        event_type: &str,
        since: f64,
    ) -> anyhow::Result<f64> {
        let last: Option<f64> = match &self.probe {
            Probe::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT extract(epoch FROM max(recorded_at))::float8 FROM events \
                     WHERE position > $1 AND event_type = $2",
                )
                .bind(position)
                .bind(event_type)
                .fetch_one(pool)
                .await?
            }
            Probe::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT (julianday(max(recorded_at)) - 2440587.5) * 86400.0 FROM events \
                     WHERE position > ?1 AND event_type = ?2",
                )
                .bind(position)
                .bind(event_type)
                .fetch_one(pool)
                .await?
            }
        };
        Ok(last.map_or(0.0, |at| (at - since).max(0.0)))
    }

    /// Events after `position`.
    pub async fn count_events_after(&self, position: i64) -> anyhow::Result<i64> {
        self.scalar("SELECT count(*) FROM events WHERE position > $1", position)
            .await
    }

    /// `Completed` events after `counter.after`, counted incrementally: each call reads only
    /// the events committed since the previous one (in the log's read order, so none is
    /// missed on Postgres, where positions are not commit-ordered). A full count at every
    /// poll would cost the machine under measurement CPU that grows with the log: at 700,000
    /// events, a large share of a core.
    pub async fn count_completed(&self, counter: &mut CompletedCounter) -> anyhow::Result<i64> {
        match &self.probe {
            Probe::Postgres(pool) => {
                let (completed, last): (i64, Option<Vec<i64>>) = sqlx::query_as(
                    "WITH batch AS ( \
                       SELECT events.transaction_id::text::bigint AS tx, events.position, \
                              events.event_type FROM events \
                       WHERE (events.transaction_id, events.position) > ($1::text::xid8, $2) \
                         AND events.transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                       ORDER BY events.transaction_id, events.position LIMIT 200000) \
                     SELECT count(*) FILTER (WHERE event_type = 'Completed' AND position > $3), \
                            max(ARRAY[tx, position]) FROM batch",
                )
                .bind(counter.transaction_id.to_string())
                .bind(counter.position)
                .bind(counter.start_position)
                .fetch_one(pool)
                .await?;
                if let Some([tx, position]) = last.as_deref() {
                    counter.transaction_id = *tx;
                    counter.position = *position;
                }
                counter.completed += completed;
            }
            Probe::Sqlite(pool) => {
                // One writer: positions are in commit order.
                let (completed, last): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE event_type = 'Completed'), max(position) \
                     FROM events WHERE position > ?1",
                )
                .bind(counter.position.max(counter.start_position))
                .fetch_one(pool)
                .await?;
                if let Some(last) = last {
                    counter.position = last;
                }
                counter.completed += completed;
            }
        }
        Ok(counter.completed)
    }
}
