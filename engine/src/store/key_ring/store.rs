//! Where the key ring is recorded (tables `master_keys`, `master_key_wraps` and
//! `previous_cancel_tokens`, see `migrations/`), and the statements a rotation runs against
//! `request_keys` and `subject_index`.

use async_trait::async_trait;
use lethe_domain::RequestId;

use crate::store::{PostgresStore, SqliteStore, StoreError};

/// A master key as the database knows it: by its check value, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedKey {
    pub fingerprint: String,
    pub check_value: String,
    /// Being retired by a rotation: still read, no longer written.
    pub retiring: bool,
}

/// During a rotation: the key `fingerprint` wrapped under the key `wrapped_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrap {
    pub fingerprint: String,
    pub wrapped_by: String,
    pub wrapped_key: String,
}

/// One request's data key re-wrapped under the new key, with its blind indexes under it and
/// the digests of its cancel tokens under the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rekeyed {
    pub id: RequestId,
    /// The wrapped key as read: the update applies only if it is still that.
    pub from: String,
    pub to: String,
    pub indexes: Vec<String>,
    pub cancel_digests: Vec<String>,
}

/// A `request_keys` row as SQLite returns it (the id as text), with the id parsed.
pub(crate) fn sqlite_key_row(
    (id, key): (String, String),
) -> Result<(RequestId, String), StoreError> {
    let id = id
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("request key id {id:?}")))?;
    Ok((id, key))
}

fn unsupported() -> StoreError {
    StoreError::Downstream("this key store keeps no key ring".to_owned())
}

/// The key ring's records. The defaults refuse: only the two databases keep a ring.
#[async_trait]
pub trait KeyRingStore: Send + Sync {
    /// The recorded keys, oldest first, and the wraps of a rotation in progress.
    async fn recorded_keys(&self) -> Result<(Vec<RecordedKey>, Vec<KeyWrap>), StoreError> {
        Err(unsupported())
    }

    /// Records `key` as the database's key if none is recorded yet (else nothing), and
    /// prefixes the blind indexes written before fingerprints with its fingerprint.
    async fn record_first_key(&self, _key: &RecordedKey) -> Result<(), StoreError> {
        Err(unsupported())
    }

    /// Any one wrapped data key, to check a key against data sealed before key check values.
    async fn some_wrapped_key(&self) -> Result<Option<(RequestId, String)>, StoreError> {
        Err(unsupported())
    }

    /// Records `new` as the writing key, every other key as retiring, and `wraps`.
    async fn begin_rotation(
        &self,
        _new: &RecordedKey,
        _wraps: &[KeyWrap],
    ) -> Result<(), StoreError> {
        Err(unsupported())
    }

    /// Wrapped data keys in request order, after `after`.
    async fn wrapped_keys_after(
        &self,
        _after: Option<RequestId>,
        _limit: u32,
    ) -> Result<Vec<(RequestId, String)>, StoreError> {
        Err(unsupported())
    }

    /// Applies re-wrapped keys in one transaction (each only if its key is still as read:
    /// a request shredded meanwhile stays shredded); returns how many applied.
    async fn rekey(&self, _batch: &[Rekeyed]) -> Result<u64, StoreError> {
        Err(unsupported())
    }

    /// If every data key is wrapped under `keep` alone: deletes every other key, its wraps
    /// and its blind indexes, and returns true. Otherwise changes nothing.
    async fn finish_rotation(&self, _keep: &str) -> Result<bool, StoreError> {
        Err(unsupported())
    }

    /// The digests of the request's cancel tokens under retired keys.
    async fn previous_cancel_tokens(&self, _id: RequestId) -> Result<Vec<String>, StoreError> {
        Err(unsupported())
    }
}

/// `keep` alone: the wrapped key starts with its fingerprint and has a single form.
const ONLY_UNDER_PG: &str = "(wrapped_key LIKE $1 || ':%' AND position('|' IN wrapped_key) = 0)";
const ONLY_UNDER_SQLITE: &str = "(wrapped_key LIKE ?1 || ':%' AND instr(wrapped_key, '|') = 0)";

fn recorded((fingerprint, check_value, retiring): (String, String, bool)) -> RecordedKey {
    RecordedKey {
        fingerprint,
        check_value,
        retiring,
    }
}

fn wrap((fingerprint, wrapped_by, wrapped_key): (String, String, String)) -> KeyWrap {
    KeyWrap {
        fingerprint,
        wrapped_by,
        wrapped_key,
    }
}

