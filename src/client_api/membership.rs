//! Joining, inviting, leaving, kicking, banning, knocking, forgetting; member lists.

use std::collections::BTreeMap;

use axum::extract::State;
use ruma::{
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events, invite_user, invite_user::v3::InvitationRecipient, join_room_by_id,
            join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room, unban_user,
        },
    },
    OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomOrAliasId,
};
use serde_json::Value;

use super::extract::{Ruma, RumaResponse, WithRawBody};
use crate::{
    appservice::client::AppServiceClient,
    error::{MatrixError, Result},
    federation::Federation,
    rooms::{membership::Change, read::Viewer, Rooms},
    storage::{rooms as room_repo, state as state_repo},
};

/// Resolves a room id or an alias (remote aliases through their server), with servers that
/// may be in the room.
pub async fn resolve_room(
    rooms: &Rooms,
    federation: &Federation,
    appservice_client: &AppServiceClient,
    room: &RoomOrAliasId,
) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    match <&RoomId>::try_from(room) {
        Ok(room_id) => Ok((room_id.to_owned(), room_id.server_name().map(|s| vec![s.to_owned()]).unwrap_or_default())),
        Err(alias) if alias.server_name() == rooms.server_name() => {
            let room_id = super::directory::resolve_local_alias(rooms, appservice_client, alias)
                .await?
                .ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
            Ok((room_id, Vec::new()))
        }
        Err(alias) => {
            let query = ruma::api::federation::query::get_room_information::v1::Request::new(alias.to_owned());
            let answer = federation.send(alias.server_name(), query).await?;
            Ok((answer.room_id, answer.servers))
        }
    }
}

/// The server of whoever invited the user to a room, if they were invited.
async fn inviting_servers(rooms: &Rooms, room_id: &RoomId, user: &ruma::UserId) -> Result<Vec<OwnedServerName>> {
    let Some((membership, event_id)) = room_repo::membership(rooms.db().pool(), room_id.as_str(), user.as_str()).await? else {
        return Ok(Vec::new());
    };
    if membership != "invite" {
        return Ok(Vec::new());
    }
    let Some(invite) = rooms.pdu(&ruma::EventId::parse(event_id)?).await? else { return Ok(Vec::new()) };
    Ok(vec![invite.fields.sender.server_name().to_owned()])
}

/// Joins locally when this server is in the room, otherwise through another server.
/// `extra`: keys of the request body beyond the spec's, kept in the member event.
async fn join(
    rooms: &Rooms,
    federation: &Federation,
    room_id: &RoomId,
    user: &ruma::UserId,
    reason: Option<&str>,
    mut servers: Vec<OwnedServerName>,
    extra: &serde_json::Map<String, Value>,
) -> Result<()> {
    rooms.require_not_blocked(room_id).await?;
    for server in inviting_servers(rooms, room_id, user).await? {
        if !servers.contains(&server) {
            servers.insert(0, server);
        }
    }
    if rooms.participating(room_id).await? || servers.iter().all(|s| s == rooms.server_name()) {
        rooms.join_with_content(room_id, user, reason, extra).await?;
        return Ok(());
    }
    federation.join_remote(room_id, user, &servers, extra).await
}

