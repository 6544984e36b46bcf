-- Crypto-shredding (see migrations/postgres for the commented original).

CREATE TABLE request_keys (
    request_id   TEXT PRIMARY KEY,
    wrapped_key  TEXT NOT NULL,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE subject_index (
    blind_index  TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    PRIMARY KEY (blind_index, request_id)
);

CREATE INDEX subject_index_by_request ON subject_index (request_id);
