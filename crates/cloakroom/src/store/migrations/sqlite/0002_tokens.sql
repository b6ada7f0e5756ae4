-- Signing keys: each with one algorithm; retired keys verify until their tokens have expired.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    alg           TEXT NOT NULL,
    private_pkcs8 BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    retired_at    INTEGER
);

-- For token sessions: the successor of the previous refresh token, sealed with a key derived from
-- that previous token, so an honest retry gets the same successor without the store ever holding
-- a usable refresh token.
ALTER TABLE sessions ADD COLUMN successor_box BLOB;
