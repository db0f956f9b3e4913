//! Joins over federation: as the resident server (make_join, send_join) and as the joining
//! server (make_join, sign, send_join, then take the room's state from the answer).

use axum::{extract::State, Json};
use ruma::{
    api::federation::membership::{create_join_event, prepare_join_event},
    room_version_rules::EventIdFormatVersion,
    signatures, CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedServerName, RoomId,
    RoomVersionId, UserId,
};
use serde_json::{json, value::{to_raw_value, RawValue}, Value};

use super::{pipeline::parse_pdu, Federation};
use crate::{
    client_api::extract::Ruma,
    error::{MatrixError, Result},
    rooms::{rules_for, supported_room_versions, Persisted},
    storage::state::StateMap,
};

fn require_origin(origin: Option<&OwnedServerName>, user: &UserId) -> Result<()> {
    match origin {
        Some(origin) if origin == user.server_name() => Ok(()),
        _ => Err(MatrixError::forbidden("A server may only act for its own users")),
    }
}

/// GET /make_join: a join template for a user of the asking server.
pub async fn make_join(
    State(federation): State<Federation>,
    request: Ruma<prepare_join_event::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    require_origin(request.origin.as_ref(), &b.user_id)?;
    federation.check_acl(&b.room_id, b.user_id.server_name()).await?;
    let accepted = if b.ver.is_empty() { vec![RoomVersionId::V1] } else { b.ver.clone() };
    let (version, template) = federation.rooms.join_template(&b.room_id, &b.user_id, &accepted).await?;
    Ok(Json(json!({ "room_version": version, "event": template })))
}

/// PUT /v2/send_join: the joining server's signed join, checked and persisted; answered with
/// the room's state before it and that state's auth chain.
pub async fn send_join(
    State(federation): State<Federation>,
    request: Ruma<create_join_event::v2::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    accept_join(&federation, request.origin.as_ref(), &b.room_id, &b.event_id, &b.pdu).await.map(Json)
}

