-- Two checks every event insert paid for and nothing needs (ADR 11; see
-- migrations/postgres/0007_events_fewer_checks.sql): the uniqueness of `event_id`, which is
-- never looked up, and the foreign key to `streams`, whose head every append writes before
-- its events. SQLite cannot drop a column constraint, so the table is rebuilt once, keeping
-- every row and its position (and so the AUTOINCREMENT sequence).
CREATE TABLE events_rebuilt (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT NOT NULL,
    version         INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    command_id      TEXT,
    correlation_id  TEXT NOT NULL,
    causation_id    TEXT,
    actor           TEXT NOT NULL,
    recorded_at     TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL,
    UNIQUE (stream_id, version)
);

INSERT INTO events_rebuilt
    (position, stream_id, version, event_type, schema_version, payload, event_id, command_id,
     correlation_id, causation_id, actor, recorded_at, prev_hash, hash)
SELECT position, stream_id, version, event_type, schema_version, payload, event_id, command_id,
       correlation_id, causation_id, actor, recorded_at, prev_hash, hash
FROM events ORDER BY position;

-- The next position continues from the old table's sequence, not only from its last row.
DELETE FROM sqlite_sequence WHERE name = 'events_rebuilt';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_rebuilt', seq FROM sqlite_sequence WHERE name = 'events';

DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;
