-- Push: per-recipient push actions of events (for counts, /notifications and pushers),
-- and the pushers themselves.

CREATE TABLE event_push_actions (
    user_id        TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    -- 'main', or the thread root's event id.
    thread_id      TEXT NOT NULL,
    notify         INTEGER NOT NULL,
    highlight      INTEGER NOT NULL,
    actions        TEXT NOT NULL,
    ts             INTEGER NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, stream_ordering);

CREATE TABLE pushers (
    user_id        TEXT NOT NULL,
    app_id         TEXT NOT NULL,
    pushkey        TEXT NOT NULL,
    -- The pusher as clients set it (ruma's Pusher, JSON).
    pusher         TEXT NOT NULL,
    pushkey_ts     INTEGER NOT NULL,
    -- The device that set it: logging that device out removes the pusher.
    device_id      TEXT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);
