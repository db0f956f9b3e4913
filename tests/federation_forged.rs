//! Federation against forged input: a fake server on loopback (its own signing key, key
//! server and a few federation endpoints) joins a weft room and then sends PDUs and EDUs to
//! `/send` the way a hostile or broken server would. Each test checks what weft answers and
//! what its local users see.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Path, Query, State},
    routing::{get, post, put},
    Json, Router,
};
use common::{bodies, enc, eventually, federating_server, TestServer};
use ruma::{
    api::{
        federation::{
            authentication::{ServerSignatures, XMatrixSigningInput},
            membership::{create_join_event, prepare_join_event},
            transactions::send_transaction_message,
        },
        path_builder::SinglePath,
        OutgoingRequest, OutgoingRequestExt,
    },
    signatures::Ed25519KeyPair,
    CanonicalJsonObject, OwnedServerName, RoomVersionId,
};
use serde_json::{json, value::to_raw_value, Value};

/// What the fake server serves to weft: events by id (for `/event` and
/// `/get_missing_events`), and the transactions weft sends it.
#[derive(Default)]
struct Served {
    events: HashMap<String, Value>,
    /// Events answered to `/get_missing_events`, oldest first.
    missing: Vec<String>,
    /// `/state_ids` answers by event id: (pdu_ids, auth_chain_ids).
    state_ids: HashMap<String, (Vec<String>, Vec<String>)>,
    /// The event ids weft asked `/state_ids` for.
    state_ids_asked: Vec<String>,
    /// Behave as a server older than /v2/invite: that route answers a bare 404.
    v1_only: bool,
    /// What make_join answers, when set (an error, say).
    make_join_answer: Option<(u16, Value)>,
    transactions: Vec<Value>,
}

struct FakePeer {
    name: OwnedServerName,
    keypair: Ed25519KeyPair,
    served: Arc<Mutex<Served>>,
    handle: axum_server::Handle<std::net::SocketAddr>,
}

fn rules() -> ruma::room_version_rules::RoomVersionRules {
    RoomVersionId::V10.rules().unwrap()
}

fn canonical(value: Value) -> CanonicalJsonObject {
    serde_json::from_value(value).unwrap()
}

