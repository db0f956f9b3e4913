//! Server name resolution (spec: "Resolving server names"): IP literals, explicit ports,
//! `.well-known/matrix/server` delegation, SRV records (`_matrix-fed._tcp`, then the
//! deprecated `_matrix._tcp`), and port 8448 by default. Answers are cached.

use std::{net::IpAddr, time::Duration};

use ruma::ServerName;
use serde::Deserialize;

use super::Federation;
use crate::{
    error::{MatrixError, Result},
    outbound::Refusal,
};

const DEFAULT_PORT: u16 = 8448;
const RESOLUTION_CACHE: Duration = Duration::from_secs(24 * 60 * 60);

/// Where requests for a server name go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `https://host:port`, without a trailing slash. The host is the name the certificate
    /// must be valid for (and the TLS SNI).
    pub base_url: String,
    /// The `Host` header the spec asks for in this case.
    pub host_header: String,
    /// For SRV answers: the host that connections to `base_url`'s host really go to.
    pub srv_target: Option<String>,
}

fn split_host_port(name: &str) -> (&str, Option<u16>) {
    if let Some(rest) = name.strip_prefix('[') {
        // [v6]:port or [v6]
        if let Some((host, port)) = rest.split_once("]:") {
            return (host, port.parse().ok());
        }
        return (rest.trim_end_matches(']'), None);
    }
    match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (name, None),
    }
}

fn url_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_owned(),
    }
}

fn direct(host: &str, port: Option<u16>) -> Destination {
    let host_header = match port {
        Some(port) => format!("{}:{port}", url_host(host)),
        None => url_host(host),
    };
    Destination { base_url: format!("https://{}:{}", url_host(host), port.unwrap_or(DEFAULT_PORT)), host_header, srv_target: None }
}

/// The lookups resolution depends on; tests answer them without a network.
pub(crate) trait Lookups {
    /// The `m.server` of `https://<host>/.well-known/matrix/server`, if valid.
    async fn well_known(&self, host: &str) -> Option<String>;
    /// The SRV record for a name, as (target, port).
    async fn srv(&self, name: &str) -> Option<(String, u16)>;
}

/// A hostname without a port: its SRV records, else port 8448.
async fn by_srv(lookups: &impl Lookups, host: &str) -> Destination {
    for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
        if let Some((target, port)) = lookups.srv(&format!("{service}.{host}")).await {
            return Destination { base_url: format!("https://{host}:{port}"), host_header: host.to_owned(), srv_target: Some(target) };
        }
    }
    direct(host, None)
}

/// The spec's resolution steps, in order.
pub(crate) async fn resolve_with(lookups: &impl Lookups, server: &ServerName) -> Destination {
    let (host, port) = split_host_port(server.as_str());
    // 1. and 2.: an IP literal, or any name with an explicit port, is used as it is.
    if host.parse::<IpAddr>().is_ok() || port.is_some() {
        return direct(host, port);
    }
    // 3.: .well-known delegation, then the same steps for the delegated name.
    if let Some(delegated) = lookups.well_known(host).await {
        let (d_host, d_port) = split_host_port(&delegated);
        if d_host.parse::<IpAddr>().is_ok() || d_port.is_some() {
            return direct(d_host, d_port);
        }
        return by_srv(lookups, d_host).await;
    }
    // 4.-6.: SRV records for the name itself, else port 8448.
    by_srv(lookups, host).await
}

impl Lookups for Federation {
    async fn well_known(&self, host: &str) -> Option<String> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let response = self.http.get(&url).timeout(Duration::from_secs(10)).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let bytes = response.bytes().await.ok()?;
        if bytes.len() > 64 * 1024 {
            return None;
        }
        serde_json::from_slice::<WellKnown>(&bytes).ok().map(|w| w.server).filter(|s| ServerName::parse(s).is_ok())
    }

    async fn srv(&self, name: &str) -> Option<(String, u16)> {
        self.dns.srv(name).await
    }
}

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

impl Federation {
    /// Resolves a server name to where its federation API is reached.
    pub async fn resolve(&self, server: &ServerName) -> Result<Destination> {
        if let Some((destination, at)) = self.destinations.lock().await.get(server) {
            if at.elapsed() < RESOLUTION_CACHE {
                return Ok(destination.clone());
            }
        }
        let destination = resolve_with(self, server).await;
        if let Some(target) = &destination.srv_target {
            let (host, _) = split_host_port(destination.host_header.as_str());
            self.dns.route(host, target);
        }
        self.destinations.lock().await.insert(server.to_owned(), (destination.clone(), tokio::time::Instant::now()));
        Ok(destination)
    }

