-- The master keys this database's data is sealed under, known by their key check values
-- (HMAC-SHA256 of a fixed label under the key), never the keys themselves (ADR 15). One row;
-- two during a rotation, the old one `retiring`. A process whose key matches no row is
-- refused at start, naming both fingerprints.
CREATE TABLE master_keys (
    fingerprint  TEXT PRIMARY KEY,
    check_value  TEXT NOT NULL,
    retiring     BOOLEAN NOT NULL DEFAULT false,
    added_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- During a rotation, each key wrapped (AES-256-GCM) under the other, so that a process holding
-- either one learns the other from here. Deleted when the rotation finishes.
CREATE TABLE master_key_wraps (
    fingerprint  TEXT NOT NULL REFERENCES master_keys ON DELETE CASCADE,
    wrapped_by   TEXT NOT NULL REFERENCES master_keys ON DELETE CASCADE,
    wrapped_key  TEXT NOT NULL,
    PRIMARY KEY (fingerprint, wrapped_by)
);

-- Cancel tokens issued under a key since retired, as SHA-256 digests, for requests that were
-- still in their grace period when it was retired. Deleted with the request's data key.
CREATE TABLE previous_cancel_tokens (
    request_id  UUID NOT NULL,
    digest      TEXT NOT NULL,
    PRIMARY KEY (request_id, digest)
);
