-- Suppression after erasure (ADR 33): the `Suppressed` entries of completed requests, folded by
-- the `requests` projection's subscription, one row per identifier's keyed hash
-- (`FINGERPRINT:HMAC`, never the identifier) and request. `suppressions:check` looks a subject's
-- hashes up by the primary key; expiry is evaluated when asked, from `expires_at`. A lifted
-- suppression's rows are deleted (the `SuppressionLifted` event stays in the history).
CREATE TABLE suppressions (
    hash           TEXT NOT NULL,
    request_id     UUID NOT NULL,
    suppressed_at  TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ,
    PRIMARY KEY (hash, request_id)
);
CREATE INDEX suppressions_by_request ON suppressions (request_id);
