//! Listeners as Synapse has them (`[[listeners]]`): one TLS port serving the client and
//! federation APIs, listeners serving only what they name, and start-up errors that name
//! the listener at fault.

mod common;

use common::{enc, federating_server, free_port, TestServer};
use serde_json::json;
use weft::config::{ListenerConfig, Resource};

/// A self-signed certificate for 127.0.0.1 / localhost, written beside the test.
fn certificate(dir: &std::path::Path) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

#[tokio::test]
async fn one_tls_port_serves_both_apis_and_federates() {
    let certs = tempfile::tempdir().unwrap();
    let (tls_cert, tls_key) = certificate(certs.path());
    let port = free_port();
    let one_port = TestServer::start_with(|c| {
        c.server_name = format!("127.0.0.1:{port}").try_into().unwrap();
        c.federation.max_retry_delay_ms = 1000;
        c.listeners = vec![ListenerConfig {
            bind: format!("127.0.0.1:{port}").parse().unwrap(),
            tls_cert,
            tls_key,
            resources: vec![Resource::Client, Resource::Federation],
        }];
    })
    .await;
    assert!(one_port.base.starts_with("https://"), "{}", one_port.base);
    one_port.get("/_matrix/client/versions", None).await.ok();
    let version = one_port.get("/_matrix/federation/v1/version", None).await.ok();
    assert_eq!(version["server"]["name"], "weft");
    let keys = one_port.get("/_matrix/key/v2/server", None).await.ok();
    assert_eq!(keys["server_name"], format!("127.0.0.1:{port}"));

    // Another server joins a room on it through that port, and each side sees the other's message.
    let other = federating_server().await;
    let (_, alice) = one_port.register("alice").await;
    let (_, bob) = other.register("bob").await;
    let room = one_port.create_room(&alice, json!({ "preset": "public_chat" })).await;
    other
        .post(&format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&one_port.server_name())), Some(&bob), json!({}))
        .await
        .ok();
    other.send_text(&bob, &room, "t1", "hello over one port").await;
    one_port.send_text(&alice, &room, "t2", "and back").await;
    common::eventually(std::time::Duration::from_secs(15), || async {
        common::bodies(&one_port.messages(&alice, &room, "dir=b&limit=10").await).contains(&"hello over one port".to_owned())
    })
    .await;
    common::eventually(std::time::Duration::from_secs(15), || async {
        common::bodies(&other.messages(&bob, &room, "dir=b&limit=10").await).contains(&"and back".to_owned())
    })
    .await;
    other.stop().await;
    one_port.stop().await;
}

#[tokio::test]
async fn each_listener_serves_only_what_it_names() {
    let (client_port, federation_port) = (free_port(), free_port());
    let server = TestServer::start_with(|c| {
        c.listeners = vec![
            ListenerConfig { bind: format!("127.0.0.1:{client_port}").parse().unwrap(), tls_cert: String::new(), tls_key: String::new(), resources: vec![Resource::Client] },
            // Plain HTTP federation, as behind a TLS-terminating proxy.
            ListenerConfig { bind: format!("127.0.0.1:{federation_port}").parse().unwrap(), tls_cert: String::new(), tls_key: String::new(), resources: vec![Resource::Federation] },
        ];
    })
    .await;
    let http = reqwest::Client::new();
    let get = |port: u16, path: &'static str| {
        let http = http.clone();
        async move {
            let response = http.get(format!("http://127.0.0.1:{port}{path}")).send().await.unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    assert_eq!(get(client_port, "/_matrix/client/versions").await.0, 200);
    assert_eq!(get(federation_port, "/_matrix/federation/v1/version").await.0, 200);
    for port in [client_port, federation_port] {
        assert_eq!(get(port, "/_matrix/key/v2/server").await.0, 200, "keys on {port}");
    }
    let (status, body) = get(federation_port, "/_matrix/client/versions").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
    let (status, body) = get(client_port, "/_matrix/federation/v1/version").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_UNRECOGNIZED")));
    assert_eq!(server.base, format!("http://127.0.0.1:{client_port}"));
    server.stop().await;
}

#[tokio::test]
async fn bad_listener_settings_fail_at_start_naming_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let start = |listeners: Vec<ListenerConfig>| {
        let mut config = common::test_config(dir.path());
        config.listeners = listeners;
        async move { weft::server::start(config).await.err().map(|e| format!("{e:#}")).unwrap_or_default() }
    };
    let listener = |bind: &str, resources: Vec<Resource>| ListenerConfig {
        bind: bind.parse().unwrap(),
        tls_cert: String::new(),
        tls_key: String::new(),
        resources,
    };

    let error = start(vec![listener("127.0.0.1:0", vec![])]).await;
    assert!(error.contains("listeners[0] (127.0.0.1:0)") && error.contains("resources"), "{error}");
    let mut half_tls = listener("127.0.0.1:0", vec![Resource::Client]);
    half_tls.tls_cert = "/nonexistent/tls.crt".into();
    let error = start(vec![half_tls]).await;
    assert!(error.contains("tls_key"), "{error}");
    let mut missing = listener("127.0.0.1:0", vec![Resource::Client]);
    missing.tls_cert = "/nonexistent/tls.crt".into();
    missing.tls_key = "/nonexistent/tls.key".into();
    let error = start(vec![missing]).await;
    assert!(error.contains("/nonexistent/tls.crt"), "{error}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let error = start(vec![listener(&address, vec![Resource::Client])]).await;
    assert!(error.contains(&format!("cannot listen on {address}")), "{error}");
}

/// The test helper's own guard against port races: a federating server whose chosen port
/// was taken meanwhile starts on another one (named after it).
#[tokio::test]
async fn a_taken_test_port_is_picked_again() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let server = TestServer::start_with(|c| {
        c.server_name = format!("127.0.0.1:{port}").try_into().unwrap();
        c.federation.listen = format!("127.0.0.1:{port}").parse().unwrap();
    })
    .await;
    let versions = server.get("/_matrix/client/versions", None).await;
    assert_eq!(versions.status, 200);
    let key = server.get("/_matrix/key/v2/server", None).await.ok();
    assert_ne!(key["server_name"], format!("127.0.0.1:{port}"), "{key}");
    assert!(key["server_name"].as_str().unwrap().starts_with("127.0.0.1:"));
    server.stop().await;
}
