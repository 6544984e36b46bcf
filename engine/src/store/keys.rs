//! Where the wrapped data keys and the blind index live (tables `request_keys` and
//! `subject_index`; see [`crate::store::sealing`] for what they hold). A new request's key is written
//! with its first event ([`crate::store::Append::key`]), in the same transaction.

use async_trait::async_trait;
use lethe_domain::RequestId;
use sqlx::Row;

use crate::store::key_ring::store::{sqlite_key_row, KeyRingStore};
use crate::store::{PostgresStore, SqliteStore, StoreError};

#[async_trait]
pub trait KeyStore: KeyRingStore + Send + Sync + std::fmt::Debug {
    /// The wrapped data key, or `None` once shredded (or never stored).
    async fn wrapped_key(&self, id: RequestId) -> Result<Option<String>, StoreError>;
    /// The wrapped data keys of these requests that still have one, as (request, key) pairs.
    async fn wrapped_keys(&self, ids: &[RequestId])
        -> Result<Vec<(RequestId, String)>, StoreError>;
    /// The requests each of these blind indexes points to, as (blind index, request) pairs
    /// in request order: the requests whose subject shares any of them.
    async fn find(&self, indexes: &[String]) -> Result<Vec<(String, RequestId)>, StoreError>;
    /// Destroys the request's data key, blind indexes and the digests of its cancel tokens
    /// under retired keys. Idempotent.
    async fn destroy(&self, id: RequestId) -> Result<(), StoreError>;
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn wrapped_key(&self, id: RequestId) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT wrapped_key FROM request_keys WHERE request_id = $1")
                .bind(id.as_uuid())
                .fetch_optional(self.pool())
                .await?,
        )
    }

    async fn wrapped_keys(
        &self,
        ids: &[RequestId],
    ) -> Result<Vec<(RequestId, String)>, StoreError> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT request_id, wrapped_key FROM request_keys WHERE request_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, key)| (RequestId::from_uuid(id), key))
            .collect())
    }

    async fn find(&self, indexes: &[String]) -> Result<Vec<(String, RequestId)>, StoreError> {
        let rows = sqlx::query(
            // One primary-key lookup per index: a LATERAL subquery kept apart by `OFFSET 0`.
            // On a table not yet analysed the planner guessed hundreds of rows per index and
            // scanned the whole table (`= ANY($1)`, or the plain LATERAL flattened into a hash
            // join): 5 ms a lookup at 70,000 requests, growing with the table.
            "SELECT s.blind_index, s.request_id FROM unnest($1::text[]) AS b(blind_index) \
             CROSS JOIN LATERAL (SELECT blind_index, request_id FROM subject_index \
               WHERE subject_index.blind_index = b.blind_index OFFSET 0) AS s \
             ORDER BY s.request_id, s.blind_index",
        )
        .bind(indexes)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("blind_index")?,
                    RequestId::from_uuid(r.try_get("request_id")?),
                ))
            })
            .collect()
    }

    async fn destroy(&self, id: RequestId) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM request_keys WHERE request_id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM subject_index WHERE request_id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM previous_cancel_tokens WHERE request_id = $1")
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn wrapped_key(&self, id: RequestId) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT wrapped_key FROM request_keys WHERE request_id = ?1")
                .bind(id.to_string())
                .fetch_optional(self.writer())
                .await?,
        )
    }

    async fn wrapped_keys(
        &self,
        ids: &[RequestId],
    ) -> Result<Vec<(RequestId, String)>, StoreError> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT request_id, wrapped_key FROM request_keys \
             WHERE request_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(&ids).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .fetch_all(self.writer())
        .await?;
        rows.into_iter().map(sqlite_key_row).collect()
    }

    async fn find(&self, indexes: &[String]) -> Result<Vec<(String, RequestId)>, StoreError> {
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(indexes)
            .map_err(|e| StoreError::Corrupt(format!("blind indexes: {e}")))?;
        let rows = sqlx::query(
            "SELECT blind_index, request_id FROM subject_index \
             WHERE blind_index IN (SELECT value FROM json_each(?1)) \
             ORDER BY request_id, blind_index",
        )
        .bind(list)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get("request_id")?;
                let id: RequestId = text.parse().map_err(|_| {
                    StoreError::Corrupt(format!("subject_index request id {text:?}"))
                })?;
                Ok((row.try_get("blind_index")?, id))
            })
            .collect()
    }

    async fn destroy(&self, id: RequestId) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        sqlx::query("DELETE FROM request_keys WHERE request_id = ?1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM subject_index WHERE request_id = ?1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM previous_cancel_tokens WHERE request_id = ?1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// One blind-index lookup waiting for its answer.
type FindCall = (
    Vec<String>,
    tokio::sync::oneshot::Sender<Result<Vec<(String, RequestId)>, StoreError>>,
);

/// Lookups gathered at once at most.
const MAX_FIND_BATCH: usize = 256;

/// Gathers concurrent [`KeyStore::find`] calls into one query: every submission looks its
/// subject up before it is recorded, so under load (32 clients submitting) this is one
/// statement for all the lookups that arrived while the previous one ran, instead of one each.
/// Each caller gets exactly the rows of its own indexes, in the store's order.
#[derive(Debug)]
pub struct FindBatcher {
    keys: std::sync::Arc<dyn KeyStore>,
    /// Started on first use, inside the runtime that uses it.
    queue: std::sync::OnceLock<tokio::sync::mpsc::Sender<FindCall>>,
}

impl FindBatcher {
    pub fn new(keys: std::sync::Arc<dyn KeyStore>) -> Self {
        Self {
            keys,
            queue: std::sync::OnceLock::new(),
        }
    }

    pub async fn find(&self, indexes: Vec<String>) -> Result<Vec<(String, RequestId)>, StoreError> {
        let queue = self.queue.get_or_init(|| {
            let (queue, calls) = tokio::sync::mpsc::channel(4096);
            tokio::spawn(run_finds(self.keys.clone(), calls));
            queue
        });
        let (reply, answer) = tokio::sync::oneshot::channel();
        match queue.send((indexes, reply)).await {
            Ok(()) => answer.await.unwrap_or_else(|_| {
                Err(StoreError::Downstream(
                    "the blind-index lookup stopped before answering".to_owned(),
                ))
            }),
            // The runtime that ran the batcher is gone: look up directly.
            Err(tokio::sync::mpsc::error::SendError((indexes, _))) => {
                self.keys.find(&indexes).await
            }
        }
    }
}

async fn run_finds(
    keys: std::sync::Arc<dyn KeyStore>,
    mut calls: tokio::sync::mpsc::Receiver<FindCall>,
) {
    while let Some(first) = calls.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_FIND_BATCH {
            match calls.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => break,
            }
        }
        let mut all: Vec<String> = batch.iter().flat_map(|(i, _)| i.iter().cloned()).collect();
        all.sort_unstable();
        all.dedup();
        match keys.find(&all).await {
            Ok(rows) => {
                for (indexes, reply) in batch {
                    let mine: std::collections::HashSet<&str> =
                        indexes.iter().map(String::as_str).collect();
                    let rows = rows
                        .iter()
                        .filter(|(index, _)| mine.contains(index.as_str()))
                        .cloned()
                        .collect();
                    // The caller may have gone away; nothing to tell it then.
                    let _ = reply.send(Ok(rows));
                }
            }
            Err(error) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(error.for_another()));
                }
                // Lookups that queued while this one found the database unreachable get that
                // answer now, rather than each waiting out a connection time-out in turn.
                if error.is_unavailable() {
                    while let Ok((_, reply)) = calls.try_recv() {
                        let _ = reply.send(Err(error.for_another()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use lethe_domain::RequestId;
    use tokio::sync::Semaphore;

    use super::{FindBatcher, KeyStore};
    use crate::store::StoreError;

    /// Each index `i-N` points to request N; the first lookup waits for a gate.
    #[derive(Debug)]
    struct Fake {
        ids: Vec<RequestId>,
        gate: Arc<Semaphore>,
        batches: Mutex<Vec<usize>>,
    }

    impl crate::store::key_ring::store::KeyRingStore for Fake {}

    #[async_trait]
    impl KeyStore for Fake {
        async fn wrapped_key(&self, _: RequestId) -> Result<Option<String>, StoreError> {
            Ok(None)
        }
        async fn wrapped_keys(
            &self,
            _: &[RequestId],
        ) -> Result<Vec<(RequestId, String)>, StoreError> {
            Ok(Vec::new())
        }
        async fn find(&self, indexes: &[String]) -> Result<Vec<(String, RequestId)>, StoreError> {
            self.gate.acquire().await.expect("gate").forget();
            self.batches.lock().unwrap().push(indexes.len());
            Ok(indexes
                .iter()
                .filter_map(|i| {
                    let n: usize = i.strip_prefix("i-")?.parse().ok()?;
                    Some((i.clone(), *self.ids.get(n)?))
                })
                .collect())
        }
        async fn destroy(&self, _: RequestId) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lookups_share_a_query_and_each_gets_its_own_rows() {
        let ids: Vec<RequestId> = (0..40)
            .map(|_| RequestId::from_uuid(uuid::Uuid::now_v7()))
            .collect();
        let gate = Arc::new(Semaphore::new(0));
        let fake = Arc::new(Fake {
            ids: ids.clone(),
            gate: gate.clone(),
            batches: Mutex::new(Vec::new()),
        });
        let batcher = Arc::new(FindBatcher::new(fake.clone()));
        // The first lookup starts the batcher and holds it at the gate.
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.find(vec!["i-0".to_owned()]).await }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while batcher.queue.get().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the batcher never started"
            );
            tokio::task::yield_now().await;
        }
        let queue = batcher.queue.get().expect("started").clone();
        // 30 more: caller n asks for its own index, one unknown index and, for odd n, the
        // index of caller n - 1 (shared with another caller).
        let callers: Vec<_> = (1..=30_usize)
            .map(|n| {
                let batcher = batcher.clone();
                let mut asked = vec![format!("i-{n}"), format!("none-{n}")];
                if n % 2 == 1 {
                    asked.push(format!("i-{}", n - 1));
                }
                tokio::spawn(async move { (n, batcher.find(asked).await) })
            })
            .collect();
        // Wait until all 30 are queued behind the first (held at the gate)...
        while queue.max_capacity() - queue.capacity() < 30 {
            assert!(
                std::time::Instant::now() < deadline,
                "the lookups never queued"
            );
            tokio::task::yield_now().await;
        }
        // ...then let everything through.
        gate.add_permits(1_000);
        assert_eq!(
            first.await.unwrap().unwrap(),
            vec![("i-0".to_owned(), ids[0])]
        );
        for caller in callers {
            let (n, rows) = caller.await.unwrap();
            let mut rows = rows.unwrap();
            rows.sort();
            let mut expected = vec![(format!("i-{n}"), ids[n])];
            if n % 2 == 1 {
                expected.push((format!("i-{}", n - 1), ids[n - 1]));
            }
            expected.sort();
            assert_eq!(rows, expected, "caller {n}");
        }
        // The first lookup alone, then the 30 queued ones in one query.
        let batches = fake.batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[0], 1);
        // 30 own + 30 unknown + i-0 (caller 1's; the other shared ones are already in).
        assert_eq!(batches[1], 61);
    }
}
