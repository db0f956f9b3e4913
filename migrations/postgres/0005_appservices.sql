-- Application services: how far each one's event stream has been turned into
-- transactions, the transactions not yet acknowledged, the rooms each one publishes in
-- its networks' room directories, and which service registered an account.
CREATE TABLE appservice_positions (
    appservice_id   TEXT COLLATE "C" PRIMARY KEY,
    stream_position BIGINT NOT NULL,
    last_txn_id     BIGINT NOT NULL,
    to_device_position   BIGINT NOT NULL DEFAULT 0,
    device_list_position BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE appservice_txns (
    appservice_id   TEXT COLLATE "C" NOT NULL,
    txn_id          BIGINT NOT NULL,
    body            TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (appservice_id, txn_id)
);

CREATE TABLE appservice_room_list (
    appservice_id   TEXT COLLATE "C" NOT NULL,
    network_id      TEXT COLLATE "C" NOT NULL,
    room_id         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);

ALTER TABLE users ADD COLUMN appservice_id TEXT COLLATE "C";
