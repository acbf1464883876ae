-- Schema version 1 → 2. Run by `switchboard migrate` inside its one transaction, under its
-- advisory lock; schema.sql holds the same changes for a fresh install.

-- `switchboard replay --outcome dead` and the ops views select by outcome over a time range.
CREATE INDEX IF NOT EXISTS webhook_events_outcome ON webhook_events (outcome, received_at);

INSERT INTO schema_version (version) VALUES (2) ON CONFLICT DO NOTHING;
