//! Media over federation: other servers' media fetched with
//! `/_matrix/federation/v1/media/{download,thumbnail}` (multipart answers, or a `Location`
//! to follow), and ours served to them the same way.

use std::time::Duration;

use axum::extract::State;
use ruma::{
    api::federation::authenticated_media::{get_content, get_content_thumbnail, Content as MultipartContent, ContentMetadata, FileOrLocation},
    http_headers::{ContentDisposition, ContentDispositionType},
    ServerName, UInt,
};

use super::{client::read_capped, Federation};
use crate::{
    client_api::extract::{Ruma, RumaResponse},
    error::{MatrixError, Result},
    media::{thumbnail::Method, Content, Media},
};

/// Largest media fetched from another server (the federation client's own cap).
const MAX_MEDIA_BYTES: usize = 64 * 1024 * 1024;

/// Media as another server sent it.
pub struct RemoteContent {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

impl Federation {
    pub async fn fetch_media(&self, server: &ServerName, media_id: &str, timeout: Duration) -> Result<RemoteContent> {
        let mut request = get_content::v1::Request::new(media_id.to_owned());
        request.timeout_ms = timeout;
        let response = self.send(server, request).await?;
        self.media_content(server, response.content).await
    }

    pub async fn fetch_thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        width: u32,
        height: u32,
        method: Method,
        timeout: Duration,
    ) -> Result<RemoteContent> {
        let mut request = get_content_thumbnail::v1::Request::new(media_id.to_owned(), UInt::from(width), UInt::from(height));
        request.method = Some(match method {
            Method::Crop => ruma::media::Method::Crop,
            Method::Scale => ruma::media::Method::Scale,
        });
        request.timeout_ms = timeout;
        let response = self.send(server, request).await?;
        self.media_content(server, response.content).await
    }

    /// The bytes of a multipart answer, or of the URL it points at (through the same guarded
    /// client: a `Location` into a blocked range is refused like any destination).
    async fn media_content(&self, server: &ServerName, content: FileOrLocation) -> Result<RemoteContent> {
        match content {
            FileOrLocation::File(file) => Ok(RemoteContent {
                bytes: file.file,
                content_type: file.content_type,
                filename: file.content_disposition.and_then(|d| d.filename),
            }),
            FileOrLocation::Location(url) => {
                self.check_destination(&url).await?;
                let bad_gateway = |e: String| MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("media of {server}: {e}"));
                let response = self.http.get(&url).send().await.map_err(|e| bad_gateway(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(MatrixError::not_found(format!("{server} pointed at {url}, which answered {}", response.status())));
                }
                let header = |name: http::HeaderName| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let content_type = header(http::header::CONTENT_TYPE);
                let filename = header(http::header::CONTENT_DISPOSITION)
                    .and_then(|d| d.parse::<ContentDisposition>().ok())
                    .and_then(|d| d.filename);
                let bytes = read_capped(response, MAX_MEDIA_BYTES).await.map_err(bad_gateway)?;
                Ok(RemoteContent { bytes, content_type, filename })
            }
            _ => Err(MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("{server} answered media in an unknown form"))),
        }
    }
}

/// Our media as a multipart answer; the disposition follows the same safe-types rule clients get.
fn multipart(content: Content) -> FileOrLocation {
    let content_type = content.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    let disposition = if crate::client_api::media::inline_safe(&content_type) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let disposition = ContentDisposition::new(disposition).with_filename(content.filename);
    FileOrLocation::File(MultipartContent::new(content.bytes, content_type, disposition))
}

pub async fn serve_download(State(media): State<Media>, request: Ruma<get_content::v1::Request>) -> Result<RumaResponse<get_content::v1::Response>> {
    let b = &request.body;
    let content = media.download(&media.server_name().to_owned(), &b.media_id, b.timeout_ms).await?;
    Ok(RumaResponse(get_content::v1::Response::new(ContentMetadata::new(), multipart(content))))
}

pub async fn serve_thumbnail(
    State(media): State<Media>,
    request: Ruma<get_content_thumbnail::v1::Request>,
) -> Result<RumaResponse<get_content_thumbnail::v1::Response>> {
    let b = &request.body;
    let method = crate::client_api::media::method_of(b.method.as_ref())?;
    let (width, height) = (crate::client_api::media::dimension(b.width)?, crate::client_api::media::dimension(b.height)?);
    let content = media.thumbnail(&media.server_name().to_owned(), &b.media_id, width, height, method, b.timeout_ms).await?;
    Ok(RumaResponse(get_content_thumbnail::v1::Response::new(ContentMetadata::new(), multipart(content))))
}
