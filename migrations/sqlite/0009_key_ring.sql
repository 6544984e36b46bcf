-- The master keys' check values, their wraps during a rotation and the digests of cancel
-- tokens issued under a retired key (see migrations/postgres/0009_key_ring.sql).
CREATE TABLE master_keys (
    fingerprint  TEXT PRIMARY KEY,
    check_value  TEXT NOT NULL,
    retiring     INTEGER NOT NULL DEFAULT 0,
    added_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE master_key_wraps (
    fingerprint  TEXT NOT NULL REFERENCES master_keys ON DELETE CASCADE,
    wrapped_by   TEXT NOT NULL REFERENCES master_keys ON DELETE CASCADE,
    wrapped_key  TEXT NOT NULL,
    PRIMARY KEY (fingerprint, wrapped_by)
);

CREATE TABLE previous_cancel_tokens (
    request_id  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    PRIMARY KEY (request_id, digest)
);
