-- A user's sessions newest first, without sorting them all: the per-user cap reads past the
-- newest ones on every login.
CREATE INDEX sessions_by_user_age ON sessions (user_id, created_at);