impl FakePeer {
    /// Starts the fake server: TLS on a free loopback port, named by its address.
    async fn start() -> Self {
        weft::federation::tls::install_crypto_provider();
        let port = common::free_port();
        let name: OwnedServerName = format!("127.0.0.1:{port}").try_into().unwrap();
        let der = Ed25519KeyPair::generate();
        let keypair = Ed25519KeyPair::from_der(&der, "fake".into()).unwrap();
        let served: Arc<Mutex<Served>> = Arc::default();

        let mut key_response = canonical(json!({
            "server_name": name,
            "valid_until_ts": ruma::MilliSecondsSinceUnixEpoch::now().get() + ruma::UInt::from(3_600_000u32),
            "verify_keys": { "ed25519:fake": { "key": ruma::serde::Base64::<ruma::serde::base64::Standard>::new(keypair.public_key().to_vec()).encode().trim_end_matches('=') } },
            "old_verify_keys": {},
        }));
        ruma::signatures::sign_json(name.as_str(), &Ed25519KeyPair::from_der(&der, "fake".into()).unwrap(), &mut key_response).unwrap();
        let key_response = serde_json::to_value(key_response).unwrap();
        let origin = name.to_string();
        let (invite_signer, invite_der) = (name.to_string(), der.clone());
        let (invite_v1_signer, invite_v1_der) = (name.to_string(), der.clone());

        let app = Router::new()
            .route("/_matrix/key/v2/server", get(move || async move { Json(key_response) }))
            .route(
                "/_matrix/federation/v1/event/{event_id}",
                get(move |State(served): State<Arc<Mutex<Served>>>, Path(event_id): Path<String>| async move {
                    let event = served.lock().unwrap().events.get(&event_id).cloned();
                    match event {
                        Some(event) => (http::StatusCode::OK, Json(json!({ "origin": origin, "origin_server_ts": 1, "pdus": [event] }))),
                        None => (http::StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND", "error": "no such event" }))),
                    }
                }),
            )
            .route(
                "/_matrix/federation/v1/get_missing_events/{room_id}",
                post(|State(served): State<Arc<Mutex<Served>>>| async move {
                    let served = served.lock().unwrap();
                    let events: Vec<Value> = served.missing.iter().filter_map(|id| served.events.get(id).cloned()).collect();
                    Json(json!({ "events": events }))
                }),
            )
            .route(
                "/_matrix/federation/v1/state_ids/{room_id}",
                get(|State(served): State<Arc<Mutex<Served>>>, Query(query): Query<HashMap<String, String>>| async move {
                    let mut served = served.lock().unwrap();
                    let event_id = query.get("event_id").cloned().unwrap_or_default();
                    served.state_ids_asked.push(event_id.clone());
                    match served.state_ids.get(&event_id) {
                        Some((pdu_ids, auth_chain_ids)) => (http::StatusCode::OK, Json(json!({ "pdu_ids": pdu_ids, "auth_chain_ids": auth_chain_ids }))),
                        None => (http::StatusCode::NOT_FOUND, Json(json!({ "errcode": "M_NOT_FOUND", "error": "no such event" }))),
                    }
                }),
            )
            .route(
                "/_matrix/federation/v1/send/{txn}",
                put(|State(served): State<Arc<Mutex<Served>>>, Json(body): Json<Value>| async move {
                    served.lock().unwrap().transactions.push(body);
                    Json(json!({ "pdus": {} }))
                }),
            )
            // Invites to the fake's users are countersigned and accepted.
            .route(
                "/_matrix/federation/v2/invite/{room_id}/{event_id}",
                put(move |State(served): State<Arc<Mutex<Served>>>, Json(body): Json<Value>| async move {
                    if served.lock().unwrap().v1_only {
                        return (http::StatusCode::NOT_FOUND, String::new());
                    }
                    let mut event = canonical(body["event"].clone());
                    let keypair = Ed25519KeyPair::from_der(&invite_der, "fake".into()).unwrap();
                    let rules = body["room_version"].as_str().and_then(|v| RoomVersionId::try_from(v).ok()).unwrap_or(RoomVersionId::V10).rules().unwrap();
                    ruma::signatures::sign_event(&invite_signer, &keypair, &mut event, &rules.redaction).unwrap();
                    (http::StatusCode::OK, json!({ "event": event }).to_string())
                }),
            )
            .route(
                "/_matrix/federation/v1/invite/{room_id}/{event_id}",
                put(move |State(served): State<Arc<Mutex<Served>>>, Json(body): Json<Value>| async move {
                    served.lock().unwrap().transactions.push(json!({ "v1_invite": body }));
                    let mut event = canonical(body);
                    let keypair = Ed25519KeyPair::from_der(&invite_v1_der, "fake".into()).unwrap();
                    // v1 invites are of rooms of version 1 or 2, redacted alike.
                    ruma::signatures::sign_event(&invite_v1_signer, &keypair, &mut event, &RoomVersionId::V2.rules().unwrap().redaction).unwrap();
                    Json(json!([200, { "event": event }]))
                }),
            )
            .route(
                "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
                get(|State(served): State<Arc<Mutex<Served>>>| async move {
                    let answer = served.lock().unwrap().make_join_answer.clone().unwrap_or((404, json!({ "errcode": "M_NOT_FOUND", "error": "no room" })));
                    (http::StatusCode::from_u16(answer.0).unwrap(), Json(answer.1))
                }),
            )
            .with_state(served.clone());
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(certified.cert.pem().into_bytes(), certified.signing_key.serialize_pem().into_bytes())
            .await
            .unwrap();
        let handle = axum_server::Handle::new();
        let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        tokio::spawn(axum_server::bind_rustls(address, tls).handle(handle.clone()).serve(app.into_make_service()));
        Self { name, keypair, served, handle }
    }

    fn user(&self, local: &str) -> String {
        format!("@{local}:{}", self.name)
    }

    /// A request to `to`, signed with the fake's key (or, when `keypair` is given, with
    /// another key claimed to be the fake's).
    async fn request<R>(&self, to: &TestServer, request: R) -> common::Reply
    where
        R: OutgoingRequest<Authentication = ServerSignatures, PathBuilder = SinglePath>,
    {
        let destination: OwnedServerName = to.server_name().try_into().unwrap();
        let input = XMatrixSigningInput::new(self.name.clone(), destination, &self.keypair);
        let http_request: http::Request<Vec<u8>> = request.try_into_http_request(&format!("https://{}", to.server_name()), input, ()).unwrap();
        let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
        let response = client.execute(reqwest::Request::try_from(http_request).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
        common::Reply { status, body, headers }
    }

    /// Hashes and signs an event (with `keypair`, the fake's own unless given) and returns
    /// its id and JSON; the fake also serves it from then on.
    fn sign_with(&self, keypair: &Ed25519KeyPair, event: Value) -> (String, Value) {
        let mut object = canonical(event);
        ruma::signatures::hash_and_sign_event(self.name.as_str(), keypair, &mut object, &rules().redaction).unwrap();
        let event_id = format!("${}", ruma::signatures::reference_hash(&object, &rules()).unwrap());
        let json = serde_json::to_value(&object).unwrap();
        self.served.lock().unwrap().events.insert(event_id.clone(), json.clone());
        (event_id, json)
    }

    fn sign(&self, event: Value) -> (String, Value) {
        self.sign_with(&self.keypair, event)
    }

    /// Joins `user` (of the fake) to a room on `to` through make_join / send_join.
    async fn join(&self, to: &TestServer, room: &str, user: &str) -> String {
        let mut make = prepare_join_event::v1::Request::new(room.try_into().unwrap(), user.try_into().unwrap());
        make.ver = vec![RoomVersionId::V10];
        let template = self.request(to, make).await.ok();
        let mut event = template["event"].clone();
        event["origin_server_ts"] = json!(now());
        event["origin"] = json!(self.name);
        let (event_id, json) = self.sign(event);
        let send = create_join_event::v2::Request::new(room.try_into().unwrap(), event_id.as_str().try_into().unwrap(), to_raw_value(&json).unwrap());
        self.request(to, send).await.ok();
        event_id
    }

    /// Sends one transaction of PDUs and EDUs; returns weft's per-PDU results.
    async fn send(&self, to: &TestServer, pdus: &[&Value], edus: &[Value]) -> Value {
        let txn = format!("t{}", now());
        let mut request = send_transaction_message::v1::Request::new(txn.into(), self.name.clone(), ruma::MilliSecondsSinceUnixEpoch::now());
        request.pdus = pdus.iter().map(|p| to_raw_value(p).unwrap()).collect();
        request.edus = edus.iter().map(|e| ruma::serde::Raw::from_json(to_raw_value(e).unwrap())).collect();
        let reply = self.request(to, request).await.ok();
        reply["pdus"].clone()
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A weft room (alice's, public, v10) the fake's user `mallory` has joined.
struct Room {
    server: TestServer,
    alice_token: String,
    room_id: String,
    mallory: String,
    mallory_join: String,
}

impl Room {
    async fn set_up(peer: &FakePeer) -> Self {
        let server = federating_server().await;
        let (_, alice_token) = server.register("alice").await;
        let room_id = server.create_room(&alice_token, json!({ "preset": "public_chat", "room_version": "10", "name": "forged" })).await;
        let mallory = peer.user("mallory");
        let mallory_join = peer.join(&server, &room_id, &mallory).await;
        Self { server, alice_token, room_id, mallory, mallory_join }
    }

    /// The id of the room's current state event of a type and key.
    async fn state_id(&self, kind: &str, key: &str) -> String {
        let state = self.server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&self.room_id)), Some(&self.alice_token)).await.ok();
        let event = state.as_array().unwrap().iter().find(|e| e["type"] == kind && e["state_key"] == key).cloned();
        event.unwrap_or_else(|| panic!("no {kind}/{key} in {state}"))["event_id"].as_str().unwrap().to_owned()
    }

    /// The newest event of the room as alice sees it, and its depth.
    async fn latest(&self, peer: &FakePeer) -> (String, u64) {
        let page = self.server.messages(&self.alice_token, &self.room_id, "dir=b&limit=1").await;
        let event_id = page["chunk"][0]["event_id"].as_str().unwrap().to_owned();
        let pdu = peer.request(&self.server, ruma::api::federation::event::get_event::v1::Request::new(event_id.as_str().try_into().unwrap())).await.ok();
        (event_id, pdu["pdus"][0]["depth"].as_u64().unwrap())
    }

    /// An event of mallory's on top of the room's newest event, authorised by the usual
    /// auth events (create, power levels, mallory's membership).
    async fn mallory_event(&self, peer: &FakePeer, kind: &str, state_key: Option<&str>, content: Value) -> Value {
        let (prev, depth) = self.latest(peer).await;
        let auth = vec![self.state_id("m.room.create", "").await, self.state_id("m.room.power_levels", "").await, self.mallory_join.clone()];
        let mut event = json!({
            "room_id": self.room_id, "sender": self.mallory, "type": kind, "content": content, "origin": peer.name,
            "origin_server_ts": now(), "depth": depth + 1, "prev_events": [prev], "auth_events": auth,
        });
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        event
    }

    /// Whether alice can fetch the event through the Client-Server API, and its content.
    async fn alice_sees(&self, event_id: &str) -> Option<Value> {
        let reply = self.server.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&self.room_id), enc(event_id)), Some(&self.alice_token)).await;
        reply.status.is_success().then(|| reply.body["content"].clone())
    }

    async fn timeline_bodies(&self) -> Vec<String> {
        let mut page = self.server.messages(&self.alice_token, &self.room_id, "dir=b&limit=50").await;
        page["chunk"].as_array_mut().unwrap().reverse();
        bodies(&page)
    }
}

