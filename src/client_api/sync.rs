//! /sync, filters, typing, receipts, read markers, presence and send-to-device.

use std::time::Duration;

use axum::extract::State;
use ruma::{
    api::client::{
        filter::{create_filter, get_filter},
        presence::{get_presence, set_presence},
        read_marker::set_read_marker,
        receipt::create_receipt,
        sync::sync_events::{self, v3::Filter as SyncFilter},
        to_device::send_event_to_device,
        typing::{create_typing_event, create_typing_event::v3::Typing},
    },
    presence::PresenceState,
    to_device::DeviceIdOrAllDevices,
};
use serde_json::Value;

use super::extract::{Ruma, RumaResponse};
use crate::{
    ephemeral::{
        presence::Presence,
        receipts::{Receipts, FULLY_READ, READ, READ_PRIVATE},
        to_device::ToDevice,
        typing::Typing as TypingService,
    },
    error::{MatrixError, Result},
    rooms::Rooms,
    sync::{filter, token::SyncToken, Sync, SyncRequest},
};

pub async fn sync(
    State(sync): State<Sync>,
    request: Ruma<sync_events::v3::Request>,
) -> Result<axum::Json<Value>> {
    let user = request.user().clone();
    let body = request.body;
    let filter = match &body.filter {
        None => Default::default(),
        Some(SyncFilter::FilterDefinition(definition)) => definition.clone(),
        Some(SyncFilter::FilterId(id)) => filter::load(sync.rooms().db(), &user.user_id, id)
            .await
            .map_err(|_| MatrixError::invalid_param(format!("Unknown filter {id}")))?,
        Some(_) => return Err(MatrixError::invalid_param("Unsupported filter")),
    };
    let since = body.since.as_deref().filter(|s| !s.is_empty()).map(SyncToken::parse).transpose()?;
    let set_presence = match &body.set_presence {
        PresenceState::Online => "online",
        PresenceState::Unavailable => "unavailable",
        PresenceState::Offline => "offline",
        other => return Err(MatrixError::invalid_param(format!("Unknown presence {}", other.as_str()))),
    };
    let response = sync
        .sync(SyncRequest {
            user: &user.user_id,
            device: &user.device_id,
            since,
            filter,
            full_state: body.full_state,
            set_presence,
            timeout: body.timeout.unwrap_or(Duration::ZERO),
        })
        .await?;
    Ok(axum::Json(response))
}

pub async fn create_filter(
    State(rooms): State<Rooms>,
    request: Ruma<create_filter::v3::Request>,
) -> Result<RumaResponse<create_filter::v3::Response>> {
    if request.user().user_id != request.body.user_id {
        return Err(MatrixError::forbidden("You can only create filters for yourself"));
    }
    let id = filter::store(rooms.db(), &request.body.user_id, &request.body.filter).await?;
    Ok(RumaResponse(create_filter::v3::Response::new(id)))
}

pub async fn get_filter(
    State(rooms): State<Rooms>,
    request: Ruma<get_filter::v3::Request>,
) -> Result<RumaResponse<get_filter::v3::Response>> {
    if request.user().user_id != request.body.user_id {
        return Err(MatrixError::forbidden("You can only read your own filters"));
    }
    let definition = filter::load(rooms.db(), &request.body.user_id, &request.body.filter_id).await?;
    Ok(RumaResponse(get_filter::v3::Response::new(definition)))
}

pub async fn typing(
    State(typing): State<TypingService>,
    State(rooms): State<Rooms>,
    State(presence): State<Presence>,
    request: Ruma<create_typing_event::v3::Request>,
) -> Result<RumaResponse<create_typing_event::v3::Response>> {
    let user = request.user().user_id.clone();
    let body = &request.body;
    if body.user_id != user {
        return Err(MatrixError::forbidden("You can only set your own typing state"));
    }
    rooms.require_joined(&body.room_id, &user).await?;
    match &body.state {
        Typing::Yes(info) => typing.set(&body.room_id, &user, true, info.timeout).await?,
        Typing::No => typing.set(&body.room_id, &user, false, Duration::ZERO).await?,
    }
    presence.activity(&user).await?;
    Ok(RumaResponse(create_typing_event::v3::Response::new()))
}

