//! Account data (global and per room), room tags, and reporting.

use axum::extract::State;
use ruma::{
    api::client::{
        config::{get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data},
        room::{report_content, report_room},
        tag::{create_tag, delete_tag, get_tags},
    },
    serde::Raw,
    UserId,
};
use serde_json::{json, Value};

use super::extract::{Ruma, RumaResponse};
use crate::{
    accounts::Requester,
    error::{MatrixError, Result},
    rooms::Rooms,
    storage::{account_data as repo, reports},
};

fn require_self(requester: &Requester, user: &UserId) -> Result<()> {
    if requester.user_id != user {
        return Err(MatrixError::forbidden("You cannot access another user's account data"));
    }
    Ok(())
}

/// Types the server manages itself; clients set them through their own endpoints.
fn reject_server_managed(kind: &str) -> Result<()> {
    if kind == "m.fully_read" || kind == "m.push_rules" {
        return Err(MatrixError::new(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("Cannot set {kind} through this API"),
        ));
    }
    Ok(())
}

fn object_text(raw_json: &str) -> Result<String> {
    match serde_json::from_str::<Value>(raw_json).map_err(|e| MatrixError::bad_json(e.to_string()))? {
        value @ Value::Object(_) => Ok(value.to_string()),
        _ => Err(MatrixError::bad_json("Account data must be a JSON object")),
    }
}

async fn store(rooms: &Rooms, user: &UserId, room: &str, kind: &str, content: &str) -> Result<()> {
    let mut tx = rooms.db().begin_write().await?;
    repo::put(&mut tx, user.as_str(), room, kind, content).await?;
    tx.commit().await?;
    Ok(())
}

async fn load<T>(rooms: &Rooms, user: &UserId, room: &str, kind: &str) -> Result<Raw<T>> {
    let content = repo::get(rooms.db().pool(), user.as_str(), room, kind)
        .await?
        .ok_or_else(|| MatrixError::not_found("Account data not found"))?;
    let raw = serde_json::value::RawValue::from_string(content).map_err(|e| MatrixError::internal(e.to_string()))?;
    Ok(Raw::from_json(raw))
}

pub async fn set_global(
    State(rooms): State<Rooms>,
    State(push): State<crate::push::Push>,
    request: Ruma<set_global_account_data::v3::Request>,
) -> Result<RumaResponse<set_global_account_data::v3::Response>> {
    let b = &request.body;
    require_self(request.user(), &b.user_id)?;
    let kind = b.event_type.to_string();
    reject_server_managed(&kind)?;
    store(&rooms, &b.user_id, "", &kind, &object_text(b.data.json().get())?).await?;
    if kind == crate::push::IGNORED_USER_LIST {
        push.forget_ignored(&b.user_id);
    }
    Ok(RumaResponse(set_global_account_data::v3::Response::new()))
}

pub async fn get_global(
    State(rooms): State<Rooms>,
    request: Ruma<get_global_account_data::v3::Request>,
) -> Result<RumaResponse<get_global_account_data::v3::Response>> {
    let b = &request.body;
    require_self(request.user(), &b.user_id)?;
    let data = load(&rooms, &b.user_id, "", &b.event_type.to_string()).await?;
    Ok(RumaResponse(get_global_account_data::v3::Response::new(data)))
}

pub async fn set_room(
    State(rooms): State<Rooms>,
    request: Ruma<set_room_account_data::v3::Request>,
) -> Result<RumaResponse<set_room_account_data::v3::Response>> {
    let b = &request.body;
    require_self(request.user(), &b.user_id)?;
    let kind = b.event_type.to_string();
    reject_server_managed(&kind)?;
    store(&rooms, &b.user_id, b.room_id.as_str(), &kind, &object_text(b.data.json().get())?).await?;
    Ok(RumaResponse(set_room_account_data::v3::Response::new()))
}

pub async fn get_room(
    State(rooms): State<Rooms>,
    request: Ruma<get_room_account_data::v3::Request>,
) -> Result<RumaResponse<get_room_account_data::v3::Response>> {
    let b = &request.body;
    require_self(request.user(), &b.user_id)?;
    let data = load(&rooms, &b.user_id, b.room_id.as_str(), &b.event_type.to_string()).await?;
    Ok(RumaResponse(get_room_account_data::v3::Response::new(data)))
}

/// Tags live in the room's `m.tag` account data as `{"tags": {...}}`.
async fn current_tags(rooms: &Rooms, user: &UserId, room: &str) -> Result<serde_json::Map<String, Value>> {
    let stored = repo::get(rooms.db().pool(), user.as_str(), room, "m.tag").await?;
    Ok(stored
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| v.get("tags").and_then(Value::as_object).cloned())
        .unwrap_or_default())
}

