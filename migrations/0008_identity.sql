-- The identity model. Within a tenant and entity, one record is known by an id in each
-- system it has reached: (integration, entity, id) ↔ record, unique both ways while live.
-- An event from source S about its id X finds or creates the record for (S, X); a target's
-- external id is that record's id in the target. Two sources with the same local id are two
-- records. The link that created a record is its origin. Events without a source (none
-- today but old messages) use the nil integration: the tenant's own ids.

CREATE TABLE records (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    entity      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Deleted everywhere it was: a later event with the same source id is a new record.
    deleted_at  timestamptz
);

CREATE TABLE record_links (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign key: a record and its first link are written by one statement
    -- (`Store::ensure_record`), and the key check cost a row lock on `records` per link.
    record_id           uuid NOT NULL,
    tenant              text NOT NULL,
    integration_id      uuid NOT NULL,
    entity              text NOT NULL,
    external_id         text NOT NULL,
    -- The link that created the record (the system it was first seen in).
    origin              boolean NOT NULL DEFAULT false,
    -- As a target: the source version last applied here, by which job, when.
    last_source_version bigint,
    last_job_id         uuid,
    -- What the hub last wrote here: when, the version the system reported for that write
    -- (its response, at the manifest's `version_pointer`), and when the change it carried
    -- was received. An event from this system at or below `written_version` is the echo of
    -- the hub's own write.
    written_at          timestamptz,
    written_version     bigint,
    written_change_at   timestamptz,
    -- As a source: its own last change the hub has applied (not an echo): when it was
    -- received and its version. An event below `changed_version` is stale.
    changed_at          timestamptz,
    changed_version     bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_synced_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz
);
-- Led by the external id (see 0006).
CREATE UNIQUE INDEX record_links_system_id ON record_links (external_id, integration_id, entity, tenant)
    WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX record_links_record ON record_links (record_id, integration_id)
    WHERE deleted_at IS NULL;
-- No index leads with the integration: with statistics taken while the table was small, the
-- planner chose one for the worker's look-ups and filtered every link of the integration
-- (14 ms of database CPU per job at 20,000 records, found by `just bench`). Every index
-- here leads with a column that names one record. Listing an integration's links (an
-- operator's query) scans.
-- A delete also reads retired links (another target's delete job may have retired it): the
-- same look-up over every link. Without it the planner filtered every link of the source
-- (16 ms of database CPU per job at 20,000 records, found by `just bench`).
CREATE INDEX record_links_any ON record_links (external_id, integration_id, entity, tenant);

-- Existing mappings migrate without loss. A mapping's source is its last job's source (the
-- nil integration if unknown); mappings from one (tenant, entity, source, internal id) are
-- one record, its origin link the source's id, one link per target.
WITH m AS (
    SELECT m.*, i.tenant,
           COALESCE(j.source_integration_id, '00000000-0000-0000-0000-000000000000'::uuid) AS src
    FROM id_mappings m
    JOIN integrations i ON i.id = m.integration_id
    LEFT JOIN jobs j ON j.id = m.last_job_id
), keyed AS (
    SELECT m.*, md5(m.tenant || chr(31) || m.entity || chr(31) || m.src::text || chr(31) || m.internal_id)::uuid AS rid
    FROM m
), r AS (
    INSERT INTO records (id, tenant, entity, created_at)
    SELECT rid, min(tenant), min(entity), min(created_at) FROM keyed GROUP BY rid
), o AS (
    INSERT INTO record_links (record_id, tenant, integration_id, entity, external_id, origin,
                              changed_version, changed_at, created_at, last_synced_at)
    SELECT rid, min(tenant), min(src::text)::uuid, min(entity), min(internal_id), true,
           max(last_source_version), max(last_synced_at), min(created_at), max(last_synced_at)
    FROM keyed GROUP BY rid
)
INSERT INTO record_links (record_id, tenant, integration_id, entity, external_id,
                          last_source_version, last_job_id, written_at, written_change_at,
                          created_at, last_synced_at)
SELECT rid, tenant, integration_id, entity, external_id, last_source_version, last_job_id,
       last_synced_at, last_synced_at, created_at, last_synced_at
FROM keyed;

DROP TABLE id_mappings;

-- The mappings of before, read from the links: at each target, the records the hub wrote
-- there, by their origin's id.
CREATE VIEW id_mappings AS
SELECT t.integration_id, t.entity, o.external_id AS internal_id, t.external_id,
       t.last_source_version, t.last_job_id, t.created_at, t.last_synced_at,
       o.integration_id AS source_integration_id, t.record_id
FROM record_links t
JOIN record_links o ON o.record_id = t.record_id AND o.origin AND o.deleted_at IS NULL
WHERE NOT t.origin AND t.deleted_at IS NULL;

-- Jobs: a job whose target is not active waits here, in order, until it is released.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'retrying', 'succeeded', 'stale', 'ignored',
                      'skipped', 'held', 'dead'));
ALTER TABLE jobs ADD COLUMN record_id uuid;
CREATE TABLE held_jobs (
    job_id          uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    integration_id  uuid NOT NULL REFERENCES integrations (id),
    envelope        jsonb NOT NULL,
    received_at     timestamptz NOT NULL,
    held_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX held_jobs_order ON held_jobs (integration_id, received_at, job_id);
-- A target's own changes about a record, for conflict checks (jobs from that system).
CREATE INDEX jobs_source_entity ON jobs (internal_id, source_integration_id, entity)
    WHERE source_integration_id IS NOT NULL;

-- Routes: options and filters.
ALTER TABLE routes
    -- {"/status": ["paid", "completed"]}: every pointer must hold one of its values.
    ADD COLUMN filter jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN conflict text NOT NULL DEFAULT 'last_writer_wins'
        CHECK (conflict IN ('last_writer_wins', 'source_wins', 'target_wins')),
    ADD COLUMN when_inactive text NOT NULL DEFAULT 'hold' CHECK (when_inactive IN ('hold', 'drop')),
    ADD COLUMN link_existing boolean NOT NULL DEFAULT false;

-- Conflicts an operator can list: two systems changed one record at about the same time.
CREATE TABLE record_conflicts (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant              text NOT NULL,
    record_id           uuid NOT NULL,
    entity              text NOT NULL,
    policy              text NOT NULL,
    winner_integration  uuid NOT NULL,
    loser_integration   uuid NOT NULL,
    winner_changed_at   timestamptz,
    loser_changed_at    timestamptz NOT NULL,
    job_id              uuid NOT NULL UNIQUE,
    message             text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX record_conflicts_tenant ON record_conflicts (tenant, id DESC);
