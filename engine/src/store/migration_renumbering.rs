//! The move of SQLite's migrations to Postgres' numbers (ADR 23), for databases migrated
//! before it.
//!
//! Until then SQLite numbered its migrations on its own: it has nothing to do for Postgres'
//! `0006_jobs_upkeep` and `0008_json_as_text`, so its `events_fewer_checks` was 6 (Postgres: 7)
//! and its `key_ring` 7 (Postgres: 9). Now one change has one number on both backends, with a
//! migration that does nothing where a change does not apply. sqlx knows an applied migration
//! by its version and checks its checksum, so a database migrated under the old numbers would
//! be refused ("migration 7 was previously applied but has been modified"). Before the migrator
//! runs, [`renumber_sqlite`] rewrites those versions in `_sqlx_migrations`, in one transaction;
//! the migrator then applies the two migrations that do nothing, and whatever came after.
//!
//! Only a row whose checksum is that of the migration it moves to is rewritten (the files kept
//! their contents, so their checksums): a database migrated under the new numbers, or a fresh
//! one, is left alone, and running this again changes nothing.

use sqlx::migrate::Migrator;
use sqlx::SqlitePool;

use super::StoreError;

/// `(old version, new version)` of each SQLite migration that moved, in the order they are
/// rewritten: the highest first, so that no two rows ever share a version.
const MOVED: [(i64, i64); 2] = [(7, 9), (6, 7)];

/// Rewrites the versions of migrations applied under SQLite's old numbers to the new ones, in
/// one transaction; a no-op for a database without them.
pub async fn renumber_sqlite(pool: &SqlitePool, migrator: &Migrator) -> Result<(), StoreError> {
    let mut transaction = pool.begin().await?;
    let migrated: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master \
         WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *transaction)
    .await?;
    if !migrated {
        return Ok(());
    }
    for (old, new) in MOVED {
        let Some(migration) = migrator.iter().find(|m| m.version == new) else {
            return Err(StoreError::Corrupt(format!(
                "no SQLite migration {new} to renumber migration {old} to"
            )));
        };
        sqlx::query("UPDATE _sqlx_migrations SET version = ? WHERE version = ? AND checksum = ?")
            .bind(new)
            .bind(old)
            .bind(&*migration.checksum)
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}
