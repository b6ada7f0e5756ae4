-- WebAuthn ceremonies keep no state while under way (their challenge carries it, under a MAC).
-- A passkey records the last challenge it answered (deadline and nonce, ordered in time): an
-- assertion counts only over a later one, so each counts once, on every instance.
DROP TABLE webauthn_ceremonies;
ALTER TABLE factors ADD COLUMN last_challenge BYTEA;
