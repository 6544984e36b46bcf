-- Nothing to do on SQLite: this number is Postgres' `0006_jobs_upkeep.sql` (free room in each
-- page of `jobs`, and dropping its index on `run_at` alone), kept here so that one change has
-- one number on both backends (ADR 23). SQLite has no fillfactor, and its index on `run_at` is
-- left as it was: dropping it would change SQLite's query plans, which is a change of its own.
SELECT 1;
