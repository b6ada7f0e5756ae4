-- How each session's user proved who they are (RFC 8176 names, comma-separated). Sessions from
-- before were password logins.
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
