-- The sweep deletes security events past their retention and links past their deadline.
CREATE INDEX security_events_by_time ON security_events (at);
CREATE INDEX link_tokens_by_deadline ON link_tokens (expires_at);
