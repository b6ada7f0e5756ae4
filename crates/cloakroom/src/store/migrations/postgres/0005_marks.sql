-- Numbers that only grow, for facts another store must not forget: how far Redis's revocation
-- log had got (a Redis restored from an older snapshot is then noticed).
CREATE TABLE marks (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
