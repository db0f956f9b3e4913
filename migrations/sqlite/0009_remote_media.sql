-- Other servers' media, cached: rows of `media` under the remote server's name, with when
-- they were last served (their expiry counts from it). NULL for local media.
ALTER TABLE media ADD COLUMN last_access_ts INTEGER;
CREATE INDEX media_last_access ON media (last_access_ts) WHERE last_access_ts IS NOT NULL;
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
