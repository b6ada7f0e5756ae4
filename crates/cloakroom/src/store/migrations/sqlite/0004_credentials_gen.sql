-- How many times a user's password has changed, and the count each session was proven against:
-- a session whose count is behind its user's is void.
ALTER TABLE users ADD COLUMN credentials_gen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN credentials_gen INTEGER NOT NULL DEFAULT 0;
