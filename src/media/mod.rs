//! Media repository: uploads stored once by content hash under the data dir, metadata in the
//! database, thumbnails made on first request and cached.

pub mod thumbnail;

use std::{path::PathBuf, sync::Arc, time::Duration};

use ruma::{OwnedServerName, ServerName, UserId};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{
    accounts::random_string,
    config::MediaConfig,
    error::{MatrixError, Result},
    storage::{media as repo, media::MediaRow, now_ms, Db},
};

/// How long a /create'd media id may wait for its upload.
const PENDING_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;
/// How many created-but-not-uploaded ids one user may hold.
const MAX_PENDING_PER_USER: i64 = 50;

#[derive(Clone)]
pub struct Media {
    db: Db,
    server_name: OwnedServerName,
    root: PathBuf,
    config: MediaConfig,
    /// Thumbnailing is CPU-bound: at most this many at once.
    thumbnailers: Arc<tokio::sync::Semaphore>,
}

/// Stored media, ready to serve.
pub struct Content {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

impl Media {
    pub fn new(db: Db, server_name: OwnedServerName, data_dir: &std::path::Path, config: MediaConfig) -> Result<Self> {
        let root = data_dir.join("media");
        std::fs::create_dir_all(root.join("tmp")).map_err(|e| MatrixError::internal(format!("creating media dir: {e}")))?;
        Ok(Self { db, server_name, root, config, thumbnailers: Arc::new(tokio::sync::Semaphore::new(2)) })
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[0..2]).join(&sha256[2..4]).join(sha256)
    }

