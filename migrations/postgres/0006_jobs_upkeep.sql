-- The jobs table is a queue: rows are inserted, leased (an UPDATE of lease_owner and
-- lease_until, columns no index holds) and deleted within seconds. With free room in each page
-- a lease is a HOT update: no new entry in any of the table's indexes, and the dead versions
-- are pruned within the page when it is next read, without waiting for VACUUM.
ALTER TABLE jobs SET (fillfactor = 70);

-- Unused since 0005: every claim reads jobs through (kind, run_at), and nothing else orders
-- or filters jobs by run_at alone. Each insert and each non-HOT update paid for it.
DROP INDEX IF EXISTS jobs_by_run_at;
