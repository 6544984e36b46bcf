//! The Postgres event store, for production and for several engine instances at once.
//!
//! Gap safety: positions come from an identity column, so they are handed out in insert order
//! but become visible in commit order. A reader that simply followed positions could pass a
//! position whose transaction commits later and never see it. Every event therefore records
//! its writing transaction (`pg_current_xact_id()`), and readers take only events whose
//! transaction is older than the oldest one still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`), in (transaction id, position) order. All such
//! transactions have finished, so nothing can appear later below the reader's checkpoint.

use async_trait::async_trait;
use lethe_domain::RequestId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use super::group::{self, GroupCommit, WriteBatch};
use super::{
    prepare_rows, Append, Appended, Checkpoint, CommandRecord, EventStore, RecordedEvent,
    StoreError, StreamHead, GENESIS_HASH,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

const EVENT_COLUMNS: &str = "position, transaction_id::text::bigint AS transaction_id, stream_id, \
     version, event_type, schema_version, payload, event_id, command_id, correlation_id, \
     causation_id, actor, recorded_at, prev_hash, hash";

/// Appends written in one transaction at most.
const MAX_BATCH: usize = 512;
/// Batches being written at once (appends are spread over them by stream). Two: one batch can
/// be sent while the other commits. Eight made smaller batches and a lower `ingest` ratio on
/// two cores (docs/PERFORMANCE.md) without helping `lifecycle`.
const WRITERS: usize = 2;
/// Connections: the writers' plus room for reads, subscriptions and job claims.
const POOL_SIZE: u32 = 24;
/// How long a call waits for a connection when no `[database] acquire_timeout` applies (the
/// command-line tools, tests): they have no caller waiting on a quick answer. `lethe serve`
/// waits as long as its configuration says (1 s by default).
pub const TOOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between connection attempts while connecting to an unreachable database.
const STARTUP_RETRY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    group: GroupCommit,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        Self::connect_with(options).await
    }

    /// Connects with explicit options (tests use them to put each test in its own schema).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        Self::connect_with_timeout(options, TOOL_ACQUIRE_TIMEOUT).await
    }

    /// Connects with explicit options; every call waits at most `acquire_timeout` for a
    /// connection (a pooled one, or a new one opened meanwhile), then fails with
    /// [`StoreError::Unavailable`]. A pooled connection is checked before use, so one the
    /// server closed or reset is replaced rather than handed out.
    ///
    /// Connecting itself waits up to [`TOOL_ACQUIRE_TIMEOUT`] for an unreachable database,
    /// however short `acquire_timeout` is: a server that starts (or restarts) beside Lethe
    /// should not stop it from starting.
    pub async fn connect_with_timeout(
        options: PgConnectOptions,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        // No JIT: every statement here is short, and a cost estimate past `jit_above_cost`
        // (a claim's stream reads on a large log) made Postgres compile code for each call.
        let options = options.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(acquire_timeout)
            .test_before_acquire(true)
            .connect_lazy_with(options);
        let started = tokio::time::Instant::now();
        loop {
            match pool.acquire().await.map_err(StoreError::from) {
                Ok(_) => break,
                Err(error)
                    if error.is_unavailable() && started.elapsed() < TOOL_ACQUIRE_TIMEOUT =>
                {
                    tracing::info!(error = %error, "waiting for the database");
                    tokio::time::sleep(STARTUP_RETRY).await;
                }
                Err(error) => return Err(error),
            }
        }
        let write = batch_writer(pool.clone());
        let group = GroupCommit::start(WRITERS, MAX_BATCH, write);
        Ok(Self { pool, group })
    }

    fn group_writer(&self) -> WriteBatch {
        batch_writer(self.pool.clone())
    }

    pub const fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations from `migrations/postgres`; a no-op when up to date.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}