pub async fn receipt(
    State(receipts): State<Receipts>,
    State(presence): State<Presence>,
    request: Ruma<create_receipt::v3::Request>,
) -> Result<RumaResponse<create_receipt::v3::Response>> {
    let user = request.user().user_id.clone();
    let body = &request.body;
    let receipt_type = body.receipt_type.as_str();
    match receipt_type {
        FULLY_READ => {
            if body.thread.as_str().is_some() {
                return Err(MatrixError::invalid_param("m.fully_read cannot be threaded"));
            }
            receipts.set_fully_read(&body.room_id, &user, &body.event_id).await?
        }
        READ | READ_PRIVATE => {
            receipts.set(&body.room_id, &user, receipt_type, &body.event_id, body.thread.as_str()).await?
        }
        other => return Err(MatrixError::invalid_param(format!("Unknown receipt type {other}"))),
    }
    presence.activity(&user).await?;
    Ok(RumaResponse(create_receipt::v3::Response::new()))
}

pub async fn read_markers(
    State(receipts): State<Receipts>,
    request: Ruma<set_read_marker::v3::Request>,
) -> Result<RumaResponse<set_read_marker::v3::Response>> {
    let user = request.user().user_id.clone();
    let body = &request.body;
    if let Some(event) = &body.fully_read {
        receipts.set_fully_read(&body.room_id, &user, event).await?;
    }
    if let Some(event) = &body.read_receipt {
        receipts.set(&body.room_id, &user, READ, event, None).await?;
    }
    if let Some(event) = &body.private_read_receipt {
        receipts.set(&body.room_id, &user, READ_PRIVATE, event, None).await?;
    }
    Ok(RumaResponse(set_read_marker::v3::Response::new()))
}

pub async fn get_presence(
    State(presence): State<Presence>,
    State(rooms): State<Rooms>,
    request: Ruma<get_presence::v3::Request>,
) -> Result<RumaResponse<get_presence::v3::Response>> {
    if !presence.enabled() {
        return Err(MatrixError::forbidden("Presence is disabled on this server"));
    }
    let viewer = request.user().user_id.clone();
    let target = &request.body.user_id;
    if *target != viewer {
        let sharing = crate::storage::rooms::users_sharing_rooms(rooms.db().pool(), viewer.as_str()).await?;
        if !sharing.iter().any(|u| u == target.as_str()) {
            return Err(MatrixError::forbidden("You do not share a room with this user"));
        }
    }
    if !crate::storage::accounts::user_exists(rooms.db().pool(), target.as_str()).await? {
        return Err(MatrixError::not_found("Unknown user"));
    }
    let content = presence.content(target).await?;
    let state = PresenceState::from(content["presence"].as_str().unwrap_or("offline"));
    let mut response = get_presence::v3::Response::new(state);
    response.status_msg = content["status_msg"].as_str().map(str::to_owned);
    response.currently_active = content["currently_active"].as_bool();
    response.last_active_ago = content["last_active_ago"].as_u64().map(Duration::from_millis);
    Ok(RumaResponse(response))
}

pub async fn set_presence(
    State(presence): State<Presence>,
    request: Ruma<set_presence::v3::Request>,
) -> Result<RumaResponse<set_presence::v3::Response>> {
    let user = request.user().user_id.clone();
    let body = &request.body;
    if body.user_id != user {
        return Err(MatrixError::forbidden("You can only set your own presence"));
    }
    presence.set(&user, body.presence.as_str(), body.status_msg.as_deref()).await?;
    Ok(RumaResponse(set_presence::v3::Response::new()))
}

pub async fn send_to_device(
    State(to_device): State<ToDevice>,
    State(rooms): State<Rooms>,
    request: Ruma<send_event_to_device::v3::Request>,
) -> Result<RumaResponse<send_event_to_device::v3::Response>> {
    let sender = request.user().clone();
    let body = &request.body;
    let mut messages = Vec::new();
    for (user, devices) in &body.messages {
        for (device, content) in devices {
            let content: Value = serde_json::from_str(content.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))?;
            if !content.is_object() {
                return Err(MatrixError::bad_json("To-device content must be an object"));
            }
            let device = match device {
                DeviceIdOrAllDevices::DeviceId(id) => id.to_string(),
                DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
            };
            messages.push((user.to_string(), device, content.to_string()));
        }
    }
    to_device
        .send(
            &sender.user_id,
            sender.device_id.as_str(),
            &body.event_type.to_string(),
            body.txn_id.as_str(),
            &messages,
            rooms.server_name(),
        )
        .await?;
    Ok(RumaResponse(send_event_to_device::v3::Response::new()))
}
