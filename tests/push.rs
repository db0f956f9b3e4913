//! Push over HTTP: default rules, counts in /sync reset by receipts, rule edits, pushers
//! delivering to a push gateway stand-in, /notifications.

mod common;

use std::{sync::Arc, time::Duration};

use axum::{extract::State, routing::post, Json, Router};
use common::{enc, TestServer};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};

/// A push gateway stand-in: records every notify body and answers with `rejected`.
struct Gateway {
    url: String,
    received: mpsc::UnboundedReceiver<Value>,
    rejected: Arc<Mutex<Vec<String>>>,
}

async fn gateway() -> Gateway {
    let (sender, received) = mpsc::unbounded_channel();
    let rejected: Arc<Mutex<Vec<String>>> = Arc::default();
    let state = (sender, rejected.clone());
    let app = Router::new()
        .route(
            "/_matrix/push/v1/notify",
            post(|State((sender, rejected)): State<(mpsc::UnboundedSender<Value>, Arc<Mutex<Vec<String>>>)>, Json(body): Json<Value>| async move {
                let _ = sender.send(body);
                Json(json!({ "rejected": *rejected.lock().await }))
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Gateway { url, received, rejected }
}

impl Gateway {
    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(20), self.received.recv()).await.expect("a notification arrives").unwrap()
    }

}

async fn set_pusher(server: &TestServer, token: &str, url: &str, pushkey: &str, format: Option<&str>) {
    let mut data = json!({ "url": url });
    if let Some(format) = format {
        data["format"] = format.into();
    }
    server
        .post(
            "/_matrix/client/v3/pushers/set",
            Some(token),
            json!({ "kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "Example",
                    "device_display_name": "Phone", "lang": "en", "data": data }),
        )
        .await
        .ok();
}

async fn two_people() -> (TestServer, String, String, String, String, String) {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "invite": [bob_id], "is_direct": true })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    (server, alice_id, alice, bob_id, bob, room)
}

fn unread(sync: &Value, room: &str) -> (u64, u64) {
    let counts = &sync["rooms"]["join"][room]["unread_notifications"];
    (counts["notification_count"].as_u64().unwrap_or(0), counts["highlight_count"].as_u64().unwrap_or(0))
}