/// PUT /v1/send_join: the same, answered `[200, ...]`.
pub async fn send_join_v1(
    State(federation): State<Federation>,
    request: Ruma<super::v1_membership::send_join::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    let answer = accept_join(&federation, request.origin.as_ref(), &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(Json(json!([200, answer])))
}

async fn accept_join(federation: &Federation, origin: Option<&OwnedServerName>, room_id: &RoomId, event_id: &EventId, raw: &RawValue) -> Result<Value> {
    let version = federation.rooms.room_version(room_id).await?;
    let (pdu, rules) = parse_pdu(raw, &version)?;
    if pdu.event_id != event_id || pdu.room_id != room_id {
        return Err(MatrixError::bad_json("The event id or room id does not match the event"));
    }
    let joiner = pdu.state_key().and_then(|k| UserId::parse(k).ok()).ok_or_else(|| MatrixError::bad_json("Not a member event"))?;
    if pdu.kind().to_string() != "m.room.member" || pdu.content_value()["membership"] != "join" || joiner != pdu.fields.sender {
        return Err(MatrixError::bad_json("send_join takes the joining user's own join event"));
    }
    require_origin(origin, &joiner)?;
    federation.check_acl(room_id, joiner.server_name()).await?;
    let pdu = federation.verify_pdu(pdu, &rules).await?;
    let (state, auth_chain) = federation.rooms.state_and_auth_chain_before(&pdu).await?;
    let stored = federation.rooms.persist_remote(pdu.clone(), &version, None).await?;
    if stored == Persisted::SoftFailed {
        return Err(MatrixError::forbidden("The join is not allowed by the room's current state"));
    }
    let servers: Vec<String> = federation.rooms.remote_servers(federation.db.pool(), room_id.as_str()).await?;
    let mut servers_in_room = servers;
    servers_in_room.push(federation.server_name().to_string());
    Ok(json!({
        "origin": federation.server_name(),
        "members_omitted": false,
        "state": state,
        "auth_chain": auth_chain,
        "event": pdu.json(),
        "servers_in_room": servers_in_room,
    }))
}

impl Federation {
    /// Completes a make_join / make_knock / make_leave template for a local user: our
    /// timestamp (and origin, and event id for v1/v2), the given content, hashed and signed.
    async fn sign_template(&self, template: &RawValue, version: &RoomVersionId, user: &UserId, content: Value) -> Result<(crate::rooms::Pdu, Box<RawValue>)> {
        let rules = rules_for(version)?;
        let mut event: CanonicalJsonObject =
            serde_json::from_str(template.get()).map_err(|e| MatrixError::bad_json(format!("bad membership template: {e}")))?;
        let state_key = match event.get("state_key") {
            Some(CanonicalJsonValue::String(key)) => key.clone(),
            _ => String::new(),
        };
        if state_key != user.as_str() {
            return Err(MatrixError::bad_json("The membership template is for another user"));
        }
        event.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().0.into()));
        event.insert("content".into(), crate::crypto::to_canonical(&content).map_err(MatrixError::internal)?);
        if !matches!(version, RoomVersionId::V11 | RoomVersionId::V12) {
            event.insert("origin".into(), CanonicalJsonValue::String(self.server_name().to_string()));
        }
        if matches!(rules.event_id_format, EventIdFormatVersion::V1) {
            let id = format!("${}:{}", crate::accounts::random_string(18), self.server_name());
            event.insert("event_id".into(), CanonicalJsonValue::String(id));
        }
        event.remove("signatures");
        event.remove("hashes");
        signatures::hash_and_sign_event(self.server_name().as_str(), &*self.keys.keypair, &mut event, &rules.redaction)
            .map_err(|e| MatrixError::internal(e.to_string()))?;
        let raw = to_raw_value(&event).map_err(|e| MatrixError::internal(e.to_string()))?;
        let (pdu, _) = parse_pdu(&raw, version)?;
        Ok((pdu, raw))
    }

    /// Joins a local user to a room this server is not in yet, through one of `servers`.
    pub async fn join_remote(&self, room_id: &RoomId, user: &UserId, servers: &[OwnedServerName], extra: &serde_json::Map<String, Value>) -> Result<()> {
        let mut last_error = MatrixError::not_found("No server to join the room through");
        for server in servers.iter().filter(|s| !self.is_local(s)) {
            match self.join_through(room_id, user, server, extra).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "remote join attempt failed");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    async fn join_through(&self, room_id: &RoomId, user: &UserId, server: &OwnedServerName, extra: &serde_json::Map<String, Value>) -> Result<()> {
        let mut make = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        make.ver = supported_room_versions();
        let template = self.send(server, make).await?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        let mut content = self.rooms.member_content(user, "join", None).await?;
        crate::rooms::membership::merge_client_content(&mut content, extra);
        let template_content: Value = serde_json::from_str::<Value>(template.event.get()).map(|t| t["content"].clone()).unwrap_or(Value::Null);
        if let Some(authoriser) = template_content["join_authorised_via_users_server"].as_str() {
            content.insert("join_authorised_via_users_server".into(), authoriser.into());
        }
        let (join, raw) = self.sign_template(&template.event, &version, user, Value::Object(content)).await?;

        let room_state = match self.send(server, create_join_event::v2::Request::new(room_id.to_owned(), join.event_id.clone(), raw.clone())).await {
            Ok(response) => response.room_state,
            // A server without /v2/send_join: the same through /v1 (as Synapse falls back).
            Err(error) if is_unknown_endpoint(&error) => {
                let request = super::v1_membership::send_join::Request::new(room_id.to_owned(), join.event_id.clone(), raw);
                let answer = super::v1_membership::unwrap_v1(self.send(server, request).await?.body)?;
                serde_json::from_value::<create_join_event::v2::RoomState>(answer)
                    .map_err(|e| MatrixError::new(http::StatusCode::BAD_GATEWAY, "M_UNKNOWN", format!("{server}: bad v1 send_join answer: {e}")))?
            }
            Err(error) => return Err(error),
        };

        // Keep the state and its auth chain (checked) as outliers; the join takes that state.
        let mut known = Vec::new();
        for raw in room_state.auth_chain.iter().chain(room_state.state.iter()) {
            let (pdu, rules) = parse_pdu(raw, &version)?;
            if pdu.room_id != room_id {
                return Err(MatrixError::forbidden("send_join answered with events of another room"));
            }
            let pdu = self.verify_pdu(pdu, &rules).await?;
            if self.rooms.pdu(&pdu.event_id).await?.is_none() {
                known.push(pdu);
            }
        }
        // Each checked against its own auth events; a state event the room's auth chain
        // forbids is left out of the state the join takes.
        if let Err(error) = self.keep_checked_outliers(known, &version).await {
            tracing::info!(%room_id, %server, %error, "send_join state with a rejected event");
        }
        let mut state = StateMap::new();
        for raw in &room_state.state {
            let (pdu, _) = parse_pdu(raw, &version)?;
            if self.rooms.pdu(&pdu.event_id).await?.is_none() {
                continue;
            }
            if let Some(key) = pdu.state_key() {
                state.insert((pdu.kind().to_string(), key.to_owned()), pdu.event_id.to_string());
            }
        }
        // The resident may have added its signature (restricted joins): take its copy.
        let join = match &room_state.event {
            Some(signed) => {
                let (pdu, rules) = parse_pdu(signed, &version)?;
                if pdu.event_id != join.event_id {
                    return Err(MatrixError::forbidden("send_join answered with another event"));
                }
                self.verify_pdu(pdu, &rules).await?
            }
            None => join,
        };
        let _ = EventId::parse(join.event_id.as_str())?;
        self.rooms.persist_remote(join, &version, Some(state)).await?;
        tracing::info!(%room_id, %server, %user, "joined a room over federation");
        if let Err(error) = self.rooms.follow_upgrade_on_join(room_id).await {
            tracing::warn!(%room_id, %error, "could not move this server's aliases to the upgraded room");
        }
        Ok(())
    }
}

