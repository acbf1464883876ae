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

-- Each turn pushed to a worker app, by (turn, app): its state, the attempt due next (retries
-- wait here, so a slow or failing app holds up nothing else), and the turn's JSON as pushed.
-- `status`: queued → pushing → answered | failed | superseded (a newer turn of the
-- conversation left first: never pushed).
CREATE TABLE IF NOT EXISTS pushes (
    turn                      text NOT NULL,
    app                       text NOT NULL,
    account_id                bigint NOT NULL,
    chatwoot_conversation_id  bigint NOT NULL,
    through                   bigint NOT NULL,
    stream                    text NOT NULL,
    stream_id                 text NOT NULL,
    body                      bytea NOT NULL,
    status                    text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'pushing', 'answered', 'failed', 'superseded')),
    attempts                  integer NOT NULL DEFAULT 0,
    next_attempt_at           timestamptz,
    last_error                text,
    replies                   integer,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (turn, app)
);
CREATE INDEX IF NOT EXISTS pushes_due
    ON pushes (next_attempt_at) WHERE status IN ('queued', 'pushing');

-- The audit trail of pushes: one row per attempt and its outcome (answered, retry, failed),
-- the app's HTTP status when it answered, how long it took.
CREATE TABLE IF NOT EXISTS push_attempts (
    id           bigserial PRIMARY KEY,
    turn         text NOT NULL,
    app          text NOT NULL,
    attempt      integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    outcome      text NOT NULL,
    http_status  integer,
    ms           integer,
    error        text
);
CREATE INDEX IF NOT EXISTS push_attempts_turn ON push_attempts (turn, app);

-- Instagram comments from Meta (issue #12, the forward group): which worker app gets each
-- Instagram account's comments (by media owner id), and what became of each comment. One row
-- per comment, keyed as Meta's retries are deduplicated: by (field, comment id).
CREATE TABLE IF NOT EXISTS meta_owner_apps (
    owner_id    text PRIMARY KEY CHECK (owner_id ~ '^[0-9]{1,32}$'),
    app         text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS meta_forwards (
    comment_key  text PRIMARY KEY,
    stream_id    text NOT NULL,
    delivery_id  text NOT NULL,
    media_id     text,
    owner_id     text,
    app          text,
    outcome      text NOT NULL CHECK (outcome IN ('forwarded', 'ignored', 'dead')),
    detail       text,
    attempts     integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS meta_forwards_waiting ON meta_forwards (owner_id)
    WHERE outcome <> 'forwarded';

INSERT INTO schema_version (version) VALUES (3) ON CONFLICT DO NOTHING;
