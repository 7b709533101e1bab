-- Notifications over channels with fallback: a channel route sends an event from its source
-- as a message over an ordered list of channels (WhatsApp, then SMS), each one a connector's
-- operation; the next channel is tried when one fails for good or reports no delivery in
-- time. A message is sent at most once per channel: each channel's call has the idempotency
-- key `message:<message id>:<channel>`.
CREATE TABLE channel_routes (
    id                      uuid PRIMARY KEY,
    tenant                  text NOT NULL,
    source_integration_id   uuid NOT NULL REFERENCES integrations (id),
    entity                  text NOT NULL,
    event                   text NOT NULL DEFAULT '*',
    filter                  jsonb NOT NULL DEFAULT '{}',
    -- [{integration_id, operation, input}]: `input` is a field map over the event's data.
    channels                jsonb NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX channel_routes_source ON channel_routes (source_integration_id);

CREATE TABLE messages (
    id                      uuid PRIMARY KEY,
    tenant                  text NOT NULL,
    route_id                uuid NOT NULL REFERENCES channel_routes (id) ON DELETE CASCADE,
    source_integration_id   uuid NOT NULL,
    event_id                text NOT NULL,
    payload                 jsonb NOT NULL,
    status                  text NOT NULL DEFAULT 'sending'
                            CHECK (status IN ('sending', 'delivered', 'failed')),
    -- The channel being tried (its index in the route's list).
    channel                 integer NOT NULL DEFAULT 0,
    -- When it is looked at next.
    next_at                 timestamptz NOT NULL DEFAULT now(),
    -- Each channel tried: {channel, integration_id, operation, call_id, status, error}.
    outcomes                jsonb NOT NULL DEFAULT '[]',
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    finished_at             timestamptz,
    UNIQUE (route_id, event_id)
);
CREATE INDEX messages_due ON messages (next_at) WHERE status = 'sending';
CREATE INDEX messages_recent ON messages (tenant, created_at DESC);
