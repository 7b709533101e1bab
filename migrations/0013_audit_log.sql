-- The audit log: every change to integrations (settings, status, credentials, secrets, OAuth
-- tokens, deletion), routes and their targets, tenants' API keys, and dead-letter actions —
-- who, when, what changed. Written by triggers, so no path that changes these tables (the
-- HTTP API, the CLI, the worker, the scheduler) can skip it. Who: the transaction's
-- `switchyard.actor` setting (the store sets it for an operator's change: `api:admin`,
-- `api:tenant:acme`, `cli:root`), else `system`. Secret columns are recorded as "changed",
-- never with a value; bookkeeping columns (timestamps the scheduler moves) not at all.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    -- Whose thing changed (NULL: not a tenant's, e.g. an admin's dead-letter action).
    tenant      text,
    -- `integration.create`, `integration.update`, `integration.delete`, `route.create`,
    -- `route_target.create`, `api_key.revoke`, `dlq_action.create`, …
    action      text NOT NULL,
    object_type text NOT NULL,
    object_id   text NOT NULL,
    -- {"column": {"from": …, "to": …}}, or {"column": "changed"} for a secret.
    changes     jsonb NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_tenant ON audit_log (tenant, at DESC, id DESC);
CREATE INDEX audit_log_object ON audit_log (object_id, at DESC, id DESC);

-- TG_ARGV: 0 the object type; 1 secret columns; 2 columns not audited.
CREATE FUNCTION switchyard_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_j   jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_j   jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    row_j   jsonb := COALESCE(new_j, old_j);
    secret  text[] := TG_ARGV[1]::text[];
    quiet   text[] := TG_ARGV[2]::text[];
    changes jsonb := '{}';
    k       text;
    verb    text;
    owner   text := row_j ->> 'tenant';
    object  text := COALESCE(row_j ->> 'id', row_j ->> 'route_id');
BEGIN
    FOR k IN SELECT jsonb_object_keys(row_j) LOOP
        CONTINUE WHEN k = ANY (quiet);
        IF (old_j -> k) IS DISTINCT FROM (new_j -> k) THEN
            IF k = ANY (secret) THEN
                changes := changes || jsonb_build_object(k, 'changed');
            ELSE
                changes := changes || jsonb_build_object(k,
                    jsonb_build_object('from', old_j -> k, 'to', new_j -> k));
            END IF;
        END IF;
    END LOOP;
    IF changes = '{}' THEN
        RETURN NULL;
    END IF;
    verb := CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'DELETE' THEN 'delete' ELSE 'update' END;
    IF TG_OP = 'UPDATE' AND new_j ->> 'deleted_at' IS NOT NULL AND old_j ->> 'deleted_at' IS NULL THEN
        verb := 'delete';
    ELSIF TG_OP = 'UPDATE' AND new_j ->> 'revoked_at' IS NOT NULL AND old_j ->> 'revoked_at' IS NULL THEN
        verb := 'revoke';
    END IF;
    IF TG_ARGV[0] = 'route' THEN
        SELECT tenant INTO owner FROM integrations WHERE id = (row_j ->> 'source_integration_id')::uuid;
    ELSIF TG_ARGV[0] = 'route_target' THEN
        -- (Its route may be gone already: a route's deletion cascades to its targets.)
        SELECT tenant INTO owner FROM integrations WHERE id = (row_j ->> 'target_integration_id')::uuid;
    END IF;
    INSERT INTO audit_log (actor, tenant, action, object_type, object_id, changes)
    VALUES (COALESCE(NULLIF(current_setting('switchyard.actor', true), ''), 'system'), owner,
            TG_ARGV[0] || '.' || verb, TG_ARGV[0], COALESCE(object, ''), changes);
    RETURN NULL;
END
$$;

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON integrations FOR EACH ROW
    EXECUTE FUNCTION switchyard_audit('integration',
        '{credentials,credentials_key_id,webhook_secrets,webhook_secrets_key_id,webhook_auth,oauth_token,oauth_token_key_id}',
        '{created_at,updated_at,next_sync_at,last_sync_at,sync_failures}');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON routes FOR EACH ROW
    EXECUTE FUNCTION switchyard_audit('route', '{}', '{created_at}');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON route_targets FOR EACH ROW
    EXECUTE FUNCTION switchyard_audit('route_target', '{}', '{}');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON api_keys FOR EACH ROW
    EXECUTE FUNCTION switchyard_audit('api_key', '{key_sha256}', '{created_at}');
CREATE TRIGGER audit AFTER INSERT ON dlq_actions FOR EACH ROW
    EXECUTE FUNCTION switchyard_audit('dlq_action', '{}', '{created_at,job_ids}');