/// The body of a /join as an object (an empty or non-object body is no extra content).
fn join_body(raw: &[u8]) -> serde_json::Map<String, Value> {
    match serde_json::from_slice(raw) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

pub async fn join_by_id(
    State(rooms): State<Rooms>,
    State(federation): State<Federation>,
    WithRawBody(request, raw): WithRawBody<join_room_by_id::v3::Request>,
) -> Result<RumaResponse<join_room_by_id::v3::Response>> {
    let user = &request.user().user_id;
    let room_id = &request.body.room_id;
    let servers = room_id.server_name().map(|s| vec![s.to_owned()]).unwrap_or_default();
    require_guest_access(&rooms, room_id, request.user()).await?;
    join(&rooms, &federation, room_id, user, request.body.reason.as_deref(), servers, &join_body(&raw)).await?;
    Ok(RumaResponse(join_room_by_id::v3::Response::new(room_id.clone())))
}

pub async fn join_by_id_or_alias(
    State(rooms): State<Rooms>,
    State(federation): State<Federation>,
    State(appservice_client): State<AppServiceClient>,
    WithRawBody(request, raw): WithRawBody<join_room_by_id_or_alias::v3::Request>,
) -> Result<RumaResponse<join_room_by_id_or_alias::v3::Response>> {
    let user = &request.user().user_id;
    let (room_id, mut servers) = resolve_room(&rooms, &federation, &appservice_client, &request.body.room_id_or_alias).await?;
    for via in &request.body.via {
        if !servers.contains(via) {
            servers.push(via.clone());
        }
    }
    require_guest_access(&rooms, &room_id, request.user()).await?;
    join(&rooms, &federation, &room_id, user, request.body.reason.as_deref(), servers, &join_body(&raw)).await?;
    Ok(RumaResponse(join_room_by_id_or_alias::v3::Response::new(room_id)))
}

/// Guests join only rooms whose `m.room.guest_access` is `can_join` (of rooms this server is
/// in; a remote room's answer comes with its join).
async fn require_guest_access(rooms: &Rooms, room_id: &RoomId, requester: &crate::accounts::Requester) -> Result<()> {
    if !requester.is_guest || !rooms.participating(room_id).await? {
        return Ok(());
    }
    let content = rooms.current_state_content(room_id, "m.room.guest_access", "").await?;
    if content.as_ref().and_then(|c| c["guest_access"].as_str()) != Some("can_join") {
        return Err(MatrixError::new(http::StatusCode::FORBIDDEN, "M_FORBIDDEN", "Guest access not allowed in this room"));
    }
    Ok(())
}

pub async fn knock(
    State(rooms): State<Rooms>,
    State(federation): State<Federation>,
    State(appservice_client): State<AppServiceClient>,
    request: Ruma<knock_room::v3::Request>,
) -> Result<RumaResponse<knock_room::v3::Response>> {
    let user = &request.user().user_id;
    let (room_id, mut servers) = resolve_room(&rooms, &federation, &appservice_client, &request.body.room_id_or_alias).await?;
    for via in &request.body.via {
        if !servers.contains(via) {
            servers.push(via.clone());
        }
    }
    rooms.require_not_blocked(&room_id).await?;
    if rooms.participating(&room_id).await? || servers.iter().all(|s| s == rooms.server_name()) {
        rooms.change_membership(&room_id, user, user, Change::Knock, request.body.reason.as_deref(), false).await?;
    } else {
        federation.knock_remote(&room_id, user, request.body.reason.as_deref(), &servers).await?;
    }
    Ok(RumaResponse(knock_room::v3::Response::new(room_id)))
}

pub async fn invite(
    State(rooms): State<Rooms>,
    State(federation): State<Federation>,
    State(appservice_client): State<AppServiceClient>,
    request: Ruma<invite_user::v3::Request>,
) -> Result<RumaResponse<invite_user::v3::Response>> {
    let InvitationRecipient::UserId(recipient) = &request.body.recipient else {
        return Err(MatrixError::forbidden("Third-party invites are not supported"));
    };
    let sender = &request.user().user_id;
    rooms.require_not_blocked(&request.body.room_id).await?;
    rooms.require_joined(&request.body.room_id, sender).await?;
    if !federation.is_local(recipient.user_id.server_name()) {
        federation.invite_remote(&request.body.room_id, sender, &recipient.user_id, recipient.reason.as_deref(), false).await?;
        return Ok(RumaResponse(invite_user::v3::Response::new()));
    }
    // An unknown user in an application service's namespace may exist once it is asked.
    if !crate::storage::accounts::user_exists(rooms.db().pool(), recipient.user_id.as_str()).await? {
        appservice_client.user_created(&recipient.user_id).await;
    }
    rooms
        .change_membership(&request.body.room_id, sender, &recipient.user_id, Change::Invite, recipient.reason.as_deref(), false)
        .await?;
    Ok(RumaResponse(invite_user::v3::Response::new()))
}

pub async fn leave(
    State(rooms): State<Rooms>,
    State(federation): State<Federation>,
    request: Ruma<leave_room::v3::Request>,
) -> Result<RumaResponse<leave_room::v3::Response>> {
    let user = &request.user().user_id;
    if !rooms.participating(&request.body.room_id).await? {
        // Rejecting an invite to a room this server is not in: through the inviting server.
        let servers = inviting_servers(&rooms, &request.body.room_id, user).await?;
        if !servers.is_empty() {
            federation.leave_remote(&request.body.room_id, user, &servers).await?;
            return Ok(RumaResponse(leave_room::v3::Response::new()));
        }
    }
    rooms.change_membership(&request.body.room_id, user, user, Change::Leave, request.body.reason.as_deref(), false).await?;
    Ok(RumaResponse(leave_room::v3::Response::new()))
}

pub async fn kick(
    State(rooms): State<Rooms>,
    request: Ruma<kick_user::v3::Request>,
) -> Result<RumaResponse<kick_user::v3::Response>> {
    let sender = &request.user().user_id;
    rooms
        .change_membership(&request.body.room_id, sender, &request.body.user_id, Change::Kick, request.body.reason.as_deref(), false)
        .await?;
    Ok(RumaResponse(kick_user::v3::Response::new()))
}

pub async fn ban(
    State(rooms): State<Rooms>,
    request: Ruma<ban_user::v3::Request>,
) -> Result<RumaResponse<ban_user::v3::Response>> {
    let sender = &request.user().user_id;
    rooms
        .change_membership(&request.body.room_id, sender, &request.body.user_id, Change::Ban, request.body.reason.as_deref(), false)
        .await?;
    Ok(RumaResponse(ban_user::v3::Response::new()))
}

pub async fn unban(
    State(rooms): State<Rooms>,
    request: Ruma<unban_user::v3::Request>,
) -> Result<RumaResponse<unban_user::v3::Response>> {
    let sender = &request.user().user_id;
    rooms
        .change_membership(&request.body.room_id, sender, &request.body.user_id, Change::Unban, request.body.reason.as_deref(), false)
        .await?;
    Ok(RumaResponse(unban_user::v3::Response::new()))
}

pub async fn forget(
    State(rooms): State<Rooms>,
    request: Ruma<forget_room::v3::Request>,
) -> Result<RumaResponse<forget_room::v3::Response>> {
    rooms.forget(&request.body.room_id, &request.user().user_id).await?;
    Ok(RumaResponse(forget_room::v3::Response::new()))
}

pub async fn joined_rooms(
    State(rooms): State<Rooms>,
    request: Ruma<joined_rooms::v3::Request>,
) -> Result<RumaResponse<joined_rooms::v3::Response>> {
    let ids = room_repo::rooms_with_membership(rooms.db().pool(), request.user().user_id.as_str(), "join").await?;
    let ids = ids.into_iter().map(RoomId::parse).collect::<Result<Vec<_>, _>>()?;
    Ok(RumaResponse(joined_rooms::v3::Response::new(ids)))
}

pub async fn joined_members(
    State(rooms): State<Rooms>,
    request: Ruma<joined_members::v3::Request>,
) -> Result<RumaResponse<joined_members::v3::Response>> {
    let room_id = &request.body.room_id;
    rooms.require_joined(room_id, &request.user().user_id).await?;
    let mut joined = BTreeMap::new();
    for user in rooms.joined_members(room_id).await? {
        let mut member = joined_members::v3::RoomMember::new();
        if let Some(content) = rooms.current_state_content(room_id, "m.room.member", &user).await? {
            member.display_name = content.get("displayname").and_then(Value::as_str).map(str::to_owned);
            member.avatar_url = content.get("avatar_url").and_then(Value::as_str).map(Into::into);
        }
        joined.insert(OwnedUserId::try_from(user)?, member);
    }
    Ok(RumaResponse(joined_members::v3::Response::new(joined)))
}

/// Member events of the room now, or at the `at` pagination token, filtered by membership.
pub async fn members(
    State(rooms): State<Rooms>,
    request: Ruma<get_member_events::v3::Request>,
) -> Result<RumaResponse<get_member_events::v3::Response>> {
    let room_id = &request.body.room_id;
    let user = request.user().clone();
    let joined = rooms.check_can_read(room_id, &user.user_id).await?;
    // A user who left sees the members as of their leave.
    let state = if joined {
        state_repo::current_state(rooms.db().pool(), room_id.as_str()).await?
    } else {
        match rooms.membership_of(room_id, &user.user_id).await? {
            Some(_) => {
                let (_, event_id) = room_repo::membership(rooms.db().pool(), room_id.as_str(), user.user_id.as_str())
                    .await?
                    .ok_or_else(|| MatrixError::forbidden("Not a member"))?;
                let row = crate::storage::events::get(rooms.db().pool(), &event_id)
                    .await?
                    .ok_or_else(|| MatrixError::internal("membership event missing"))?;
                state_repo::load_group(rooms.db().pool(), row.state_group).await?
            }
            None => state_repo::current_state(rooms.db().pool(), room_id.as_str()).await?,
        }
    };
    let state = match request.body.at.as_deref().filter(|t| !t.is_empty()) {
        Some(at) => {
            let Some(at_state) = rooms.state_at_token(room_id, at).await? else {
                return Err(MatrixError::not_found("No room state at that point"));
            };
            // History visibility applies: the user must have been joined then, or the room
            // world readable.
            if !rooms.may_see_state(&at_state, &user.user_id).await? {
                return Err(MatrixError::forbidden("You may not see the room at that point"));
            }
            at_state
        }
        None => state,
    };
    let viewer = Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) };
    let mut chunk = Vec::new();
    for ((kind, _), event_id) in state {
        if kind != "m.room.member" {
            continue;
        }
        let Some(row) = crate::storage::events::get(rooms.db().pool(), &event_id).await? else { continue };
        let pdu = crate::rooms::pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
        let membership = pdu.content_value().get("membership").and_then(Value::as_str).unwrap_or("").to_owned();
        if request.body.membership.as_ref().is_some_and(|m| m.as_str() != membership) {
            continue;
        }
        if request.body.not_membership.as_ref().is_some_and(|m| m.as_str() == membership) {
            continue;
        }
        let event = rooms.client_event(&row, &pdu, Some(viewer)).await?;
        chunk.push(ruma::serde::Raw::from_json(serde_json::value::to_raw_value(&event).map_err(|e| MatrixError::internal(e.to_string()))?));
    }
    Ok(RumaResponse(get_member_events::v3::Response::new(chunk)))
}
