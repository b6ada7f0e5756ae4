-- What is kept of a deleted account: its id and when it was deleted (no address, no events).
CREATE TABLE deleted_accounts (
    user_id    TEXT PRIMARY KEY NOT NULL,
    deleted_at INTEGER NOT NULL
);
