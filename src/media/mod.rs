//! Media repository: uploads stored once by content hash under the data dir, metadata in the
//! database, thumbnails made on first request and cached; other servers' media fetched over
//! federation into the same store and expired when unused.

pub mod preview;
pub mod thumbnail;

use std::{path::PathBuf, sync::Arc, time::Duration};

use ruma::{OwnedServerName, ServerName, UserId};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{
    accounts::random_string,
    config::MediaConfig,
    error::{MatrixError, Result},
    federation::Federation,
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
    /// Held shared from writing bytes until a row points at them, and exclusively while
    /// unused bytes are deleted, so no write can lose its file to a purge.
    content_guard: Arc<tokio::sync::RwLock<()>>,
    /// Fetches other servers' media; None when federation is off.
    federation: Option<Federation>,
}

/// Bytes written to the store, protected from purging until the guard is dropped.
struct Stored {
    sha256: String,
    _guard: tokio::sync::OwnedRwLockReadGuard<()>,
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
        Ok(Self {
            db,
            server_name,
            root,
            config,
            thumbnailers: Arc::new(tokio::sync::Semaphore::new(2)),
            content_guard: Arc::default(),
            federation: None,
        })
    }

    /// Lets the repository fetch other servers' media.
    pub fn with_federation(mut self, federation: Federation) -> Self {
        self.federation = Some(federation);
        self
    }

    fn is_local(&self, server_name: &ServerName) -> bool {
        server_name == self.server_name
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[0..2]).join(&sha256[2..4]).join(sha256)
    }

    /// Writes bytes once per content (temp file, fsync, rename) and returns their hash; keep
    /// the result until a row refers to the bytes.
    async fn store_bytes(&self, bytes: &[u8]) -> Result<Stored> {
        let guard = self.content_guard.clone().read_owned().await;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let path = self.path_of(&sha256);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(Stored { sha256, _guard: guard });
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
        Ok(Stored { sha256, _guard: guard })
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
        let stored = self.store_bytes(bytes).await?;
        let media_id = random_string(24);
        repo::insert(
            self.db.pool(),
            self.server_name.as_str(),
            &media_id,
            uploader.as_str(),
            content_type,
            filename,
            Some(&stored.sha256),
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
        let stored = self.store_bytes(bytes).await?;
        let done = repo::complete_pending(
            self.db.pool(),
            server_name.as_str(),
            media_id,
            uploader.as_str(),
            content_type,
            filename,
            &stored.sha256,
            bytes.len() as i64,
        )
        .await?;
        if !done {
            return Err(MatrixError::new(http::StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded"));
        }
        Ok(())
    }

    /// The media's row and content hash: local media once uploaded, other servers' media
    /// from the cache or fetched into it.
    async fn original(&self, server_name: &ServerName, media_id: &str, timeout: Duration) -> Result<(MediaRow, String)> {
        if self.is_local(server_name) {
            self.uploaded_row(server_name, media_id, timeout).await
        } else {
            self.remote_original(server_name, media_id, timeout).await
        }
    }

    async fn remote_original(&self, server_name: &ServerName, media_id: &str, timeout: Duration) -> Result<(MediaRow, String)> {
        if let Some(row) = repo::get(self.db.pool(), server_name.as_str(), media_id).await? {
            if let Some(sha256) = row.sha256.clone() {
                repo::touch_remote(self.db.pool(), server_name.as_str(), media_id).await?;
                return Ok((row, sha256));
            }
        }
        let federation = self.federation.as_ref().ok_or_else(|| MatrixError::not_found("Remote media is not available"))?;
        let fetched = federation.fetch_media(server_name, media_id, timeout).await?;
        self.check_size(fetched.bytes.len())?;
        let stored = self.store_bytes(&fetched.bytes).await?;
        let size = fetched.bytes.len() as i64;
        repo::insert_remote(
            self.db.pool(),
            server_name.as_str(),
            media_id,
            fetched.content_type.as_deref(),
            fetched.filename.as_deref(),
            Some(&stored.sha256),
            size,
        )
        .await?;
        let row = MediaRow {
            uploader: String::new(),
            content_type: fetched.content_type,
            filename: fetched.filename,
            sha256: Some(stored.sha256.clone()),
            size: Some(size),
            expires_ts: None,
        };
        Ok((row, stored.sha256.clone()))
    }

    /// A local media row once uploaded, waiting up to `timeout` for a pending upload.
    async fn uploaded_row(&self, server_name: &ServerName, media_id: &str, timeout: Duration) -> Result<(MediaRow, String)> {
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
        let (row, sha256) = self.original(server_name, media_id, timeout).await?;
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
        let (target_w, target_h, method) = thumbnail::preset_for(width, height, method);
        let method_name = method.as_str();
        if let Some(cached) = repo::thumbnail(self.db.pool(), server_name.as_str(), media_id, target_w as i64, target_h as i64, method_name).await? {
            let bytes = self.read_bytes(&cached.sha256).await?;
            if !self.is_local(server_name) {
                repo::touch_remote(self.db.pool(), server_name.as_str(), media_id).await?;
            }
            return Ok(Content { bytes, content_type: Some(cached.content_type), filename: None });
        }
        // Other servers' thumbnails come from them when they offer one; else from the original.
        if let (false, Some(federation)) = (self.is_local(server_name), &self.federation) {
            match federation.fetch_thumbnail(server_name, media_id, target_w, target_h, method, timeout).await {
                Ok(fetched) if fetched.bytes.len() as u64 <= self.config.max_upload_bytes => {
                    let content_type = fetched.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
                    let stored = self.store_bytes(&fetched.bytes).await?;
                    repo::insert_remote_placeholder(self.db.pool(), server_name.as_str(), media_id).await?;
                    repo::insert_thumbnail(
                        self.db.pool(),
                        server_name.as_str(),
                        media_id,
                        target_w as i64,
                        target_h as i64,
                        method_name,
                        &content_type,
                        &stored.sha256,
                        fetched.bytes.len() as i64,
                    )
                    .await?;
                    return Ok(Content { bytes: fetched.bytes, content_type: Some(content_type), filename: None });
                }
                Ok(_) => tracing::debug!(%server_name, media_id, "remote thumbnail too large; thumbnailing the original"),
                Err(error) => tracing::debug!(%server_name, media_id, %error, "no remote thumbnail; thumbnailing the original"),
            }
        }
        let (row, sha256) = self.original(server_name, media_id, timeout).await?;
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
        let stored = self.store_bytes(&made.bytes).await?;
        repo::insert_thumbnail(
            self.db.pool(),
            server_name.as_str(),
            media_id,
            target_w as i64,
            target_h as i64,
            method_name,
            made.content_type,
            &stored.sha256,
            made.bytes.len() as i64,
        )
        .await?;
        Ok(Content { bytes: made.bytes, content_type: Some(made.content_type.to_owned()), filename: None })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Deletes cached remote media unused for the configured lifetime, in the background.
    pub fn spawn_remote_expiry(&self) {
        let lifetime_secs = self.config.remote_media_lifetime_secs;
        if lifetime_secs == 0 {
            return;
        }
        let this = self.clone();
        let every = Duration::from_secs((lifetime_secs / 2).clamp(1, 3600));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(error) = this.expire_remote(lifetime_secs).await {
                    tracing::warn!(%error, "expiring remote media failed");
                }
            }
        });
    }

    /// One pass of remote media expiry; returns how many media were removed.
    pub async fn expire_remote(&self, lifetime_secs: u64) -> Result<usize> {
        let before = now_ms() - (lifetime_secs as i64) * 1000;
        let mut removed = 0;
        loop {
            let batch = repo::remote_unused_since(self.db.pool(), before, 100).await?;
            if batch.is_empty() {
                return Ok(removed);
            }
            for (server_name, media_id) in batch {
                let mut tx = self.db.begin_write().await?;
                let hashes = repo::delete_with_thumbnails(&mut tx, &server_name, &media_id).await?;
                tx.commit().await?;
                removed += 1;
                let _exclusive = self.content_guard.write().await;
                for sha256 in hashes {
                    if !repo::content_in_use(self.db.pool(), &sha256).await? {
                        if let Err(error) = tokio::fs::remove_file(self.path_of(&sha256)).await {
                            tracing::debug!(%error, sha256, "media file already gone");
                        }
                    }
                }
            }
        }
    }
}
