//! People search (`/user_directory/search`) and OpenID tokens, through HTTP.

mod common;

use common::{enc, eventually, federating_server, TestServer};
use serde_json::{json, Value};

async fn search(server: &TestServer, token: &str, term: &str) -> Value {
    server.post("/_matrix/client/v3/user_directory/search", Some(token), json!({ "search_term": term })).await.ok()
}

fn found(answer: &Value) -> Vec<String> {
    answer["results"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap().to_owned()).collect()
}

async fn set_name(server: &TestServer, user: &str, token: &str, name: &str) {
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(user));
    server.put(&path, Some(token), json!({ "displayname": name })).await.ok();
}

#[tokio::test]
async fn finds_users_sharing_a_room_or_in_public_rooms_only() {
    let server = TestServer::start().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, bob_token) = server.register("bob").await;
    let (carol, carol_token) = server.register("carol").await;
    let (_dave, dave_token) = server.register("dave").await;
    set_name(&server, &bob, &bob_token, "Bob Private").await;
    set_name(&server, &carol, &carol_token, "Carol Public").await;

    // bob shares a private room with alice only; carol is in a public room.
    let private = server.create_room(&alice_token, json!({ "preset": "private_chat", "invite": [bob] })).await;
    server.post(&format!("/_matrix/client/v3/join/{}", enc(&private)), Some(&bob_token), json!({})).await.ok();
    server.create_room(&carol_token, json!({ "preset": "public_chat" })).await;

    assert_eq!(found(&search(&server, &alice_token, "private").await), vec![bob.clone()]);
    assert_eq!(found(&search(&server, &dave_token, "private").await), Vec::<String>::new(), "a stranger does not see bob");
    assert_eq!(found(&search(&server, &dave_token, "carol").await), vec![carol.clone()], "members of public rooms are seen by all");
    let result = search(&server, &dave_token, "public").await;
    assert_eq!(result["results"][0]["display_name"], "Carol Public");
    assert_eq!(result["limited"], false);

    // Nobody finds themselves through a private room (as in Synapse).
    assert_eq!(found(&search(&server, &bob_token, "private").await), Vec::<String>::new());
    // Once the room is public, everyone finds its members.
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.join_rules/", enc(&private));
    server.put(&path, Some(&alice_token), json!({ "join_rule": "public" })).await.ok();
    assert_eq!(found(&search(&server, &dave_token, "private").await), vec![bob.clone()]);
    server.put(&path, Some(&alice_token), json!({ "join_rule": "invite" })).await.ok();
    assert_eq!(found(&search(&server, &dave_token, "private").await), Vec::<String>::new());
    // World-readable rooms count as public too.
    let visibility = format!("/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/", enc(&private));
    server.put(&visibility, Some(&alice_token), json!({ "history_visibility": "world_readable" })).await.ok();
    assert_eq!(found(&search(&server, &dave_token, "private").await), vec![bob.clone()]);
    server.put(&visibility, Some(&alice_token), json!({ "history_visibility": "shared" })).await.ok();
    assert_eq!(found(&search(&server, &dave_token, "private").await), Vec::<String>::new());

    // Once bob leaves the only room he shares with alice, she no longer finds him.
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&private)), Some(&bob_token), json!({})).await.ok();
    assert_eq!(found(&search(&server, &alice_token, "private").await), Vec::<String>::new());
    let _ = alice;
}

