-- One name for the read model everywhere (ADR 24): it is a projection, in the crate
-- (`projections/`), the engine's module (`engine/src/projections`), the command line
-- (`lethe projections rebuild`) and here. The `requests` projection's table was `request_view`.
-- Renaming moves no row: the table, its indexes and its primary key keep their data.
ALTER TABLE request_view RENAME TO requests_projection;
ALTER TABLE requests_projection RENAME CONSTRAINT request_view_pkey TO requests_projection_pkey;
ALTER INDEX request_view_by_status RENAME TO requests_projection_by_status;
ALTER INDEX request_view_open_by_deadline RENAME TO requests_projection_open_by_deadline;
