-- The public key (JWK) a cookie session is bound to by DBSC, if any.
ALTER TABLE sessions ADD COLUMN dbsc_key TEXT;
