-- Nothing to do on SQLite: this number is Postgres' `0008_json_as_text.sql` (an event's
-- `payload` and a row's `row_data` from `jsonb` to `text`), kept here so that one change has one
-- number on both backends (ADR 23). On SQLite both columns were `TEXT` from the start.
SELECT 1;