fn message(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

/// The baseline the other tests stand on: a well-formed event of the fake's user is accepted
/// and shown.
#[tokio::test]
async fn a_well_formed_event_is_accepted() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let (event_id, event) = peer.sign(room.mallory_event(&peer, "m.room.message", None, message("hello")).await);
    let results = peer.send(&room.server, &[&event], &[]).await;
    assert_eq!(results[&event_id], json!({}), "{results}");
    assert_eq!(room.alice_sees(&event_id).await.unwrap()["body"], "hello");
    assert_eq!(room.timeline_bodies().await.last().map(String::as_str), Some("hello"));
    // weft sends its own users' events to the fake, which is in the room.
    room.server.send_text(&room.alice_token, &room.room_id, "a1", "to the fake").await;
    eventually(Duration::from_secs(20), || {
        let sent = peer.served.lock().unwrap().transactions.iter().any(|t| t.to_string().contains("to the fake"));
        async move { sent }
    })
    .await;
    room.server.stop().await;
}

/// A signature that does not verify with the origin's key: the PDU is refused (an error in
/// its result) and never stored.
#[tokio::test]
async fn a_bad_signature_is_refused() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let other = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "fake".into()).unwrap();
    let (event_id, event) = peer.sign_with(&other, room.mallory_event(&peer, "m.room.message", None, message("forged")).await);
    let results = peer.send(&room.server, &[&event], &[]).await;
    assert!(results[&event_id]["error"].is_string(), "{results}");
    assert_eq!(room.alice_sees(&event_id).await, None);
    assert!(!room.timeline_bodies().await.contains(&"forged".to_owned()));
    room.server.stop().await;
}

