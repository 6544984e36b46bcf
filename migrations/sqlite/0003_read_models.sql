-- Read models (see migrations/postgres for the commented original).

CREATE TABLE request_view (
    request_id    TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    jurisdiction  TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    deadline      TEXT NOT NULL,
    closed_at     TEXT,
    row_data      TEXT NOT NULL
);

CREATE INDEX request_view_by_status ON request_view (status, request_id);
CREATE INDEX request_view_open_by_deadline ON request_view (deadline) WHERE closed_at IS NULL;
