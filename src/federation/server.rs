//! Inbound Server-Server endpoints: our keys, the key notary, version, and queries.

use axum::{
    extract::{Path, Query, State},
    Json,
};
use ruma::api::federation::{
    discovery::{get_remote_server_keys, get_remote_server_keys_batch, get_server_keys, get_server_version},
    query::{get_profile_information, get_room_information},
};
use serde_json::{json, Value};

use super::Federation;
use crate::{
    client_api::extract::{Ruma, RumaResponse},
    error::{MatrixError, Result},
    storage::{accounts as account_repo, aliases as alias_repo},
};

pub async fn server_keys(State(federation): State<Federation>, _: Ruma<get_server_keys::v2::Request>) -> Result<Json<Value>> {
    Ok(Json(federation.own_keys()?))
}

pub async fn notary_query(
    State(federation): State<Federation>,
    request: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    let min = u64::from(b.minimum_valid_until_ts.0) as i64;
    Ok(Json(json!({ "server_keys": federation.notary_keys(&b.server_name, min).await? })))
}

/// `GET /_matrix/key/v2/server/{keyId}`, the form before the key id was dropped (it never
/// narrowed the answer): SyTest and older servers still fetch keys this way.
pub async fn server_keys_by_key_id(State(federation): State<Federation>, Path(_key_id): Path<String>) -> Result<Json<Value>> {
    Ok(Json(federation.own_keys()?))
}

#[derive(serde::Deserialize)]
pub struct NotaryQueryParams {
    #[serde(default)]
    minimum_valid_until_ts: u64,
}

/// `GET /_matrix/key/v2/query/{serverName}/{keyId}`, the notary query's older form (the key
/// id is ignored, as the key id of the older `/server/{keyId}` was).
pub async fn notary_query_by_key_id(
    State(federation): State<Federation>,
    Path((server_name, _key_id)): Path<(String, String)>,
    Query(params): Query<NotaryQueryParams>,
) -> Result<Json<Value>> {
    let server_name = ruma::OwnedServerName::try_from(server_name).map_err(|_| MatrixError::invalid_param("Invalid server name"))?;
    let min = i64::try_from(params.minimum_valid_until_ts).unwrap_or(i64::MAX);
    Ok(Json(json!({ "server_keys": federation.notary_keys(&server_name, min).await? })))
}

