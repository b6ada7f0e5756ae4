-- Second factors: authenticator apps (a sealed TOTP secret and the last time step accepted, so
-- a code is accepted once), passkeys (the public credential, its id unique) and recovery codes
-- (stored hashed, each spent once).
CREATE TABLE factors (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('totp', 'passkey', 'recovery_codes')),
    name         TEXT,
    secret       BLOB,
    confirmed    INTEGER NOT NULL,
    last_step    INTEGER,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    credential_id BLOB UNIQUE
);
CREATE INDEX factors_by_user ON factors (user_id);

CREATE TABLE recovery_codes (
    code_hash BLOB PRIMARY KEY NOT NULL,
    factor_id TEXT NOT NULL REFERENCES factors(id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL,
    used_at   INTEGER
);
CREATE INDEX recovery_codes_by_factor ON recovery_codes (factor_id);

-- Logins waiting for their second step (the mfa_token, stored hashed).
CREATE TABLE mfa_challenges (
    token_hash      BLOB PRIMARY KEY NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credentials_gen INTEGER NOT NULL,
    transport       TEXT NOT NULL CHECK (transport IN ('cookie', 'token')),
    remember        INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX mfa_challenges_by_deadline ON mfa_challenges (expires_at);

-- WebAuthn ceremonies under way (registration or login), keyed by their challenge's hash:
-- single-use, short-lived, and shared by every instance.
CREATE TABLE webauthn_ceremonies (
    challenge_hash BLOB PRIMARY KEY NOT NULL,
    user_id        TEXT REFERENCES users(id) ON DELETE CASCADE,
    purpose        TEXT NOT NULL CHECK (purpose IN ('register', 'login')),
    state          BLOB NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX webauthn_ceremonies_by_deadline ON webauthn_ceremonies (expires_at);