/// Content changed after signing: the signature still holds (it covers the redacted form),
/// the content hash does not, so the event is kept redacted, not dropped.
#[tokio::test]
async fn a_content_hash_mismatch_is_kept_redacted() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let (event_id, mut event) = peer.sign(room.mallory_event(&peer, "m.room.message", None, message("original")).await);
    event["content"]["body"] = json!("tampered");
    let results = peer.send(&room.server, &[&event], &[]).await;
    assert_eq!(results[&event_id], json!({}), "{results}");
    assert_eq!(room.alice_sees(&event_id).await, Some(json!({})), "stored with its content redacted");
    let timeline = room.timeline_bodies().await;
    assert!(!timeline.iter().any(|b| b == "tampered" || b == "original"), "{timeline:?}");
    room.server.stop().await;
}

/// An event its auth rules forbid (mallory, at power 0, raising their own power level) is
/// rejected: not in the timeline, and the room's state stays as it was.
#[tokio::test]
async fn an_event_failing_auth_is_rejected() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let pl_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room.room_id));
    let mut levels = room.server.get(&pl_path, Some(&room.alice_token)).await.ok();
    levels["users"][&room.mallory] = json!(100);
    let (event_id, event) = peer.sign(room.mallory_event(&peer, "m.room.power_levels", Some(""), levels).await);
    let results = peer.send(&room.server, &[&event], &[]).await;
    // Received, and rejected: no error for its sender to retry on (as Synapse answers).
    assert_eq!(results[&event_id], json!({}), "{results}");
    assert_eq!(room.alice_sees(&event_id).await, None);
    let now_levels = room.server.get(&pl_path, Some(&room.alice_token)).await.ok();
    assert!(now_levels["users"].get(&room.mallory).is_none(), "{now_levels}");
    room.server.stop().await;
}

/// Soft failure: an event allowed by the state before it (mallory joined) but not by the
/// room's current state (mallory since banned) is stored, shown to nobody, and not built on.
#[tokio::test]
async fn an_event_passing_auth_only_at_its_own_state_is_soft_failed() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    // Another of the fake's users stays, so the fake is still in the room after the ban.
    peer.join(&room.server, &room.room_id, &peer.user("trudy")).await;
    // Written before the ban, sent after it.
    let (event_id, event) = peer.sign(room.mallory_event(&peer, "m.room.message", None, message("from before the ban")).await);
    room.server.post(&format!("/_matrix/client/v3/rooms/{}/ban", enc(&room.room_id)), Some(&room.alice_token), json!({ "user_id": room.mallory })).await.ok();
    let results = peer.send(&room.server, &[&event], &[]).await;
    assert!(results.get(&event_id).is_none_or(|r| r.get("error").is_none()), "soft failure is not an error: {results}");
    assert!(!room.timeline_bodies().await.contains(&"from before the ban".to_owned()));
    // alice's next event does not point at it.
    let next = room.server.send_text(&room.alice_token, &room.room_id, "a2", "after").await;
    let pdu = peer.request(&room.server, ruma::api::federation::event::get_event::v1::Request::new(next.as_str().try_into().unwrap())).await.ok();
    assert!(!pdu["pdus"][0]["prev_events"].as_array().unwrap().contains(&json!(event_id)), "{pdu}");
    room.server.stop().await;
}

/// A gap: the fake sends only the second of two new events; weft fetches the first with
/// /get_missing_events and shows both, in order.
#[tokio::test]
async fn a_gap_is_filled_from_the_origin() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let first_json = room.mallory_event(&peer, "m.room.message", None, message("first")).await;
    let depth = first_json["depth"].as_u64().unwrap();
    let auth = first_json["auth_events"].clone();
    let (first_id, _) = peer.sign(first_json);
    let (second_id, second) = peer.sign(json!({
        "room_id": room.room_id, "sender": room.mallory, "type": "m.room.message", "content": message("second"),
        "origin": peer.name, "origin_server_ts": now(), "depth": depth + 1, "prev_events": [first_id], "auth_events": auth,
    }));
    peer.served.lock().unwrap().missing = vec![first_id.clone()];
    let results = peer.send(&room.server, &[&second], &[]).await;
    assert_eq!(results[&second_id], json!({}), "{results}");
    let timeline = room.timeline_bodies().await;
    assert_eq!(timeline[timeline.len() - 2..], ["first".to_owned(), "second".to_owned()], "{timeline:?}");
    room.server.stop().await;
}

/// Gives mallory power level 50 (enough for `m.room.name`); returns the power levels as they
/// were before (mallory at 0), and the id of that old event.
async fn raise_mallory(room: &Room) -> (Value, String) {
    let pl_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room.room_id));
    let old_id = room.state_id("m.room.power_levels", "").await;
    let old = room.server.get(&pl_path, Some(&room.alice_token)).await.ok();
    let mut raised = old.clone();
    raised["users"][&room.mallory] = json!(50);
    room.server.put(&pl_path, Some(&room.alice_token), raised).await.ok();
    (old, old_id)
}

async fn room_name(room: &Room) -> Value {
    room.server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&room.room_id)), Some(&room.alice_token)).await.ok()["name"].clone()
}

