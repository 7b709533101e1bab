-- A job's row changes twice after ingest writes it (claimed, then its outcome). With an index
-- on a column those updates change (status, updated_at, finished_at), every change wrote a
-- new entry into each of the table's indexes: 21 index entries per job, most of
-- PostgreSQL's work per job in `just bench`. Without such an index, and with room left in
-- each page for the new versions, PostgreSQL updates the row in place (a HOT update: no
-- index entry at all).
--
-- `jobs_status_updated` and `jobs_integration_finished` served no query (the API and the
-- dashboard list jobs by `created_at`; the integration figures filter by `created_at`).
-- Cancelling a sync run finds its jobs by run; the status is a filter on those few rows.
DROP INDEX IF EXISTS jobs_status_updated;
DROP INDEX IF EXISTS jobs_integration_finished;
DROP INDEX IF EXISTS jobs_sync_run;
CREATE INDEX jobs_sync_run ON jobs (sync_run_id) WHERE sync_run_id IS NOT NULL;
-- New pages keep a quarter free for the updated versions (pruned once no one sees them).
ALTER TABLE jobs SET (fillfactor = 75);
