-- One name for the read model everywhere (ADR 24; see migrations/postgres/0010_projection_names.sql):
-- the `requests` projection's table was `request_view`. SQLite renames a table in place but
-- cannot rename an index, so the two indexes are made again under their new names (one row per
-- request: quick).
ALTER TABLE request_view RENAME TO requests_projection;
DROP INDEX request_view_by_status;
CREATE INDEX requests_projection_by_status ON requests_projection (status, request_id);
DROP INDEX request_view_open_by_deadline;
CREATE INDEX requests_projection_open_by_deadline ON requests_projection (deadline) WHERE closed_at IS NULL;
