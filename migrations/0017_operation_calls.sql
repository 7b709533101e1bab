-- Calls of a connector's named operations (`charge`, `query`, `send`): the caller waits for
-- the provider's answer. Each call is also a job (same id, action `operation`), so its
-- provider calls are the job's attempts. A pending call (an STK push waiting for the
-- customer) is settled by the provider's callback, matched by `reference`, or by asking
-- (`query_at`: when to ask next).
CREATE TABLE operation_calls (
    id               uuid PRIMARY KEY,
    tenant           text NOT NULL,
    integration_id   uuid NOT NULL REFERENCES integrations (id),
    operation        text NOT NULL,
    -- The caller's Idempotency-Key: the same key returns this call, never a second one.
    idempotency_key  text,
    -- SHA-256 of the input: the same key with another input is refused.
    input_sha256     text NOT NULL,
    input            jsonb NOT NULL,
    status           text NOT NULL
                     CHECK (status IN ('running', 'pending', 'succeeded', 'failed', 'expired')),
    -- Whether the provider was called at all (a call refused by the breaker was not: its
    -- key may be used again).
    called           boolean NOT NULL DEFAULT false,
    reference        text,
    answer           jsonb,
    answer_status    integer,
    error_class      text,
    error            text,
    result_code      text,
    result_message   text,
    -- What settled it: the callback's body, or the query's answer.
    result           jsonb,
    settled_by       text CHECK (settled_by IN ('answer', 'callback', 'query')),
    queries          integer NOT NULL DEFAULT 0,
    query_at         timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    settled_at       timestamptz
);
CREATE UNIQUE INDEX operation_calls_key ON operation_calls (integration_id, operation, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX operation_calls_reference ON operation_calls (integration_id, reference)
    WHERE reference IS NOT NULL;
CREATE INDEX operation_calls_due ON operation_calls (query_at) WHERE status = 'pending';
CREATE INDEX operation_calls_recent ON operation_calls (integration_id, created_at DESC);
