-- A job row's foreign keys to its integrations and its sync run are dropped.
--
-- Each key was checked on every insert of a job row (ingest's queued rows, the worker's
-- claim when it finds no row): an index look-up, and a FOR KEY SHARE lock on the
-- referenced row. Every job of one integration locks that same row, so concurrent inserts
-- share its lock through a multixact. In `just bench`'s profile of ingest at 1,000
-- webhooks/s the two integration keys' checks were a tenth of PostgreSQL's work per
-- webhook. And a transaction that held the integration's row (`SELECT … FOR UPDATE`)
-- held every webhook for it until it ended.
--
-- What the keys guarded cannot happen: integrations and sync runs are never deleted
-- (an integration is marked deleted and keeps its row), and job rows are written only with
-- the ids of a route's integrations, or a run's. `record_links` went without its key to
-- `records` for the same reason (migration 0008). `job_attempts` keeps its key to `jobs`:
-- its check locks the job's own row, which the same statement has already locked.
ALTER TABLE jobs DROP CONSTRAINT jobs_integration_id_fkey;
ALTER TABLE jobs DROP CONSTRAINT jobs_source_integration_id_fkey;
ALTER TABLE jobs DROP CONSTRAINT jobs_sync_run_id_fkey;
