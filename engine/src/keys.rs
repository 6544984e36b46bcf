//! Where the wrapped data keys and the blind index live (tables `request_keys` and
//! `subject_index`; see [`crate::sealing`] for what they hold). A new request's key is written
//! with its first event ([`crate::store::Append::key`]), in the same transaction.

use async_trait::async_trait;
use lethe_domain::RequestId;
use sqlx::Row;

use crate::store::{PostgresStore, SqliteStore, StoreError};

#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// The wrapped data key, or `None` once shredded (or never stored).
    async fn wrapped_key(&self, id: RequestId) -> Result<Option<String>, StoreError>;
    /// The wrapped data keys of these requests that still have one, as (request, key) pairs.
    async fn wrapped_keys(&self, ids: &[RequestId])
        -> Result<Vec<(RequestId, String)>, StoreError>;
    /// The requests each of these blind indexes points to, as (blind index, request) pairs
    /// in request order: the requests whose subject shares any of them.
    async fn find(&self, indexes: &[String]) -> Result<Vec<(String, RequestId)>, StoreError>;
    /// Destroys the request's data key and blind indexes. Idempotent.
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
            "SELECT blind_index, request_id FROM subject_index WHERE blind_index = ANY($1) \
             ORDER BY request_id, blind_index",
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
        rows.into_iter()
            .map(|(id, key)| {
                let id = id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("request key id {id:?}")))?;
                Ok((id, key))
            })
            .collect()
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
        tx.commit().await?;
        Ok(())
    }
}