fn decode(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position = row.try_get("position")?;
    Ok(RecordedEvent {
        position,
        transaction_id: row.try_get("transaction_id")?,
        stream_id: RequestId::from_uuid(row.try_get("stream_id")?),
        version: row.try_get("version")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload: serde_json::from_str(row.try_get("payload")?).map_err(|e| {
            StoreError::Corrupt(format!(
                "the payload of the event at position {position} is not JSON: {e}"
            ))
        })?,
        event_id: row.try_get("event_id")?,
        command_id: row.try_get("command_id")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        actor: row.try_get("actor")?,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn decode_command(row: &PgRow) -> Result<CommandRecord, StoreError> {
    Ok(CommandRecord {
        command_id: row.try_get("command_id")?,
        stream_id: RequestId::from_uuid(row.try_get("stream_id")?),
        first_version: row.try_get("first_version")?,
        last_version: row.try_get("last_version")?,
    })
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append_one(&self, append: Append) -> Result<Appended, StoreError> {
        self.group.append(append).await
    }

    async fn append_batch(&self, appends: Vec<Append>) -> Vec<Result<Appended, StoreError>> {
        group::write_all(&self.group_writer(), appends, MAX_BATCH, WRITERS).await
    }

    async fn caught_up(
        &self,
        checkpoint: Checkpoint,
        head_position: i64,
    ) -> Result<bool, StoreError> {
        let unread: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events WHERE position <= $3 \
             AND (transaction_id, position) > ($1::text::xid8, $2))",
        )
        .bind(checkpoint.transaction_id.to_string())
        .bind(checkpoint.position)
        .bind(head_position)
        .fetch_one(&self.pool)
        .await?;
        Ok(!unread)
    }

    async fn read_stream(
        &self,
        stream_id: RequestId,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 \
             ORDER BY version"
        );
        let rows = sqlx::query(&sql)
            .bind(stream_id.as_uuid())
            .bind(after_version)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn read_all(
        &self,
        after: Checkpoint,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE (events.transaction_id, events.position) > ($1::text::xid8, $2) \
               AND events.transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY events.transaction_id, events.position LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(after.transaction_id.to_string())
            .bind(after.position)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn find_command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        find_command(&self.pool, command_id).await
    }

    async fn stream_head(&self, stream_id: RequestId) -> Result<Option<StreamHead>, StoreError> {
        let row = sqlx::query("SELECT version, last_hash FROM streams WHERE stream_id = $1")
            .bind(stream_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(StreamHead {
                version: row.try_get("version")?,
                last_hash: row.try_get("last_hash")?,
            })
        })
        .transpose()
    }

    async fn read_streams(
        &self,
        stream_ids: &[RequestId],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        // One index lookup per stream (LATERAL): with `stream_id = ANY($1)` the planner
        // guesses thousands of rows per stream and, for a timer round's 256 streams, chose a
        // parallel sequential scan of the whole log (9 ms a call at 700,000 events).
        let sql = format!(
            "SELECT e.* FROM unnest($1::uuid[]) WITH ORDINALITY AS s(id, n) \
             CROSS JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = s.id \
               ORDER BY version) AS e \
             ORDER BY s.n, e.version"
        );
        let ids: Vec<uuid::Uuid> = stream_ids.iter().map(|id| *id.as_uuid()).collect();
        let rows = sqlx::query(&sql).bind(&ids).fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }

    async fn read_stream_with_head(
        &self,
        stream_id: RequestId,
    ) -> Result<(Option<StreamHead>, Vec<RecordedEvent>), StoreError> {
        // One statement, so one snapshot: the head is exactly the last event read.
        let sql = format!(
            "SELECT head.head_version, head.head_hash, e.* FROM \
               (SELECT version AS head_version, last_hash AS head_hash FROM streams \
                WHERE stream_id = $1) AS head \
             LEFT JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = $1) AS e \
               ON true \
             ORDER BY e.version"
        );
        let rows = sqlx::query(&sql)
            .bind(stream_id.as_uuid())
            .fetch_all(&self.pool)
            .await?;
        let Some(first) = rows.first() else {
            return Ok((None, Vec::new()));
        };
        let head = StreamHead {
            version: first.try_get("head_version")?,
            last_hash: first.try_get("head_hash")?,
        };
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<Option<i64>, _>("position")?.is_some() {
                events.push(decode(row)?);
            }
        }
        Ok((Some(head), events))
    }

    async fn list_streams(
        &self,
        after: Option<RequestId>,
        limit: u32,
    ) -> Result<Vec<(RequestId, StreamHead)>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream_id, version, last_hash FROM streams \
             WHERE $1::uuid IS NULL OR stream_id > $1 ORDER BY stream_id LIMIT $2",
        )
        .bind(after.map(|id| *id.as_uuid()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    RequestId::from_uuid(row.try_get("stream_id")?),
                    StreamHead {
                        version: row.try_get("version")?,
                        last_hash: row.try_get("last_hash")?,
                    },
                ))
            })
            .collect()
    }

    async fn head_position(&self) -> Result<i64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(head.unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn batch_writer(pool: PgPool) -> WriteBatch {
    std::sync::Arc::new(move |appends| {
        let pool = pool.clone();
        Box::pin(async move { write_batch(&pool, appends).await })
    })
}

/// Writes a batch of appends to distinct streams with distinct command ids in one
/// transaction (see [`group::with_fallback`] for when that transaction fails).
async fn write_batch(pool: &PgPool, appends: Vec<Append>) -> Vec<Result<Appended, StoreError>> {
    group::with_fallback(&appends, |some| try_batch(pool, some)).await
}

/// What became of one append of a batch while it is being written.
enum Outcome {
    /// Its events will be written (rows prepared, positions filled in after the insert).
    Write(Vec<RecordedEvent>),
    /// Its command id was taken: answered with the first result after the transaction.
    Duplicate(String),
    /// The stream was not at the expected version (`None`: look the version up afterwards).
    Conflict(Option<i64>),
    /// Nothing to write.
    Empty,
}

async fn try_batch(
    pool: &PgPool,
    appends: &[Append],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let mut outcomes: Vec<Outcome> = appends
        .iter()
        .map(|a| {
            if a.events.is_empty() {
                Outcome::Empty
            } else {
                Outcome::Write(Vec::new())
            }
        })
        .collect();
    if outcomes.iter().all(|o| matches!(o, Outcome::Empty)) {
        return Ok(appends
            .iter()
            .map(|_| Ok(Appended::Written(Vec::new())))
            .collect());
    }
    if appends.iter().all(|a| {
        a.events.is_empty() || (a.expected_version == 0 && a.metadata.command_id.is_none())
    }) {
        return try_new_streams(pool, appends, outcomes).await;
    }
    let mut tx = pool.begin().await?;

    // 1. Claim the command ids. A taken id blocks while its transaction runs, then is skipped.
    let claims: Vec<usize> = (0..appends.len())
        .filter(|&i| {
            matches!(outcomes[i], Outcome::Write(_)) && appends[i].metadata.command_id.is_some()
        })
        .collect();
    if !claims.is_empty() {
        let mut ids = Vec::with_capacity(claims.len());
        let mut streams = Vec::with_capacity(claims.len());
        let mut firsts = Vec::with_capacity(claims.len());
        let mut lasts = Vec::with_capacity(claims.len());
        for &i in &claims {
            let a = &appends[i];
            ids.push(a.metadata.command_id.clone().unwrap_or_default());
            streams.push(*a.stream_id.as_uuid());
            firsts.push(a.expected_version + 1);
            lasts.push(a.expected_version + count(&a.events));
        }
        let claimed: Vec<String> = sqlx::query_scalar(
            "INSERT INTO commands (command_id, stream_id, first_version, last_version) \
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::int8[], $4::int8[]) ORDER BY 1 \
             ON CONFLICT (command_id) DO NOTHING RETURNING command_id",
        )
        .bind(&ids)
        .bind(&streams)
        .bind(&firsts)
        .bind(&lasts)
        .fetch_all(&mut *tx)
        .await?;
        let claimed: std::collections::HashSet<String> = claimed.into_iter().collect();
        for (&i, id) in claims.iter().zip(ids) {
            if !claimed.contains(&id) {
                outcomes[i] = Outcome::Duplicate(id);
            }
        }
    }

    // 2. Lock the heads of existing streams (in id order, so batches cannot deadlock on them)
    //    and check their versions; chain the new events onto their last hashes.
    let existing: Vec<usize> = (0..appends.len())
        .filter(|&i| matches!(outcomes[i], Outcome::Write(_)) && appends[i].expected_version > 0)
        .collect();
    if !existing.is_empty() {
        let ids: Vec<uuid::Uuid> = existing
            .iter()
            .map(|&i| *appends[i].stream_id.as_uuid())
            .collect();
        let rows = sqlx::query(
            "SELECT stream_id, version, last_hash FROM streams WHERE stream_id = ANY($1) \
             ORDER BY stream_id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut heads = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: uuid::Uuid = row.try_get("stream_id")?;
            let version: i64 = row.try_get("version")?;
            let hash: String = row.try_get("last_hash")?;
            heads.insert(id, (version, hash));
        }
        let (mut ids, mut versions, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        for &i in &existing {
            let a = &appends[i];
            match heads.get(a.stream_id.as_uuid()) {
                Some((version, hash)) if *version == a.expected_version => {
                    let rows = prepare_rows(
                        a.stream_id,
                        a.expected_version,
                        hash,
                        &a.events,
                        &a.metadata,
                    );
                    ids.push(*a.stream_id.as_uuid());
                    versions.push(a.expected_version + count(&a.events));
                    hashes.push(rows.last().map(|r| r.hash.clone()).unwrap_or_default());
                    outcomes[i] = Outcome::Write(rows);
                }
                other => outcomes[i] = Outcome::Conflict(Some(other.map_or(0, |(v, _)| *v))),
            }
        }
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE streams SET version = u.version, last_hash = u.last_hash \
                 FROM unnest($1::uuid[], $2::int8[], $3::text[]) AS u(stream_id, version, last_hash) \
                 WHERE streams.stream_id = u.stream_id",
            )
            .bind(&ids)
            .bind(&versions)
            .bind(&hashes)
            .execute(&mut *tx)
            .await?;
        }
    }

    // 3. Create the new streams; one that exists already is a conflict.
    let fresh: Vec<usize> = (0..appends.len())
        .filter(|&i| matches!(outcomes[i], Outcome::Write(_)) && appends[i].expected_version == 0)
        .collect();
    if !fresh.is_empty() {
        let streams = start_streams(appends, &fresh, &mut outcomes);
        let created: Vec<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO streams (stream_id, version, last_hash) \
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[]) ORDER BY 1 \
             ON CONFLICT (stream_id) DO NOTHING RETURNING stream_id",
        )
        .bind(&streams.ids)
        .bind(&streams.versions)
        .bind(&streams.hashes)
        .fetch_all(&mut *tx)
        .await?;
        let created: std::collections::HashSet<uuid::Uuid> = created.into_iter().collect();
        for &i in &fresh {
            if !created.contains(appends[i].stream_id.as_uuid()) {
                outcomes[i] = Outcome::Conflict(None);
            }
        }
    }

    // 4. Give back the command ids of the appends that conflicted.
    let released: Vec<String> = (0..appends.len())
        .filter(|&i| matches!(outcomes[i], Outcome::Conflict(_)))
        .filter_map(|i| appends[i].metadata.command_id.clone())
        .collect();
    if !released.is_empty() {
        sqlx::query("DELETE FROM commands WHERE command_id = ANY($1)")
            .bind(&released)
            .execute(&mut *tx)
            .await?;
    }

    // 5. The events, in one statement, in batch order (positions follow versions).
    insert_events(&mut tx, &mut outcomes).await?;

    // 6. The data keys and blind indexes of new requests.
    insert_keys(&mut tx, appends, &outcomes).await?;

    tx.commit().await?;

    let mut results = Vec::with_capacity(appends.len());
    for (append, outcome) in appends.iter().zip(outcomes) {
        results.push(match outcome {
            Outcome::Empty => Ok(Appended::Written(Vec::new())),
            Outcome::Write(rows) => Ok(Appended::Written(rows)),
            Outcome::Duplicate(command_id) => match find_command(pool, &command_id).await? {
                Some(record) => Ok(Appended::Duplicate(record)),
                None => Err(StoreError::Corrupt(format!(
                    "command {command_id} vanished while being checked"
                ))),
            },
            Outcome::Conflict(actual) => {
                let actual = match actual {
                    Some(actual) => actual,
                    None => stream_version(pool, append.stream_id).await?,
                };
                Err(StoreError::Conflict {
                    stream_id: append.stream_id,
                    expected: append.expected_version,
                    actual,
                })
            }
        });
    }
    Ok(results)
}