/// An event must pass the auth rules against its own auth events, not only against the state
/// before it: mallory (now at 50) renames the room citing the power levels from when they
/// were at 0. Allowed by the room's state, refused by its auth events: rejected.
#[tokio::test]
async fn an_event_its_own_auth_events_forbid_is_rejected() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let (_, old_levels) = raise_mallory(&room).await;
    let mut rename = room.mallory_event(&peer, "m.room.name", Some(""), json!({ "name": "renamed" })).await;
    rename["auth_events"] = json!([room.state_id("m.room.create", "").await, old_levels, room.mallory_join]);
    let (rename_id, rename) = peer.sign(rename);
    peer.send(&room.server, &[&rename], &[]).await;
    assert_eq!(room.alice_sees(&rename_id).await, None);
    assert_eq!(room_name(&room).await, "forged");

    // The same rename citing the current power levels is accepted (so the refusal above was
    // about the auth events).
    let (rename_id, rename) = peer.sign(room.mallory_event(&peer, "m.room.name", Some(""), json!({ "name": "renamed" })).await);
    peer.send(&room.server, &[&rename], &[]).await;
    assert!(room.alice_sees(&rename_id).await.is_some());
    assert_eq!(room_name(&room).await, "renamed");
    room.server.stop().await;
}

/// An auth event weft must fetch (an outlier) that its own auth events do not allow: a
/// power-levels event, never sent, in which mallory (at 0 then) made themselves 50. A rename
/// citing it would pass against it and against the room's state (mallory is at 50 now), so
/// only checking the fetched event itself finds the forgery: the rename is rejected.
#[tokio::test]
async fn an_outlier_its_auth_chain_does_not_allow_is_not_trusted() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let mut levels = room.server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room.room_id)), Some(&room.alice_token)).await.ok();
    levels["users"][&room.mallory] = json!(50);
    let (forged_levels, _) = peer.sign(room.mallory_event(&peer, "m.room.power_levels", Some(""), levels).await);
    raise_mallory(&room).await;
    let mut rename = room.mallory_event(&peer, "m.room.name", Some(""), json!({ "name": "taken over" })).await;
    rename["auth_events"] = json!([room.state_id("m.room.create", "").await, forged_levels, room.mallory_join]);
    let (rename_id, rename) = peer.sign(rename);
    let results = peer.send(&room.server, &[&rename], &[]).await;
    assert_eq!(room.alice_sees(&rename_id).await, None, "{results}");
    assert_eq!(room_name(&room).await, "forged");
    room.server.stop().await;
}

/// EDUs speak only for the origin's own users: typing of mallory shows, typing claimed for
/// alice (a user of weft's) by the fake is ignored.
#[tokio::test]
async fn edus_for_users_of_other_servers_are_ignored() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let alice = format!("@alice:{}", room.server.server_name());
    let typing = |user: &str| json!({ "edu_type": "m.typing", "content": { "room_id": room.room_id, "user_id": user, "typing": true } });
    peer.send(&room.server, &[], &[typing(&alice)]).await;
    peer.send(&room.server, &[], &[typing(&room.mallory)]).await;
    let sync = room.server.get("/_matrix/client/v3/sync?timeout=0", Some(&room.alice_token)).await.ok();
    let ephemeral = &sync["rooms"]["join"][&room.room_id]["ephemeral"]["events"];
    let typing_users: Vec<String> = ephemeral
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.typing")
        .flat_map(|e| e["content"]["user_ids"].as_array().cloned().unwrap_or_default())
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    assert_eq!(typing_users, vec![room.mallory.clone()], "{sync}");
    room.server.stop().await;
}

/// /state_ids at an event with two prev events answers the state before it: both branches'
/// changes resolved, not the state after one of its prev events.
#[tokio::test]
async fn state_ids_answer_the_state_before_an_event_resolved_over_its_prev_events() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let trudy = peer.user("trudy");
    let trudy_join = peer.join(&room.server, &room.room_id, &trudy).await;
    // Two concurrent display-name changes on the same parent: a fork.
    let mut mallory_rename = room.mallory_event(&peer, "m.room.member", Some(&room.mallory), json!({ "membership": "join", "displayname": "M" })).await;
    mallory_rename["auth_events"].as_array_mut().unwrap().push(json!(room.state_id("m.room.join_rules", "").await));
    let mut trudy_rename = mallory_rename.clone();
    trudy_rename["sender"] = json!(trudy);
    trudy_rename["state_key"] = json!(trudy);
    trudy_rename["content"]["displayname"] = json!("T");
    trudy_rename["auth_events"][2] = json!(trudy_join);
    let (mallory_id, mallory_rename) = peer.sign(mallory_rename);
    let (trudy_id, trudy_rename) = peer.sign(trudy_rename);
    let results = peer.send(&room.server, &[&mallory_rename, &trudy_rename], &[]).await;
    assert_eq!(results, json!({ &mallory_id: {}, &trudy_id: {} }));
    // alice's next event joins the two branches.
    let joined = room.server.send_text(&room.alice_token, &room.room_id, "m1", "after the fork").await;
    let request = ruma::api::federation::event::get_room_state_ids::v1::Request::new(joined.as_str().try_into().unwrap(), room.room_id.as_str().try_into().unwrap());
    let state = peer.request(&room.server, request).await.ok();
    let ids: Vec<&str> = state["pdu_ids"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(ids.contains(&mallory_id.as_str()) && ids.contains(&trudy_id.as_str()), "{state}");
    assert!(!ids.contains(&joined.as_str()));
    room.server.stop().await;
}