#[tokio::test]
async fn default_rules_are_served_and_synced() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let rules = server.get("/_matrix/client/v3/pushrules/", Some(&alice)).await.ok();
    let override_ids: Vec<&str> = rules["global"]["override"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    for id in [".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event", ".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction"] {
        assert!(override_ids.contains(&id), "{id} missing from {override_ids:?}");
    }
    let underride: Vec<&str> = rules["global"]["underride"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    for id in [".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"] {
        assert!(underride.contains(&id), "{id} missing from {underride:?}");
    }
    let sync = server.get("/_matrix/client/v3/sync", Some(&alice)).await.ok();
    let events = sync["account_data"]["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["type"] == "m.push_rules" && e["content"]["global"]["override"].is_array()));
    server.get("/_matrix/client/v3/pushrules/global/override/.m.rule.nope", Some(&alice)).await.err(404, "M_NOT_FOUND");
    let master = server.get("/_matrix/client/v3/pushrules/global/override/.m.rule.master", Some(&alice)).await.ok();
    assert_eq!(master["enabled"], false);
    server
        .delete("/_matrix/client/v3/pushrules/global/override/.m.rule.master", Some(&alice), json!({}))
        .await
        .err(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn rules_of_one_kind_are_listed_and_malformed_paths_are_bad_requests() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    server
        .put("/_matrix/client/v3/pushrules/global/content/my_rule", Some(&alice), json!({ "actions": ["notify"], "pattern": "cake" }))
        .await
        .ok();
    let content = server.get("/_matrix/client/v3/pushrules/global/content/", Some(&alice)).await.ok();
    let ids: Vec<&str> = content.as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["my_rule"], "{content}");
    let underride = server.get("/_matrix/client/v3/pushrules/global/underride/", Some(&alice)).await.ok();
    assert!(underride.as_array().unwrap().iter().any(|r| r["rule_id"] == ".m.rule.message"));

    // What names no scope, kind, rule or attribute: 400 M_UNRECOGNIZED (Synapse's answer).
    for path in ["/", "/not_a_scope/room/!r:x", "/global", "/global/room", "/global/room/"] {
        server.put(&format!("/_matrix/client/v3/pushrules{path}"), Some(&alice), json!({})).await.err(400, "M_UNRECOGNIZED");
    }
    for path in ["/global", "/global/room", "/not_a_scope/", "/global/not_a_kind/", "/global/override/.m.rule.master/not_an_attr"] {
        server.get(&format!("/_matrix/client/v3/pushrules{path}"), Some(&alice)).await.err(400, "M_UNRECOGNIZED");
    }
    // The whole list still needs its trailing slash, and unknown rules are still not found.
    server.get("/_matrix/client/v3/pushrules", Some(&alice)).await.err(404, "M_UNRECOGNIZED");
    server.get("/_matrix/client/v3/pushrules/global/override/not_a_rule", Some(&alice)).await.err(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn counts_in_sync_and_reset_by_receipts() {
    let (server, _alice_id, alice, bob_id, bob, room) = two_people().await;
    server.send_text(&alice, &room, "1", "hello").await;
    let mention = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/2", enc(&room)),
            Some(&alice),
            json!({ "msgtype": "m.text", "body": "hey bob", "m.mentions": { "user_ids": [bob_id] } }),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sync = server.get("/_matrix/client/v3/sync", Some(&bob)).await.ok();
    assert_eq!(unread(&sync, &room), (2, 1));
    let next = sync["next_batch"].as_str().unwrap().to_owned();
    // Alice's own messages never count for her.
    let alice_sync = server.get("/_matrix/client/v3/sync", Some(&alice)).await.ok();
    assert_eq!(unread(&alice_sync, &room), (0, 0));

    server.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&mention)), Some(&bob), json!({})).await.ok();
    let after = server.get(&format!("/_matrix/client/v3/sync?since={next}"), Some(&bob)).await.ok();
    assert_eq!(unread(&after, &room), (0, 0), "{after}");

    // Per-thread counts when asked for.
    let root = server.send_text(&alice, &room, "3", "root").await;
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/4", enc(&room)),
            Some(&alice),
            json!({ "msgtype": "m.text", "body": "in thread", "m.relates_to": { "rel_type": "m.thread", "event_id": root } }),
        )
        .await
        .ok();
    let filter = enc(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#);
    let threaded = server.get(&format!("/_matrix/client/v3/sync?filter={filter}"), Some(&bob)).await.ok();
    assert_eq!(unread(&threaded, &room), (1, 0));
    assert_eq!(threaded["rooms"]["join"][&room]["unread_thread_notifications"][&root]["notification_count"], 1);
    let folded = server.get("/_matrix/client/v3/sync", Some(&bob)).await.ok();
    assert_eq!(unread(&folded, &room), (2, 0));
    server.stop().await;
}

#[tokio::test]
async fn pushers_deliver_to_the_gateway() {
    let (server, alice_id, alice, _bob_id, bob, room) = two_people().await;
    let mut gateway = gateway().await;
    set_pusher(&server, &bob, &gateway.url, "bobs-phone", None).await;
    let listed = server.get("/_matrix/client/v3/pushers", Some(&bob)).await.ok();
    assert_eq!(listed["pushers"][0]["pushkey"], "bobs-phone");
    server.put(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&room)), Some(&alice), json!({ "name": "Us" })).await.ok();

    let event_id = server.send_text(&alice, &room, "p1", "are you there?").await;
    let body = loop {
        let body = gateway.next().await;
        if body["notification"]["event_id"] == event_id {
            break body;
        }
    };
    let notification = &body["notification"];
    assert_eq!(notification["id"], event_id, "the event id under its old name too");
    assert_eq!(notification["room_id"], room);
    assert_eq!(notification["type"], "m.room.message");
    assert_eq!(notification["sender"], alice_id);
    assert_eq!(notification["room_name"], "Us");
    assert_eq!(notification["content"]["body"], "are you there?");
    // prio defaults to high when absent.
    assert!(matches!(notification["prio"].as_str(), None | Some("high")), "{notification}");
    assert_eq!(notification["counts"]["unread"], 1);
    let device = &notification["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["pushkey"], "bobs-phone");
    assert!(device["data"].get("url").is_none(), "the url is not sent to the gateway");
    assert_eq!(device["data"], json!({}), "data is sent even when nothing is left in it (as Synapse does)");
    assert!(device["tweaks"]["sound"].is_string(), "one-to-one rooms ring: {device}");

    // event_id_only: no content.
    set_pusher(&server, &bob, &gateway.url, "bobs-phone", Some("event_id_only")).await;
    let second = server.send_text(&alice, &room, "p2", "secret").await;
    let body = gateway.next().await;
    assert_eq!(body["notification"]["event_id"], second);
    assert!(body["notification"].get("content").is_none());
    assert!(body["notification"].get("sender").is_none());

    // A rejected pushkey removes the pusher.
    gateway.rejected.lock().await.push("bobs-phone".into());
    server.send_text(&alice, &room, "p3", "gone?").await;
    gateway.next().await;
    // The pusher the gateway rejected is removed.
    common::eventually(Duration::from_secs(5), || async {
        server.get("/_matrix/client/v3/pushers", Some(&bob)).await.ok()["pushers"].as_array().unwrap().is_empty()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn editing_rules_changes_what_is_pushed() {
    let (server, _alice_id, alice, _bob_id, bob, room) = two_people().await;
    let mut gateway = gateway().await;
    set_pusher(&server, &bob, &gateway.url, "key", None).await;

    // Turn off one-to-one and message notifications: plain messages no longer notify.
    for rule in [".m.rule.room_one_to_one", ".m.rule.message"] {
        server
            .put(&format!("/_matrix/client/v3/pushrules/global/underride/{rule}/enabled"), Some(&bob), json!({ "enabled": false }))
            .await
            .ok();
    }
    let enabled = server.get("/_matrix/client/v3/pushrules/global/underride/.m.rule.message/enabled", Some(&bob)).await.ok();
    assert_eq!(enabled["enabled"], false);
    let quiet = server.send_text(&alice, &room, "q1", "nothing to see").await;
    // A keyword rule: "cake" highlights.
    server
        .put(
            "/_matrix/client/v3/pushrules/global/content/cake",
            Some(&bob),
            json!({ "pattern": "cake", "actions": ["notify", { "set_tweak": "highlight" }] }),
        )
        .await
        .ok();
    let cake = server.send_text(&alice, &room, "q2", "there is cake").await;
    let body = gateway.next().await;
    assert_eq!(body["notification"]["event_id"], cake, "the quiet message {quiet} was not pushed");
    assert_eq!(body["notification"]["devices"][0]["tweaks"]["highlight"], true);

    let sync = server.get("/_matrix/client/v3/sync", Some(&bob)).await.ok();
    assert_eq!(unread(&sync, &room), (1, 1));
    // The change reached account data.
    let rules = sync["account_data"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "m.push_rules").unwrap().clone();
    assert!(rules["content"]["global"]["content"].as_array().unwrap().iter().any(|r| r["rule_id"] == "cake"));

    // Actions can be edited, and rules deleted.
    server
        .put("/_matrix/client/v3/pushrules/global/content/cake/actions", Some(&bob), json!({ "actions": [] }))
        .await
        .ok();
    let actions = server.get("/_matrix/client/v3/pushrules/global/content/cake/actions", Some(&bob)).await.ok();
    assert_eq!(actions["actions"], json!([]));
    server.delete("/_matrix/client/v3/pushrules/global/content/cake", Some(&bob), json!({})).await.ok();
    server.get("/_matrix/client/v3/pushrules/global/content/cake", Some(&bob)).await.err(404, "M_NOT_FOUND");
    server.stop().await;
}

#[tokio::test]
async fn notifications_endpoint() {
    let (server, _alice_id, alice, bob_id, bob, room) = two_people().await;
    server.send_text(&alice, &room, "n1", "one").await;
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/n2", enc(&room)),
            Some(&alice),
            json!({ "msgtype": "m.text", "body": "two", "m.mentions": { "user_ids": [bob_id] } }),
        )
        .await
        .ok();
    let three = server.send_text(&alice, &room, "n3", "three").await;
    let all = server.get("/_matrix/client/v3/notifications", Some(&bob)).await.ok();
    let bodies: Vec<&str> = all["notifications"].as_array().unwrap().iter().map(|n| n["event"]["content"]["body"].as_str().unwrap_or("")).collect();
    assert_eq!(&bodies[..3], &["three", "two", "one"]);
    assert_eq!(all["notifications"][0]["room_id"], room);
    assert_eq!(all["notifications"][0]["read"], false);
    let highlights = server.get("/_matrix/client/v3/notifications?only=highlight", Some(&bob)).await.ok();
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(highlights["notifications"][0]["event"]["content"]["body"], "two");
    let page = server.get("/_matrix/client/v3/notifications?limit=1", Some(&bob)).await.ok();
    let next = page["next_token"].as_str().unwrap();
    let page2 = server.get(&format!("/_matrix/client/v3/notifications?limit=1&from={next}"), Some(&bob)).await.ok();
    assert_eq!(page2["notifications"][0]["event"]["content"]["body"], "two");
    server.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&three)), Some(&bob), json!({})).await.ok();
    let read = server.get("/_matrix/client/v3/notifications?limit=1", Some(&bob)).await.ok();
    assert_eq!(read["notifications"][0]["read"], true);
    server.get("/_matrix/client/v3/notifications?from=abc", Some(&bob)).await.err(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn pusher_validation() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let bad_path = server
        .post(
            "/_matrix/client/v3/pushers/set",
            Some(&alice),
            json!({ "kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A", "device_display_name": "D", "lang": "en",
                    "data": { "url": "http://127.0.0.1:9/notify" } }),
        )
        .await;
    bad_path.err(400, "M_INVALID_PARAM");
    let email = server
        .post(
            "/_matrix/client/v3/pushers/set",
            Some(&alice),
            json!({ "kind": "email", "app_id": "m.email", "pushkey": "a@example.org", "app_display_name": "A", "device_display_name": "D", "lang": "en", "data": {} }),
        )
        .await;
    email.err(400, "M_INVALID_PARAM");
    // Deleting with kind null.
    set_pusher(&server, &alice, "http://127.0.0.1:9/_matrix/push/v1/notify", "k2", None).await;
    server
        .post("/_matrix/client/v3/pushers/set", Some(&alice), json!({ "kind": null, "app_id": "org.example.app", "pushkey": "k2" }))
        .await
        .ok();
    let listed = server.get("/_matrix/client/v3/pushers", Some(&alice)).await.ok();
    assert_eq!(listed["pushers"], json!([]));
    // Logging out the device removes its pushers.
    set_pusher(&server, &alice, "http://127.0.0.1:9/_matrix/push/v1/notify", "k3", None).await;
    let other = server
        .post("/_matrix/client/v3/login", None, json!({ "type": "m.login.password", "user": "alice", "password": "password" }))
        .await
        .ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    server.post("/_matrix/client/v3/logout", Some(&alice), json!({})).await.ok();
    let listed = server.get("/_matrix/client/v3/pushers", Some(&other)).await.ok();
    assert_eq!(listed["pushers"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn gateway_errors_are_retried() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (server, _alice_id, alice, _bob_id, bob, room) = two_people().await;
    let (sender, mut received) = mpsc::unbounded_channel::<Value>();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/_matrix/push/v1/notify",
            post(|State((sender, calls)): State<(mpsc::UnboundedSender<Value>, Arc<AtomicUsize>)>, Json(body): Json<Value>| async move {
                // The first attempt fails; the retry succeeds.
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
                }
                let _ = sender.send(body);
                (axum::http::StatusCode::OK, Json(json!({ "rejected": [] })))
            }),
        )
        .with_state((sender, calls.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    set_pusher(&server, &bob, &url, "retry-key", None).await;
    let event_id = server.send_text(&alice, &room, "r1", "eventually").await;
    let body = tokio::time::timeout(Duration::from_secs(20), received.recv()).await.unwrap().unwrap();
    assert_eq!(body["notification"]["event_id"], event_id);
    assert!(calls.load(Ordering::SeqCst) >= 2);
    server.stop().await;
}

/// An invite is pushed to the invitee with its membership (as Synapse sends it), and a room
/// without a name is named by its alias.
#[tokio::test]
async fn invites_are_pushed_with_their_membership_and_the_room_named_by_its_alias() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let mut gateway = gateway().await;
    set_pusher(&server, &bob, &gateway.url, "bobs-phone", None).await;
    let room = server.create_room(&alice, json!({ "room_alias_name": "lobby" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice), json!({ "user_id": bob_id })).await.ok();
    let body = gateway.next().await;
    let notification = &body["notification"];
    assert_eq!(notification["type"], "m.room.member", "{body}");
    assert_eq!(notification["membership"], "invite", "{body}");
    assert_eq!(notification["user_is_target"], true, "{body}");
    assert_eq!(notification["room_name"], format!("#lobby:{}", server.server_name()), "{body}");
    server.stop().await;
}

/// Reading on one device updates the badge on the phone: after bob's read receipt his
/// pushers get a push with counts only (no event), unread 0.
#[tokio::test]
async fn a_read_receipt_pushes_the_new_badge() {
    let (server, _alice_id, alice, _bob_id, bob, room) = two_people().await;
    let mut gateway = gateway().await;
    set_pusher(&server, &bob, &gateway.url, "bobs-phone", None).await;
    let message = server.send_text(&alice, &room, "b1", "unread for now").await;
    let pushed = gateway.next().await;
    assert_eq!(pushed["notification"]["event_id"], message);
    assert_eq!(pushed["notification"]["counts"]["unread"], 1);

    server.post(&format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&message)), Some(&bob), json!({})).await.ok();
    let badge = gateway.next().await;
    let notification = &badge["notification"];
    assert!(notification.get("event_id").is_none() && notification.get("type").is_none(), "{badge}");
    assert_eq!(notification["counts"]["unread"], 0, "{badge}");
    assert_eq!(notification["devices"][0]["pushkey"], "bobs-phone");
    server.stop().await;
}

/// Nothing of an ignored user's notifies: no unread count, no push.
#[tokio::test]
async fn ignored_users_do_not_notify() {
    let (server, alice_id, alice, bob_id, bob, room) = two_people().await;
    let mut gateway = gateway().await;
    set_pusher(&server, &bob, &gateway.url, "bobs-phone", None).await;
    server.put(&format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", enc(&bob_id)), Some(&bob), json!({ "ignored_users": { alice_id.as_str(): {} } })).await.ok();
    server.send_text(&alice, &room, "i1", "ignored").await;
    let sync = server.get("/_matrix/client/v3/sync", Some(&bob)).await.ok();
    assert_eq!(unread(&sync, &room), (0, 0));

    // Once no longer ignored, the next message notifies (and is the first push).
    server.put(&format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", enc(&bob_id)), Some(&bob), json!({ "ignored_users": {} })).await.ok();
    let heard = server.send_text(&alice, &room, "i2", "heard").await;
    let pushed = gateway.next().await;
    assert_eq!(pushed["notification"]["event_id"], heard, "the ignored message was not pushed");
    server.stop().await;
}
