-- What happened to an account that its owner should see (second factors added or removed,
-- recovery codes made or used). Never a secret.
CREATE TABLE security_events (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind    TEXT NOT NULL,
    at      BIGINT NOT NULL,
    ip      TEXT,
    detail  TEXT
);
CREATE INDEX security_events_by_user ON security_events (user_id, seq);