/// mallory's message on top of `prev` (at `depth`), with the usual auth events.
fn mallory_message_on(room: &Room, peer: &FakePeer, prev: &str, depth: u64, auth: &Value, body: &str) -> Value {
    json!({
        "room_id": room.room_id, "sender": room.mallory, "type": "m.room.message", "content": message(body),
        "origin": peer.name, "origin_server_ts": now(), "depth": depth, "prev_events": [prev], "auth_events": auth,
    })
}

/// An event pushed to weft whose prev event its server will not give (not in
/// /get_missing_events) is refused: taking the state it claims on trust could hand the room
/// to its sender. Nothing of it is shown.
#[tokio::test]
async fn a_pushed_event_whose_history_is_withheld_is_refused() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let first = room.mallory_event(&peer, "m.room.message", None, message("withheld")).await;
    let (depth, auth) = (first["depth"].as_u64().unwrap(), first["auth_events"].clone());
    let (first_id, _) = peer.sign(first);
    peer.served.lock().unwrap().events.remove(&first_id);
    let (second_id, second) = peer.sign(mallory_message_on(&room, &peer, &first_id, depth + 1, &auth, "after the withheld"));
    let results = peer.send(&room.server, &[&second], &[]).await;
    assert!(results[&second_id]["error"].is_string(), "{results}");
    assert_eq!(room.alice_sees(&second_id).await, None);
    assert!(!room.timeline_bodies().await.contains(&"after the withheld".to_owned()));
    room.server.stop().await;
}

/// A gap /get_missing_events does not close: weft pushed C, pulls B, and B's prev A is not
/// given. weft asks the origin for the state at A (/state_ids), fetches A itself, and
/// persists B and C on that state with A in it: mallory's name from A shows.
#[tokio::test]
async fn a_pulled_event_with_a_gap_takes_the_state_at_its_missing_prev() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let before_a = room.server.send_text(&room.alice_token, &room.room_id, "m0", "before the gap").await;
    // The state before A is the state after alice's message, which is the state before it.
    let request = ruma::api::federation::event::get_room_state_ids::v1::Request::new(before_a.as_str().try_into().unwrap(), room.room_id.as_str().try_into().unwrap());
    let state_before_a = peer.request(&room.server, request).await.ok();
    let mut rename = room.mallory_event(&peer, "m.room.member", Some(&room.mallory), json!({ "membership": "join", "displayname": "Across The Gap" })).await;
    rename["auth_events"].as_array_mut().unwrap().push(json!(room.state_id("m.room.join_rules", "").await));
    let (depth, auth) = (rename["depth"].as_u64().unwrap(), room.mallory_event(&peer, "m.room.message", None, json!({})).await["auth_events"].clone());
    let (a_id, _) = peer.sign(rename);
    let ids = |key: &str| state_before_a[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect::<Vec<_>>();
    peer.served.lock().unwrap().state_ids.insert(a_id.clone(), (ids("pdu_ids"), ids("auth_chain_ids")));
    let (b_id, _) = peer.sign(mallory_message_on(&room, &peer, &a_id, depth + 1, &auth, "B"));
    let (c_id, c) = peer.sign(mallory_message_on(&room, &peer, &b_id, depth + 2, &auth, "C"));
    peer.served.lock().unwrap().missing = vec![b_id.clone()];

    let results = peer.send(&room.server, &[&c], &[]).await;
    assert_eq!(results[&c_id], json!({}), "{results}");
    assert_eq!(peer.served.lock().unwrap().state_ids_asked, vec![a_id.clone()]);
    let timeline = room.timeline_bodies().await;
    assert_eq!(timeline[timeline.len() - 3..], ["before the gap".to_owned(), "B".to_owned(), "C".to_owned()], "{timeline:?}");
    let member = room.server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room.room_id), enc(&room.mallory)), Some(&room.alice_token)).await.ok();
    assert_eq!(member["displayname"], "Across The Gap", "{member}");
    room.server.stop().await;
}

/// A rejected event stays in the room's graph: an event built on it is accepted, on the state
/// before the rejected one (mallory's self-promotion does not take effect).
#[tokio::test]
async fn an_event_built_on_a_rejected_event_is_accepted() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let pl_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room.room_id));
    let mut levels = room.server.get(&pl_path, Some(&room.alice_token)).await.ok();
    levels["users"][&room.mallory] = json!(100);
    let promotion = room.mallory_event(&peer, "m.room.power_levels", Some(""), levels).await;
    let (depth, auth) = (promotion["depth"].as_u64().unwrap(), promotion["auth_events"].clone());
    let (rejected_id, rejected) = peer.sign(promotion);
    assert_eq!(peer.send(&room.server, &[&rejected], &[]).await[&rejected_id], json!({}));
    assert_eq!(room.alice_sees(&rejected_id).await, None);

    let (next_id, next) = peer.sign(mallory_message_on(&room, &peer, &rejected_id, depth + 1, &auth, "after the rejected"));
    let results = peer.send(&room.server, &[&next], &[]).await;
    assert_eq!(results[&next_id], json!({}), "{results}");
    assert!(room.alice_sees(&next_id).await.is_some());
    let now_levels = room.server.get(&pl_path, Some(&room.alice_token)).await.ok();
    assert!(now_levels["users"].get(&room.mallory).is_none(), "{now_levels}");
    room.server.stop().await;
}

