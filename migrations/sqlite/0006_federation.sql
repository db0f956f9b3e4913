-- Federation: other servers' signing keys, cached with their validity.

CREATE TABLE server_signing_keys (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    public_key     TEXT NOT NULL,
    -- valid_until_ts for current keys, expired_ts for old ones.
    valid_until_ts INTEGER NOT NULL,
    -- The signed key response as received, re-served by the notary.
    response       TEXT NOT NULL,
    fetched_ts     INTEGER NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
