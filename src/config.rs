//! Configuration: defaults, a TOML file, then `WEFT_*` environment variables on top.
//!
//! Environment convention: `WEFT_` + the key path in upper case, nested tables joined by a
//! double underscore. `server_name` is `WEFT_SERVER_NAME`, `database.url` is
//! `WEFT_DATABASE__URL`, `registration.enabled` is `WEFT_REGISTRATION__ENABLED`.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use ruma::{OwnedServerName, RoomVersionId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server_name: OwnedServerName,
    pub data_dir: PathBuf,
    /// Where the client API listens.
    pub listen: SocketAddr,
    /// The URL clients reach the server at, for /.well-known/matrix/client. Empty: derived
    /// from `listen`.
    pub public_baseurl: String,
    /// Log filter (tracing `EnvFilter` syntax); RUST_LOG wins when set.
    pub log: String,
    /// Room version for new rooms when the client names none.
    pub default_room_version: RoomVersionId,
    /// Largest accepted request body, in bytes.
    pub max_request_bytes: usize,
    /// Lifetime of access tokens issued with a refresh token (login or registration with
    /// `refresh_token: true`), in seconds. Other access tokens do not expire.
    pub refreshable_access_token_lifetime_secs: u64,
    /// Listeners as Synapse has them. Empty (the default): the client API on `listen` and,
    /// with federation on, the federation API over TLS on `federation.listen`. Given: exactly
    /// these, so one TLS port can serve both APIs.
    pub listeners: Vec<ListenerConfig>,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub rate_limits: RateLimitConfig,
    pub presence: PresenceConfig,
    pub federation: FederationConfig,
    pub media: MediaConfig,
    pub user_directory: UserDirectoryConfig,
    /// Who to contact about this server (`/.well-known/matrix/support`).
    pub support: SupportConfig,
    /// TURN servers for VoIP calls (`/voip/turnServer`).
    pub voip: VoipConfig,
    /// Application services (bridges): their registration files, in Synapse's YAML format.
    pub app_service_config_files: Vec<PathBuf>,
}

/// TURN servers handed to clients for calls, with credentials from coturn's shared-secret
/// REST scheme (`use-auth-secret`) or fixed ones, as Synapse's `turn_*` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct VoipConfig {
    /// e.g. "turn:turn.example.org:3478?transport=udp". Empty: no TURN (the endpoint is 404).
    pub turn_uris: Vec<String>,
    /// coturn's `static-auth-secret`: each user gets a time-limited username and password.
    pub turn_shared_secret: String,
    /// Fixed credentials, used when no shared secret is set.
    pub turn_username: String,
    pub turn_password: String,
    /// How long shared-secret credentials last.
    pub turn_user_lifetime_secs: u64,
    /// Whether guests get TURN credentials.
    pub turn_allow_guests: bool,
}

impl Default for VoipConfig {
    fn default() -> Self {
        Self {
            turn_uris: Vec::new(),
            turn_shared_secret: String::new(),
            turn_username: String::new(),
            turn_password: String::new(),
            turn_user_lifetime_secs: 86_400,
            turn_allow_guests: true,
        }
    }
}

/// The server's support contacts and page (spec: server support discovery). Both empty
/// (the default): `/.well-known/matrix/support` is 404, as the spec says.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SupportConfig {
    /// A web page with support information.
    pub page: String,
    pub contacts: Vec<SupportContact>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SupportContact {
    /// `m.role.admin` or `m.role.security`.
    pub role: String,
    pub matrix_id: String,
    pub email_address: String,
}

/// One bound address and what it serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    /// PEM certificate chain and key: this listener speaks TLS. Both empty: plain HTTP
    /// (behind a reverse proxy that terminates TLS).
    #[serde(default)]
    pub tls_cert: String,
    #[serde(default)]
    pub tls_key: String,
    pub resources: Vec<Resource>,
}

/// What a listener serves. `client` includes media and this server's keys; `federation`
/// the server-server API and keys.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Client,
    Federation,
}

impl ListenerConfig {
    pub fn serves(&self, resource: Resource) -> bool {
        self.resources.contains(&resource)
    }

