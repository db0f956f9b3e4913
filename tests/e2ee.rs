//! E2EE key handling over HTTP: upload, query, claim (once each, even concurrently), fallback
//! keys, device list changes, cross-signing and key backup.

mod common;

use common::{enc, TestServer};
use ruma::{
    serde::Base64,
    signatures::{sign_json, Ed25519KeyPair},
    CanonicalJsonObject,
};
use serde_json::{json, Value};

/// An ed25519 key for signing test keys, named by its public key as cross-signing keys are.
struct Signer {
    pair: Ed25519KeyPair,
    public: String,
}

impl Signer {
    /// Signs `object` as `user` (the key id is `ed25519:<version>`).
    fn sign(&self, user: &str, object: &Value) -> Value {
        let mut canonical: CanonicalJsonObject = serde_json::from_value(object.clone()).unwrap();
        sign_json(user, &self.pair, &mut canonical).unwrap();
        serde_json::to_value(canonical).unwrap()
    }
}

fn cross_signing_key(user: &str, usage: &str, signer: &Signer) -> Value {
    json!({ "user_id": user, "usage": [usage], "keys": { format!("ed25519:{}", signer.public): signer.public } })
}

async fn upload_device(server: &TestServer, token: &str, user: &str, device: &str, otks: usize) -> Value {
    let device_keys = json!({
        "user_id": user, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{device}"): "curvekey", format!("ed25519:{device}"): "edkey" },
        "signatures": { user: { format!("ed25519:{device}"): "sig" } }
    });
    let mut one_time = serde_json::Map::new();
    for i in 0..otks {
        one_time.insert(format!("signed_curve25519:AAAA{i:03}"), json!({ "key": format!("otk{i}"), "signatures": {} }));
    }
    server
        .post(
            "/_matrix/client/v3/keys/upload",
            Some(token),
            json!({ "device_keys": device_keys, "one_time_keys": one_time,
                    "fallback_keys": { "signed_curve25519:FALLBACK": { "key": "fallback", "fallback": true, "signatures": {} } } }),
        )
        .await
        .ok()
}

async fn device_of(server: &TestServer, token: &str) -> String {
    server.get("/_matrix/client/v3/account/whoami", Some(token)).await.ok()["device_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn upload_query_and_sync_counts() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let device = device_of(&server, &alice).await;
    server.put(&format!("/_matrix/client/v3/devices/{device}"), Some(&alice), json!({ "display_name": "Alice's laptop" })).await.ok();
    let uploaded = upload_device(&server, &alice, &alice_id, &device, 5).await;
    assert_eq!(uploaded["one_time_key_counts"]["signed_curve25519"], 5);

    let query = server.post("/_matrix/client/v3/keys/query", Some(&bob), json!({ "device_keys": { &alice_id: [] } })).await.ok();
    let keys = &query["device_keys"][&alice_id][&device];
    assert_eq!(keys["keys"][format!("ed25519:{device}")], "edkey");
    assert_eq!(keys["unsigned"]["device_display_name"], "Alice's laptop");
    // A device without a name still has an (empty) unsigned object.
    let (bob_id, bob_device) = (server.get("/_matrix/client/v3/account/whoami", Some(&bob)).await.ok()["user_id"].as_str().unwrap().to_owned(), device_of(&server, &bob).await);
    upload_device(&server, &bob, &bob_id, &bob_device, 1).await;
    let query = server.post("/_matrix/client/v3/keys/query", Some(&alice), json!({ "device_keys": { &bob_id: [] } })).await.ok();
    assert_eq!(query["device_keys"][&bob_id][&bob_device]["unsigned"], json!({}), "{query}");
    // Asking for a device that does not exist gives nothing for it.
    let none = server.post("/_matrix/client/v3/keys/query", Some(&bob), json!({ "device_keys": { &alice_id: ["NOPE"] } })).await.ok();
    assert_eq!(none["device_keys"][&alice_id], json!({}));

    let sync = server.get("/_matrix/client/v3/sync", Some(&alice)).await.ok();
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 5);
    assert_eq!(sync["device_unused_fallback_key_types"], json!(["signed_curve25519"]));

    // The same key id with other content is refused; identical re-upload is fine.
    let conflict = server
        .post("/_matrix/client/v3/keys/upload", Some(&alice), json!({ "one_time_keys": { "signed_curve25519:AAAA000": { "key": "different" } } }))
        .await;
    conflict.err(400, "M_INVALID_PARAM");
    server
        .post("/_matrix/client/v3/keys/upload", Some(&alice), json!({ "one_time_keys": { "signed_curve25519:AAAA000": { "key": "otk0", "signatures": {} } } }))
        .await
        .ok();
    // Keys for another device or user are refused.
    let wrong = server
        .post(
            "/_matrix/client/v3/keys/upload",
            Some(&alice),
            json!({ "device_keys": { "user_id": alice_id, "device_id": "OTHER", "algorithms": [], "keys": {}, "signatures": {} } }),
        )
        .await;
    wrong.err(400, "M_INVALID_PARAM");
    // A key id that is not algorithm:id does not even parse.
    server.post("/_matrix/client/v3/keys/upload", Some(&alice), json!({ "one_time_keys": { "nocolon": {} } })).await.err(400, "M_BAD_JSON");
    server.stop().await;
}