#[async_trait]
impl KeyRingStore for PostgresStore {
    async fn recorded_keys(&self) -> Result<(Vec<RecordedKey>, Vec<KeyWrap>), StoreError> {
        let keys: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT fingerprint, check_value, retiring FROM master_keys ORDER BY added_at, fingerprint",
        )
        .fetch_all(self.pool())
        .await?;
        let wraps: Vec<(String, String, String)> =
            sqlx::query_as("SELECT fingerprint, wrapped_by, wrapped_key FROM master_key_wraps")
                .fetch_all(self.pool())
                .await?;
        Ok((
            keys.into_iter().map(recorded).collect(),
            wraps.into_iter().map(wrap).collect(),
        ))
    }

    async fn record_first_key(&self, key: &RecordedKey) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        // Two processes starting at once on a new database: one records its key, the other
        // then finds it (and is refused if its key differs).
        sqlx::query("LOCK TABLE master_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO master_keys (fingerprint, check_value) SELECT $1, $2 \
             WHERE NOT EXISTS (SELECT 1 FROM master_keys)",
        )
        .bind(&key.fingerprint)
        .bind(&key.check_value)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            sqlx::query(
                "UPDATE subject_index SET blind_index = $1 || ':' || blind_index \
                 WHERE position(':' IN blind_index) = 0",
            )
            .bind(&key.fingerprint)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn some_wrapped_key(&self) -> Result<Option<(RequestId, String)>, StoreError> {
        let row: Option<(uuid::Uuid, String)> =
            sqlx::query_as("SELECT request_id, wrapped_key FROM request_keys LIMIT 1")
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(id, key)| (RequestId::from_uuid(id), key)))
    }

    async fn begin_rotation(&self, new: &RecordedKey, wraps: &[KeyWrap]) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE master_keys SET retiring = true WHERE fingerprint <> $1")
            .bind(&new.fingerprint)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO master_keys (fingerprint, check_value) VALUES ($1, $2) \
             ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(&new.fingerprint)
        .bind(&new.check_value)
        .execute(&mut *tx)
        .await?;
        for w in wraps {
            sqlx::query(
                "INSERT INTO master_key_wraps (fingerprint, wrapped_by, wrapped_key) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(&w.fingerprint)
            .bind(&w.wrapped_by)
            .bind(&w.wrapped_key)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn wrapped_keys_after(
        &self,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<Vec<(RequestId, String)>, StoreError> {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT request_id, wrapped_key FROM request_keys \
             WHERE $1::uuid IS NULL OR request_id > $1 ORDER BY request_id LIMIT $2",
        )
        .bind(after.map(|id| *id.as_uuid()))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, key)| (RequestId::from_uuid(id), key))
            .collect())
    }

    async fn rekey(&self, batch: &[Rekeyed]) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut applied = 0;
        for r in batch {
            let id = r.id.as_uuid();
            let updated = sqlx::query(
                "UPDATE request_keys SET wrapped_key = $3 \
                 WHERE request_id = $1 AND wrapped_key = $2",
            )
            .bind(id)
            .bind(&r.from)
            .bind(&r.to)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                continue;
            }
            applied += 1;
            sqlx::query("DELETE FROM subject_index WHERE request_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO subject_index (blind_index, request_id) \
                 SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
            )
            .bind(&r.indexes)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO previous_cancel_tokens (request_id, digest) \
                 SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(&r.cancel_digests)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn finish_rotation(&self, keep: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        // No data key can be written under the old key between the check and the deletion.
        sqlx::query("LOCK TABLE request_keys IN SHARE MODE")
            .execute(&mut *tx)
            .await?;
        let left: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM request_keys WHERE NOT {ONLY_UNDER_PG} LIMIT 1"
        ))
        .bind(keep)
        .fetch_optional(&mut *tx)
        .await?;
        if left.is_some() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM subject_index WHERE blind_index NOT LIKE $1 || ':%'")
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM master_keys WHERE fingerprint <> $1")
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE master_keys SET retiring = false WHERE fingerprint = $1")
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn previous_cancel_tokens(&self, id: RequestId) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT digest FROM previous_cancel_tokens WHERE request_id = $1")
                .bind(id.as_uuid())
                .fetch_all(self.pool())
                .await?,
        )
    }
}