fn count(events: &[lethe_domain::Event]) -> i64 {
    i64::try_from(events.len()).unwrap_or(i64::MAX)
}

/// The columns of events to insert, as the arrays `unnest` takes.
struct EventColumns<'a> {
    stream_ids: Vec<uuid::Uuid>,
    versions: Vec<i64>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    /// The payloads as JSON text (the column is `text`: ADR 12).
    payloads: Vec<String>,
    event_ids: Vec<uuid::Uuid>,
    command_ids: Vec<Option<&'a str>>,
    correlation_ids: Vec<uuid::Uuid>,
    causation_ids: Vec<Option<uuid::Uuid>>,
    actors: Vec<&'a str>,
    recorded_ats: Vec<chrono::DateTime<chrono::Utc>>,
    prev_hashes: Vec<&'a str>,
    hashes: Vec<&'a str>,
}

/// `unnest` of [`EventColumns`] bound from `$first`, in batch order, as `t(<columns>, ordinal)`.
fn unnest_events(first: usize) -> String {
    let types = [
        "uuid",
        "int8",
        "text",
        "int4",
        "text",
        "uuid",
        "text",
        "uuid",
        "uuid",
        "text",
        "timestamptz",
        "text",
        "text",
    ];
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    format!(
        "unnest({}) WITH ORDINALITY AS t(stream_id, version, event_type, schema_version, \
         payload, event_id, command_id, correlation_id, causation_id, actor, recorded_at, \
         prev_hash, hash, ordinal)",
        arrays.join(", ")
    )
}

