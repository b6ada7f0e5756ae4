-- Times are seconds since the epoch (BIGINT), as in the SQLite schema.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    transport           TEXT NOT NULL CHECK (transport IN ('cookie', 'token')),
    secret_hash         BYTEA NOT NULL UNIQUE,
    previous_hash       BYTEA,
    rotated_at          BIGINT,
    successor_box       BYTEA,
    remember            BOOLEAN NOT NULL,
    created_at          BIGINT NOT NULL,
    authenticated_at    BIGINT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    idle_secs           BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    ip                  TEXT,
    user_agent          TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_deadline ON sessions (absolute_expires_at);
CREATE INDEX sessions_by_previous ON sessions (previous_hash) WHERE previous_hash IS NOT NULL;

CREATE TABLE changes (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('session_revoked', 'user_changed')),
    subject    TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX changes_by_expiry ON changes (expires_at);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    private_pkcs8 BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    retired_at    BIGINT
);
