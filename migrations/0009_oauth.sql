-- OAuth2: an integration's current token set (access token, refresh token, expiry), sealed in
-- the vault and bound to the integration; rewritten by whichever worker refreshes it, under a
-- fleet-wide lock, so a rotating refresh token is used once.
ALTER TABLE integrations
    ADD COLUMN oauth_token bytea,
    ADD COLUMN oauth_token_key_id text,
    ADD CONSTRAINT integrations_oauth_token_sealed
        CHECK ((oauth_token IS NULL) = (oauth_token_key_id IS NULL));

-- Consent flows under way: the `state` (stored as its SHA-256), the PKCE verifier (sealed),
-- where the provider sends the user back. Single use, and short-lived.
CREATE TABLE oauth_states (
    state_sha256        text PRIMARY KEY,
    integration_id      uuid NOT NULL REFERENCES integrations (id),
    verifier            bytea NOT NULL,
    verifier_key_id     text NOT NULL,
    redirect_uri        text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    used_at             timestamptz,
    -- `connected`, or why the exchange failed.
    outcome             text
);
CREATE INDEX oauth_states_integration ON oauth_states (integration_id, created_at DESC);

-- What the last write's answer said to keep for the next update (QuickBooks' SyncToken,
-- an OData ETag), per record at each target.
ALTER TABLE record_links ADD COLUMN kept jsonb;