const EVENT_INSERT_COLUMNS: &str = "stream_id, version, event_type, schema_version, payload, \
     event_id, command_id, correlation_id, causation_id, actor, recorded_at, prev_hash, hash";

impl<'a> EventColumns<'a> {
    fn new(rows: &[&'a RecordedEvent]) -> Self {
        let n = rows.len();
        let mut columns = Self {
            stream_ids: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            event_ids: Vec::with_capacity(n),
            command_ids: Vec::with_capacity(n),
            correlation_ids: Vec::with_capacity(n),
            causation_ids: Vec::with_capacity(n),
            actors: Vec::with_capacity(n),
            recorded_ats: Vec::with_capacity(n),
            prev_hashes: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
        };
        for row in rows {
            columns.stream_ids.push(*row.stream_id.as_uuid());
            columns.versions.push(row.version);
            columns.types.push(row.event_type.as_str());
            columns.schema_versions.push(row.schema_version);
            columns.payloads.push(row.payload.to_string());
            columns.event_ids.push(row.event_id);
            columns.command_ids.push(row.command_id.as_deref());
            columns.correlation_ids.push(row.correlation_id);
            columns.causation_ids.push(row.causation_id);
            columns.actors.push(row.actor.as_str());
            columns.recorded_ats.push(row.recorded_at);
            columns.prev_hashes.push(row.prev_hash.as_str());
            columns.hashes.push(row.hash.as_str());
        }
        columns
    }

    /// Binds the thirteen arrays, in [`unnest_events`] order.
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.stream_ids)
            .bind(&self.versions)
            .bind(&self.types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.event_ids)
            .bind(&self.command_ids)
            .bind(&self.correlation_ids)
            .bind(&self.causation_ids)
            .bind(&self.actors)
            .bind(&self.recorded_ats)
            .bind(&self.prev_hashes)
            .bind(&self.hashes)
    }
}

