//! createRoom, sending events and state, reading events, state and history.

use axum::extract::State;
use ruma::{
    api::{
        client::{
            message::{get_message_events, send_message_event},
            room::{create_room, create_room::v3::RoomPreset, get_room_event},
            state::{get_state_event_for_key, get_state_event_for_key::v3::StateEventFormat, get_state_events, send_state_event},
        },
        Direction as RumaDirection,
    },
    serde::Raw,
};
use serde_json::{value::to_raw_value, Map, Value};

use super::extract::{Ruma, RumaResponse};
use crate::{
    error::{MatrixError, Result},
    rooms::{
        create::{CreateRoom, Preset},
        read::{parse_token, Viewer},
        EventTemplate, Rooms,
    },
    storage::{
        events::{Boundary, Direction},
        state as state_repo,
    },
};

fn raw<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(to_raw_value(value).map_err(|e| MatrixError::internal(e.to_string()))?))
}

fn object(raw_json: &str, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(raw_json).map_err(|e| MatrixError::bad_json(e.to_string()))? {
        Value::Object(map) => Ok(map),
        _ => Err(MatrixError::bad_json(format!("{what} must be a JSON object"))),
    }
}

pub async fn create_room(
    State(rooms): State<Rooms>,
    State(federation): State<crate::federation::Federation>,
    request: Ruma<create_room::v3::Request>,
) -> Result<RumaResponse<create_room::v3::Response>> {
    let user = request.user().user_id.clone();
    let body = request.body;
    let preset = match &body.preset {
        None => None,
        Some(RoomPreset::PrivateChat) => Some(Preset::PrivateChat),
        Some(RoomPreset::PublicChat) => Some(Preset::PublicChat),
        Some(RoomPreset::TrustedPrivateChat) => Some(Preset::TrustedPrivateChat),
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown preset {}", other.as_str()))),
    };
    let creation_content = match &body.creation_content {
        Some(content) => object(content.json().get(), "creation_content")?,
        None => Map::new(),
    };
    let mut initial_state = Vec::new();
    for event in &body.initial_state {
        let event = object(event.json().get(), "initial_state event")?;
        let kind = event.get("type").and_then(Value::as_str).ok_or_else(|| MatrixError::bad_json("initial_state event needs a type"))?;
        let state_key = event.get("state_key").and_then(Value::as_str).unwrap_or("");
        let content = event.get("content").cloned().unwrap_or(Value::Object(Map::new()));
        initial_state.push((kind.to_owned(), state_key.to_owned(), content));
    }
    let power_level_override = match &body.power_level_content_override {
        Some(content) => Some(object(content.json().get(), "power_level_content_override")?),
        None => None,
    };
    let room_id = rooms
        .create_room(
            &user,
            CreateRoom {
                room_version: body.room_version.clone(),
                preset,
                publish: body.visibility == ruma::api::client::room::Visibility::Public,
                alias_localpart: body.room_alias_name.clone(),
                name: body.name.clone(),
                topic: body.topic.clone(),
                invite: body.invite.clone(),
                is_direct: body.is_direct,
                creation_content,
                initial_state,
                power_level_override,
                power_levels: None,
                room_id: None,
            },
        )
        .await?;
    for invitee in body.invite.iter().filter(|u| !federation.is_local(u.server_name())) {
        federation.invite_remote(&room_id, &user, invitee, None, body.is_direct).await?;
    }
    tracing::info!(%room_id, creator = %user, "room created");
    Ok(RumaResponse(create_room::v3::Response::new(room_id)))
}

/// The `ts` of a send: honoured for application services only (spec: timestamp massaging).
fn massaged_timestamp(
    requester: &crate::accounts::Requester,
    ts: Option<ruma::MilliSecondsSinceUnixEpoch>,
) -> Option<ruma::MilliSecondsSinceUnixEpoch> {
    ts.filter(|_| requester.appservice_id.is_some())
}