#[tokio::test]
async fn matches_ids_and_names_across_case_and_diacritics_with_a_limit() {
    let server = TestServer::start().await;
    let (_owner, owner_token) = server.register("owner").await;
    let room = server.create_room(&owner_token, json!({ "preset": "public_chat" })).await;
    let mut users = Vec::new();
    for name in ["zoe1", "zoe2", "zoe3"] {
        let (user, token) = server.register(name).await;
        server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&token), json!({})).await.ok();
        users.push((user, token));
    }
    set_name(&server, &users[0].0, &users[0].1, "Zoë Ångström").await;

    // By display name, folded both ways; by user id; several words must all match.
    assert_eq!(found(&search(&server, &owner_token, "ZOE ANGSTROM").await), vec![users[0].0.clone()]);
    assert_eq!(found(&search(&server, &owner_token, "ångström").await), vec![users[0].0.clone()]);
    assert_eq!(found(&search(&server, &owner_token, "zoe3").await), vec![users[2].0.clone()]);
    assert_eq!(found(&search(&server, &owner_token, "zoe nobody").await), Vec::<String>::new());

    let limited = server
        .post("/_matrix/client/v3/user_directory/search", Some(&owner_token), json!({ "search_term": "zoe", "limit": 2 }))
        .await
        .ok();
    assert_eq!(limited["results"].as_array().unwrap().len(), 2);
    assert_eq!(limited["limited"], true);

    // New accounts are named after their localpart (as in Synapse); deactivated ones vanish.
    let found_zoe2 = search(&server, &owner_token, "zoe2").await;
    assert_eq!(found_zoe2["results"][0]["display_name"], "zoe2");
    let deactivate = server
        .post(
            "/_matrix/client/v3/account/deactivate",
            Some(&users[1].1),
            json!({ "auth": { "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "zoe2" }, "password": "password" } }),
        )
        .await;
    assert!(deactivate.status.is_success(), "{}", deactivate.body);
    assert_eq!(found(&search(&server, &owner_token, "zoe2").await), Vec::<String>::new());

    // Missing search term: the spec's error.
    server.post("/_matrix/client/v3/user_directory/search", Some(&owner_token), json!({})).await.err(400, "M_MISSING_PARAM");
    server.post("/_matrix/client/v3/user_directory/search", None, json!({ "search_term": "x" })).await.err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn search_all_users_finds_local_users_without_shared_rooms() {
    let server = TestServer::start_with(|c| c.user_directory.search_all_users = true).await;
    let (_alice, alice_token) = server.register("alice").await;
    let (bob, _) = server.register("bob").await;
    assert_eq!(found(&search(&server, &alice_token, "bob").await), vec![bob]);
}

#[tokio::test]
async fn remote_users_are_found_by_the_name_of_their_join() {
    let hs1 = federating_server().await;
    let hs2 = federating_server().await;
    let (alice, alice_token) = hs1.register("alice").await;
    let (_stranger, stranger_token) = hs1.register("stranger").await;
    let (bob, bob_token) = hs2.register("bob").await;
    set_name(&hs2, &bob, &bob_token, "Roberto Remoto").await;
    let room = hs1.create_room(&alice_token, json!({ "preset": "public_chat" })).await;
    hs2.post(&format!("/_matrix/client/v3/join/{}?server_name={}", enc(&room), enc(&hs1.server_name())), Some(&bob_token), json!({}))
        .await
        .ok();
    eventually(std::time::Duration::from_secs(10), || async {
        found(&search(&hs1, &stranger_token, "remoto").await) == vec![bob.clone()]
    })
    .await;
    // hs2's users find alice while hs2 is in her public room, not once it left.
    let (_carol, carol_token) = hs2.register("carol").await;
    assert_eq!(found(&search(&hs2, &carol_token, "alice").await), vec![alice.clone()]);
    hs2.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), Some(&bob_token), json!({})).await.ok();
    assert_eq!(found(&search(&hs2, &carol_token, "alice").await), Vec::<String>::new());
}

#[tokio::test]
async fn openid_tokens_are_exchanged_for_the_user_id_over_federation() {
    let server = federating_server().await;
    let (alice, alice_token) = server.register("alice").await;
    let (bob, _) = server.register("bob").await;
    let path = format!("/_matrix/client/v3/user/{}/openid/request_token", enc(&alice));
    let token = server.post(&path, Some(&alice_token), json!({})).await.ok();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["matrix_server_name"], server.server_name());
    assert!(token["expires_in"].as_u64().unwrap() > 0);

    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let userinfo = |access_token: String| {
        let url = format!("https://{}/_matrix/federation/v1/openid/userinfo?access_token={}", server.server_name(), enc(&access_token));
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = userinfo(token["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sub"], alice.as_str());

    let (status, body) = userinfo("not-a-token".into()).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")));
    let url = format!("https://{}/_matrix/federation/v1/openid/userinfo", server.server_name());
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401, "no token at all is unauthorized too");
    // Only for oneself.
    let path = format!("/_matrix/client/v3/user/{}/openid/request_token", enc(&bob));
    server.post(&path, Some(&alice_token), json!({})).await.err(403, "M_FORBIDDEN");
}
