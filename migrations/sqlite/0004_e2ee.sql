-- End-to-end encryption: the server stores and relays keys; it never decrypts.

CREATE TABLE device_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    key_json       TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE one_time_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    key_json       TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id)
);
CREATE INDEX one_time_keys_algorithm ON one_time_keys (user_id, device_id, algorithm);

CREATE TABLE fallback_keys (
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    key_json       TEXT NOT NULL,
    used           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: master, self_signing, user_signing.
CREATE TABLE cross_signing_keys (
    user_id        TEXT NOT NULL,
    key_type       TEXT NOT NULL,
    key_json       TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded for keys (a device, or a cross-signing key by its public key).
CREATE TABLE key_signatures (
    target_user    TEXT NOT NULL,
    target_key     TEXT NOT NULL,
    signer_user    TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key_id)
);

-- A user's devices or cross-signing keys changed at this position (keys/changes, sync).
CREATE TABLE device_list_changes (
    stream_ordering INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        TEXT NOT NULL
);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_ordering);

CREATE TABLE backup_versions (
    user_id        TEXT NOT NULL,
    version        INTEGER NOT NULL,
    algorithm      TEXT NOT NULL,
    auth_data      TEXT NOT NULL,
    etag           INTEGER NOT NULL DEFAULT 0,
    deleted        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
    user_id        TEXT NOT NULL,
    version        INTEGER NOT NULL,
    room_id        TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count INTEGER NOT NULL,
    is_verified    INTEGER NOT NULL,
    session_data   TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
