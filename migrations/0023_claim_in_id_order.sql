-- The claim writes its job rows in id order, and its new origin links in their key's
-- order, as ingest's queued rows go in id order (`queued_rows` in crates/store/src/jobs.rs).
--
-- At 1,000 webhooks/s a job's delivery often reaches a worker before ingest has recorded
-- the job's queued row, so a claim call and ingest's insert write the same job rows at
-- once. Each waits for the other's uncommitted row where both wrote one; in different
-- orders (the claim's in its call's order, ingest's in its batch's) they deadlocked, and
-- PostgreSQL broke the cycle only after `deadlock_timeout` (a second), while every other
-- claim of the worker waited behind the stuck call. In `just bench`'s end-to-end phase that
-- happened every few seconds, and the jobs that waited past their turn's wait were put
-- back, a second more: the phase's p99.
--
-- The function is otherwise migration 0020's, with migration 0022's setting.
CREATE OR REPLACE FUNCTION claim_jobs(
    p_id uuid[], p_key text[], p_tenant text[], p_integration uuid[],
    p_source_integration uuid[], p_provider text[], p_entity text[], p_action text[],
    p_event text[], p_event_id text[], p_internal_id text[], p_source_version bigint[],
    p_received_at timestamptz[], p_sync_run uuid[], p_source uuid[], p_copy text[],
    p_lease_ms float8, p_lock bigint[], p_record uuid[], p_create boolean[])
RETURNS TABLE (
    -- The job's place in the arrays (from 1): two copies of one job's message may share a
    -- call, so the id does not tell their rows apart.
    place bigint,
    status text, attempts integer, started_at timestamptz, target_status text,
    s_record_id uuid, s_changed_version bigint, s_changed_at timestamptz,
    s_written_version bigint, s_written_at timestamptz, s_deleted boolean,
    t_external_id text, t_last_source_version bigint, t_written_at timestamptz,
    t_written_version bigint, t_written_change_at timestamptz, t_kept jsonb,
    t_changed_at timestamptz,
    busy_until timestamptz, own boolean, created_record uuid, run_status text,
    lease_until timestamptz)
