//! Media over HTTP: upload and download, create-then-upload, thumbnails of PNG, JPEG, GIF and
//! WebP, limits, errors, safe serving headers, legacy endpoints; media of another weft server
//! fetched over federation, cached, and expired.

mod common;

use std::io::Cursor;

use common::{enc, TestServer};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use reqwest::Method;
use serde_json::json;

/// A `width`×`height` test image with a gradient, encoded as `format`.
fn image_bytes(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(image).write_to(&mut Cursor::new(&mut bytes), format).unwrap();
    bytes
}

async fn upload(server: &TestServer, token: &str, bytes: Vec<u8>, content_type: &str, filename: &str) -> (String, String) {
    let reply = server
        .raw_typed(Method::POST, &format!("/_matrix/media/v3/upload?filename={}", enc(filename)), Some(token), Some(bytes), content_type)
        .await
        .ok();
    let uri = reply["content_uri"].as_str().unwrap();
    let (server_name, media_id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    (server_name.to_owned(), media_id.to_owned())
}

async fn fetch(server: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = server.http.get(format!("{}{}", server.base, path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn upload_then_download_identical_bytes() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let png = image_bytes(64, 48, ImageFormat::Png);
    let (server_name, media_id) = upload(&server, &token, png.clone(), "image/png", "cat picture.png").await;
    assert_eq!(server_name, "localhost");

    let response = fetch(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{server_name}/{media_id}")).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-disposition"], "inline; filename*=utf-8''cat%20picture.png");
    assert!(headers["content-security-policy"].to_str().unwrap().starts_with("sandbox"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(response.bytes().await.unwrap().to_vec(), png);

    // With a file name in the path.
    let named = fetch(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{server_name}/{media_id}/other.png")).await;
    assert_eq!(named.headers()["content-disposition"], "inline; filename*=utf-8''other.png");

    // Authenticated media needs a token.
    let anonymous = server.get(&format!("/_matrix/client/v1/media/download/{server_name}/{media_id}"), None).await;
    anonymous.err(401, "M_MISSING_TOKEN");

    // The same bytes are stored once.
    upload(&server, &token, png.clone(), "image/png", "again.png").await;
    let media_root = server.data_dir().join("media");
    let files = walk(&media_root).into_iter().filter(|p| !p.strip_prefix(&media_root).unwrap().starts_with("tmp")).count();
    assert_eq!(files, 1);

    let config = server.get("/_matrix/client/v1/media/config", Some(&token)).await.ok();
    assert_eq!(config["m.upload.size"], 50 * 1024 * 1024);
    server.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn dangerous_types_download_as_attachments() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    for (content_type, name) in [("image/svg+xml", "x.svg"), ("text/html", "x.html"), ("application/javascript", "x.js")] {
        let (s, id) = upload(&server, &token, b"<svg onload=alert(1)>".to_vec(), content_type, name).await;
        let response = fetch(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{s}/{id}")).await;
        let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
        assert!(disposition.starts_with("attachment"), "{content_type}: {disposition}");
    }
    server.stop().await;
}

#[tokio::test]
async fn create_then_upload() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let created = server.post("/_matrix/media/v1/create", Some(&alice), json!({})).await.ok();
    let uri = created["content_uri"].as_str().unwrap();
    assert!(created["unused_expires_at"].as_i64().unwrap() > 0);
    let (server_name, media_id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();

    // Not uploaded yet: the download waits, then says so.
    let pending = server.get(&format!("/_matrix/client/v1/media/download/{server_name}/{media_id}?timeout_ms=200"), Some(&alice)).await;
    pending.err(504, "M_NOT_YET_UPLOADED");

    let path = format!("/_matrix/media/v3/upload/{server_name}/{media_id}?filename=notes.txt");
    server.raw_typed(Method::PUT, &path, Some(&bob), Some(b"bob's".to_vec()), "text/plain").await.err(403, "M_FORBIDDEN");
    server.raw_typed(Method::PUT, &path, Some(&alice), Some(b"hello notes".to_vec()), "text/plain").await.ok();
    server
        .raw_typed(Method::PUT, &path, Some(&alice), Some(b"again".to_vec()), "text/plain")
        .await
        .err(409, "M_CANNOT_OVERWRITE_MEDIA");
    server
        .raw_typed(Method::PUT, &format!("/_matrix/media/v3/upload/{server_name}/unknownid"), Some(&alice), Some(b"x".to_vec()), "text/plain")
        .await
        .err(404, "M_NOT_FOUND");
    let response = fetch(&server, Some(&bob), &format!("/_matrix/client/v1/media/download/{server_name}/{media_id}")).await;
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"hello notes");
    server.stop().await;
}

#[tokio::test]
async fn thumbnails_of_every_format() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    for (format, content_type) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let (s, id) = upload(&server, &token, image_bytes(1000, 500, format), content_type, "pic").await;
        for (width, height, method, expected) in [
            (96, 96, "crop", (96, 96)),
            (30, 30, "crop", (32, 32)),
            (320, 240, "scale", (320, 160)),
            (100, 100, "scale", (320, 160)),
            (800, 600, "scale", (800, 400)),
        ] {
            let path = format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?width={width}&height={height}&method={method}");
            for _ in 0..2 {
                // The second request is served from the cache.
                let response = fetch(&server, Some(&token), &path).await;
                assert_eq!(response.status(), 200, "{content_type} {width}x{height} {method}");
                let served_type = response.headers()["content-type"].to_str().unwrap().to_owned();
                let bytes = response.bytes().await.unwrap();
                let thumb = image::load_from_memory(&bytes).unwrap();
                assert_eq!((thumb.width(), thumb.height()), expected, "{content_type} {width}x{height} {method}");
                let expected_type = if format == ImageFormat::Jpeg { "image/jpeg" } else { "image/png" };
                assert_eq!(served_type, expected_type);
            }
        }
    }
    // A small image is never enlarged.
    let (s, id) = upload(&server, &token, image_bytes(20, 10, ImageFormat::Png), "image/png", "tiny").await;
    let response = fetch(&server, Some(&token), &format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?width=96&height=96&method=crop")).await;
    let thumb = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (20, 10));
    server.stop().await;
}

#[tokio::test]
async fn media_errors() {
    let server = TestServer::start_with(|c| c.media.max_upload_bytes = 1000).await;
    let (_, token) = server.register("alice").await;
    server
        .raw_typed(Method::POST, "/_matrix/media/v3/upload", Some(&token), Some(vec![0u8; 2000]), "application/octet-stream")
        .await
        .err(413, "M_TOO_LARGE");
    server.get("/_matrix/client/v1/media/download/localhost/doesnotexist", Some(&token)).await.err(404, "M_NOT_FOUND");
    // A server that does not exist: the fetch fails at the gateway.
    server.get("/_matrix/client/v1/media/download/elsewhere.invalid/abc", Some(&token)).await.err(502, "M_UNKNOWN");
    let (s, text) = upload(&server, &token, b"just text".to_vec(), "text/plain", "a.txt").await;
    let base = format!("/_matrix/client/v1/media/thumbnail/{s}/{text}");
    server.get(&format!("{base}?width=32&height=32&method=crop"), Some(&token)).await.err(400, "M_UNKNOWN");
    server.get(&format!("{base}?width=0&height=32"), Some(&token)).await.err(400, "M_INVALID_PARAM");
    server.get(&format!("{base}?width=-5&height=32"), Some(&token)).await.err(400, "M_INVALID_PARAM");
    server.get(&format!("{base}?width=32&height=32&method=stretch"), Some(&token)).await.err(400, "M_INVALID_PARAM");
    server.get(&format!("{base}?height=32"), Some(&token)).await.err(400, "M_MISSING_PARAM");
    // A broken image: a clean error, and the server keeps working.
    let mut broken = image_bytes(50, 50, ImageFormat::Png);
    broken.truncate(broken.len() / 2);
    let (s, id) = upload(&server, &token, broken, "image/png", "broken.png").await;
    server.get(&format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?width=32&height=32"), Some(&token)).await.err(400, "M_UNKNOWN");
    server.get("/_matrix/client/versions", None).await.ok();
    server.stop().await;
}

#[tokio::test]
async fn legacy_endpoints_follow_config() {
    let server = TestServer::start().await;
    let (_, token) = server.register("alice").await;
    let (s, id) = upload(&server, &token, image_bytes(40, 40, ImageFormat::Png), "image/png", "a.png").await;
    server.get(&format!("/_matrix/media/v3/download/{s}/{id}"), None).await.err(404, "M_NOT_FOUND");
    server.stop().await;

    let open = TestServer::start_with(|c| c.media.legacy_unauthenticated = true).await;
    let (_, token) = open.register("alice").await;
    let png = image_bytes(40, 40, ImageFormat::Png);
    let (s, id) = upload(&open, &token, png.clone(), "image/png", "a.png").await;
    let response = fetch(&open, None, &format!("/_matrix/media/v3/download/{s}/{id}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().to_vec(), png);
    let thumb = fetch(&open, None, &format!("/_matrix/media/v3/thumbnail/{s}/{id}?width=32&height=32&method=crop")).await;
    assert_eq!(thumb.status(), 200);
    open.stop().await;
}

#[tokio::test]
async fn media_of_another_server_over_federation() {
    let mut a = common::federating_server().await;
    let b = common::federating_server_with(|c| c.media.remote_media_lifetime_secs = 2).await;
    let (_, alice) = a.register("alice").await;
    let (_, bob) = b.register("bob").await;
    let png = image_bytes(640, 480, ImageFormat::Png);
    let (origin, media_id) = upload(&a, &alice, png.clone(), "image/png", "view.png").await;
    let pdf = b"%PDF-1.4 not really".to_vec();
    let (_, document) = upload(&a, &alice, pdf.clone(), "application/pdf", "report.pdf").await;

    // Bob's server fetches the original from alice's server, bytes, type and name intact.
    let response = fetch(&b, Some(&bob), &format!("/_matrix/client/v1/media/download/{origin}/{media_id}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["content-disposition"], "inline; filename*=utf-8''view.png");
    assert_eq!(response.bytes().await.unwrap().to_vec(), png);
    let response = fetch(&b, Some(&bob), &format!("/_matrix/client/v1/media/download/{origin}/{document}")).await;
    assert_eq!(response.headers()["content-disposition"], "attachment; filename*=utf-8''report.pdf");
    assert_eq!(response.bytes().await.unwrap().to_vec(), pdf);

    // A thumbnail made by alice's server, of the requested size and method.
    let thumb = fetch(&b, Some(&bob), &format!("/_matrix/client/v1/media/thumbnail/{origin}/{media_id}?width=96&height=96&method=crop")).await;
    assert_eq!(thumb.status(), 200);
    let decoded = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (96, 96));

    let unknown = fetch(&b, Some(&bob), &format!("/_matrix/client/v1/media/download/{origin}/nosuchmedia")).await;
    assert_eq!(unknown.status(), 404);

    // With alice's server down, bob's cache still serves both; after the lifetime unused,
    // the cache lets go and the media is unavailable.
    a.stop_in_place().await;
    let cached = fetch(&b, Some(&bob), &format!("/_matrix/client/v1/media/download/{origin}/{media_id}")).await;
    assert_eq!(cached.status(), 200);
    assert_eq!(cached.bytes().await.unwrap().to_vec(), png);
    let cached = fetch(&b, Some(&bob), &format!("/_matrix/client/v1/media/thumbnail/{origin}/{media_id}?width=96&height=96&method=crop")).await;
    assert_eq!(cached.status(), 200);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let expired = fetch(&b, Some(&bob), &format!("/_matrix/client/v1/media/download/{origin}/{media_id}")).await;
    assert!(!expired.status().is_success(), "expired media is fetched again, and its server is down");
    let blobs: Vec<_> = walk(&b.data_dir().join("media")).into_iter().filter(|p| !p.starts_with(b.data_dir().join("media/tmp"))).collect();
    assert!(blobs.is_empty(), "expired files are deleted: {blobs:?}");
    a.start_again().await;
    let again = fetch(&b, Some(&bob), &format!("/_matrix/client/v1/media/download/{origin}/{media_id}")).await;
    assert_eq!(again.bytes().await.unwrap().to_vec(), png);
    a.stop().await;
    b.stop().await;
}

/// A small website on loopback: a page with OpenGraph tags, its image, and a redirect to
/// `redirect_to`. Returns its port.
async fn website(redirect_to: String) -> u16 {
    use axum::{response::Redirect, routing::get, Router};
    let png = image_bytes(64, 48, ImageFormat::Png);
    let page = r#"<html><head><title>Ignored title</title>
        <meta property="og:title" content="Weft &amp; friends"><meta name="description" content="A test page">
        <meta property="og:image" content="/picture.png"></head><body>hello</body></html>"#;
    let app = Router::new()
        .route("/page.html", get(move || async move { ([("content-type", "text/html; charset=utf-8")], page) }))
        .route("/picture.png", get(move || async move { ([("content-type", "image/png")], png) }))
        .route("/elsewhere", get(move || async move { Redirect::temporary(&redirect_to) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test]
async fn url_previews() {
    // 127.0.0.2 stands for a private network the server must not reach.
    let server = TestServer::start_with(|c| c.federation.ip_range_blocklist = vec!["127.0.0.2/32".parse().unwrap()]).await;
    let (_, token) = server.register("alice").await;
    let blocked_port = website(String::new()).await;
    let port = website(format!("http://127.0.0.2:{blocked_port}/page.html")).await;
    let preview = |url: String| {
        let server = &server;
        let token = token.clone();
        async move { server.get(&format!("/_matrix/client/v1/media/preview_url?url={}", enc(&url)), Some(&token)).await }
    };

    let page = preview(format!("http://127.0.0.1:{port}/page.html")).await.ok();
    assert_eq!(page["og:title"], "Weft & friends");
    assert_eq!(page["og:description"], "A test page");
    assert_eq!((page["og:image:width"].as_u64(), page["og:image:height"].as_u64()), (Some(64), Some(48)));
    assert_eq!(page["og:image:type"], "image/png");
    let mxc = page["og:image"].as_str().unwrap().strip_prefix("mxc://").unwrap().to_owned();
    let image = fetch(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{mxc}")).await;
    assert_eq!(image.bytes().await.unwrap().to_vec(), image_bytes(64, 48, ImageFormat::Png));
    assert_eq!(page["matrix:image:size"], image_bytes(64, 48, ImageFormat::Png).len());

    let picture = preview(format!("http://127.0.0.1:{port}/picture.png")).await.ok();
    assert!(picture["og:image"].as_str().unwrap().starts_with("mxc://"), "{picture}");
    let legacy = server
        .get(&format!("/_matrix/media/v3/preview_url?url={}", enc(&format!("http://127.0.0.1:{port}/page.html"))), Some(&token))
        .await
        .ok();
    assert_eq!(legacy["og:title"], "Weft & friends");

    // Blocked addresses are refused, directly or through a redirect; only http(s) is fetched.
    preview(format!("http://127.0.0.2:{blocked_port}/page.html")).await.err(403, "M_FORBIDDEN");
    preview(format!("http://127.0.0.1:{port}/elsewhere")).await.err(502, "M_UNKNOWN");
    preview("file:///etc/passwd".to_owned()).await.err(400, "M_INVALID_PARAM");
    preview("not a url".to_owned()).await.err(400, "M_INVALID_PARAM");
    server.get("/_matrix/client/v1/media/preview_url", Some(&token)).await.err(400, "M_MISSING_PARAM");
    server.stop().await;

    let off = TestServer::start_with(|c| c.media.url_previews = false).await;
    let (_, token) = off.register("bob").await;
    off.get(&format!("/_matrix/client/v1/media/preview_url?url={}", enc("http://example.org/")), Some(&token))
        .await
        .err(404, "M_UNRECOGNIZED");
    off.stop().await;
}