/// PUT /v2/invite: another server invites one of our users. We check it, countersign it and
/// show the invite to the user (with the stripped state that came with it).
pub async fn receive_invite(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::membership::create_invite::v2::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    if !supported_room_versions().contains(&b.room_version) {
        return Err(MatrixError::new(http::StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION", "Unsupported room version")
            .with("room_version", b.room_version.as_str().into()));
    }
    let state = parse_room_state(&b.invite_room_state);
    let signed = accept_invite(&federation, request.origin.as_ref(), &b.room_id, &b.event_id, &b.room_version, &b.event, &state).await?;
    Ok(Json(json!({ "event": signed })))
}

/// PUT /v1/invite: the invite event is the body, the room's state in its
/// `unsigned.invite_room_state`; answered `[200, { "event": ... }]`. No room version comes
/// with it: v1 invites are of rooms of version 1 or 2, which process invites alike (as
/// Synapse assumes).
pub async fn receive_invite_v1(
    State(federation): State<Federation>,
    request: Ruma<super::v1_membership::invite::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    let event: Value = serde_json::from_str(b.event.get()).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    let state = event["unsigned"]["invite_room_state"].as_array().cloned().unwrap_or_default();
    let signed = accept_invite(&federation, request.origin.as_ref(), &b.room_id, &b.event_id, &RoomVersionId::V1, &b.event, &state).await?;
    Ok(Json(json!([200, { "event": signed }])))
}

/// Checks an invite of one of our users and countersigns it; returns the signed event.
async fn accept_invite(
    federation: &Federation,
    origin: Option<&OwnedServerName>,
    room_id: &RoomId,
    event_id: &EventId,
    version: &RoomVersionId,
    raw: &RawValue,
    state: &[Value],
) -> Result<Value> {
    let (pdu, rules) = parse_pdu(raw, version)?;
    if pdu.event_id != event_id || pdu.room_id != room_id {
        return Err(MatrixError::bad_json("The event id or room id does not match the event"));
    }
    let invitee = pdu.state_key().and_then(|k| UserId::parse(k).ok()).ok_or_else(|| MatrixError::bad_json("Not a member event"))?;
    if pdu.kind().to_string() != "m.room.member" || pdu.content_value()["membership"] != "invite" {
        return Err(MatrixError::bad_json("Not an invite"));
    }
    if !federation.is_local(invitee.server_name())
        || !crate::storage::accounts::user_exists(federation.db.pool(), invitee.as_str()).await?
    {
        return Err(MatrixError::not_found("No such user here"));
    }
    require_origin(origin, &pdu.fields.sender)?;
    federation.check_acl(room_id, pdu.fields.sender.server_name()).await?;
    let pdu = federation.verify_pdu(pdu, &rules).await?;
    let mut object = pdu.json().clone();
    signatures::sign_event(federation.server_name().as_str(), &*federation.keys.keypair, &mut object, &rules.redaction)
        .map_err(|e| MatrixError::internal(e.to_string()))?;
    let signed = crate::rooms::Pdu::from_json(pdu.event_id.clone(), pdu.room_id.clone(), object).map_err(MatrixError::bad_json)?;
    let stripped: Vec<Value> = state.iter().map(stripped_form).collect();
    if federation.rooms.participating(room_id).await? {
        // We are in the room: the invite arrives through /send as well; just countersign.
    } else {
        federation.rooms.record_out_of_room_membership(&signed, Some(&stripped)).await?;
    }
    Ok(serde_json::to_value(signed.json())?)
}

/// GET /make_leave.
pub async fn make_leave(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::membership::prepare_leave_event::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    require_origin(request.origin.as_ref(), &b.user_id)?;
    federation.check_acl(&b.room_id, b.user_id.server_name()).await?;
    let (version, template) = federation.rooms.leave_template(&b.room_id, &b.user_id).await?;
    Ok(Json(json!({ "room_version": version, "event": template })))
}

/// PUT /v2/send_leave.
pub async fn send_leave(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::membership::create_leave_event::v2::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    accept_leave(&federation, request.origin.as_ref(), &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(Json(json!({})))
}

/// PUT /v1/send_leave: the same, answered `[200, {}]`.
pub async fn send_leave_v1(
    State(federation): State<Federation>,
    request: Ruma<super::v1_membership::send_leave::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    accept_leave(&federation, request.origin.as_ref(), &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(Json(json!([200, {}])))
}

async fn accept_leave(federation: &Federation, origin: Option<&OwnedServerName>, room_id: &RoomId, event_id: &EventId, raw: &RawValue) -> Result<()> {
    let version = federation.rooms.room_version(room_id).await?;
    let (pdu, rules) = parse_pdu(raw, &version)?;
    if pdu.event_id != event_id || pdu.room_id != room_id {
        return Err(MatrixError::bad_json("The event id or room id does not match the event"));
    }
    let leaver = pdu.state_key().and_then(|k| UserId::parse(k).ok()).ok_or_else(|| MatrixError::bad_json("Not a member event"))?;
    if pdu.kind().to_string() != "m.room.member" || pdu.content_value()["membership"] != "leave" || leaver != pdu.fields.sender {
        return Err(MatrixError::bad_json("send_leave takes the user's own leave event"));
    }
    require_origin(origin, &leaver)?;
    federation.check_acl(room_id, leaver.server_name()).await?;
    let pdu = federation.verify_pdu(pdu, &rules).await?;
    federation.rooms.persist_remote(pdu, &version, None).await?;
    Ok(())
}

/// The room state sent with an invite or a knock's answer: full PDUs since v1.16, stripped
/// events from older servers.
#[allow(deprecated)]
fn parse_room_state(states: &[ruma::api::federation::membership::RawStrippedState]) -> Vec<Value> {
    states
        .iter()
        .filter_map(|state| {
            let raw = match state {
                ruma::api::federation::membership::RawStrippedState::Pdu(raw) => raw.get(),
                ruma::api::federation::membership::RawStrippedState::Stripped(raw) => raw.json().get(),
                _ => return None,
            };
            serde_json::from_str(raw).ok()
        })
        .collect()
}

/// An event as stripped state: what a user outside the room may see of it.
fn stripped_form(event: &Value) -> Value {
    json!({ "type": event["type"], "state_key": event["state_key"], "sender": event["sender"], "content": event["content"] })
}

/// The remote does not serve the endpoint at all (an older server): M_UNRECOGNIZED with a
/// 404 or 405, or with a 400 (older Synapse).
fn is_unknown_endpoint(error: &MatrixError) -> bool {
    matches!(error.status.as_u16(), 400 | 404 | 405) && error.errcode == "M_UNRECOGNIZED"
}

impl Federation {
    /// Invites a user of another server: their server countersigns the invite, then it is
    /// persisted and sent to the room like any event.
    pub async fn invite_remote(&self, room_id: &RoomId, sender: &UserId, invitee: &UserId, reason: Option<&str>, is_direct: bool) -> Result<()> {
        let mut content = serde_json::Map::new();
        content.insert("membership".into(), "invite".into());
        if is_direct {
            content.insert("is_direct".into(), true.into());
        }
        if let Some(reason) = reason {
            content.insert("reason".into(), reason.into());
        }
        let template = crate::rooms::EventTemplate::state(ruma::events::StateEventType::RoomMember, invitee.as_str(), Value::Object(content));
        let (pdu, version) = self.rooms.build_event(room_id, sender, template).await?;
        let mut stripped_raw = Vec::new();
        for kind in crate::rooms::remote::STRIPPED_STATE {
            if let Some(state) = self.rooms.current_state_event(room_id, kind, "").await? {
                let raw = to_raw_value(&state.json()).map_err(|e| MatrixError::internal(e.to_string()))?;
                stripped_raw.push(ruma::api::federation::membership::RawStrippedState::Pdu(raw));
            }
        }
        let raw = to_raw_value(&pdu.json()).map_err(|e| MatrixError::internal(e.to_string()))?;
        let stripped: Vec<Value> = stripped_raw
            .iter()
            .filter_map(|state| match state {
                ruma::api::federation::membership::RawStrippedState::Pdu(raw) => serde_json::from_str(raw.get()).ok(),
                _ => None,
            })
            .collect();
        let request = ruma::api::federation::membership::create_invite::v2::Request::new(
            room_id.to_owned(),
            pdu.event_id.clone(),
            version.clone(),
            raw,
            stripped_raw,
        );
        let signed_raw = match self.send(invitee.server_name(), request).await {
            Ok(response) => response.event,
            // A server without /v2/invite takes rooms of version 1 and 2 through /v1/invite
            // (as Synapse falls back); newer rooms it cannot have.
            Err(error) if is_unknown_endpoint(&error) => {
                if !matches!(version, RoomVersionId::V1 | RoomVersionId::V2) {
                    return Err(MatrixError::new(http::StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION", "The invitee's server does not support this room version"));
                }
                let mut event = serde_json::to_value(pdu.json())?;
                event["unsigned"]["invite_room_state"] = Value::Array(stripped);
                let request = super::v1_membership::invite::Request::new(room_id.to_owned(), pdu.event_id.clone(), to_raw_value(&event)?);
                let answer = super::v1_membership::unwrap_v1(self.send(invitee.server_name(), request).await?.body)?;
                to_raw_value(&answer["event"])?
            }
            Err(error) => return Err(error),
        };
        let (signed, rules) = parse_pdu(&signed_raw, &version)?;
        if signed.event_id != pdu.event_id {
            return Err(MatrixError::forbidden("The invitee's server changed the invite"));
        }
        let signed = self.verify_pdu(signed, &rules).await?;
        self.rooms.persist_built(signed, &version).await
    }

    /// Leaves (or rejects an invite to) a room this server is not in, through `servers`.
    pub async fn leave_remote(&self, room_id: &RoomId, user: &UserId, servers: &[OwnedServerName]) -> Result<()> {
        let mut last_error = MatrixError::not_found("No server to leave the room through");
        for server in servers.iter().filter(|s| !self.is_local(s)) {
            let attempt: Result<()> = async {
                let template = self.send(server, ruma::api::federation::membership::prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned())).await?;
                let version = template.room_version.unwrap_or(RoomVersionId::V1);
                let (leave, raw) = self.sign_template(&template.event, &version, user, json!({ "membership": "leave" })).await?;
                self.send(server, ruma::api::federation::membership::create_leave_event::v2::Request::new(room_id.to_owned(), leave.event_id.clone(), raw))
                    .await?;
                self.rooms.record_out_of_room_membership(&leave, None).await
            }
            .await;
            match attempt {
                Ok(()) => return Ok(()),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}

/// GET /make_knock.
pub async fn make_knock(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::membership::prepare_knock_event::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    require_origin(request.origin.as_ref(), &b.user_id)?;
    federation.check_acl(&b.room_id, b.user_id.server_name()).await?;
    let accepted = if b.ver.is_empty() { vec![RoomVersionId::V1] } else { b.ver.clone() };
    let (version, template) = federation.rooms.membership_template(&b.room_id, &b.user_id, "knock", &accepted).await?;
    Ok(Json(json!({ "room_version": version, "event": template })))
}

/// PUT /send_knock: the knock, checked and persisted; answered with the room's stripped state.
pub async fn send_knock(
    State(federation): State<Federation>,
    request: Ruma<ruma::api::federation::membership::create_knock_event::v1::Request>,
) -> Result<Json<Value>> {
    let b = &request.body;
    let version = federation.rooms.room_version(&b.room_id).await?;
    let (pdu, rules) = parse_pdu(&b.pdu, &version)?;
    if pdu.event_id != b.event_id || pdu.room_id != b.room_id {
        return Err(MatrixError::bad_json("The event id or room id does not match the event"));
    }
    let knocker = pdu.state_key().and_then(|k| UserId::parse(k).ok()).ok_or_else(|| MatrixError::bad_json("Not a member event"))?;
    if pdu.kind().to_string() != "m.room.member" || pdu.content_value()["membership"] != "knock" || knocker != pdu.fields.sender {
        return Err(MatrixError::bad_json("send_knock takes the user's own knock event"));
    }
    require_origin(request.origin.as_ref(), &knocker)?;
    federation.check_acl(&b.room_id, knocker.server_name()).await?;
    let pdu = federation.verify_pdu(pdu, &rules).await?;
    federation.rooms.persist_remote(pdu, &version, None).await?;
    let mut state = Vec::new();
    for kind in crate::rooms::remote::STRIPPED_STATE {
        if let Some(event) = federation.rooms.current_state_event(&b.room_id, kind, "").await? {
            state.push(serde_json::to_value(&event.json())?);
        }
    }
    Ok(Json(json!({ "knock_room_state": state })))
}

impl Federation {
    /// Knocks on a room this server is not in, through `servers`.
    pub async fn knock_remote(&self, room_id: &RoomId, user: &UserId, reason: Option<&str>, servers: &[OwnedServerName]) -> Result<()> {
        let mut last_error = MatrixError::not_found("No server to knock through");
        for server in servers.iter().filter(|s| !self.is_local(s)) {
            let attempt: Result<()> = async {
                let mut make = ruma::api::federation::membership::prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
                make.ver = supported_room_versions();
                let template = self.send(server, make).await?;
                let version = template.room_version;
                let mut content = self.rooms.member_content(user, "knock", reason).await?;
                content.insert("membership".into(), "knock".into());
                let (knock, raw) = self.sign_template(&template.event, &version, user, Value::Object(content)).await?;
                let answer = self
                    .send(server, ruma::api::federation::membership::create_knock_event::v1::Request::new(room_id.to_owned(), knock.event_id.clone(), raw))
                    .await?;
                let stripped: Vec<Value> = parse_room_state(&answer.knock_room_state).iter().map(stripped_form).collect();
                self.rooms.record_out_of_room_membership(&knock, Some(&stripped)).await
            }
            .await;
            match attempt {
                Ok(()) => return Ok(()),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}
