-- Crypto-shredding: each request's data key, wrapped by the master key, and the keyed blind
-- index of its subject's identifiers. Shredding deletes both rows.

CREATE TABLE request_keys (
    request_id   UUID PRIMARY KEY,
    wrapped_key  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE subject_index (
    blind_index  TEXT NOT NULL,
    request_id   UUID NOT NULL,
    PRIMARY KEY (blind_index, request_id)
);

CREATE INDEX subject_index_by_request ON subject_index (request_id);
