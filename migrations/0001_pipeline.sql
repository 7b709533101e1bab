-- Switchyard's pipeline: integrations, routes, jobs, attempts and id mappings.

CREATE TABLE integrations (
    id                  uuid PRIMARY KEY,
    tenant              text NOT NULL,
    name                text NOT NULL,
    provider            text NOT NULL,
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'inactive', 'error', 'testing')),
    direction           text NOT NULL DEFAULT 'export'
                        CHECK (direction IN ('export', 'import', 'bidirectional')),
    entities            text[] NOT NULL DEFAULT '{}',
    -- The provider's connector manifest (base URL, endpoints, field mapping, …).
    settings            jsonb NOT NULL DEFAULT '{}',
    -- How this integration's webhooks are read (core::inbound::InboundSpec).
    inbound             jsonb NOT NULL DEFAULT '{}',
    -- How its webhooks are authenticated, e.g. {"scheme":"api_key","key_sha256":"…"}.
    -- Holds digests, never a secret that could be replayed.
    webhook_auth        jsonb NOT NULL DEFAULT '{"scheme":"none"}',
    -- AES-256-GCM ciphertext of the credentials (JSON object) and the key that sealed it.
    credentials         bytea,
    credentials_key_id  text,
    schedule            jsonb,
    next_sync_at        timestamptz,
    last_sync_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CHECK ((credentials IS NULL) = (credentials_key_id IS NULL))
);
CREATE UNIQUE INDEX integrations_tenant_name ON integrations (tenant, name) WHERE deleted_at IS NULL;

-- What an event sets in motion: from (source integration, entity, event) to targets.
CREATE TABLE routes (
    id                      uuid PRIMARY KEY,
    source_integration_id   uuid NOT NULL REFERENCES integrations (id),
    entity                  text NOT NULL,
    event                   text NOT NULL DEFAULT '*',
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_integration_id, entity, event)
);

CREATE TABLE route_targets (
    route_id                uuid NOT NULL REFERENCES routes (id) ON DELETE CASCADE,
    target_integration_id   uuid NOT NULL REFERENCES integrations (id),
    PRIMARY KEY (route_id, target_integration_id)
);

-- One row per idempotency key (event id, target, action).
CREATE TABLE jobs (
    id                      uuid PRIMARY KEY,
    idempotency_key         text NOT NULL UNIQUE,
    tenant                  text NOT NULL,
    integration_id          uuid NOT NULL REFERENCES integrations (id),
    source_integration_id   uuid REFERENCES integrations (id),
    provider                text NOT NULL,
    entity                  text NOT NULL,
    action                  text NOT NULL,
    event                   text NOT NULL,
    event_id                text NOT NULL,
    internal_id             text NOT NULL,
    source_version          bigint,
    status                  text NOT NULL DEFAULT 'queued'
                            CHECK (status IN ('queued', 'running', 'retrying', 'succeeded',
                                              'stale', 'ignored', 'dead')),
    attempts                integer NOT NULL DEFAULT 0,
    duplicates              integer NOT NULL DEFAULT 0,
    external_id             text,
    dead_reason             text,
    last_error_class        text,
    last_error              text,
    received_at             timestamptz NOT NULL,
    started_at              timestamptz,
    finished_at             timestamptz,
    duration_ms             integer,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_integration_created ON jobs (integration_id, created_at DESC);
CREATE INDEX jobs_status_updated ON jobs (status, updated_at) WHERE status NOT IN ('succeeded', 'stale', 'ignored');

CREATE TABLE job_attempts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt         integer NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     integer NOT NULL,
    outcome         text NOT NULL,
    status_code     integer,
    error_class     text,
    error           text,
    request         text,
    response        text
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, attempt);

-- Internal id <-> external id, per target integration and entity, unique both ways.
CREATE TABLE id_mappings (
    integration_id          uuid NOT NULL REFERENCES integrations (id),
    entity                  text NOT NULL,
    internal_id             text NOT NULL,
    external_id             text NOT NULL,
    last_source_version     bigint,
    last_job_id             uuid,
    metadata                jsonb NOT NULL DEFAULT '{}',
    created_at              timestamptz NOT NULL DEFAULT now(),
    last_synced_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration_id, entity, internal_id),
    UNIQUE (integration_id, entity, external_id)
);
