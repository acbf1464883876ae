-- Schema version 2 → 3. Run by `switchboard migrate` inside its one transaction, under its
-- advisory lock; schema.sql holds the same changes for a fresh install.

-- A public bot reply without `turn` (optional on sb:outbound) answers what was awaited when it
-- was queued: the conversation's `last_inbound_message_id` then. Posted, it clears the deadline
-- for those messages as a reply to a turn does.
ALTER TABLE outbound ADD COLUMN IF NOT EXISTS covers_through bigint;

-- Worker apps (issue #12): named HTTP endpoints that turns are pushed to (and Meta webhooks
-- forwarded to), signed the Standard Webhooks way. The secret is kept as given
-- (`whsec_<base64>`), not hashed: every push is signed with it, so it must be read back.
CREATE TABLE IF NOT EXISTS worker_apps (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    url         text NOT NULL,
    secret      text NOT NULL,
    timeout_s   double precision NOT NULL DEFAULT 10 CHECK (timeout_s > 0 AND timeout_s <= 120),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO schema_version (version) VALUES (3) ON CONFLICT DO NOTHING;