#[async_trait]
impl KeyRingStore for SqliteStore {
    async fn recorded_keys(&self) -> Result<(Vec<RecordedKey>, Vec<KeyWrap>), StoreError> {
        let keys: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT fingerprint, check_value, retiring FROM master_keys ORDER BY added_at, fingerprint",
        )
        .fetch_all(self.writer())
        .await?;
        let wraps: Vec<(String, String, String)> =
            sqlx::query_as("SELECT fingerprint, wrapped_by, wrapped_key FROM master_key_wraps")
                .fetch_all(self.writer())
                .await?;
        Ok((
            keys.into_iter().map(recorded).collect(),
            wraps.into_iter().map(wrap).collect(),
        ))
    }

    async fn record_first_key(&self, key: &RecordedKey) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        // One statement: SQLite writers are serialized, so two processes cannot both insert.
        let inserted = sqlx::query(
            "INSERT INTO master_keys (fingerprint, check_value) SELECT ?1, ?2 \
             WHERE NOT EXISTS (SELECT 1 FROM master_keys)",
        )
        .bind(&key.fingerprint)
        .bind(&key.check_value)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            sqlx::query(
                "UPDATE subject_index SET blind_index = ?1 || ':' || blind_index \
                 WHERE instr(blind_index, ':') = 0",
            )
            .bind(&key.fingerprint)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn some_wrapped_key(&self) -> Result<Option<(RequestId, String)>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT request_id, wrapped_key FROM request_keys LIMIT 1")
                .fetch_optional(self.writer())
                .await?;
        row.map(sqlite_key_row).transpose()
    }

    async fn begin_rotation(&self, new: &RecordedKey, wraps: &[KeyWrap]) -> Result<(), StoreError> {
        let mut tx = self.writer().begin().await?;
        sqlx::query("UPDATE master_keys SET retiring = 1 WHERE fingerprint <> ?1")
            .bind(&new.fingerprint)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO master_keys (fingerprint, check_value) VALUES (?1, ?2) \
             ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(&new.fingerprint)
        .bind(&new.check_value)
        .execute(&mut *tx)
        .await?;
        for w in wraps {
            sqlx::query(
                "INSERT INTO master_key_wraps (fingerprint, wrapped_by, wrapped_key) \
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )
            .bind(&w.fingerprint)
            .bind(&w.wrapped_by)
            .bind(&w.wrapped_key)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn wrapped_keys_after(
        &self,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<Vec<(RequestId, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT request_id, wrapped_key FROM request_keys \
             WHERE ?1 IS NULL OR request_id > ?1 ORDER BY request_id LIMIT ?2",
        )
        .bind(after.map(|id| id.to_string()))
        .bind(i64::from(limit))
        .fetch_all(self.writer())
        .await?;
        rows.into_iter().map(sqlite_key_row).collect()
    }

    async fn rekey(&self, batch: &[Rekeyed]) -> Result<u64, StoreError> {
        let mut tx = self.writer().begin().await?;
        let mut applied = 0;
        for r in batch {
            let id = r.id.to_string();
            let updated = sqlx::query(
                "UPDATE request_keys SET wrapped_key = ?3 \
                 WHERE request_id = ?1 AND wrapped_key = ?2",
            )
            .bind(&id)
            .bind(&r.from)
            .bind(&r.to)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                continue;
            }
            applied += 1;
            sqlx::query("DELETE FROM subject_index WHERE request_id = ?1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            for index in &r.indexes {
                sqlx::query(
                    "INSERT INTO subject_index (blind_index, request_id) VALUES (?1, ?2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(index)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            }
            for digest in &r.cancel_digests {
                sqlx::query(
                    "INSERT INTO previous_cancel_tokens (request_id, digest) VALUES (?1, ?2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&id)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn finish_rotation(&self, keep: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer().begin().await?;
        // A write first, so the transaction holds SQLite's write lock before it checks.
        sqlx::query("UPDATE master_keys SET retiring = 0 WHERE fingerprint = ?1")
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        let left: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM request_keys WHERE NOT {ONLY_UNDER_SQLITE} LIMIT 1"
        ))
        .bind(keep)
        .fetch_optional(&mut *tx)
        .await?;
        if left.is_some() {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM subject_index WHERE blind_index NOT LIKE ?1 || ':%'")
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM master_key_wraps")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM master_keys WHERE fingerprint <> ?1")
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn previous_cancel_tokens(&self, id: RequestId) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT digest FROM previous_cancel_tokens WHERE request_id = ?1")
                .bind(id.to_string())
                .fetch_all(self.writer())
                .await?,
        )
    }
}
