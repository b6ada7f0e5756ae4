CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    transport           TEXT NOT NULL CHECK (transport IN ('cookie', 'token')),
    secret_hash         BLOB NOT NULL UNIQUE,
    previous_hash       BLOB,
    rotated_at          INTEGER,
    remember            INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    authenticated_at    INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    idle_secs           INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    ip                  TEXT,
    user_agent          TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_deadline ON sessions (absolute_expires_at);

-- The change log other processes follow: revoked sessions (kept until they would have expired)
-- and changed users.
CREATE TABLE changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL CHECK (kind IN ('session_revoked', 'user_changed')),
    subject    TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX changes_by_expiry ON changes (expires_at);
