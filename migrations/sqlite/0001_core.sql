-- Core schema: accounts, devices, tokens, rooms, events with their indexes, state.

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    password_hash  TEXT,
    is_admin       INTEGER NOT NULL DEFAULT 0,
    deactivated    INTEGER NOT NULL DEFAULT 0,
    displayname    TEXT,
    avatar_url     TEXT,
    created_ts     INTEGER NOT NULL
);

CREATE TABLE devices (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    display_name   TEXT,
    last_seen_ts   INTEGER,
    last_seen_ip   TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Only the SHA-256 of a token is stored: a leaked database does not leak sessions.
CREATE TABLE access_tokens (
    token_hash     TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    created_ts     INTEGER NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

-- User-interactive auth sessions: which stages a session has completed.
CREATE TABLE uia_sessions (
    session_id     TEXT PRIMARY KEY,
    completed      TEXT NOT NULL,
    created_ts     INTEGER NOT NULL
);

CREATE TABLE rooms (
    room_id        TEXT PRIMARY KEY,
    room_version   TEXT NOT NULL,
    creator        TEXT NOT NULL,
    published      INTEGER NOT NULL DEFAULT 0,
    created_ts     INTEGER NOT NULL
);

-- Every persisted PDU. stream_ordering is the global sync position; depth orders /messages.
CREATE TABLE events (
    stream_ordering  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    state_key        TEXT,
    sender           TEXT NOT NULL,
    origin_server_ts INTEGER NOT NULL,
    depth            INTEGER NOT NULL,
    json             TEXT NOT NULL,
    -- State group holding the room state after this event.
    state_group      INTEGER NOT NULL,
    -- Set when an m.room.redaction for this event is accepted; json is then the redacted form.
    redacted_by      TEXT,
    -- Local sends: the device and transaction id, echoed back to that device as unsigned.transaction_id.
    txn_device_id    TEXT,
    txn_id           TEXT
);
CREATE INDEX events_room_topological ON events (room_id, depth, stream_ordering);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);

CREATE TABLE event_edges (
    event_id       TEXT NOT NULL,
    prev_event_id  TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);

CREATE TABLE event_auth (
    event_id       TEXT NOT NULL,
    auth_event_id  TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
);

CREATE TABLE room_forward_extremities (
    room_id        TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE event_relations (
    event_id       TEXT PRIMARY KEY,
    relates_to_id  TEXT NOT NULL,
    rel_type       TEXT NOT NULL,
    room_id        TEXT NOT NULL
);
CREATE INDEX event_relations_target ON event_relations (relates_to_id, rel_type);

-- Per-device transaction ids of client sends, for idempotency (scoped to the room, as the
-- request path is).
CREATE TABLE event_txn_ids (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    txn_id         TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, room_id, txn_id)
);

-- Deduplicated state: a group is either a full snapshot (prev_group NULL) or a delta on
-- prev_group. Chains are bounded (see storage::state), so reads merge a few rows.
CREATE TABLE state_groups (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id        TEXT NOT NULL,
    prev_group     INTEGER,
    chain_length   INTEGER NOT NULL
);

CREATE TABLE state_group_entries (
    state_group    INTEGER NOT NULL,
    event_type     TEXT NOT NULL,
    state_key      TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    PRIMARY KEY (state_group, event_type, state_key)
);

-- Index of the current state of each room, kept in the same transaction as the event.
CREATE TABLE current_state (
    room_id        TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    state_key      TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

-- Current membership per (room, user), derived from current_state.
CREATE TABLE room_memberships (
    room_id        TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    membership     TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    forgotten      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, membership);

CREATE TABLE room_aliases (
    alias          TEXT PRIMARY KEY,
    room_id        TEXT NOT NULL,
    creator        TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE account_data (
    user_id        TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    data_type      TEXT NOT NULL,
    content        TEXT NOT NULL,
    stream_ordering INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);

CREATE TABLE reports (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter       TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    event_id       TEXT,
    reason         TEXT,
    score          INTEGER,
    created_ts     INTEGER NOT NULL
);

-- Server-wide counters (e.g. the account-data stream position).
CREATE TABLE stream_positions (
    stream         TEXT PRIMARY KEY,
    position       INTEGER NOT NULL
);