/// The m.device_list_update EDUs the fake received for a user.
fn device_list_updates(peer: &FakePeer, user: &str) -> Vec<Value> {
    let served = peer.served.lock().unwrap();
    served
        .transactions
        .iter()
        .flat_map(|t| t["edus"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["edu_type"] == "m.device_list_update" && e["content"]["user_id"] == user)
        .map(|e| e["content"].clone())
        .collect()
}

/// A new login of alice's and the deletion of that device reach the servers sharing her
/// rooms as m.device_list_update EDUs (their users' clients then refetch her keys).
#[tokio::test]
async fn new_and_deleted_devices_reach_servers_sharing_a_room() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let alice = format!("@alice:{}", room.server.server_name());
    let password = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "password" });
    let login = room.server.post("/_matrix/client/v3/login", None, password.clone()).await.ok();
    let device = login["device_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), || async { device_list_updates(&peer, &alice).iter().any(|u| u["device_id"] == device.as_str()) }).await;

    let path = format!("/_matrix/client/v3/devices/{device}");
    let challenge = room.server.delete(&path, Some(&room.alice_token), json!({})).await;
    let mut auth = password;
    auth["session"] = challenge.body["session"].clone();
    room.server.delete(&path, Some(&room.alice_token), json!({ "auth": auth })).await.ok();
    eventually(Duration::from_secs(10), || async {
        device_list_updates(&peer, &alice).iter().any(|u| u["device_id"] == device.as_str() && u["deleted"] == true)
    })
    .await;
    room.server.stop().await;
}

/// An invite for a user of a server not in the room goes to that server through /invite
/// only; no room events are sent to it as if it were in the room.
#[tokio::test]
async fn a_server_with_only_an_invitee_is_sent_no_room_events() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let outsider = FakePeer::start().await;
    let invitee = outsider.user("ivan");
    room.server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room.room_id)), Some(&room.alice_token), json!({ "user_id": invitee })).await.ok();
    room.server.send_text(&room.alice_token, &room.room_id, "after-invite", "after the invite").await;
    // The server in the room has the message by now; the outsider had the same chance.
    eventually(Duration::from_secs(10), || async {
        let served = peer.served.lock().unwrap();
        served.transactions.iter().any(|t| t["pdus"].as_array().is_some_and(|pdus| pdus.iter().any(|p| p["content"]["body"] == "after the invite")))
    })
    .await;
    let sent_to_outsider: Vec<Value> = outsider.served.lock().unwrap().transactions.iter().flat_map(|t| t["pdus"].as_array().cloned().unwrap_or_default()).collect();
    assert!(sent_to_outsider.is_empty(), "{sent_to_outsider:?}");
    room.server.stop().await;
}

/// A server older than /v2/send_join joins through /v1/send_join: answered `[200, {...}]`
/// with the room's state, and the join takes effect.
#[tokio::test]
async fn v1_send_join_is_served() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let joiner = peer.user("oldtimer");
    let mut make = prepare_join_event::v1::Request::new(room.room_id.as_str().try_into().unwrap(), joiner.as_str().try_into().unwrap());
    make.ver = vec![RoomVersionId::V10];
    let mut event = peer.request(&room.server, make).await.ok()["event"].clone();
    event["origin_server_ts"] = json!(now());
    event["origin"] = json!(peer.name);
    let (event_id, json) = peer.sign(event);
    let request = weft::federation::v1_membership::send_join::Request::new(
        room.room_id.as_str().try_into().unwrap(),
        event_id.as_str().try_into().unwrap(),
        to_raw_value(&json).unwrap(),
    );
    let answer = peer.request(&room.server, request).await.ok();
    assert_eq!(answer[0], 200, "{answer}");
    let state = answer[1]["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{answer}");
    assert!(answer[1]["auth_chain"].is_array(), "{answer}");
    assert_eq!(room.state_id("m.room.member", &joiner).await, event_id);
    room.server.stop().await;
}

/// An invite through /v1/invite (the event as the body, no room version: a room of version
/// 1 or 2) is countersigned, answered `[200, { "event": ... }]` and shown to the invitee.
#[tokio::test]
async fn v1_invites_are_received() {
    let peer = FakePeer::start().await;
    let server = federating_server().await;
    let (alice, alice_token) = server.register("alice").await;
    let room_id = format!("!old:{}", peer.name);
    let event_id = format!("$invite:{}", peer.name);
    let mut event = canonical(json!({
        "event_id": event_id, "room_id": room_id, "sender": peer.user("mallory"), "type": "m.room.member", "state_key": alice,
        "content": { "membership": "invite" }, "origin": peer.name, "origin_server_ts": now(), "depth": 5,
        "prev_events": [], "auth_events": [],
        "unsigned": { "invite_room_state": [{ "type": "m.room.name", "state_key": "", "sender": peer.user("mallory"), "content": { "name": "Old times" } }] },
    }));
    ruma::signatures::hash_and_sign_event(peer.name.as_str(), &peer.keypair, &mut event, &RoomVersionId::V1.rules().unwrap().redaction).unwrap();
    let request = weft::federation::v1_membership::invite::Request::new(
        room_id.as_str().try_into().unwrap(),
        event_id.as_str().try_into().unwrap(),
        to_raw_value(&event).unwrap(),
    );
    let answer = peer.request(&server, request).await.ok();
    assert_eq!(answer[0], 200, "{answer}");
    assert!(answer[1]["event"]["signatures"][server.server_name()].is_object(), "countersigned: {answer}");
    let sync = server.get("/_matrix/client/v3/sync", Some(&alice_token)).await.ok();
    let invite_state = &sync["rooms"]["invite"][&room_id]["invite_state"]["events"];
    assert!(invite_state.as_array().unwrap().iter().any(|e| e["content"]["name"] == "Old times"), "{sync}");
    server.stop().await;
}