/// The rows to be written, in batch order.
fn rows_to_write(outcomes: &[Outcome]) -> Vec<&RecordedEvent> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Write(rows) => Some(rows.iter()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Fills in the positions and transaction ids that the insert returned (`event_id`,
/// `position`, `transaction_id`). An event that did not come back is an error, unless
/// `missing_is_conflict` and none of its append's events came back: then its stream existed
/// already, and the append is a conflict.
fn place_written(
    outcomes: &mut [Outcome],
    written: &[PgRow],
    missing_is_conflict: bool,
) -> Result<(), StoreError> {
    let mut places = std::collections::HashMap::with_capacity(written.len());
    for row in written {
        let event_id: uuid::Uuid = row.try_get("event_id")?;
        let position: i64 = row.try_get("position")?;
        let transaction_id: i64 = row.try_get("transaction_id")?;
        places.insert(event_id, (position, transaction_id));
    }
    for outcome in outcomes.iter_mut() {
        let Outcome::Write(rows) = outcome else {
            continue;
        };
        if let (true, Some(first)) = (missing_is_conflict, rows.first()) {
            if !places.contains_key(&first.event_id) {
                *outcome = Outcome::Conflict(None);
                continue;
            }
        }
        for row in rows {
            let (position, transaction_id) =
                places.get(&row.event_id).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!("event {} was not written", row.event_id))
                })?;
            row.position = position;
            row.transaction_id = transaction_id;
        }
    }
    Ok(())
}

