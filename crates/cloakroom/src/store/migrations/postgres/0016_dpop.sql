-- Values used once (DPoP proofs' jti), kept until their proof could no longer be presented.
CREATE TABLE used_once (
    key   BYTEA PRIMARY KEY,
    until BIGINT NOT NULL
);
CREATE INDEX used_once_by_time ON used_once (until);
-- The thumbprint of the key a token session's tokens are bound to (RFC 9449), if any.
ALTER TABLE sessions ADD COLUMN dpop_jkt TEXT;
