-- Read models, rebuilt from the log at will (`lethe projections rebuild`). No personal data.

CREATE TABLE request_view (
    request_id    UUID PRIMARY KEY,
    status        TEXT NOT NULL,
    jurisdiction  TEXT NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL,
    deadline      DATE NOT NULL,
    closed_at     TIMESTAMPTZ,
    row_data      JSONB NOT NULL
);

CREATE INDEX request_view_by_status ON request_view (status, request_id);
CREATE INDEX request_view_open_by_deadline ON request_view (deadline) WHERE closed_at IS NULL;
