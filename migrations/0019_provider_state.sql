-- A call paid through a provider that drives its own transaction (Payme's merchant API:
-- CreateTransaction, PerformTransaction, CancelTransaction): the provider's transaction as
-- the hub answered it ({id, time, create_time, perform_time, cancel_time, state, reason}).
ALTER TABLE operation_calls ADD COLUMN provider_state jsonb;
CREATE UNIQUE INDEX operation_calls_provider_tx ON operation_calls (integration_id, (provider_state->>'id'))
    WHERE provider_state IS NOT NULL;
