-- OpenID tokens (`/user/{userId}/openid/request_token`), exchanged by third parties for the
-- user id at `/_matrix/federation/v1/openid/userinfo`. Stored as SHA-256, like access tokens.
CREATE TABLE openid_tokens (
    token_hash     TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    expires_ts     INTEGER NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
