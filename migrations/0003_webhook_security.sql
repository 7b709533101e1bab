-- Webhook signing secrets (sealed by the vault, like credentials) and tenant API keys.
ALTER TABLE integrations ADD COLUMN webhook_secrets bytea;
ALTER TABLE integrations ADD COLUMN webhook_secrets_key_id text;
ALTER TABLE integrations ADD CONSTRAINT webhook_secrets_sealed
    CHECK ((webhook_secrets IS NULL) = (webhook_secrets_key_id IS NULL));

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    name        text NOT NULL,
    -- Hex SHA-256 of the key; the key itself is shown once, at creation.
    key_sha256  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    UNIQUE (tenant, name)
);
