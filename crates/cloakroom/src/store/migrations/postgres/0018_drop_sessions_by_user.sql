-- `sessions_by_user_age` (user_id, created_at) serves every lookup by user, and the cascade
-- from `users`: the index on user_id alone only made each session's insert and delete write
-- one more page.
DROP INDEX IF EXISTS sessions_by_user;
