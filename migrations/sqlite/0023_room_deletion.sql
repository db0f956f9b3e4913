-- Rooms an admin blocked (admin API): no local user may join, knock or be invited.
CREATE TABLE blocked_rooms (
    room_id        TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    blocked_ts     INTEGER NOT NULL
);

-- Room deletions through the admin API (v2 polls their status by delete_id or room).
CREATE TABLE room_deletions (
    delete_id      TEXT PRIMARY KEY,
    room_id        TEXT NOT NULL,
    -- 'complete' or 'failed'.
    status         TEXT NOT NULL,
    -- The shutdown's outcome (kicked users, aliases, ...), JSON.
    result         TEXT NOT NULL,
    error          TEXT,
    created_ts     INTEGER NOT NULL
);
CREATE INDEX room_deletions_room ON room_deletions (room_id);
