//! The few Client-Server API calls the load tool makes, as plain JSON over HTTP, so any
//! homeserver can be measured the same way.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A URL path segment, percent-encoded.
pub fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One logged-in user of the server under test.
#[derive(Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

/// An HTTP client for one homeserver.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }

    /// A client whose requests each use a fresh connection: for holding many long-polls at
    /// once, one socket each, as that many devices would.
    pub fn unpooled(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).tcp_nodelay(true).build()?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }

    pub async fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<&Value>, timeout: Duration) -> Result<Value> {
        Ok(self.request_timed(method, path, token, body, timeout).await?.0)
    }

    /// A request, with the server's own account of its time (its `Server-Timing` header's
    /// first `dur`) when it gives one.
    pub async fn request_timed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<(Value, Option<Duration>)> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).timeout(timeout);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let server_time = response.headers().get("server-timing").and_then(|v| v.to_str().ok()).and_then(server_timing_duration);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: {status} {body}");
        }
        Ok((body, server_time))
    }

    pub async fn post_timed(&self, path: &str, token: Option<&str>, body: &Value) -> Result<(Value, Option<Duration>)> {
        self.request_timed(reqwest::Method::POST, path, token, Some(body), Duration::from_secs(60)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Result<Value> {
        self.request(reqwest::Method::GET, path, Some(token), None, Duration::from_secs(60)).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Value> {
        self.request(reqwest::Method::POST, path, token, Some(body), Duration::from_secs(60)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: &Value) -> Result<Value> {
        self.request(reqwest::Method::PUT, path, Some(token), Some(body), Duration::from_secs(60)).await
    }

    pub async fn versions(&self) -> Result<Value> {
        self.request(reqwest::Method::GET, "/_matrix/client/versions", None, None, Duration::from_secs(2)).await
    }

    /// Registers with the dummy auth flow (open registration, as the bench setups configure).
    pub async fn register(&self, localpart: &str, password: &str) -> Result<User> {
        let body = json!({ "username": localpart, "password": password, "auth": { "type": "m.login.dummy" },
            "initial_device_display_name": "weft bench" });
        let answer = self.post("/_matrix/client/v3/register", None, &body).await?;
        user_of(&answer)
    }

    pub async fn login(&self, localpart: &str, password: &str) -> Result<User> {
        let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": localpart }, "password": password });
        let answer = self.post("/_matrix/client/v3/login", None, &body).await?;
        user_of(&answer)
    }

    pub async fn create_room(&self, user: &User, body: Value) -> Result<String> {
        let answer = self.post("/_matrix/client/v3/createRoom", Some(&user.token), &body).await?;
        answer["room_id"].as_str().map(str::to_owned).context("createRoom without room_id")
    }

    pub async fn join(&self, user: &User, room_id: &str) -> Result<()> {
        self.post(&format!("/_matrix/client/v3/join/{}", enc(room_id)), Some(&user.token), &json!({})).await?;
        Ok(())
    }

    pub async fn send_text(&self, user: &User, room_id: &str, txn_id: &str, body: &str) -> Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room_id), enc(txn_id));
        let answer = self.put(&path, &user.token, &json!({ "msgtype": "m.text", "body": body })).await?;
        answer["event_id"].as_str().map(str::to_owned).context("send without event_id")
    }

    /// One /sync with an inline filter that keeps only room timelines (no presence, no
    /// account data): what the tool measures is delivery, not payload size.
    pub async fn sync(&self, user: &User, since: Option<&str>, timeout_ms: u64) -> Result<Value> {
        let filter = r#"{"presence":{"types":[]},"account_data":{"types":[]},"room":{"state":{"lazy_load_members":true},"ephemeral":{"types":[]},"account_data":{"types":[]},"timeline":{"limit":50}}}"#;
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}", enc(filter));
        if let Some(since) = since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        self.request(reqwest::Method::GET, &path, Some(&user.token), None, Duration::from_millis(timeout_ms) + Duration::from_secs(60)).await
    }

    pub async fn messages(&self, user: &User, room_id: &str, from: Option<&str>, limit: usize) -> Result<Value> {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}", enc(room_id));
        if let Some(from) = from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        self.get(&path, &user.token).await
    }
}

fn user_of(answer: &Value) -> Result<User> {
    Ok(User {
        user_id: answer["user_id"].as_str().context("no user_id")?.to_owned(),
        token: answer["access_token"].as_str().context("no access_token")?.to_owned(),
    })
}

/// Bodies of the timeline events of `room_id` in a /sync answer.
pub fn timeline_bodies<'a>(sync: &'a Value, room_id: &str) -> impl Iterator<Item = &'a str> {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str())
}

/// The first `dur=` (milliseconds) of a `Server-Timing` header value.
fn server_timing_duration(value: &str) -> Option<Duration> {
    let ms: f64 = value.split([',', ';']).find_map(|part| part.trim().strip_prefix("dur="))?.parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_server_timing_duration() {
        assert_eq!(server_timing_duration("app;dur=1.500"), Some(Duration::from_micros(1500)));
        assert_eq!(server_timing_duration("db;desc=\"x\";dur=2, app;dur=9"), Some(Duration::from_millis(2)));
        assert_eq!(server_timing_duration("app"), None);
        assert_eq!(server_timing_duration("app;dur=-1"), None);
    }
}
