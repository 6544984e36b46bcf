-- The event log (see migrations/postgres for the commented original). SQLite has one writer at
-- a time, so position order is commit order and no transaction id is needed.

CREATE TABLE streams (
    stream_id   TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    last_hash   TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT NOT NULL REFERENCES streams (stream_id),
    version         INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    event_id        TEXT NOT NULL UNIQUE,
    command_id      TEXT,
    correlation_id  TEXT NOT NULL,
    causation_id    TEXT,
    actor           TEXT NOT NULL,
    recorded_at     TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE TABLE commands (
    command_id     TEXT PRIMARY KEY,
    stream_id      TEXT NOT NULL,
    first_version  INTEGER NOT NULL,
    last_version   INTEGER NOT NULL,
    recorded_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
