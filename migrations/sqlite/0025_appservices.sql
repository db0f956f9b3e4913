-- Application services: how far each one's event stream has been turned into
-- transactions, the transactions not yet acknowledged, the rooms each one publishes in
-- its networks' room directories, and which service registered an account.
CREATE TABLE appservice_positions (
    appservice_id   TEXT PRIMARY KEY,
    -- The last event stream position considered for a transaction.
    stream_position INTEGER NOT NULL,
    last_txn_id     INTEGER NOT NULL,
    -- The same for to-device messages and device-list changes (MSC2409 / MSC3202).
    to_device_position   INTEGER NOT NULL DEFAULT 0,
    device_list_position INTEGER NOT NULL DEFAULT 0
);

-- Written in the same transaction that advances the position, deleted when the service
-- answers 200: a retry resends the same id and body.
CREATE TABLE appservice_txns (
    appservice_id   TEXT NOT NULL,
    txn_id          INTEGER NOT NULL,
    body            TEXT NOT NULL,
    PRIMARY KEY (appservice_id, txn_id)
);

CREATE TABLE appservice_room_list (
    appservice_id   TEXT NOT NULL,
    network_id      TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);

ALTER TABLE users ADD COLUMN appservice_id TEXT;
