-- A spent refresh token is looked up by the session's previous hash.
CREATE INDEX sessions_by_previous ON sessions (previous_hash) WHERE previous_hash IS NOT NULL;
