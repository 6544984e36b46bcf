-- Figures kept as counters beside the rows (ADR 37): `request_tallies` holds, per figure, key
-- and bucket, a count and a sum (requests by status, cleaner outcomes and durations, completion
-- times by month, the annual report's classes and days to respond), moved by the `requests`
-- projection's subscription in the transaction that writes the rows, emptied on a rebuild.
-- Its figures are computed in Rust, so this migration leaves a mark in `projection_backfills`
-- and the first start after it (`Database::open` with migrations) fills the counters from the
-- rows already projected, in one transaction, holding off the projection meanwhile.
-- The open requests' deadline index now also orders the most urgent ones (deadline, receipt,
-- id) for the dashboard; the jurisdiction filter gets an index of its own.
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
