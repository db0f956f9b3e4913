//! Outbound HTTP to hosts that users or other servers choose (federation peers, push
//! gateways): DNS through hickory, SRV routes for federation, and the IP-range blocklist
//! applied to every address a connection may use — at connect time too, so a name that
//! re-resolves to a private address between check and connect is still refused.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, RwLock},
};

use hickory_resolver::{proto::rr::RData, TokioResolver};
use ipnet::IpNet;

/// Why a host cannot be reached.
#[derive(Debug)]
pub enum Refusal {
    /// It is, or resolves only to, addresses in the blocklist.
    Blocked(String),
    /// It does not resolve.
    Unresolvable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Blocked(why) | Refusal::Unresolvable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Refusal {}

/// The resolver every outbound client is built with.
#[derive(Clone)]
pub struct GuardedDns {
    inner: Arc<Inner>,
}

struct Inner {
    /// None when the system's DNS configuration cannot be read; tokio's resolver then serves.
    resolver: Option<TokioResolver>,
    blocklist: Vec<IpNet>,
    /// CA certificates trusted beside the system's (`federation.extra_ca_files`).
    extra_roots: Vec<reqwest::Certificate>,
    /// Host names whose connections go to another host (a federation SRV target).
    routes: RwLock<HashMap<String, String>>,
}

impl GuardedDns {
    pub fn new(blocklist: Vec<IpNet>) -> Self {
        Self::with_extra_roots(blocklist, Vec::new())
    }

    /// A resolver whose clients also trust `extra_roots` (private CAs, test setups).
    pub fn with_extra_roots(blocklist: Vec<IpNet>, extra_roots: Vec<reqwest::Certificate>) -> Self {
        let resolver = match TokioResolver::builder_tokio().and_then(|builder| builder.build()) {
            Ok(resolver) => Some(resolver),
            Err(error) => {
                tracing::warn!(%error, "system DNS configuration unreadable; using the OS resolver without SRV");
                None
            }
        };
        Self { inner: Arc::new(Inner { resolver, blocklist, extra_roots, routes: RwLock::default() }) }
    }

    /// A reqwest client builder whose connections resolve (and are checked) here, trusting
    /// the extra CAs.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder().dns_resolver(Arc::new(self.clone()));
        for root in &self.inner.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        builder
    }

    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        self.inner.blocklist.iter().any(|net| net.contains(&ip))
    }

    /// Connections to `host` go to `target` from now on (an SRV record said so).
    pub fn route(&self, host: &str, target: &str) {
        let mut routes = self.inner.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        routes.insert(host.to_ascii_lowercase(), target.to_owned());
    }

    /// The SRV record to use for `name` (lowest priority, then highest weight), as
    /// (target host, port). None when there is none or the service is declared absent.
    pub async fn srv(&self, name: &str) -> Option<(String, u16)> {
        let resolver = self.inner.resolver.as_ref()?;
        let lookup = resolver.srv_lookup(name).await.ok()?;
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .collect();
        records.sort_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
        let best = records.into_iter().next()?;
        let target = best.target.to_ascii();
        let target = target.trim_end_matches('.');
        // RFC 2782: a target of "." means the service is decidedly not available.
        (!target.is_empty()).then(|| (target.to_owned(), best.port))
    }

    /// The addresses a connection to `host` may use: its route followed, DNS asked, blocked
    /// ranges removed. An error when nothing is left.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, Refusal> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let target = {
            let routes = self.inner.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            routes.get(&host.to_ascii_lowercase()).cloned().unwrap_or_else(|| host.to_owned())
        };
        let unresolvable = |e: &dyn std::fmt::Display| Refusal::Unresolvable(format!("cannot resolve {host}: {e}"));
        let found: Vec<IpAddr> = match target.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match &self.inner.resolver {
                Some(resolver) => resolver.lookup_ip(target.as_str()).await.map_err(|e| unresolvable(&e))?.iter().collect(),
                None => tokio::net::lookup_host((target.as_str(), 0)).await.map_err(|e| unresolvable(&e))?.map(|a| a.ip()).collect(),
            },
        };
        let allowed: Vec<IpAddr> = found.iter().copied().filter(|ip| !self.is_blocked(*ip)).collect();
        if allowed.is_empty() {
            return Err(match found.first() {
                Some(blocked) => Refusal::Blocked(format!("{host} resolves only to blocked addresses ({blocked})")),
                None => Refusal::Unresolvable(format!("{host} has no addresses")),
            });
        }
        Ok(allowed)
    }

    /// Refuses URLs whose host is, or resolves only to, blocked addresses. IP literals never
    /// reach the resolver, so this is where they are checked.
    pub async fn check_url(&self, url: &str) -> Result<(), Refusal> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Refusal::Unresolvable(format!("bad URL {url}: {e}")))?;
        let host = parsed.host_str().ok_or_else(|| Refusal::Unresolvable(format!("URL without host: {url}")))?;
        self.addresses(host).await.map(|_| ())
    }
}