pub async fn send_message(
    State(rooms): State<Rooms>,
    State(presence): State<crate::ephemeral::presence::Presence>,
    request: Ruma<send_message_event::v3::Request>,
) -> Result<RumaResponse<send_message_event::v3::Response>> {
    let user = request.user().clone();
    let body = request.body;
    let content = serde_json::from_str::<Value>(body.body.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(MatrixError::bad_json("Event content must be a JSON object"));
    }
    let kind = body.event_type.to_string();
    if kind == "m.room.redaction" {
        return Err(MatrixError::bad_json("Use the /redact endpoint to redact events"));
    }
    rooms.require_joined(&body.room_id, &user.user_id).await?;
    let event_id = rooms
        .send(
            &body.room_id,
            &user.user_id,
            EventTemplate::message(kind.into(), content).at(massaged_timestamp(&user, body.timestamp)),
            Some((user.device_id.as_str(), body.txn_id.as_str())),
        )
        .await?;
    presence.activity(&user.user_id).await?;
    Ok(RumaResponse(send_message_event::v3::Response::new(event_id)))
}

pub async fn send_state(
    State(rooms): State<Rooms>,
    request: Ruma<send_state_event::v3::Request>,
) -> Result<RumaResponse<send_state_event::v3::Response>> {
    let user = request.user().clone();
    let body = request.body;
    let content = serde_json::from_str::<Value>(body.body.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(MatrixError::bad_json("Event content must be a JSON object"));
    }
    let kind = body.event_type.to_string();
    rooms.require_joined(&body.room_id, &user.user_id).await?;
    if kind == "m.room.canonical_alias" {
        rooms.check_canonical_alias(&body.room_id, &content).await?;
    }
    // Re-sending identical state is a no-op returning the existing event, as in Synapse.
    if let Some(existing) = rooms.current_state_event(&body.room_id, &kind, &body.state_key).await? {
        if existing.content_value() == content && existing.fields.sender == user.user_id {
            return Ok(RumaResponse(send_state_event::v3::Response::new(existing.event_id)));
        }
    }
    let event_id = rooms
        .send(
            &body.room_id,
            &user.user_id,
            EventTemplate::state(kind.as_str().into(), body.state_key, content).at(massaged_timestamp(&user, body.timestamp)),
            None,
        )
        .await?;
    Ok(RumaResponse(send_state_event::v3::Response::new(event_id)))
}

pub async fn get_state_event(
    State(rooms): State<Rooms>,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<RumaResponse<get_state_event_for_key::v3::Response>> {
    let user = request.user().clone();
    let body = request.body;
    let kind = body.event_type.to_string();
    let joined = rooms.check_can_read(&body.room_id, &user.user_id).await?;
    let state = rooms.readable_state(&body.room_id, &user.user_id, joined).await?;
    let event_id = state
        .get(&(kind, body.state_key.clone()))
        .ok_or_else(|| MatrixError::not_found("Event not found"))?;
    let row = crate::storage::events::get(rooms.db().pool(), event_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("Event not found"))?;
    let pdu = crate::rooms::pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
    let value = match body.format {
        StateEventFormat::Event => rooms.client_event(&row, &pdu, Some(Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) })).await?,
        _ => pdu.content_value(),
    };
    Ok(RumaResponse(get_state_event_for_key::v3::Response::new(
        to_raw_value(&value).map_err(|e| MatrixError::internal(e.to_string()))?,
    )))
}

pub async fn get_state(
    State(rooms): State<Rooms>,
    request: Ruma<get_state_events::v3::Request>,
) -> Result<RumaResponse<get_state_events::v3::Response>> {
    let user = request.user().clone();
    let room_id = &request.body.room_id;
    let joined = rooms.check_can_read(room_id, &user.user_id).await?;
    let state = rooms.readable_state(room_id, &user.user_id, joined).await?;
    let viewer = Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) };
    let mut events = Vec::with_capacity(state.len());
    for event_id in state.values() {
        if let Some(row) = crate::storage::events::get(rooms.db().pool(), event_id).await? {
            let pdu = crate::rooms::pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
            events.push(raw(&rooms.client_event(&row, &pdu, Some(viewer)).await?)?);
        }
    }
    Ok(RumaResponse(get_state_events::v3::Response::new(events)))
}

