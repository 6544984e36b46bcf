-- The workflow's durable state (see migrations/postgres for the commented original).
-- Times are RFC 3339 UTC text with microseconds, which sorts like the instant it names.

CREATE TABLE subscriptions (
    name                       TEXT PRIMARY KEY,
    checkpoint_transaction_id  INTEGER NOT NULL DEFAULT 0,
    checkpoint_position        INTEGER NOT NULL DEFAULT 0,
    owner                      TEXT,
    lease_until                TEXT,
    updated_at                 TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE jobs (
    request_id   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    run_at       TEXT NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  TEXT,
    PRIMARY KEY (request_id, kind, key)
);

CREATE INDEX jobs_by_run_at ON jobs (run_at);
