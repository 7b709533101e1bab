-- What operators are told: an integration that moved to `error`, one that needs connecting
-- again, dead letters piling up. Each is delivered, signed, to the configured URL (retried
-- with backoff until it is taken), and read back by the API.
CREATE TABLE notifications (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL,
    tenant          text,
    integration_id  uuid,
    -- The integration event it reports, if any: one notification per event.
    event_id        bigint UNIQUE,
    message         text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE sent_at IS NULL;
CREATE INDEX notifications_by_tenant ON notifications (tenant, created_at DESC);
CREATE INDEX integration_events_recent ON integration_events (created_at);