LANGUAGE plpgsql VOLATILE
-- One plan, made once per connection: planning the statement anew for every call cost more
-- than running it (PL/pgSQL plans a statement for its parameters' values at first).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    k bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR k IN SELECT DISTINCT x FROM unnest(p_lock) x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
    RETURN QUERY
        WITH i AS (
            SELECT * FROM unnest(p_id, p_key, p_tenant, p_integration, p_source_integration,
                p_provider, p_entity, p_action, p_event, p_event_id, p_internal_id,
                p_source_version, p_received_at, p_sync_run, p_source, p_copy, p_lock,
                p_record, p_create)
            WITH ORDINALITY
            AS u(id, key, tenant, integration, source_integration, provider, entity, action,
                event, event_id, internal_id, source_version, received_at, sync_run, source,
                copy, lock, record, make, place)),
        -- Jobs whose record another job holds across a provider call: nothing is written
        -- for them, except that a settled one counts a duplicate.
        b AS (
            SELECT i.id, l.until FROM i JOIN job_leases l ON l.lock_key = i.lock
            WHERE NOT (l.job_id = i.id AND l.copy_id = i.copy) AND l.until > now()),
        d AS (
            UPDATE jobs SET duplicates = jobs.duplicates + 1, updated_at = now()
            FROM b WHERE jobs.id = b.id
              AND jobs.status IN ('succeeded', 'stale', 'ignored', 'skipped')
            RETURNING jobs.id, jobs.status, jobs.attempts, jobs.started_at),
        j AS (
            INSERT INTO jobs (id, idempotency_key, tenant, integration_id,
                source_integration_id, provider, entity, action, event, event_id,
                internal_id, source_version, received_at, sync_run_id, status, started_at)
            SELECT i.id, i.key, i.tenant, i.integration, i.source_integration, i.provider,
                i.entity, i.action, i.event, i.event_id, i.internal_id, i.source_version,
                i.received_at, i.sync_run, 'running', now()
            FROM i WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.id = i.id)
            ORDER BY i.id
            ON CONFLICT (id) DO UPDATE SET
                status = CASE WHEN jobs.status IN ('succeeded', 'stale', 'ignored', 'skipped')
                    THEN jobs.status ELSE 'running' END,
                duplicates = jobs.duplicates + CASE WHEN jobs.status IN
                    ('succeeded', 'stale', 'ignored', 'skipped') THEN 1 ELSE 0 END,
                started_at = COALESCE(jobs.started_at, now()),
                updated_at = now()
            RETURNING jobs.id, jobs.status, jobs.attempts, jobs.started_at),
        -- The record's link at the source (a delete also finds a retired one).
        s AS (
            SELECT DISTINCT ON (i.id) i.id AS job, r.record_id, r.changed_version,
                r.changed_at, r.written_version, r.written_at, r.deleted_at
            FROM i JOIN record_links r ON r.external_id = i.internal_id
              AND r.integration_id = i.source AND r.entity = i.entity AND r.tenant = i.tenant
              AND (i.action = 'delete' OR r.deleted_at IS NULL)
            ORDER BY i.id, r.deleted_at DESC NULLS FIRST),
        o AS (
            SELECT i.id FROM i JOIN job_leases l ON l.lock_key = i.lock
            WHERE l.job_id = i.id AND l.copy_id = i.copy),
        l AS (
            INSERT INTO job_leases (lock_key, job_id, copy_id, until)
            SELECT i.lock, i.id, i.copy, now() + make_interval(secs => p_lease_ms / 1000)
            FROM i JOIN j ON j.id = i.id
            WHERE j.status NOT IN ('succeeded', 'stale', 'ignored', 'skipped')
            ON CONFLICT (lock_key) DO UPDATE SET job_id = EXCLUDED.job_id,
                copy_id = EXCLUDED.copy_id, until = EXCLUDED.until
            RETURNING job_leases.job_id, job_leases.until),
        g AS (
            SELECT x.id, x.status FROM integrations x
            WHERE x.id IN (SELECT i.integration FROM i) AND x.deleted_at IS NULL),
        n AS (
            INSERT INTO record_links (record_id, tenant, integration_id, entity, external_id,
                origin)
            SELECT i.record, i.tenant, i.source, i.entity, i.internal_id, true
            FROM i JOIN l ON l.job_id = i.id JOIN g ON g.id = i.integration
            WHERE i.make AND g.status = 'active'
              AND NOT EXISTS (SELECT 1 FROM s WHERE s.job = i.id)
            ORDER BY i.internal_id, i.source, i.entity, i.tenant
            ON CONFLICT (external_id, integration_id, entity, tenant) WHERE deleted_at IS NULL
            DO NOTHING
            RETURNING record_links.record_id, record_links.tenant, record_links.integration_id,
                record_links.entity, record_links.external_id),
        r AS (INSERT INTO records (id, tenant, entity) SELECT n.record_id, n.tenant, n.entity FROM n)
        SELECT i.place, COALESCE(j.status, d.status), COALESCE(j.attempts, d.attempts),
            COALESCE(j.started_at, d.started_at), g.status,
            s.record_id, s.changed_version, s.changed_at, s.written_version,
            s.written_at, s.deleted_at IS NOT NULL, t.external_id, t.last_source_version,
            t.written_at, t.written_version, t.written_change_at, t.kept,
            (SELECT max(x.received_at) FROM jobs x WHERE x.internal_id = t.external_id
               AND x.source_integration_id = t.integration_id AND x.entity = t.entity
               AND x.status NOT IN ('ignored', 'skipped', 'stale')
               AND NOT (x.source_version IS NOT NULL AND t.written_version IS NOT NULL
                        AND x.source_version <= t.written_version)),
            b.until, o.id IS NOT NULL, nn.record_id, sr.status, l.until
        FROM i
        LEFT JOIN j ON j.id = i.id
        LEFT JOIN d ON d.id = i.id
        LEFT JOIN b ON b.id = i.id
        LEFT JOIN g ON g.id = i.integration
        LEFT JOIN s ON s.job = i.id
        LEFT JOIN record_links t ON t.record_id = s.record_id
          AND t.integration_id = i.integration AND t.deleted_at IS NULL
        LEFT JOIN o ON o.id = i.id
        LEFT JOIN n nn ON i.make AND nn.external_id = i.internal_id
          AND nn.integration_id = i.source AND nn.entity = i.entity AND nn.tenant = i.tenant
        LEFT JOIN l ON l.job_id = i.id
        LEFT JOIN sync_runs sr ON sr.id = i.sync_run;
END
$$;