#[tokio::test]
async fn one_time_keys_are_claimed_once_then_the_fallback() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (_, bob) = server.register("bob").await;
    let device = device_of(&server, &alice).await;
    upload_device(&server, &alice, &alice_id, &device, 10).await;

    let mut claimers = Vec::new();
    for _ in 0..20 {
        let http = server.http.clone();
        let url = format!("{}/_matrix/client/v3/keys/claim", server.base);
        let bob = bob.clone();
        let body = json!({ "one_time_keys": { &alice_id: { &device: "signed_curve25519" } } });
        claimers.push(tokio::spawn(async move {
            http.post(url).bearer_auth(bob).json(&body).send().await.unwrap().json::<Value>().await.unwrap()
        }));
    }
    let mut one_time = Vec::new();
    let mut fallbacks = 0;
    for claimer in claimers {
        let response = claimer.await.unwrap();
        let keys = response["one_time_keys"][&alice_id][&device].as_object().unwrap().clone();
        let (key_id, _) = keys.into_iter().next().unwrap();
        if key_id == "signed_curve25519:FALLBACK" {
            fallbacks += 1;
        } else {
            one_time.push(key_id);
        }
    }
    one_time.sort();
    one_time.dedup();
    assert_eq!(one_time.len(), 10, "each one-time key exactly once");
    assert_eq!(fallbacks, 10, "then the fallback key, reused");
    let sync = server.get("/_matrix/client/v3/sync", Some(&alice)).await.ok();
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]), "the fallback key is marked used");
    // A new fallback key is unused again.
    server
        .post("/_matrix/client/v3/keys/upload", Some(&alice), json!({ "fallback_keys": { "signed_curve25519:FB2": { "key": "fb2", "fallback": true } } }))
        .await
        .ok();
    let sync = server.get("/_matrix/client/v3/sync", Some(&alice)).await.ok();
    assert_eq!(sync["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    server.stop().await;
}

#[tokio::test]
async fn device_list_changes_reach_room_members() {
    let server = TestServer::start().await;
    let (_alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let next = server.get("/_matrix/client/v3/sync", Some(&alice)).await.ok()["next_batch"].as_str().unwrap().to_owned();
    let bob_device = device_of(&server, &bob).await;
    upload_device(&server, &bob, &bob_id, &bob_device, 1).await;
    let sync = server.get(&format!("/_matrix/client/v3/sync?since={next}&timeout=5000"), Some(&alice)).await.ok();
    assert_eq!(sync["device_lists"]["changed"], json!([bob_id]));
    let to = sync["next_batch"].as_str().unwrap();
    let changes = server.get(&format!("/_matrix/client/v3/keys/changes?from={next}&to={to}"), Some(&alice)).await.ok();
    assert_eq!(changes["changed"], json!([bob_id]));
    server.get("/_matrix/client/v3/keys/changes?from=bad&to=bad", Some(&alice)).await.err(400, "M_INVALID_PARAM");
    server.stop().await;
}

#[tokio::test]
async fn cross_signing_upload_query_and_signatures() {
    let server = TestServer::start().await;
    let (alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let alice_device = device_of(&server, &alice).await;
    upload_device(&server, &alice, &alice_id, &alice_device, 0).await;

    let keys_for = |user: &str| {
        let master = Signer::generate_named();
        let self_signing = Signer::generate_named();
        let user_signing = Signer::generate_named();
        let master_key = cross_signing_key(user, "master", &master);
        let self_key = master.sign(user, &cross_signing_key(user, "self_signing", &self_signing));
        let user_key = master.sign(user, &cross_signing_key(user, "user_signing", &user_signing));
        (master, self_signing, user_signing, master_key, self_key, user_key)
    };
    let (_a_master, a_self, a_user, a_master_key, a_self_key, a_user_key) = keys_for(&alice_id);
    // First setup needs no UIA.
    server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&alice),
            json!({ "master_key": a_master_key, "self_signing_key": a_self_key, "user_signing_key": a_user_key }),
        )
        .await
        .ok();
    let (_b_master, _, _, b_master_key, b_self_key, b_user_key) = keys_for(&bob_id);
    server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&bob),
            json!({ "master_key": b_master_key, "self_signing_key": b_self_key, "user_signing_key": b_user_key }),
        )
        .await
        .ok();

    // Replacing them needs the password.
    let (_, _, _, new_master, _, _) = keys_for(&alice_id);
    let challenge = server.post("/_matrix/client/v3/keys/device_signing/upload", Some(&alice), json!({ "master_key": new_master })).await;
    assert_eq!(challenge.status, 401);
    // A self-signing key not signed by the master key is refused.
    let rogue = Signer::generate_named();
    let unsigned_self = cross_signing_key(&alice_id, "self_signing", &rogue);
    server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&alice),
            json!({ "self_signing_key": unsigned_self,
                    "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": alice_id }, "password": "password" } }),
        )
        .await
        .err(400, "M_INVALID_PARAM");

    // Query: master and self-signing keys for anyone, the user-signing key only for oneself.
    let seen_by_bob = server.post("/_matrix/client/v3/keys/query", Some(&bob), json!({ "device_keys": { &alice_id: [] } })).await.ok();
    assert!(seen_by_bob["master_keys"][&alice_id]["usage"][0] == "master");
    assert!(seen_by_bob["self_signing_keys"][&alice_id].is_object());
    assert!(seen_by_bob["user_signing_keys"].get(&alice_id).is_none());
    let own = server.post("/_matrix/client/v3/keys/query", Some(&alice), json!({ "device_keys": { &alice_id: [] } })).await.ok();
    assert!(own["user_signing_keys"][&alice_id].is_object());

    // Alice signs her device with her self-signing key.
    let device_keys = own["device_keys"][&alice_id][&alice_device].clone();
    let mut to_sign = device_keys.clone();
    to_sign.as_object_mut().unwrap().remove("unsigned");
    to_sign.as_object_mut().unwrap().remove("signatures");
    let signed_device = a_self.sign(&alice_id, &to_sign);
    let result = server
        .post("/_matrix/client/v3/keys/signatures/upload", Some(&alice), json!({ &alice_id: { &alice_device: signed_device } }))
        .await
        .ok();
    assert_eq!(result["failures"], json!({}), "{result}");
    let after = server.post("/_matrix/client/v3/keys/query", Some(&bob), json!({ "device_keys": { &alice_id: [] } })).await.ok();
    let signatures = &after["device_keys"][&alice_id][&alice_device]["signatures"][&alice_id];
    assert!(signatures[format!("ed25519:{}", a_self.public)].is_string(), "{signatures}");

    // Alice signs bob's master key with her user-signing key.
    let bob_master = seen_master(&server, &alice, &bob_id).await;
    let mut to_sign = bob_master.clone();
    to_sign.as_object_mut().unwrap().remove("signatures");
    let signed_master = a_user.sign(&alice_id, &to_sign);
    let bob_master_id = bob_master["keys"].as_object().unwrap().values().next().unwrap().as_str().unwrap().to_owned();
    let result = server
        .post("/_matrix/client/v3/keys/signatures/upload", Some(&alice), json!({ &bob_id: { &bob_master_id: signed_master } }))
        .await
        .ok();
    assert_eq!(result["failures"], json!({}), "{result}");
    let bob_master_after = seen_master(&server, &alice, &bob_id).await;
    assert!(bob_master_after["signatures"][&alice_id][format!("ed25519:{}", a_user.public)].is_string());

    // A bad signature is reported, not stored.
    let mut forged = signed_device_clone(&device_keys);
    forged["signatures"] = json!({ &alice_id: { format!("ed25519:{}", a_self.public): "AAAA" } });
    let result = server
        .post("/_matrix/client/v3/keys/signatures/upload", Some(&alice), json!({ &alice_id: { &alice_device: forged } }))
        .await
        .ok();
    assert_eq!(result["failures"][&alice_id][&alice_device]["errcode"], "M_INVALID_SIGNATURE");
    server.stop().await;
}

