-- Schema version 2 → 3. Run by `switchboard migrate` inside its one transaction, under its
-- advisory lock; schema.sql holds the same changes for a fresh install.

-- A public bot reply without `turn` (optional on sb:outbound) answers what was awaited when it
-- was queued: the conversation's `last_inbound_message_id` then. Posted, it clears the deadline
-- for those messages as a reply to a turn does.
ALTER TABLE outbound ADD COLUMN IF NOT EXISTS covers_through bigint;

-- Richer turns (issue #12): what a turn carries besides the unanswered messages, as Chatwoot
-- last sent it, under each row's existing version guard: the contact's custom and additional
-- attributes, the conversation's custom and additional attributes, and its inbox's name (in
-- message webhooks only; Switchboard does not mirror inboxes, whose payloads hold secrets).
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS custom_attributes jsonb NOT NULL DEFAULT '{}';
ALTER TABLE contacts ADD COLUMN IF NOT EXISTS additional_attributes jsonb NOT NULL DEFAULT '{}';
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS custom_attributes jsonb NOT NULL DEFAULT '{}';
ALTER TABLE conversations
    ADD COLUMN IF NOT EXISTS additional_attributes jsonb NOT NULL DEFAULT '{}';
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS inbox_name text;

INSERT INTO schema_version (version) VALUES (3) ON CONFLICT DO NOTHING;
