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

/// Records another server's media fetched into the cache: its content, or (`sha256` None)
/// only that thumbnails of it are cached, so they expire with it.
#[allow(clippy::too_many_arguments)]
pub async fn insert_remote<'c>(
    db: impl Executor<'c, Database = Any>,
    server_name: &str,
    media_id: &str,
    content_type: Option<&str>,
    filename: Option<&str>,
    sha256: Option<&str>,
    size: i64,
) -> sqlx::Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO media (server_name, media_id, uploader, content_type, filename, sha256, size, created_ts, last_access_ts) \
         VALUES ($1, $2, '', $3, $4, $5, $6, $7, $7) ON CONFLICT (server_name, media_id) DO UPDATE SET \
         content_type = excluded.content_type, filename = excluded.filename, sha256 = excluded.sha256, \
         size = excluded.size, last_access_ts = excluded.last_access_ts WHERE media.sha256 IS NULL AND excluded.sha256 IS NOT NULL",
    )
    .bind(server_name)
    .bind(media_id)
    .bind(content_type)
    .bind(filename)
    .bind(sha256)
    .bind(size)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn insert_remote_placeholder<'c>(db: impl Executor<'c, Database = Any>, server_name: &str, media_id: &str) -> sqlx::Result<()> {
    insert_remote(db, server_name, media_id, None, None, None, 0).await
}

/// Notes that cached remote media was served now.
pub async fn touch_remote<'c>(db: impl Executor<'c, Database = Any>, server_name: &str, media_id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE media SET last_access_ts = $3 WHERE server_name = $1 AND media_id = $2 AND last_access_ts IS NOT NULL")
        .bind(server_name)
        .bind(media_id)
        .bind(now_ms())
        .execute(db)
        .await?;
    Ok(())
}

/// Cached remote media last served before `before_ts`: (server_name, media_id).
pub async fn remote_unused_since<'c>(db: impl Executor<'c, Database = Any>, before_ts: i64, limit: i64) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT server_name, media_id FROM media WHERE last_access_ts < $1 LIMIT $2")
        .bind(before_ts)
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Deletes a media row and its thumbnails; returns the content hashes they pointed at.
pub async fn delete_with_thumbnails(tx: &mut super::Tx, server_name: &str, media_id: &str) -> sqlx::Result<Vec<String>> {
    let mut hashes: Vec<String> = sqlx::query("SELECT sha256 FROM media_thumbnails WHERE server_name = $1 AND media_id = $2")
        .bind(server_name)
        .bind(media_id)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    let own = sqlx::query("SELECT sha256 FROM media WHERE server_name = $1 AND media_id = $2")
        .bind(server_name)
        .bind(media_id)
        .fetch_optional(&mut **tx)
        .await?;
    hashes.extend(own.and_then(|row| row.get::<Option<String>, _>(0)));
    for table in ["media_thumbnails", "media"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE server_name = $1 AND media_id = $2"))
            .bind(server_name)
            .bind(media_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(hashes)
}

/// Whether any media or thumbnail still uses these bytes.
pub async fn content_in_use<'c>(db: impl Executor<'c, Database = Any>, sha256: &str) -> sqlx::Result<bool> {
    let row = sqlx::query(
        // CASE: a number on both engines (a bare EXISTS is an integer on SQLite, a boolean
        // on PostgreSQL).
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM media WHERE sha256 = $1) OR EXISTS (SELECT 1 FROM media_thumbnails WHERE sha256 = $1) \
         THEN 1 ELSE 0 END",
    )
    .bind(sha256)
    .fetch_one(db)
    .await?;
    Ok(row.get::<i64, _>(0) != 0)
}