pub async fn get_tags(
    State(rooms): State<Rooms>,
    request: Ruma<get_tags::v3::Request>,
) -> Result<RumaResponse<get_tags::v3::Response>> {
    let b = &request.body;
    require_self(request.user(), &b.user_id)?;
    let tags = current_tags(&rooms, &b.user_id, b.room_id.as_str()).await?;
    let tags = serde_json::from_value(Value::Object(tags)).map_err(|e| MatrixError::internal(e.to_string()))?;
    Ok(RumaResponse(get_tags::v3::Response::new(tags)))
}

pub async fn put_tag(
    State(rooms): State<Rooms>,
    request: Ruma<create_tag::v3::Request>,
) -> Result<RumaResponse<create_tag::v3::Response>> {
    let b = &request.body;
    require_self(request.user(), &b.user_id)?;
    if b.tag.len() > 255 {
        return Err(MatrixError::invalid_param("Tag is too long"));
    }
    let mut tags = current_tags(&rooms, &b.user_id, b.room_id.as_str()).await?;
    tags.insert(b.tag.clone(), serde_json::to_value(&b.tag_info)?);
    store(&rooms, &b.user_id, b.room_id.as_str(), "m.tag", &json!({ "tags": tags }).to_string()).await?;
    Ok(RumaResponse(create_tag::v3::Response::new()))
}

pub async fn delete_tag(
    State(rooms): State<Rooms>,
    request: Ruma<delete_tag::v3::Request>,
) -> Result<RumaResponse<delete_tag::v3::Response>> {
    let b = &request.body;
    require_self(request.user(), &b.user_id)?;
    let mut tags = current_tags(&rooms, &b.user_id, b.room_id.as_str()).await?;
    tags.remove(&b.tag);
    store(&rooms, &b.user_id, b.room_id.as_str(), "m.tag", &json!({ "tags": tags }).to_string()).await?;
    Ok(RumaResponse(delete_tag::v3::Response::new()))
}

pub async fn report_event(
    State(rooms): State<Rooms>,
    request: Ruma<report_content::v3::Request>,
) -> Result<RumaResponse<report_content::v3::Response>> {
    let user = request.user().clone();
    let b = &request.body;
    // Only members of the room may report its events (spec v1.8), and only events they can
    // see; anything else looks absent.
    if rooms.membership_of(&b.room_id, &user.user_id).await?.as_deref() != Some("join") {
        return Err(MatrixError::not_found("Event not found or you are not joined to its room"));
    }
    rooms.visible_event(&b.room_id, &b.event_id, &user.user_id).await?;
    save_report(&rooms, &user.user_id, b.room_id.as_str(), Some(b.event_id.as_str()), b.reason.as_deref()).await?;
    Ok(RumaResponse(report_content::v3::Response::new()))
}

pub async fn report_room(
    State(rooms): State<Rooms>,
    request: Ruma<report_room::v3::Request>,
) -> Result<RumaResponse<report_room::v3::Response>> {
    let user = request.user().clone();
    let b = &request.body;
    rooms.room_version(&b.room_id).await?;
    save_report(&rooms, &user.user_id, b.room_id.as_str(), None, Some(&b.reason)).await?;
    Ok(RumaResponse(report_room::v3::Response::new()))
}

/// A report of a user (spec v1.14). A local account that does not exist is `M_NOT_FOUND`
/// (the spec's answer); a remote user is taken as reported, this server cannot tell.
pub async fn report_user(
    State(rooms): State<Rooms>,
    request: Ruma<ruma::api::client::reporting::report_user::v3::Request>,
) -> Result<RumaResponse<ruma::api::client::reporting::report_user::v3::Response>> {
    let reporter = request.user().user_id.clone();
    let target = &request.body.user_id;
    if target.server_name() == rooms.server_name() && !crate::storage::accounts::user_exists(rooms.db().pool(), target.as_str()).await? {
        return Err(MatrixError::not_found("The user was not found on this server"));
    }
    reports::insert_user_report(rooms.db().pool(), reporter.as_str(), target.as_str(), &request.body.reason).await?;
    tracing::info!(%reporter, %target, "user reported");
    Ok(RumaResponse(ruma::api::client::reporting::report_user::v3::Response::new()))
}

async fn save_report(rooms: &Rooms, reporter: &UserId, room: &str, event: Option<&str>, reason: Option<&str>) -> Result<()> {
    reports::insert(rooms.db().pool(), reporter.as_str(), room, event, reason).await?;
    tracing::info!(%reporter, room, event, "content reported");
    Ok(())
}

