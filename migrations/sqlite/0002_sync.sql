-- Sync: stored filters, receipts, presence, to-device messages.

CREATE TABLE filters (
    user_id        TEXT NOT NULL,
    filter_id      INTEGER NOT NULL,
    definition     TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- Latest receipt per (room, type, user, thread); stream_ordering is the receipts stream.
CREATE TABLE receipts (
    room_id        TEXT NOT NULL,
    receipt_type   TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    thread_id      TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    ts             INTEGER NOT NULL,
    stream_ordering INTEGER NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream_ordering);

CREATE TABLE presence (
    user_id        TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    status_msg     TEXT,
    last_active_ts INTEGER NOT NULL,
    stream_ordering INTEGER NOT NULL
);

-- Messages waiting for a device; deleted once the device syncs past them.
CREATE TABLE to_device (
    stream_ordering INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    sender         TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    content        TEXT NOT NULL
);
CREATE INDEX to_device_recipient ON to_device (user_id, device_id, stream_ordering);

CREATE TABLE to_device_txns (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    txn_id         TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
