-- Dead-letter operations: replays and purges, and what they did to jobs.
ALTER TABLE jobs ADD COLUMN replays integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN purged_at timestamptz;

CREATE TABLE dlq_actions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action      text NOT NULL CHECK (action IN ('replay', 'purge')),
    actor       text NOT NULL,
    filter      jsonb NOT NULL,
    dry_run     boolean NOT NULL,
    matched     integer NOT NULL,
    moved       integer NOT NULL,
    job_ids     uuid[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dlq_actions_created ON dlq_actions (created_at DESC);
