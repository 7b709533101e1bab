-- The claim looks leases up by their key, whatever the leases table holds.
--
-- Every job adds a lease and its outcome deletes it, so between two vacuums (autovacuum
-- looks once a minute) `job_leases` holds mostly dead rows, and its pages grow with the jobs
-- done since the last vacuum. The claim's plan is made once per connection (migration
-- 0020), while the table is small; it scanned every page of the table in each of its two
-- look-ups of leases, on every call (in `just bench`'s processing phase the table grew to a
-- hundred pages between vacuums). Without sequential scans for the function, each look-up
-- goes through the primary key, as every other look-up of the claim does through its
-- table's index once the table has statistics (the worker analyses its young tables).
ALTER FUNCTION claim_jobs(uuid[], text[], text[], uuid[], uuid[], text[], text[], text[],
    text[], text[], text[], bigint[], timestamptz[], uuid[], uuid[], text[], float8,
    bigint[], uuid[], boolean[])
    SET enable_seqscan = off;
