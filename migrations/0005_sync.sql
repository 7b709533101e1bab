-- Batch syncs: sync runs, the jobs they enqueue, and integration events (auto-disable).

CREATE TABLE sync_runs (
    id                  uuid PRIMARY KEY,
    integration_id      uuid NOT NULL REFERENCES integrations (id),
    tenant              text NOT NULL,
    trigger             text NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    -- The schedule slot this run is for; one run per slot, whatever the number of schedulers.
    slot                timestamptz,
    -- Who started it: the scheduler's instance id, or the operator.
    started_by          text NOT NULL,
    direction           text NOT NULL CHECK (direction IN ('export', 'import', 'bidirectional')),
    entities            text[] NOT NULL,
    -- Records changed after watermark_from and up to watermark_to (NULL from: everything).
    watermark_from      timestamptz,
    watermark_to        timestamptz NOT NULL,
    -- What the pager reads, in order: [{source, source_name, entity, targets}], and where it is.
    plan                jsonb NOT NULL DEFAULT '[]',
    feed                integer NOT NULL DEFAULT 0,
    cursor              text,
    pages               integer NOT NULL DEFAULT 0,
    paging_done         boolean NOT NULL DEFAULT false,
    -- When the pager last moved (a running run that stops moving has lost its page message).
    paged_at            timestamptz,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    -- Jobs enqueued, and how those that have finished ended.
    total               integer NOT NULL DEFAULT 0,
    processed           integer NOT NULL DEFAULT 0,
    created             integer NOT NULL DEFAULT 0,
    updated             integer NOT NULL DEFAULT 0,
    failed              integer NOT NULL DEFAULT 0,
    skipped             integer NOT NULL DEFAULT 0,
    error               text,
    cancelled_by        text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz
);
CREATE UNIQUE INDEX sync_runs_slot ON sync_runs (integration_id, slot) WHERE slot IS NOT NULL;
CREATE INDEX sync_runs_integration ON sync_runs (integration_id, created_at DESC);
CREATE INDEX sync_runs_open ON sync_runs (status) WHERE status IN ('pending', 'running');

ALTER TABLE jobs ADD COLUMN sync_run_id uuid REFERENCES sync_runs (id);
-- Set once the job's first final outcome is in its run's counts (so none counts twice).
ALTER TABLE jobs ADD COLUMN run_counted boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_sync_run ON jobs (sync_run_id, status) WHERE sync_run_id IS NOT NULL;
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'retrying', 'succeeded', 'stale', 'ignored',
                      'skipped', 'dead'));

ALTER TABLE integrations ADD COLUMN sync_failures integer NOT NULL DEFAULT 0;

-- What happened to an integration that an operator should hear of.
CREATE TABLE integration_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    integration_id  uuid NOT NULL REFERENCES integrations (id),
    kind            text NOT NULL,
    message         text NOT NULL,
    sync_run_id     uuid REFERENCES sync_runs (id),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX integration_events_integration ON integration_events (integration_id, id DESC);
