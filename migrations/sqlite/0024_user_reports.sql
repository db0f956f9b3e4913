-- Reports of users (POST /users/{userId}/report), for server admins.
CREATE TABLE user_reports (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter       TEXT NOT NULL,
    target_user_id TEXT NOT NULL,
    reason         TEXT NOT NULL,
    created_ts     INTEGER NOT NULL
);
