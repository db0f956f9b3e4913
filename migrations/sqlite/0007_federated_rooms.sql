-- Federated rooms: events known but not in the timeline (outliers: auth and state events
-- fetched from other servers; soft-failed events), inbound transaction ids, and the
-- per-destination outbox of the sender.

CREATE TABLE outlier_events (
    event_id       TEXT PRIMARY KEY,
    room_id        TEXT NOT NULL,
    json           TEXT NOT NULL,
    soft_failed    INTEGER NOT NULL DEFAULT 0,
    rejected       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE federation_inbound_txns (
    origin         TEXT NOT NULL,
    txn_id         TEXT NOT NULL,
    response       TEXT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- What still has to be sent to each server, in order.
CREATE TABLE federation_outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    destination    TEXT NOT NULL,
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, id);
