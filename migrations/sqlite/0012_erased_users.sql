-- Accounts deactivated with `erase: true`: their events are served redacted from then on.
CREATE TABLE erased_users (
    user_id        TEXT PRIMARY KEY,
    erased_ts      INTEGER NOT NULL
);
