-- Integrations management: last error, and indexes for the management API's lists.
ALTER TABLE integrations ADD COLUMN last_error text;
CREATE INDEX jobs_created_id ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_integration_finished ON jobs (integration_id, finished_at DESC) WHERE finished_at IS NOT NULL;
