-- The event log. One row per event; `streams` holds each stream's head so that appends check
-- the expected version under a row lock, and `lethe verify` can detect a truncated chain.

CREATE TABLE streams (
    stream_id   UUID PRIMARY KEY,
    version     BIGINT NOT NULL,
    last_hash   TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction: global readers read only below the oldest transaction still
    -- running, ordered by (transaction_id, position), so a late commit is never skipped.
    transaction_id  XID8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       UUID NOT NULL REFERENCES streams (stream_id),
    version         BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         JSONB NOT NULL,
    event_id        UUID NOT NULL UNIQUE,
    command_id      TEXT,
    correlation_id  UUID NOT NULL,
    causation_id    UUID,
    actor           TEXT NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL,
    UNIQUE (stream_id, version)
);

CREATE INDEX events_global_order ON events (transaction_id, position);

-- Idempotent commands: a command id seen before returns the first result.
CREATE TABLE commands (
    command_id     TEXT PRIMARY KEY,
    stream_id      UUID NOT NULL,
    first_version  BIGINT NOT NULL,
    last_version   BIGINT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
