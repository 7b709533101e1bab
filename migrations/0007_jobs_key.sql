-- A job's id is derived from its idempotency key (UUIDv8 of its SHA-256), so the primary key
-- already makes the key unique. The second unique index made ON CONFLICT (id) incomplete: a
-- worker claiming a job while ingest inserted its row could hit the key's index instead of
-- the id's and fail with a unique violation (the job then waited 5 s for a retry; found by
-- `just bench`). It also cost an index entry per job.
ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
