//! Server name resolution (spec: "Resolving server names"): IP literals, explicit ports,
//! `.well-known/matrix/server` delegation (cached), and port 8448 by default.
//! SRV records (`_matrix-fed._tcp`, `_matrix._tcp`) are not consulted yet.

use std::{net::IpAddr, time::Duration};

use ruma::ServerName;
use serde::Deserialize;

use super::Federation;
use crate::error::{MatrixError, Result};

const DEFAULT_PORT: u16 = 8448;
const WELL_KNOWN_CACHE: Duration = Duration::from_secs(24 * 60 * 60);

/// Where requests for a server name go.
#[derive(Debug, Clone)]
pub struct Destination {
    /// `https://host:port`, without a trailing slash.
    pub base_url: String,
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

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

impl Federation {
    /// Resolves a server name to the URL its federation API is reached at.
    pub async fn resolve(&self, server: &ServerName) -> Result<Destination> {
        if let Some((destination, at)) = self.destinations.lock().await.get(server) {
            if at.elapsed() < WELL_KNOWN_CACHE {
                return Ok(destination.clone());
            }
        }
        let destination = self.resolve_uncached(server).await?;
        self.destinations.lock().await.insert(server.to_owned(), (destination.clone(), tokio::time::Instant::now()));
        Ok(destination)
    }

    async fn resolve_uncached(&self, server: &ServerName) -> Result<Destination> {
        let (host, port) = split_host_port(server.as_str());
        // 1. and 2.: an IP literal, or any name with an explicit port, is used as it is.
        if host.parse::<IpAddr>().is_ok() || port.is_some() {
            return Ok(Destination { base_url: format!("https://{}:{}", url_host(host), port.unwrap_or(DEFAULT_PORT)) });
        }
        // 3.: .well-known delegation.
        if let Some(delegated) = self.well_known(host).await {
            let (d_host, d_port) = split_host_port(&delegated);
            return Ok(Destination { base_url: format!("https://{}:{}", url_host(d_host), d_port.unwrap_or(DEFAULT_PORT)) });
        }
        // 6.: the name itself on the default port.
        Ok(Destination { base_url: format!("https://{}:{DEFAULT_PORT}", url_host(host)) })
    }

    async fn well_known(&self, host: &str) -> Option<String> {
        let url = format!("https://{host}/.well-known/matrix/server");
        self.check_destination(&url).await.ok()?;
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

    /// Refuses destinations in the blocklisted address ranges.
    pub async fn check_destination(&self, url: &str) -> Result<()> {
        let parsed = reqwest::Url::parse(url).map_err(|e| MatrixError::unknown(format!("bad destination: {e}")))?;
        let host = parsed.host_str().ok_or_else(|| MatrixError::unknown("destination without host"))?;
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| MatrixError::unknown(format!("cannot resolve {host}: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        if let Some(blocked) = addresses.iter().find(|ip| self.blocklist.iter().any(|net| net.contains(*ip))) {
            return Err(MatrixError::forbidden(format!("Destination address {blocked} is blocked")));
        }
        Ok(())
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
}
