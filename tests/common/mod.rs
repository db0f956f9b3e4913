//! A real weft server started in-process on an ephemeral port with a temp data dir, and a
//! small HTTP client speaking the Client-Server API.
#![allow(dead_code)]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft::{config::Config, server};

pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    running: Option<server::RunningServer>,
    config: Config,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(self.status.is_success(), "expected success, got {} {}", self.status, self.body);
        self.body
    }

    #[track_caller]
    pub fn err(&self, status: u16, errcode: &str) {
        assert_eq!(self.status.as_u16(), status, "status of {}", self.body);
        assert_eq!(self.errcode(), errcode, "errcode of {}", self.body);
        assert!(self.body["error"].is_string(), "error message missing in {}", self.body);
    }
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.data_dir = dir.to_path_buf();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.registration.enabled = true;
    config.registration.shared_secret = "test-shared-secret".into();
    config.rate_limits.enabled = false;
    // Tests run their peers (push gateways, servers) on loopback, with self-signed certificates.
    config.federation.ip_range_blocklist = Vec::new();
    config.federation.listen = "127.0.0.1:0".parse().unwrap();
    config.federation.verify_tls = false;
    config
}

/// When the server could not bind a port this helper chose (the client port, or a
/// federating server's port, which is also its name), chooses another; false when the
/// error is anything else.
fn repick_taken_port(config: &mut Config, error: &str, client_port_picked: bool) -> bool {
    let client = config.listen.to_string();
    let federation = config.federation.listen.to_string();
    if client_port_picked && error.contains(&format!("cannot listen on {client}")) {
        config.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        return true;
    }
    if error.contains(&format!("cannot listen on {federation}")) && config.server_name.as_str() == federation {
        let port = free_port();
        config.federation.listen = format!("127.0.0.1:{port}").parse().unwrap();
        config.server_name = format!("127.0.0.1:{port}").try_into().unwrap();
        return true;
    }
    false
}

/// With `WEFT_TEST_POSTGRES` set (scripts/with-postgres.sh does), a server whose config
/// names no database gets a fresh PostgreSQL database of its own on that cluster; without
/// it, SQLite in the server's data dir.
pub async fn use_test_database(config: &mut Config) {
    if let Some(url) = test_postgres_database().await {
        if config.database.url.is_empty() {
            config.database.url = url;
        }
    }
}

/// A new empty database on the `WEFT_TEST_POSTGRES` cluster, None when it is not set.
pub async fn test_postgres_database() -> Option<String> {
    use sqlx::Connection;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let cluster = std::env::var("WEFT_TEST_POSTGRES").ok().filter(|url| !url.is_empty())?;
    let cluster = cluster.trim_end_matches('/');
    let name = format!("weft_test_{}_{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(&format!("{cluster}/postgres")).await.expect("test PostgreSQL cluster reachable");
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str()).await.expect("test database created");
    admin.close().await.ok();
    Some(format!("{cluster}/{name}"))
}

