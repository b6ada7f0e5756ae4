-- Whether the owner of the address confirmed it.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;

-- Mail waiting to be delivered, written in the same transaction as what caused it; a worker
-- leases due messages (claimed_until), deletes them once the relay took them, and otherwise
-- tries again later (next_attempt_at). The id is the Message-ID's left part.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    text_body       TEXT NOT NULL,
    html_body       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claimed_until   BIGINT,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at);

-- The tokens of links sent by mail, by their hash: single-use, short-lived, for one purpose,
-- and bound to the state of the account when they were made (`bound`: the address a
-- verification link confirms, the credentials generation a reset link replaces).
CREATE TABLE link_tokens (
    token_hash BYTEA PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL,
    bound      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX link_tokens_by_user ON link_tokens (user_id);
