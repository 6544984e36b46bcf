-- The `cleaner` filter of the request list (see migrations/postgres/0012_unfinished_cleaners.sql).
CREATE TABLE unfinished_cleaners (
    cleaner     TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    PRIMARY KEY (cleaner, request_id)
);
CREATE INDEX unfinished_cleaners_by_request ON unfinished_cleaners (request_id);
INSERT INTO unfinished_cleaners (cleaner, request_id)
SELECT DISTINCT json_extract(c.value, '$.name'), p.request_id
FROM requests_projection p, json_each(p.row_data, '$.cleaners') c
WHERE json_extract(c.value, '$.status') IN ('pending', 'exhausted');