    /// Writes bytes once per content (temp file, fsync, rename) and returns their hash.
    async fn store_bytes(&self, bytes: &[u8]) -> Result<String> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let path = self.path_of(&sha256);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(sha256);
        }
        let io = |e: std::io::Error| MatrixError::internal(format!("storing media: {e}"));
        let dir = path.parent().expect("hash path has a parent");
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
        let temp = self.root.join("tmp").join(random_string(16));
        let mut file = tokio::fs::File::create(&temp).await.map_err(io)?;
        file.write_all(bytes).await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        drop(file);
        tokio::fs::rename(&temp, &path).await.map_err(io)?;
        Ok(sha256)
    }

    async fn read_bytes(&self, sha256: &str) -> Result<Vec<u8>> {
        tokio::fs::read(self.path_of(sha256)).await.map_err(|e| MatrixError::internal(format!("reading media: {e}")))
    }

    fn check_size(&self, size: usize) -> Result<()> {
        if size as u64 > self.config.max_upload_bytes {
            return Err(MatrixError::too_large(format!("Media is larger than {} bytes", self.config.max_upload_bytes)));
        }
        Ok(())
    }

    /// POST /upload: stores the bytes and returns the new media id.
    pub async fn upload(&self, uploader: &UserId, content_type: Option<&str>, filename: Option<&str>, bytes: &[u8]) -> Result<String> {
        self.check_size(bytes.len())?;
        let sha256 = self.store_bytes(bytes).await?;
        let media_id = random_string(24);
        repo::insert(
            self.db.pool(),
            self.server_name.as_str(),
            &media_id,
            uploader.as_str(),
            content_type,
            filename,
            Some(&sha256),
            Some(bytes.len() as i64),
            None,
        )
        .await?;
        Ok(media_id)
    }

    /// POST /create: reserves a media id for a later upload; returns (id, expiry).
    pub async fn create_pending(&self, uploader: &UserId) -> Result<(String, i64)> {
        if repo::pending_count(self.db.pool(), uploader.as_str()).await? >= MAX_PENDING_PER_USER {
            return Err(MatrixError::new(http::StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "Too many pending media uploads")
                .with("retry_after_ms", 60_000.into()));
        }
        let media_id = random_string(24);
        let expires = now_ms() + PENDING_LIFETIME_MS;
        repo::insert(self.db.pool(), self.server_name.as_str(), &media_id, uploader.as_str(), None, None, None, None, Some(expires))
            .await?;
        Ok((media_id, expires))
    }

    /// PUT /upload/{server}/{id}: the upload for a created id, once, by its creator.
    pub async fn upload_pending(
        &self,
        uploader: &UserId,
        server_name: &ServerName,
        media_id: &str,
        content_type: Option<&str>,
        filename: Option<&str>,
        bytes: &[u8],
    ) -> Result<()> {
        if server_name != self.server_name {
            return Err(MatrixError::not_found("Unknown media"));
        }
        let row = repo::get(self.db.pool(), server_name.as_str(), media_id).await?.ok_or_else(|| MatrixError::not_found("Unknown media"))?;
        if row.uploader != uploader.as_str() {
            return Err(MatrixError::forbidden("This media id belongs to another user"));
        }
        if row.sha256.is_some() {
            return Err(MatrixError::new(http::StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded"));
        }
        if row.expires_ts.is_some_and(|e| e < now_ms()) {
            return Err(MatrixError::not_found("The media id has expired"));
        }
        self.check_size(bytes.len())?;
        let sha256 = self.store_bytes(bytes).await?;
        let done = repo::complete_pending(
            self.db.pool(),
            server_name.as_str(),
            media_id,
            uploader.as_str(),
            content_type,
            filename,
            &sha256,
            bytes.len() as i64,
        )
        .await?;
        if !done {
            return Err(MatrixError::new(http::StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded"));
        }
        Ok(())
    }

    /// The media's row once uploaded, waiting up to `timeout` for a pending upload.
    async fn uploaded_row(&self, server_name: &ServerName, media_id: &str, timeout: Duration) -> Result<(MediaRow, String)> {
        if server_name != self.server_name {
            // Remote media needs federation, which this server does not have yet.
            return Err(MatrixError::not_found("Remote media is not available"));
        }
        let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(20));
        loop {
            let row = repo::get(self.db.pool(), server_name.as_str(), media_id).await?.ok_or_else(|| MatrixError::not_found("Unknown media"))?;
            if let Some(sha256) = row.sha256.clone() {
                return Ok((row, sha256));
            }
            if row.expires_ts.is_some_and(|e| e < now_ms()) {
                return Err(MatrixError::not_found("Unknown media"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(MatrixError::new(http::StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED", "Media has not been uploaded yet"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn download(&self, server_name: &ServerName, media_id: &str, timeout: Duration) -> Result<Content> {
        let (row, sha256) = self.uploaded_row(server_name, media_id, timeout).await?;
        let bytes = self.read_bytes(&sha256).await?;
        Ok(Content { bytes, content_type: row.content_type, filename: row.filename })
    }

    /// A thumbnail of the requested size and method (the closest standard size), made once.
    pub async fn thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        width: u32,
        height: u32,
        method: thumbnail::Method,
        timeout: Duration,
    ) -> Result<Content> {
        if width == 0 || height == 0 {
            return Err(MatrixError::invalid_param("width and height must be positive"));
        }
        let (row, sha256) = self.uploaded_row(server_name, media_id, timeout).await?;
        let (target_w, target_h, method) = thumbnail::preset_for(width, height, method);
        let method_name = method.as_str();
        if let Some(cached) = repo::thumbnail(self.db.pool(), server_name.as_str(), media_id, target_w as i64, target_h as i64, method_name).await? {
            let bytes = self.read_bytes(&cached.sha256).await?;
            return Ok(Content { bytes, content_type: Some(cached.content_type), filename: None });
        }
        if row.size.unwrap_or(0) as u64 > self.config.max_thumbnail_source_bytes {
            return Err(MatrixError::unknown("The media is too large to thumbnail"));
        }
        let source = self.read_bytes(&sha256).await?;
        let limits = thumbnail::Limits { max_pixels: self.config.max_thumbnail_source_pixels };
        let _permit = self.thumbnailers.acquire().await.map_err(|_| MatrixError::internal("thumbnailer closed"))?;
        let job = tokio::task::spawn_blocking(move || thumbnail::make(&source, target_w, target_h, method, limits));
        let made = tokio::time::timeout(Duration::from_secs(30), job)
            .await
            .map_err(|_| MatrixError::unknown("Thumbnailing took too long"))?
            .map_err(|e| MatrixError::internal(format!("thumbnailer crashed: {e}")))?
            .map_err(MatrixError::unknown)?;
        let thumb_sha = self.store_bytes(&made.bytes).await?;
        repo::insert_thumbnail(
            self.db.pool(),
            server_name.as_str(),
            media_id,
            target_w as i64,
            target_h as i64,
            method_name,
            made.content_type,
            &thumb_sha,
            made.bytes.len() as i64,
        )
        .await?;
        Ok(Content { bytes: made.bytes, content_type: Some(made.content_type.to_owned()), filename: None })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }
}
