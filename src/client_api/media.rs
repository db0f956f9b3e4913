//! Media: uploads, authenticated downloads and thumbnails, config, and the legacy
//! unauthenticated endpoints (served only when configured, as Synapse does).

use std::time::Duration;

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use ruma::{
    api::client::{
        authenticated_media::{get_content, get_content_as_filename, get_content_thumbnail, get_media_config, get_media_preview},
        media::{self as legacy, create_content, create_content_async, create_mxc_uri},
    },
    media::Method as RumaMethod,
    ServerName,
};
use serde_json::json;

use super::extract::{Ruma, RumaResponse};
use crate::{
    error::{MatrixError, Result},
    media::{preview::UrlPreviews, thumbnail::Method, Content, Media},
};

/// Types a browser may show inline; anything else (SVG and HTML included) downloads.
const INLINE_SAFE: &[&str] = &[
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json", "image/jpeg", "image/gif",
    "image/png", "image/apng", "image/webp", "image/avif", "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav", "audio/x-wav",
    "audio/x-pn-wav", "audio/flac", "audio/x-flac",
];

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; \
                   media-src 'self'; object-src 'self';";

/// Whether a content type may be shown inline by a browser.
pub fn inline_safe(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    INLINE_SAFE.contains(&essence.as_str())
}

/// Serves stored bytes with the safe-serving headers.
fn serve(content: Content, requested_name: Option<&str>) -> Response {
    let content_type = content.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    let disposition_type = if inline_safe(&content_type) { "inline" } else { "attachment" };
    let disposition = match requested_name.or(content.filename.as_deref()) {
        Some(name) => {
            let encoded: String = name
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{disposition_type}; filename*=utf-8''{encoded}")
        }
        None => disposition_type.to_owned(),
    };
    let mut response = Response::new(Body::from(content.bytes));
    let headers = response.headers_mut();
    let value = |v: &str| HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, value(&content_type));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).unwrap_or_else(|_| HeaderValue::from_static("attachment")));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400, immutable"));
    response
}

fn mxc(media: &Media, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", media.server_name())
}

pub fn method_of(method: Option<&RumaMethod>) -> Result<Method> {
    match method {
        None | Some(RumaMethod::Scale) => Ok(Method::Scale),
        Some(RumaMethod::Crop) => Ok(Method::Crop),
        Some(other) => Err(MatrixError::invalid_param(format!("Unknown thumbnail method {}", other.as_str()))),
    }
}

pub fn dimension(value: ruma::UInt) -> Result<u32> {
    u32::try_from(u64::from(value)).map_err(|_| MatrixError::invalid_param("Thumbnail dimensions are too large"))
}

pub async fn upload(State(media): State<Media>, request: Ruma<create_content::v3::Request>) -> Result<Json<serde_json::Value>> {
    let b = &request.body;
    let id = media.upload(&request.user().user_id, b.content_type.as_deref(), b.filename.as_deref(), &b.file).await?;
    Ok(Json(json!({ "content_uri": mxc(&media, &id) })))
}

pub async fn create(State(media): State<Media>, request: Ruma<create_mxc_uri::v1::Request>) -> Result<Json<serde_json::Value>> {
    let (id, expires) = media.create_pending(&request.user().user_id).await?;
    Ok(Json(json!({ "content_uri": mxc(&media, &id), "unused_expires_at": expires })))
}

pub async fn upload_to(State(media): State<Media>, request: Ruma<create_content_async::v3::Request>) -> Result<Json<serde_json::Value>> {
    let b = &request.body;
    media
        .upload_pending(&request.user().user_id, &b.server_name, &b.media_id, b.content_type.as_deref(), b.filename.as_deref(), &b.file)
        .await?;
    Ok(Json(json!({})))
}

pub async fn config(State(media): State<Media>, _: Ruma<get_media_config::v1::Request>) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!({ "m.upload.size": media.config().max_upload_bytes })))
}

