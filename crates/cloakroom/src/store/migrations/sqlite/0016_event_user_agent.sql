-- The client's User-Agent of a security event (a login's), when known.
ALTER TABLE security_events ADD COLUMN user_agent TEXT;