pub async fn get_event(
    State(rooms): State<Rooms>,
    request: Ruma<get_room_event::v3::Request>,
) -> Result<RumaResponse<get_room_event::v3::Response>> {
    let user = request.user().clone();
    let (row, pdu) = rooms.visible_event(&request.body.room_id, &request.body.event_id, &user.user_id).await?;
    let event = rooms.client_event(&row, &pdu, Some(Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) })).await?;
    Ok(RumaResponse(get_room_event::v3::Response::new(raw(&event)?)))
}

pub async fn messages(
    State(rooms): State<Rooms>,
    State(federation): State<crate::federation::Federation>,
    request: Ruma<get_message_events::v3::Request>,
) -> Result<RumaResponse<get_message_events::v3::Response>> {
    let user = request.user().clone();
    let body = request.body;
    let dir = match body.dir {
        RumaDirection::Backward => Direction::Backward,
        RumaDirection::Forward => Direction::Forward,
    };
    // Some clients send an empty `from` for "the end of the room".
    let from_token = body.from.as_deref().filter(|t| !t.is_empty());
    let from = match from_token {
        Some(token) => parse_token(token)?,
        None => match dir {
            Direction::Backward => Boundary::Topological { depth: i64::MAX, stream: i64::MAX },
            Direction::Forward => Boundary::Topological { depth: i64::MIN, stream: i64::MIN },
        },
    };
    let to = body.to.as_deref().map(parse_token).transpose()?;
    let limit = u64::from(body.limit).clamp(1, 1000) as usize;
    let limit = body.filter.limit.map(|l| u64::from(l) as usize).unwrap_or(limit).clamp(1, 1000);
    let viewer = Viewer { user_id: &user.user_id, device_id: Some(&user.device_id) };
    let mut page = rooms.history(&body.room_id, viewer, from, to, dir, limit, &body.filter).await?;
    if dir == Direction::Backward && page.end.is_none() && page.events.len() < limit {
        // The local history ends here: ask the other servers in the room for what came before.
        match federation.backfill(&body.room_id, (limit * 2).max(20)).await {
            Ok(added) if added > 0 => page = rooms.history(&body.room_id, viewer, from, to, dir, limit, &body.filter).await?,
            Ok(_) => {}
            Err(error) => tracing::info!(room_id = %body.room_id, %error, "backfill failed"),
        }
    }

    let mut response = get_message_events::v3::Response::new();
    response.start = from_token.map(str::to_owned).unwrap_or_else(|| match from {
        Boundary::Topological { depth, stream } => format!("t{depth}_{stream}"),
        Boundary::Stream(s) => format!("s{s}"),
    });
    response.end = page.end;
    response.chunk = page.events.iter().map(raw).collect::<Result<_>>()?;
    if !body.filter.lazy_load_options.is_disabled() {
        // Lazy-loading: the member events of the senders in this chunk.
        let mut seen = std::collections::HashSet::new();
        for sender in &page.senders {
            if !seen.insert(sender.clone()) {
                continue;
            }
            if let Some(event_id) = state_repo::current_entries(rooms.db().pool(), body.room_id.as_str(), "m.room.member", sender).await? {
                if let Some(row) = crate::storage::events::get(rooms.db().pool(), &event_id).await? {
                    let pdu = crate::rooms::pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
                    response.state.push(raw(&rooms.client_event(&row, &pdu, Some(viewer)).await?)?);
                }
            }
        }
    }
    Ok(RumaResponse(response))
}
