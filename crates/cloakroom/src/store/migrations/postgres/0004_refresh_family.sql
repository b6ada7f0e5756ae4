-- A token session's refresh-token family (its hash): any of its tokens, however old, finds it,
-- so the reuse of any spent one is recognised.
ALTER TABLE sessions ADD COLUMN refresh_family BYTEA;
CREATE INDEX sessions_by_family ON sessions (refresh_family) WHERE refresh_family IS NOT NULL;