    pub fn is_tls(&self) -> bool {
        !self.tls_cert.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct UserDirectoryConfig {
    /// Search finds every local user, not only those who share a room with the searcher or
    /// are in a public room (Synapse's `user_directory.search_all_users`).
    pub search_all_users: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MediaConfig {
    /// Largest upload accepted, in bytes (M_TOO_LARGE beyond).
    pub max_upload_bytes: u64,
    /// Sources larger than this are not thumbnailed.
    pub max_thumbnail_source_bytes: u64,
    /// Nor are images with more pixels than this (decompression bombs).
    pub max_thumbnail_source_pixels: u64,
    /// Serve media on the legacy unauthenticated /_matrix/media/v3 download and thumbnail
    /// endpoints. Off by default, as Synapse does since authenticated media (spec v1.11).
    pub legacy_unauthenticated: bool,
    /// Other servers' media cached here is deleted this many seconds after it was last
    /// served (0: kept until removed by hand, as Synapse does by default).
    pub remote_media_lifetime_secs: u64,
    /// Serve `/preview_url`: the server fetches pages users link to (never from addresses in
    /// `federation.ip_range_blocklist`). Off: the endpoint is absent.
    pub url_previews: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
            max_thumbnail_source_bytes: 20 * 1024 * 1024,
            max_thumbnail_source_pixels: 32 * 1024 * 1024,
            legacy_unauthenticated: false,
            remote_media_lifetime_secs: 0,
            url_previews: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FederationConfig {
    /// Serve the federation API (HTTPS) and talk to other servers.
    pub enabled: bool,
    /// Where the federation listener (TLS) binds.
    pub listen: SocketAddr,
    /// PEM certificate chain and private key for the federation listener. Empty: a
    /// self-signed certificate is generated in the data dir (development only).
    pub tls_cert: String,
    pub tls_key: String,
    /// Verify other servers' TLS certificates. Switch off only for tests and private setups.
    pub verify_tls: bool,
    /// Extra CA certificates (PEM files) trusted for every outbound HTTPS connection: other
    /// servers, push gateways, URL previews.
    pub extra_ca_files: Vec<PathBuf>,
    /// Notary servers asked for keys when a server cannot be reached directly.
    pub trusted_key_servers: Vec<OwnedServerName>,
    /// Longest wait between retries to an unreachable server, in milliseconds.
    pub max_retry_delay_ms: u64,
    /// Outbound requests (federation, push gateways) never go to these address ranges.
    /// Defaults to loopback, private, link-local and other special ranges.
    pub ip_range_blocklist: Vec<ipnet::IpNet>,
    /// Let other servers read the public room directory (off by default, as in Synapse:
    /// it lets anyone crawl which rooms the server publishes).
    pub allow_public_rooms_over_federation: bool,
}

impl Default for FederationConfig {
    fn default() -> Self {
        let ranges = [
            "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
            "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24",
            "203.0.113.0/24", "224.0.0.0/4", "0.0.0.0/8", "::1/128", "fe80::/10", "fc00::/7", "2001:db8::/32",
            "ff00::/8", "fec0::/10", "::/128",
        ];
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8448)),
            tls_cert: String::new(),
            tls_key: String::new(),
            verify_tls: true,
            extra_ca_files: Vec::new(),
            trusted_key_servers: Vec::new(),
            max_retry_delay_ms: 10 * 60 * 1000,
            ip_range_blocklist: ranges.iter().map(|r| r.parse().expect("valid range")).collect(),
            allow_public_rooms_over_federation: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceConfig {
    /// Track and share online / unavailable / offline. Off: presence endpoints answer
    /// M_FORBIDDEN and syncs carry no presence.
    pub enabled: bool,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`; empty means
    /// SQLite at `<data_dir>/weft.db`.
    pub url: String,
    /// Connections in the pool (0: 8 on SQLite, 16 on PostgreSQL).
    pub max_connections: u32,
    /// PostgreSQL: statements running longer are cancelled (0: no limit).
    pub statement_timeout_secs: u64,
    /// How long a request waits for a database connection before it fails.
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RegistrationConfig {
    /// Open registration through `/register`. Off by default.
    pub enabled: bool,
    /// When non-empty, `/register` requires one of these tokens (`m.login.registration_token`).
    pub tokens: Vec<String>,
    /// Secret for Synapse-compatible `/_synapse/admin/v1/register`; disabled when empty.
    pub shared_secret: String,
    /// Let anyone register a guest account (`kind=guest`): no password, only the endpoints
    /// the spec opens to guests, joins only to rooms with `guest_access: can_join`.
    pub allow_guests: bool,
}

/// Token buckets per client (user, or IP when unauthenticated) and action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second for the other endpoints the spec marks rate-limited.
    pub per_second: f64,
    /// Burst size for those.
    pub burst: u32,
    /// Limits per action, by endpoint name (`login`, `register`, `send_message_event`,
    /// `create_room`, `join_room_by_id`, ...). These apply whether or not the spec marks the
    /// endpoint rate-limited.
    pub actions: BTreeMap<String, RateLimit>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".try_into().expect("valid server name"),
            data_dir: PathBuf::from("weft-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            public_baseurl: String::new(),
            log: "info".to_owned(),
            default_room_version: RoomVersionId::V12,
            max_request_bytes: 50 * 1024 * 1024,
            refreshable_access_token_lifetime_secs: 300,
            listeners: Vec::new(),
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            rate_limits: RateLimitConfig::default(),
            presence: PresenceConfig::default(),
            federation: FederationConfig::default(),
            media: MediaConfig::default(),
            user_directory: UserDirectoryConfig::default(),
            support: SupportConfig::default(),
            voip: VoipConfig::default(),
            app_service_config_files: Vec::new(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: String::new(), max_connections: 0, statement_timeout_secs: 60, connect_timeout_secs: 30 }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let limit = |per_second, burst| RateLimit { per_second, burst };
        let actions = [
            ("login", limit(0.17, 3)),
            ("register", limit(0.17, 3)),
            ("send_message_event", limit(2.0, 20)),
            ("send_state_event", limit(2.0, 20)),
            ("redact_event", limit(2.0, 20)),
            ("create_room", limit(0.5, 10)),
            ("join_room_by_id", limit(0.5, 10)),
            ("join_room_by_id_or_alias", limit(0.5, 10)),
            ("invite_user", limit(0.5, 10)),
            ("create_content", limit(1.0, 20)),
            ("create_content_async", limit(1.0, 20)),
            ("create_mxc_uri", limit(1.0, 20)),
            // Per origin server.
            ("send_transaction_message", limit(50.0, 200)),
            ("prepare_join_event", limit(5.0, 50)),
            ("get_backfill", limit(10.0, 50)),
        ]
        .into_iter()
        .map(|(name, limit)| (name.to_owned(), limit))
        .collect();
        Self { enabled: true, per_second: 10.0, burst: 50, actions }
    }
}

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("WEFT_").split("__"));
        let config: Self = figment.extract()?;
        config.check_listeners()?;
        Ok(config)
    }

    /// Listener settings that cannot work, as one-line start-up errors naming the listener.
    pub fn check_listeners(&self) -> anyhow::Result<()> {
        for (index, listener) in self.listeners.iter().enumerate() {
            let name = format!("listeners[{index}] ({})", listener.bind);
            if listener.resources.is_empty() {
                anyhow::bail!("{name}: `resources` is empty; name \"client\", \"federation\" or both");
            }
            if listener.tls_cert.is_empty() != listener.tls_key.is_empty() {
                anyhow::bail!("{name}: give both `tls_cert` and `tls_key`, or neither");
            }
            if listener.serves(Resource::Federation) && !self.federation.enabled {
                anyhow::bail!("{name}: serves \"federation\" but federation.enabled is false");
            }
        }
        Ok(())
    }

    pub fn public_base_url(&self) -> String {
        if !self.public_baseurl.is_empty() {
            return self.public_baseurl.clone();
        }
        match self.listeners.iter().find(|l| l.serves(Resource::Client)) {
            Some(listener) if listener.is_tls() => format!("https://{}/", listener.bind),
            Some(listener) => format!("http://{}/", listener.bind),
            None => format!("http://{}/", self.listen),
        }
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("weft.db").display())
        } else {
            self.database.url.clone()
        }
    }

    /// The database to open and the pool's limits.
    pub fn database_options(&self) -> crate::storage::DbOptions {
        let url = self.database_url();
        let default_connections = match crate::storage::Engine::of_url(&url) {
            Some(crate::storage::Engine::Postgres) => 16,
            _ => 8,
        };
        crate::storage::DbOptions {
            max_connections: if self.database.max_connections == 0 { default_connections } else { self.database.max_connections },
            statement_timeout: std::time::Duration::from_secs(self.database.statement_timeout_secs),
            acquire_timeout: std::time::Duration::from_secs(self.database.connect_timeout_secs.max(1)),
            url,
        }
    }
}

/// The commented default configuration printed by `weft generate-config`.
pub const DEFAULT_CONFIG_TOML: &str = r#"# weft configuration. Every key can also be set from the environment:
# WEFT_ + the key path in upper case, tables joined by "__", e.g.
# WEFT_SERVER_NAME=example.org, WEFT_DATABASE__URL=sqlite:///var/lib/weft/weft.db.

# The name users and rooms live under (@alice:server_name). Cannot change later.
server_name = "localhost"

# Where the database, signing key and media live. Created on first start.
data_dir = "weft-data"

# Client API listener.
listen = "127.0.0.1:8008"

# Listeners, as Synapse's: when any is given, they replace `listen` and federation.listen.
# One TLS port for both APIs, e.g.:
#   [[listeners]]
#   bind = "0.0.0.0:8448"
#   tls_cert = "/etc/weft/tls.crt"
#   tls_key = "/etc/weft/tls.key"
#   resources = ["client", "federation"]
# (`client` includes media; without tls_cert/tls_key a listener speaks plain HTTP.)
listeners = []

# Application services (bridges): their registration files, in Synapse's YAML format
# (id, url, as_token, hs_token, sender_localpart, namespaces, rate_limited, protocols,
# receive_ephemeral). A file that cannot be used stops start-up, naming file and field.
app_service_config_files = []

# Public URL of the client API, announced in /.well-known/matrix/client.
# Empty: http://<listen>/.
public_baseurl = ""

# Log filter (tracing EnvFilter syntax). RUST_LOG overrides it.
log = "info"

# Room version of new rooms when the client does not ask for one.
default_room_version = "12"

# Largest request body accepted, in bytes (M_TOO_LARGE beyond).
max_request_bytes = 52428800

# Lifetime in seconds of access tokens issued with a refresh token (clients that ask for
# `refresh_token: true`); other access tokens do not expire.
refreshable_access_token_lifetime_secs = 300

[database]
# Empty: SQLite at <data_dir>/weft.db. PostgreSQL (15+):
# "postgres://weft:PASSWORD@localhost:5432/weft" (add ?sslmode=verify-full&sslrootcert=FILE
# for TLS to the database; sslmode=require encrypts without checking the certificate).
url = ""
# Connections in the pool; 0: 8 on SQLite, 16 on PostgreSQL.
max_connections = 0
# PostgreSQL: cancel statements running longer than this (0: no limit).
statement_timeout_secs = 60
# How long a request waits for a database connection before it fails.
connect_timeout_secs = 30

[registration]
# Allow anyone to register through /register (m.login.dummy).
enabled = false
# If set, registering needs one of these tokens (m.login.registration_token).
tokens = []
# Shared secret for /_synapse/admin/v1/register; empty disables it.
shared_secret = ""
# Guest accounts (kind=guest): read and talk in rooms that allow guests; off as in Synapse.
allow_guests = false

[presence]
# Share online / unavailable / offline with users in the same rooms.
enabled = true

[user_directory]
# Search finds every local user; false: only users sharing a room with the searcher, or in
# a public room.
search_all_users = false

[voip]
# TURN servers for calls (/voip/turnServer is 404 while this is empty).
turn_uris = []
# coturn's static-auth-secret (use-auth-secret): per-user credentials valid
# turn_user_lifetime_secs. Or fixed turn_username / turn_password.
turn_shared_secret = ""
turn_username = ""
turn_password = ""
turn_user_lifetime_secs = 86400
turn_allow_guests = true

[support]
# Served at /.well-known/matrix/support (404 while both are empty). Contacts as
# [[support.contacts]] tables: role = "m.role.admin" or "m.role.security", with a
# matrix_id and/or an email_address.
page = ""
contacts = []

[media]
# Largest upload, in bytes.
max_upload_bytes = 52428800
# Images larger than this (bytes, pixels) are not thumbnailed.
max_thumbnail_source_bytes = 20971520
max_thumbnail_source_pixels = 33554432
# Serve media on the legacy unauthenticated /_matrix/media/v3 endpoints (Synapse: off).
legacy_unauthenticated = false
# Delete cached media of other servers this long (seconds) after it was last served; 0 keeps
# it. E.g. 7776000 for 90 days.
remote_media_lifetime_secs = 0
# Fetch pages for /preview_url (the IP blocklist of [federation] applies); false: no previews.
url_previews = true

[federation]
enabled = true
# The federation listener (HTTPS). Other servers reach it at server_name's port, 8448 by
# default (or as .well-known/matrix/server delegates).
listen = "127.0.0.1:8448"
# PEM files; empty: a self-signed certificate is made in data_dir (development only).
tls_cert = ""
tls_key = ""
# Check other servers' certificates. Only tests and private setups turn this off.
verify_tls = true
# Extra CA certificates (PEM) to trust for other servers, push gateways and URL previews.
extra_ca_files = []
# Notaries asked for a server's keys when it cannot be reached itself.
trusted_key_servers = []
# Longest wait between retries to an unreachable server (ms); retries double up to it.
max_retry_delay_ms = 600000
# Outbound requests (federation, push gateways) never reach these ranges.
# The default blocks loopback and private networks; list [] to allow everything.
# ip_range_blocklist = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", ...]
# Let other servers list this server's public rooms (off: anyone could crawl them).
allow_public_rooms_over_federation = false

[rate_limits]
enabled = true
# Sustained requests per second and burst, per user (or IP), for the endpoints the spec
# marks rate-limited and that have no limit of their own below.
per_second = 10.0
burst = 50

# Limits per action (endpoint name). Raise them for benchmarks, e.g.
# WEFT_RATE_LIMITS__ACTIONS__SEND_MESSAGE_EVENT__PER_SECOND=100000.
[rate_limits.actions]
login = { per_second = 0.17, burst = 3 }
register = { per_second = 0.17, burst = 3 }
send_message_event = { per_second = 2.0, burst = 20 }
send_state_event = { per_second = 2.0, burst = 20 }
redact_event = { per_second = 2.0, burst = 20 }
create_room = { per_second = 0.5, burst = 10 }
join_room_by_id = { per_second = 0.5, burst = 10 }
join_room_by_id_or_alias = { per_second = 0.5, burst = 10 }
invite_user = { per_second = 0.5, burst = 10 }
create_content = { per_second = 1.0, burst = 20 }
create_content_async = { per_second = 1.0, burst = 20 }
create_mxc_uri = { per_second = 1.0, burst = 20 }
# Federation, per origin server.
send_transaction_message = { per_second = 50.0, burst = 200 }
prepare_join_event = { per_second = 5.0, burst = 50 }
get_backfill = { per_second = 10.0, burst = 50 }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_parses_to_defaults() {
        let parsed: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(DEFAULT_CONFIG_TOML))
            .extract()
            .unwrap();
        assert_eq!(parsed.server_name, Config::default().server_name);
        assert_eq!(parsed.listen, Config::default().listen);
        assert!(!parsed.registration.enabled);
        assert_eq!(parsed.default_room_version, RoomVersionId::V12);
        assert_eq!(parsed.rate_limits.actions, Config::default().rate_limits.actions);
    }
}
