-- Leases on the locks a job holds across its provider calls. A worker claims a job under a
-- transaction-scoped advisory lock, then records a lease here and commits before it calls the
-- provider, so no database connection waits on a provider; a job that finds another job's live
-- lease on its lock is put back for a moment. The job's outcome deletes its leases in the same
-- transaction. A lease outlives a crashed worker only until `until`.
-- Unlogged: leases are short-lived; after a database crash (not a clean restart) they are gone,
-- and so are the connections of every job that held one.
CREATE UNLOGGED TABLE job_leases (
    lock_key bigint PRIMARY KEY,
    job_id uuid NOT NULL,
    -- The copy of the job's message that holds it (the `sy-copy` header): another copy of
    -- the same job (published twice) waits; the same copy redelivered after a crash takes
    -- the lease over.
    copy_id text NOT NULL DEFAULT '',
    until timestamptz NOT NULL
);