async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    outcomes: &mut [Outcome],
) -> Result<(), StoreError> {
    let rows = rows_to_write(outcomes);
    if rows.is_empty() {
        return Ok(());
    }
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO events ({EVENT_INSERT_COLUMNS}) SELECT {EVENT_INSERT_COLUMNS} FROM {} \
             ORDER BY ordinal \
             RETURNING event_id, position, transaction_id::text::bigint AS transaction_id",
            unnest_events(1)
        )
    });
    let columns = EventColumns::new(&rows);
    let written = columns.bind(sqlx::query(&SQL)).fetch_all(&mut **tx).await?;
    drop(columns);
    place_written(outcomes, &written, false)
}

/// A batch whose appends all start new streams and carry no command id (submissions without
/// an idempotency key or external id, bulk intake): one statement, run as its own
/// transaction, creates the streams, writes the events of those it created and their keys
/// and blind indexes. One round trip and one commit, where the general path takes six. An
/// append whose stream exists already is a conflict, as on the general path.
async fn try_new_streams(
    pool: &PgPool,
    appends: &[Append],
    mut outcomes: Vec<Outcome>,
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH created AS ( \
               INSERT INTO streams (stream_id, version, last_hash) \
               SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[]) ORDER BY 1 \
               ON CONFLICT (stream_id) DO NOTHING RETURNING stream_id), \
             written AS ( \
               INSERT INTO events ({EVENT_INSERT_COLUMNS}) \
               SELECT {EVENT_INSERT_COLUMNS} FROM {} \
               WHERE t.stream_id IN (SELECT stream_id FROM created) ORDER BY ordinal \
               RETURNING event_id, position, transaction_id::text::bigint AS transaction_id), \
             keys AS ( \
               INSERT INTO request_keys (request_id, wrapped_key) \
               SELECT k.request_id, k.wrapped_key \
               FROM unnest($17::uuid[], $18::text[]) AS k(request_id, wrapped_key) \
               WHERE k.request_id IN (SELECT stream_id FROM created)), \
             indexes AS ( \
               INSERT INTO subject_index (blind_index, request_id) \
               SELECT i.blind_index, i.request_id \
               FROM unnest($19::text[], $20::uuid[]) AS i(blind_index, request_id) \
               WHERE i.request_id IN (SELECT stream_id FROM created) ON CONFLICT DO NOTHING) \
             SELECT event_id, position, transaction_id FROM written",
            unnest_events(4)
        )
    });
    let new: Vec<usize> = (0..appends.len())
        .filter(|&i| !matches!(outcomes[i], Outcome::Empty))
        .collect();
    let streams = start_streams(appends, &new, &mut outcomes);
    let written = {
        let keys = KeyColumns::new(appends, &outcomes);
        let rows = rows_to_write(&outcomes);
        let columns = EventColumns::new(&rows);
        let query = sqlx::query(&SQL)
            .bind(&streams.ids)
            .bind(&streams.versions)
            .bind(&streams.hashes);
        columns
            .bind(query)
            .bind(&keys.key_ids)
            .bind(&keys.keys)
            .bind(&keys.indexes)
            .bind(&keys.index_ids)
            .fetch_all(pool)
            .await?
    };
    place_written(&mut outcomes, &written, true)?;
    let mut results = Vec::with_capacity(appends.len());
    for (append, outcome) in appends.iter().zip(outcomes) {
        results.push(match outcome {
            Outcome::Write(rows) => Ok(Appended::Written(rows)),
            Outcome::Conflict(_) => Err(StoreError::Conflict {
                stream_id: append.stream_id,
                expected: 0,
                actual: stream_version(pool, append.stream_id).await?,
            }),
            Outcome::Empty => Ok(Appended::Written(Vec::new())),
            Outcome::Duplicate(command_id) => Err(StoreError::Corrupt(format!(
                "command {command_id} in a batch of new streams without command ids"
            ))),
        });
    }
    Ok(results)
}

