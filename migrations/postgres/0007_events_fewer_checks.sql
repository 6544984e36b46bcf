-- Two checks every event insert paid for and nothing needs (ADR 11):
--
-- - `event_id` is never looked up. Ids are UUIDv7 made by the appending process (a
--   millisecond time, 74 random bits); the unique index cost an index entry and a uniqueness
--   probe per event.
-- - The foreign key to `streams` ran a trigger per event row that looked the stream up and
--   locked its row FOR KEY SHARE. Every append writes the stream's head (insert or checked
--   update) in the same statement or transaction before its events, under a lock on that
--   row, so an event without its stream cannot be written by Lethe; `lethe verify` checks
--   each stream's chain against its head.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_event_id_key;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_stream_id_fkey;
