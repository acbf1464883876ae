-- Schema version 1 → 2. Run by `switchboard migrate` inside its one transaction, under its
-- advisory lock; schema.sql holds the same changes for a fresh install.

-- `switchboard replay --outcome dead` and the ops views select by outcome over a time range.
CREATE INDEX IF NOT EXISTS webhook_events_outcome ON webhook_events (outcome, received_at);

-- Backfill: per account, the newest `last_activity_at` a finished scan covered, and a lease so
-- that one `consume` process scans an account at a time.
CREATE TABLE IF NOT EXISTS backfill_watermarks (
    account_id        bigint PRIMARY KEY,
    last_activity_at  double precision,
    scanned_at        timestamptz,
    lease_owner       text,
    lease_until       timestamptz
);

-- An agent-started conversation's create call is recorded before it is made, so that after an
-- ambiguous failure the deliverer looks for the conversation Chatwoot may have created.
ALTER TABLE outbound ADD COLUMN IF NOT EXISTS create_started_at timestamptz;

-- No customer left unanswered (issue #13): a turn emitted to an agent must be answered by
-- `answer_due_at` (the route's `answer_within_s` after it left), else the conversation is
-- handed to humans. `answer_through` is the newest customer message a turn awaiting an answer
-- covers; `answer_holds` counts the agent's extensions (`hold`, `typing_on`), capped.
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS answer_due_at timestamptz;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS answer_through bigint NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS answer_holds integer NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS conversations_answer_due
    ON conversations (answer_due_at) WHERE answer_due_at IS NOT NULL;

-- A new conversation also ends the active ones of the same Chatwoot contact on the channel
-- (a widget visitor identified later has a new identity, not a new person).
CREATE INDEX IF NOT EXISTS conversations_active_contact
    ON conversations (account_id, channel, contact_id) WHERE active;

INSERT INTO schema_version (version) VALUES (2) ON CONFLICT DO NOTHING;
