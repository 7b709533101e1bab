-- A job's attempt row is written with one index entry, not two, and without a key check.
--
-- Every job that reaches its provider writes an attempt row. Its key to `jobs` was checked
-- on each insert: a query of its own per row, and a row lock on the job's row (its
-- `FOR KEY SHARE`), written to the WAL. What the key guarded cannot happen: job rows are
-- never deleted (an operator's purge of a dead letter marks its job's row), and attempts
-- are written only for jobs whose rows exist: a job a worker claimed (the claim writes its
-- row) and an operation's call (`Store::begin_call` writes its row first).
--
-- The primary key on the attempt's own id served no query: attempts are read by job, in
-- order (`Store::job_attempts`, and the next attempt's number for an operation's calls).
-- One index on (job, id) serves those reads and stays the table's key; the id keeps the
-- order of attempts that share a number.
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_job_id_fkey;
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_pkey;
DROP INDEX job_attempts_job;
ALTER TABLE job_attempts ADD PRIMARY KEY (job_id, id);
