-- Secrets every instance must share (the key of the tokens' check value), sealed like the
-- signing keys when a key-encryption key is configured.
CREATE TABLE shared_secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
