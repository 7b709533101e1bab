-- Long operations (dead-letter replays and purges) run in the background: the request that
-- starts one is answered at once with its id, and its progress and result are read here.
CREATE TABLE operations (
    id          uuid PRIMARY KEY,
    -- The tenant a tenant's key started it for; NULL for the admin's.
    tenant      text,
    kind        text NOT NULL,
    actor       text NOT NULL,
    -- What was asked (filter, limit, rate), never a secret.
    request     jsonb NOT NULL,
    -- running, succeeded, partial (some could not be done) or failed.
    status      text NOT NULL DEFAULT 'running',
    matched     bigint NOT NULL DEFAULT 0,
    done        bigint NOT NULL DEFAULT 0,
    result      jsonb,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Moves while it runs: one that stopped moving was interrupted.
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX operations_by_tenant ON operations (tenant, created_at DESC);