/// The `streams` rows of new streams, as the arrays `unnest` takes.
struct StreamColumns {
    ids: Vec<uuid::Uuid>,
    versions: Vec<i64>,
    hashes: Vec<String>,
}

/// Chains the events of the appends at `which` from the genesis hash (each becomes
/// `Outcome::Write`) and returns their streams' rows.
fn start_streams(appends: &[Append], which: &[usize], outcomes: &mut [Outcome]) -> StreamColumns {
    let mut streams = StreamColumns {
        ids: Vec::with_capacity(which.len()),
        versions: Vec::with_capacity(which.len()),
        hashes: Vec::with_capacity(which.len()),
    };
    for &i in which {
        let a = &appends[i];
        let rows = prepare_rows(a.stream_id, 0, GENESIS_HASH, &a.events, &a.metadata);
        streams.ids.push(*a.stream_id.as_uuid());
        streams.versions.push(count(&a.events));
        streams
            .hashes
            .push(rows.last().map(|r| r.hash.clone()).unwrap_or_default());
        outcomes[i] = Outcome::Write(rows);
    }
    streams
}

/// The data keys and blind indexes of the appends being written, as the arrays `unnest` takes.
struct KeyColumns<'a> {
    key_ids: Vec<uuid::Uuid>,
    keys: Vec<&'a str>,
    index_ids: Vec<uuid::Uuid>,
    indexes: Vec<&'a str>,
}

impl<'a> KeyColumns<'a> {
    fn new(appends: &'a [Append], outcomes: &[Outcome]) -> Self {
        let mut columns = Self {
            key_ids: Vec::new(),
            keys: Vec::new(),
            index_ids: Vec::new(),
            indexes: Vec::new(),
        };
        for (append, outcome) in appends.iter().zip(outcomes) {
            if let (Some(key), Outcome::Write(_)) = (&append.key, outcome) {
                columns.key_ids.push(*append.stream_id.as_uuid());
                columns.keys.push(key.wrapped_key.as_str());
                for index in &key.indexes {
                    columns.index_ids.push(*append.stream_id.as_uuid());
                    columns.indexes.push(index.as_str());
                }
            }
        }
        columns
    }
}

async fn insert_keys(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    appends: &[Append],
    outcomes: &[Outcome],
) -> Result<(), StoreError> {
    let KeyColumns {
        key_ids,
        keys,
        index_ids,
        indexes,
    } = KeyColumns::new(appends, outcomes);
    if !key_ids.is_empty() {
        sqlx::query(
            "INSERT INTO request_keys (request_id, wrapped_key) \
             SELECT * FROM unnest($1::uuid[], $2::text[])",
        )
        .bind(&key_ids)
        .bind(&keys)
        .execute(&mut **tx)
        .await?;
    }
    if !index_ids.is_empty() {
        sqlx::query(
            "INSERT INTO subject_index (blind_index, request_id) \
             SELECT * FROM unnest($1::text[], $2::uuid[]) ON CONFLICT DO NOTHING",
        )
        .bind(&indexes)
        .bind(&index_ids)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn find_command(
    pool: &PgPool,
    command_id: &str,
) -> Result<Option<CommandRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT command_id, stream_id, first_version, last_version FROM commands \
         WHERE command_id = $1",
    )
    .bind(command_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(decode_command).transpose()
}

async fn stream_version(pool: &PgPool, stream_id: RequestId) -> Result<i64, StoreError> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM streams WHERE stream_id = $1")
            .bind(stream_id.as_uuid())
            .fetch_optional(pool)
            .await?;
    Ok(version.unwrap_or(0))
}
