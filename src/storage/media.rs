//! Media metadata and thumbnails (the bytes live on disk, content-addressed).

use sqlx::{Any, Executor, Row};

use super::now_ms;

#[derive(Debug, Clone)]
pub struct MediaRow {
    pub uploader: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub sha256: Option<String>,
    pub size: Option<i64>,
    pub expires_ts: Option<i64>,
}

#[allow(clippy::too_many_arguments)]
pub async fn insert<'c>(
    db: impl Executor<'c, Database = Any>,
    server_name: &str,
    media_id: &str,
    uploader: &str,
    content_type: Option<&str>,
    filename: Option<&str>,
    sha256: Option<&str>,
    size: Option<i64>,
    expires_ts: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO media (server_name, media_id, uploader, content_type, filename, sha256, size, created_ts, expires_ts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(server_name)
    .bind(media_id)
    .bind(uploader)
    .bind(content_type)
    .bind(filename)
    .bind(sha256)
    .bind(size)
    .bind(now_ms())
    .bind(expires_ts)
    .execute(db)
    .await?;
    Ok(())
}

/// Fills in a pending id's content; false if it was not pending (or not the uploader's).
#[allow(clippy::too_many_arguments)]
pub async fn complete_pending<'c>(
    db: impl Executor<'c, Database = Any>,
    server_name: &str,
    media_id: &str,
    uploader: &str,
    content_type: Option<&str>,
    filename: Option<&str>,
    sha256: &str,
    size: i64,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE media SET content_type = $4, filename = $5, sha256 = $6, size = $7, expires_ts = NULL \
         WHERE server_name = $1 AND media_id = $2 AND uploader = $3 AND sha256 IS NULL",
    )
    .bind(server_name)
    .bind(media_id)
    .bind(uploader)
    .bind(content_type)
    .bind(filename)
    .bind(sha256)
    .bind(size)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn get<'c>(db: impl Executor<'c, Database = Any>, server_name: &str, media_id: &str) -> sqlx::Result<Option<MediaRow>> {
    let row = sqlx::query(
        "SELECT uploader, content_type, filename, sha256, size, expires_ts FROM media WHERE server_name = $1 AND media_id = $2",
    )
    .bind(server_name)
    .bind(media_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| MediaRow {
        uploader: row.get(0),
        content_type: row.get(1),
        filename: row.get(2),
        sha256: row.get(3),
        size: row.get(4),
        expires_ts: row.get(5),
    }))
}

/// Pending (created, not yet uploaded, unexpired) ids of a user.
pub async fn pending_count<'c>(db: impl Executor<'c, Database = Any>, uploader: &str) -> sqlx::Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) FROM media WHERE uploader = $1 AND sha256 IS NULL AND expires_ts > $2")
        .bind(uploader)
        .bind(now_ms())
        .fetch_one(db)
        .await?;
    Ok(row.get(0))
}

pub struct ThumbnailRow {
    pub content_type: String,
    pub sha256: String,
}

pub async fn thumbnail<'c>(
    db: impl Executor<'c, Database = Any>,
    server_name: &str,
    media_id: &str,
    width: i64,
    height: i64,
    method: &str,
) -> sqlx::Result<Option<ThumbnailRow>> {
    let row = sqlx::query(
        "SELECT content_type, sha256 FROM media_thumbnails WHERE server_name = $1 AND media_id = $2 \
         AND width = $3 AND height = $4 AND method = $5",
    )
    .bind(server_name)
    .bind(media_id)
    .bind(width)
    .bind(height)
    .bind(method)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| ThumbnailRow { content_type: row.get(0), sha256: row.get(1) }))
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_thumbnail<'c>(
    db: impl Executor<'c, Database = Any>,
    server_name: &str,
    media_id: &str,
    width: i64,
    height: i64,
    method: &str,
    content_type: &str,
    sha256: &str,
    size: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO media_thumbnails (server_name, media_id, width, height, method, content_type, sha256, size) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(server_name)
    .bind(media_id)
    .bind(width)
    .bind(height)
    .bind(method)
    .bind(content_type)
    .bind(sha256)
    .bind(size)
    .execute(db)
    .await?;
    Ok(())
}
