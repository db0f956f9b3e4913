-- Refresh tokens (spec v1.3): a login or registration with `refresh_token: true` gets an
-- access token that expires and a refresh token that trades for a new pair. The old refresh
-- token stays usable until the new access or refresh token is used (then it is deleted), so
-- a client that lost a /refresh answer can retry.
ALTER TABLE access_tokens ADD COLUMN expires_ts INTEGER;
-- The refresh token issued with this access token, and whether the access token has been used.
ALTER TABLE access_tokens ADD COLUMN refresh_token_hash TEXT;
ALTER TABLE access_tokens ADD COLUMN used INTEGER NOT NULL DEFAULT 1;

CREATE TABLE refresh_tokens (
    token_hash     TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    -- The refresh token this one replaced (deleted once this pair is used).
    prev_hash      TEXT,
    created_ts     INTEGER NOT NULL
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_prev ON refresh_tokens (prev_hash);
