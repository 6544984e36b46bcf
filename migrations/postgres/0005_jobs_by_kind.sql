-- Workers claim jobs of some kinds in run_at order. With only an index on run_at, a claim for
-- timer kinds walked past every ready cleaner dispatch (thousands during a large fan-out).
CREATE INDEX jobs_by_kind_run_at ON jobs (kind, run_at);
