-- Switchboard's full current schema (version 3), applied by `switchboard migrate` to a database
-- that has none. A database at an earlier version is upgraded by the files of
-- consumers/store/migrations/ instead; a fresh install and an upgraded one must end identical
-- (tests/consumers/test_schema.py compares them), so a change here goes in an upgrade file too.
-- Every Chatwoot-sourced row carries Chatwoot's own version so that a late, older event never
-- overwrites a newer state (webhooks arrive in any order, sometimes twice).

CREATE TABLE IF NOT EXISTS schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO schema_version (version) VALUES (3) ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS contacts (
    account_id            bigint NOT NULL,
    chatwoot_contact_id   bigint NOT NULL,
    name                  text,
    email                 text,
    phone                 text,
    identifier            text,
    version               bigint NOT NULL DEFAULT 0,   -- epoch ms of the newest data applied
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, chatwoot_contact_id)
);

CREATE TABLE IF NOT EXISTS conversations (
    account_id                bigint NOT NULL,
    chatwoot_conversation_id  bigint NOT NULL,             -- the display id used in REST paths
    inbox_id                  bigint,
    channel                   text,
    contact_id                bigint,
    identity                  text,                        -- who the customer is on this channel
    status                    text,                        -- Chatwoot's: open|pending|resolved|snoozed
    assignee_type             text,                        -- User|AgentBot|NULL
    assignee_id               bigint,
    handler                   text NOT NULL DEFAULT 'bot' CHECK (handler IN ('bot', 'human')),
    -- Latest time (epoch) a human took the conversation / it came back to the bot; the later
    -- one decides `handler`. Kept as maxima so that event order does not matter.
    human_since               double precision,
    bot_since                 double precision,
    team_id                   bigint,
    labels                    text[] NOT NULL DEFAULT '{}',
    active                    boolean NOT NULL DEFAULT true,
    started_at                timestamptz NOT NULL DEFAULT now(),
    ended_at                  timestamptz,
    version                   double precision NOT NULL DEFAULT 0,  -- Chatwoot updated_at (epoch)
    -- turn bookkeeping
    last_inbound_message_id   bigint NOT NULL DEFAULT 0,
    burst_started_at          timestamptz,
    pending_count             integer NOT NULL DEFAULT 0,  -- customer messages in the burst
    turn_due_at               timestamptz,
    emitted_through           bigint NOT NULL DEFAULT 0,
    answered_through          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, chatwoot_conversation_id)
);
-- One active conversation per customer and channel: starting a new one ends the previous.
CREATE UNIQUE INDEX IF NOT EXISTS conversations_one_active
    ON conversations (account_id, channel, identity) WHERE active AND identity IS NOT NULL;
CREATE INDEX IF NOT EXISTS conversations_turn_due
    ON conversations (turn_due_at) WHERE turn_due_at IS NOT NULL;
-- The same Chatwoot contact is the same customer even when its identity changed (a widget
-- visitor identified later): a new conversation ends theirs too.
CREATE INDEX IF NOT EXISTS conversations_active_contact
    ON conversations (account_id, channel, contact_id) WHERE active;

CREATE TABLE IF NOT EXISTS messages (
    account_id                bigint NOT NULL,
    chatwoot_message_id       bigint NOT NULL,
    chatwoot_conversation_id  bigint NOT NULL,
    direction                 text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    sender_kind               text NOT NULL
                              CHECK (sender_kind IN ('contact', 'user', 'agent_bot', 'system')),
    sender_id                 bigint,
    private                   boolean NOT NULL DEFAULT false,
    message_type              text,
    content                   text,
    content_type              text,
    attachments               jsonb NOT NULL DEFAULT '[]',
    status                    text NOT NULL,
    created_at                timestamptz,
    ext_ref                   text,
    deleted                   boolean NOT NULL DEFAULT false,
    version                   double precision NOT NULL DEFAULT 0,  -- Chatwoot updated_at (epoch)
    stored_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, chatwoot_message_id)
);
CREATE INDEX IF NOT EXISTS messages_conversation
    ON messages (account_id, chatwoot_conversation_id, chatwoot_message_id);
CREATE INDEX IF NOT EXISTS messages_ext_ref ON messages (ext_ref) WHERE ext_ref IS NOT NULL;

CREATE TABLE IF NOT EXISTS outbound (
    ref                       text PRIMARY KEY,
    account_id                bigint NOT NULL,
    chatwoot_conversation_id  bigint,        -- NULL until an agent-started conversation exists
    inbox_id                  bigint,        -- with source_id: where to start a conversation
    source_id                 text,
    contact_id                bigint,
    kind                      text NOT NULL,
    content                   text NOT NULL DEFAULT '',
    private                   boolean NOT NULL DEFAULT false,
    content_attributes        jsonb NOT NULL DEFAULT '{}',
    status                    text NOT NULL,
    attempts                  integer NOT NULL DEFAULT 0,
    last_error                text,
    next_attempt_at           timestamptz,  -- not before: a retry's time, or an attempt's lease
    known_through             bigint,       -- newest message id of the conversation before we sent
    chatwoot_message_id       bigint,
    turn                      text,
    stream_id                 text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    sent_at                   timestamptz
);
CREATE INDEX IF NOT EXISTS outbound_due
    ON outbound (next_attempt_at) WHERE status IN ('queued', 'sending');

CREATE TABLE IF NOT EXISTS webhook_events (
    stream_id                 text PRIMARY KEY,    -- the sb:events entry: redelivery is a no-op
    delivery_id               text NOT NULL DEFAULT '',
    received_at               timestamptz NOT NULL,
    source                    text NOT NULL,
    event                     text NOT NULL,
    account_id                bigint,
    chatwoot_conversation_id  bigint,
    signed                    boolean NOT NULL,
    outcome                   text NOT NULL
                              CHECK (outcome IN ('applied', 'duplicate', 'ignored', 'dead')),
    detail                    text,
    body                      bytea NOT NULL,
    processed_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_events_received ON webhook_events (received_at);
CREATE INDEX IF NOT EXISTS webhook_events_delivery ON webhook_events (delivery_id);
-- `switchboard replay --outcome dead` and the ops views select by outcome over a time range.
CREATE INDEX IF NOT EXISTS webhook_events_outcome ON webhook_events (outcome, received_at);

-- Backfill (issue #9): per account, the newest `last_activity_at` (Chatwoot's clock, epoch
-- seconds) a finished scan covered, and a lease so that one `consume` process scans an account
-- at a time. The lease is taken and released in short transactions: the Chatwoot calls of a
-- scan run with no transaction open and no row locked.
CREATE TABLE IF NOT EXISTS backfill_watermarks (
    account_id        bigint PRIMARY KEY,
    last_activity_at  double precision,
    scanned_at        timestamptz,
    lease_owner       text,
    lease_until       timestamptz
);

-- deliver (issue #8): an agent-started conversation's create call is recorded before it is
-- made, so that after an ambiguous failure the deliverer looks for the conversation Chatwoot
-- may have created instead of creating a second one. Fold into the 1→2 upgrade.
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
