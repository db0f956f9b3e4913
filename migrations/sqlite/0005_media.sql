-- Media: metadata here, bytes on disk under <data_dir>/media, content-addressed by SHA-256.

CREATE TABLE media (
    server_name    TEXT NOT NULL,
    media_id       TEXT NOT NULL,
    uploader       TEXT NOT NULL,
    content_type   TEXT,
    filename       TEXT,
    -- NULL while a /create'd id waits for its upload.
    sha256         TEXT,
    size           INTEGER,
    created_ts     INTEGER NOT NULL,
    -- For a pending id: when it may no longer be uploaded to.
    expires_ts     INTEGER,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_uploader ON media (uploader, created_ts);

CREATE TABLE media_thumbnails (
    server_name    TEXT NOT NULL,
    media_id       TEXT NOT NULL,
    width          INTEGER NOT NULL,
    height         INTEGER NOT NULL,
    method         TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    size           INTEGER NOT NULL,
    PRIMARY KEY (server_name, media_id, width, height, method)
);