/// Inviting a user of a server without /v2/invite, to a room of version 2, goes through
/// /v1/invite (the event with the room's stripped state in `unsigned`).
#[tokio::test]
async fn invites_fall_back_to_v1_for_old_servers() {
    let peer = FakePeer::start().await;
    peer.served.lock().unwrap().v1_only = true;
    let server = federating_server().await;
    let (_, alice) = server.register("alice").await;
    let room = server.create_room(&alice, json!({ "room_version": "2", "name": "vintage" })).await;
    let invitee = peer.user("ivan");
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice), json!({ "user_id": invitee })).await.ok();
    let sent = peer.served.lock().unwrap().transactions.iter().find_map(|t| t.get("v1_invite").cloned()).expect("a v1 invite");
    assert_eq!(sent["state_key"], invitee.as_str());
    assert!(sent["unsigned"]["invite_room_state"].as_array().unwrap().iter().any(|e| e["content"]["name"] == "vintage"), "{sent}");
    let member = server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&invitee)), Some(&alice)).await.ok();
    assert_eq!(member["membership"], "invite");

    // A room version the old server cannot have is refused, not sent.
    let modern = server.create_room(&alice, json!({ "room_version": "10" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&modern)), Some(&alice), json!({ "user_id": invitee })).await.err(400, "M_UNSUPPORTED_ROOM_VERSION");
    server.stop().await;
}

/// A remote server's refusal of a join reaches the client as that server sent it.
#[tokio::test]
async fn a_remote_make_join_refusal_reaches_the_client() {
    let peer = FakePeer::start().await;
    peer.served.lock().unwrap().make_join_answer = Some((403, json!({ "errcode": "M_FORBIDDEN", "error": "You are banned from this room" })));
    let server = federating_server().await;
    let (_, alice) = server.register("alice").await;
    let room_id = format!("!closed:{}", peer.name);
    let reply = server.post(&format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room_id), enc(peer.name.as_str())), Some(&alice), json!({})).await;
    reply.err(403, "M_FORBIDDEN");
    assert_eq!(reply.body["error"], "You are banned from this room");
    server.stop().await;
}

/// A key named by its public key, as cross-signing keys are, and a signature by it.
fn named_key() -> (Ed25519KeyPair, String) {
    let document = Ed25519KeyPair::generate();
    let probe = Ed25519KeyPair::from_der(&document, "probe".into()).unwrap();
    let public = ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(probe.public_key().to_vec()).encode();
    (Ed25519KeyPair::from_der(&document, public.clone()).unwrap(), public)
}

fn signed_by(user: &str, pair: &Ed25519KeyPair, object: &Value) -> Value {
    let mut canonical = canonical(object.clone());
    ruma::signatures::sign_json(user, pair, &mut canonical).unwrap();
    serde_json::to_value(canonical).unwrap()
}

/// alice cross-signs her device: the servers sharing her rooms get the device again with the
/// new signature (m.device_list_update), so their users see it verified.
#[tokio::test]
async fn a_cross_signed_device_reaches_servers_sharing_a_room() {
    let peer = FakePeer::start().await;
    let room = Room::set_up(&peer).await;
    let alice = format!("@alice:{}", room.server.server_name());
    let token = room.alice_token.clone();
    let device = room.server.get("/_matrix/client/v3/account/whoami", Some(&token)).await.ok()["device_id"].as_str().unwrap().to_owned();
    let device_keys = json!({
        "user_id": alice, "device_id": device, "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{device}"): "curvekey", format!("ed25519:{device}"): "edkey" },
    });
    let mut uploaded = device_keys.clone();
    uploaded["signatures"] = json!({});
    room.server.post("/_matrix/client/v3/keys/upload", Some(&token), json!({ "device_keys": uploaded })).await.ok();
    let (master, master_public) = named_key();
    let (self_signing, self_public) = named_key();
    let master_key = json!({ "user_id": alice, "usage": ["master"], "keys": { format!("ed25519:{master_public}"): master_public } });
    let self_key = signed_by(&alice, &master, &json!({ "user_id": alice, "usage": ["self_signing"], "keys": { format!("ed25519:{self_public}"): self_public } }));
    room.server.post("/_matrix/client/v3/keys/device_signing/upload", Some(&token), json!({ "master_key": master_key, "self_signing_key": self_key })).await.ok();
    let signed_device = signed_by(&alice, &self_signing, &device_keys);
    let result = room.server.post("/_matrix/client/v3/keys/signatures/upload", Some(&token), json!({ &alice: { &device: signed_device } })).await.ok();
    assert_eq!(result["failures"], json!({}), "{result}");
    let signature_id = format!("ed25519:{self_public}");
    eventually(Duration::from_secs(10), || async {
        device_list_updates(&peer, &alice).iter().any(|u| u["device_id"] == device.as_str() && u["keys"]["signatures"][&alice][&signature_id].is_string())
    })
    .await;
    room.server.stop().await;
}