pub async fn notary_batch(
    State(federation): State<Federation>,
    request: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<Json<Value>> {
    let mut all = Vec::new();
    for (server, keys) in &request.body.server_keys {
        let min = keys
            .values()
            .filter_map(|criteria| criteria.minimum_valid_until_ts)
            .map(|ts| u64::from(ts.0) as i64)
            .max()
            .unwrap_or(0);
        all.extend(federation.notary_keys(server, min).await?);
    }
    Ok(Json(json!({ "server_keys": all })))
}

pub async fn version(_: Ruma<get_server_version::v1::Request>) -> Json<Value> {
    Json(json!({ "server": { "name": "weft", "version": env!("CARGO_PKG_VERSION") } }))
}

pub async fn query_profile(
    State(federation): State<Federation>,
    request: Ruma<get_profile_information::v1::Request>,
) -> Result<Json<Value>> {
    let user = &request.body.user_id;
    if !federation.is_local(user.server_name()) {
        return Err(MatrixError::invalid_param("That user is not on this server"));
    }
    let row = account_repo::get_user(federation.db.pool(), user.as_str())
        .await?
        .filter(|u| !u.deactivated)
        .ok_or_else(|| MatrixError::not_found("Profile not found"))?;
    let mut profile = serde_json::Map::new();
    let field = request.body.field.as_ref().map(|f| f.as_str().to_owned());
    if let Some(name) = row.displayname.filter(|_| field.as_deref().is_none_or(|f| f == "displayname")) {
        profile.insert("displayname".into(), name.into());
    }
    if let Some(avatar) = row.avatar_url.filter(|_| field.as_deref().is_none_or(|f| f == "avatar_url")) {
        profile.insert("avatar_url".into(), avatar.into());
    }
    Ok(Json(Value::Object(profile)))
}

pub async fn query_directory(
    State(federation): State<Federation>,
    State(appservice_client): State<crate::appservice::client::AppServiceClient>,
    request: Ruma<get_room_information::v1::Request>,
) -> Result<Json<Value>> {
    let alias = &request.body.room_alias;
    if !federation.is_local(alias.server_name()) {
        return Err(MatrixError::not_found("That alias is not on this server"));
    }
    let mut found = alias_repo::resolve(federation.db.pool(), alias.as_str()).await?;
    // An alias in an application service's namespace may exist once the service is asked.
    if found.is_none() && appservice_client.alias_created(alias).await {
        found = alias_repo::resolve(federation.db.pool(), alias.as_str()).await?;
    }
    let (room_id, _) = found.ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    Ok(Json(json!({ "room_id": room_id, "servers": [federation.server_name()] })))
}

/// The asking server must be (or have been) in the event's room.
async fn check_visible_to(federation: &Federation, origin: Option<&ruma::OwnedServerName>, room_id: &ruma::RoomId) -> Result<()> {
    let origin = origin.ok_or_else(|| MatrixError::forbidden("Unsigned request"))?;
    federation.check_acl(room_id, origin).await?;
    let members = crate::storage::rooms::memberships_in_room(federation.db.pool(), room_id.as_str()).await?;
    let present = members
        .iter()
        .filter_map(|user| ruma::UserId::parse(user.as_str()).ok())
        .any(|user| user.server_name() == origin);
    if present {
        Ok(())
    } else {
        Err(MatrixError::forbidden("Your server is not in this room"))
    }
}

pub async fn get_event(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::event::get_event::v1::Request>,
) -> Result<Json<Value>> {
    let pdu = federation
        .rooms
        .pdu(&request.body.event_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("Unknown event"))?;
    check_visible_to(&federation, request.origin.as_ref(), &pdu.room_id).await?;
    Ok(Json(json!({
        "origin": federation.server_name(),
        "origin_server_ts": crate::storage::now_ms(),
        "pdus": [pdu.json()],
    })))
}

pub async fn state_ids(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::event::get_room_state_ids::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    check_visible_to(&federation, request.origin.as_ref(), &b.room_id).await?;
    // Only events of the timeline have a state: outliers and rejected events are unknown here.
    let pdu = federation.rooms.timeline_pdu(&b.room_id, &b.event_id).await?.ok_or_else(|| MatrixError::not_found("Unknown event"))?;
    let (pdu_ids, auth_chain_ids) = federation.rooms.state_ids_before(&pdu).await?;
    Ok(Json(json!({ "pdu_ids": pdu_ids, "auth_chain_ids": auth_chain_ids })))
}

pub async fn missing_events(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::event::get_missing_events::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    check_visible_to(&federation, request.origin.as_ref(), &b.room_id).await?;
    let limit = u64::from(b.limit).min(100) as usize;
    let min_depth = u64::from(b.min_depth);
    let earliest: std::collections::HashSet<&ruma::OwnedEventId> = b.earliest_events.iter().collect();
    let mut queue: Vec<ruma::OwnedEventId> = Vec::new();
    for latest in &b.latest_events {
        if let Some(pdu) = federation.rooms.pdu(latest).await? {
            queue.extend(pdu.prev_events.iter().cloned());
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    while let Some(id) = queue.pop() {
        if found.len() >= limit || earliest.contains(&id) || !seen.insert(id.clone()) {
            continue;
        }
        let Some(pdu) = federation.rooms.pdu(&id).await? else { continue };
        if pdu.room_id != b.room_id || pdu.fields.depth < min_depth {
            continue;
        }
        queue.extend(pdu.prev_events.iter().cloned());
        found.push(pdu);
    }
    found.sort_by_key(|p| p.fields.depth);
    Ok(Json(json!({ "events": found.iter().map(|p| p.json()).collect::<Vec<_>>() })))
}

pub async fn backfill(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::backfill::get_backfill::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    check_visible_to(&federation, request.origin.as_ref(), &b.room_id).await?;
    let limit = u64::from(b.limit).clamp(1, 100) as usize;
    let events = federation.rooms.events_before(&b.room_id, &b.v, limit).await?;
    Ok(Json(json!({
        "origin": federation.server_name(),
        "origin_server_ts": crate::storage::now_ms(),
        "pdus": events.iter().map(|p| p.json()).collect::<Vec<_>>(),
    })))
}

pub async fn state(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::event::get_room_state::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    check_visible_to(&federation, request.origin.as_ref(), &b.room_id).await?;
    let pdu = federation.rooms.timeline_pdu(&b.room_id, &b.event_id).await?.ok_or_else(|| MatrixError::not_found("Unknown event"))?;
    let (pdus, auth_chain) = federation.rooms.state_and_auth_chain_before(&pdu).await?;
    Ok(Json(json!({ "pdus": pdus, "auth_chain": auth_chain })))
}

pub async fn timestamp_to_event(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::event::get_event_by_timestamp::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    check_visible_to(&federation, request.origin.as_ref(), &b.room_id).await?;
    let dir = match b.dir {
        ruma::api::Direction::Forward => crate::storage::events::Direction::Forward,
        ruma::api::Direction::Backward => crate::storage::events::Direction::Backward,
    };
    let ts = u64::from(b.ts.0) as i64;
    let (event_id, origin_server_ts) = crate::storage::events::closest_to_ts(federation.db.pool(), b.room_id.as_str(), ts, dir)
        .await?
        .ok_or_else(|| MatrixError::not_found("No event found near that timestamp"))?;
    Ok(Json(json!({ "event_id": event_id, "origin_server_ts": origin_server_ts })))
}

pub async fn user_keys_query(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::keys::get_keys::v1::Request>,
) -> Result<Json<Value>> {
    let origin = request.origin.clone().ok_or_else(|| MatrixError::forbidden("Unsigned request"))?;
    let mut wanted = std::collections::BTreeMap::new();
    for (user, devices) in &request.body.device_keys {
        if federation.is_local(user.server_name()) {
            wanted.insert(user.to_string(), devices.iter().map(ToString::to_string).collect());
        }
    }
    // A remote asker is never the owner: no user-signing keys, and device names stay private.
    let asker = ruma::UserId::parse(format!("@federation:{origin}")).map_err(|e| MatrixError::internal(e.to_string()))?;
    let mut answer = federation.ephemeral.e2ee.query(&asker, &wanted).await?;
    if let Some(users) = answer["device_keys"].as_object_mut() {
        for devices in users.values_mut() {
            for keys in devices.as_object_mut().into_iter().flat_map(|d| d.values_mut()) {
                if let Some(unsigned) = keys.get_mut("unsigned").and_then(Value::as_object_mut) {
                    unsigned.remove("device_display_name");
                }
            }
        }
    }
    Ok(Json(json!({
        "device_keys": answer["device_keys"],
        "master_keys": answer["master_keys"],
        "self_signing_keys": answer["self_signing_keys"],
    })))
}

pub async fn user_keys_claim(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::keys::claim_keys::v1::Request>,
) -> Result<Json<Value>> {
    let mut wanted = std::collections::BTreeMap::new();
    for (user, devices) in &request.body.one_time_keys {
        if federation.is_local(user.server_name()) {
            wanted.insert(user.to_string(), devices.iter().map(|(d, a)| (d.to_string(), a.to_string())).collect());
        }
    }
    let answer = federation.ephemeral.e2ee.claim(&wanted).await?;
    Ok(Json(json!({ "one_time_keys": answer["one_time_keys"] })))
}

pub async fn user_devices(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::device::get_devices::v1::Request>,
) -> Result<Json<Value>> {
    let user = &request.body.user_id;
    if !federation.is_local(user.server_name()) || !account_repo::user_exists(federation.db.pool(), user.as_str()).await? {
        return Err(MatrixError::not_found("No such user here"));
    }
    let asker = ruma::UserId::parse(format!("@federation:{}", request.origin.clone().unwrap_or_else(|| federation.server_name().to_owned())))
        .map_err(|e| MatrixError::internal(e.to_string()))?;
    let wanted = [(user.to_string(), Vec::new())].into_iter().collect();
    let answer = federation.ephemeral.e2ee.query(&asker, &wanted).await?;
    let devices: Vec<Value> = answer["device_keys"][user.as_str()]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(device, keys)| {
            let mut keys = keys.clone();
            if let Some(unsigned) = keys.get_mut("unsigned").and_then(Value::as_object_mut) {
                unsigned.remove("device_display_name");
            }
            json!({ "device_id": device, "keys": keys })
        })
        .collect();
    let stream_id = federation.ephemeral.e2ee.device_list_position().await?;
    let mut response = json!({ "user_id": user, "stream_id": stream_id, "devices": devices });
    if !answer["master_keys"][user.as_str()].is_null() {
        response["master_key"] = answer["master_keys"][user.as_str()].clone();
    }
    if !answer["self_signing_keys"][user.as_str()].is_null() {
        response["self_signing_key"] = answer["self_signing_keys"][user.as_str()].clone();
    }
    Ok(Json(response))
}

pub async fn event_auth(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::authorization::get_event_authorization::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    check_visible_to(&federation, request.origin.as_ref(), &b.room_id).await?;
    let pdu = federation.rooms.pdu(&b.event_id).await?.filter(|p| p.room_id == b.room_id).ok_or_else(|| MatrixError::not_found("Unknown event"))?;
    let mut start = pdu.auth_events.clone();
    // From room version 12 the create event is implied rather than listed; the chain still
    // needs it to be checked.
    if let Some(create) = federation.rooms.current_state_event(&b.room_id, "m.room.create", "").await? {
        if create.event_id != pdu.event_id {
            start.push(create.event_id);
        }
    }
    let auth_chain = federation.rooms.auth_chain_pdus(start).await?;
    Ok(Json(json!({ "auth_chain": auth_chain })))
}

/// Other servers may read our public room directory only when the admin allows it (Synapse's
/// `allow_public_rooms_over_federation`), since it lets anyone crawl the server's rooms.
fn check_directory_open(federation: &Federation) -> Result<()> {
    if federation.allow_public_rooms {
        Ok(())
    } else {
        Err(MatrixError::forbidden("This server does not share its public room directory over federation"))
    }
}

pub async fn public_rooms(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::directory::get_public_rooms::v1::Request>,
) -> Result<Json<Value>> {
    check_directory_open(&federation)?;
    let b = &request.body;
    directory_response(&federation, b.limit, b.since.as_deref(), &Default::default(), &b.room_network).await
}

pub async fn public_rooms_filtered(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::directory::get_public_rooms_filtered::v1::Request>,
) -> Result<Json<Value>> {
    check_directory_open(&federation)?;
    let b = &request.body;
    directory_response(&federation, b.limit, b.since.as_deref(), &b.filter, &b.room_network).await
}

async fn directory_response(
    federation: &Federation,
    limit: Option<ruma::UInt>,
    since: Option<&str>,
    filter: &ruma::directory::Filter,
    network: &ruma::directory::RoomNetwork,
) -> Result<Json<Value>> {
    let listing = crate::rooms::directory::Listing::of_network(network)?;
    let page = crate::rooms::directory::page(&federation.rooms, listing, limit, since, filter).await?;
    let mut response = json!({ "chunk": page.chunk, "total_room_count_estimate": page.total_room_count_estimate });
    if let Some(next) = page.next_batch {
        response["next_batch"] = next.into();
    }
    if let Some(prev) = page.prev_batch {
        response["prev_batch"] = prev.into();
    }
    Ok(Json(response))
}

/// Children of a space listed in one federation `/hierarchy` answer, as in Synapse.
const MAX_CHILDREN_PER_SPACE: usize = 50;

pub async fn hierarchy(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::space::get_hierarchy::v1::Request>,
) -> Result<Json<Value>> {
    let origin = request.origin.clone().ok_or_else(|| MatrixError::forbidden("Unsigned request"))?;
    let b = &request.body;
    let rooms = &federation.rooms;
    if !rooms.participating(&b.room_id).await? || !rooms.summary_visible_to_server(&b.room_id, &origin).await? {
        return Err(MatrixError::not_found("Unknown room"));
    }
    let links = rooms.space_children(&b.room_id, b.suggested_only).await?;
    let mut room = rooms.room_summary(&b.room_id).await?;
    room["children_state"] = links.iter().map(|link| link.event.clone()).collect::<Vec<_>>().into();
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    for link in links.iter().take(MAX_CHILDREN_PER_SPACE) {
        // Rooms this server is not in are left out: the asking server tries their `via`.
        if !rooms.participating(&link.room_id).await? {
            continue;
        }
        if rooms.summary_visible_to_server(&link.room_id, &origin).await? {
            children.push(rooms.room_summary(&link.room_id).await?);
        } else {
            inaccessible.push(link.room_id.clone());
        }
    }
    Ok(Json(json!({ "room": room, "children": children, "inaccessible_children": inaccessible })))
}

/// The user an OpenID token (from the client API's `openid/request_token`) belongs to.
pub async fn openid_userinfo(
    State(accounts): State<crate::accounts::Accounts>,
    request: std::result::Result<Ruma<ruma::api::federation::openid::get_openid_userinfo::v1::Request>, MatrixError>,
) -> Result<RumaResponse<ruma::api::federation::openid::get_openid_userinfo::v1::Response>> {
    let request = match request {
        // No token at all is an authentication failure too (401, as Synapse), not a bad request.
        Err(error) if error.errcode == "M_MISSING_PARAM" => {
            return Err(MatrixError::new(http::StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Access token required"));
        }
        other => other?,
    };
    match accounts.openid_token_owner(&request.body.access_token).await? {
        Some(user) => Ok(RumaResponse(ruma::api::federation::openid::get_openid_userinfo::v1::Response::new(user))),
        None => Err(MatrixError::new(http::StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", "Access token unknown or expired")),
    }
}
