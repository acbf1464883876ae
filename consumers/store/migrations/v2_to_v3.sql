-- Schema version 2 → 3. Run by `switchboard migrate` inside its one transaction, under its
-- advisory lock; schema.sql holds the same changes for a fresh install.

-- A public bot reply without `turn` (optional on sb:outbound) answers what was awaited when it
-- was queued: the conversation's `last_inbound_message_id` then. Posted, it clears the deadline
-- for those messages as a reply to a turn does.
ALTER TABLE outbound ADD COLUMN IF NOT EXISTS covers_through bigint;

INSERT INTO schema_version (version) VALUES (3) ON CONFLICT DO NOTHING;
