-- Suppression after erasure (ADR 33; see migrations/postgres/0011_suppressions.sql).
CREATE TABLE suppressions (
    hash           TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    suppressed_at  TEXT NOT NULL,
    expires_at     TEXT,
    PRIMARY KEY (hash, request_id)
);
CREATE INDEX suppressions_by_request ON suppressions (request_id);
