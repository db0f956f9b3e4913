//! URL previews (`/preview_url`): the page is fetched through the guarded outbound client
//! (the IP blocklist applies to every address and every redirect), its OpenGraph data read,
//! and its image stored as media of the asking user so clients load it by `mxc://`.

use std::{
    collections::{BTreeMap, HashMap},
    io::Cursor,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::UserId;
use serde_json::{json, Map, Value};

use super::Media;
use crate::{
    error::{MatrixError, Result},
    federation::client::read_capped,
    outbound::{GuardedDns, Refusal},
};

/// Largest page or image read (Synapse's `max_spider_size`).
const MAX_BYTES: usize = 10 * 1024 * 1024;
/// Previews are reused for this long.
const CACHE_FOR: Duration = Duration::from_secs(60 * 60);
const MAX_CACHED: usize = 10_000;
const MAX_REDIRECTS: usize = 5;

#[derive(Clone)]
pub struct UrlPreviews {
    enabled: bool,
    http: reqwest::Client,
    dns: GuardedDns,
    media: Media,
    cache: Arc<Mutex<HashMap<String, (Value, Instant)>>>,
}

impl UrlPreviews {
    pub fn new(enabled: bool, dns: GuardedDns, media: Media) -> Self {
        // Redirects to names are checked when they are resolved; redirects to IP literals
        // never reach the resolver, so the policy checks those itself.
        let guard = dns.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            let literal = attempt.url().host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok());
            let blocked = literal.is_some_and(|ip| guard.is_blocked(ip));
            if blocked || !matches!(attempt.url().scheme(), "http" | "https") {
                attempt.error("redirect to a refused destination")
            } else {
                attempt.follow()
            }
        });
        let http = dns
            .client_builder()
            .redirect(policy)
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION"), " (URL preview)"))
            .build()
            .expect("HTTP client builds");
        Self { enabled, http, dns, media, cache: Arc::default() }
    }

    /// The preview of `url` for `user`: OpenGraph keys, `og:image` as an `mxc://` URI.
    pub async fn preview(&self, user: &UserId, url: &str) -> Result<Value> {
        if !self.enabled {
            return Err(MatrixError::new(http::StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "URL previews are disabled on this server"));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| MatrixError::invalid_param(format!("Invalid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(MatrixError::invalid_param("Only http and https URLs can be previewed"));
        }
        if let Some((preview, at)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(url) {
            if at.elapsed() < CACHE_FOR {
                return Ok(preview.clone());
            }
        }
        let page = self.fetch(&parsed).await?;
        let preview = if page.content_type.starts_with("image/") {
            self.image_fields(user, page).await?
        } else if page.content_type.starts_with("text/html") || page.content_type.starts_with("application/xhtml") {
            let html = String::from_utf8_lossy(&page.bytes);
            let mut fields = opengraph(&html);
            let image = fields.remove("og:image").and_then(|v| v.as_str().map(str::to_owned));
            let mut preview: Map<String, Value> = fields.into_iter().collect();
            if let Some(image_url) = image.and_then(|i| page.url.join(&i).ok()) {
                // A page whose image cannot be had still has a preview.
                match self.fetch(&image_url).await {
                    Ok(image) if image.content_type.starts_with("image/") => {
                        if let Value::Object(image_fields) = self.image_fields(user, image).await? {
                            preview.extend(image_fields);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%image_url, error = %error.message, "preview image unavailable"),
                }
            }
            Value::Object(preview)
        } else {
            json!({})
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(url.to_owned(), (preview.clone(), Instant::now()));
        Ok(preview)
    }

    async fn fetch(&self, url: &reqwest::Url) -> Result<Fetched> {
        self.dns.check_url(url.as_str()).await.map_err(|refusal| match refusal {
            Refusal::Blocked(why) => MatrixError::forbidden(format!("URL refused: {why}")),
            Refusal::Unresolvable(why) => MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", why),
        })?;
        let failed = |e: String| MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("Could not fetch {url}: {e}"));
        let response = self.http.get(url.clone()).send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("it answered {}", response.status())));
        }
        let final_url = response.url().clone();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_ascii_lowercase();
        let bytes = read_capped(response, MAX_BYTES).await.map_err(failed)?;
        Ok(Fetched { url: final_url, content_type, bytes })
    }

    /// Stores an image as the user's media and describes it the way previews do.
    async fn image_fields(&self, user: &UserId, image: Fetched) -> Result<Value> {
        let essence = image.content_type.split(';').next().unwrap_or("").trim().to_owned();
        let filename = image.url.path_segments().and_then(|mut s| s.next_back()).filter(|s| !s.is_empty()).map(str::to_owned);
        let media_id = self.media.upload(user, Some(&essence), filename.as_deref(), &image.bytes).await?;
        let mut fields = json!({
            "og:image": format!("mxc://{}/{media_id}", self.media.server_name()),
            "og:image:type": essence,
            "matrix:image:size": image.bytes.len(),
        });
        let dimensions = image::ImageReader::new(Cursor::new(&image.bytes)).with_guessed_format().ok().and_then(|r| r.into_dimensions().ok());
        if let Some((width, height)) = dimensions {
            fields["og:image:width"] = width.into();
            fields["og:image:height"] = height.into();
        }
        Ok(fields)
    }
}