    /// Refuses destinations in the blocklisted address ranges.
    pub async fn check_destination(&self, url: &str) -> Result<()> {
        self.dns.check_url(url).await.map_err(|refusal| match refusal {
            Refusal::Blocked(why) => MatrixError::forbidden(format!("Destination refused: {why}")),
            Refusal::Unresolvable(why) => MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", why),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("example.org"), ("example.org", None));
        assert_eq!(split_host_port("example.org:8449"), ("example.org", Some(8449)));
        assert_eq!(split_host_port("127.0.0.1:58448"), ("127.0.0.1", Some(58448)));
        assert_eq!(split_host_port("[::1]:8448"), ("::1", Some(8448)));
        assert_eq!(split_host_port("[::1]"), ("::1", None));
        assert_eq!(url_host("::1"), "[::1]");
    }

    /// Canned answers for well-known and SRV lookups.
    #[derive(Default)]
    struct Canned {
        well_known: std::collections::HashMap<&'static str, &'static str>,
        srv: std::collections::HashMap<&'static str, (&'static str, u16)>,
    }

    impl Lookups for Canned {
        async fn well_known(&self, host: &str) -> Option<String> {
            self.well_known.get(host).map(|s| s.to_string())
        }
        async fn srv(&self, name: &str) -> Option<(String, u16)> {
            self.srv.get(name).map(|(t, p)| (t.to_string(), *p))
        }
    }

    async fn resolve(canned: &Canned, server: &str) -> Destination {
        resolve_with(canned, &ServerName::parse(server).unwrap()).await
    }

    fn dest(base_url: &str, host_header: &str, srv_target: Option<&str>) -> Destination {
        Destination { base_url: base_url.into(), host_header: host_header.into(), srv_target: srv_target.map(Into::into) }
    }

    #[tokio::test]
    async fn resolution_follows_the_spec_steps_in_order() {
        let mut canned = Canned::default();
        // Step 3 is skipped for IP literals and explicit ports, even with records present.
        canned.srv.insert("_matrix-fed._tcp.example.org", ("fed.example.org", 443));
        canned.well_known.insert("example.org", "delegated.example.org");
        assert_eq!(resolve(&canned, "1.2.3.4").await, dest("https://1.2.3.4:8448", "1.2.3.4", None));
        assert_eq!(resolve(&canned, "[::1]:9000").await, dest("https://[::1]:9000", "[::1]:9000", None));
        assert_eq!(resolve(&canned, "example.org:8449").await, dest("https://example.org:8449", "example.org:8449", None));
        // Well-known wins over SRV of the server name; the delegated name has no SRV: 8448.
        assert_eq!(resolve(&canned, "example.org").await, dest("https://delegated.example.org:8448", "delegated.example.org", None));
        // Delegation to an IP or explicit port is used as it is.
        canned.well_known.insert("ip.example", "5.6.7.8:1234");
        assert_eq!(resolve(&canned, "ip.example").await, dest("https://5.6.7.8:1234", "5.6.7.8:1234", None));
        canned.well_known.insert("port.example", "matrix.port.example:443");
        assert_eq!(resolve(&canned, "port.example").await, dest("https://matrix.port.example:443", "matrix.port.example:443", None));
        // Delegated name with SRV: its target and port, certificate and Host of the delegated name.
        canned.well_known.insert("srv.example", "hs.srv.example");
        canned.srv.insert("_matrix-fed._tcp.hs.srv.example", ("box7.srv.example", 8000));
        assert_eq!(resolve(&canned, "srv.example").await, dest("https://hs.srv.example:8000", "hs.srv.example", Some("box7.srv.example")));
        // No well-known: _matrix-fed._tcp, then the deprecated _matrix._tcp, then 8448.
        canned.well_known.remove("example.org");
        assert_eq!(resolve(&canned, "example.org").await, dest("https://example.org:443", "example.org", Some("fed.example.org")));
        canned.srv.insert("_matrix._tcp.old.example", ("legacy.old.example", 8450));
        assert_eq!(resolve(&canned, "old.example").await, dest("https://old.example:8450", "old.example", Some("legacy.old.example")));
        assert_eq!(resolve(&canned, "plain.example").await, dest("https://plain.example:8448", "plain.example", None));
    }
}
