-- The workflow's durable state: subscription checkpoints with their owner's lease, and the jobs
-- (timers and cleaner dispatches) that the saga derives from the log.

CREATE TABLE subscriptions (
    name                       TEXT PRIMARY KEY,
    checkpoint_transaction_id  BIGINT NOT NULL DEFAULT 0,
    checkpoint_position        BIGINT NOT NULL DEFAULT 0,
    owner                      TEXT,
    lease_until                TIMESTAMPTZ,
    updated_at                 TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- kind: remind (key = reminder index), due, notify (key = reminder index),
-- dispatch (key = cleaner, attempt = the cleaner attempt to make),
-- callback (key = cleaner, attempt = the attempt awaiting its result).
CREATE TABLE jobs (
    request_id   UUID NOT NULL,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    run_at       TIMESTAMPTZ NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  TIMESTAMPTZ,
    PRIMARY KEY (request_id, kind, key)
);

CREATE INDEX jobs_by_run_at ON jobs (run_at);