impl reqwest::dns::Resolve for GuardedDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addresses = this.addresses(name.as_str()).await.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            // Port 0: the connector puts in the URL's port.
            let sockets: reqwest::dns::Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(sockets)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded() -> GuardedDns {
        GuardedDns::new(crate::config::FederationConfig::default().ip_range_blocklist)
    }

    #[tokio::test]
    async fn blocked_ranges_are_refused() {
        let dns = guarded();
        for url in [
            "http://127.0.0.1:8000/_matrix/push/v1/notify",
            "http://[::1]:8000/_matrix/push/v1/notify",
            "http://10.1.2.3/_matrix/push/v1/notify",
            "http://192.168.0.10/_matrix/push/v1/notify",
            "http://169.254.169.254/_matrix/push/v1/notify",
        ] {
            assert!(dns.check_url(url).await.is_err(), "{url} should be refused");
        }
        assert!(dns.check_url("http://93.184.216.34/_matrix/push/v1/notify").await.is_ok());
    }

    #[tokio::test]
    async fn routes_are_followed_and_checked() {
        let dns = guarded();
        dns.route("Matrix.Example.ORG", "10.0.0.7");
        let refused = dns.addresses("matrix.example.org").await.unwrap_err();
        assert!(matches!(refused, Refusal::Blocked(_)), "{refused}");
        dns.route("chat.example.org", "93.184.216.34");
        assert_eq!(dns.addresses("chat.example.org").await.unwrap(), ["93.184.216.34".parse::<IpAddr>().unwrap()]);
        let open = GuardedDns::new(Vec::new());
        open.route("self.test", "127.0.0.1");
        assert_eq!(open.addresses("self.test").await.unwrap(), ["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    /// Answers one HTTP request with the Host header it was sent.
    async fn echo_host_once() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0u8; 4096];
            let n = socket.read(&mut buffer).await.unwrap();
            let request = String::from_utf8_lossy(&buffer[..n]).to_string();
            let host = request.lines().find_map(|l| l.strip_prefix("host: ")).unwrap_or("").to_owned();
            let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{host}", host.len());
            socket.write_all(reply.as_bytes()).await.unwrap();
        });
        port
    }

    #[tokio::test]
    async fn clients_connect_through_routes_and_the_blocklist() {
        let port = echo_host_once().await;
        let open = GuardedDns::new(Vec::new());
        open.route("hs.example.test", "127.0.0.1");
        let client = open.client_builder().build().unwrap();
        let host = client.get(format!("http://hs.example.test:{port}/")).send().await.unwrap().text().await.unwrap();
        assert_eq!(host, format!("hs.example.test:{port}"));

        let guarded = guarded();
        guarded.route("hs.example.test", "127.0.0.1");
        let client = guarded.client_builder().build().unwrap();
        assert!(client.get(format!("http://hs.example.test:{port}/")).send().await.is_err(), "loopback is blocked at connect");
    }
}