/// Whether this run's servers use PostgreSQL (tests of SQLite's files skip themselves).
pub fn on_postgres() -> bool {
    std::env::var("WEFT_TEST_POSTGRES").is_ok_and(|url| !url.is_empty())
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        adjust(&mut config);
        use_test_database(&mut config).await;
        // Pin the client port so a restart keeps the same address.
        let pick_client_port = config.listen.port() == 0;
        if pick_client_port {
            config.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        }
        // A port found free can be taken before the server binds it (by another test, or by
        // a connection's own ephemeral port, PostgreSQL's pool included): a port this helper
        // picked is picked again.
        let mut attempts = 0;
        let running = loop {
            match server::start(config.clone()).await {
                Ok(running) => break running,
                Err(error) if attempts < 5 && repick_taken_port(&mut config, &format!("{error:#}"), pick_client_port) => attempts += 1,
                Err(error) => panic!("server starts: {error:?}"),
            }
        };
        // A configured TLS listener for the client API (self-signed in tests) is spoken to in TLS.
        let tls = config.listeners.iter().find(|l| l.serves(weft::config::Resource::Client)).is_some_and(|l| l.is_tls());
        let base = format!("{}://{}", if tls { "https" } else { "http" }, running.addr);
        let http = reqwest::Client::builder().danger_accept_invalid_certs(tls).build().unwrap();
        Self { base, http, running: Some(running), config, _dir: dir }
    }

    /// Stops the server (gracefully) and starts it again on the same data and addresses.
    pub async fn restart(&mut self) {
        self.stop_in_place().await;
        self.start_again().await;
    }

    /// Stops the server but keeps its data, so `start_again` can bring it back.
    pub async fn stop_in_place(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    /// Points the (stopped) server at another database for its next `start_again`.
    pub fn set_database_url(&mut self, url: &str) {
        self.config.database.url = url.to_owned();
    }

    pub fn database_url(&self) -> String {
        self.config.database_url()
    }

    pub async fn start_again(&mut self) {
        let running = server::start(self.config.clone()).await.expect("server restarts");
        self.running = Some(running);
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// A connection pool on the server's own database (either engine), for tests that
    /// look at or damage what is stored. Queries use `$N` placeholders.
    pub async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.config.database_url()).await.expect("the server's database opens")
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    pub async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Reply {
        self.raw_typed(method, path, token, body, "application/json").await
    }

    /// A request with a body of any content type (media uploads).
    pub async fn raw_typed(&self, method: Method, path: &str, token: Option<&str>, body: Option<Vec<u8>>, content_type: &str) -> Reply {
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, body, headers }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.raw(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.raw(Method::POST, path, token, Some(body.to_string().into_bytes())).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.raw(Method::PUT, path, token, Some(body.to_string().into_bytes())).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.raw(Method::DELETE, path, token, Some(body.to_string().into_bytes())).await
    }

    /// Registers `name` with password "password" through the dummy flow; returns (user_id, token).
    pub async fn register(&self, name: &str) -> (String, String) {
        let body = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({ "username": name, "password": "password", "auth": { "type": "m.login.dummy" } }),
            )
            .await
            .ok();
        (body["user_id"].as_str().unwrap().to_owned(), body["access_token"].as_str().unwrap().to_owned())
    }

    /// Registers a server admin `name` (password "password") through the shared-secret
    /// registration the test config enables; returns (user_id, token).
    pub async fn register_admin(&self, name: &str) -> (String, String) {
        use hmac::{Hmac, Mac};
        let nonce = self.get("/_synapse/admin/v1/register", None).await.ok()["nonce"].as_str().unwrap().to_owned();
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"test-shared-secret").unwrap();
        mac.update(format!("{nonce}\0{name}\0password\0admin").as_bytes());
        let mac = hex::encode(mac.finalize().into_bytes());
        let body = self
            .post("/_synapse/admin/v1/register", None, json!({ "nonce": nonce, "username": name, "password": "password", "admin": true, "mac": mac }))
            .await
            .ok();
        (body["user_id"].as_str().unwrap().to_owned(), body["access_token"].as_str().unwrap().to_owned())
    }

    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let reply = self.post("/_matrix/client/v3/createRoom", Some(token), body).await.ok();
        reply["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn send_text(&self, token: &str, room: &str, txn: &str, text: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
        let reply = self.put(&path, Some(token), json!({ "msgtype": "m.text", "body": text })).await.ok();
        reply["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn messages(&self, token: &str, room: &str, query: &str) -> Value {
        self.get(&format!("/_matrix/client/v3/rooms/{}/messages?{query}", enc(room)), Some(token)).await.ok()
    }
}

/// Percent-encodes a path segment (room ids, event ids, aliases, user ids).
pub fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Bodies of the text messages in a /messages chunk, in chunk order.
pub fn bodies(chunk: &Value) -> Vec<String> {
    chunk["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until a server answers /versions at `base`.
pub async fn wait_ready(base: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(response) = reqwest::get(format!("{base}/_matrix/client/versions")).await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("server at {base} did not come up");
}

/// Two or more servers that federate with each other on loopback: each is named by its
/// federation address (`127.0.0.1:<port>`), as Synapse and the spec allow for IP literals.
pub async fn federating_server() -> TestServer {
    federating_server_with(|_| {}).await
}

pub async fn federating_server_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let port = free_port();
    TestServer::start_with(move |c| {
        c.server_name = format!("127.0.0.1:{port}").try_into().unwrap();
        c.federation.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.federation.max_retry_delay_ms = 1000;
        c.federation.allow_public_rooms_over_federation = true;
        adjust(c);
    })
    .await
}

impl TestServer {
    pub fn server_name(&self) -> String {
        self.config.server_name.to_string()
    }

    /// A Server-Server request from this server to `to`, signed with this server's key (read
    /// from its data dir) the way federation requests are.
    pub async fn federation_request<R>(&self, to: &TestServer, request: R) -> Reply
    where
        R: ruma::api::OutgoingRequest<Authentication = ruma::api::federation::authentication::ServerSignatures, PathBuilder = ruma::api::path_builder::SinglePath>,
    {
        use ruma::api::OutgoingRequestExt;
        let keys = weft::crypto::ServerKeys::load_or_generate(self.config.server_name.clone(), self.data_dir()).unwrap();
        let base = format!("https://{}", to.server_name());
        let input = ruma::api::federation::authentication::XMatrixSigningInput::new(
            self.config.server_name.clone(),
            to.config.server_name.clone(),
            &keys.keypair,
        );
        let http_request: http::Request<Vec<u8>> = request.try_into_http_request(&base, input, ()).unwrap();
        let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
        let response = client.execute(reqwest::Request::try_from(http_request).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body, headers }
    }
}

/// Polls `check` until it holds, panicking after `limit`: for what arrives asynchronously
/// (federation, background delivery), instead of fixed sleeps.
#[track_caller]
pub fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> impl std::future::Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if check().await {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!("condition at {caller} did not hold within {limit:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
