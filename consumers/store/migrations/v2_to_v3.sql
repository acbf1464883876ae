-- Schema version 2 → 3. Run by `switchboard migrate` inside its one transaction, under its
-- advisory lock; schema.sql holds the same changes for a fresh install.

-- A public bot reply without `turn` (optional on sb:outbound) answers what was awaited when it
-- was queued: the conversation's `last_inbound_message_id` then. Posted, it clears the deadline
-- for those messages as a reply to a turn does.
ALTER TABLE outbound ADD COLUMN IF NOT EXISTS covers_through bigint;

-- Conversation timeline (issue #11): each turn emitted, with the customer messages it carried,
-- for `switchboard conversation` and the ops page (the turns streams are trimmed; this stays).
-- Written in the transaction that marks the turn emitted, so it is there exactly when the
-- conversation's `emitted_through` says the turn went out.
CREATE TABLE IF NOT EXISTS turn_log (
    turn                      text PRIMARY KEY,
    account_id                bigint NOT NULL,
    chatwoot_conversation_id  bigint NOT NULL,
    through                   bigint NOT NULL,
    message_ids               bigint[] NOT NULL DEFAULT '{}',
    route                     text,
    stream                    text,
    emitted_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS turn_log_conversation
    ON turn_log (account_id, chatwoot_conversation_id, emitted_at);

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
