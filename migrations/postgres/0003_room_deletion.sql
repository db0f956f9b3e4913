-- Rooms an admin blocked (admin API): no local user may join, knock or be invited.
CREATE TABLE blocked_rooms (
    room_id        TEXT COLLATE "C" PRIMARY KEY,
    user_id        TEXT COLLATE "C" NOT NULL,
    blocked_ts     BIGINT NOT NULL
);

-- Room deletions through the admin API (v2 polls their status by delete_id or room).
CREATE TABLE room_deletions (
    delete_id      TEXT COLLATE "C" PRIMARY KEY,
    room_id        TEXT COLLATE "C" NOT NULL,
    -- 'complete' or 'failed'.
    status         TEXT COLLATE "C" NOT NULL,
    -- The shutdown's outcome (kicked users, aliases, ...), JSON.
    result         TEXT COLLATE "C" NOT NULL,
    error          TEXT COLLATE "C",
    created_ts     BIGINT NOT NULL
);
CREATE INDEX room_deletions_room ON room_deletions (room_id);
