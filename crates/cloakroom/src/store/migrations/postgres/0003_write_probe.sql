-- One row that readiness checks update: a database that cannot take a write is not ready.
CREATE TABLE write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), probes BIGINT NOT NULL);
INSERT INTO write_probe (id, probes) VALUES (1, 0);