fn signed_device_clone(value: &Value) -> Value {
    let mut value = value.clone();
    value.as_object_mut().unwrap().remove("unsigned");
    value
}

async fn seen_master(server: &TestServer, token: &str, user: &str) -> Value {
    server.post("/_matrix/client/v3/keys/query", Some(token), json!({ "device_keys": { user: [] } })).await.ok()["master_keys"][user].clone()
}

impl Signer {
    /// A key whose key id is its own public key, as cross-signing keys are named.
    fn generate_named() -> Self {
        let document = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&document, "probe".into()).unwrap();
        let public = Base64::<ruma::serde::base64::Standard, _>::new(probe.public_key().to_vec()).encode();
        let pair = Ed25519KeyPair::from_der(&document, public.clone()).unwrap();
        Self { pair, public }
    }
}

#[tokio::test]
async fn key_backup_round_trip() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    server.get("/_matrix/client/v3/room_keys/version", Some(&alice)).await.err(404, "M_NOT_FOUND");
    let algorithm = json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": { "public_key": "abc", "signatures": {} } });
    let version = server.post("/_matrix/client/v3/room_keys/version", Some(&alice), algorithm.clone()).await.ok()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = server.get("/_matrix/client/v3/room_keys/version", Some(&alice)).await.ok();
    assert_eq!(info["version"], version);
    assert_eq!(info["count"], 0);
    let etag0 = info["etag"].as_str().unwrap().to_owned();

    let key = |index: u64, forwarded: u64, verified: bool, data: &str| {
        json!({ "first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
                "session_data": { "ephemeral": "e", "ciphertext": data, "mac": "m" } })
    };
    let room = "!room:localhost";
    let put = server
        .put(
            &format!("/_matrix/client/v3/room_keys/keys?version={version}"),
            Some(&alice),
            json!({ "rooms": { room: { "sessions": { "s1": key(5, 0, false, "first"), "s2": key(0, 0, false, "two") } } } }),
        )
        .await
        .ok();
    assert_eq!(put["count"], 2);
    assert_ne!(put["etag"], etag0);

    // A worse key (higher first_message_index) does not replace; a better one does.
    let session = format!("/_matrix/client/v3/room_keys/keys/{}/s1?version={version}", enc(room));
    server.put(&session, Some(&alice), key(9, 0, false, "worse")).await.ok();
    assert_eq!(server.get(&session, Some(&alice)).await.ok()["session_data"]["ciphertext"], "first");
    server.put(&session, Some(&alice), key(9, 0, true, "verified")).await.ok();
    assert_eq!(server.get(&session, Some(&alice)).await.ok()["session_data"]["ciphertext"], "verified");

    let all = server.get(&format!("/_matrix/client/v3/room_keys/keys?version={version}"), Some(&alice)).await.ok();
    assert_eq!(all["rooms"][room]["sessions"].as_object().unwrap().len(), 2);
    let room_keys = server.get(&format!("/_matrix/client/v3/room_keys/keys/{}?version={version}", enc(room)), Some(&alice)).await.ok();
    assert!(room_keys["sessions"]["s2"].is_object());
    server
        .get(&format!("/_matrix/client/v3/room_keys/keys/{}/nope?version={version}", enc(room)), Some(&alice))
        .await
        .err(404, "M_NOT_FOUND");

    // Only the current version takes keys.
    let newer = server.post("/_matrix/client/v3/room_keys/version", Some(&alice), algorithm.clone()).await.ok()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let stale = server.put(&session, Some(&alice), key(0, 0, true, "x")).await;
    stale.err(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(stale.body["current_version"], newer);

    // Update auth_data; the algorithm cannot change.
    let mut updated = algorithm.clone();
    updated["auth_data"]["public_key"] = "def".into();
    server.put(&format!("/_matrix/client/v3/room_keys/version/{newer}"), Some(&alice), updated).await.ok();
    assert_eq!(server.get(&format!("/_matrix/client/v3/room_keys/version/{newer}"), Some(&alice)).await.ok()["auth_data"]["public_key"], "def");
    server
        .put(&format!("/_matrix/client/v3/room_keys/version/{newer}"), Some(&alice), json!({ "algorithm": "other", "auth_data": {} }))
        .await
        .err(400, "M_INVALID_PARAM");

    // Delete keys, then the version.
    let deleted = server.delete(&format!("/_matrix/client/v3/room_keys/keys?version={version}"), Some(&alice), json!({})).await.ok();
    assert_eq!(deleted["count"], 0);
    server.delete(&format!("/_matrix/client/v3/room_keys/version/{version}"), Some(&alice), json!({})).await.ok();
    server.get(&format!("/_matrix/client/v3/room_keys/version/{version}"), Some(&alice)).await.err(404, "M_NOT_FOUND");
    server.stop().await;
}