struct Fetched {
    /// Where the content was found (after redirects): relative links resolve against it.
    url: reqwest::Url,
    content_type: String,
    bytes: Vec<u8>,
}

/// The OpenGraph data of a page: its `og:*` meta tags, with the page's title and description
/// standing in for missing `og:title` / `og:description`.
pub fn opengraph(html: &str) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    let Ok(dom) = tl::parse(html, tl::ParserOptions::default()) else { return fields };
    let parser = dom.parser();
    // Attribute names are case-insensitive in HTML.
    let attribute = |tag: &tl::HTMLTag, wanted: &str| {
        tag.attributes()
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .and_then(|(_, value)| value.map(|v| html_escape::decode_html_entities(&v).trim().to_owned()))
    };
    let mut title = None;
    let mut description = None;
    for node in dom.nodes() {
        let Some(tag) = node.as_tag() else { continue };
        let name = tag.name().as_utf8_str().to_ascii_lowercase();
        if name == "title" && title.is_none() {
            title = Some(html_escape::decode_html_entities(&tag.inner_text(parser)).trim().to_owned());
        }
        if name != "meta" {
            continue;
        }
        let key = attribute(tag, "property").or_else(|| attribute(tag, "name"));
        let Some(content) = attribute(tag, "content") else { continue };
        match key.as_deref() {
            Some(key) if key.starts_with("og:") => {
                // The first value of a key wins, as OpenGraph arrays list the preferred first.
                fields.entry(key.to_owned()).or_insert(Value::String(content));
            }
            Some("description") if description.is_none() => description = Some(content),
            _ => {}
        }
    }
    for (key, fallback) in [("og:title", title), ("og:description", description)] {
        if let Some(value) = fallback.filter(|v| !v.is_empty()) {
            fields.entry(key.to_owned()).or_insert(Value::String(value));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_opengraph_tags_with_fallbacks() {
        let page = r#"<!doctype html><html><head>
            <title>Fallback &amp; title</title>
            <meta property="og:title" content="Tom &amp; Jerry">
            <meta property="og:image" content="/first.png"><meta property="og:image" content="/second.png">
            <META NAME="description" CONTENT="A page about &quot;cats&quot;">
            </head><body><p>text</p></body></html>"#;
        let fields = opengraph(page);
        assert_eq!(fields["og:title"], "Tom & Jerry");
        assert_eq!(fields["og:image"], "/first.png");
        assert_eq!(fields["og:description"], "A page about \"cats\"");

        let bare = opengraph("<html><head><title> Just a title </title></head></html>");
        assert_eq!(bare.get("og:title").and_then(Value::as_str), Some("Just a title"));
        assert!(bare.get("og:description").is_none());
        assert!(opengraph("not html at all <<<").get("og:title").is_none());
    }
}