pub async fn download(State(media): State<Media>, request: Ruma<get_content::v1::Request>) -> Result<Response> {
    let b = &request.body;
    Ok(serve(media.download(&b.server_name, &b.media_id, b.timeout_ms).await?, None))
}

pub async fn download_as(State(media): State<Media>, request: Ruma<get_content_as_filename::v1::Request>) -> Result<Response> {
    let b = &request.body;
    Ok(serve(media.download(&b.server_name, &b.media_id, b.timeout_ms).await?, Some(&b.filename)))
}

pub async fn thumbnail(State(media): State<Media>, request: Ruma<get_content_thumbnail::v1::Request>) -> Result<Response> {
    let b = &request.body;
    let content = media
        .thumbnail(&b.server_name, &b.media_id, dimension(b.width)?, dimension(b.height)?, method_of(b.method.as_ref())?, b.timeout_ms)
        .await?;
    Ok(serve(content, None))
}

/// The legacy endpoints are served only when configured; `allow_remote=false` keeps them to
/// this server's own media.
fn legacy_allowed(media: &Media, server_name: &ServerName, allow_remote: bool) -> Result<()> {
    if !media.config().legacy_unauthenticated {
        return Err(MatrixError::not_found("Unauthenticated media is disabled: use /_matrix/client/v1/media"));
    }
    if !allow_remote && server_name != media.server_name() {
        return Err(MatrixError::not_found("Remote media not requested (allow_remote=false)"));
    }
    Ok(())
}

async fn legacy_download(
    media: &Media,
    server_name: &ServerName,
    media_id: &str,
    allow_remote: bool,
    timeout: Duration,
    name: Option<&str>,
) -> Result<Response> {
    legacy_allowed(media, server_name, allow_remote)?;
    Ok(serve(media.download(server_name, media_id, timeout).await?, name))
}

#[allow(deprecated)]
pub async fn legacy_get(State(media): State<Media>, request: Ruma<legacy::get_content::v3::Request>) -> Result<Response> {
    let b = &request.body;
    legacy_download(&media, &b.server_name, &b.media_id, b.allow_remote, b.timeout_ms, None).await
}

#[allow(deprecated)]
pub async fn legacy_get_as(State(media): State<Media>, request: Ruma<legacy::get_content_as_filename::v3::Request>) -> Result<Response> {
    let b = &request.body;
    legacy_download(&media, &b.server_name, &b.media_id, b.allow_remote, b.timeout_ms, Some(&b.filename)).await
}

#[allow(deprecated)]
pub async fn legacy_thumbnail(State(media): State<Media>, request: Ruma<legacy::get_content_thumbnail::v3::Request>) -> Result<Response> {
    let b = &request.body;
    legacy_allowed(&media, &b.server_name, b.allow_remote)?;
    let content = media
        .thumbnail(&b.server_name, &b.media_id, dimension(b.width)?, dimension(b.height)?, method_of(b.method.as_ref())?, b.timeout_ms)
        .await?;
    Ok(serve(content, None))
}

#[allow(deprecated)]
pub async fn legacy_config(State(media): State<Media>, _: Ruma<legacy::get_media_config::v3::Request>) -> Result<Response> {
    Ok(Json(json!({ "m.upload.size": media.config().max_upload_bytes })).into_response())
}

pub async fn preview_url(
    State(previews): State<UrlPreviews>,
    request: Ruma<get_media_preview::v1::Request>,
) -> Result<RumaResponse<get_media_preview::v1::Response>> {
    let preview = previews.preview(&request.user().user_id, &request.body.url).await?;
    Ok(RumaResponse(get_media_preview::v1::Response::from_serialize(&preview)?))
}

#[allow(deprecated)]
pub async fn legacy_preview_url(
    State(previews): State<UrlPreviews>,
    request: Ruma<legacy::get_media_preview::v3::Request>,
) -> Result<RumaResponse<legacy::get_media_preview::v3::Response>> {
    let preview = previews.preview(&request.user().user_id, &request.body.url).await?;
    Ok(RumaResponse(legacy::get_media_preview::v3::Response::from_serialize(&preview)?))
}
