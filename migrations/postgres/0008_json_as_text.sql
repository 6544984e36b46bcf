-- JSON that Postgres never looks inside is kept as the text Lethe writes, not as `jsonb`
-- (ADR 12): an event's `payload` and the read model's `row_data`.
--
-- No statement reads into either column: every filter and order uses the plain columns beside
-- them, and both are always read whole and decoded by Lethe (an event's hash is computed over
-- its decoded payload, so the stored spelling does not matter). As `jsonb`, each write parsed
-- the text into Postgres' binary form and each read printed it back: measured on a 2-core
-- machine, about 15 microseconds to parse a 565-byte `Received` payload and 5 to print it, and
-- 58 to parse a read model row with five cleaners (of 95 per upserted row in all).
--
-- Each conversion rewrites its table once, under an exclusive lock; on a large log this is
-- the one slow step of the upgrade (docs/OPERATIONS.md).
ALTER TABLE events ALTER COLUMN payload TYPE TEXT;
ALTER TABLE request_view ALTER COLUMN row_data TYPE TEXT;
