-- Figures kept as counters beside the rows, and indexes for every list filter (ADR 37; see
-- migrations/postgres/0014_request_tallies.sql).
CREATE TABLE request_tallies (
    figure  TEXT NOT NULL,
    key     TEXT NOT NULL,
    bucket  BIGINT NOT NULL,
    count   BIGINT NOT NULL,
    total   BIGINT NOT NULL,
    PRIMARY KEY (figure, key, bucket)
);
CREATE TABLE projection_backfills (
    name  TEXT PRIMARY KEY
);
INSERT INTO projection_backfills (name) VALUES ('request_tallies');
DROP INDEX requests_projection_open_by_deadline;
CREATE INDEX requests_projection_open_by_deadline
    ON requests_projection (deadline, received_at, request_id) WHERE closed_at IS NULL;
CREATE INDEX requests_projection_by_jurisdiction ON requests_projection (jurisdiction, request_id);