/// Syncs alice and bob from where they were; both must see bob's device list changed.
async fn both_see_bob_change(server: &TestServer, (alice, alice_from): (&str, &str), (bob, bob_from): (&str, &str), bob_id: &str, what: &str) -> (String, String) {
    let seen = server.get(&format!("/_matrix/client/v3/sync?since={alice_from}&timeout=10000"), Some(alice)).await.ok();
    assert_eq!(seen["device_lists"]["changed"], json!([bob_id]), "{what}: {seen}");
    let own = server.get(&format!("/_matrix/client/v3/sync?since={bob_from}&timeout=10000"), Some(bob)).await.ok();
    assert_eq!(own["device_lists"]["changed"], json!([bob_id]), "{what}, bob's own: {own}");
    (seen["next_batch"].as_str().unwrap().to_owned(), own["next_batch"].as_str().unwrap().to_owned())
}

/// Every device change shows in the device lists of those sharing a room, and of the user
/// themself: a new login, a renamed device, a deleted device (as Synapse reports them).
#[tokio::test]
async fn new_renamed_and_deleted_devices_are_device_list_changes() {
    let server = TestServer::start().await;
    let (_alice_id, alice) = server.register("alice").await;
    let (bob_id, bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), Some(&bob), json!({})).await.ok();
    let alice_since = server.get("/_matrix/client/v3/sync", Some(&alice)).await.ok()["next_batch"].as_str().unwrap().to_owned();
    let bob_since = server.get("/_matrix/client/v3/sync", Some(&bob)).await.ok()["next_batch"].as_str().unwrap().to_owned();

    let password = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "bob" }, "password": "password" });
    let login = server.post("/_matrix/client/v3/login", None, password.clone()).await.ok();
    let new_device = login["device_id"].as_str().unwrap().to_owned();
    let (alice_since, bob_since) = both_see_bob_change(&server, (&alice, &alice_since), (&bob, &bob_since), &bob_id, "a new login").await;

    server.put(&format!("/_matrix/client/v3/devices/{new_device}"), Some(&bob), json!({ "display_name": "laptop" })).await.ok();
    let (alice_since, bob_since) = both_see_bob_change(&server, (&alice, &alice_since), (&bob, &bob_since), &bob_id, "a renamed device").await;

    let path = format!("/_matrix/client/v3/devices/{new_device}");
    let challenge = server.delete(&path, Some(&bob), json!({})).await;
    let mut auth = password;
    auth["session"] = challenge.body["session"].clone();
    server.delete(&path, Some(&bob), json!({ "auth": auth })).await.ok();
    both_see_bob_change(&server, (&alice, &alice_since), (&bob, &bob_since), &bob_id, "a deleted device").await;
    server.stop().await;
}

/// A newly invited user's devices are wanted (to encrypt for invited members): they show in
/// the inviter's device_lists.changed, as Synapse reports them.
#[tokio::test]
async fn a_newly_invited_user_is_a_device_list_change() {
    let server = TestServer::start().await;
    let (_, alice) = server.register("alice").await;
    let (bob_id, _bob) = server.register("bob").await;
    let room = server.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let since = server.get("/_matrix/client/v3/sync", Some(&alice)).await.ok()["next_batch"].as_str().unwrap().to_owned();
    server.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), Some(&alice), json!({ "user_id": bob_id })).await.ok();
    let sync = server.get(&format!("/_matrix/client/v3/sync?since={since}"), Some(&alice)).await.ok();
    assert_eq!(sync["device_lists"]["changed"], json!([bob_id]), "{sync}");
    assert!(sync["device_lists"]["left"].as_array().is_none_or(|left| left.is_empty()), "{sync}");
    server.stop().await;
}
