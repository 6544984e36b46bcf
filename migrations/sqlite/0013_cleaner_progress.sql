-- Progress of long erasures (ADR 36): a cleaner whose attempt is awaited (it answered 202, or
-- was told over Kafka) may report how far it has come. The latest report is kept on the
-- attempt's callback job, whose run_at (the deadline) each report moves; it is not an event.
ALTER TABLE jobs ADD COLUMN progress_done INTEGER;
ALTER TABLE jobs ADD COLUMN progress_total INTEGER;
ALTER TABLE jobs ADD COLUMN progress_at TEXT;
