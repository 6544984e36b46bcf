-- The `cleaner` filter of the request list (`GET /v1/requests?cleaner=NAME`): one row per
-- planned cleaner of a request that has neither succeeded nor been skipped (pending, failing,
-- or out of attempts), kept by the `requests` projection's subscription in the transaction
-- that writes the request's row, and emptied with it on a rebuild. The primary key serves the
-- list in order of receipt for one cleaner; the second index, the row's replacement.
-- Filled here from the rows already projected (their `cleaners` in `row_data`).
CREATE TABLE unfinished_cleaners (
    cleaner     TEXT NOT NULL,
    request_id  UUID NOT NULL,
    PRIMARY KEY (cleaner, request_id)
);
CREATE INDEX unfinished_cleaners_by_request ON unfinished_cleaners (request_id);
INSERT INTO unfinished_cleaners (cleaner, request_id)
SELECT DISTINCT c ->> 'name', p.request_id
FROM requests_projection p, jsonb_array_elements(p.row_data::jsonb -> 'cleaners') c
WHERE c ->> 'status' IN ('pending', 'exhausted');
