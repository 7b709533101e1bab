-- Dead letters kept in Postgres, each tenant's apart. Workers move every message that reaches
-- a provider's dead-letter queue (`sy.dlq.{provider}`) into this table and then acknowledge
-- it, so the queue is only the way in. Listing, replaying and purging read this table with a
-- tenant's filter and an index, instead of draining a queue that holds every tenant's dead
-- letters (a tenant's scan read the others', and could not see past the first 10,000).
CREATE TABLE dead_letters (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider       text NOT NULL,
    -- The message id (a job's id); a message without one gets a fresh id.
    message_id     text NOT NULL,
    job_id         uuid,
    -- NULL when the body is not an envelope (reason `malformed`): only the admin sees those.
    tenant         text,
    integration_id uuid,
    entity         text,
    internal_id    text,
    reason         text NOT NULL,
    error_class    text,
    error          text,
    attempts       text,
    first_received text,
    replays        text,
    dead_at        timestamptz NOT NULL,
    routing_key    text NOT NULL,
    headers        jsonb NOT NULL,
    body           bytea NOT NULL,
    kept_at        timestamptz NOT NULL DEFAULT now()
);
-- One dead letter per message: the same message dead again (after a replay) replaces it, and a
-- dead letter redelivered to the keeper (it stopped before its ack) is stored once.
CREATE UNIQUE INDEX dead_letters_message ON dead_letters (provider, message_id);
CREATE INDEX dead_letters_tenant ON dead_letters (tenant, dead_at, id);
CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at, id);
CREATE INDEX dead_letters_job ON dead_letters (job_id);
